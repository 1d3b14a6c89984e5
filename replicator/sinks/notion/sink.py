"""The Notion sink: one page per document in the entity's database, written through the real ``notion_client``
SDK (API 2025-09-03: pages live under a data source, resolved once from each configured database id).

Per document: wait (DEFERRED) while a relation target has no page yet; find the page (sink state, else a query
by ``Postgres ID`` that also trashes duplicates, else adopt the one legacy page with the same title and no
``Postgres ID``, else create it with its managed section in one call); then write only what changed — the managed
toggle when the body hash changed (new one appended next to the old, then every old copy deleted, so a crash
leaves at most a duplicate the next write removes), then the properties, whose ``Content Hash`` records the
document, properties and body hashes last. Blocks and properties people added are never touched.

The SDK's own retries are off (one policy: the worker's ``RetryingSink`` and outbox backoff); a token bucket paces
every API call. SDK and HTTP exceptions become ``SinkError`` in ``map_notion_error`` and nowhere else.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx
from notion_client import APIResponseError, Client
from notion_client.errors import HTTPResponseError, RequestTimeoutError

from replicator.documents import Document, DocumentKey
from replicator.logs import event_logger
from replicator.retry import BackoffPolicy, TokenBucket
from replicator.sinks.base import (
    DeleteItem,
    Outcome,
    OutcomeKind,
    RemoteDocument,
    RemoteState,
    Sink,
    SinkConfigError,
    SinkError,
    UpsertItem,
)
from replicator.sinks.notion.render import (
    OVERWRITTEN_HASH,
    ContentHash,
    RenderedPage,
    is_managed_block,
    missing_targets,
    plain_text,
    render_page,
)
from replicator.sinks.notion.schema import CONTENT_HASH, CREATE_ORDER, DATABASES, POSTGRES_ID, schema_problems

if TYPE_CHECKING:
    from replicator.config import Settings

log = event_logger("replicator.sinks.notion")

# notion-client types every endpoint as ``SyncAsync[Any]`` even on the sync client; we hold it as ``Any``.
NotionClient = Any

_RETRYABLE_CODES = frozenset(
    {"rate_limited", "internal_server_error", "service_unavailable", "gateway_timeout", "conflict_error"}
)
PAGE_SIZE = 100
CACHE_SIZE = 20_000


class NotionApiError(SinkError):
    """A ``SinkError`` from an API answer, with Notion's error ``code`` (``object_not_found``, …)."""

    def __init__(self, message: str, *, code: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.code = code


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


_SDK_ERRORS = (APIResponseError, HTTPResponseError, RequestTimeoutError, httpx.TransportError)


@dataclass
class _Calls:
    """API calls one document cost (reported in ``Outcome.calls``)."""

    n: int = 0


class NotionSink(Sink):
    """Writes documents as Notion pages. Thread-safe: workers of one process share it (and its token bucket)."""

    name = "notion"
    wants_relation_ids = True

    def __init__(
        self,
        client: NotionClient,
        database_ids: Mapping[str, str | None],
        *,
        bucket: TokenBucket | None = None,
        read_policy: BackoffPolicy | None = None,
        read_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.database_ids = dict(database_ids)
        self._bucket = bucket
        self._read_policy = read_policy or BackoffPolicy()
        self._read_attempts = read_attempts
        self._sleep = sleep
        self._lock = threading.Lock()
        self._data_sources: dict[str, str] = {}
        # document hash → the hashes written with it: what the page holds when sink_state says that hash was
        # recorded last. Keyed by document hash, so an entry can never describe another document or version.
        self._written: OrderedDict[str, ContentHash] = OrderedDict()
        self.foreign_pages = 0  # pages without a Postgres ID seen by the last inventory()

    def document_hash(self, document: Document) -> str:
        """Notion gets the structured document only (the narrative is read FROM its pages), so a captured note
        leaves the hash, and the page, alone."""
        return document.structured_hash()

    # ---- the API edge ---------------------------------------------------------------------------------------

    def _call(self, calls: _Calls | None, doing: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._bucket is not None:
            self._bucket.acquire()
        if calls is not None:
            calls.n += 1
        try:
            return method(*args, **kwargs)
        except _SDK_ERRORS as error:
            raise map_notion_error(error, doing) from None

    def _read(self, doing: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A read outside the worker's retries (start-up, inventory): retried here with the shared policy."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._call(None, doing, method, *args, **kwargs)
            except SinkError as error:
                if not error.retryable or attempt >= self._read_attempts:
                    raise
                self._sleep(self._read_policy.delay(attempt, error.retry_after))

    # ---- start-up -------------------------------------------------------------------------------------------

    def data_sources(self) -> dict[str, str]:
        """entity → data source id, resolved once from the configured database ids."""
        with self._lock:
            if self._data_sources:
                return dict(self._data_sources)
        missing = [DATABASES[e].env_var for e in CREATE_ORDER if not self.database_ids.get(e)]
        if missing:
            raise SinkConfigError(
                f"the notion sink needs {', '.join(missing)} (run `replicator notion init --parent-page ID`)"
            )
        resolved: dict[str, str] = {}
        problems: list[str] = []
        for entity in CREATE_ORDER:
            spec = DATABASES[entity]
            db_id = self.database_ids[entity]
            try:
                db = self._read(f"retrieve database {spec.env_var}", self.client.databases.retrieve, db_id)
            except SinkError as error:
                if error.retryable:
                    raise  # Notion is busy or unreachable: not a configuration problem
                problems.append(f"{spec.env_var}={db_id}: {error}")
                continue
            sources = db.get("data_sources") or []
            if len(sources) != 1:
                problems.append(
                    f"{spec.env_var}={db_id} ({spec.title}) has {len(sources)} data sources; the sink needs exactly one"
                )
                continue
            resolved[entity] = str(sources[0]["id"])
        if problems:
            raise SinkConfigError("notion databases: " + "; ".join(problems))
        with self._lock:
            self._data_sources = resolved
        return dict(resolved)

    def check(self) -> None:
        """Every database resolves to one data source holding every property the sink writes, with the right
        type (and relations pointing at the right data sources); otherwise one ``SinkConfigError`` listing all."""
        sources = self.data_sources()
        problems: list[str] = []
        for entity in CREATE_ORDER:
            spec = DATABASES[entity]
            try:
                ds = self._read(
                    f"retrieve data source of {spec.title}", self.client.data_sources.retrieve, sources[entity]
                )
            except SinkError as error:
                if error.retryable:
                    raise
                problems.append(f"{spec.title} ({spec.env_var}): {error}")
                continue
            found = schema_problems(spec, ds.get("properties") or {}, sources)
            if found:
                problems.append(f"{spec.title} ({spec.env_var}): " + "; ".join(found))
        if problems:
            raise SinkConfigError("notion databases lack what the sink writes: " + " | ".join(problems))
        log.info("notion.checked", databases=len(sources))

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    # ---- upsert ---------------------------------------------------------------------------------------------

    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        try:
            sources = self.data_sources()
        except SinkConfigError as error:
            raise SinkError(str(error), retryable=False) from None
        # Page ids of relation targets, as the worker read them from this sink's state.
        pages: dict[DocumentKey, str] = {k: v for i in items for k, v in i.relation_ids.items()}
        outcomes: list[Outcome] = []
        # Relation targets first, so a batch holding a program and its dataset needs no deferral.
        for item in sorted(items, key=lambda i: (CREATE_ORDER.index(i.document.key.entity), i.document.key)):
            calls = _Calls()
            key = item.document.key
            try:
                outcome = self._upsert_one(item, sources[key.entity], pages, calls)
            except SinkError as error:
                outcome = Outcome(key, OutcomeKind.FAILED, error=error)
            if outcome.kind is OutcomeKind.APPLIED and outcome.state is not None and outcome.state.remote_id:
                pages[key] = outcome.state.remote_id
            outcomes.append(replace(outcome, calls=calls.n))
        return outcomes

    def _upsert_one(
        self, item: UpsertItem, data_source: str, pages: Mapping[DocumentKey, str], calls: _Calls
    ) -> Outcome:
        doc = item.document
        waiting = missing_targets(doc, pages)
        if waiting:
            shown = ", ".join(str(k) for k in waiting[:5]) + (" …" if len(waiting) > 5 else "")
            error = SinkError(f"waiting for Notion pages of {len(waiting)} relation target(s): {shown}", retryable=True)
            return Outcome(doc.key, OutcomeKind.DEFERRED, error=error)
        page = render_page(doc, pages)

        page_id: str | None = None
        written: ContentHash | None = None
        state = item.state
        if state is not None and state.remote_id:
            page_id = state.remote_id
            written = self._cached(state.content_hash)
            if written is None:
                found = self._retrieve_page(page_id, calls)
                if found is None:
                    page_id = None
                elif found.get("in_trash") or found.get("archived"):
                    # Someone moved the page to the trash while its row exists: restore it, then rewrite it
                    # (a trashed page refuses new blocks).
                    self._call(calls, f"restore page of {doc.key}", self.client.pages.update, page_id, in_trash=False)
                else:
                    written = ContentHash.parse(_property_text(found, CONTENT_HASH))
                    if written is not None and state.content_hash == OVERWRITTEN_HASH:
                        # A person changed a property this sink owns (narrative capture recorded it): the page
                        # still carries our hash, so force the properties to be written again.
                        written = replace(written, props="")
        if page_id is None:
            page_id, written = self._find_page(doc.key, page, data_source, calls)
        if page_id is None:
            page_id = self._create(page, data_source, calls)
        elif written != page.hashes:
            try:
                if written is None or written.body != page.hashes.body:
                    self._replace_section(page_id, page, calls)
                self._call(
                    calls, f"update page of {doc.key}", self.client.pages.update, page_id,
                    properties=page.properties, in_trash=False,
                )  # fmt: skip
            except NotionApiError as error:
                if error.code != "object_not_found":
                    raise
                # The page was deleted for good meanwhile: the document still exists, so it gets a new page.
                page_id = self._create(page, data_source, calls)
        self._remember(page.hashes)
        return Outcome(doc.key, OutcomeKind.APPLIED, state=RemoteState(page_id, page.hashes.doc, 0))

    def _create(self, page: RenderedPage, data_source: str, calls: _Calls) -> str:
        created = self._call(
            calls,
            f"create page of {page.key}",
            self.client.pages.create,
            parent={"type": "data_source_id", "data_source_id": data_source},
            properties=page.properties,
            children=[page.section],
        )
        log.info("notion.page_created", key=str(page.key), page_id=created["id"])
        return str(created["id"])

    def _retrieve_page(self, page_id: str, calls: _Calls) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._call(calls, f"retrieve page {page_id}", self.client.pages.retrieve, page_id)
        except NotionApiError as error:
            if error.code == "object_not_found":
                return None
            raise
        return found

    def _query(self, data_source: str, calls: _Calls | None, doing: str, **body: Any) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            extra = {"start_cursor": cursor} if cursor else {}
            call = self._call if calls is not None else None
            if call is not None:
                answer = call(
                    calls, doing, self.client.data_sources.query, data_source, page_size=PAGE_SIZE, **body, **extra
                )
            else:
                answer = self._read(
                    doing, self.client.data_sources.query, data_source, page_size=PAGE_SIZE, **body, **extra
                )
            yield from answer.get("results", [])
            if not answer.get("has_more"):
                return
            cursor = answer.get("next_cursor")

    def _find_page(
        self, key: DocumentKey, page: RenderedPage, data_source: str, calls: _Calls
    ) -> tuple[str | None, ContentHash | None]:
        """The page of ``key`` when sink state does not know it: by ``Postgres ID`` (the oldest wins, the others
        go to the trash), else the single legacy page with the same title and no ``Postgres ID`` (adopted)."""
        by_id = {"property": POSTGRES_ID, "rich_text": {"equals": str(key.id)}}
        oldest_first = [{"timestamp": "created_time", "direction": "ascending"}]
        found = list(self._query(data_source, calls, f"look up {key}", filter=by_id, sorts=oldest_first))
        if found:
            keep, extras = found[0], found[1:]
            for extra in extras:
                self._trash(str(extra["id"]), calls, f"trash duplicate page of {key}")
            if extras:
                log.warning(
                    "notion.duplicates_trashed", key=str(key), kept=keep["id"], trashed=[e["id"] for e in extras]
                )
            return str(keep["id"]), ContentHash.parse(_property_text(keep, CONTENT_HASH))
        title_property = DATABASES[key.entity].title_property
        legacy = {
            "and": [
                {"property": title_property, "title": {"equals": page.title}},
                {"property": POSTGRES_ID, "rich_text": {"is_empty": True}},
            ]
        }
        candidates = list(
            self._query(data_source, calls, f"look for a legacy page of {key}", filter=legacy, sorts=oldest_first)
        )
        if len(candidates) == 1:
            log.info("notion.page_adopted", key=str(key), page_id=candidates[0]["id"])
            return str(candidates[0]["id"]), None
        if candidates:
            log.warning("notion.adoption_ambiguous", key=str(key), title=page.title, candidates=len(candidates))
        return None, None

    def _replace_section(self, page_id: str, page: RenderedPage, calls: _Calls) -> None:
        """Put the new managed toggle where the old one was (or last on the page), then delete every old copy."""
        old: list[str] = []
        cursor: str | None = None
        while True:
            extra = {"start_cursor": cursor} if cursor else {}
            answer = self._call(
                calls, f"list blocks of {page.key}", self.client.blocks.children.list, page_id,
                page_size=PAGE_SIZE, **extra,
            )  # fmt: skip
            old.extend(str(b["id"]) for b in answer.get("results", []) if is_managed_block(b))
            if not answer.get("has_more"):
                break
            cursor = answer.get("next_cursor")
        # ``after`` (API 2025-09-03; ``position`` only arrived with 2026-03-11): right where the old section is,
        # or at the end of a page that has none (an adopted legacy page keeps its own content on top).
        where = {"after": old[0]} if old else {}
        self._call(
            calls, f"append section of {page.key}", self.client.blocks.children.append, page_id,
            children=[page.section], **where,
        )  # fmt: skip
        for block_id in old:
            try:
                self._call(calls, f"delete old section of {page.key}", self.client.blocks.delete, block_id)
            except NotionApiError as error:
                if error.code != "object_not_found" and error.code != "validation_error":
                    raise  # gone already or in the trash already: nothing left to do

    # ---- delete ---------------------------------------------------------------------------------------------

    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        try:
            sources = self.data_sources()
        except SinkConfigError as error:
            raise SinkError(str(error), retryable=False) from None
        outcomes: list[Outcome] = []
        for item in items:
            calls = _Calls()
            try:
                if item.state is not None and item.state.remote_id:
                    page_ids = [item.state.remote_id]
                else:
                    by_id = {"property": POSTGRES_ID, "rich_text": {"equals": str(item.key.id)}}
                    found = self._query(sources[item.key.entity], calls, f"look up {item.key}", filter=by_id)
                    page_ids = [str(p["id"]) for p in found]
                for page_id in page_ids:
                    self._trash(page_id, calls, f"trash page of {item.key}")
                outcome = Outcome(item.key, OutcomeKind.DELETED)
            except SinkError as error:
                outcome = Outcome(item.key, OutcomeKind.FAILED, error=error)
            outcomes.append(replace(outcome, calls=calls.n))
        return outcomes

    def _trash(self, page_id: str, calls: _Calls, doing: str) -> None:
        try:
            self._call(calls, doing, self.client.pages.update, page_id, in_trash=True)
        except NotionApiError as error:
            if error.code != "object_not_found":
                raise

    # ---- verify ---------------------------------------------------------------------------------------------

    def inventory(self) -> Iterator[RemoteDocument]:
        """Every page with a ``Postgres ID`` in the four data sources (pages without one are people's: skipped
        and counted in ``foreign_pages``)."""
        sources = self.data_sources()
        foreign = 0
        for entity in CREATE_ORDER:
            for page in self._query(sources[entity], None, f"list pages of {DATABASES[entity].title}"):
                try:
                    postgres_id = uuid.UUID(_property_text(page, POSTGRES_ID).strip())
                except ValueError:
                    foreign += 1
                    continue
                hashes = ContentHash.parse(_property_text(page, CONTENT_HASH))
                yield RemoteDocument(
                    DocumentKey(entity, postgres_id), str(page["id"]), hashes.doc if hashes is not None else None
                )
        self.foreign_pages = foreign
        if foreign:
            log.info("notion.foreign_pages", count=foreign)

    # ---- what was written -----------------------------------------------------------------------------------

    def _cached(self, doc_hash: str) -> ContentHash | None:
        with self._lock:
            return self._written.get(doc_hash)

    def _remember(self, hashes: ContentHash) -> None:
        with self._lock:
            self._written[hashes.doc] = hashes
            self._written.move_to_end(hashes.doc)
            while len(self._written) > CACHE_SIZE:
                self._written.popitem(last=False)


def property_text(page: Mapping[str, Any], name: str) -> str:
    """The plain text of a text property of a page object (empty when absent)."""
    return _property_text(page, name)


def _property_text(page: Mapping[str, Any], name: str) -> str:
    prop = (page.get("properties") or {}).get(name) or {}
    return plain_text(prop.get(prop.get("type") or "rich_text") or [])


# ---- wiring -----------------------------------------------------------------------------------------------------


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


def database_ids(settings: Settings) -> dict[str, str | None]:
    return {
        "program": settings.notion_programs_db_id,
        "experiment": settings.notion_experiments_db_id,
        "signature": settings.notion_signature_db_id,
        "dataset": settings.notion_exp_data_db_id,
    }


def build_notion_sink(settings: Settings) -> NotionSink:
    """The sink from settings: ``NOTION_API_KEY``, ``NOTION_BASE_URL``, the four ``NOTION_*_DB_ID``, a token
    bucket at ``NOTION_RATE_PER_S``, relation targets' page ids come with each item from the worker."""
    if settings.notion_api_key is None:
        raise SinkConfigError("the notion sink needs NOTION_API_KEY")
    return NotionSink(
        notion_client(settings.notion_api_key.get_secret_value(), settings.notion_base_url),
        database_ids(settings),
        bucket=shared_bucket(settings.notion_rate_per_s),
        read_policy=BackoffPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_max_s),
    )


def create_databases(client: NotionClient, parent_page_id: str) -> dict[str, str]:
    """``replicator notion init``: create the four databases under ``parent_page_id``, relation targets first so
    every two-way relation can name its target's data source at once. Returns setting name → database id."""
    from replicator.sinks.notion.schema import create_request

    data_sources: dict[str, str] = {}
    ids: dict[str, str] = {}
    for entity in CREATE_ORDER:
        spec = DATABASES[entity]
        try:
            created = client.databases.create(**create_request(spec, parent_page_id, data_sources))
        except _SDK_ERRORS as error:
            raise map_notion_error(error, f"create database {spec.title!r}") from None
        sources = created.get("data_sources") or []
        if len(sources) != 1:
            raise SinkConfigError(f"Notion created {spec.title!r} with {len(sources)} data sources, expected one")
        data_sources[entity] = str(sources[0]["id"])
        ids[spec.env_var] = str(created["id"])
        log.info("notion.database_created", database=spec.title, database_id=created["id"])
    return ids
