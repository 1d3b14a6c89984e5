"""The replicator's own state, in the Postgres schema ``replicator`` (never on domain tables).

- ``outbox``: one row per sink + entity + id that is dirty, coalesced (``version`` bumps on each new change).
- ``dead_letter``: rows a sink rejected for good or after its retries, with the error.
- ``sink_state``: per sink and document, the remote id, content hash and chunk count last written.
- ``sink_status``: per sink, enabled flag and last success / error, for ``replicator status``.
- ``sink_health``: per sink, whether the daemon's sink gate last found it up, and if not why, since when, and the
  command that fixes a configuration an operator must fix (``replicator status`` / ``health``).
- ``sink_scope``: per sink, the scope (which documents it carries, #14) it applied last and when, so a changed
  scope is noticed at start-up and what newly falls inside or outside is enqueued (a re-scope).
- ``source_checkpoint``: per slot, the LSN confirmed to the server and the heartbeat last seen through the stream.
- ``narrative_page``: per Notion page of a managed database, the last edit the narrative capture saw and the one
  it captured (``pending`` pages are the capture's backlog).
- ``property_overwrite``: a replicator-owned property a person changed in Notion, with who, when, the old (their)
  and new (Postgres's) value; Postgres wins, the record says so.
- ``verify_result``: per sink, the last ``replicator verify`` counts (shown by ``replicator rollout status``).
- ``rate_budget``: per API credential (a fingerprint of the Notion token, never the token), the token bucket every
  process using it draws on: rate, burst, tokens saved up as of ``refilled_at``, and ``blocked_until`` after a 429.
- ``heartbeat``: a row the daemon rewrites every few seconds; it is part of the stream, so seeing it come back
  measures lag in seconds and keeps an idle slot advancing.

LSNs are stored as ``bigint`` (``pg_lsn - '0/0'``): comparable, and no custom column type.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION, UUID
from sqlalchemy.orm import Mapped, mapped_column

from schema.base import Base

REPLICATOR_SCHEMA = "replicator"


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        # Serves claim_batch's ORDER BY (a sink's rows, oldest first); migration 0006_outbox_claim_index.
        Index("ix_outbox_claim", "sink", "first_enqueued_at", "entity", "entity_id"),
        # Room for HOT updates: the upsert and the claim change only unindexed columns.
        {"schema": REPLICATOR_SCHEMA, "postgresql_with": {"fillfactor": 70}},
    )

    sink: Mapped[str] = mapped_column(Text, primary_key=True)
    entity: Mapped[str] = mapped_column(Text, primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("1"))
    lsn: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    first_enqueued_at: Mapped[datetime] = _now()
    last_enqueued_at: Mapped[datetime] = _now()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = _now()
    claimed_by: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class DeadLetter(Base):
    __tablename__ = "dead_letter"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    sink: Mapped[str] = mapped_column(Text, primary_key=True)
    entity: Mapped[str] = mapped_column(Text, primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    lsn: Mapped[int] = mapped_column(BigInteger, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False)
    permanent: Mapped[bool] = mapped_column(nullable=False)
    first_enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    failed_at: Mapped[datetime] = _now()


class SinkState(Base):
    __tablename__ = "sink_state"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    sink: Mapped[str] = mapped_column(Text, primary_key=True)
    entity: Mapped[str] = mapped_column(Text, primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    remote_id: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    synced_at: Mapped[datetime] = _now()


class SinkStatus(Base):
    __tablename__ = "sink_status"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    sink: Mapped[str] = mapped_column(Text, primary_key=True)
    enabled: Mapped[bool] = mapped_column(nullable=False)
    changed_at: Mapped[datetime] = _now()
    # Set when a sink is switched back on: changes made while it was off were never enqueued for it.
    needs_resync: Mapped[bool] = mapped_column(nullable=False, server_default=text("false"))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Extra downstream copies of documents the sink found (duplicate Notion pages), a running count.
    duplicates_found: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    last_duplicate_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Documents of ``schema_problem_entity`` wait for a schema fix: what is wrong and the command that fixes it.
    schema_problem: Mapped[str | None] = mapped_column(Text)
    schema_problem_entity: Mapped[str | None] = mapped_column(Text)
    schema_problem_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SinkHealth(Base):
    __tablename__ = "sink_health"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    sink: Mapped[str] = mapped_column(Text, primary_key=True)
    up: Mapped[bool] = mapped_column(nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    # The command that fixes a configuration an operator must fix (NULL: up, or merely unreachable).
    fix: Mapped[str | None] = mapped_column(Text)
    down_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime] = _now()
    process: Mapped[str | None] = mapped_column(Text)


class SinkScope(Base):
    """The scope a sink applied last (#14): compared with the configured one at start-up (a re-scope)."""

    __tablename__ = "sink_scope"
    __table_args__ = (
        CheckConstraint("narrow IN ('remove', 'keep')", name="narrow"),
        {"schema": REPLICATOR_SCHEMA},
    )

    sink: Mapped[str] = mapped_column(Text, primary_key=True)
    # The canonical scope expression (replicator/scope.py), "all" for every document.
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    narrow: Mapped[str] = mapped_column(Text, nullable=False)
    # When the last re-scope enqueued its documents: the sink's outbox rows enqueued no later are its backlog.
    applied_at: Mapped[datetime] = _now()
    previous_scope: Mapped[str | None] = mapped_column(Text)
    widened: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    narrowed: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))


