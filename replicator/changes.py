"""Changes: one wal2json format-version 2 record, parsed once (orjson) into an immutable ``Change``.

The raw JSON stays inside this module. A change carries its action, table, the row's key values (from the
primary key: ``columns`` for inserts and updates, ``identity`` for deletes), its columns, and the transaction it
belongs to (xid, commit timestamp) and the LSN the server sent it at. Unchanged TOAST columns are simply absent
from an update's ``columns``; that is fine because routing only needs keys and documents are re-read from the
current rows anyway.

``KeyScanner`` is the source's fast path: it reads from a row record only its table and the few key values
routing needs, by byte search, without decoding the record or building a ``Change`` (a record of a wide row is
mostly column values nobody reads). Whatever it does not recognise it leaves to ``parse``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from replicator.errors import PermanentError


class Action(StrEnum):
    INSERT = "I"
    UPDATE = "U"
    DELETE = "D"
    TRUNCATE = "T"
    BEGIN = "B"
    COMMIT = "C"
    MESSAGE = "M"


ROW_ACTIONS = frozenset({Action.INSERT, Action.UPDATE, Action.DELETE})


class ChangeParseError(PermanentError, ValueError):
    """A wal2json record that is not valid JSON or lacks what format-version 2 promises; names the LSN."""


@dataclass(frozen=True, slots=True)
class Change:
    action: Action
    # The LSN the server sent this record at (the XLogData start). For a commit record it is the END of the
    # commit, i.e. the position to confirm once the transaction's outbox rows are durable.
    lsn: int
    xid: int | None = None
    commit_time: str | None = None  # commit timestamp as text, in the server's format
    schema: str | None = None
    table: str | None = None
    # Primary-key column values of the row (identity for deletes); empty for B/C/T/M.
    key: Mapping[str, Any] = field(default_factory=dict)
    # Logical decoding messages (pg_logical_emit_message): prefix and content.
    prefix: str | None = None
    content: str | None = None
    # The record's column list as wal2json sent it; read through ``columns``. Kept raw because most changes
    # only need their key, and building a dict of every column of every row costs more than reading it.
    column_list: Sequence[Mapping[str, Any]] = field(default=(), repr=False, compare=False)

    @property
    def columns(self) -> dict[str, Any]:
        """New column values for inserts and updates (unchanged TOAST columns omitted); empty otherwise."""
        return {c["name"]: c["value"] for c in self.column_list}

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}"


_ACTIONS = {a.value: a for a in Action}


def _key(pk: Any, source: Any) -> dict[str, Any]:
    """Primary-key values from a column list (key columns come first in practice, so this stops early)."""
    names = {p["name"] for p in pk}
    key: dict[str, Any] = {}
    for column in source:
        if column["name"] in names:
            key[column["name"]] = column["value"]
            if len(key) == len(names):
                break
    return key


def parse(payload: bytes | memoryview, lsn: int) -> Change:
    """Parse one wal2json v2 record received at ``lsn``."""
    try:
        rec = orjson.loads(payload)
        action = _ACTIONS[rec["action"]]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ChangeParseError(f"unreadable wal2json record at LSN {format_lsn(lsn)}: {exc!r}") from exc
    xid = rec.get("xid")
    ts = rec.get("timestamp")
    if action in ROW_ACTIONS:
        try:
            schema, table = rec["schema"], rec["table"]
            columns = rec.get("columns") or ()
            identity = rec.get("identity") or ()
            pk = rec.get("pk")
            source = identity if action is Action.DELETE or not columns else columns
            key = _key(pk, source) if pk else {c["name"]: c["value"] for c in identity}
        except (KeyError, TypeError) as exc:
            raise ChangeParseError(f"wal2json {action.name} at LSN {format_lsn(lsn)} lacks {exc}") from exc
        return Change(action, lsn, xid, ts, schema, table, key, column_list=columns)
    if action is Action.TRUNCATE:
        return Change(action, lsn, xid, ts, rec.get("schema"), rec.get("table"))
    if action is Action.MESSAGE:
        return Change(action, lsn, xid, ts, prefix=rec.get("prefix"), content=rec.get("content"))
    return Change(action, lsn, xid, ts)


# ---- the fast path ------------------------------------------------------------------------------------------------

# Every format-version 2 record starts with its action: ``{"action":"I",…``.
ACTION_PREFIX = b'{"action":"'
ACTION_AT = len(ACTION_PREFIX)
ROW_ACTION_BYTES: Mapping[int, Action] = {ord(a.value): a for a in ROW_ACTIONS}


class KeyScanner:
    """Reads, from a wal2json format-version 2 row record, its table and the values of a few chosen columns, by
    byte search (no JSON decoding, no objects for the other columns).

    Sound because of JSON's grammar: inside a string every ``"`` is escaped, so the bytes ``{"name":"id",`` can
    only be the start of a column object, never part of a value. A record lists ``columns`` (inserts, updates),
    then ``identity`` (deletes; updates that changed their key), then ``pk`` (names and types, no values): the
    first column object of a name is the new tuple's (the old one's for a delete), as ``parse`` reads it. A key
    value is a plain string (a uuid) or ``null``. ``scan`` returns None for anything else: another schema, a table
    it was not given, a column absent from the tuple, a value that is not a string without escapes. The caller
    then parses the record with ``parse``, so the fast path never decides what it does not understand."""

    __slots__ = ("_schema", "_tables")

    def __init__(self, schema: str, columns: Mapping[str, Iterable[str]]) -> None:
        self._schema = b'"schema":"' + schema.encode() + b'","table":"'
        self._tables: dict[bytes, tuple[str, tuple[bytes, ...]]] = {
            table.encode(): (table, tuple(b'{"name":"' + c.encode() + b'",' for c in cols))
            for table, cols in columns.items()
        }

    def scan(self, payload: bytes, start: int = 0) -> tuple[str, tuple[str | None, ...]] | None:
        """``(table, values)`` in the order of the table's columns, or None (then use ``parse``). The record is
        ``payload[start:]`` (the source passes the whole XLogData message, without copying the record out)."""
        at = payload.find(self._schema, start)
        if at < 0:
            return None
        start = at + len(self._schema)
        end = payload.find(b'"', start)
        entry = self._tables.get(payload[start:end])
        if entry is None:
            return None
        table, needles = entry
        values: list[str | None] = []
        for needle in needles:
            at = payload.find(needle, end)
            if at < 0:
                return None
            value_at = payload.find(b'"value":', at)
            if value_at < 0 or payload.find(b"}", at, value_at) >= 0:
                return None  # a pk entry (no value): the column is not in the tuple
            value_at += 8
            first = payload[value_at]
            if first == 0x22:  # '"'
                close = payload.find(b'"', value_at + 1)
                raw = payload[value_at + 1 : close]
                if close < 0 or b"\\" in raw:
                    return None
                values.append(raw.decode())
            elif payload.startswith(b"null", value_at):
                values.append(None)
            else:
                return None
        return table, tuple(values)


def format_lsn(lsn: int) -> str:
    """64-bit LSN as Postgres writes it: ``16/B374D848``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    if not _ or not high or not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)
