"""The source's reconnect waits by the replicator's one backoff policy: an unreachable Postgres is retried, each
failure one attempt further along the policy's schedule, and a stop request ends the wait at once."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from replicator.retry import BackoffPolicy
from replicator.source import SourceLoop, SourceOptions

# Nothing listens on port 1: each connection attempt is refused at once.
UNREACHABLE = "postgresql://replicator@127.0.0.1:1/omics?connect_timeout=2"


class Ceilings(random.Random):
    """Records the range each wait is drawn from (the policy's ceiling) and waits that longest time; asks the loop
    to stop after ``stop_after`` waits."""

    def __init__(self, stop: threading.Event, stop_after: int) -> None:
        super().__init__(0)
        self.seen: list[float] = []
        self._stop = stop
        self._stop_after = stop_after

    def uniform(self, a: float, b: float) -> float:
        self.seen.append(b)
        if len(self.seen) >= self._stop_after:
            self._stop.set()
        return b


def test_an_unreachable_postgres_is_retried_on_the_backoff_policys_schedule_until_stopped() -> None:
    stop = threading.Event()
    rng = Ceilings(stop, stop_after=4)
    loop = SourceLoop(
        UNREACHABLE, SourceOptions(slot="s", sinks=()), policy=BackoffPolicy(base_s=0.01, cap_s=0.04, rng=rng)
    )
    with pytest.raises(psycopg.OperationalError):
        loop.run(stop)
    assert rng.seen == [0.01, 0.02, 0.04, 0.04]


def test_a_stop_request_ends_the_reconnect_wait_at_once() -> None:
    stop = threading.Event()
    loop = SourceLoop(
        UNREACHABLE,
        SourceOptions(slot="s", sinks=()),
        policy=BackoffPolicy(base_s=60.0, cap_s=60.0, rng=random.Random(1)),
    )
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        loop.run(stop)
    assert time.monotonic() - started < 3.0  # not the 8 s this draw would have waited
