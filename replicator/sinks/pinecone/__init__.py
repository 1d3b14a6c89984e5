"""The Pinecone sink package, one job per module, each importing only those below it (an import-linter contract):
``sink`` (``PineconeSink``: batching, upsert, surplus and document deletion, inventory, freshness, retrieval)
above ``embedding/`` (the providers that turn chunk text into vectors) and ``metadata`` (vector ids and the one
metadata schema), above ``text`` (a document's text, cut into chunks) and ``client`` (the SDK's edge: clients
without SDK retries, ``map_pinecone_error``, index administration). This module wires them from settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.metrics import Metrics, metered
from replicator.retry import BackoffPolicy, backoff_policy, retry_reads
from replicator.sinks.base import SinkConfigError
from replicator.sinks.pinecone.client import (
    InitResult,
    connect,
    ensure_index,
    map_pinecone_error,
    open_index,
    wait_until_ready,
)
from replicator.sinks.pinecone.embedding import EmbeddingProvider, build_provider
from replicator.sinks.pinecone.metadata import LIST_METADATA_KEYS, id_prefix, key_of_vector_id, vector_id
from replicator.sinks.pinecone.sink import PineconeSink, VectorMatch

if TYPE_CHECKING:
    from replicator.config import Settings

__all__ = [
    "LIST_METADATA_KEYS",
    "EmbeddingProvider",
    "InitResult",
    "PineconeSink",
    "VectorMatch",
    "build_pinecone_sink",
    "build_provider",
    "connect",
    "ensure_index",
    "id_prefix",
    "key_of_vector_id",
    "map_pinecone_error",
    "vector_id",
]


def build_pinecone_sink(
    settings: Settings,
    provider: EmbeddingProvider | None = None,
    *,
    metrics: Metrics | None = None,
    policy: BackoffPolicy | None = None,
) -> PineconeSink:
    """The sink from settings: ``PINECONE_API_KEY``, ``PINECONE_CONTROLLER_HOST``, ``PINECONE_INDEX``,
    ``PINECONE_INDEX_HOST`` (else found through the control plane), ``PINECONE_NAMESPACE``, and the embedding
    provider named by ``EMBEDDING_PROVIDER`` (its texts and call times counted in ``metrics`` when given). Its
    reads (start-up here, then ``check``, ``inventory``, fetches) are retried under ``policy``: the factory's, or
    ``retry.backoff_policy(settings)`` for a caller without one (``query``, ``verify``)."""
    if settings.pinecone_api_key is None:
        raise SinkConfigError("the pinecone sink needs PINECONE_API_KEY")
    policy = policy or backoff_policy(settings)
    pc = connect(settings.pinecone_api_key.get_secret_value(), settings.pinecone_controller_host)
    retry_reads(
        lambda: wait_until_ready(pc, settings.pinecone_index, timeout_s=settings.pinecone_index_ready_timeout_s),
        policy=policy,
        attempts=6,
    )
    index = retry_reads(
        lambda: open_index(pc, settings.pinecone_index, settings.pinecone_index_host), policy=policy, attempts=6
    )
    return PineconeSink(
        index=index,
        provider=metered(provider or build_provider(settings), metrics),
        namespace=settings.pinecone_namespace,
        index_name=settings.pinecone_index,
        control=pc,
        read_policy=policy,
        freshness_timeout_s=settings.pinecone_freshness_timeout_s,
    )
