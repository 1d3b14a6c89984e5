"""Embedding providers: turn chunk text (and query text) into vectors for the Pinecone sink and ``replicator query``.

One small interface, four implementations: ``local`` (the packaged all-MiniLM-L6-v2 model on ONNX Runtime, offline,
no torch), ``sentence-transformers`` (the same model, or another one stored on disk, through sentence-transformers
and torch), ``openai`` (any OpenAI-compatible ``/embeddings`` endpoint over HTTP) and ``pinecone`` (Pinecone
inference).
Failures surface as the sink's typed errors: ``SinkConfigError`` when the provider cannot start (missing package,
model or key), ``SinkError`` (retryable or not) when one call fails, so the worker's single retry policy covers
embedding calls too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from replicator.sinks.base import SinkConfigError

if TYPE_CHECKING:
    from replicator.config import Settings

PROVIDERS = ("local", "sentence-transformers", "openai", "pinecone")


class EmbeddingProvider(Protocol):
    """Embeds texts in order, one vector per text; batching happens inside."""

    name: str
    model: str

    @property
    def dimension(self) -> int:
        """Length of every vector this provider returns (may cost one call to learn)."""
        ...

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        """Vectors for ``texts``. ``query=True`` marks search queries for models that embed them differently."""
        ...

    def close(self) -> None:
        """Release clients."""
        ...


def build_provider(settings: Settings) -> EmbeddingProvider:
    """The provider named by ``EMBEDDING_PROVIDER``, configured from the settings."""
    name = settings.embedding_provider
    if name == "local":
        from replicator.sinks.pinecone.embedding.onnx import OnnxProvider

        return OnnxProvider.from_model_setting(settings.embedding_model)
    if name == "sentence-transformers":
        from replicator.sinks.pinecone.embedding.local import LocalProvider

        return LocalProvider.from_model_setting(settings.embedding_model)
    if name == "openai":
        from replicator.sinks.pinecone.embedding.openai import OpenAIProvider

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIProvider(
            base_url=settings.openai_base_url,
            model=settings.embedding_model or OpenAIProvider.DEFAULT_MODEL,
            api_key=key,
        )
    if name == "pinecone":
        from replicator.sinks.pinecone.embedding.inference import PineconeInferenceProvider

        if settings.pinecone_api_key is None:
            raise SinkConfigError("EMBEDDING_PROVIDER=pinecone needs PINECONE_API_KEY")
        return PineconeInferenceProvider.connect(
            api_key=settings.pinecone_api_key.get_secret_value(),
            controller_host=settings.pinecone_controller_host,
            model=settings.embedding_model or PineconeInferenceProvider.DEFAULT_MODEL,
        )
    raise SinkConfigError(f"EMBEDDING_PROVIDER={name!r} is not one of {', '.join(PROVIDERS)}")
