"""What an operator sees: the slot (exists, active, confirmed LSN, lag in bytes and seconds, WAL retention) and
each sink (enabled, pending, oldest pending age, dead letters, last success and error), read with plain SQL from
``pg_replication_slots`` and the replicator's own tables. ``evaluate_health`` turns a ``Status`` into a verdict
with reasons (``replicator health``, ``/healthz``). ``redact`` strips secrets from any error text shown here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.metrics import Metrics

# ---- redaction ---------------------------------------------------------------------------------------------------

_REDACTED = "[REDACTED]"
_SECRET_PATTERNS = (
    # URL user-info passwords: postgresql://user:secret@host, https://user:token@host
    (re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)[^@\s]+(?=@)"), r"\g<keep>" + _REDACTED),
    # libpq conninfo and similar key=value secrets
    (re.compile(r"(?i)(?P<keep>\b(?:password|passwd|pwd)\s*=\s*)('[^']*'|\S+)"), r"\g<keep>" + _REDACTED),
    # Authorization headers
    (re.compile(r"(?i)(?P<keep>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\g<keep>" + _REDACTED),
    # Notion integration tokens (new ntn_ and legacy secret_ forms)
    (re.compile(r"\b(?:ntn|secret)_[A-Za-z0-9]{16,}"), _REDACTED),
    # Pinecone API keys (pcsk_… and legacy UUID-shaped keys after an api-key marker), OpenAI-style sk-… keys
    (re.compile(r"\bpcsk_[A-Za-z0-9_]{16,}"), _REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), _REDACTED),
    (
        re.compile(r"(?i)(?P<keep>\b(?:api[-_ ]?key|x-api-key|token|apikey)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]{6,}"),
        r"\g<keep>" + _REDACTED,
    ),
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove tokens, API keys and passwords from error text. ``secrets`` are exact values to remove as well
    (the configured keys), for shapes no pattern knows."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def configured_secrets(settings: Settings) -> tuple[str, ...]:
    """The secret values in ``settings`` (for ``redact``), including the database password."""
    values: list[str] = []
    for key in (settings.notion_api_key, settings.pinecone_api_key, settings.openai_api_key):
        if key is not None:
            values.append(key.get_secret_value())
    password = psycopg.conninfo.conninfo_to_dict(settings.dsn).get("password")
    if password:
        values.append(str(password))
    return tuple(values)


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


@dataclass(frozen=True)
class Status:
    slot: SlotStatus
    sinks: tuple[SinkView, ...]
    collected_at: datetime

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

# LAG IN SECONDS from the heartbeat: the time the newest heartbeat took from its commit to the replicator
# (heartbeat_received_at − heartbeat_seen) or, when no heartbeat has come back for longer than the heartbeat
# interval, how overdue the next one is (now − heartbeat_seen − interval): a stuck stream shows as growing lag,
# while a caught-up one reads near zero instead of "time since the last heartbeat", which is up to one interval.
_CHECKPOINT_SQL = """
SELECT greatest(
           extract(epoch FROM heartbeat_received_at - heartbeat_seen),
           extract(epoch FROM now() - heartbeat_seen) - %s,
           0
       )::float8,
       leader, backfill_done_at
FROM replicator.source_checkpoint WHERE slot_name = %s
"""

# SINK_COUNTS: pending rows and the age of the oldest one per sink, and dead letters per sink, from the tables
# themselves (no counters to drift).
_SINK_SQL = """
WITH names AS (
    SELECT sink FROM replicator.sink_status
    UNION SELECT DISTINCT sink FROM replicator.outbox
    UNION SELECT DISTINCT sink FROM replicator.dead_letter
    UNION SELECT unnest(%s::text[])
),
pending AS (
    SELECT sink, count(*) AS n, extract(epoch FROM now() - min(first_enqueued_at))::float8 AS oldest
    FROM replicator.outbox GROUP BY sink
),
dead AS (SELECT sink, count(*) AS n FROM replicator.dead_letter GROUP BY sink)
SELECT names.sink, coalesce(pending.n, 0), pending.oldest, coalesce(dead.n, 0),
       coalesce(s.needs_resync, false), s.last_success_at, s.last_error, s.last_error_at
