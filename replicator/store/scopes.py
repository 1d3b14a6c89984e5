"""``replicator.sink_scope``: per sink, the scope it applied last (#14), and what a sink holds downstream as its
workers recorded it. The daemon's leader compares the configured scope with the stored one at start-up
(``replicator/scope.py``, ``rescope``); ``replicator rollout status`` shows both, and the re-scope's backlog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from replicator.documents import DocumentKey
from replicator.store.queries import QUERIES
from replicator.store.sink_state import SCOPE_REMOVED_HASH

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class AppliedScope:
    sink: str
    scope: str  # canonical expression, "all" for every document
    narrow: str  # remove | keep
    applied_at: datetime
    previous_scope: str | None
    widened: int  # documents the last re-scope enqueued because they newly fell inside
    narrowed: int  # documents the sink held that it enqueued because they fell outside
    pending: int  # of the sink's outbox rows, those enqueued no later than the re-scope (0 when it enqueued none)


def read(conn: Conn, sink: str) -> tuple[str, str] | None:
    """(scope, narrow) the sink applied last, or None when it never recorded one (it carried every document)."""
    row = conn.execute(QUERIES["read_sink_scope"], {"sink": sink}).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def record(
    conn: Conn, sink: str, *, scope: str, narrow: str, previous: str | None, widened: int, narrowed: int
) -> None:
    """The scope ``sink`` carries from now on (in the transaction that enqueued the re-scope's documents)."""
    params = {"sink": sink, "scope": scope, "narrow": narrow, "previous": previous}
    conn.execute(QUERIES["record_sink_scope"], {**params, "widened": widened, "narrowed": narrowed})


def applied(conn: Conn) -> dict[str, AppliedScope]:
    return {row[0]: AppliedScope(*row) for row in conn.execute(QUERIES["sink_scopes"])}


def held(conn: Conn, sink: str) -> set[DocumentKey]:
    """Every document ``sink`` holds downstream (``sink_state``; documents a scope removed are not held)."""
    rows = conn.execute(QUERIES["held_documents"], {"sink": sink, "removed": SCOPE_REMOVED_HASH})
    return {DocumentKey(entity, entity_id) for entity, entity_id in rows}
