"""Leadership: only one process streams a slot. The leader holds a session-level advisory lock, derived from the
slot name, on a dedicated connection; a second ``replicator run`` finds it taken, says it is standby, and polls
every ``standby_poll_s``. When the leader dies (even by kill -9) the server ends its session and releases the
lock, and the standby takes over. (The server also refuses a second consumer of an active slot: a second guard.)
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from replicator.errors import ReplicatorError
from replicator.logs import event_logger

log = event_logger("replicator.leader")


class LeadershipLostError(ReplicatorError):
    """The lock's session died: another process may be leader now, so this one must stop streaming."""


def lock_key(slot: str) -> int:
    """A stable signed 64-bit advisory lock key for the slot (the same in every process and version)."""
    digest = hashlib.sha256(f"omics-cdc:leader:{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaderLock:
    def __init__(self, dsn: str, slot: str, *, poll_s: float = 2.0) -> None:
        self.dsn = dsn
        self.slot = slot
        self.key = lock_key(slot)
        self.poll_s = poll_s
        self._conn: psycopg.Connection[Any] | None = None
        self.held = False

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # TCP keepalives let the server notice a vanished host, not only a dead process.
            self._conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                application_name=f"replicator-leader:{self.slot}",
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
        return self._conn

    def try_acquire(self) -> bool:
        row = self._connect().execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        self.held = bool(row and row[0])
        return self.held

    def acquire(self, stop: threading.Event, on_standby: Callable[[], None] | None = None) -> bool:
        """Block until this process leads (True) or ``stop`` is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if self.try_acquire():
                    log.info("leader.acquired", slot=self.slot, process=process_name())
                    return True
            except psycopg.OperationalError as exc:
                log.warning("leader.lock_connection_failed", slot=self.slot, error=str(exc))
                self._close()
            if not announced:
                log.info("leader.standby", slot=self.slot, poll_s=self.poll_s, process=process_name())
                if on_standby:
                    on_standby()
                announced = True
            stop.wait(self.poll_s)
        return False

    def check(self) -> None:
        """Raise ``LeadershipLostError`` when the lock's session is gone."""
        if not self.held:
            raise LeadershipLostError(f"this process does not hold the leader lock of slot {self.slot!r}")
        try:
            self._connect_existing().execute("SELECT 1")
        except (psycopg.OperationalError, LeadershipLostError) as exc:
            self.held = False
            self._close()
            raise LeadershipLostError(f"lost the leader lock of slot {self.slot!r}: {exc}") from exc

    def _connect_existing(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            raise LeadershipLostError("the lock connection is closed")
        return self._conn

    def release(self) -> None:
        if self.held and self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                log.info("leader.released", slot=self.slot)
            except psycopg.Error as exc:
                log.warning("leader.release_failed", slot=self.slot, error=str(exc))
        self.held = False
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