FROM names
LEFT JOIN pending USING (sink)
LEFT JOIN dead USING (sink)
LEFT JOIN replicator.sink_status s USING (sink)
ORDER BY names.sink
"""


def collect_status(conn: psycopg.Connection[Any], settings: Settings) -> Status:
    """Read the slot and every sink the replicator knows of (configured ones, and any with rows in its tables)."""
    slot_name = settings.replicator_slot
    slot_row = conn.execute(_SLOT_SQL, (slot_name,)).fetchone()
    checkpoint = conn.execute(_CHECKPOINT_SQL, (settings.heartbeat_interval_s, slot_name)).fetchone()
    lag_seconds = None
    leader = None
    backfill_done_at = None
    if checkpoint is not None:
        lag_seconds = max(0.0, checkpoint[0]) if checkpoint[0] is not None else None
        leader = checkpoint[1]
        backfill_done_at = checkpoint[2]
    if slot_row is None:
        slot = SlotStatus(
            name=slot_name,
            exists=False,
            checkpoint_exists=checkpoint is not None,
            lag_seconds=lag_seconds,
            leader=leader,
            backfill_done_at=backfill_done_at,
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
        )
    secrets = configured_secrets(settings)
    sinks = []
    for name, pending, oldest, dead, needs_resync, success_at, error, error_at in conn.execute(
        _SINK_SQL, (list(settings.configured_sinks),)
    ):
        sinks.append(
            SinkView(
                name=name,
                configured=name in settings.configured_sinks,
                enabled=name in settings.enabled_sinks,
                needs_resync=needs_resync,
                pending=pending,
                oldest_pending_age_s=max(0.0, oldest) if oldest is not None else None,
                dead_letters=dead,
                last_success_at=success_at,
                last_error=redact(error, secrets) if error else None,
                last_error_at=error_at,
            )
        )
    now = conn.execute("SELECT now()").fetchone()
    assert now is not None
    return Status(slot=slot, sinks=tuple(sinks), collected_at=now[0])


# ---- health ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    ok: bool
    reasons: list[str] = field(default_factory=list)  # why it is unhealthy (empty when ok)
    warnings: list[str] = field(default_factory=list)  # worth a look, not unhealthy

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons), "warnings": list(self.warnings)}


def evaluate_health(status: Status, settings: Settings) -> Health:
    """Unhealthy when the slot is lost or missing (always: nothing can be replicated without it), when lag in
    seconds passes ``REPLICATOR_HEALTH_MAX_LAG_S``, or when dead letters pass ``REPLICATOR_HEALTH_MAX_DEAD_LETTERS``.
    WAL at risk (``wal_status = unreserved``) and a sink waiting for a resync are warnings."""
    reasons: list[str] = []
    warnings: list[str] = []
    slot = status.slot
    if slot.wal_status == "lost":
        reasons.append(
            f"slot {slot.name} is lost (the server removed WAL it still needed): changes were missed; "
            "run `replicator slot drop` then `replicator run` to recreate it and resync every sink"
        )
    elif not slot.exists and slot.checkpoint_exists:
        reasons.append(
            f"slot {slot.name} is missing although the replicator used it before: changes may have been missed; "
            "run `replicator slot drop` then `replicator run` to recreate it and resync every sink"
        )
    elif not slot.exists:
        reasons.append(f"slot {slot.name} does not exist yet: start `replicator run` to create it")
    if slot.lag_seconds is not None and slot.lag_seconds > settings.health_max_lag_s:
        reasons.append(
            f"lag {slot.lag_seconds:.0f}s exceeds REPLICATOR_HEALTH_MAX_LAG_S={settings.health_max_lag_s:g}s"
        )
    if slot.wal_status == "unreserved":
        warnings.append(f"slot {slot.name} wal_status is unreserved: WAL it needs is at risk of removal")
    dead = sum(s.dead_letters for s in status.sinks)
    if dead > settings.health_max_dead_letters:
        per_sink = ", ".join(f"{s.name}={s.dead_letters}" for s in status.sinks if s.dead_letters)
        reasons.append(
            f"{dead} dead letter(s) ({per_sink}) exceed REPLICATOR_HEALTH_MAX_DEAD_LETTERS="
            f"{settings.health_max_dead_letters}; see `replicator dlq list`"
        )
    for sink in status.sinks:
        if sink.enabled and sink.needs_resync:
            warnings.append(f"sink {sink.name} was switched back on: run `replicator resync --sink {sink.name}`")
    return Health(ok=not reasons, reasons=reasons, warnings=warnings)


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
    for sink in status.sinks:
        metrics.outbox_pending.labels(sink=sink.name).set(sink.pending)
        metrics.oldest_pending_seconds.labels(sink=sink.name).set(sink.oldest_pending_age_s or 0.0)
        metrics.dead_letter_rows.labels(sink=sink.name).set(sink.dead_letters)
