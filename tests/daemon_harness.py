"""What the replication tests share: a server-unique slot name per test database, a polling wait, and the
replicator daemon run in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.daemon import run
from replicator.metrics import Metrics
from tests.support.recording_sink import recording_plugin


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


def daemon_settings(db_url: str, recording: Path, sinks: str = "recording", **extra: Any) -> Settings:
    """Settings for a daemon on the test's database with the recording sink writing ``recording``: fast heartbeats,
    batches and idle polls, a free HTTP port; ``extra`` overrides or adds any setting."""
    return Settings.model_validate(
        {
            "POSTGRES_URL": db_url,
            "REPLICATOR_SLOT": slot_of(db_url),
            "REPLICATOR_SINKS": sinks,
            **recording_plugin(recording),
            "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
            "REPLICATOR_HEARTBEAT_INTERVAL_S": 0.5,
            "REPLICATOR_BATCH_MAX_WAIT_MS": 50,
            "REPLICATOR_WORKER_IDLE_POLL_S": 0.5,
            **extra,
        }
    )


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
