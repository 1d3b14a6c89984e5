"""End to end through the CLIs with BOTH sinks: ``replicator notion init`` (its ``NAME=value`` lines become the
replicator's settings), ``replicator pinecone init``, ``ingest`` of the team's sample files, then
``python -m replicator run`` as a separate process against the Notion and Pinecone emulators (embeddings from a
local OpenAI-compatible server). Notion holds exactly one live page per row with the current content hash;
updates and deletes propagate; ``ENABLE_DUAL_WRITE=false`` means zero Notion calls; a property deleted in Notion
makes its documents wait (named in status and health) until ``notion check --repair`` while the rest goes on;
and under injected 429s/5xx with two SIGKILLs, ``replicator verify`` ends clean with no duplicate pages."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator.documents import DocumentKey, render
from replicator.graph import ENTITIES
from tests.daemon_harness import wait_for
from tests.e2e.test_pinecone_e2e import (
    INDEX,
    NS,
    Replicator,
    expected_vectors,
    ingest,
    ingest_samples,
    replicator_cli,
    stored_vectors,
    verify,
)
from tests.emulators.notion import NotionEmulator
from tests.emulators.openai_embeddings import EmbeddingsServer, serve_embeddings
from tests.emulators.pinecone import PineconeEmulator

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def embedding_server() -> Iterator[EmbeddingsServer]:
    with serve_embeddings(dimension=32) as server:
        yield server


@pytest.fixture
def both_env(
    db_url: str,
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    embedding_server: EmbeddingsServer,
) -> dict[str, str]:
    """Settings for both sinks; the Notion database ids come from `replicator notion init`'s output."""
    env = {
        "POSTGRES_URL": db_url,
        "REPLICATOR_SLOT": f"e2e_{uuid.uuid4().hex[:8]}",
        "REPLICATOR_SINKS": "notion,pinecone",
        "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
        "REPLICATOR_HEARTBEAT_INTERVAL_S": "0.5",
        "REPLICATOR_BATCH_MAX_WAIT_MS": "50",
        "REPLICATOR_WORKER_IDLE_POLL_S": "0.5",
        "REPLICATOR_RETRY_BASE_S": "0.05",
        "REPLICATOR_RETRY_MAX_S": "1",
        "REPLICATOR_DEFER_S": "0.5",
        "REPLICATOR_LOG_FORMAT": "json",
        "NOTION_API_KEY": notion_emulator.token,
        "NOTION_BASE_URL": notion_emulator.url,
        "NOTION_RATE_PER_S": "30",
        # The emulator answers at once and its queries do not lag here: a create whose answer was lost is
        # looked up again for 1 s (plus the 5 s request timeout), not the production 30 s + 30 s.
        "NOTION_READ_LAG_S": "1",
        "NOTION_TIMEOUT_MS": "5000",
        "PINECONE_API_KEY": pinecone_emulator.api_key,
        "PINECONE_CONTROLLER_HOST": pinecone_emulator.url,
        "PINECONE_INDEX": INDEX,
        "PINECONE_NAMESPACE": NS,
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_MODEL": "hash-embedding",
        "OPENAI_BASE_URL": embedding_server.base_url,
    }
    init = replicator_cli(env, "notion", "init", "--parent-page", notion_emulator.root_page_id)
    assert init.returncode == 0, init.stderr
    lines = init.stdout.splitlines()
    assert len(lines) == 4
    for line in lines:
        name, value = line.split("=", 1)
        env[name] = value
    assert replicator_cli(env, "pinecone", "init").returncode == 0
    return env


@pytest.fixture
def replicator_process(both_env: dict[str, str], tmp_path: Path) -> Iterator[Replicator]:
    r = Replicator(both_env, tmp_path / "replicator.log")
    try:
        yield r
    finally:
        if r.proc is not None and r.proc.poll() is None:
            r.kill()


def expected_pages(conn: Conn) -> dict[str, list[str]]:
    """Postgres ID → [content hash] for every current row: exactly one page each."""
    keys = [DocumentKey(e, row[0]) for e in ENTITIES for row in conn.execute(f"SELECT id FROM {e}")]
    return {str(k.id): [d.content_hash()] for k, d in render(conn, keys).items() if d is not None}


