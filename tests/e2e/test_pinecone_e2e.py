"""End to end through the CLIs: ``ingest`` the team's sample files, ``replicator pinecone init``, then
``python -m replicator run`` as a separate process against the Pinecone emulator (embeddings from a local
OpenAI-compatible server): the index holds exactly the expected vectors; updates and deletes propagate;
``replicator verify`` reports in sync. The chaos variant injects 10 % 429s and 5 % 5xx and kills the replicator
with SIGKILL twice during a stream of updates; verify still ends clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from ingest.cli import app as ingest_app
from replicator.documents import DocumentKey, render
from replicator.graph import ENTITIES
from replicator.sinks.pinecone import id_prefix, vector_id
from replicator.sinks.pinecone.text import chunk_document
from tests.conftest import REPO_ROOT
from tests.daemon_harness import wait_for
from tests.emulators.openai_embeddings import EmbeddingsServer, serve_embeddings
from tests.emulators.pinecone import PineconeEmulator

Conn = psycopg.Connection[tuple[Any, ...]]
INDEX = "omics-e2e"
NS = "e2e"


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    with serve_embeddings(dimension=32) as server:
        yield server


@pytest.fixture
def env(db_url: str, pinecone_emulator: PineconeEmulator, embeddings: EmbeddingsServer) -> dict[str, str]:
    return {
        "POSTGRES_URL": db_url,
        "REPLICATOR_SLOT": f"e2e_{uuid.uuid4().hex[:8]}",
        "REPLICATOR_SINKS": "pinecone",
        "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
        "REPLICATOR_HEARTBEAT_INTERVAL_S": "0.5",
        "REPLICATOR_BATCH_MAX_WAIT_MS": "50",
        "REPLICATOR_WORKER_IDLE_POLL_S": "0.5",
        "REPLICATOR_RETRY_BASE_S": "0.05",
        "REPLICATOR_RETRY_MAX_S": "1",
        "REPLICATOR_LOG_FORMAT": "json",
        "PINECONE_API_KEY": pinecone_emulator.api_key,
        "PINECONE_CONTROLLER_HOST": pinecone_emulator.url,
        "PINECONE_INDEX": INDEX,
        "PINECONE_NAMESPACE": NS,
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_MODEL": "hash-embedding",
        "OPENAI_BASE_URL": embeddings.base_url,
    }


def replicator_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Replicator:
    """``python -m replicator run`` in its own process; its log goes to a file for post-mortems."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "replicator", "run"], env={**os.environ, **self.env}, cwd=REPO_ROOT,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        return int(self.proc.returncode)


@pytest.fixture
def replicator(env: dict[str, str], tmp_path: Path) -> Iterator[Replicator]:
    r = Replicator(env, tmp_path / "replicator.log")
    try:
        yield r
    finally:
        if r.proc is not None and r.proc.poll() is None:
            r.proc.send_signal(signal.SIGKILL)
            r.proc.wait(30)


def ingest(db_url: str, *args: object) -> None:
    result = CliRunner().invoke(ingest_app, [*(str(a) for a in args), "--db", db_url], env={"POSTGRES_URL": None})
    assert result.exit_code == 0, result.output


def ingest_samples(db_url: str, samples: Path) -> None:
    ingest(db_url, "signature", samples / "ALS-CSF-Core-6Ceramides.tsv")
    ingest(db_url, "dataset", samples / "sample_lipidomics_data.csv", "--omics-type", "lipidomics", "--key", "lipids")
    ingest(db_url, "dataset", samples / "ST004396.csv", "--omics-type", "metabolomics", "--key", "st004396")
    ingest(db_url, "dataset", samples / "test_proteomics_mixed.csv", "--omics-type", "proteomics", "--key", "prot")


def expected_vectors(conn: Conn) -> dict[str, str]:
    """Vector id → content hash for every current document, as the sink must have written it."""
    keys = [DocumentKey(entity, row[0]) for entity in ENTITIES for row in conn.execute(f"SELECT id FROM {entity}")]
    out: dict[str, str] = {}
    for document in render(conn, keys).values():
        assert document is not None
        for number, _ in enumerate(chunk_document(document)):
            out[vector_id(document.key, number)] = document.content_hash()
    return out