class SourceCheckpoint(Base):
    __tablename__ = "source_checkpoint"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    slot_name: Mapped[str] = mapped_column(Text, primary_key=True)
    confirmed_lsn: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    backfill_done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The heartbeat's own timestamp as last seen coming back through the stream, and when it was seen.
    heartbeat_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    leader: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _now()


class Heartbeat(Base):
    __tablename__ = "heartbeat"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    slot_name: Mapped[str] = mapped_column(Text, primary_key=True)
    beat_at: Mapped[datetime] = _now()


class NarrativePage(Base):
    __tablename__ = "narrative_page"
    __table_args__ = (
        Index("ix_narrative_page_pending", "pending", "seen_edit"),
        {"schema": REPLICATOR_SCHEMA},
    )

    page_id: Mapped[str] = mapped_column(Text, primary_key=True)
    entity: Mapped[str] = mapped_column(Text, nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    url: Mapped[str | None] = mapped_column(Text)
    # The page's last_edited_time (minute-rounded by Notion) and last_edited_by as the last poll saw them.
    seen_edit: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    seen_by: Mapped[str | None] = mapped_column(Text)
    pending: Mapped[bool] = mapped_column(nullable=False, server_default=text("true"))
    # When the page's blocks were last read (our clock), and the seen_edit they were read for.
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    captured_edit: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_seen_at: Mapped[datetime] = _now()


class PropertyOverwrite(Base):
    __tablename__ = "property_overwrite"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    page_id: Mapped[str] = mapped_column(Text, primary_key=True)
    property: Mapped[str] = mapped_column(Text, primary_key=True)
    edited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    notion_value: Mapped[str] = mapped_column(Text, primary_key=True)
    entity: Mapped[str] = mapped_column(Text, nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    edited_by: Mapped[str | None] = mapped_column(Text)
    postgres_value: Mapped[str] = mapped_column(Text, nullable=False)
    recorded_at: Mapped[datetime] = _now()


class VerifyResult(Base):
    __tablename__ = "verify_result"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    sink: Mapped[str] = mapped_column(Text, primary_key=True)
    checked_at: Mapped[datetime] = _now()
    in_sync: Mapped[bool] = mapped_column(nullable=False)
    documents: Mapped[int] = mapped_column(Integer, nullable=False)
    remote: Mapped[int] = mapped_column(Integer, nullable=False)
    missing: Mapped[int] = mapped_column(Integer, nullable=False)
    orphaned: Mapped[int] = mapped_column(Integer, nullable=False)
    stale: Mapped[int] = mapped_column(Integer, nullable=False)
    duplicated: Mapped[int] = mapped_column(Integer, nullable=False)


class RateBudget(Base):
    __tablename__ = "rate_budget"
    __table_args__ = ({"schema": REPLICATOR_SCHEMA},)

    # A fingerprint of the credential (first 16 hex digits of its sha256): the token itself is never stored.
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    rate: Mapped[float] = mapped_column(DOUBLE_PRECISION, nullable=False)
    burst: Mapped[float] = mapped_column(DOUBLE_PRECISION, nullable=False)
    tokens: Mapped[float] = mapped_column(DOUBLE_PRECISION, nullable=False)
    refilled_at: Mapped[datetime] = _now()
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