def stored_pages(emulator: NotionEmulator) -> dict[str, list[str]]:
    """Postgres ID → the document hashes of its live pages (two entries: a duplicate)."""
    out: dict[str, list[str]] = defaultdict(list)
    for page in emulator.state()["pages"].values():
        postgres_id = page["properties"].get("Postgres ID")
        if page["data_source_id"] and not page["in_trash"] and postgres_id:
            out[postgres_id].append(str(page["properties"].get("Content Hash") or "").split(" ")[0][4:])
    return dict(out)


def _live_page(emulator: NotionEmulator, postgres_id: str) -> dict[str, Any]:
    pages = emulator.state()["pages"].values()
    [page] = [p for p in pages if p["properties"].get("Postgres ID") == postgres_id and not p["in_trash"]]
    return dict(page)


def test_sample_data_reaches_notion_and_pinecone_and_updates_and_deletes_follow(
    conn: Conn,
    db_url: str,
    both_env: dict[str, str],
    sample_data: Path,
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    replicator_process: Replicator,
    tmp_path: Path,
) -> None:
    ingest_samples(db_url, sample_data / "samples")
    replicator_process.start()
    expected = expected_pages(conn)
    assert len(expected) == 4  # 3 datasets + 1 signature
    wait_for(lambda: stored_pages(notion_emulator) == expected, what="the sample documents in Notion")
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected_vectors(conn), what="the samples in Pinecone")
    titles = {p["title"] for p in notion_emulator.state()["pages"].values() if p["data_source_id"]}
    assert "ALS-CSF-Core-6Ceramides" in titles

    # An update: the lipidomics file again with one fold change changed (the managed section shows it).
    changed = tmp_path / "sample_lipidomics_data.csv"
    lines = (sample_data / "samples" / "sample_lipidomics_data.csv").read_text().splitlines()
    first = lines[1].split(",")
    first[-1] = "4.25"
    changed.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    ingest(db_url, "dataset", changed, "--omics-type", "lipidomics", "--key", "lipids")
    expected = expected_pages(conn)
    wait_for(lambda: stored_pages(notion_emulator) == expected, what="the update in Notion")
    (lipids_id,) = conn.execute("SELECT id FROM dataset WHERE natural_key = 'lipids'").fetchone() or ()
    assert "log2FC 4.25" in str(_live_page(notion_emulator, str(lipids_id))["blocks"])

    # A delete: the proteomics dataset's page goes to the trash.
    (prot_id,) = conn.execute("SELECT id FROM dataset WHERE natural_key = 'prot'").fetchone() or ()
    conn.execute("DELETE FROM dataset WHERE id = %s", (prot_id,))
    expected = expected_pages(conn)
    wait_for(lambda: stored_pages(notion_emulator) == expected, what="the delete in Notion")
    trashed = [
        p for p in notion_emulator.state()["pages"].values() if p["properties"].get("Postgres ID") == str(prot_id)
    ]
    assert [p["in_trash"] for p in trashed] == [True]
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected_vectors(conn), what="the delete in Pinecone")

    payload = verify(both_env)
    assert payload["in_sync"], payload
    assert sorted(s["sink"] for s in payload["sinks"]) == ["notion", "pinecone"]
    assert replicator_process.stop() == 0


def test_dual_write_off_means_zero_notion_calls_while_pinecone_keeps_up(
    conn: Conn,
    db_url: str,
    both_env: dict[str, str],
    sample_data: Path,
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    replicator_process: Replicator,
) -> None:
    notion_emulator.requests.clear()  # `notion init` above was ours, not the replicator's
    replicator_process.env = {**both_env, "ENABLE_DUAL_WRITE": "false"}
    ingest_samples(db_url, sample_data / "samples")
    replicator_process.start()
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected_vectors(conn), what="the samples in Pinecone")
    conn.execute("UPDATE dataset SET description = 'after' WHERE natural_key = 'lipids'")
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected_vectors(conn), what="the update in Pinecone")
    assert replicator_process.stop() == 0
    assert notion_emulator.requests == []


