"""Builds a sink by name from settings, wrapped in ``RetryingSink`` (the one retry policy) with the sink's token
bucket. The ``BackoffPolicy`` is built here once (``retry.backoff_policy``) and given both to the wrapper, for
writes, and to the sink, for its own reads (``retry.retry_reads``). The daemon builds ONE sink per name and shares
it between that sink's worker threads, so the bucket limits the whole process (the sinks and the wrapper are
thread-safe). A budget shared beyond the process (Notion's, per integration token, kept in Postgres by
``replicator/budget.py``, which this package may not import) is built by the caller and passed in as ``limiter``.

Adding a sink here: write ``replicator/sinks/<name>.py`` (or a package, like ``notion/`` and ``pinecone/``) with a
``Sink`` subclass, add a builder to ``_BUILDERS`` (import inside the builder so an unused sink's SDK is never
imported) and, if it is rate limited, its rate to ``_rate``. Nothing else changes. A sink kept elsewhere (the test
suite's recording sink, a site's own) is registered without touching this package:
``REPLICATOR_SINK_PLUGINS='{"name": {"factory": "module:callable", ...}}'``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from replicator.config import Settings
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy, RateLimiter, RetryingSink, RetrySettings, TokenBucket, backoff_policy
from replicator.sinks.base import Sink, SinkConfigError


def _build_pinecone(
    settings: Settings, metrics: Metrics | None, _limiter: RateLimiter | None, policy: BackoffPolicy
) -> Sink:
    from replicator.sinks.pinecone import build_pinecone_sink

    return build_pinecone_sink(settings, metrics=metrics, policy=policy)


def _build_notion(
    settings: Settings, metrics: Metrics | None, limiter: RateLimiter | None, policy: BackoffPolicy
) -> Sink:
    from replicator.sinks.notion import build_notion_sink

    return build_notion_sink(settings, limiter=limiter, policy=policy)


# Sinks that pace each API call inside themselves with the limiter they are given (the wrapper then takes none).
_PACED_INSIDE = frozenset({"notion"})

_BUILDERS: dict[str, Callable[[Settings, Metrics | None, RateLimiter | None, BackoffPolicy], Sink]] = {
    "notion": _build_notion,
    "pinecone": _build_pinecone,
}


def _build_plugin(name: str, settings: Settings, metrics: Metrics | None) -> Sink:
    """A sink registered in REPLICATOR_SINK_PLUGINS: import its factory and call it with its options."""
    options = dict(settings.sink_plugins[name])
    module_name, _, attribute = str(options.pop("factory")).partition(":")
    options.pop(
        "scope", None
    )  # the replicator's (which documents the sink carries: replicator/scope.py), not the sink's
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise SinkConfigError(f"sink plugin {name!r}: cannot load {module_name}:{attribute} ({error})") from None
    try:
        sink = factory(settings, options, metrics)
    except (TypeError, ValueError) as error:
        raise SinkConfigError(f"sink plugin {name!r}: {error}") from None
    if not isinstance(sink, Sink):
        raise SinkConfigError(
            f"sink plugin {name!r}: {module_name}:{attribute} returned {type(sink).__name__}, not a Sink"
        )
    return sink


def _rate(name: str, settings: Settings) -> float | None:
    """Requests per second allowed for a sink (None: unlimited)."""
    # Notion is paced inside its sink, one token per API call (a document costs one to four calls), at
    # NOTION_RATE_PER_S; a second bucket here would halve the rate.
    return {"pinecone": settings.pinecone_rate_per_s}.get(name)


def build_sink(
    name: str,
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    limiter: RateLimiter | None = None,
) -> Sink:
    """The sink called ``name``, ready to use (its ``check()`` is left to the caller), wrapped with retries and
    rate limiting. ``limiter``: the budget its API calls draw on (``replicator.budget.sink_limiter``: Notion's is
    shared by every process with the token); without one, a bucket of this process at the sink's rate. Raises
    ``SinkConfigError`` for an unknown or unconfigured sink."""
    policy = backoff_policy(settings)
    builder = _BUILDERS.get(name)
    if builder is not None:
        inner = builder(settings, metrics, limiter, policy)
    elif name in settings.sink_plugins:
        inner = _build_plugin(name, settings, metrics)
    else:
        raise SinkConfigError(f"unknown sink {name!r}; known: {', '.join(settings.known_sinks)}")
    rate = _rate(name, settings)
    bucket: RateLimiter | None = TokenBucket(rate, clock=clock, sleep=sleep) if rate is not None else None
    if limiter is not None and name not in _PACED_INSIDE:
        bucket = limiter
    return RetryingSink(
        inner,
        policy=policy,
        bucket=bucket,
        settings=RetrySettings(attempts=settings.sink_call_attempts),
        metrics=metrics,
        sleep=sleep,
    )
