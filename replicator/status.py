"""What an operator sees: the slot (exists, active, confirmed LSN, lag in bytes and seconds, WAL retention) and
each sink (enabled, pending, oldest pending age, dead letters, last success and error), and the narrative capture
(pages pending, the oldest edit not captured yet, people's property edits overwritten by Postgres), read with plain
SQL from ``pg_replication_slots`` and the replicator's own tables. ``evaluate_health`` turns a ``Status`` into a verdict
with reasons (``replicator health``, ``/healthz``). ``redact`` strips secrets from any error text shown here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.metrics import Metrics
from replicator.store import checkpoints, narrative, scopes, sink_state
from schema.redaction import redact as _redact
from schema.redaction import url_secrets

# ---- redaction: one function for every path (schema/redaction.py) -------------------------------------------------

redact = _redact


def configured_secrets(settings: Settings) -> tuple[str, ...]:
    """The secret values in ``settings`` (for ``redact``), including the database password."""
    values: list[str] = []
    for key in (settings.notion_api_key, settings.pinecone_api_key, settings.openai_api_key):
        if key is not None:
            values.append(key.get_secret_value())
    # Taken from the URL text, not parsed: a password psycopg cannot decode must not leak either.
    values.extend(url_secrets(settings.dsn))
    return tuple(values)


# Errors that mean the database lacks the tables the replicator reads: never migrated, or an older revision.
NOT_MIGRATED_ERRORS = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)


def not_migrated(error: psycopg.Error) -> str:
    """The message for a database without the replicator's tables (``NOT_MIGRATED_ERRORS``)."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return f"the database is not migrated ({first}); run `make migrate` or `alembic upgrade head`"


# ---- status ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotStatus:
    name: str
    exists: bool
    # A source_checkpoint row exists: the replicator has run on this slot before (so a missing slot was lost).
    checkpoint_exists: bool
    active: bool = False
    active_pid: int | None = None
    confirmed_flush_lsn: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None  # how far the stream is behind, from the heartbeat (see _CHECKPOINT_SQL)
    wal_status: str | None = None
    safe_wal_size: int | None = None
    leader: str | None = None
    backfill_done_at: datetime | None = None
    checkpoint_age_s: float | None = None  # since a process last advanced the checkpoint (streamed or heartbeated)

    @property
    def lost(self) -> bool:
        """The server invalidated the slot, or it vanished after the replicator had used it."""
        return self.wal_status == "lost" or (not self.exists and self.checkpoint_exists)


@dataclass(frozen=True)
class SinkView:
    name: str
    configured: bool  # named in REPLICATOR_SINKS
    enabled: bool  # configured and not switched off (ENABLE_DUAL_WRITE=false removes notion)
    needs_resync: bool
    pending: int
    oldest_pending_age_s: float | None
    dead_letters: int
    last_success_at: datetime | None
    last_error: str | None  # redacted
    last_error_at: datetime | None
    # What a daemon's sink gate last found (replicator.sink_health): None when no daemon ever checked the sink.
    up: bool | None = None
    down_reason: str | None = None  # redacted
    down_for_s: float | None = None
    fix: str | None = None  # the command that fixes a configuration an operator must fix
    duplicates_found: int = 0  # extra downstream copies of documents found so far (duplicate Notion pages)
    last_duplicate_at: datetime | None = None
    schema_problem: str | None = None  # documents wait: the property, and the command that fixes it (redacted)
    schema_problem_at: datetime | None = None
    # Which documents the sink carries (REPLICATOR_SCOPE_*, #14): "all", or the canonical scope expression; the one
    # it applied last (None: never recorded) and what of its last re-scope is still in the outbox.
    scope: str = "all"
    scope_applied: str | None = None
    rescope_pending: int = 0


@dataclass(frozen=True)
class OverwriteView:
    entity: str
    postgres_id: str
    notion_page_id: str
    property: str
    edited_by: str | None
    edited_at: datetime
    notion_value: str
    postgres_value: str
    state: str = "edited in Notion, overwritten"

    @classmethod
    def of(cls, o: narrative.Overwrite) -> OverwriteView:
        """How ``status`` and ``verify`` show a recorded overwrite (the same fields in both, and in their JSON)."""
        return cls(
            entity=o.key.entity,
            postgres_id=str(o.key.id),
            notion_page_id=o.page_id,
            property=o.property,
            edited_by=o.edited_by,
            edited_at=o.edited_at,
            notion_value=o.notion_value,
            postgres_value=o.postgres_value,
        )


