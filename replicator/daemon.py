"""The daemon: the one place that wires the pipeline together from ``Settings`` (``replicator run``).

Order at start: take the leader lock (or wait as standby) → record which sinks are enabled (a sink switched back
on is flagged ``needs_resync`` and the operator is told to run ``replicator resync --sink NAME``) → check the slot:
create it if it has never existed and then backfill, in that order, so nothing is missed; refuse to go on when it
was dropped or invalidated after we used it → start the sink workers (threads) → stream the slot in this thread
until SIGTERM/SIGINT (or ``stop``). Shutdown stops reading, confirms what is committed, gives the workers
``shutdown_deadline_s`` to finish their batch, releases the lock and returns 0.

A lost slot makes ``run`` return 3 (the CLI's "unhealthy" code) instead of staying up: a process that cannot
stream must not look alive to an orchestrator, and ``replicator status``/``health`` report the incident from
``pg_replication_slots`` + ``source_checkpoint`` whether the daemon runs or not.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import psycopg

from replicator import logs
from replicator.config import KNOWN_SINKS, Settings
from replicator.http import HttpServer, serve
from replicator.leader import LeaderLock, LeadershipLostError, process_name
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.sinks.base import SinkConfigError
from replicator.source import SlotLostError, SourceError, SourceLoop, SourceOptions, create_slot, slot_info
from replicator.status import configured_secrets, redact
from replicator.store import checkpoints, sink_state
from replicator.store.outbox import backfill

log = event_logger("replicator.daemon")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_UNHEALTHY = 3


@dataclass
class DaemonState:
    """What this process is doing, for ``/readyz`` (shared between threads; plain attribute writes)."""

    role: str = "starting"  # starting | standby | leader | stopping
    streaming: bool = False
    incident: str | None = None

    @property
    def ready(self) -> bool:
        return self.incident is None and (self.role == "standby" or (self.role == "leader" and self.streaming))


# ---- start-up steps ----------------------------------------------------------------------------------------------


def sync_sink_status(conn: psycopg.Connection[Any], settings: Settings) -> list[str]:
    """Record every known sink's enabled flag; returns the enabled sinks that need a resync."""
    checkpoint = checkpoints.load(conn, settings.replicator_slot)
    streamed_before = checkpoint is not None and checkpoint.backfill_done_at is not None
    needs: list[str] = []
    with conn.transaction():
        # Every sink an operator may look for, every configured one, and every one recorded before (so a sink that
        # was removed from REPLICATOR_SINKS is recorded as off, and flagged for resync when it comes back).
        known = sink_state.known_sinks(conn)
        for sink in dict.fromkeys((*KNOWN_SINKS, *settings.configured_sinks, *known)):
            enabled = sink in settings.enabled_sinks
            # A sink that was off (or is new on a slot that already streamed) missed changes: needs_resync.
            if sink_state.sync_status(conn, sink, enabled=enabled, streamed_before=streamed_before) and enabled:
                needs.append(sink)
    for sink in needs:
        log.warning(
            "sink.needs_resync",
            sink=sink,
            action=f"run 'replicator resync --sink {sink}': changes made while it was off were not enqueued for it",
        )
    return needs


def prepare_slot(conn: psycopg.Connection[Any], slot: str, sinks: tuple[str, ...]) -> bool:
    """Make sure the slot can be streamed. Creates it (then backfills) when it has never existed; raises
    ``SlotLostError`` when it existed before (a checkpoint remembers it) but is missing or invalidated.
    Returns whether a backfill ran."""
    info = slot_info(conn, slot)
    checkpoint = checkpoints.load(conn, slot)
    if not info.exists:
        if checkpoint is not None:
            raise SlotLostError(slot, "is missing (it was dropped after the replicator used it)")
        # Create FIRST, then backfill: changes from here on stream, rows before it are enqueued by the backfill;
        # an overlap is harmless because the outbox coalesces and the worker renders current rows.
        lsn = create_slot(conn, slot)
        checkpoints.save(conn, slot, lsn, leader=process_name())
        checkpoint = checkpoints.load(conn, slot)
    elif info.wal_status == "lost":
        raise SlotLostError(slot, "was invalidated by the server (wal_status = lost)")
    elif info.plugin != "wal2json":
        raise SourceError(f"replication slot {slot!r} uses plugin {info.plugin!r}, not wal2json")
    if checkpoint is None or checkpoint.backfill_done_at is None:
        # First run on this slot (or a crash before the backfill finished): enqueue every existing document.
        if checkpoint is None:
            checkpoints.save(conn, slot, info.confirmed_flush_lsn or 0, leader=process_name())
        count = backfill(conn, sinks)
        checkpoints.mark_backfilled(conn, slot)
        log.info("backfill.done", slot=slot, sinks=",".join(sinks), rows=count)
        return True
    return False


# ---- threads -----------------------------------------------------------------------------------------------------


def start_workers(settings: Settings, metrics: Metrics, stop: threading.Event) -> list[threading.Thread]:
    from replicator.sinks.factory import build_sink
    from replicator.worker import SinkWorker, new_worker_id

    threads: list[threading.Thread] = []
    for name in settings.enabled_sinks:
        sink = build_sink(name, settings, metrics=metrics)
        sink.check()
        for _ in range(settings.workers_per_sink):
            worker = SinkWorker(settings.dsn, sink, settings=settings, metrics=metrics, worker_id=new_worker_id(name))
            thread = threading.Thread(
                target=_guarded(worker.run, name), args=(stop,), name=f"worker-{name}", daemon=True
            )
            thread.start()
            threads.append(thread)
    return threads


