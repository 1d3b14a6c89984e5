"""The Pinecone SDK's edge: the one module that builds the SDK's clients (with the SDK's own retries off, as the
replicator keeps one retry policy), turns SDK and transport exceptions into ``SinkError`` (``map_pinecone_error``),
and administers the index (describe, create, wait while it initializes). Everything else in the package speaks to
the SDK objects this module hands out and catches ``SDK_ERRORS`` only to pass them to ``map_pinecone_error``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from pinecone import (
    ApiError,
    NotFoundError,
    Pinecone,
    PineconeConnectionError,
    PineconeError,
    PineconeTimeoutError,
    RateLimitError,
    ResponseParsingError,
    RetryConfig,
    ServerlessSpec,
)

from replicator.logs import event_logger
from replicator.sinks.base import SinkConfigError, SinkError

if TYPE_CHECKING:
    from pinecone import Index

log = event_logger("replicator.pinecone")

# The SDK retries 408/429/5xx and transport errors by default; one policy (the worker's) is enough.
NO_SDK_RETRIES = RetryConfig(max_retries=0)


def map_pinecone_error(error: BaseException, doing: str) -> SinkError:
    """The one place SDK (and transport) exceptions become ``SinkError``: 429, 5xx, 408, timeouts and connection
    failures are retryable; other API errors (400 validation, dimension, 401, 404) and client-side validation
    are permanent."""
    if isinstance(error, RateLimitError):
        return SinkError(f"pinecone {doing}: {error}", retryable=True, retry_after=error.retry_after)
    if isinstance(error, ApiError):
        retryable = error.status_code >= 500 or error.status_code == 408
        return SinkError(
            f"pinecone {doing}: {error}",
            retryable=retryable,
            retry_after=_retry_after(error.headers) if retryable else None,
        )
    if isinstance(error, PineconeTimeoutError | PineconeConnectionError | ResponseParsingError):
        return SinkError(f"pinecone {doing}: {type(error).__name__}: {error}", retryable=True)
    if isinstance(error, httpx.TransportError):
        return SinkError(f"pinecone {doing}: {type(error).__name__}", retryable=True)
    return SinkError(f"pinecone {doing}: {type(error).__name__}: {error}", retryable=False)


# What a call through the SDK may raise: its own exceptions and httpx's transport errors (caught by the sink and
# the inference provider only to hand them to ``map_pinecone_error``).
SDK_ERRORS = (PineconeError, httpx.TransportError)


def _retry_after(headers: dict[str, str] | None) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return None
            return seconds if seconds >= 0 else None
    return None


def connect(api_key: str, controller_host: str) -> Pinecone:
    """A control-plane client without SDK retries."""
    try:
        return Pinecone(api_key=api_key, host=controller_host, retry_config=NO_SDK_RETRIES)
    except PineconeError as error:
        raise SinkConfigError(f"cannot configure the Pinecone client: {error}") from error


def open_index(pc: Pinecone, index_name: str, index_host: str | None) -> Index:
    """A data-plane client for the index (``PINECONE_INDEX_HOST``, or the host the control plane reports), with
    the SDK's retries off (``_without_sdk_retries``); a test checks that a 429 reaches us after exactly one
    request."""
    with _describing(index_name):
        index = pc.index(name=index_name if not index_host else "", host=index_host or "")
    return _without_sdk_retries(index)


@contextlib.contextmanager
def _describing(index_name: str) -> Iterator[None]:
    """A call that reads the index's description: a missing index says how to create it, any other SDK failure is
    mapped to the sink's errors."""
    try:
        yield
    except NotFoundError as error:
        raise SinkConfigError(
            f"Pinecone index {index_name!r} does not exist: run `replicator pinecone init`"
        ) from error
    except SDK_ERRORS as error:
        raise map_pinecone_error(error, f"describe index {index_name!r}") from error


def _without_sdk_retries(index: Index) -> Index:
    """``index`` with its HTTP client rebuilt under ``NO_SDK_RETRIES``.

    The one use of SDK internals in the replicator, kept here: pinecone 10.2 has no public call that sets the REST
    data-plane client's retries. ``Pinecone(retry_config=…)`` reaches the control plane and gRPC only, and neither
    ``Pinecone.index()`` nor ``Index(...)`` takes a ``retry_config`` (``Index.__init__`` always builds
    ``HTTPClient(PineconeConfig(...))`` with the default ``RetryConfig()``, 3 retries on 408/429/5xx). So the
    private ``Index._http`` is replaced by an ``HTTPClient`` (``pinecone._internal``) built from the index's own
    ``_config`` with retries off. pyproject.toml keeps the SDK below 11, and
    ``test_a_429_is_a_retryable_error_after_exactly_one_request`` (tests/integration/test_pinecone_sink.py) fails
    if a new SDK changes this.
    """
    from pinecone._internal.constants import DATA_PLANE_API_VERSION
    from pinecone._internal.http_client import HTTPClient

    old = index._http
    index._http = HTTPClient(dataclasses.replace(index._config, retry_config=NO_SDK_RETRIES), DATA_PLANE_API_VERSION)
    old.close()
    return index