@dataclass(frozen=True)
class NarrativeView:
    """The narrative capture (Notion → Postgres): on/off, its backlog, what it stored, the overwrites it saw."""

    capture: bool  # NARRATIVE_CAPTURE
    pages_pending: int  # edited pages whose blocks are not read yet
    oldest_pending_edit: datetime | None  # the oldest edit not yet captured
    oldest_pending_age_s: float | None
    pages_tracked: int
    last_checked_at: datetime | None
    narratives: int  # rows in public.narrative
    overwrites: int  # people's edits of owned properties, overwritten by Postgres
    recent_overwrites: tuple[OverwriteView, ...] = ()


@dataclass(frozen=True)
class Status:
    slot: SlotStatus
    sinks: tuple[SinkView, ...]
    collected_at: datetime
    narrative: NarrativeView | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""
        out = _jsonable(asdict(self))
        assert isinstance(out, dict)
        out["slot"]["lost"] = self.slot.lost
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# SLOT_STATUS: lag in bytes is measured against the server's current WAL position, so it grows while nobody
# confirms (a stopped replicator) — exactly what an operator needs to see.
_SLOT_SQL = """
SELECT active, active_pid, confirmed_flush_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
       wal_status, safe_wal_size
FROM pg_replication_slots WHERE slot_name = %s
"""


def collect_status(conn: psycopg.Connection[Any], settings: Settings) -> Status:
    """Read the slot and every sink the replicator knows of (configured ones, and any with rows in its tables)."""
    slot_name = settings.replicator_slot
    slot_row = conn.execute(_SLOT_SQL, (slot_name,)).fetchone()
    checkpoint = checkpoints.lag(conn, slot_name, settings.heartbeat_interval_s)
    lag_seconds = checkpoint.lag_seconds if checkpoint else None
    leader = checkpoint.leader if checkpoint else None
    backfill_done_at = checkpoint.backfill_done_at if checkpoint else None
    checkpoint_age_s = checkpoint.age_s if checkpoint else None
    if slot_row is None:
        slot = SlotStatus(
            name=slot_name,
            exists=False,
            checkpoint_exists=checkpoint is not None,
            lag_seconds=lag_seconds,
            leader=leader,
            backfill_done_at=backfill_done_at,
            checkpoint_age_s=checkpoint_age_s,
        )
    else:
        active, pid, lsn, lag_bytes, wal_status, safe_wal_size = slot_row
        slot = SlotStatus(
            name=slot_name,
            exists=True,
            checkpoint_exists=checkpoint is not None,
            active=bool(active),
            active_pid=pid,
            confirmed_flush_lsn=lsn,
            lag_bytes=lag_bytes,
            lag_seconds=lag_seconds,
            wal_status=wal_status,
            safe_wal_size=safe_wal_size,
            leader=leader,
            backfill_done_at=backfill_done_at,
            checkpoint_age_s=checkpoint_age_s,
        )
    secrets = configured_secrets(settings)
    health = sink_state.read_health(conn)
    applied = scopes.applied(conn)
    sinks = [
        SinkView(
            name=row.name,
            configured=row.name in settings.configured_sinks,
            enabled=row.name in settings.enabled_sinks,
            needs_resync=row.needs_resync,
            pending=row.pending,
            oldest_pending_age_s=row.oldest_pending_age_s,
            dead_letters=row.dead_letters,
            last_success_at=row.last_success_at,
            last_error=redact(row.last_error, secrets) if row.last_error else None,
            last_error_at=row.last_error_at,
            **_sink_health(health.get(row.name), secrets),
            duplicates_found=row.duplicates_found,
            last_duplicate_at=row.last_duplicate_at,
            schema_problem=redact(row.schema_problem, secrets) if row.schema_problem else None,
            schema_problem_at=row.schema_problem_at,
            scope=settings.scope_of(row.name).text(),
            scope_applied=applied[row.name].scope if row.name in applied else None,
            rescope_pending=applied[row.name].pending if row.name in applied else 0,
        )
        for row in sink_state.counts(conn, settings.configured_sinks)
    ]
    now = conn.execute("SELECT now()").fetchone()
    assert now is not None
    return Status(slot=slot, sinks=tuple(sinks), collected_at=now[0], narrative=_narrative(conn, settings, now[0]))


