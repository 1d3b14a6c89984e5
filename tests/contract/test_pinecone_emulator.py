"""Contract tests: the real ``pinecone`` SDK (10.2.0, API 2026-07) against the Pinecone emulator.

The SDK decodes control-plane answers into strict msgspec structs, so a create/describe/list that returns here
is a shape check; data-plane answers are checked for content and order. Errors are checked for the SDK's
exception class, which is what a sink maps into retryable or permanent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from pinecone import Index, Pinecone, ServerlessSpec
from pinecone.errors.exceptions import (
    ApiError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    PineconeConnectionError,
    RateLimitError,
    ServiceError,
    UnauthorizedError,
)
from pinecone.models.indexes.deployment import ManagedDeployment

from tests.emulators.pinecone import PineconeEmulator, matches_filter, validate_filter
from tests.emulators.pinecone_fixtures import TEST_INDEX, index_client, pinecone_client

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADERS = {"Api-Key": "pc_emulator_key", "X-Pinecone-Api-Version": "2026-07"}


def unit(*hot: int, dim: int = 8) -> list[float]:
    """A vector with 1.0 at the given positions."""
    return [1.0 if i in hot else 0.0 for i in range(dim)]


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, url, json=body, headers=HEADERS if headers is None else headers, timeout=5)


# ---- control plane ----------------------------------------------------------------------------------------------
def test_index_lifecycle_decodes_into_the_sdk_models(
    pinecone_emulator: PineconeEmulator, pinecone_sdk: Pinecone
) -> None:
    created = pinecone_sdk.create_index(
        name="omics", dimension=384, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1")
    )
    assert (created.name, created.dimension, created.metric, created.status.ready) == ("omics", 384, "cosine", True)
    assert str(created.host).startswith("http://127.0.0.1:")
    assert created.deployment == ManagedDeployment(cloud="aws", region="us-east-1")
    assert pinecone_emulator.requests[0]["body"]["schema"]["fields"]["_values"]["dimension"] == 384

    described = pinecone_sdk.indexes.describe("omics")
    assert described.host == created.host
    assert [i.name for i in pinecone_sdk.indexes.list()] == ["omics"]
    assert pinecone_sdk.indexes.exists("omics")

    pinecone_sdk.indexes.delete("omics")
    assert not pinecone_sdk.indexes.exists("omics")
    with pytest.raises(NotFoundError, match="omics"):
        pinecone_sdk.indexes.describe("omics")
    with pytest.raises(httpx.ConnectError):  # its data-plane server is gone too
        httpx.get(f"{created.host}/vectors/list", headers=HEADERS, timeout=2)


def test_each_index_gets_its_own_host(pinecone_sdk: Pinecone) -> None:
    schema = {"fields": {"_values": {"type": "dense_vector", "dimension": 4, "metric": "dotproduct"}}}
    first = pinecone_sdk.indexes.create(name="first", schema=schema)
    second = pinecone_sdk.indexes.create(name="second", schema=schema)
    assert first.host != second.host
    with pinecone_sdk.index(name="first") as one, pinecone_sdk.index(name="second") as two:
        one.upsert(vectors=[("a", [1.0, 0, 0, 0])])
        assert two.describe_index_stats().total_vector_count == 0


def test_creating_an_existing_index_is_a_conflict(pinecone_sdk: Pinecone, pinecone_index: Index) -> None:
    with pytest.raises(ConflictError) as raised:
        pinecone_sdk.create_index(name=TEST_INDEX, dimension=8, spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    assert raised.value.error_code == "ALREADY_EXISTS"
    assert raised.value.body == {
        "error": {"code": "ALREADY_EXISTS", "message": "Resource already exists."},
        "status": 409,
    }


def dense(dimension: Any = 8, metric: str | None = "cosine") -> dict[str, Any]:
    field: dict[str, Any] = {"type": "dense_vector", "dimension": dimension}
    if metric is not None:
        field["metric"] = metric
    return {"fields": {"_values": field}}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "Bad_Name", "schema": dense()}, 400, "INVALID_ARGUMENT"),
        ({"name": "-dash", "schema": dense()}, 400, "INVALID_ARGUMENT"),
        ({"name": "x" * 46, "schema": dense()}, 400, "INVALID_ARGUMENT"),
        ({"name": "zero", "schema": dense(0)}, 400, "INVALID_ARGUMENT"),
        ({"name": "huge", "schema": dense(20001)}, 400, "INVALID_ARGUMENT"),
        ({"name": "metric", "schema": dense(8, "manhattan")}, 400, "INVALID_ARGUMENT"),
        ({"name": "named", "schema": {"fields": {"embedding": dense()["fields"]["_values"]}}}, 400, "INVALID_ARGUMENT"),
        ({"name": "nometric", "schema": dense(8, None)}, 422, "UNPROCESSABLE_ENTITY"),
        ({"name": "text", "schema": dense("8")}, 422, "UNPROCESSABLE_ENTITY"),
        ({"name": "noschema"}, 422, "UNPROCESSABLE_ENTITY"),
        ({"name": "extra", "dimension": 8, "schema": dense()}, 422, "UNPROCESSABLE_ENTITY"),
    ],
)
def test_invalid_create_requests_are_rejected_in_pinecone_error_shape(
    pinecone_emulator: PineconeEmulator, body: dict[str, Any], status: int, code: str
) -> None:
    # Raw HTTP: the SDK already refuses most of these before sending them.
    response = http("POST", f"{pinecone_emulator.url}/indexes", body)
    assert response.status_code == status
    payload = response.json()
    assert payload["status"] == status
    assert payload["error"]["code"] == code
    assert payload["error"]["message"]
    assert pinecone_emulator.index_names() == []


def test_an_invalid_dimension_through_the_sdk_is_an_api_error(pinecone_sdk: Pinecone) -> None:
    schema = {"fields": {"_values": {"type": "dense_vector", "dimension": 30000, "metric": "cosine"}}}
    with pytest.raises(ApiError, match="Dimension") as raised:
        pinecone_sdk.indexes.create(name="too-wide", schema=schema)
    assert raised.value.status_code == 400


def test_deletion_protection_forbids_delete_until_disabled(pinecone_sdk: Pinecone) -> None:
    schema = {"fields": {"_values": {"type": "dense_vector", "dimension": 4, "metric": "cosine"}}}
    pinecone_sdk.indexes.create(name="kept", schema=schema, deletion_protection="enabled")
    with pytest.raises(ForbiddenError):
        pinecone_sdk.indexes.delete("kept")
    pinecone_sdk.indexes.configure("kept", deletion_protection="disabled")
    pinecone_sdk.indexes.delete("kept")
    assert not pinecone_sdk.indexes.exists("kept")


# ---- data plane -------------------------------------------------------------------------------------------------
def seed(index: Index) -> None:
    index.upsert(
        vectors=[
            {
                "id": "lip-1",
                "values": unit(0),
                "metadata": {"omics_type": "lipidomics", "year": 2021, "tags": ["a", "b"]},
            },
            {"id": "lip-2", "values": unit(0, 1), "metadata": {"omics_type": "lipidomics", "year": 2023}},
            {"id": "met-1", "values": unit(0, 1, 2), "metadata": {"omics_type": "metabolomics", "year": 2023}},
            {"id": "pro-1", "values": unit(1), "metadata": {"omics_type": "proteomics", "year": 2020, "tags": ["b"]}},
            {"id": "pro-2", "values": unit(3), "metadata": {"omics_type": "proteomics", "year": 2024}},
        ],
        namespace="omics",
    )


def test_upsert_then_fetch_returns_values_and_metadata(pinecone_index: Index) -> None:
    seed(pinecone_index)
    fetched = pinecone_index.fetch(ids=["lip-1", "pro-2", "missing"], namespace="omics")
    assert sorted(fetched.vectors) == ["lip-1", "pro-2"]
    assert fetched.vectors["lip-1"].values == unit(0)
    assert fetched.vectors["lip-1"].metadata == {"omics_type": "lipidomics", "year": 2021, "tags": ["a", "b"]}
    assert fetched.namespace == "omics"
    # Upsert overwrites a whole record.
    pinecone_index.upsert(vectors=[("lip-1", unit(5), {"omics_type": "genomics"})], namespace="omics")
    assert pinecone_index.fetch(ids=["lip-1"], namespace="omics").vectors["lip-1"].metadata == {
        "omics_type": "genomics"
    }


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (None, ["lip-1", "lip-2", "met-1", "pro-1", "pro-2"]),
        ({"omics_type": "lipidomics"}, ["lip-1", "lip-2"]),
        ({"omics_type": {"$eq": "proteomics"}}, ["pro-1", "pro-2"]),
        ({"omics_type": {"$in": ["metabolomics", "proteomics"]}}, ["met-1", "pro-1", "pro-2"]),
        (
            {"$and": [{"omics_type": {"$in": ["lipidomics", "metabolomics"]}}, {"year": {"$gte": 2023}}]},
            ["lip-2", "met-1"],
        ),
        ({"tags": "b"}, ["lip-1", "pro-1"]),
    ],
)
def test_query_filters_and_orders_by_cosine_similarity(
    pinecone_index: Index, flt: dict[str, Any] | None, expected: list[str]
) -> None:
    seed(pinecone_index)
    result = pinecone_index.query(
        vector=unit(0), top_k=10, namespace="omics", filter=flt, include_metadata=True, include_values=False
    )
    # cosine to e0: lip-1 = 1, lip-2 = 1/√2, met-1 = 1/√3, pro-1 = pro-2 = 0 (ties ordered by id)
    ranked = ["lip-1", "lip-2", "met-1", "pro-1", "pro-2"]
    assert [m.id for m in result.matches] == [i for i in ranked if i in expected]
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True)
    assert all(m.values == [] and m.metadata for m in result.matches)


def test_query_top_k_id_and_values(pinecone_index: Index) -> None:
    seed(pinecone_index)
    top = pinecone_index.query(vector=unit(0), top_k=2, namespace="omics", include_values=True)
    assert [m.id for m in top.matches] == ["lip-1", "lip-2"]
    assert top.matches[0].values == unit(0)
    assert top.matches[0].score == pytest.approx(1.0)
    assert top.matches[1].score == pytest.approx(2**-0.5)
    by_id = pinecone_index.query(id="pro-1", top_k=1, namespace="omics")
    assert [m.id for m in by_id.matches] == ["pro-1"]
    assert pinecone_index.query(vector=unit(0), top_k=3, namespace="empty").matches == []


@pytest.mark.parametrize(
    ("metric", "expected_ids", "expected_scores"),
    [
        # query (2, 0, …): dot products 2, 2, 2, 0 → ties by id; squared distances 1, 2, 3, 5
        ("dotproduct", ["a", "b", "c", "d"], [2.0, 2.0, 2.0, 0.0]),
        ("euclidean", ["a", "b", "c", "d"], [1.0, 2.0, 3.0, 5.0]),
    ],
)
def test_query_scores_follow_the_index_metric(
    pinecone_sdk: Pinecone, metric: str, expected_ids: list[str], expected_scores: list[float]
) -> None:
    pinecone_sdk.indexes.create(
        name=metric, schema={"fields": {"_values": {"type": "dense_vector", "dimension": 3, "metric": metric}}}
    )
    with pinecone_sdk.index(name=metric) as index:
        index.upsert(vectors=[("a", [1, 0, 0]), ("b", [1, 1, 0]), ("c", [1, 1, 1]), ("d", [0, 1, 0])])
        result = index.query(vector=[2, 0, 0], top_k=4)
    assert [m.id for m in result.matches] == expected_ids
    assert [m.score for m in result.matches] == pytest.approx(expected_scores)


def test_list_by_prefix_paginates_in_sorted_order(pinecone_index: Index) -> None:
    ids = [f"dataset:{n:04d}#0000" for n in range(250)]
    pinecone_index.upsert(vectors=[(i, unit(n % 8)) for n, i in enumerate(ids)])
    pinecone_index.upsert(vectors=[(f"signature:{n}", unit(1)) for n in range(5)])

    first = pinecone_index.list_paginated(prefix="dataset:", limit=100)
    assert [v.id for v in first.vectors] == ids[:100]
    assert first.pagination is not None
    assert first.pagination.next
    second = pinecone_index.list_paginated(prefix="dataset:", limit=100, pagination_token=first.pagination.next)
    assert [v.id for v in second.vectors] == ids[100:200]
    assert second.pagination is not None
    assert second.pagination.next
    third = pinecone_index.list_paginated(prefix="dataset:", limit=100, pagination_token=second.pagination.next)
    assert [v.id for v in third.vectors] == ids[200:]
    assert third.pagination is None

    pages = list(pinecone_index.list(prefix="dataset:"))  # default limit 100
    assert [len(p.vectors) for p in pages] == [100, 100, 50]
    assert [v.id for v in pinecone_index.list_paginated(prefix="signature:").vectors] == [
        f"signature:{n}" for n in range(5)
    ]


def test_list_rejects_a_limit_over_100_and_a_bad_token(pinecone_index: Index) -> None:
    pinecone_index.upsert(vectors=[("a", unit(0))])
    host = pinecone_index.host
    assert http("GET", f"{host}/vectors/list?limit=101").status_code == 400
    bad = http("GET", f"{host}/vectors/list?paginationToken=%%%")
    assert bad.status_code == 400
    assert bad.json()["code"] == 3


def test_delete_by_ids_by_filter_and_all(pinecone_emulator: PineconeEmulator, pinecone_index: Index) -> None:
    seed(pinecone_index)
    pinecone_index.upsert(vectors=[("x", unit(2)), ("y", unit(3))])  # default namespace
    pinecone_index.delete(ids=["lip-1", "nope"], namespace="omics")
    assert sorted(pinecone_emulator.vectors(TEST_INDEX, "omics")) == ["lip-2", "met-1", "pro-1", "pro-2"]

    pinecone_index.delete(filter={"omics_type": {"$eq": "proteomics"}}, namespace="omics")
    assert sorted(pinecone_emulator.vectors(TEST_INDEX, "omics")) == ["lip-2", "met-1"]

    stats = pinecone_index.describe_index_stats()
    assert {n: s.vector_count for n, s in stats.namespaces.items()} == {"__default__": 2, "omics": 2}
    assert (stats.total_vector_count, stats.dimension, stats.metric) == (4, 8, "cosine")

    pinecone_index.delete(delete_all=True, namespace="omics")
    assert pinecone_emulator.vectors(TEST_INDEX, "omics") == {}
    assert {n: s.vector_count for n, s in pinecone_index.describe_index_stats().namespaces.items()} == {
        "__default__": 2
    }
    # The service answers a delete in a namespace that does not exist with 404.
    with pytest.raises(NotFoundError, match="Namespace not found"):
        pinecone_index.delete(ids=["lip-2"], namespace="omics")


def test_update_and_namespaces(pinecone_emulator: PineconeEmulator, pinecone_index: Index) -> None:
    seed(pinecone_index)
    pinecone_index.update(id="pro-2", set_metadata={"year": 2025}, namespace="omics")
    assert pinecone_emulator.vectors(TEST_INDEX, "omics")["pro-2"].metadata == {
        "omics_type": "proteomics",
        "year": 2025,
    }
    page = pinecone_index.list_namespaces_paginated()
    assert [(n.name, n.record_count) for n in page.namespaces] == [("omics", 5)]
    assert pinecone_index.describe_namespace(name="omics").record_count == 5
    pinecone_index.delete_namespace(name="omics")
    assert pinecone_index.describe_index_stats().total_vector_count == 0


# ---- limits -----------------------------------------------------------------------------------------------------
def test_1001_vectors_in_one_upsert_are_rejected(pinecone_emulator: PineconeEmulator, pinecone_index: Index) -> None:
    with pytest.raises(ApiError, match="1001 vectors") as raised:
        pinecone_index.upsert(vectors=[(f"v{n}", unit(n % 8)) for n in range(1001)])
    assert raised.value.status_code == 400
    assert raised.value.body == {"code": 3, "message": raised.value.message, "details": []}
    assert pinecone_emulator.vectors(TEST_INDEX) == {}
    assert pinecone_index.upsert(vectors=[(f"v{n}", unit(n % 8)) for n in range(1000)]).upserted_count == 1000


def test_an_upsert_over_2_mb_is_payload_too_large(pinecone_emulator: PineconeEmulator, pinecone_index: Index) -> None:
    blob = "x" * 30_000  # under the 40 KB metadata limit per vector, 80 of them are ~2.4 MB
    with pytest.raises(PayloadTooLargeError, match="2 MB"):
        pinecone_index.upsert(vectors=[(f"v{n}", unit(n % 8), {"text": blob}) for n in range(80)])
    assert pinecone_emulator.vectors(TEST_INDEX) == {}


def test_metadata_over_40_kb_is_rejected_and_nothing_is_written(
    pinecone_emulator: PineconeEmulator, pinecone_index: Index
) -> None:
    with pytest.raises(ApiError, match="Metadata size") as raised:
        pinecone_index.upsert(vectors=[("ok", unit(0), {"a": "b"}), ("big", unit(1), {"text": "x" * 41_000})])
    assert raised.value.status_code == 400
    assert pinecone_emulator.vectors(TEST_INDEX) == {}


@pytest.mark.parametrize(
    "vector",
    [
        {"id": "short", "values": [1.0, 2.0, 3.0]},
        {"id": "zeros", "values": [0.0] * 8},
        {"id": "x" * 513, "values": [1.0] * 8},
        {"id": "nested", "values": [1.0] * 8, "metadata": {"a": {"b": 1}}},
        {"id": "nulls", "values": [1.0] * 8, "metadata": {"a": None}},
    ],
)
def test_invalid_vectors_are_rejected(pinecone_index: Index, vector: dict[str, Any]) -> None:
    # Raw HTTP so the SDK's own client-side checks do not hide the server's.
    response = http("POST", f"{pinecone_index.host}/vectors/upsert", {"vectors": [vector]})
    assert response.status_code == 400
    assert response.json()["code"] == 3


def test_wrong_dimension_through_the_sdk_names_both_dimensions(pinecone_index: Index) -> None:
    with pytest.raises(ApiError, match="dimension 3 does not match the dimension of the index 8"):
        pinecone_index.upsert(vectors=[("short", [1.0, 2.0, 3.0])])
    with pytest.raises(ApiError, match="dimension 3"):
        pinecone_index.query(vector=[1.0, 2.0, 3.0], top_k=1)


def test_top_k_over_10000_is_rejected(pinecone_index: Index) -> None:
    response = http("POST", f"{pinecone_index.host}/query", {"topK": 10_001, "vector": unit(0)})
    assert response.status_code == 400


# ---- auth and version -------------------------------------------------------------------------------------------
def test_a_wrong_api_key_is_unauthorized_on_both_planes(
    pinecone_emulator: PineconeEmulator, pinecone_index: Index
) -> None:
    with (
        pinecone_client(pinecone_emulator, api_key="not-the-key") as intruder,
        intruder.index(host=pinecone_index.host) as index,
    ):
        with pytest.raises(UnauthorizedError, match="Invalid API key"):
            intruder.indexes.describe(TEST_INDEX)
        with pytest.raises(UnauthorizedError, match="Unauthorized"):
            index.describe_index_stats()
    response = http("GET", f"{pinecone_emulator.url}/indexes", headers={"X-Pinecone-Api-Version": "2026-07"})
    assert (response.status_code, response.headers["content-type"]) == (401, "text/plain; charset=utf-8")


def test_an_unknown_api_version_is_refused(pinecone_emulator: PineconeEmulator, pinecone_index: Index) -> None:
    future = Pinecone(
        api_key=pinecone_emulator.api_key,
        host=pinecone_emulator.url,
        additional_headers={"X-Pinecone-Api-Version": "2099-01"},
    )
    with future, future.index(host=pinecone_index.host) as index:
        with pytest.raises(ApiError, match="2099-01") as raised:
            future.indexes.describe(TEST_INDEX)
        assert raised.value.status_code == 400
        with pytest.raises(ApiError, match="2099-01"):
            index.describe_index_stats()


# ---- faults -----------------------------------------------------------------------------------------------------
def test_sdk_retries_a_scheduled_429_then_succeeds(pinecone_emulator: PineconeEmulator, pinecone_index: Index) -> None:
    pinecone_emulator.set_faults({"schedule": ["429"], "retry_after_s": 0})
    assert pinecone_index.upsert(vectors=[("a", unit(0))]).upserted_count == 1
    pinecone_emulator.set_faults({"schedule": ["429", "503"], "retry_after_s": 0})
    assert pinecone_index.describe_index_stats().total_vector_count == 1
    upserts = [r for r in pinecone_emulator.requests if r["path"] == "/vectors/upsert"]
    assert len(upserts) == 2


def test_control_plane_without_retries_raises_the_first_429(pinecone_emulator: PineconeEmulator) -> None:
    pinecone_emulator.set_faults({"schedule": ["429"], "retry_after_s": 3})
    with pinecone_client(pinecone_emulator, retries=False) as pc:
        with pytest.raises(RateLimitError) as raised:
            list(pc.indexes.list())
        assert list(pc.indexes.list()) == []
    assert raised.value.retry_after == 3.0
    assert raised.value.error_code == "RESOURCE_EXHAUSTED"
    assert raised.value.body == {
        "error": {"code": "RESOURCE_EXHAUSTED", "message": raised.value.message},
        "status": 429,
    }


def test_data_plane_without_retries_raises_the_first_429(
    pinecone_emulator: PineconeEmulator, pinecone_sdk: Pinecone, pinecone_index: Index
) -> None:
    with index_client(pinecone_sdk, TEST_INDEX, retries=False) as bare:
        pinecone_emulator.set_faults({"schedule": ["429"], "retry_after_s": 2})
        with pytest.raises(RateLimitError) as raised:
            bare.upsert(vectors=[("a", unit(0))])
        pinecone_emulator.set_faults({"schedule": ["500"]})
        with pytest.raises(ServiceError):
            bare.fetch(ids=["a"])
    assert raised.value.retry_after == 2.0
    assert raised.value.body == {"code": 8, "message": raised.value.message, "details": []}  # RESOURCE_EXHAUSTED
    assert pinecone_emulator.vectors(TEST_INDEX) == {}


def test_a_dropped_connection_is_retried_or_raised(
    pinecone_emulator: PineconeEmulator, pinecone_sdk: Pinecone, pinecone_index: Index
) -> None:
    pinecone_emulator.set_faults({"schedule": ["drop"]})
    assert pinecone_index.upsert(vectors=[("a", unit(0))]).upserted_count == 1
    with index_client(pinecone_sdk, TEST_INDEX, retries=False) as bare:
        pinecone_emulator.set_faults({"schedule": ["drop"]})
        with pytest.raises(PineconeConnectionError):
            bare.query(vector=unit(0), top_k=1)


def test_faults_set_on_an_index_port_apply_to_the_control_plane(
    pinecone_emulator: PineconeEmulator, pinecone_index: Index
) -> None:
    response = http(
        "POST", f"{pinecone_index.host}/_emulator/faults", {"schedule": ["503"], "only_paths": ["/indexes"]}
    )
    assert response.status_code == 200
    assert pinecone_emulator.faults.schedule == ["503"]
    with pinecone_client(pinecone_emulator, retries=False) as pc, pytest.raises(ServiceError):
        list(pc.indexes.list())
    pinecone_index.describe_index_stats()  # /describe_index_stats is outside only_paths


# ---- emulator control -------------------------------------------------------------------------------------------
def test_state_shows_every_vector_and_reset_removes_everything(
    pinecone_emulator: PineconeEmulator, pinecone_index: Index
) -> None:
    seed(pinecone_index)
    pinecone_index.upsert(vectors=[("d", unit(7))])
    state = http("GET", f"{pinecone_emulator.url}/_emulator/state", headers={}).json()
    index = state["indexes"][TEST_INDEX]
    assert index["config"]["schema"]["fields"]["_values"]["dimension"] == 8
    assert index["namespaces"]["__default__"]["vectors"] == [{"id": "d", "values": unit(7), "metadata": None}]
    omics = index["namespaces"]["omics"]["vectors"]
    assert [v["id"] for v in omics] == ["lip-1", "lip-2", "met-1", "pro-1", "pro-2"]
    assert omics[0]["metadata"]["tags"] == ["a", "b"]

    host = pinecone_index.host
    assert http("POST", f"{pinecone_emulator.url}/_emulator/reset", headers={}).status_code == 200
    assert http("GET", f"{pinecone_emulator.url}/_emulator/state", headers={}).json() == {"indexes": {}}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{host}/vectors/list", headers=HEADERS, timeout=2)


@pytest.mark.parametrize(
    ("flt", "metadata", "expected"),
    [
        ({"g": "x"}, {"g": "x"}, True),
        ({"g": {"$ne": "x"}}, {"g": "y"}, True),
        ({"g": {"$ne": "x"}}, {}, True),
        ({"g": {"$nin": ["x", "y"]}}, {"g": ["y", "z"]}, False),
        ({"n": {"$gt": 1}}, {"n": 1}, False),
        ({"n": {"$gte": 1}}, {"n": 1.0}, True),
        ({"n": {"$lt": 2, "$gt": 0}}, {"n": 1}, True),
        ({"n": {"$lte": 0}}, {"n": "0"}, False),
        ({"n": {"$eq": 1}}, {"n": True}, False),
        ({"g": {"$exists": True}}, {"g": "x"}, True),
        ({"g": {"$exists": False}}, {"g": "x"}, False),
        ({"$or": [{"g": "x"}, {"n": {"$gt": 5}}]}, {"g": "y", "n": 6}, True),
        ({"$and": [{"g": "x"}, {"n": {"$gt": 5}}]}, {"g": "x", "n": 5}, False),
        ({"g": {"$in": ["x"]}, "n": 1}, {"g": "x", "n": 2}, False),
    ],
)
def test_metadata_filter_operators(flt: dict[str, Any], metadata: dict[str, Any], expected: bool) -> None:
    validate_filter(flt)
    assert matches_filter(flt, metadata) is expected


@pytest.mark.parametrize(
    "flt",
    [{"g": {"$regex": "x"}}, {"$not": {"g": "x"}}, {"n": {"$gt": "1"}}, {"g": {"$in": []}}, {"$and": []}, {"g": [1]}],
)
def test_invalid_filters_are_rejected(pinecone_index: Index, flt: dict[str, Any]) -> None:
    response = http("POST", f"{pinecone_index.host}/query", {"topK": 1, "vector": unit(0), "filter": flt})
    assert response.status_code == 400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_runs_on_its_own_with_python_m(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators", "pinecone", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body: dict[str, Any] | None = None
        deadline = time.monotonic() + 15
        while body is None and time.monotonic() < deadline:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/indexes", headers=HEADERS)
                with urllib.request.urlopen(request, timeout=1) as response:
                    body = json.loads(response.read())
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert body == {"indexes": []}
        pc = Pinecone(api_key="pc_emulator_key", host=f"http://127.0.0.1:{port}")
        pc.indexes.create(
            name="cli", schema={"fields": {"_values": {"type": "dense_vector", "dimension": 2, "metric": "cosine"}}}
        )
        with pc.index(name="cli") as index:
            assert index.upsert(vectors=[("a", [1.0, 0.0])]).upserted_count == 1
        pc.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_concurrent_batched_upserts_all_land(pinecone_emulator: PineconeEmulator, pinecone_index: Index) -> None:
    vectors = [(f"v{n:04d}", unit(n % 8), {"n": n}) for n in range(1000)]
    result = pinecone_index.upsert(vectors=vectors, batch_size=50, max_concurrency=8, show_progress=False)
    assert (result.upserted_count, result.failed_item_count) == (1000, 0)
    assert len(pinecone_emulator.vectors(TEST_INDEX)) == 1000
    assert pinecone_index.describe_index_stats().total_vector_count == 1000


def test_a_batched_upsert_reports_a_rejected_batch_instead_of_raising(
    pinecone_emulator: PineconeEmulator, pinecone_index: Index
) -> None:
    # With batch_size set the SDK does not raise: a sink must read failed_items (here: one 413 batch).
    blob = "x" * 30_000
    vectors = [(f"big{n}", unit(n % 8), {"text": blob}) for n in range(80)] + [("small", unit(0))]
    result = pinecone_index.upsert(vectors=vectors, batch_size=80, show_progress=False)
    assert (result.upserted_count, result.failed_item_count, result.has_errors) == (1, 80, True)
    assert "413" in result.errors[0].error_message
    assert sorted(pinecone_emulator.vectors(TEST_INDEX)) == ["small"]
