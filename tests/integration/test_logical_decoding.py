"""Smoke test of the test server itself: a wal2json slot sees a committed row in format-version 2."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg


def test_wal2json_slot_returns_a_committed_insert_in_format_version_2(
    conn: psycopg.Connection[tuple[Any, ...]],
) -> None:
    conn.execute("SELECT pg_create_logical_replication_slot('smoke', 'wal2json')")
    conn.execute("INSERT INTO program (name) VALUES ('ALS')")
    rows = conn.execute(
        "SELECT data FROM pg_logical_slot_get_changes('smoke', NULL, NULL, "
        "'format-version', '2', 'include-pk', '1', 'add-tables', 'public.program')"
    ).fetchall()
    records = [orjson.loads(r[0]) for r in rows]
    inserts = [r for r in records if r["action"] == "I"]
    assert [r["action"] for r in records] == ["B", "I", "C"]
    assert inserts[0]["table"] == "program"
    columns = {c["name"]: c["value"] for c in inserts[0]["columns"]}
    assert columns["name"] == "ALS"
    assert inserts[0]["pk"] == [{"name": "id", "type": "uuid"}]
    conn.execute("SELECT pg_drop_replication_slot('smoke')")
