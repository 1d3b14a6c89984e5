"""pytest fixtures for the Notion emulator (registered in tests/conftest.py), shared by contract and e2e tests.

``notion_emulator`` is a running ``NotionEmulator`` (rate limit off unless a test turns it on);
``notion_sdk`` is the real ``notion_client.Client`` pointed at it; ``notion_sdk_factory`` builds more clients
with other options (no retries, short timeouts, another token).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from notion_client import Client

from tests.emulators.notion import NotionEmulator

# notion-client types every endpoint method as ``SyncAsync[Any]`` (``Any | Awaitable[Any]``), even on the sync
# ``Client``, so its answers cannot be indexed under mypy --strict; tests hold the client as ``Any``.
NotionSdk = Any
NotionClientFactory = Callable[..., NotionSdk]


@pytest.fixture
def notion_emulator() -> Iterator[NotionEmulator]:
    """A Notion emulator on a free port, rate limit disabled (turn it on with ``set_rate_limit(3.0, 10)`` or
    ``POST /_emulator/rate_limit``). ``.url`` is the base URL, ``.token`` the accepted token, ``.root_page_id`` a
    workspace page to create databases under; ``.state()`` returns what ``GET /_emulator/state`` does."""
    emulator = NotionEmulator(rate_per_s=None)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def notion_sdk_factory(notion_emulator: NotionEmulator) -> Iterator[NotionClientFactory]:
    """Build ``notion_client.Client``s for the emulator; keyword arguments go to ``ClientOptions``.

    notion-client 3.1.0 options: ``auth``, ``base_url`` (the SDK appends ``/v1/``), ``timeout_ms`` (default
    60 000; a timeout raises ``RequestTimeoutError``), ``notion_version`` (default ``2025-09-03``), ``logger`` and
    ``log_level``, and ``retry``: a ``RetryOptions(max_retries=2, initial_retry_delay_ms=1000,
    max_retry_delay_ms=60000)`` by default, which retries 429 for every method (honouring ``Retry-After``) and
    500/503 for GET and DELETE only. **Turn the SDK's own retries off with ``retry=False``** (or
    ``RetryOptions(max_retries=0)``). Without a ``logger`` the SDK adds a stdout handler to the
    ``notion_client`` logger on every ``Client`` it builds; and it calls ``setLevel(log_level)`` on whatever
    logger it is given, so give it a logger of its own.
    """
    clients: list[Client] = []

    def build(**options: Any) -> NotionSdk:
        options.setdefault("auth", notion_emulator.token)
        options.setdefault("base_url", notion_emulator.url)
        options.setdefault("timeout_ms", 10_000)
        options.setdefault("logger", logging.getLogger("tests.notion_sdk"))
        client = Client(**options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def notion_sdk(notion_sdk_factory: NotionClientFactory) -> NotionSdk:
    """The real SDK on the emulator with its default retry policy (see ``notion_sdk_factory`` for turning it
    off: ``notion_sdk_factory(retry=False)``)."""
    return notion_sdk_factory()
