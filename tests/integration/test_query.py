"""``replicator query``: embed, search Pinecone (emulator, real SDK), hydrate each hit from Postgres — current
data first, the matching chunk second; deleted rows come back as stale hits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from replicator.cli import app
from replicator.config import Settings
from replicator.documents import DocumentKey, render
from replicator.query import QueryInputError, parse_filters, search
from replicator.sinks.base import UpsertItem
from replicator.sinks.pinecone import PineconeSink, build_pinecone_sink, connect, ensure_index
from tests.emulators.openai_embeddings import EmbeddingsServer, serve_embeddings
from tests.emulators.pinecone import PineconeEmulator

Conn = psycopg.Connection[tuple[Any, ...]]
DIM = 64


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    with serve_embeddings(dimension=DIM) as server:
        yield server


@pytest.fixture
def env(db_url: str, pinecone_emulator: PineconeEmulator, embeddings: EmbeddingsServer) -> dict[str, str]:
    values = {
        "POSTGRES_URL": db_url,
        "PINECONE_API_KEY": pinecone_emulator.api_key,
        "PINECONE_CONTROLLER_HOST": pinecone_emulator.url,
        "PINECONE_INDEX": "omics-query",
        "PINECONE_NAMESPACE": "q",
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_MODEL": "hash-embedding",
        "OPENAI_BASE_URL": embeddings.base_url,
    }
    pc = connect(pinecone_emulator.api_key, pinecone_emulator.url)
    ensure_index(pc, "omics-query", DIM)
    pc.close()
    return values


@pytest.fixture
def sink(env: dict[str, str]) -> Iterator[PineconeSink]:
    s = build_pinecone_sink(Settings.model_validate(env))
    try:
        yield s
    finally:
        s.close()


def _dataset(
    conn: Conn, name: str, omics: str, description: str, features: list[tuple[str, str, float]]
) -> DocumentKey:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type, description, disease) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING id",
        (f"key-{uuid.uuid4()}", name, omics, description, ["ALS"] if "ALS" in description else []),
    ).fetchone()
    assert row is not None
    for feature, ftype, lfc in features:
        f = conn.execute(
            "INSERT INTO feature (feature_type, normalized_name, name) VALUES (%s, %s, %s) "
            "ON CONFLICT (feature_type, normalized_name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (ftype, feature.lower(), feature),
        ).fetchone()
        assert f is not None
        conn.execute(
            "INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change, p_value) "
            "VALUES (%s, %s, %s, %s, 0.01)",
            (row[0], f[0], feature, lfc),
        )
    return DocumentKey("dataset", row[0])


@pytest.fixture
def corpus(conn: Conn, sink: PineconeSink) -> dict[str, DocumentKey]:
    keys = {
        "als": _dataset(
            conn,
            "ALS CSF ceramides",
            "lipidomics",
            "Ceramide lipids in cerebrospinal fluid of ALS patients",
            [("Cer 18:1;O2/16:0", "lipid", 1.5), ("SM 18:1;O2/24:1", "lipid", -0.8)],
        ),
        "tp53": _dataset(
            conn,
            "Tumour proteome",
            "proteomics",
            "TP53 protein abundance in tumour biopsies",
            [("TP53", "protein", 2.1)],
        ),
        "liver": _dataset(
            conn,
            "Liver transcripts",
            "transcriptomics",
            "Hepatic gene expression after fasting",
            [("PPARA", "gene", 1.1)],
        ),
    }
    program = conn.execute("INSERT INTO program (name) VALUES ('Neurodegeneration') RETURNING id").fetchone()
    assert program is not None
    conn.execute("INSERT INTO program_dataset (program_id, dataset_id) VALUES (%s, %s)", (program[0], keys["als"].id))
    keys["program"] = DocumentKey("program", program[0])
    documents = render(conn, keys.values())
    outcomes = sink.upsert([UpsertItem(d, None) for d in documents.values() if d is not None])
    assert all(o.state is not None for o in outcomes)
    return keys


def test_the_best_document_comes_first_hydrated_from_postgres(
    conn: Conn, sink: PineconeSink, corpus: dict[str, DocumentKey]
) -> None:
    hits = search(conn, sink, "ceramide lipids cerebrospinal fluid ALS", top_k=2)
    assert len(hits) == 2
    best = hits[0]
    assert best.key == corpus["als"]
    assert best.document is not None
    assert best.document.name == "ALS CSF ceramides"
    assert best.document.fields["omics_type"] == "lipidomics"
    assert best.document.names_of("programs") == ("Neurodegeneration",)
    assert [f.name for f in best.document.features] == ["Cer 18:1;O2/16:0", "SM 18:1;O2/24:1"]
    assert "Ceramide lipids in cerebrospinal fluid" in best.chunk_text
    assert hits[0].score >= hits[1].score


def test_postgres_data_wins_over_what_the_vector_remembers(
    conn: Conn, sink: PineconeSink, corpus: dict[str, DocumentKey]
) -> None:
    conn.execute("UPDATE dataset SET name = 'ALS CSF ceramides (v2)' WHERE id = %s", (corpus["als"].id,))
    (hit,) = search(conn, sink, "ceramide cerebrospinal ALS", top_k=1)
    assert hit.document is not None
    assert hit.document.name == "ALS CSF ceramides (v2)"
    assert hit.remote_name == "ALS CSF ceramides"


def test_a_hit_whose_row_is_gone_is_reported_stale(
    conn: Conn, sink: PineconeSink, corpus: dict[str, DocumentKey]
) -> None:
    conn.execute("DELETE FROM dataset WHERE id = %s", (corpus["tp53"].id,))
    hits = search(conn, sink, "TP53 protein tumour biopsies", top_k=3)
    stale = [h for h in hits if h.key == corpus["tp53"]]
    assert len(stale) == 1
    assert stale[0].stale
    assert stale[0].remote_name == "Tumour proteome"


def test_filters_restrict_the_search(conn: Conn, sink: PineconeSink, corpus: dict[str, DocumentKey]) -> None:
    hits = search(conn, sink, "ceramide cerebrospinal ALS", top_k=5, filters=["omics_type=proteomics"])
    assert [h.key for h in hits] == [corpus["tp53"]]
    hits = search(conn, sink, "anything", top_k=5, filters=["disease=ALS"])
    assert [h.key for h in hits] == [corpus["als"]]
    hits = search(conn, sink, "anything", top_k=5, entity="program")
    assert [h.key for h in hits] == [corpus["program"]]


def test_filter_syntax() -> None:
    assert parse_filters(["omics_type=lipidomics"]) == {"omics_type": {"$eq": "lipidomics"}}
    assert parse_filters(["disease=ALS"], entity="dataset") == {
        "$and": [{"disease": {"$in": ["ALS"]}}, {"entity": {"$eq": "dataset"}}]
    }
    assert parse_filters(["omics_type=a", "omics_type=b"]) == {"omics_type": {"$in": ["a", "b"]}}
    assert parse_filters([]) is None
    with pytest.raises(QueryInputError, match="KEY=VALUE"):
        parse_filters(["omics_type"])
    with pytest.raises(QueryInputError, match="--entity"):
        parse_filters([], entity="feature")


def test_query_command_prints_json_and_a_table(env: dict[str, str], corpus: dict[str, DocumentKey]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["query", "ceramide cerebrospinal ALS", "--top-k", "1", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (hit,) = json.loads(result.stdout)["hits"]
    assert hit["postgres_id"] == str(corpus["als"].id)
    assert hit["name"] == "ALS CSF ceramides"
    assert hit["programs"] == ["Neurodegeneration"]
    assert list(hit)[:4] == ["entity", "postgres_id", "score", "stale"]  # Postgres data before the chunk
    # then the matching structured chunk, then the matching notes from Notion (none here) as evidence
    assert list(hit)[-4:] == ["source", "chunk", "chunk_text", "notes"]
    assert hit["source"] == "postgres"
    assert hit["notes"] == []

    table = runner.invoke(app, ["query", "TP53 tumour", "--top-k", "2"], env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "Tumour proteome" in table.stdout

    bad = runner.invoke(app, ["query", "x", "--filter", "nokey"], env=env)
    assert bad.exit_code == 2


def test_pinecone_init_creates_once_then_reports_it_exists(
    env: dict[str, str], pinecone_emulator: PineconeEmulator
) -> None:
    runner = CliRunner()
    env = {**env, "PINECONE_INDEX": "fresh-index"}
    first = runner.invoke(app, ["pinecone", "init"], env=env)
    assert first.exit_code == 0, first.output
    assert "created index 'fresh-index': dimension 64, cosine" in first.stdout
    second = runner.invoke(app, ["pinecone", "init", "--json"], env=env)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["created"] is False
    assert "fresh-index" in pinecone_emulator.index_names()