def _narrative(conn: psycopg.Connection[Any], settings: Settings, now: datetime) -> NarrativeView:
    backlog = narrative.backlog(conn)
    recent = tuple(OverwriteView.of(o) for o in narrative.overwrites(conn, limit=10))
    oldest = backlog.oldest_pending_edit
    return NarrativeView(
        capture=settings.narrative_capture,
        pages_pending=backlog.pending,
        oldest_pending_edit=oldest,
        oldest_pending_age_s=max((now - oldest).total_seconds(), 0.0) if oldest is not None else None,
        pages_tracked=backlog.pages,
        last_checked_at=backlog.last_checked_at,
        narratives=sum(narrative.counts(conn).values()),
        overwrites=narrative.overwrite_count(conn),
        recent_overwrites=recent,
    )


def _sink_health(row: sink_state.SinkHealthRow | None, secrets: tuple[str, ...]) -> dict[str, Any]:
    if row is None:
        return {}
    return {
        "up": row.up,
        "down_reason": redact(row.reason, secrets) if row.reason else None,
        "down_for_s": row.down_for_s,
        "fix": row.fix,
    }


# ---- health ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    ok: bool
    reasons: list[str] = field(default_factory=list)  # why it is unhealthy, each "rule: text" (empty when ok)
    warnings: list[str] = field(default_factory=list)  # worth a look, not unhealthy
    rules: list[str] = field(default_factory=list)  # the names of the rules that failed, in the reasons' order

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rules": list(self.rules),
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
        }


class _Verdict:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.rules: list[str] = []
        self.warnings: list[str] = []

    def fail(self, rule: str, text: str) -> None:
        self.rules.append(rule)
        self.reasons.append(f"{rule}: {text}")

    def health(self) -> Health:
        return Health(ok=not self.reasons, reasons=self.reasons, warnings=self.warnings, rules=self.rules)


def unreachable(error: BaseException, settings: Settings) -> Health:
    """The verdict when Postgres cannot be asked (rule ``postgres_unreachable``)."""
    verdict = _Verdict()
    message = redact(str(error).strip() or type(error).__name__, configured_secrets(settings))
    verdict.fail("postgres_unreachable", f"cannot reach Postgres: {message}")
    return verdict.health()


