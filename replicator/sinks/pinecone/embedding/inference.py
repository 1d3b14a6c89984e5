"""The ``pinecone`` embedding provider: Pinecone's hosted inference (``pc.inference.embed``), for a deployment that
wants neither a local model nor another vendor. Passages and queries are embedded with the matching
``input_type``, as the hosted models are asymmetric. SDK errors are mapped by ``client.map_pinecone_error``, the one
place that knows the SDK's exceptions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pinecone import Pinecone, PineconeError

from replicator.sinks.base import SinkConfigError, SinkError
from replicator.sinks.pinecone.client import connect, map_pinecone_error

# Pinecone's hosted sparse models (https://docs.pinecone.io/models/overview): their embeddings are index → weight
# pairs, which cannot fill the dense index the sink writes; refused when the provider is built.
SPARSE_MODELS = frozenset({"pinecone-sparse-english-v0"})
DENSE_MODELS = ("multilingual-e5-large", "llama-text-embed-v2")


def _refuse_sparse(model: str) -> SinkConfigError:
    return SinkConfigError(
        f"EMBEDDING_MODEL={model!r} is a sparse embedding model: its vectors are index/weight pairs, and the "
        f"replicator writes a dense index; use a dense model such as {' or '.join(DENSE_MODELS)}"
    )


class PineconeInferenceProvider:
    name = "pinecone"
    DEFAULT_MODEL = "multilingual-e5-large"

    def __init__(self, client: Pinecone, *, model: str, batch_size: int = 96, dimension: int | None = None) -> None:
        if model in SPARSE_MODELS:
            raise _refuse_sparse(model)
        self.model = model
        self._client = client
        self._batch_size = batch_size
        self._dimension = dimension
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, *, api_key: str, controller_host: str, model: str) -> PineconeInferenceProvider:
        return cls(connect(api_key, controller_host), model=model)

    @property
    def dimension(self) -> int:
        """The model's dimension, from one probe embedding (start-up: the sink's ``check`` and ``pinecone init``
        ask for it), which also refuses a model that answers sparse vectors."""
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        out: list[list[float]] = []
        parameters = {"input_type": "query" if query else "passage", "truncate": "END"}
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            try:
                result = self._client.inference.embed(model=self.model, inputs=batch, parameters=parameters)
            except PineconeError as error:
                raise map_pinecone_error(error, f"inference embed ({self.model})") from error
            # A sparse model answers SparseEmbedding items, whose ``values`` is a method, not a vector.
            if getattr(result, "vector_type", "dense") != "dense" or any(
                getattr(item, "vector_type", "dense") != "dense" for item in result.data
            ):
                raise _refuse_sparse(self.model)
            vectors = [[float(x) for x in values] for item in result.data if isinstance(values := item.values, list)]
            if len(vectors) != len(batch) or not all(vectors):
                raise SinkError(f"pinecone inference ({self.model}) returned no dense vectors", retryable=False)
            with self._lock:
                if self._dimension is None:
                    self._dimension = len(vectors[0])
            out.extend(vectors)
        return out

    def close(self) -> None:
        self._client.close()