def _guarded(target: Callable[[threading.Event], None], sink: str) -> Callable[[threading.Event], None]:
    def run(stop: threading.Event) -> None:
        try:
            target(stop)
        except Exception as exc:  # a worker must never take the source down; its rows wait in the outbox
            log.error("worker.crashed", sink=sink, error=str(exc))

    return run


def _status_reader(settings: Settings) -> Callable[[], Any]:
    def read() -> Any:
        from replicator.status import collect_status

        with psycopg.connect(settings.dsn, autocommit=True, connect_timeout=5) as conn:
            return collect_status(conn, settings)

    return read


def _start_http(settings: Settings, metrics: Metrics, state: DaemonState) -> HttpServer | None:
    from replicator.status import evaluate_health, refresh_gauges

    read_status = _status_reader(settings)
    try:
        return serve(
            settings.http_addr,
            metrics,
            health=lambda: evaluate_health(read_status(), settings),
            ready=lambda: state.ready,
            on_scrape=lambda: refresh_gauges(read_status(), metrics),
            live=lambda: state.role != "stopping",
        )
    except OSError as exc:  # a busy port must not stop replication; the event says what to fix
        log.error("http.unavailable", addr=settings.http_addr, error=str(exc))
        return None


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop`` (only possible from the main thread; elsewhere the caller owns ``stop``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("daemon.signal", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---- run ---------------------------------------------------------------------------------------------------------


def run(settings: Settings, *, stop: threading.Event | None = None, metrics: Metrics | None = None) -> int:
    """Run the replicator until ``stop`` is set or a signal arrives; returns the process exit code."""
    logs.remember_secrets(configured_secrets(settings))
    if not logging.getLogger("replicator").handlers:
        logs.configure(settings.log_level, settings.log_format)
    stop = stop or threading.Event()
    metrics = metrics or Metrics()
    state = DaemonState()
    slot = settings.replicator_slot
    worker_stop = threading.Event()
    workers: list[threading.Thread] = []
    lock = LeaderLock(settings.dsn, slot, poll_s=settings.standby_poll_s)
    with _signals(stop):
        http = _start_http(settings, metrics, state)
        try:

            def standby() -> None:
                state.role = "standby"

            # Sink workers run in every process, leader or standby: they claim outbox rows with
            # FOR UPDATE SKIP LOCKED and leases, so more replicas apply more in parallel (DESIGN.md §7).
            # Only the source, below, needs the leader lock.
            workers = start_workers(settings, metrics, worker_stop)
            if not lock.acquire(stop, on_standby=standby):
                return EXIT_OK
            state.role = "leader"
            metrics.is_leader.set(1)
            # Stages that run in the leader only (narrative capture, #14); joined with the workers at shutdown.
            from replicator.narrative.stage import start_leader_stages

            workers.extend(start_leader_stages(settings, metrics, worker_stop))
            with psycopg.connect(settings.dsn, autocommit=True, application_name="replicator-setup") as conn:
                sync_sink_status(conn, settings)
                prepare_slot(conn, slot, settings.enabled_sinks)

            def streaming(on: bool) -> None:
                state.streaming = on

            loop = SourceLoop(
                settings.dsn,
                SourceOptions(
                    slot=slot,
                    sinks=settings.enabled_sinks,
                    batch_max_changes=settings.batch_max_changes,
                    batch_max_wait_ms=settings.batch_max_wait_ms,
                    heartbeat_interval_s=settings.heartbeat_interval_s,
                    shutdown_deadline_s=settings.shutdown_deadline_s,
                    leader=process_name(),
                ),
                metrics=metrics,
                leader_check=lock.check,
                on_streaming=streaming,
            )
            loop.run(stop)
            return EXIT_OK
        except SlotLostError as exc:
            state.incident = redact(str(exc), configured_secrets(settings))
            log.error("slot.lost", slot=slot, reason=exc.reason, action="replicator slot drop, then run again")
            return EXIT_UNHEALTHY
        except SinkConfigError as exc:
            log.error("sink.config_error", error=str(exc))
            return EXIT_BAD_CONFIG
        except LeadershipLostError as exc:
            log.error("leader.lost", slot=slot, error=str(exc))
            return EXIT_FAILED
        except (SourceError, psycopg.Error) as exc:
            log.error("daemon.failed", slot=slot, error=str(exc))
            return EXIT_FAILED
        finally:
            state.role = "stopping"
            state.streaming = False
            worker_stop.set()
            deadline = time.monotonic() + settings.shutdown_deadline_s
            for thread in workers:
                thread.join(max(deadline - time.monotonic(), 0.0))
            if any(t.is_alive() for t in workers):
                log.warning("daemon.workers_still_busy", deadline_s=settings.shutdown_deadline_s)
            lock.release()
            metrics.is_leader.set(0)
            if http is not None:
                http.shutdown()
            log.info("daemon.stopped", slot=slot)
