"""The ``openai`` embedding provider: any OpenAI-compatible ``POST {OPENAI_BASE_URL}/embeddings`` endpoint (OpenAI,
a vLLM or TEI server, a GPU inference service in the cluster), spoken to with httpx.

Inputs go in batches; the answer's ``index`` fields put vectors back in input order. HTTP failures become
``SinkError`` here and nowhere else: 429, 5xx, timeouts and dropped connections are retryable (with the server's
``Retry-After`` when it sends one), other 4xx are permanent. The API key is sent as a bearer token and never
appears in an error message.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx

from replicator.sinks.base import SinkConfigError, SinkError


class OpenAIProvider:
    name = "openai"
    DEFAULT_MODEL = "text-embedding-3-small"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        dimension: int | None = None,
        batch_size: int = 64,
        timeout_s: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise SinkConfigError(f"OPENAI_BASE_URL={base_url!r} must start with http:// or https://")
        if batch_size < 1:
            raise SinkConfigError(f"embedding batch size must be positive, got {batch_size}")
        self.model = model
        self._url = base_url.rstrip("/") + "/embeddings"
        self._batch_size = batch_size
        self._dimension = dimension
        self._lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s)
        self._headers = headers

    @property
    def dimension(self) -> int:
        """Configured, or learned from the first answer (one short call when nothing was embedded yet)."""
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            out.extend(self._embed_batch(list(texts[start : start + self._batch_size])))
        return out

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        try:
            response = self._client.post(self._url, json={"model": self.model, "input": batch}, headers=self._headers)
        except httpx.TimeoutException as error:
            raise SinkError(f"embeddings request to {self._url} timed out", retryable=True) from error
        except httpx.TransportError as error:
            raise SinkError(
                f"embeddings request to {self._url} failed: {type(error).__name__}", retryable=True
            ) from error
        if response.status_code >= 400:
            raise _status_error(response, self._url)
        try:
            data = sorted(response.json()["data"], key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError) as error:
            raise SinkError(f"embeddings answer from {self._url} is malformed: {error}", retryable=False) from error
        if len(vectors) != len(batch):
            raise SinkError(
                f"embeddings answer from {self._url} has {len(vectors)} vectors for {len(batch)} inputs",
                retryable=False,
            )
        self._check_dimension(vectors)
        return vectors

    def _check_dimension(self, vectors: list[list[float]]) -> None:
        sizes = {len(v) for v in vectors}
        with self._lock:
            if self._dimension is None and len(sizes) == 1:
                self._dimension = sizes.pop()
                return
        if sizes != {self._dimension}:
            raise SinkError(
                f"model {self.model!r} returned vectors of {sorted(sizes)} dimensions, expected {self._dimension}",
                retryable=False,
            )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _status_error(response: httpx.Response, url: str) -> SinkError:
    status = response.status_code
    detail = _error_message(response)
    message = f"embeddings request to {url} answered {status}" + (f": {detail}" if detail else "")
    if status == 429 or status >= 500 or status == 408:
        return SinkError(message, retryable=True, retry_after=_retry_after(response.headers.get("retry-after")))
    return SinkError(message, retryable=False)


def _error_message(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:200]
        if isinstance(error, str):
            return error[:200]
    return ""


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