def stored_vectors(emulator: PineconeEmulator) -> dict[str, str]:
    if INDEX not in emulator.index_names():
        return {}
    return {vid: (v.metadata or {}).get("content_hash", "") for vid, v in emulator.vectors(INDEX, NS).items()}


def verify(env: dict[str, str]) -> dict[str, Any]:
    result = replicator_cli(env, "verify", "--json")
    if result.returncode == 3:  # a sink unreachable even after retries (faults injected): not in sync yet
        return {"in_sync": False, "error": result.stderr}
    assert result.returncode in (0, 1), result.stderr
    payload: dict[str, Any] = json.loads(result.stdout)
    assert (result.returncode == 0) == payload["in_sync"]
    return payload


@pytest.mark.slow
def test_sample_data_reaches_pinecone_and_updates_and_deletes_follow(
    conn: Conn,
    db_url: str,
    env: dict[str, str],
    sample_data: Path,
    pinecone_emulator: PineconeEmulator,
    replicator: Replicator,
    tmp_path: Path,
) -> None:
    init = replicator_cli(env, "pinecone", "init")
    assert init.returncode == 0, init.stderr
    assert f"created index {INDEX!r}: dimension 32, cosine" in init.stdout

    ingest_samples(db_url, sample_data / "samples")
    replicator.start()
    expected = expected_vectors(conn)
    assert len({vid.split("#")[0] for vid in expected}) == 4  # 3 datasets + 1 signature
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected, what="the sample documents in Pinecone")

    # An update: the lipidomics file again with one fold change changed.
    changed = tmp_path / "sample_lipidomics_data.csv"
    original = (sample_data / "samples" / "sample_lipidomics_data.csv").read_text()
    lines = original.splitlines()
    header, first = lines[0], lines[1].split(",")
    first[-1] = "4.25"
    changed.write_text("\n".join([header, ",".join(first), *lines[2:]]) + "\n")
    ingest(db_url, "dataset", changed, "--omics-type", "lipidomics", "--key", "lipids")
    expected = expected_vectors(conn)
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected, what="the update in Pinecone")

    # A delete: the proteomics dataset goes, and so do its vectors.
    (prot_id,) = conn.execute("SELECT id FROM dataset WHERE natural_key = 'prot'").fetchone() or ()
    conn.execute("DELETE FROM dataset WHERE id = %s", (prot_id,))
    expected = expected_vectors(conn)
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected, what="the delete in Pinecone")
    assert not any(v.startswith(id_prefix(DocumentKey("dataset", prot_id))) for v in stored_vectors(pinecone_emulator))

    payload = verify(env)
    assert payload["in_sync"], payload
    assert replicator.stop() == 0


@pytest.mark.slow
def test_with_injected_faults_and_two_kills_verify_ends_clean(
    conn: Conn,
    db_url: str,
    env: dict[str, str],
    sample_data: Path,
    pinecone_emulator: PineconeEmulator,
    replicator: Replicator,
) -> None:
    assert replicator_cli(env, "pinecone", "init").returncode == 0
    ingest_samples(db_url, sample_data / "samples")
    pinecone_emulator.set_faults({"rate_429": 0.1, "rate_5xx": 0.05, "retry_after_s": 1, "seed": 7})
    replicator.start()
    for round_ in range(3):
        for i in range(10):
            conn.execute(
                "UPDATE dataset SET description = %s WHERE natural_key = ANY(%s)",
                (f"round {round_} update {i}", ["lipids", "st004396", "prot"]),
            )
            time.sleep(0.1)
        if round_ < 2:
            replicator.kill()  # SIGKILL mid-stream: no goodbye, leases and the slot position must recover
            replicator.start()
    expected = expected_vectors(conn)
    wait_for(lambda: stored_vectors(pinecone_emulator) == expected, timeout=120, what="convergence under faults")
    payload = wait_for(lambda: (p := verify(env))["in_sync"] and p, timeout=60, what="verify in sync")
    assert payload["sinks"][0]["duplicated"] == []
    assert replicator.stop() == 0