def evaluate_health(status: Status, settings: Settings) -> Health:
    """The verdict, each failed rule named (``rules`` and the prefix of each reason):

    - ``slot_lost`` / ``slot_missing`` / ``slot_not_created``: nothing can be replicated without the slot;
    - ``checkpoint_stale``: no process has streamed or heartbeated for ``REPLICATOR_HEALTH_MAX_CHECKPOINT_AGE_S``
      (the checkpoint's age: a replicator that is gone, hung or cannot reach Postgres);
    - ``slot_inactive``: the slot has no consumer although the replicator streamed it, for longer than three
      heartbeat intervals (a reconnect is shorter);
    - ``lag``: lag in seconds over ``REPLICATOR_HEALTH_MAX_LAG_S``;
    - ``dead_letters``: over ``REPLICATOR_HEALTH_MAX_DEAD_LETTERS``;
    - ``sink_misconfigured``: an enabled sink is down for a configuration an operator must fix (with the command);
    - ``sink_down``: an enabled sink has been down longer than ``REPLICATOR_HEALTH_MAX_SINK_DOWN_S``;
    - ``sink_schema``: a sink's documents wait for a schema fix (a property a person renamed or deleted; the
      reason names it and the fixing command).

    ``postgres_unreachable`` comes from ``unreachable`` when the status cannot be read at all. WAL at risk
    (``wal_status = unreserved``), a sink down for less than its threshold and a sink waiting for a resync are
    warnings."""
    v = _Verdict()
    warnings = v.warnings
    slot = status.slot
    if slot.wal_status == "lost":
        v.fail(
            "slot_lost",
            f"slot {slot.name} is lost (the server removed WAL it still needed): changes were missed; "
            "run `replicator slot drop` then `replicator run` to recreate it and resync every sink",
        )
    elif not slot.exists and slot.checkpoint_exists:
        v.fail(
            "slot_missing",
            f"slot {slot.name} is missing although the replicator used it before: changes may have been missed; "
            "run `replicator slot drop` then `replicator run` to recreate it and resync every sink",
        )
    elif not slot.exists:
        v.fail("slot_not_created", f"slot {slot.name} does not exist yet: start `replicator run` to create it")
    age = slot.checkpoint_age_s
    if slot.exists and age is not None and age > settings.health_max_checkpoint_age_s:
        v.fail(
            "checkpoint_stale",
            f"no replicator has streamed or heartbeated slot {slot.name} for {age:.0f}s (over "
            f"REPLICATOR_HEALTH_MAX_CHECKPOINT_AGE_S={settings.health_max_checkpoint_age_s:g}s): is `replicator "
            "run` running, and can it reach Postgres?",
        )
    if (
        slot.exists
        and not slot.active
        and slot.backfill_done_at is not None
        and (age is None or age > 3 * settings.heartbeat_interval_s)
    ):
        v.fail(
            "slot_inactive",
            f"slot {slot.name} has no consumer although the replicator streamed it"
            + (f" (last checkpoint {age:.0f}s ago)" if age is not None else "")
            + ": start `replicator run`, or see why its leader does not stream",
        )
    if slot.lag_seconds is not None and slot.lag_seconds > settings.health_max_lag_s:
        v.fail("lag", f"lag {slot.lag_seconds:.0f}s exceeds REPLICATOR_HEALTH_MAX_LAG_S={settings.health_max_lag_s:g}s")
    if slot.wal_status == "unreserved":
        warnings.append(f"slot {slot.name} wal_status is unreserved: WAL it needs is at risk of removal")
    dead = sum(s.dead_letters for s in status.sinks)
    if dead > settings.health_max_dead_letters:
        per_sink = ", ".join(f"{s.name}={s.dead_letters}" for s in status.sinks if s.dead_letters)
        v.fail(
            "dead_letters",
            f"{dead} dead letter(s) ({per_sink}) exceed REPLICATOR_HEALTH_MAX_DEAD_LETTERS="
            f"{settings.health_max_dead_letters}; see `replicator dlq list`",
        )
    for sink in status.sinks:
        if not sink.enabled or sink.up is not False:
            continue
        if sink.fix:
            v.fail(
                "sink_misconfigured",
                f"sink {sink.name} is down for a configuration an operator must fix: {sink.down_reason}; "
                f"fix: {sink.fix}",
            )
        elif (sink.down_for_s or 0.0) > settings.health_max_sink_down_s:
            v.fail(
                "sink_down",
                f"sink {sink.name} has been down {sink.down_for_s or 0.0:.0f}s (over "
                f"REPLICATOR_HEALTH_MAX_SINK_DOWN_S={settings.health_max_sink_down_s:g}s): {sink.down_reason}",
            )
        else:
            warnings.append(f"sink {sink.name} is down ({sink.down_for_s or 0.0:.0f}s): {sink.down_reason}")
    for sink in status.sinks:
        if sink.enabled and sink.schema_problem:
            v.fail("sink_schema", f"sink {sink.name}: documents wait for a schema fix: {sink.schema_problem}")
        age = sink.oldest_pending_age_s
        if sink.enabled and sink.up is not False and age is not None and age > settings.health_max_pending_age_s:
            # The sink answers, yet a change has waited this long: its workers are not getting through (one that
            # keeps crashing is restarted with backoff, so only its rows' age shows it) or cannot keep up.
            v.fail(
                "backlog_stale",
                f"sink {sink.name}: the oldest pending change has waited {age:.0f}s (over "
                f"REPLICATOR_HEALTH_MAX_PENDING_AGE_S={settings.health_max_pending_age_s:g}s) while the sink is up; "
                "see `worker.crashed` / `sink.retry` in the logs and `replicator dlq list`",
            )
        if sink.enabled and sink.needs_resync:
            warnings.append(f"sink {sink.name} was switched back on: run `replicator resync --sink {sink.name}`")
    return v.health()


def refresh_gauges(status: Status, metrics: Metrics) -> None:
    """Copy what ``collect_status`` read into the Prometheus gauges (pending, oldest pending age, dead letters,
    lag, wal_status)."""
    metrics.set_wal_status(status.slot.wal_status if status.slot.exists else None)
    if status.slot.safe_wal_size is not None:
        metrics.slot_safe_wal_size.set(status.slot.safe_wal_size)
    if status.slot.lag_bytes is not None:
        metrics.lag_bytes.set(status.slot.lag_bytes)
    if status.slot.lag_seconds is not None:
        metrics.lag_seconds.set(status.slot.lag_seconds)
    if status.narrative is not None:
        metrics.narrative_pending.set(status.narrative.pages_pending)
        metrics.narrative_oldest_pending_seconds.set(status.narrative.oldest_pending_age_s or 0.0)
    for sink in status.sinks:
        metrics.outbox_pending.labels(sink=sink.name).set(sink.pending)
        metrics.oldest_pending_seconds.labels(sink=sink.name).set(sink.oldest_pending_age_s or 0.0)
        metrics.dead_letter_rows.labels(sink=sink.name).set(sink.dead_letters)
