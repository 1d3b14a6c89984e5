"""A re-scope, at the daemon's start (#14): a sink's configured scope (``replicator/scope.py``) compared with the one
it applied last (``replicator.sink_scope``); what newly falls inside or outside is enqueued in the outbox for that sink
alone, so the normal worker path writes or removes it (no second write path). Kept apart from ``replicator.scope``,
which the configuration (and so every sink) imports: sinks never import the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.scope import EVERYTHING, EVERYTHING_TEXT, Narrow, Scope, ScopeError, members, parse
from replicator.store import outbox, scopes


@dataclass(frozen=True)
class Rescope:
    """What comparing a sink's configured scope with the one it applied last did."""

    sink: str
    previous: str | None  # the stored scope (None: none was recorded; the sink carried every document)
    scope: str
    narrow: Narrow
    widened: int = 0  # documents enqueued because they newly fall inside
    narrowed: int = 0  # documents the sink holds, enqueued because they fall outside
    changed: bool = False


def rescope(conn: psycopg.Connection[Any], sink: str, configured: Scope, narrow: Narrow) -> Rescope:
    """Bring ``sink`` to ``configured``: when it differs from the scope (or narrow choice) the sink applied last,
    enqueue — for this sink only, in one transaction with the new record — the documents that newly fall inside it
    (a widening: they are written, like a resync of just those) and those the sink holds that fall outside it (a
    narrowing: the worker removes them, or with ``keep`` leaves them, and re-renders their neighbours either way).
    A sink that never recorded a scope carried every document. Nothing happens when nothing changed."""
    stored = scopes.read(conn, sink)
    text = configured.text()
    if stored is not None and stored == (text, narrow):
        return Rescope(sink, stored[0], text, narrow)
    previous_text = stored[0] if stored is not None else EVERYTHING_TEXT
    try:
        previous = parse(previous_text)
    except ScopeError:
        previous = EVERYTHING  # written by a version that read scopes otherwise: assume the widest
    with conn.transaction():
        # One snapshot for both member lists and what the sink holds.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        inside = members(conn, configured)
        widened = set() if previous.everything else inside - members(conn, previous)
        held = scopes.held(conn, sink)
        narrowed = held - inside
        # A widening also renders again what the sink holds already: its copies name the newcomers from now on (a
        # worker whose scope is everything has no scoped pass to do it; unchanged ones cost no API call).
        again = held & inside if widened else set()
        keys = sorted(widened | narrowed | again)
        if keys:
            outbox.enqueue(conn, {sink: keys}, outbox.current_lsn(conn))
        scopes.record(
            conn,
            sink,
            scope=text,
            narrow=narrow,
            previous=None if stored is None else stored[0],
            widened=len(widened),
            narrowed=len(narrowed),
        )
    return Rescope(sink, None if stored is None else stored[0], text, narrow, len(widened), len(narrowed), changed=True)
