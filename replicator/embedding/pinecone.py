"""The ``pinecone`` embedding provider: Pinecone's hosted inference (``pc.inference.embed``), for a deployment that
wants neither a local model nor another vendor. Passages and queries are embedded with the matching
``input_type``, as the hosted models are asymmetric. SDK errors are mapped by the Pinecone sink's mapper, the one
place that knows the SDK's exceptions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pinecone import Pinecone, PineconeError

from replicator.sinks.base import SinkError


class PineconeInferenceProvider:
    name = "pinecone"
    DEFAULT_MODEL = "multilingual-e5-large"

    def __init__(self, client: Pinecone, *, model: str, batch_size: int = 96, dimension: int | None = None) -> None:
        self.model = model
        self._client = client
        self._batch_size = batch_size
        self._dimension = dimension
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, *, api_key: str, controller_host: str, model: str) -> PineconeInferenceProvider:
        from replicator.sinks.pinecone import connect

        return cls(connect(api_key, controller_host), model=model)

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        from replicator.sinks.pinecone import map_pinecone_error

        out: list[list[float]] = []
        parameters = {"input_type": "query" if query else "passage", "truncate": "END"}
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            try:
                result = self._client.inference.embed(model=self.model, inputs=batch, parameters=parameters)
            except PineconeError as error:
                raise map_pinecone_error(error, f"inference embed ({self.model})") from error
            vectors = [[float(x) for x in getattr(item, "values", [])] for item in result.data]
            if len(vectors) != len(batch) or not all(vectors):
                raise SinkError(f"pinecone inference ({self.model}) returned no dense vectors", retryable=False)
            with self._lock:
                if self._dimension is None:
                    self._dimension = len(vectors[0])
            out.extend(vectors)
        return out

    def close(self) -> None:
        self._client.close()
