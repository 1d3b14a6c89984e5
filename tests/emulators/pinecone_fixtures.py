"""pytest fixtures for the Pinecone emulator (registered in tests/conftest.py), and the two client builders they use.

``pinecone_emulator`` is a started ``PineconeEmulator`` (control plane on a free port; each created index serves
its data plane on a port of its own). ``pinecone_sdk`` is the real ``pinecone.Pinecone`` client pointed at it,
and ``pinecone_index`` creates an index of dimension 8 (cosine) and yields the SDK's data-plane ``Index``.

Retries in pinecone 10.2.0, and how to switch them off (the replicator keeps one retry policy of its own):

- Control plane: ``Pinecone(api_key=…, host=<controller URL>, retry_config=RetryConfig(max_retries=0))``.
  By default the SDK retries 3 times on 408/429/500/502/503/504 and on connection errors (every method, POST
  included), honouring ``Retry-After`` plus up to 50 % jitter, under a process-wide per-host retry budget.
- Data plane over REST: ``Pinecone.index()`` / ``Index(...)`` take no ``retry_config`` — the REST ``Index`` always
  builds its HTTP client with the default ``RetryConfig()`` (the constructor documents that ``retry_config`` "does
  not reach data-plane REST"). ``index_client(pc, name, retries=False)`` below swaps the index's private
  ``_http`` for one built with ``RetryConfig(max_retries=0)``; it relies on SDK internals (``Index._http``,
  ``Index._config``, ``pinecone._internal.http_client.HTTPClient``), so a sink that does the same must pin the
  SDK version and keep a contract test like ``test_data_plane_without_retries_raises_the_first_429``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from pinecone import Index, Pinecone, RetryConfig
from pinecone._internal.constants import DATA_PLANE_API_VERSION
from pinecone._internal.http_client import HTTPClient

from tests.emulators.pinecone import PineconeEmulator

TEST_INDEX = "test-index"
TEST_DIMENSION = 8


def pinecone_client(emulator: PineconeEmulator, *, retries: bool = True, api_key: str | None = None) -> Pinecone:
    """The real SDK client on the emulator's control plane; ``retries=False`` turns the SDK's own retries off."""
    retry_config = None if retries else RetryConfig(max_retries=0)
    return Pinecone(api_key=api_key or emulator.api_key, host=emulator.url, retry_config=retry_config)


def index_client(pc: Pinecone, name: str, *, retries: bool = True) -> Index:
    """The SDK's REST data-plane client for index ``name`` (its host found through the control plane).

    ``retries=False`` replaces the client's private HTTP client with one that never retries; see the module
    docstring for why no public setting exists in pinecone 10.2.0.
    """
    index = pc.index(name=name)
    if not retries:
        index._http.close()
        index._http = HTTPClient(
            replace(index._config, retry_config=RetryConfig(max_retries=0)), DATA_PLANE_API_VERSION
        )
    return index


@pytest.fixture
def pinecone_emulator() -> Iterator[PineconeEmulator]:
    """A started emulator (key ``pc_emulator_key``); stopped, with every index server, after the test."""
    emulator = PineconeEmulator()
    emulator.start("127.0.0.1", 0)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def pinecone_sdk(pinecone_emulator: PineconeEmulator) -> Iterator[Pinecone]:
    """``Pinecone(api_key=…, host=<controller URL>)`` with the SDK's default retries on (see module docstring)."""
    pc = pinecone_client(pinecone_emulator)
    try:
        yield pc
    finally:
        pc.close()


@pytest.fixture
def pinecone_index(pinecone_sdk: Pinecone) -> Iterator[Index]:
    """A serverless index ``test-index`` of dimension 8, cosine, and the SDK's ``Index`` client for it."""
    pinecone_sdk.indexes.create(
        name=TEST_INDEX,
        schema={"fields": {"_values": {"type": "dense_vector", "dimension": TEST_DIMENSION, "metric": "cosine"}}},
        deployment={"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
    )
    index = pinecone_sdk.index(name=TEST_INDEX)
    try:
        yield index
    finally:
        index.close()
