"""docker/roles.sql on the real server: the ingest role writes the domain tables only, the replicator role streams
(REPLICATION, wal2json), reads the domain tables and writes its own schema only; applying the file twice changes
nothing; tables added by later migrations are covered by the default privileges.

Roles are cluster-wide, so every test names its own pair and drops them afterwards (parallel runs never collide).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import psycopg
import pytest
from psycopg import errors, sql

from replicator.config import Settings
from replicator.daemon import EXIT_OK
from replicator.documents import DocumentKey
from replicator.source import drop_slot
from replicator.status import collect_status, evaluate_health
from tests.conftest import REPO_ROOT
from tests.daemon_harness import InProcessDaemon, wait_for
from tests.support.recording_sink import load_recording, recording_plugin

ROLES_SQL = REPO_ROOT / "docker" / "roles.sql"


def _psql() -> str:
    if found := shutil.which("psql"):
        return found
    from tests.pgcluster import pg_bindir

    candidate = pg_bindir() / "psql"
    if not candidate.exists():
        pytest.skip("psql is not installed (postgresql-client)")
    return str(candidate)


def _as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"))


def apply_roles(admin_url: str, ingest: str, replicator: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            _psql(),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"ingest_role={ingest}",
            "-v",
            f"replicator_role={replicator}",
            "-f",
            str(ROLES_SQL),
            admin_url,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@dataclass(frozen=True)
class Roles:
    ingest: str
    replicator: str
    ingest_url: str
    replicator_url: str


def _grants(conn: psycopg.Connection[Any], roles: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Every privilege the roles hold in this database: tables, sequences, schemas, default ACLs, attributes."""
    tables = conn.execute(
        "SELECT grantee, table_schema, table_name, privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = ANY(%s) ORDER BY 1, 2, 3, 4",
        (list(roles),),
    ).fetchall()
    schemas = conn.execute(
        "SELECT r.rolname, n.nspname, has_schema_privilege(r.oid, n.oid, 'USAGE'), "
        "has_schema_privilege(r.oid, n.oid, 'CREATE') FROM pg_roles r CROSS JOIN pg_namespace n "
        "WHERE r.rolname = ANY(%s) AND n.nspname IN ('public', 'replicator') ORDER BY 1, 2",
        (list(roles),),
    ).fetchall()
    defaults = conn.execute(
        "SELECT d.defaclrole::regrole::text, d.defaclnamespace::regnamespace::text, d.defaclobjtype, "
        "d.defaclacl::text FROM pg_default_acl d ORDER BY 1, 2, 3"
    ).fetchall()
    attributes = conn.execute(
        "SELECT rolname, rolcanlogin, rolreplication, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls "
        "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
        (list(roles),),
    ).fetchall()
    return [*tables, *schemas, *defaults, *attributes]


@pytest.fixture
def roles(db_url: str) -> Iterator[Roles]:
    suffix = uuid.uuid4().hex[:10]
    ingest, replicator = f"omics_ingest_{suffix}", f"omics_replicator_{suffix}"
    try:
        result = apply_roles(db_url, ingest, replicator)
        assert result.returncode == 0, result.stderr
        # Passwords are the operator's step (never in roles.sql); the test sets throwaway ones so that the
        # roles can log in whether the test server trusts 127.0.0.1 or asks for a password.
        ingest_password, replicator_password = secrets.token_hex(12), secrets.token_hex(12)
        with psycopg.connect(db_url, autocommit=True) as admin:
            for role, password in ((ingest, ingest_password), (replicator, replicator_password)):
                admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        yield Roles(
            ingest,
            replicator,
            _as_role(db_url, ingest, ingest_password),
            _as_role(db_url, replicator, replicator_password),
        )
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            for role in (ingest, replicator):
                if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _insert_dataset(conn: psycopg.Connection[Any], key: str) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'lipidomics') RETURNING id",
        (key, f"Plasma lipidome {key}"),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def test_applying_roles_sql_twice_changes_no_privilege(db_url: str, roles: Roles) -> None:
    with psycopg.connect(db_url, autocommit=True) as admin:
        before = _grants(admin, (roles.ingest, roles.replicator))
        again = apply_roles(db_url, roles.ingest, roles.replicator)
        assert again.returncode == 0, again.stderr
        after = _grants(admin, (roles.ingest, roles.replicator))
    assert before == after
    assert any(row[:3] == (roles.replicator, True, True) for row in after), "the replicator role has REPLICATION"


