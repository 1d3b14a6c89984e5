"""The daemon: the one place that wires the pipeline together from ``Settings`` (``replicator run``).

Order at start (nothing slow before the slot is safe): take the leader lock (or, if another process holds it,
stand by) → record which sinks are enabled (a sink switched back on is flagged ``needs_resync`` and the operator
is told to run ``replicator resync --sink NAME``) → check the slot: create it if it has never existed and then
backfill, in that order, so nothing is missed; refuse to go on when it was dropped or invalidated after we used
it → apply each sink's scope (a changed ``REPLICATOR_SCOPE_*`` enqueues what newly falls inside or outside
it: ``apply_scopes``) → start the sink workers (threads; each sink is built — an embedding model loads — and
checked in its own threads, so a heavy or absent sink never delays the source: replicator/sink_gate.py) → stream
the slot in this thread until SIGTERM/SIGINT (or ``stop``). A lost lock (a Postgres restart) is re-taken, or the
process stands by; an unreachable Postgres is retried with backoff; neither ends the process. Shutdown stops
reading, confirms what is committed, gives the workers ``shutdown_deadline_s`` to finish their batch, releases the
lock and returns 0. A database that was never migrated ends ``run`` with exit 1 and a ``daemon.not_migrated`` event.

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
from typing import TYPE_CHECKING, Any

import psycopg

from replicator import logs
from replicator.changes import ChangeParseError
from replicator.config import KNOWN_SINKS, Settings
from replicator.errors import ReplicatorError
from replicator.http import HttpServer, serve
from replicator.leader import LeaderLock, LeadershipLostError, process_name
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.rescope import Rescope, rescope
from replicator.retry import backoff_policy
from replicator.sinks.base import Sink
from replicator.source import SlotLostError, SourceError, SourceLoop, SourceOptions, create_slot, slot_info
from replicator.status import NOT_MIGRATED_ERRORS, Health, configured_secrets, not_migrated, redact
from replicator.store import checkpoints, sink_state
from replicator.store.outbox import backfill

if TYPE_CHECKING:
    from replicator.sink_gate import SinkGate

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

    def readiness(self, probe: Callable[[], None]) -> Health:
        """Ready only when this process can do its work: streaming as the leader, or standing by, and Postgres
        answers ``probe`` (a short connection). Each failed rule is named."""
        reasons: list[str] = []
        rules: list[str] = []

        def fail(rule: str, text: str) -> None:
            rules.append(rule)
            reasons.append(f"{rule}: {text}")

        if self.incident is not None:
            fail("incident", self.incident)
        elif self.role == "starting":
            fail("starting", "the process is starting")
        elif self.role == "stopping":
            fail("stopping", "the process is shutting down")
        elif self.role == "leader" and not self.streaming:
            fail("not_streaming", "this process leads but its stream is (re)connecting")
        try:
            probe()
        except psycopg.Error as error:
            fail("postgres_unreachable", f"cannot reach Postgres: {str(error).strip()}")
        return Health(ok=not reasons, reasons=reasons, rules=rules)


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


def apply_scopes(conn: psycopg.Connection[Any], settings: Settings, metrics: Metrics | None = None) -> list[Rescope]:
    """Compare each enabled sink's configured scope with the one it applied last (``replicator.sink_scope``) and,
    where it changed, enqueue what newly falls inside and what the sink holds that falls outside (``rescope``).
    Runs in the leader after the slot is ready, so the re-scope's rows join the same outbox as the stream's."""
    done: list[Rescope] = []
    for sink in settings.enabled_sinks:
        result = rescope(conn, sink, settings.scope_of(sink), settings.scope_narrow)
        done.append(result)
        if not result.changed:
            continue
        if metrics is not None:
            metrics.rescoped_documents.labels(sink=sink, direction="widened").inc(result.widened)
            metrics.rescoped_documents.labels(sink=sink, direction="narrowed").inc(result.narrowed)
        log.info(
            "scope.changed",
            sink=sink,
            previous=result.previous or "all (none recorded)",
            scope=result.scope,
            narrow=result.narrow,
            widened=result.widened,
            narrowed=result.narrowed,
        )
    return done


# ---- threads -----------------------------------------------------------------------------------------------------


def start_workers(
    settings: Settings, metrics: Metrics, stop: threading.Event
) -> tuple[list[threading.Thread], dict[str, SinkGate]]:
    """One ``SinkGate`` per enabled sink and ``workers_per_sink`` threads on it. Returns at once: building a sink
    (an embedding model loads then), checking it and waiting for it to answer all happen in its own threads, so the
    source and the other sinks never wait for one sink (replicator/sink_gate.py)."""
    from replicator.sink_gate import SinkGate

    threads: list[threading.Thread] = []
    gates: dict[str, SinkGate] = {}
    for name in settings.enabled_sinks:
        gate = SinkGate(name, _builder(name, settings, metrics, stop), settings=settings, metrics=metrics)
        gates[name] = gate
        for _ in range(settings.workers_per_sink):
            thread = threading.Thread(
                target=_sink_worker, args=(gate, settings, metrics, stop), name=f"worker-{name}", daemon=True
            )
            thread.start()
            threads.append(thread)
    return threads, gates


def _builder(name: str, settings: Settings, metrics: Metrics, stop: threading.Event) -> Callable[[], Sink]:
    def build() -> Sink:
        from replicator.budget import sink_limiter
        from replicator.sinks.factory import build_sink

        # Notion's budget is the integration's, shared with every process using the token (replicator/budget.py).
        return build_sink(name, settings, metrics=metrics, limiter=sink_limiter(name, settings, metrics, stop=stop))

    return build


def _sink_worker(gate: SinkGate, settings: Settings, metrics: Metrics, stop: threading.Event) -> None:
    """One worker thread: wait for the sink to be up, then apply its outbox; a worker that crashes is started again
    after a pause (it must never take the source down; its rows wait in the outbox)."""
    from replicator.worker import SinkWorker, new_worker_id

    crashes = 0
    restart = backoff_policy(settings)
    while not stop.is_set():
        sink = gate.ensure(stop)
        if sink is None:
            return
        worker = SinkWorker(
            settings.dsn, sink, settings=settings, metrics=metrics, worker_id=new_worker_id(gate.name), gate=gate
        )
        try:
            worker.run(stop)
            return
        except Exception as exc:
            crashes += 1
            delay = restart.delay(crashes)
            log.error("worker.crashed", sink=gate.name, error=str(exc), restart_in_s=round(delay, 2))
            stop.wait(delay)


def _status_reader(settings: Settings) -> Callable[[], Any]:
    def read() -> Any:
        from replicator.status import collect_status

        with psycopg.connect(settings.dsn, autocommit=True, connect_timeout=5) as conn:
            return collect_status(conn, settings)

    return read


def _probe(settings: Settings) -> Callable[[], None]:
    def probe() -> None:
        with psycopg.connect(settings.dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")

    return probe


def _start_http(settings: Settings, metrics: Metrics, state: DaemonState) -> HttpServer | None:
    from replicator.status import evaluate_health, refresh_gauges, unreachable

    read_status = _status_reader(settings)
    secrets = configured_secrets(settings)
    probe = _probe(settings)

    def health() -> Health:
        try:
            return evaluate_health(read_status(), settings)
        except psycopg.OperationalError as error:
            return unreachable(error, settings)

    def ready() -> Health:
        verdict = state.readiness(probe)
        return Health(ok=verdict.ok, reasons=[redact(r, secrets) for r in verdict.reasons], rules=verdict.rules)

    try:
        return serve(
            settings.http_addr,
            metrics,
            health=health,
            ready=ready,
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


def _source_loop(settings: Settings, metrics: Metrics, state: DaemonState, lock: LeaderLock) -> SourceLoop:
    def streaming(on: bool) -> None:
        state.streaming = on

    return SourceLoop(
        settings.dsn,
        SourceOptions(
            slot=settings.replicator_slot,
            sinks=settings.enabled_sinks,
            batch_max_changes=settings.batch_max_changes,
            batch_max_wait_ms=settings.batch_max_wait_ms,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            shutdown_deadline_s=settings.shutdown_deadline_s,
            leader=process_name(),
        ),
        metrics=metrics,
        policy=backoff_policy(settings),
        leader_check=lock.check,
        on_streaming=streaming,
    )


def _lead(
    settings: Settings,
    metrics: Metrics,
    state: DaemonState,
    lock: LeaderLock,
    stop: threading.Event,
    start_sinks: Callable[[], None] = lambda: None,
    start_leader_stages: Callable[[], None] = lambda: None,
) -> int:
    """Take the lock (or stand by), set up the slot, stream; after a lost lock or an unreachable Postgres go back
    to the start of that, in-process, until ``stop``. Only a lost slot or a wrong one ends the process.

    ``start_sinks`` is called once the slot is created or confirmed (or this process stands by, or Postgres cannot
    be reached yet): nothing slow (a sink's model loading, its checks) runs before the slot is safe."""
    slot = settings.replicator_slot
    failures = 0
    reconnect = backoff_policy(settings)  # Postgres unreachable at set-up: the same schedule as the source's

    def standby() -> None:
        state.role = "standby"
        start_sinks()

    while not stop.is_set():
        try:
            if not lock.acquire(stop, on_standby=standby):
                return EXIT_OK
            state.role = "leader"
            metrics.is_leader.set(1)
            with psycopg.connect(
                settings.dsn, autocommit=True, application_name="replicator-setup", connect_timeout=10
            ) as conn:
                sync_sink_status(conn, settings)
                prepare_slot(conn, slot, settings.enabled_sinks)
                apply_scopes(conn, settings, metrics)
            failures = 0
            start_sinks()
            start_leader_stages()
            _source_loop(settings, metrics, state, lock).run(stop)
            return EXIT_OK
        except LeadershipLostError as exc:
            # Another process took the lock while ours was gone (a restart, a failover): stand by for it.
            log.warning("leader.lost", slot=slot, error=str(exc), action="standing by; polling for the lock")
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            failures += 1
            delay = reconnect.delay(failures)
            log.warning("daemon.postgres_unreachable", slot=slot, error=str(exc), retry_in_s=delay)
            start_sinks()
            stop.wait(delay)
        state.streaming = False
        state.role = "standby"
        metrics.is_leader.set(0)
        lock.release()
    return EXIT_OK


def _once(start: Callable[[], list[threading.Thread]], into: list[threading.Thread]) -> Callable[[], None]:
    """``start`` run on the first call only, its threads added to ``into`` (``_lead`` calls these on every pass)."""
    done = threading.Event()

    def call() -> None:
        if not done.is_set():
            done.set()
            into.extend(start())

    return call


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
            # Sink workers run in every process, leader or standby: they claim outbox rows with
            # FOR UPDATE SKIP LOCKED and leases, so more replicas apply more in parallel (DESIGN.md §7).
            # Only the source needs the leader lock. They start once the slot is safe (see _lead).
            def sinks() -> list[threading.Thread]:
                return start_workers(settings, metrics, worker_stop)[0]

            def leader_stages() -> list[threading.Thread]:
                # Stages that run in the leader only (narrative capture, #14), started the first time this process
                # leads; each holds its own advisory lock too, so a process that lost the lead never runs one twice.
                from replicator.narrative.stage import start_leader_stages

                return start_leader_stages(settings, metrics, worker_stop)

            # Both are joined with the workers at shutdown.
            return _lead(settings, metrics, state, lock, stop, _once(sinks, workers), _once(leader_stages, workers))
        except NOT_MIGRATED_ERRORS as exc:
            log.error("daemon.not_migrated", error=redact(not_migrated(exc), configured_secrets(settings)))
            return EXIT_FAILED
        except SlotLostError as exc:
            state.incident = redact(str(exc), configured_secrets(settings))
            log.error("slot.lost", slot=slot, reason=exc.reason, action="replicator slot drop, then run again")
            return EXIT_UNHEALTHY
        except ChangeParseError as exc:
            # A change we cannot read is never skipped: the stream stops before it (the slot keeps it, nothing
            # after it is confirmed), the incident is logged and counted, and the exit code says so.
            metrics.source_incidents.labels(kind="unparseable_change").inc()
            state.incident = f"unparseable change: {exc}"
            log.error(
                "source.unparseable_change",
                slot=slot,
                error=str(exc),
                action="the slot keeps this change; report it with the LSN and restart after the fix",
            )
            return EXIT_FAILED
        except (ReplicatorError, psycopg.Error) as exc:
            log.error("daemon.failed", slot=slot, error=str(exc), kind=type(exc).__name__)
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
