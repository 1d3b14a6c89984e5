"""What the replication tests share: a server-unique slot name per test database, a polling wait, and the
replicator daemon run in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.daemon import run
from replicator.metrics import Metrics


def slot_of(db: psycopg.Connection[Any] | str) -> str:
    """A slot name unique to the test's database (slot names are server-wide; tests may share a server)."""
    name = db.info.dbname if isinstance(db, psycopg.Connection) else db.rsplit("/", 1)[-1]
    return f"cdc_{name[-12:]}"


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll until ``predicate`` returns something truthy (and return it); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.05)


class InProcessDaemon:
    """``replicator.daemon.run`` in a thread, stopped (and required to stop) when the ``with`` block ends."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.stop = threading.Event()
        self.code: int | None = None
        self.metrics = metrics
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)

    def _run(self, settings: Settings) -> None:
        self.code = run(settings, stop=self.stop, metrics=self.metrics)

    def __enter__(self) -> InProcessDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