def test_roles_sql_refuses_a_database_that_is_not_migrated(empty_db_url: str) -> None:
    suffix = uuid.uuid4().hex[:10]
    result = apply_roles(empty_db_url, f"omics_ingest_{suffix}", f"omics_replicator_{suffix}")
    assert result.returncode != 0
    assert "alembic upgrade head" in result.stderr
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE %s", (f"%{suffix}",)).fetchone() == (0,)


def test_ingest_role_writes_domain_tables_and_cannot_touch_the_replicator_schema(roles: Roles) -> None:
    with psycopg.connect(roles.ingest_url, autocommit=True) as ingest:
        dataset_id = _insert_dataset(ingest, "ingest-role")
        ingest.execute("UPDATE dataset SET summary = 'updated' WHERE id = %s", (dataset_id,))
        assert ingest.execute("SELECT summary FROM dataset WHERE id = %s", (dataset_id,)).fetchone() == ("updated",)
        ingest.execute("CREATE TEMPORARY TABLE staging (name text)")  # loaders may stage rows

        forbidden = [
            "SELECT count(*) FROM replicator.outbox",
            "INSERT INTO replicator.outbox (sink, entity, entity_id) VALUES ('notion', 'dataset', gen_random_uuid())",
            "DELETE FROM replicator.sink_state",
            "UPDATE alembic_version SET version_num = version_num",
            "CREATE TABLE public.sneaky (id int)",
            "TRUNCATE dataset",
        ]
        for statement in forbidden:
            with pytest.raises(errors.InsufficientPrivilege):
                ingest.execute(statement)

        with pytest.raises(errors.InsufficientPrivilege):
            ingest.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (f"s_{uuid.uuid4().hex[:8]}",))
        ingest.execute("DELETE FROM dataset WHERE id = %s", (dataset_id,))


