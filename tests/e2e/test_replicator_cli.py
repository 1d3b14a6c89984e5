"""The ``replicator`` CLI end to end (Typer's runner, real database): status, health exit codes, resync, dead
letters, slot drop, configuration errors and masking."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from replicator.cli import app

Conn = psycopg.Connection[tuple[Any, ...]]
TOKEN = "ntn_0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def slot() -> str:
    return f"cli_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def env(db_url: str, slot: str) -> dict[str, str]:
    return {
        "POSTGRES_URL": db_url,
        "REPLICATOR_SLOT": slot,
        "REPLICATOR_SINKS": "recording,notion",
        "ENABLE_DUAL_WRITE": "false",
        "NOTION_API_KEY": TOKEN,
    }


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env, input=input)


def _live_slot(conn: Conn, slot: str) -> None:
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (slot,))
    conn.execute(
        "INSERT INTO replicator.source_checkpoint (slot_name, heartbeat_seen) VALUES (%s, now())",
        (slot,),
    )


def _dead_letter(conn: Conn, sink: str = "recording", entity: str = "dataset") -> uuid.UUID:
    id_ = uuid.uuid4()
    conn.execute(
        "INSERT INTO replicator.dead_letter (sink, entity, entity_id, version, lsn, attempts, error, permanent, "
        "first_enqueued_at) VALUES (%s, %s, %s, 3, 42, 8, %s, false, now())",
        (sink, entity, id_, f"503 after retries; Authorization: Bearer {TOKEN}"),
    )
    return id_


def test_status_json_reports_the_slot_and_every_sink(conn: Conn, env: dict[str, str], slot: str) -> None:
    _live_slot(conn, slot)
    conn.execute(
        "INSERT INTO replicator.outbox (sink, entity, entity_id) VALUES ('recording', 'dataset', gen_random_uuid())"
    )
    result = invoke(env, "status", "--json")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["slot"]["name"] == slot
    assert data["slot"]["exists"] is True
    assert data["slot"]["lag_bytes"] >= 0
    sinks = {s["name"]: s for s in data["sinks"]}
    assert sinks["recording"]["pending"] == 1
    assert sinks["recording"]["enabled"] is True
    assert sinks["notion"]["configured"] is True
    assert sinks["notion"]["enabled"] is False  # ENABLE_DUAL_WRITE=false
    assert data["health"]["ok"] is True


def test_status_table_renders_for_people(conn: Conn, env: dict[str, str], slot: str) -> None:
    _live_slot(conn, slot)
    result = invoke(env, "status")
    assert result.exit_code == 0, result.output
    assert f"slot {slot}" in result.stdout
    assert "recording" in result.stdout
    assert "healthy" in result.stdout


def test_health_exits_0_when_healthy_and_3_with_reasons_when_not(conn: Conn, env: dict[str, str], slot: str) -> None:
    missing = invoke(env, "health")
    assert missing.exit_code == 3
    assert "does not exist yet" in missing.stdout
    _live_slot(conn, slot)
    assert invoke(env, "health").exit_code == 0
    _dead_letter(conn)
    unhealthy = invoke(env, "health", "--json")
    assert unhealthy.exit_code == 3
    assert "dead letter" in orjson.loads(unhealthy.stdout)["reasons"][0]


def test_an_unreachable_database_exits_1_without_the_password(env: dict[str, str]) -> None:
    result = invoke({**env, "POSTGRES_URL": "postgresql://u:hunter2@127.0.0.1:1/x"}, "status")
    assert result.exit_code == 1
    assert "cannot use Postgres" in result.output
    assert "hunter2" not in result.output


def test_health_with_postgres_unreachable_is_unhealthy_naming_the_rule_without_the_password(
    env: dict[str, str],
) -> None:
    result = invoke({**env, "POSTGRES_URL": "postgresql://u:hunter2@127.0.0.1:1/x"}, "health", "--json")
    assert result.exit_code == 3
    verdict = orjson.loads(result.stdout)
    assert verdict["rules"] == ["postgres_unreachable"]
    assert "hunter2" not in result.output


def test_a_bad_variable_is_named_and_exits_2(env: dict[str, str]) -> None:
    result = invoke({**env, "REPLICATOR_SINKS": "recording,elastic", "REPLICATOR_HEALTH_MAX_LAG_S": "-5"}, "status")
    assert result.exit_code == 2
    assert "REPLICATOR_SINKS" in result.output
    assert "elastic" in result.output
    assert "REPLICATOR_HEALTH_MAX_LAG_S" in result.output


def test_config_masks_secrets(env: dict[str, str], db_url: str) -> None:
    url_with_password = db_url.replace("postgres@", "postgres:pa55word@")
    result = invoke({**env, "POSTGRES_URL": url_with_password}, "config", "--json")
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    assert "pa55word" not in result.output
    data = orjson.loads(result.stdout)
    assert data["NOTION_API_KEY"] == "********"
    assert data["REPLICATOR_SINKS"] == "recording,notion"
    table = invoke({**env, "POSTGRES_URL": url_with_password}, "config")
    assert TOKEN not in table.output
    assert "pa55word" not in table.output


def test_dlq_list_retry_and_purge(conn: Conn, env: dict[str, str]) -> None:
    retried = _dead_letter(conn, entity="dataset")
    purged = _dead_letter(conn, entity="signature")
    listed = invoke(env, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    items = orjson.loads(listed.stdout)
    assert {i["id"] for i in items} == {str(retried), str(purged)}
    assert TOKEN not in listed.output
    assert all("[REDACTED]" in i["error"] for i in items)
    assert TOKEN not in invoke(env, "dlq", "list").output

    moved = invoke(env, "dlq", "retry", "--entity", "dataset")
    assert moved.exit_code == 0, moved.output
    assert "moved 1" in moved.stdout
    row = conn.execute("SELECT entity_id, attempts, next_attempt_at <= now() FROM replicator.outbox").fetchone()
    assert row == (retried, 0, True)

    declined = invoke(env, "dlq", "purge", input="n\n")
    assert declined.exit_code == 1
    assert conn.execute("SELECT count(*) FROM replicator.dead_letter").fetchone() == (1,)
    done = invoke(env, "dlq", "purge", "--yes")
    assert done.exit_code == 0
    assert "purged 1" in done.stdout
    assert conn.execute("SELECT count(*) FROM replicator.dead_letter").fetchone() == (0,)


def test_resync_enqueues_documents_and_clears_the_resync_flag(conn: Conn, env: dict[str, str]) -> None:
    conn.execute("INSERT INTO program (name) VALUES ('p1'), ('p2')")
    conn.execute("INSERT INTO dataset (natural_key, name, omics_type) VALUES ('k', 'd', 'proteomics')")
    conn.execute("INSERT INTO replicator.sink_status (sink, enabled, needs_resync) VALUES ('recording', true, true)")
    only_programs = invoke(env, "resync", "--sink", "recording", "--entity", "program")
    assert only_programs.exit_code == 0, only_programs.output
    assert conn.execute("SELECT count(*) FROM replicator.outbox WHERE entity = 'program'").fetchone() == (2,)
    assert conn.execute("SELECT needs_resync FROM replicator.sink_status").fetchone() == (True,)
    full = invoke(env, "resync")  # every enabled sink: recording only, notion is switched off
    assert full.exit_code == 0, full.output
    assert conn.execute("SELECT DISTINCT sink FROM replicator.outbox").fetchall() == [("recording",)]
    assert conn.execute("SELECT count(*) FROM replicator.outbox").fetchone() == (3,)
    assert conn.execute("SELECT needs_resync FROM replicator.sink_status").fetchone() == (False,)
    assert invoke(env, "resync", "--sink", "elastic").exit_code == 2
    assert invoke(env, "resync", "--entity", "feature").exit_code == 2


def test_slot_drop_asks_first_then_clears_the_checkpoint_but_keeps_sink_state(
    conn: Conn, env: dict[str, str], slot: str
) -> None:
    _live_slot(conn, slot)
    conn.execute(
        "INSERT INTO replicator.sink_state (sink, entity, entity_id, remote_id, content_hash) "
        "VALUES ('recording', 'dataset', gen_random_uuid(), 'page-1', 'h')"
    )
    declined = invoke(env, "slot", "drop", input="n\n")
    assert declined.exit_code == 1
    assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() == (1,)
    dropped = invoke(env, "slot", "drop", "--yes")
    assert dropped.exit_code == 0, dropped.output
    assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM replicator.source_checkpoint").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM replicator.sink_state").fetchone() == (1,)
    # Not "lost" any more: the operator acknowledged it; the next run recreates it and backfills.
    after = orjson.loads(invoke(env, "status", "--json").stdout)
    assert after["slot"]["lost"] is False


def test_a_sink_command_group_without_a_subcommand_exits_2(env: dict[str, str]) -> None:
    result = invoke(env, "pinecone")
    assert result.exit_code == 2
