"""The Pinecone sink against the Pinecone emulator through the real SDK, with embeddings from a local
OpenAI-compatible server (word hashing, so vectors are deterministic and checkable)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from replicator.config import Settings
from replicator.documents import Document, DocumentKey, FeatureLine, Related, SignatureMatch
from replicator.retry import RetryingSink
from replicator.sinks.base import DeleteItem, OutcomeKind, RemoteState, SinkConfigError, UpsertItem
from replicator.sinks.factory import build_sink
from replicator.sinks.pinecone import PineconeSink, build_pinecone_sink, connect, ensure_index, key_of_vector_id
from replicator.sinks.pinecone.embedding import build_provider
from replicator.sinks.pinecone.metadata import MAX_METADATA_BYTES, fit_metadata
from replicator.sinks.pinecone.text import ChunkPolicy, chunk_document
from tests.emulators.openai_embeddings import EmbeddingsServer, hashed_vector, serve_embeddings
from tests.emulators.pinecone import PineconeEmulator

DIM = 16
NS = "omics"
PROGRAM = DocumentKey("program", uuid.UUID("33333333-3333-3333-3333-333333333333"))
SIGNATURE = DocumentKey("signature", uuid.UUID("22222222-2222-2222-2222-222222222222"))


def pinecone_settings(emulator: PineconeEmulator, embeddings: EmbeddingsServer, **extra: Any) -> Settings:
    values = {
        "POSTGRES_URL": "postgresql://unused@127.0.0.1/unused",
        "PINECONE_API_KEY": emulator.api_key,
        "PINECONE_CONTROLLER_HOST": emulator.url,
        "PINECONE_INDEX": "omics-test",
        "PINECONE_NAMESPACE": NS,
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_MODEL": "hash-embedding",
        "OPENAI_BASE_URL": embeddings.base_url,
        **extra,
    }
    return Settings.model_validate(values)


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    with serve_embeddings(dimension=DIM) as server:
        yield server


@pytest.fixture
def settings(pinecone_emulator: PineconeEmulator, embeddings: EmbeddingsServer) -> Settings:
    s = pinecone_settings(pinecone_emulator, embeddings)
    pc = connect(pinecone_emulator.api_key, pinecone_emulator.url)
    ensure_index(pc, s.pinecone_index, DIM)
    pc.close()
    return s


@pytest.fixture
def sink(settings: Settings) -> Iterator[PineconeSink]:
    s = build_pinecone_sink(settings)
    s._chunking = ChunkPolicy(size=300, overlap=60)  # small chunks, so a few dozen features span several
    try:
        yield s
    finally:
        s.close()


def dataset(n_features: int, name: str = "ALS CSF lipids", key: DocumentKey | None = None) -> Document:
    return Document(
        key=key or DocumentKey("dataset", uuid.UUID("11111111-1111-1111-1111-111111111111")),
        name=name,
        fields={
            "omics_type": "lipidomics",
            "disease": ["ALS"],
            "organism": ["Homo sapiens"],
            "description": None,
            "external_ids": {"mw": "ST1"},
        },
        related={
            "programs": (Related(PROGRAM, "Neuro"),),
            "experiments": (),
            "signatures": (Related(SIGNATURE, "Core"),),
        },
        features=tuple(
            FeatureLine(
                name=f"Cer 18:1;O2/{10 + i}:0", feature_type="lipid", log2_fold_change=2.0 - i / 10, p_value=0.01
            )
            for i in range(n_features)
        ),
        feature_count=n_features,
        signature_matches=(SignatureMatch(SIGNATURE, "Core", 0.8, 0.5, 3, 6, "exact"),),
    )


def stored(emulator: PineconeEmulator) -> dict[str, Any]:
    return {vid: v for vid, v in emulator.vectors("omics-test", NS).items()}


def test_upsert_stores_exactly_the_expected_vectors_and_metadata(
    sink: PineconeSink, pinecone_emulator: PineconeEmulator
) -> None:
    document = dataset(25)
    chunks = chunk_document(document, ChunkPolicy(size=300, overlap=60))
    assert len(chunks) > 2
    (outcome,) = sink.upsert([UpsertItem(document, None)])
    assert outcome.kind is OutcomeKind.APPLIED
    assert outcome.state == RemoteState(f"dataset:{document.key.id}#", document.content_hash(), len(chunks))

    vectors = stored(pinecone_emulator)
    assert sorted(vectors) == [f"dataset:{document.key.id}#{n:04d}" for n in range(len(chunks))]
    for number, text in enumerate(chunks):
        vector = vectors[f"dataset:{document.key.id}#{number:04d}"]
        assert list(vector.values) == pytest.approx(hashed_vector(text, DIM))
        assert vector.metadata == {
            "entity": "dataset",
            "postgres_id": str(document.key.id),
            "name": "ALS CSF lipids",
            "chunk": number,
            "chunk_count": len(chunks),
            "content_hash": document.content_hash(),
            "text": text,
            "source": "postgres",
            "omics_type": "lipidomics",
            "disease": ["ALS"],
            "organism": ["Homo sapiens"],
            "program_ids": [str(PROGRAM.id)],
            "signature_ids": [str(SIGNATURE.id)],
        }


def test_a_shrinking_document_loses_its_surplus_chunks(sink: PineconeSink, pinecone_emulator: PineconeEmulator) -> None:
    (first,) = sink.upsert([UpsertItem(dataset(40), None)])
    assert first.state is not None
    assert first.state.chunk_count > 3
    (second,) = sink.upsert([UpsertItem(dataset(2), first.state)])
    assert second.state is not None
    assert second.state.chunk_count == 1
    assert list(stored(pinecone_emulator)) == [f"dataset:{dataset(2).key.id}#0000"]


def test_surplus_chunks_are_found_by_listing_when_the_state_was_lost(
    sink: PineconeSink, pinecone_emulator: PineconeEmulator
) -> None:
    sink.upsert([UpsertItem(dataset(40), None)])
    (outcome,) = sink.upsert([UpsertItem(dataset(2), None)])  # no RemoteState: the sink must ask the index
    assert outcome.kind is OutcomeKind.APPLIED
    assert list(stored(pinecone_emulator)) == [f"dataset:{dataset(2).key.id}#0000"]


def test_delete_removes_every_vector_of_the_document_and_no_other(
    sink: PineconeSink, pinecone_emulator: PineconeEmulator
) -> None:
    other = dataset(3, name="Other", key=DocumentKey("dataset", uuid.uuid4()))
    sink.upsert([UpsertItem(dataset(40), None), UpsertItem(other, None)])
    (outcome,) = sink.delete([DeleteItem(dataset(1).key, None)])
    assert outcome.kind is OutcomeKind.DELETED
    assert {key_of_vector_id(v) for v in stored(pinecone_emulator)} == {other.key}


def test_upserts_are_split_to_stay_within_the_vector_limit(
    settings: Settings, pinecone_emulator: PineconeEmulator
) -> None:
    sink = build_pinecone_sink(settings)
    sink._chunking = ChunkPolicy(size=300, overlap=60)
    sink._max_vectors = 2
    documents = [dataset(12, key=DocumentKey("dataset", uuid.uuid4())) for _ in range(3)]
    outcomes = sink.upsert([UpsertItem(d, None) for d in documents])
    assert all(o.kind is OutcomeKind.APPLIED for o in outcomes)
    total = sum(o.state.chunk_count for o in outcomes if o.state)
    upserts = [r for r in pinecone_emulator.requests if r["path"] == "/vectors/upsert"]
    assert all(len(r["body"]["vectors"]) <= 2 for r in upserts)
    assert sum(len(r["body"]["vectors"]) for r in upserts) == total == len(stored(pinecone_emulator))
    sink.close()


def test_a_429_is_a_retryable_error_after_exactly_one_request(
    sink: PineconeSink, pinecone_emulator: PineconeEmulator
) -> None:
    pinecone_emulator.set_faults({"schedule": ["429"], "retry_after_s": 3, "only_paths": ["/vectors/upsert"]})
    (outcome,) = sink.upsert([UpsertItem(dataset(2), None)])
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.retryable
    assert outcome.error.retry_after == 3.0
    assert len([r for r in pinecone_emulator.requests if r["path"] == "/vectors/upsert"]) == 1  # SDK retries off


@pytest.mark.parametrize("fault", ["500", "503", "drop"])
def test_server_errors_and_dropped_connections_are_retryable(
    sink: PineconeSink, pinecone_emulator: PineconeEmulator, fault: str
) -> None:
    pinecone_emulator.set_faults({"schedule": [fault], "only_paths": ["/vectors/upsert"]})
    (outcome,) = sink.upsert([UpsertItem(dataset(2), None)])
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.retryable
    (again,) = sink.upsert([UpsertItem(dataset(2), None)])
    assert again.kind is OutcomeKind.APPLIED


def test_a_wrong_dimension_is_permanent_and_check_names_both_numbers(
    pinecone_emulator: PineconeEmulator, embeddings: EmbeddingsServer
) -> None:
    settings = pinecone_settings(pinecone_emulator, embeddings, PINECONE_INDEX="narrow")
    pc = connect(pinecone_emulator.api_key, pinecone_emulator.url)
    ensure_index(pc, "narrow", 8)
    pc.close()
    sink = build_pinecone_sink(settings)
    with pytest.raises(SinkConfigError, match=r"dimension 8.*gives 16"):
        sink.check()
    (outcome,) = sink.upsert([UpsertItem(dataset(2), None)])
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert not outcome.error.retryable
    assert "400" in str(outcome.error)
    sink.close()


def test_check_passes_on_a_matching_index_and_fails_on_a_missing_one(
    sink: PineconeSink, pinecone_emulator: PineconeEmulator, embeddings: EmbeddingsServer
) -> None:
    sink.check()
    with pytest.raises(SinkConfigError, match="pinecone init"):
        build_pinecone_sink(pinecone_settings(pinecone_emulator, embeddings, PINECONE_INDEX="absent"))


def test_ensure_index_is_idempotent(pinecone_emulator: PineconeEmulator, settings: Settings) -> None:
    pc = connect(pinecone_emulator.api_key, pinecone_emulator.url)
    again = ensure_index(pc, settings.pinecone_index, DIM)
    assert not again.created
    with pytest.raises(SinkConfigError, match="dimension 16"):
        ensure_index(pc, settings.pinecone_index, 384)
    assert pinecone_emulator.index_names() == ["omics-test"]
    pc.close()


def test_inventory_reports_each_document_once_and_disagreeing_chunks_separately(
    sink: PineconeSink, pinecone_emulator: PineconeEmulator
) -> None:
    a = dataset(40)
    b = dataset(2, name="B", key=DocumentKey("dataset", uuid.uuid4()))
    sink.upsert([UpsertItem(a, None), UpsertItem(b, None)])
    remote = sorted(sink.inventory(), key=lambda r: r.key)
    assert {(r.key, r.content_hash) for r in remote} == {(a.key, a.content_hash()), (b.key, b.content_hash())}

    # A leftover chunk of an older version under a's prefix: a's chunks now disagree.
    sink.index.upsert(
        vectors=[
            {
                "id": f"dataset:{a.key.id}#0099",
                "values": [0.1] * DIM,
                "metadata": {"content_hash": "old", "chunk": 99, "chunk_count": 100},
            }
        ],
        namespace=NS,
    )
    remote_a = [r for r in sink.inventory() if r.key == a.key]
    assert len(remote_a) == 2
    assert a.content_hash() in {r.content_hash for r in remote_a}


def test_metadata_too_large_is_truncated_to_the_limit() -> None:
    meta = {"entity": "dataset", "postgres_id": "x", "text": "ü" * 30_000, "name": "n"}
    fitted = fit_metadata(meta)

    assert len(orjson.dumps(fitted)) <= MAX_METADATA_BYTES
    assert fitted["text"].startswith("üüü")
    assert fitted["text"].endswith("…")


def test_build_provider_for_the_sink_is_the_configured_one(settings: Settings) -> None:
    provider = build_provider(settings)
    assert provider.dimension == DIM


def test_start_up_and_inventory_reads_are_retried_through_transient_faults(
    settings: Settings, pinecone_emulator: PineconeEmulator
) -> None:
    pinecone_emulator.set_faults({"schedule": ["429", "503"], "retry_after_s": 0, "only_paths": ["/indexes/"]})
    sink = build_pinecone_sink(settings)  # describes the index through the control plane: two failures, then ok
    sink.upsert([UpsertItem(dataset(3), None)])
    pinecone_emulator.set_faults({"schedule": ["500", "429"], "retry_after_s": 0, "only_paths": ["/vectors/list"]})
    assert [r.key for r in sink.inventory()] == [dataset(3).key]
    sink.close()


def test_the_factory_gives_the_sink_and_its_retrying_wrapper_one_backoff_policy_from_settings(
    settings: Settings,
) -> None:
    tuned = settings.model_copy(update={"retry_base_s": 0.25, "retry_max_s": 7.0})
    wrapped = build_sink("pinecone", tuned)
    try:
        assert isinstance(wrapped, RetryingSink)
        assert isinstance(wrapped.inner, PineconeSink)
        assert wrapped.inner._read_policy is wrapped.policy  # reads and writes wait by the same policy
        assert (wrapped.policy.base_s, wrapped.policy.cap_s) == (0.25, 7.0)
    finally:
        wrapped.close()
