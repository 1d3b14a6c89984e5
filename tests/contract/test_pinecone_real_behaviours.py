"""The Pinecone emulator's hard behaviours, through the real ``pinecone`` SDK: lost answers of applied writes,
eventual consistency with log sequence numbers, the 4 MB query answer, hosted inference and an index that is
still initializing. The Pinecone pages each behaviour follows are cited in ``tests.emulators.pinecone``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from pinecone import Index, Pinecone, RetryConfig
from pinecone._internal.constants import DATA_PLANE_API_VERSION
from pinecone._internal.http_client import HTTPClient
from pinecone.errors.exceptions import (
    ApiError,
    NotFoundError,
    PineconeConnectionError,
    PineconeError,
    PineconeTimeoutError,
    ServiceError,
)
from pinecone.models.inference.embed import DenseEmbedding, SparseEmbedding

from replicator.sinks.pinecone.embedding.inference import PineconeInferenceProvider
from tests.emulators.pinecone import MAX_QUERY_RESPONSE_BYTES, PineconeEmulator
from tests.emulators.pinecone_fixtures import TEST_INDEX, index_client, pinecone_client

SCHEMA = {"fields": {"_values": {"type": "dense_vector", "dimension": 8, "metric": "cosine"}}}
DEPLOYMENT = {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"}


def unit(*hot: int, dim: int = 8) -> list[float]:
    return [1.0 if i in hot else 0.0 for i in range(dim)]


def lost(emulator: PineconeEmulator) -> list[str]:
    return [str(r["apply_then_fail"]) for r in emulator.requests if "apply_then_fail" in r]


# ---- apply, then lose the answer ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "raised"),
    [("500", ServiceError), ("503", ServiceError), ("drop", PineconeConnectionError), ("timeout", PineconeError)],
)
def test_an_upsert_whose_answer_is_lost_was_applied_all_the_same(
    pinecone_emulator: PineconeEmulator, pinecone_index: Index, kind: str, raised: type[Exception]
) -> None:
    pc = Pinecone(api_key=pinecone_emulator.api_key, host=pinecone_emulator.url, timeout=0.3)
    with index_client(pc, TEST_INDEX, retries=False) as bare:
        pinecone_emulator.set_faults(
            {"apply_then_fail_rate": 1.0, "apply_then_fail_kinds": [kind], "apply_then_fail_timeout_s": 1.0}
        )
        with pytest.raises(raised):
            bare.upsert(vectors=[("a", unit(0), {"v": 1})])
        pinecone_emulator.set_faults({})
        fetched = bare.fetch(ids=["a"])
    pc.close()

    assert fetched.vectors["a"].metadata == {"v": 1}
    assert lost(pinecone_emulator) == [kind]


def test_updates_and_deletes_are_applied_before_their_answer_is_lost(
    pinecone_emulator: PineconeEmulator, pinecone_sdk: Pinecone, pinecone_index: Index
) -> None:
    pinecone_index.upsert(vectors=[("a", unit(0), {"v": 1}), ("b", unit(1))])
    with index_client(pinecone_sdk, TEST_INDEX, retries=False) as bare:
        pinecone_emulator.set_faults({"apply_then_fail_rate": 1.0, "apply_then_fail_kinds": ["503"]})
        with pytest.raises(ServiceError):
            bare.update(id="a", set_metadata={"v": 2})
        with pytest.raises(ServiceError):
            bare.delete(ids=["b"])
        stats = bare.describe_index_stats()  # reads are never apply-then-fail candidates
        pinecone_emulator.set_faults({})

    stored = pinecone_emulator.vectors(TEST_INDEX)
    assert stored["a"].metadata == {"v": 2}
    assert "b" not in stored
    assert stats.total_vector_count == 1
    assert lost(pinecone_emulator) == ["503", "503"]


def test_the_sdk_retries_a_lost_upsert_answer_and_the_write_lands_once(
    pinecone_emulator: PineconeEmulator, pinecone_index: Index
) -> None:
    """The SDK retries 5xx on every method; an upsert is idempotent, so the retry changes nothing."""
    pinecone_emulator.set_faults(
        {"apply_then_fail_rate": 1.0, "apply_then_fail_kinds": ["500"], "only_paths": ["/vectors/upsert"]}
    )
    with pytest.raises(ServiceError):
        pinecone_index.upsert(vectors=[("a", unit(0))])
    pinecone_emulator.set_faults({})

    assert len([r for r in pinecone_emulator.requests if r["path"] == "/vectors/upsert"]) == 4  # 1 + 3 retries
    assert list(pinecone_emulator.vectors(TEST_INDEX)) == ["a"]


# ---- eventual consistency -------------------------------------------------------------------------------------
def test_queries_lists_and_stats_see_writes_only_read_lag_s_later(
    pinecone_emulator: PineconeEmulator, pinecone_index: Index
) -> None:
    first = pinecone_index.upsert(vectors=[("old", unit(0), {"v": 1}), ("gone", unit(1))])
    pinecone_emulator.set_faults({"read_lag_s": 0.8})
    time.sleep(0.9)  # the first write has settled

    second = pinecone_index.upsert(vectors=[("new", unit(2)), ("old", unit(0), {"v": 2})])
    pinecone_index.delete(ids=["gone"])
    query = pinecone_index.query(vector=unit(0, 1, 2), top_k=10, include_metadata=True)
    ids = list(pinecone_index.list_paginated().vectors)
    stats = pinecone_index.describe_index_stats()
    fetched = pinecone_index.fetch(ids=["new", "gone"])  # fetch has a knob of its own, off here
    time.sleep(0.9)
    settled = pinecone_index.query(vector=unit(0, 1, 2), top_k=10, include_metadata=True)

    assert sorted(m.id for m in query.matches) == ["gone", "old"]
    assert {m.id: m.metadata for m in query.matches}["old"] == {"v": 1}
    assert sorted(str(v.id) for v in ids) == ["gone", "old"]
    assert stats.total_vector_count == 2
    assert sorted(fetched.vectors) == ["new"]
    assert sorted(m.id for m in settled.matches) == ["new", "old"]
    assert {m.id: m.metadata for m in settled.matches}["old"] == {"v": 2}
    # Log sequence numbers say which writes a read reflects.
    infos = [r.response_info for r in (first, second, query, settled)]
    assert all(info is not None for info in infos)
    committed_1, committed_2, reconciled_before, reconciled_after = (i for i in infos if i is not None)
    assert committed_1.lsn_committed == 1
    assert committed_2.lsn_committed == 2
    assert reconciled_before.lsn_reconciled == 1
    assert reconciled_after.lsn_reconciled == 3
    assert reconciled_after.is_reconciled(3)


def test_fetch_lags_only_with_its_own_knob(pinecone_emulator: PineconeEmulator, pinecone_index: Index) -> None:
    pinecone_emulator.set_faults({"read_by_id_lag_s": 0.6})
    pinecone_index.upsert(vectors=[("a", unit(0))])

    missing = pinecone_index.fetch(ids=["a"])
    queried = pinecone_index.query(vector=unit(0), top_k=1)
    time.sleep(0.7)

    assert missing.vectors == {}
    assert [m.id for m in queried.matches] == ["a"]
    assert list(pinecone_index.fetch(ids=["a"]).vectors) == ["a"]


# ---- the 4 MB query answer --------------------------------------------------------------------------------------
def test_a_query_answer_over_4_mb_is_refused_and_fits_without_metadata(pinecone_index: Index) -> None:
    blob = "m" * 39_000  # just under the 40 KB metadata limit
    for start in range(0, 120, 40):  # 40 × 39 KB stays under the 2 MB upsert limit
        pinecone_index.upsert(vectors=[(f"v{i}", unit(i % 8), {"blob": blob}) for i in range(start, start + 40)])

    with pytest.raises(ApiError) as refused:
        pinecone_index.query(vector=unit(0), top_k=120, include_metadata=True)
    small = pinecone_index.query(vector=unit(0), top_k=100, include_metadata=True)
    lean = pinecone_index.query(vector=unit(0), top_k=120, include_metadata=False)

    assert refused.value.status_code == 400
    assert "4MB" in str(refused.value)
    assert 100 * 39_000 < MAX_QUERY_RESPONSE_BYTES < 120 * 39_000
    assert len(small.matches) == 100
    assert len(lean.matches) == 120


# ---- hosted inference -------------------------------------------------------------------------------------------
def test_embed_answers_dense_and_sparse_models_in_the_shapes_the_sdk_decodes(pinecone_sdk: Pinecone) -> None:
    texts = ["lipid profile of plasma", "plasma profile of lipid", "unrelated words here"]
    dense = pinecone_sdk.inference.embed(
        model="multilingual-e5-large", inputs=texts, parameters={"input_type": "passage", "truncate": "END"}
    )
    sparse = pinecone_sdk.inference.embed(
        model="pinecone-sparse-english-v0", inputs=texts[:1], parameters={"input_type": "passage"}
    )

    assert dense.vector_type == "dense"
    assert dense.model == "multilingual-e5-large"
    vectors = [e.values for e in dense.data if isinstance(e, DenseEmbedding)]
    assert [len(v) for v in vectors] == [1024, 1024, 1024]
    same, other = (sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:])
    assert same > 0.99 > other  # the same words embed to the same vector
    assert dense.usage.total_tokens > 0
    assert sparse.vector_type == "sparse"
    item = sparse.data[0]
    assert isinstance(item, SparseEmbedding)
    assert len(item.sparse_indices) == len(item.sparse_values) == 4


def test_embed_refuses_an_unknown_model_and_a_batch_over_96(pinecone_sdk: Pinecone) -> None:
    with pytest.raises(NotFoundError):
        pinecone_sdk.inference.embed(model="no-such-model", inputs=["x"])
    with pytest.raises(ApiError) as too_many:
        pinecone_sdk.inference.embed(model="llama-text-embed-v2", inputs=["x"] * 97)
    assert too_many.value.status_code == 400


def test_the_replicators_inference_provider_embeds_through_the_emulator(pinecone_emulator: PineconeEmulator) -> None:
    provider = PineconeInferenceProvider(
        pinecone_client(pinecone_emulator), model=PineconeInferenceProvider.DEFAULT_MODEL, batch_size=2
    )
    try:
        vectors = provider.embed(["a", "b", "c"])
        query = provider.embed(["a"], query=True)
    finally:
        provider.close()

    assert provider.dimension == 1024
    assert len(vectors) == 3
    assert query[0] == vectors[0]
    embeds = [r for r in pinecone_emulator.requests if r["path"] == "/embed"]
    assert [r["body"]["parameters"]["input_type"] for r in embeds] == ["passage", "passage", "query"]


# ---- an index that is still initializing ------------------------------------------------------------------------
def test_a_new_index_initializes_for_index_init_s(pinecone_emulator: PineconeEmulator, pinecone_sdk: Pinecone) -> None:
    pinecone_emulator.set_faults({"index_init_s": 1.0})
    created = pinecone_sdk.indexes.create(name="slow", schema=SCHEMA, deployment=DEPLOYMENT, timeout=-1)
    described = pinecone_sdk.indexes.describe("slow")
    with pytest.raises(PineconeError):
        pinecone_sdk.index(name="slow")  # no host yet
    with Index(host=pinecone_emulator.index_host("slow"), api_key=pinecone_emulator.api_key) as early:
        early._http.close()  # the SDK's own retries off, as index_client does (see pinecone_fixtures)
        early._http = HTTPClient(
            replace(early._config, retry_config=RetryConfig(max_retries=0)), DATA_PLANE_API_VERSION
        )
        with pytest.raises(ServiceError) as refused:
            early.describe_index_stats()
    time.sleep(1.1)
    ready = pinecone_sdk.indexes.describe("slow")
    index = pinecone_sdk.index(name="slow")
    upserted = index.upsert(vectors=[("a", unit(0))])
    index.close()

    assert (created.status.ready, created.status.state) == (False, "Initializing")
    assert (described.status.ready, described.status.state) == (False, "Initializing")
    assert refused.value.status_code == 503
    assert (ready.status.ready, ready.status.state) == (True, "Ready")
    assert upserted.upserted_count == 1


def test_the_sdk_create_waits_until_the_index_is_ready(
    pinecone_emulator: PineconeEmulator, pinecone_sdk: Pinecone
) -> None:
    pinecone_emulator.set_faults({"index_init_s": 0.5})
    with pytest.raises(PineconeTimeoutError):
        pinecone_sdk.indexes.create(name="never", schema=SCHEMA, deployment=DEPLOYMENT, timeout=0)
    created = pinecone_sdk.indexes.create(name="waited", schema=SCHEMA, deployment=DEPLOYMENT)

    assert created.status.ready is True


def test_index_init_s_defaults_to_0(pinecone_sdk: Pinecone) -> None:
    created: Any = pinecone_sdk.indexes.create(name="quick", schema=SCHEMA, deployment=DEPLOYMENT, timeout=-1)
    assert created.status.ready is True
