"""The source's wiring and reconnect loop: each streaming session opens a replication stream (``protocol``), an
outbox connection for the writer thread (``writer``) and a heartbeat connection for the listener (``listener``),
and runs the listener until ``stop``. A broken connection (a Postgres restart or failover) is retried with the
replicator's one ``BackoffPolicy`` and the next session resumes from the slot's confirmed LSN; a missing or
invalidated slot is an incident (``SlotLostError``), never silently recreated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from replicator.errors import StreamInterruptedError
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.source.listener import Listener
from replicator.source.options import SourceOptions, SourceProgress
from replicator.source.protocol import ReplicationStream
from replicator.source.writer import OutboxWriter

log = event_logger("replicator.source")

# The reconnect backoff starts again from its first step after a session that streamed this long.
_STABLE_SESSION_S = 10.0


class SourceLoop:
    """Streams the slot into the outbox until ``stop`` is set, reconnecting with backoff."""

    def __init__(
        self,
        dsn: str,
        options: SourceOptions,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: BackoffPolicy,
        leader_check: Callable[[], None] | None = None,
        on_streaming: Callable[[bool], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.options = options
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.policy = policy
        self.leader_check = leader_check
        self.on_streaming = on_streaming
        self.progress = SourceProgress()
        self._session_started: float | None = None  # when the current streaming session started
        self._attempt_base = 0  # reconnect attempts made before the last stable session

    @property
    def confirmed_lsn(self) -> int:
        return self.progress.confirmed_lsn

    @property
    def changes(self) -> int:
        return self.progress.changes

    @property
    def batches(self) -> int:
        return self.progress.batches

    def run(self, stop: threading.Event) -> None:
        """Stream until ``stop``; a broken connection (a Postgres restart or failover) reconnects after the
        policy's delay for the number of failures since the last session that streamed for
        ``_STABLE_SESSION_S`` (``REPLICATOR_RETRY_BASE_S`` doubling to ``REPLICATOR_RETRY_MAX_S``, full jitter),
        and resumes from the slot's confirmed LSN (the server resends what follows it)."""

        def wait(state: RetryCallState) -> float:
            started, self._session_started = self._session_started, None
            if started is not None and self.clock() - started >= _STABLE_SESSION_S:
                self._attempt_base = state.attempt_number - 1
            return self.policy.delay(max(state.attempt_number - self._attempt_base, 1))

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else None
            log.warning("source.reconnect", attempt=state.attempt_number, error=str(error), delay_s=delay)
            if self.on_streaming:
                self.on_streaming(False)

        def sleep(seconds: float) -> None:
            stop.wait(seconds)  # interruptible: a stop request ends the pause at once

        retrying = Retrying(
            retry=retry_if_exception_type((StreamInterruptedError, psycopg.OperationalError, psycopg.InterfaceError)),
            wait=wait,
            stop=lambda _state: stop.is_set(),
            sleep=sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._stream(stop)

    def _stream(self, stop: threading.Event) -> None:
        opts = self.options
        stream = ReplicationStream(self.dsn, opts.slot)
        with (
            psycopg.connect(self.dsn, autocommit=True, application_name="replicator-outbox") as outbox_conn,
            psycopg.connect(self.dsn, autocommit=True, application_name="replicator-heartbeat") as beat_conn,
        ):
            stream.start()
            self._session_started = self.clock()
            writer = OutboxWriter(outbox_conn, opts, metrics=self.metrics, progress=self.progress)
            writer.start()
            try:
                if self.on_streaming:
                    self.on_streaming(True)
                log.info("source.streaming", slot=opts.slot, sinks=",".join(opts.sinks))
                listener = Listener(
                    stream,
                    writer,
                    beat_conn,
                    opts,
                    metrics=self.metrics,
                    progress=self.progress,
                    clock=self.clock,
                    leader_check=self.leader_check,
                )
                listener.run(stop)
            finally:
                writer.close(timeout=opts.shutdown_deadline_s)
                stream.close()
