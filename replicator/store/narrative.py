"""The narrative capture's state (``replicator.narrative_page``: which pages were seen edited and which are pending),
the captured text itself (``public.narrative``, the one domain table the replicator writes), the property
overwrites people made in Notion (``replicator.property_overwrite``) and the last ``verify`` result per sink. The
statements are in ``queries.sql``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from replicator.documents import DocumentKey
from replicator.store.queries import QUERIES

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class SeenPage:
    page_id: str
    key: DocumentKey
    url: str | None
    seen_edit: datetime
    seen_by: str | None


def seen(conn: Conn, page: SeenPage, *, settle_s: float) -> bool:
    """Record a page the poll saw; returns whether it is pending (its blocks must be read)."""
    params = {
        "page_id": page.page_id,
        "entity": page.key.entity,
        "entity_id": page.key.id,
        "url": page.url,
        "seen_edit": page.seen_edit,
        "seen_by": page.seen_by,
        "settle_s": settle_s,
    }
    row = conn.execute(QUERIES["narrative_seen"], params).fetchone()
    return bool(row and row[0])


def pending(conn: Conn, limit: int) -> list[SeenPage]:
    rows = conn.execute(QUERIES["narrative_pending"], {"limit": limit}).fetchall()
    return [SeenPage(r[0], DocumentKey(r[1], r[2]), r[3], r[4], r[5]) for r in rows]


def checked(conn: Conn, page_id: str, *, seen_edit: datetime, checked_at: datetime) -> None:
    conn.execute(QUERIES["narrative_checked"], {"page_id": page_id, "seen_edit": seen_edit, "checked_at": checked_at})


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_pending_edit: datetime | None
    pages: int
    last_checked_at: datetime | None


def backlog(conn: Conn) -> Backlog:
    row = conn.execute(QUERIES["narrative_backlog"]).fetchone()
    assert row is not None
    return Backlog(int(row[0] or 0), row[1], int(row[2] or 0), row[3])


def stored_hash(conn: Conn, key: DocumentKey) -> tuple[str, str] | None:
    """(content hash, page id) of the narrative stored for ``key``."""
    row = conn.execute(QUERIES["narrative_hash"], {"entity": key.entity, "entity_id": key.id}).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def store(
    conn: Conn,
    key: DocumentKey,
    *,
    page_id: str,
    url: str | None,
    text: str,
    edited: datetime | None,
    edited_by: str | None,
    content_hash: str,
) -> None:
    params = {
        "entity": key.entity,
        "entity_id": key.id,
        "page_id": page_id,
        "url": url,
        "text": text,
        "edited": edited,
        "edited_by": edited_by,
        "hash": content_hash,
    }
    conn.execute(QUERIES["narrative_upsert"], params)


def delete(conn: Conn, key: DocumentKey) -> bool:
    cur = conn.execute(QUERIES["narrative_delete"], {"entity": key.entity, "entity_id": key.id})
    return cur.rowcount > 0


def counts(conn: Conn) -> dict[str, int]:
    return {str(entity): int(n) for entity, n in conn.execute(QUERIES["narrative_counts"])}


# ---- property overwrites ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overwrite:
    key: DocumentKey
    page_id: str
    property: str
    edited_by: str | None
    edited_at: datetime
    notion_value: str  # what the person set
    postgres_value: str  # what Postgres says, and the sink writes back
    recorded_at: datetime | None = None


def record_overwrite(conn: Conn, item: Overwrite) -> bool:
    """Record one overwrite; False when it was recorded before (the same edit seen by a later poll)."""
    params = {
        "page_id": item.page_id,
        "property": item.property,
        "edited_at": item.edited_at,
        "notion_value": item.notion_value,
        "entity": item.key.entity,
        "entity_id": item.key.id,
        "edited_by": item.edited_by,
        "postgres_value": item.postgres_value,
    }
    return conn.execute(QUERIES["overwrite_record"], params).rowcount > 0


def overwrites(conn: Conn, limit: int = 50) -> list[Overwrite]:
    rows = conn.execute(QUERIES["overwrite_list"], {"limit": limit}).fetchall()
    return [Overwrite(DocumentKey(r[0], uuid.UUID(str(r[1]))), r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]


def overwrite_count(conn: Conn) -> int:
    row = conn.execute(QUERIES["overwrite_count"]).fetchone()
    return int(row[0]) if row else 0


# ---- verify results and per-sink counts -----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyRecord:
    sink: str
    checked_at: datetime
    in_sync: bool
    documents: int
    remote: int
    missing: int
    orphaned: int
    stale: int
    duplicated: int


def record_verify(conn: Conn, record: dict[str, Any]) -> None:
    """``record``: sink, in_sync, documents, remote, missing, orphaned, stale, duplicated."""
    conn.execute(QUERIES["verify_record"], record)


def verify_results(conn: Conn) -> list[VerifyRecord]:
    return [VerifyRecord(*row) for row in conn.execute(QUERIES["verify_results"])]


def synced_counts(conn: Conn) -> dict[str, dict[str, int]]:
    """sink → entity → documents recorded in sink_state (what each sink holds, as the worker recorded it)."""
    out: dict[str, dict[str, int]] = {}
    for sink, entity, n in conn.execute(QUERIES["sink_state_counts"]):
        out.setdefault(str(sink), {})[str(entity)] = int(n)
    return out