def index_dimension(pc: Pinecone, index_name: str) -> int | None:
    """The index's dense dimension, or ``None`` when the index does not exist."""
    try:
        model = pc.describe_index(index_name)
    except NotFoundError:
        return None
    except SDK_ERRORS as error:
        raise map_pinecone_error(error, f"describe index {index_name!r}") from error
    dimension = model.dimension
    if dimension is None:
        raise SinkConfigError(f"Pinecone index {index_name!r} has no dense vector field")
    return int(dimension)


INDEX_READY_POLL_S = 2.0


def wait_until_ready(
    pc: Pinecone,
    index_name: str,
    *,
    timeout_s: float,
    poll_s: float = INDEX_READY_POLL_S,
    on_wait: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait while the index is initializing: a new index answers ``status.ready: false`` and has no host for a
    while after ``create_index``, which "only queues the job" (https://docs.pinecone.io/troubleshooting/wait-for-
    index-creation: poll describe_index until ready). Each wait is logged (``pinecone.index_initializing``) and
    told to ``on_wait`` (the CLI prints it). A missing index, or one still not ready after ``timeout_s``, is a
    ``SinkConfigError`` saying what to do."""
    deadline = clock() + timeout_s
    told = False
    while True:
        with _describing(index_name):
            model = pc.describe_index(index_name)
        status = getattr(model, "status", None)
        if status is None or bool(getattr(status, "ready", True)):
            if told:
                log.info("pinecone.index_ready", index=index_name)
            return
        state = str(getattr(status, "state", "Initializing"))
        if state == "InitializationFailed":
            raise SinkConfigError(f"Pinecone index {index_name!r} failed to initialize: delete and recreate it")
        if clock() >= deadline:
            raise SinkConfigError(
                f"Pinecone index {index_name!r} is still {state} after {timeout_s:g}s "
                "(PINECONE_INDEX_READY_TIMEOUT_S); check it in the Pinecone console, then start again"
            )
        message = f"Pinecone index {index_name!r} is {state}; waiting until it is ready"
        log.info("pinecone.index_initializing", index=index_name, state=state)
        if on_wait is not None and not told:
            on_wait(message)
        told = True
        sleep(poll_s)


@dataclass(frozen=True)
class InitResult:
    index: str
    created: bool
    dimension: int
    host: str | None


def ensure_index(
    pc: Pinecone,
    index_name: str,
    dimension: int,
    *,
    cloud: str = "aws",
    region: str = "us-east-1",
    ready_timeout_s: float = 300.0,
    on_wait: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> InitResult:
    """Create the serverless index (cosine, ``dimension``) when missing; refuse one of another dimension. Either
    way, wait (visibly, through ``on_wait``) until it is ready."""
    existing = index_dimension(pc, index_name)
    if existing is not None:
        if existing != dimension:
            raise SinkConfigError(
                f"Pinecone index {index_name!r} exists with dimension {existing}, but the embedding provider "
                f"gives {dimension}: delete the index or change EMBEDDING_PROVIDER/EMBEDDING_MODEL"
            )
        wait_until_ready(pc, index_name, timeout_s=ready_timeout_s, on_wait=on_wait, sleep=sleep)
        return InitResult(index_name, False, existing, _host(pc, index_name))
    try:
        # timeout=-1: the SDK would poll silently; we wait ourselves and say so.
        pc.create_index(
            name=index_name,
            dimension=dimension,
            metric="cosine",
            spec=ServerlessSpec(cloud=cloud, region=region),
            timeout=-1,
        )
    except SDK_ERRORS as error:
        raise map_pinecone_error(error, f"create index {index_name!r}") from error
    wait_until_ready(pc, index_name, timeout_s=ready_timeout_s, on_wait=on_wait, sleep=sleep)
    return InitResult(index_name, True, dimension, _host(pc, index_name))


def _host(pc: Pinecone, index_name: str) -> str | None:
    try:
        return pc.describe_index(index_name).host
    except SDK_ERRORS as error:
        raise map_pinecone_error(error, f"describe index {index_name!r}") from error