def test_replicator_role_streams_reads_domain_tables_and_writes_only_its_schema(db_url: str, roles: Roles) -> None:
    slot = f"roles_{uuid.uuid4().hex[:10]}"
    # The slot is created the way the daemon does it: on a replication=database connection.
    stream = psycopg.pq.PGconn.connect(f"{roles.replicator_url}?replication=database".encode())
    try:
        assert stream.status == psycopg.pq.ConnStatus.OK, stream.error_message.decode()
        created = stream.exec_(f"CREATE_REPLICATION_SLOT {slot} LOGICAL wal2json NOEXPORT_SNAPSHOT".encode())
        assert created.status == psycopg.pq.ExecStatus.TUPLES_OK, created.error_message.decode()
    finally:
        stream.finish()

    with psycopg.connect(roles.ingest_url, autocommit=True) as ingest:
        dataset_id = _insert_dataset(ingest, "replicator-role")

    with psycopg.connect(roles.replicator_url, autocommit=True) as replicator:
        assert replicator.execute("SELECT name FROM dataset WHERE id = %s", (dataset_id,)).fetchone() == (
            "Plasma lipidome replicator-role",
        )
        for table in ("dataset_feature", "signature", "program_dataset", "feature"):
            replicator.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))

        slot_row = replicator.execute(
            "SELECT plugin, wal_status, pg_current_wal_lsn() >= confirmed_flush_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        ).fetchone()
        assert slot_row is not None
        assert slot_row[0] == "wal2json"
        assert slot_row[2] is True

        changes = replicator.execute(
            "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, 'format-version', '2', "
            "'add-tables', 'public.dataset')",
            (slot,),
        ).fetchall()
        inserted = [orjson.loads(row[0]) for row in changes]
        assert any(c.get("action") == "I" and c.get("table") == "dataset" for c in inserted)

        replicator.execute(
            "INSERT INTO replicator.outbox (sink, entity, entity_id) VALUES ('pinecone', 'dataset', %s)", (dataset_id,)
        )
        replicator.execute("UPDATE replicator.outbox SET version = version + 1 WHERE entity_id = %s", (dataset_id,))
        replicator.execute("INSERT INTO replicator.heartbeat (slot_name) VALUES (%s)", (slot,))
        replicator.execute("DELETE FROM replicator.outbox WHERE entity_id = %s", (dataset_id,))
        replicator.execute("SELECT pg_notify('replicator_outbox', 'pinecone')")
        # The narrative capture's one domain table (#14).
        replicator.execute(
            "INSERT INTO narrative (entity, entity_id, notion_page_id, text, content_hash) "
            "VALUES ('dataset', %s, 'page-roles', 'a note', 'h')",
            (dataset_id,),
        )
        replicator.execute("DELETE FROM narrative WHERE entity_id = %s", (dataset_id,))
        assert replicator.execute("SELECT pg_try_advisory_lock(7316)").fetchone() == (True,)

        forbidden = [
            "INSERT INTO dataset (natural_key, name, omics_type) VALUES ('x', 'x', 'lipidomics')",
            "UPDATE dataset SET name = name",
            "DELETE FROM program",
            "CREATE TABLE replicator.sneaky (id int)",
            "CREATE SCHEMA sneaky",
        ]
        for statement in forbidden:
            with pytest.raises(errors.InsufficientPrivilege):
                replicator.execute(statement)

        replicator.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_tables_added_by_a_later_migration_are_covered(db_url: str, roles: Roles) -> None:
    with psycopg.connect(db_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE public.assay (id bigserial PRIMARY KEY, name text NOT NULL)")
        owner.execute("CREATE TABLE replicator.sink_cursor (sink text PRIMARY KEY, position bigint NOT NULL)")

    with psycopg.connect(roles.ingest_url, autocommit=True) as ingest:
        ingest.execute("INSERT INTO assay (name) VALUES ('LC-MS')")  # the bigserial's sequence is usable too
        with pytest.raises(errors.InsufficientPrivilege):
            ingest.execute("SELECT * FROM replicator.sink_cursor")

    with psycopg.connect(roles.replicator_url, autocommit=True) as replicator:
        assert replicator.execute("SELECT name FROM assay").fetchall() == [("LC-MS",)]
        replicator.execute("INSERT INTO replicator.sink_cursor VALUES ('notion', 1)")
        with pytest.raises(errors.InsufficientPrivilege):
            replicator.execute("INSERT INTO assay (name) VALUES ('NMR')")


def test_the_replicator_runs_end_to_end_as_the_replicator_role(roles: Roles, tmp_path: Path) -> None:
    slot = f"roles_{uuid.uuid4().hex[:10]}"
    recording = tmp_path / "recording.jsonl"
    settings = Settings.model_validate(
        {
            "POSTGRES_URL": roles.replicator_url,
            "REPLICATOR_SLOT": slot,
            "REPLICATOR_SINKS": "recording",
            **recording_plugin(recording),
            "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
            "REPLICATOR_HEARTBEAT_INTERVAL_S": 0.5,
            "REPLICATOR_BATCH_MAX_WAIT_MS": 50,
            "REPLICATOR_WORKER_IDLE_POLL_S": 0.5,
        }
    )
    with psycopg.connect(roles.ingest_url, autocommit=True) as ingest:
        before = _insert_dataset(ingest, "before-start")  # reaches the sink through the backfill
        with InProcessDaemon(settings) as daemon:
            wait_for(lambda: DocumentKey("dataset", before) in load_recording(recording).documents)
            after = _insert_dataset(ingest, "after-start")  # reaches it through the stream
            wait_for(lambda: DocumentKey("dataset", after) in load_recording(recording).documents)
            with psycopg.connect(roles.replicator_url, autocommit=True) as replicator:
                wait_for(lambda: collect_status(replicator, settings).slot.lag_seconds is not None)
                status = collect_status(replicator, settings)
                assert status.slot.exists
                assert status.slot.active
                assert evaluate_health(status, settings).ok, evaluate_health(status, settings).reasons
    assert daemon.code == EXIT_OK
    with psycopg.connect(roles.replicator_url, autocommit=True) as replicator:
        assert drop_slot(replicator, slot)  # `replicator slot drop` needs nothing beyond the role either
