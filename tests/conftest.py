"""Shared fixtures: a real PostgreSQL server with wal2json, and a clean migrated database per test.

The server is, in order of preference: ``TEST_POSTGRES_URL`` (an existing server; needs CREATEDB and
REPLICATION), a throwaway cluster started from the local PostgreSQL binaries (initdb, ``wal_level=logical``,
a free port, removed afterwards), or a testcontainers container when only a Docker engine is available.
Each test gets its own database cloned from a migrated template, so tests never see each other's rows or slots.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from schema.migrate import upgrade
from tests.pgcluster import PgCluster, free_port
from tests.support.recording_sink import recording_plugin

pytest_plugins = ["tests.emulators.notion_fixtures", "tests.emulators.pinecone_fixtures"]

TEMPLATE_DB = "omics_test_template"
REPO_ROOT = Path(__file__).resolve().parent.parent

# The test-only recording sink (tests/support/recording_sink.py) is known to every Settings the tests build and to
# every child process they start (the tests package importable there too): registered here by the harness, never
# in the production settings. A test that needs its file or its faults passes its own recording_plugin(...).
os.environ.setdefault("REPLICATOR_SINK_PLUGINS", recording_plugin()["REPLICATOR_SINK_PLUGINS"])
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


class PgServer:
    """A server the tests may create databases on: ``admin_url`` (a ``postgresql://`` URL) names its
    maintenance database."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def url_for(self, dbname: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{dbname}"))

    def create_database(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            conn.execute(query)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            # A test may leave a replication slot behind; a database with a slot cannot be dropped.
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE database = %s AND active_pid IS NOT NULL",
                (name,),
            )
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _docker_server() -> Iterator[str]:  # pragma: no cover - only where a Docker engine runs
    from testcontainers.postgres import PostgresContainer

    image = os.environ.get("TEST_POSTGRES_IMAGE", "debezium/postgres:15")
    with PostgresContainer(image, driver=None).with_command("postgres -c wal_level=logical") as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if url := os.environ.get("TEST_POSTGRES_URL"):
        yield PgServer(url)
        return
    try:
        from tests.pgcluster import pg_bindir

        pg_bindir()
    except RuntimeError:
        if shutil.which("docker"):
            for url in _docker_server():
                yield PgServer(url)
            return
        raise
    tmp = Path(tempfile.mkdtemp(prefix="omics-cdc-pg-"))
    cluster = PgCluster(tmp / "data", free_port())
    cluster.init()
    cluster.start()
    try:
        yield PgServer(cluster.url)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_template(pg_server: PgServer) -> str:
    """A database migrated to head once per session; every test database is a copy of it."""
    name = f"{TEMPLATE_DB}_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    upgrade(url)
    return name


@pytest.fixture
def db_name(pg_server: PgServer, migrated_template: str) -> Iterator[str]:
    name = f"omics_test_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(name, template=migrated_template)
    try:
        yield name
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def db_url(pg_server: PgServer, db_name: str) -> str:
    """A libpq URL of a fresh database at the migration head."""
    return pg_server.url_for(db_name)


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """A libpq URL of a database with nothing in it (for migration tests)."""
    name = f"omics_empty_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The team's sample inputs (copied from shared/data): ``samples/`` and ``mwtab/``."""
    return FIXTURES
