"""Single-row upserts by a unique key that never rewrite equal values, and the per-table change tally.

The replicator sees every UPDATE in the WAL, even one that sets a column to the value it already has, so a row is
read under ``FOR UPDATE``, compared in Python, and only the columns that differ are written.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest.writer.inputs import TableChanges

Conn = psycopg.Connection[Any]


class ChangeTally:
    """Counts rows inserted/updated/deleted per table during one command."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(self, table: str, *, inserted: int = 0, updated: int = 0, deleted: int = 0) -> None:
        counts = self._counts[table]
        counts[0] += max(inserted, 0)
        counts[1] += max(updated, 0)
        counts[2] += max(deleted, 0)

    def freeze(self) -> tuple[TableChanges, ...]:
        return tuple(TableChanges(table, *counts) for table, counts in sorted(self._counts.items()) if any(counts))


@dataclass(frozen=True)
class RowUpsert:
    id: uuid.UUID
    created: bool
    changed_columns: tuple[str, ...]

    def status(self, changes: tuple[object, ...]) -> str:
        """created | updated | unchanged, for the command's summary."""
        return "created" if self.created else ("updated" if changes else "unchanged")


def _comparable(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _param(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return Jsonb(dict(value))
    return value


def upsert_row(
    conn: Conn,
    tally: ChangeTally,
    table: str,
    key_column: str,
    key: str,
    values: Mapping[str, object | None],
) -> RowUpsert:
    """Insert the row with ``key`` or update only its differing columns; ``None`` values are left alone."""
    given = {column: value for column, value in values.items() if value is not None}
    columns = [key_column, *given]
    select = sql.SQL("SELECT id, {cols} FROM {table} WHERE {key} = %s FOR UPDATE").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        table=sql.Identifier(table),
        key=sql.Identifier(key_column),
    )
    current = conn.execute(select, (key,)).fetchone()
    if current is None:
        insert = sql.SQL("INSERT INTO {table} ({cols}) VALUES ({params}) RETURNING id").format(
            table=sql.Identifier(table),
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            params=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        )
        row = conn.execute(insert, [key, *(_param(v) for v in given.values())]).fetchone()
        assert row is not None
        tally.add(table, inserted=1)
        return RowUpsert(row[0], True, ())
    row_id: uuid.UUID = current[0]
    stored = dict(zip(columns, current[1:], strict=True))
    changed = {c: v for c, v in given.items() if _comparable(stored[c]) != _comparable(v)}
    if changed:
        update = sql.SQL("UPDATE {table} SET {sets} WHERE id = %s").format(
            table=sql.Identifier(table),
            sets=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in changed),
        )
        conn.execute(update, [*(_param(v) for v in changed.values()), row_id])
        tally.add(table, updated=1)
    return RowUpsert(row_id, False, tuple(changed))


def ensure_named(conn: Conn, tally: ChangeTally, table: str, name: str) -> tuple[uuid.UUID, bool]:
    """The id of the program/experiment called ``name``, creating it (name only) when missing."""
    result = upsert_row(conn, tally, table, "name", name, {})
    return result.id, result.created


def link(conn: Conn, tally: ChangeTally, table: str, left: tuple[str, uuid.UUID], right: tuple[str, uuid.UUID]) -> bool:
    """Add a link row unless it exists (an existing link is not touched, so it never reaches the WAL)."""
    query = sql.SQL(
        "INSERT INTO {table} ({a}, {b}) SELECT %s, %s "
        "WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {a} = %s AND {b} = %s) "
        "ON CONFLICT DO NOTHING"
    ).format(table=sql.Identifier(table), a=sql.Identifier(left[0]), b=sql.Identifier(right[0]))
    cur = conn.execute(query, (left[1], right[1], left[1], right[1]))
    tally.add(table, inserted=cur.rowcount)
    return cur.rowcount > 0