@pytest.mark.slow
def test_a_property_deleted_in_notion_makes_its_documents_wait_until_check_repair_and_the_rest_goes_on(
    conn: Conn,
    db_url: str,
    both_env: dict[str, str],
    sample_data: Path,
    notion_emulator: NotionEmulator,
    replicator_process: Replicator,
) -> None:
    ingest_samples(db_url, sample_data / "samples")
    replicator_process.start()
    wait_for(lambda: stored_pages(notion_emulator) == expected_pages(conn), what="the samples in Notion")
    # After the start-up check someone deletes a property of Programs: Notion now refuses every program page.
    state = notion_emulator.state()
    programs_ds = state["databases"][both_env["NOTION_PROGRAMS_DB_ID"]]["data_source_ids"][0]
    with notion_emulator.lock:
        ds = notion_emulator.data_sources[programs_ds]
        ds.properties = {pid: p for pid, p in ds.properties.items() if p.name != "Disease"}
    (program_id,) = conn.execute("INSERT INTO program (name) VALUES ('Waiting') RETURNING id").fetchone() or ()
    conn.execute("UPDATE dataset SET summary = 'still flowing' WHERE natural_key = 'st004396'")

    def schema_problem() -> Any:
        row = conn.execute("SELECT schema_problem FROM replicator.sink_status WHERE sink = 'notion'").fetchone()
        return row[0] if row else None

    problem = wait_for(schema_problem, what="the schema problem in status")
    assert "'Disease'" in problem
    assert "replicator notion check --repair" in problem
    wait_for(
        lambda: any(
            p["properties"].get("Summary") == "still flowing" for p in notion_emulator.state()["pages"].values()
        ),
        what="the other document in Notion",
    )
    health = replicator_cli(both_env, "health")
    assert health.returncode != 0
    assert "'Disease'" in health.stdout + health.stderr
    assert conn.execute("SELECT count(*) FROM replicator.dead_letter").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM replicator.outbox WHERE entity_id = %s", (program_id,)).fetchone() == (1,)

    repaired = replicator_cli(both_env, "notion", "check", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "added 'Disease'" in repaired.stdout
    # The daemon reads the schema again within 30 s and the program goes through.
    wait_for(lambda: str(program_id) in stored_pages(notion_emulator), timeout=60, what="the program in Notion")
    wait_for(lambda: schema_problem() is None, what="the schema problem cleared")
    assert conn.execute("SELECT count(*) FROM replicator.dead_letter").fetchone() == (0,)
    assert replicator_process.stop() == 0


@pytest.mark.slow
def test_with_faults_in_both_services_and_two_kills_verify_ends_clean_without_duplicate_pages(
    conn: Conn,
    db_url: str,
    both_env: dict[str, str],
    sample_data: Path,
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    replicator_process: Replicator,
) -> None:
    ingest_samples(db_url, sample_data / "samples")
    faults = {"rate_429": 0.1, "rate_5xx": 0.05, "retry_after_s": 1}
    notion_emulator.set_faults({**faults, "seed": 11})
    pinecone_emulator.set_faults({**faults, "seed": 7})
    # A killed worker's claims come back when their lease ends; a short lease keeps the test short.
    replicator_process.env = {**both_env, "REPLICATOR_LEASE_S": "5"}
    replicator_process.start()
    for round_ in range(3):
        for i in range(10):
            conn.execute(
                "UPDATE dataset SET summary = %s, disease = %s WHERE natural_key = ANY(%s)",
                (f"round {round_} update {i}", [f"D{i}"], ["lipids", "st004396", "prot"]),
            )
            if i == 5:
                conn.execute("INSERT INTO program (name) VALUES (%s)", (f"Program {round_}",))
            time.sleep(0.15)
        if round_ < 2:
            replicator_process.kill()  # SIGKILL mid-stream: creates may be done downstream but not recorded
            replicator_process.start()
    wait_for(lambda: stored_pages(notion_emulator) == expected_pages(conn), timeout=180, what="Notion converged")
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected_vectors(conn), timeout=120, what="Pinecone")
    payload = wait_for(lambda: (p := verify(both_env))["in_sync"] and p, timeout=90, what="verify in sync")
    assert all(s["duplicated"] == [] for s in payload["sinks"])
    assert all(len(hashes) == 1 for hashes in stored_pages(notion_emulator).values())
    assert replicator_process.stop() == 0
