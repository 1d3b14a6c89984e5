"""The Notion SDK's edge: the one client the replicator builds (``notion_client``: the real ``notion-client``,
its own retries off), the one mapping of its exceptions to ``SinkError`` (``map_notion_error``), the one paced call
every request goes through (``paced_call``: the integration's budget first, a 429 penalizes it), the process's
token bucket for that budget, and the databases' creation (``replicator notion init``).

Notion's behaviour behind these (docs/operations.md, "What the real services do"): a 429 ``rate_limited`` with
``Retry-After`` (https://developers.notion.com/reference/request-limits); 409 ``conflict_error``, 500, 503 and 504
are worth retrying, validation, ``object_not_found`` and authorization errors are not
(https://developers.notion.com/reference/status-codes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from notion_client import APIResponseError, Client
from notion_client.errors import HTTPResponseError, RequestTimeoutError

from replicator.logs import event_logger
from replicator.retry import RateLimiter, TokenBucket
from replicator.sinks.base import SinkConfigError, SinkError
from replicator.sinks.notion.schema import CREATE_ORDER, DATABASES

log = event_logger("replicator.sinks.notion")

# notion-client types every endpoint as ``SyncAsync[Any]`` even on the sync client; we hold it as ``Any``.
NotionClient = Any

_RETRYABLE_CODES = frozenset(
    {"rate_limited", "internal_server_error", "service_unavailable", "gateway_timeout", "conflict_error"}
)


class IncompleteQueryError(SinkError):
    """A data-source query answered ``request_status: incomplete`` (it reached Notion's 10,000-result cap):
    what it returned is NOT the whole answer, so it is never taken as "done"."""


class NotionApiError(SinkError):
    """A ``SinkError`` from an API answer, with Notion's error ``code`` (``object_not_found``, …)."""

    def __init__(
        self, message: str, *, code: str, retryable: bool, retry_after: float | None = None, sink_wide: bool = False
    ) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after, sink_wide=sink_wide)
        self.code = code


def is_rate_limited(error: SinkError) -> bool:
    """A 429 ``rate_limited`` answer (the integration's budget is spent), as ``map_notion_error`` maps it."""
    return isinstance(error, NotionApiError) and error.code == "rate_limited"


def _retry_after(headers: httpx.Headers | None) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def map_notion_error(error: BaseException, doing: str) -> SinkError:
    """The one place SDK and transport exceptions become ``SinkError``: rate limits, 5xx, conflicts, timeouts and
    connection failures are retryable (with ``Retry-After`` when sent); validation errors, missing objects and
    authorization failures are permanent."""
    if isinstance(error, APIResponseError | HTTPResponseError):
        code = str(getattr(error.code, "value", error.code))
        retryable = code in _RETRYABLE_CODES or error.status >= 500 or error.status == 429
        return NotionApiError(
            f"notion {doing}: {error.status} {code}: {error}",
            code=code,
            retryable=retryable,
            retry_after=_retry_after(error.headers) if retryable else None,
        )
    if isinstance(error, RequestTimeoutError):
        return SinkError(f"notion {doing}: request timed out", retryable=True)
    if isinstance(error, httpx.TransportError):
        return SinkError(f"notion {doing}: {type(error).__name__}", retryable=True)
    return SinkError(f"notion {doing}: {type(error).__name__}: {error}", retryable=False)


SDK_ERRORS = (APIResponseError, HTTPResponseError, RequestTimeoutError, httpx.TransportError)


def paced_call(bucket: RateLimiter | None, doing: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Every Notion API call of the replicator (the sink, the narrative capture, ``notion init``): one token from
    ``bucket`` (the integration's budget) first, then the call, its SDK exceptions mapped by ``map_notion_error``;
    a 429 penalizes the budget by its ``Retry-After``, so everyone drawing on it waits it out."""
    if bucket is not None:
        bucket.acquire()
    try:
        return method(*args, **kwargs)
    except SDK_ERRORS as error:
        mapped = map_notion_error(error, doing)
        if bucket is not None and is_rate_limited(mapped):
            bucket.penalize(mapped.retry_after or 1.0)
        raise mapped from None


def notion_client(api_key: str, base_url: str, *, timeout_ms: int = 30_000) -> NotionClient:
    """The real SDK with its own retries off and our logger (the SDK calls ``setLevel`` on the logger it gets, so
    it gets one of its own; it never logs the token)."""
    return Client(
        auth=api_key,
        base_url=base_url.rstrip("/"),
        timeout_ms=timeout_ms,
        retry=False,
        logger=logging.getLogger("replicator.notion.sdk"),
        log_level=logging.WARNING,
    )


_BUCKETS: dict[float, TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def shared_bucket(rate_per_s: float) -> TokenBucket:
    """The process's one token bucket for the integration's Notion budget: the sink's workers and the narrative
    capture draw on the same ``NOTION_RATE_PER_S`` (Notion limits the integration, not each caller)."""
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get(rate_per_s)
        if bucket is None:
            bucket = _BUCKETS[rate_per_s] = TokenBucket(rate_per_s)
        return bucket


def create_databases(
    client: NotionClient, parent_page_id: str, *, limiter: RateLimiter | None = None
) -> dict[str, str]:
    """``replicator notion init``: create the four databases under ``parent_page_id``, relation targets first so
    every two-way relation can name its target's data source at once, each create paced by ``limiter`` (the
    integration's budget) when given. Returns setting name → database id."""
    from replicator.sinks.notion.schema import create_request

    data_sources: dict[str, str] = {}
    ids: dict[str, str] = {}
    for entity in CREATE_ORDER:
        spec = DATABASES[entity]
        request = create_request(spec, parent_page_id, data_sources)
        created = paced_call(limiter, f"create database {spec.title!r}", client.databases.create, **request)
        sources = created.get("data_sources") or []
        if len(sources) != 1:
            raise SinkConfigError(f"Notion created {spec.title!r} with {len(sources)} data sources, expected one")
        data_sources[entity] = str(sources[0]["id"])
        ids[spec.env_var] = str(created["id"])
        log.info("notion.database_created", database=spec.title, database_id=created["id"])
    return ids
