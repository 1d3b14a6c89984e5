"""Leadership: only one process streams a slot. The leader holds a session-level advisory lock, derived from the
slot name, on a dedicated connection; a second ``replicator run`` finds it taken, says it is standby, and polls
every ``standby_poll_s``. When the leader dies (even by kill -9) the server ends its session and releases the
lock, and the standby takes over. (The server also refuses a second consumer of an active slot: a second guard.)

A Postgres restart or failover ends the lock's session too. ``check`` then tries to take the lock again on a new
connection: taken → this process goes on leading (``leader.reacquired``); held by another process →
``LeadershipLostError`` (the daemon becomes a standby); the server still unreachable → ``psycopg.OperationalError``
(the source loop reconnects with backoff and asks again), so a process never streams without the lock.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from replicator.errors import RetryableError
from replicator.logs import event_logger

log = event_logger("replicator.leader")


class LeadershipLostError(RetryableError):
    """The lock's session died: another process may be leader now, so this one stops streaming and stands by
    (retryable: it polls for the lock again)."""


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
        # The lock's session died under us (not released): the next check tries to take it again.
        self._retake = False

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # TCP keepalives let the server notice a vanished host, not only a dead process.
            self._conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                application_name=f"replicator-leader:{self.slot}",
                connect_timeout=10,
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
        """Return while this process holds the lock (re-taking it after its session died, e.g. a Postgres
        restart); raise ``LeadershipLostError`` when another process holds it, ``psycopg.OperationalError`` while
        the server cannot be reached to find out."""
        if self.held:
            try:
                self._connect_existing().execute("SELECT 1")
                return
            except (psycopg.OperationalError, psycopg.InterfaceError, LeadershipLostError) as exc:
                self.held = False
                self._retake = True
                self._close()
                log.warning("leader.lock_session_lost", slot=self.slot, error=str(exc))
        if not self._retake:
            raise LeadershipLostError(f"this process does not hold the leader lock of slot {self.slot!r}")
        try:
            taken = self.try_acquire()
        except psycopg.OperationalError:
            self._close()
            raise
        self._retake = False
        if not taken:
            raise LeadershipLostError(
                f"another process took the leader lock of slot {self.slot!r} while this one's session was down"
            )
        log.info("leader.reacquired", slot=self.slot, process=process_name())

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
        self._retake = False
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
