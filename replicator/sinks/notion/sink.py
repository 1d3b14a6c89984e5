"""The Notion sink: one page per document in the entity's database, written through the real ``notion_client``
SDK (API 2025-09-03: pages live under a data source, resolved once from each configured database id).

Per document: wait (DEFERRED) while a relation target has no page yet; find the page (sink state, else a query
by ``Postgres ID`` that also sweeps duplicates — keeping a page people wrote on —, else adopt the one legacy page
with the same title and no ``Postgres ID``, else create it with its managed section); then write only what
changed — the managed toggle's body when its hash changed, then the properties, whose ``Content Hash`` records the
document, properties and body hashes last. Blocks and properties people added are never touched.

The body is updated IN PLACE (``_write_section``): the toggle keeps its id, a child block whose type stays the same is
patched (``PATCH /v1/blocks/{id}``) only when its text changed, and only the tail that differs is deleted and
appended — a summary edit costs one block call plus the properties' PATCH. What this process last wrote of a page's
section (the toggle's id, its children's ids and texts: ``Layout``) is kept in memory, tied to the sink state by a
write token recorded in its ``chunk_count`` column (unused by this sink otherwise): when another process wrote the
page since, or after a restart, a failure or a forced rewrite, the section is read back first (the page's blocks,
then the toggle's children) and reconciled against what is there, so a lost answer or a half-applied attempt is
repaired by the next one. When in-place costs more calls than a fresh toggle (most children changed), a new toggle
is appended next to the old and every old copy deleted, as before.

What the real service does, and what the sink does about it (docs/operations.md, "What the real services do"):
a create whose answer is lost may still have been applied, and queries lag — so a create intent is recorded
before each create and a later attempt that cannot find the page waits ``read_lag_s`` + the request timeout
before creating another; a query past 10,000 results is incomplete — an error here, and ``inventory`` partitions
by ``Postgres ID`` suffix; a request is at most 500 KB and 1,000 blocks — every body is sized before it is sent
and a large section written in several requests; a page trashed behind the cache's back is restored; a property
renamed or deleted in the UI makes the documents of that database wait (``SinkSchemaError``) until
``repair_schema`` (``replicator notion check --repair``) or a person puts it back.

The SDK's own retries are off (one policy: the worker's ``RetryingSink`` and outbox backoff); a rate limiter paces
every API call — the integration's budget shared through Postgres, handed in by the daemon or the CLI
(``replicator/budget.py``) — and a 429 penalizes it for its ``Retry-After``, so every process with the token
waits. SDK and HTTP exceptions become ``SinkError`` in ``map_notion_error`` and nowhere else.
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from replicator.documents import Document, DocumentKey
from replicator.logs import event_logger
from replicator.retry import BackoffPolicy, RateLimiter, backoff_policy, retry_reads
from replicator.sinks.base import (
    INTENT_PREFIX,
    DeleteItem,
    Outcome,
    OutcomeKind,
    RemoteDocument,
    RemoteState,
    Sink,
    SinkConfigError,
    SinkError,
    SinkSchemaError,
    UpsertItem,
    WriteIntent,
    lease_lost,
)
from replicator.sinks.notion.client import (
    IncompleteQueryError,
    NotionApiError,
    NotionClient,
    notion_client,
    paced_call,
    shared_bucket,
)
from replicator.sinks.notion.render import (
    JSON,
    OVERWRITTEN_HASH,
    REQUEST_BYTES_MAX,
    ContentHash,
    RenderedPage,
    is_managed_block,
    json_bytes,
    missing_targets,
    plain_text,
    render_page,
    rich_text,
    split_section,
)
from replicator.sinks.notion.schema import (
    CONTENT_HASH,
    CREATE_ORDER,
    DATABASES,
    POSTGRES_ID,
    missing_properties,
    property_config,
    schema_problems,
)
from replicator.sinks.notion.section import Child, Layout, append_chunks, child_text, section_plan, written_child

if TYPE_CHECKING:
    from replicator.config import Settings

log = event_logger("replicator.sinks.notion")

PAGE_SIZE = 100
CACHE_SIZE = 20_000
PARTIAL = "partial"  # the Content Hash parts of a page whose section is still being written
SCHEMA_RECHECK_S = 30.0  # while a schema problem is known, the data source is read again at most this often
REPAIR_COMMAND = "replicator notion check --repair"
# Notion's validation messages for a property the schema does not have (any more) or has with another type.
_SCHEMA_MESSAGE = re.compile(r"is not a property that exists|is expected to be|property .* does not exist", re.I)


@dataclass
class _Calls:
    """API calls one document cost (reported in ``Outcome.calls``)."""

    n: int = 0


class NotionSink(Sink):
    """Writes documents as Notion pages. Thread-safe: workers of one process share it (and its token bucket)."""

    name = "notion"
    wants_relation_ids = True
    fix_command = (
        "replicator notion init --parent-page ID (then set the NOTION_*_DB_ID it prints), "
        "or restore the databases from the Notion trash"
    )

    def __init__(
        self,
        client: NotionClient,
        database_ids: Mapping[str, str | None],
        *,
        bucket: RateLimiter | None = None,
        read_policy: BackoffPolicy,
        read_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        read_lag_s: float = 30.0,
        request_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        schema_recheck_s: float = SCHEMA_RECHECK_S,
    ) -> None:
        self.client = client
        self.read_lag_s = read_lag_s
        self.request_timeout_s = request_timeout_s
        self._clock = clock
        self._bot_id: str | None = None
        # entity → (when checked, the problem): documents of that entity wait while it lasts.
        self._schema_blocked: dict[str, tuple[float, str]] = {}
        self._intents: dict[DocumentKey, float] = {}  # key → until when a create of it may not show in queries
        self.schema_recheck_s = schema_recheck_s
        self.database_ids = dict(database_ids)
        self._bucket = bucket
        self._read_policy = read_policy
        self._read_attempts = read_attempts
        self._sleep = sleep
        self._lock = threading.Lock()
        self._data_sources: dict[str, str] = {}
        # document hash → the hashes written with it: what the page holds when sink_state says that hash was
        # recorded last. Keyed by document hash, so an entry can never describe another document or version.
        self._written: OrderedDict[str, ContentHash] = OrderedDict()
        # page id → what this process last wrote of its managed section (see the module docstring).
        self._layouts: OrderedDict[str, Layout] = OrderedDict()
        self.foreign_pages = 0  # pages without a Postgres ID seen by the last inventory()

    def document_hash(self, document: Document) -> str:
        """Notion gets the structured document only (the narrative is read FROM its pages), so a captured note
        leaves the hash, and the page, alone."""
        return document.structured_hash()

    # ---- the API edge ---------------------------------------------------------------------------------------

    def _call(self, calls: _Calls | None, doing: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if calls is not None:
            calls.n += 1
        return paced_call(self._bucket, doing, method, *args, **kwargs)

    def _read(self, doing: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A read outside the worker's retries (start-up, inventory): retried by ``retry.retry_reads`` under the
        shared policy, each attempt paced (and a 429 penalizing the budget) by ``_call``."""
        return retry_reads(
            functools.partial(self._call, None, doing, method, *args, **kwargs),
            policy=self._read_policy,
            attempts=self._read_attempts,
            sleep=self._sleep,
        )

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
        type (and relations pointing at the right data sources); otherwise one ``SinkConfigError`` listing all.
        Resolves the databases afresh: a re-check after a sink-wide failure must see what is there now."""
        with self._lock:
            self._data_sources = {}
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
            raise SinkError(str(error), retryable=False, sink_wide=True) from None
        # Page ids of relation targets, as the worker read them from this sink's state.
        pages: dict[DocumentKey, str] = {k: v for i in items for k, v in i.relation_ids.items()}
        outcomes: list[Outcome] = []
        # Relation targets first, so a batch holding a program and its dataset needs no deferral.
        for item in sorted(items, key=lambda i: (CREATE_ORDER.index(i.document.key.entity), i.document.key)):
            calls = _Calls()
            key = item.document.key
            if not item.held():  # the worker's lease on this row is gone: the worker holding it now writes it
                outcomes.append(lease_lost(key))
                continue
            try:
                outcome = self._upsert_guarded(item, sources, pages, calls)
            except SinkError as error:
                outcome = Outcome(key, OutcomeKind.FAILED, error=error)
            if outcome.kind is OutcomeKind.APPLIED and outcome.state is not None and outcome.state.remote_id:
                pages[key] = outcome.state.remote_id
            outcomes.append(replace(outcome, calls=calls.n))
        return outcomes

    def _upsert_guarded(
        self, item: UpsertItem, sources: Mapping[str, str], pages: Mapping[DocumentKey, str], calls: _Calls
    ) -> Outcome:
        """``_upsert_one``, except that a document whose database lacks a property the sink writes (renamed or
        deleted in the Notion UI) WAITS — a ``DEFERRED`` outcome with a ``SinkSchemaError`` naming the property
        and the fixing command — instead of becoming a dead letter."""
        entity = item.document.key.entity
        blocked = self._schema_problem(entity, sources, calls)
        if blocked is not None:
            return Outcome(item.document.key, OutcomeKind.DEFERRED, error=SinkSchemaError(blocked, entity=entity))
        try:
            return self._upsert_one(item, sources[entity], pages, calls)
        except NotionApiError as error:
            if error.code != "validation_error" or not _SCHEMA_MESSAGE.search(str(error)):
                raise
            self._schema_blocked.pop(entity, None)
            blocked = self._schema_problem(entity, sources, calls, fresh=True)
            if blocked is None:
                raise  # the schema is fine: the document itself was refused
            return Outcome(item.document.key, OutcomeKind.DEFERRED, error=SinkSchemaError(blocked, entity=entity))

    def _schema_problem(
        self, entity: str, sources: Mapping[str, str], calls: _Calls, *, fresh: bool = False
    ) -> str | None:
        """What the database of ``entity`` lacks, as a message naming the property and the command that fixes
        it, or None. Read from Notion when ``fresh``, or when a known problem was checked over
        ``schema_recheck_s`` ago (so documents flow again soon after someone fixes the schema)."""
        with self._lock:
            known = self._schema_blocked.get(entity)
        if known is None and not fresh:
            return None
        if known is not None and not fresh and self._clock() - known[0] < self.schema_recheck_s:
            return known[1]
        spec = DATABASES[entity]
        ds = self._call(
            calls, f"retrieve data source of {spec.title}", self.client.data_sources.retrieve, sources[entity]
        )
        problems = schema_problems(spec, ds.get("properties") or {}, dict(sources))
        with self._lock:
            if not problems:
                self._schema_blocked.pop(entity, None)
                return None
            message = (
                f"Notion database {spec.title} ({spec.env_var}): {'; '.join(problems)} "
                f"(renamed or deleted in Notion?): run `{REPAIR_COMMAND}` to restore what the replicator writes"
            )
            if known is None:
                log.warning("notion.schema_problem", database=spec.title, problems=problems)
            self._schema_blocked[entity] = (self._clock(), message)
            return message

    def repair_schema(self) -> list[str]:
        """``replicator notion check --repair``: add back every property the sink writes that a database lacks
        (renamed or deleted in the UI; a renamed one keeps its new name and its values, the sink's property is
        created afresh). A property of the wrong type is left alone (changing it could destroy what people
        entered): ``check`` keeps reporting it. Returns what was added, one line each."""
        sources = self.data_sources()
        added: list[str] = []
        for entity in CREATE_ORDER:
            spec = DATABASES[entity]
            ds = self._read(f"retrieve data source of {spec.title}", self.client.data_sources.retrieve, sources[entity])
            missing = missing_properties(spec, ds.get("properties") or {})
            if not missing:
                continue
            body = {name: property_config(spec, name, sources) for name in missing}
            self._read(
                f"restore properties of {spec.title}", self.client.data_sources.update, sources[entity], properties=body
            )
            added.extend(f"{spec.title}: added {name!r} ({spec.property_types()[name]})" for name in missing)
            with self._lock:
                self._schema_blocked.pop(entity, None)
            log.warning("notion.schema_repaired", database=spec.title, added=missing)
        return added

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
        duplicates = 0
        state = item.state
        settled_by = self._intent_deadline(doc.key, state)
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
            page_id, written, duplicates = self._find_page(doc.key, page, data_source, calls)
        if item.force:
            written = None  # resync --force / verify --repair: rewrite whatever the page's hash property says
        token = 0
        if page_id is None:
            if settled_by is not None:
                # An earlier create of this page may have been applied with its answer lost: a query shows it
                # only once it settled. Wait (and look again) until it must have, rather than create a twin.
                if self._clock() < settled_by:
                    error = SinkError(
                        "a create of this page lost its answer; looking it up again until "
                        f"{settled_by - self._clock():.1f}s from now (NOTION_READ_LAG_S) before creating another",
                        retryable=True,
                    )
                    return Outcome(doc.key, OutcomeKind.DEFERRED, error=error, duplicates=duplicates)
                log.warning("notion.lost_create_not_found", key=str(doc.key))
            # Applied, at the latest, when the request times out; visible to queries read_lag_s later.
            self._intend(item, self._clock() + self.request_timeout_s + self.read_lag_s)
            page_id = self._create(page, data_source, calls, on_failure=lambda e: self._after_failed_create(item, e))
        elif written != page.hashes:
            layout = self._layout(page_id, state, written)
            try:
                token = self._write_changes(page_id, page, written, calls, layout)
            except NotionApiError as error:
                if error.code == "validation_error" and "archived" in str(error):
                    # Someone moved the page to the trash although the cache says it is in sync: whatever the
                    # cache says, restore it and write again (a trashed page refuses new blocks).
                    found = self._retrieve_page(page_id, calls)
                    if found is not None and not (found.get("in_trash") or found.get("archived")):
                        raise  # not the page: something else is archived; the error says what
                    if found is not None:
                        log.warning("notion.page_restored", key=str(doc.key), page_id=page_id)
                        self._call(
                            calls, f"restore page of {doc.key}", self.client.pages.update, page_id, in_trash=False
                        )
                        token = self._write_changes(page_id, page, None, calls, None)
                    else:
                        page_id = self._create(page, data_source, calls)
                elif error.code == "object_not_found":
                    # The page was deleted for good meanwhile: the document still exists, so it gets a new page.
                    page_id = self._create(page, data_source, calls)
                else:
                    raise
        self._remember(page.hashes)
        with self._lock:
            self._intents.pop(doc.key, None)
        if token == 0 and state is not None and state.remote_id == page_id:
            token = state.chunk_count  # nothing written: the page still holds what that token describes
        return Outcome(
            doc.key, OutcomeKind.APPLIED, state=RemoteState(page_id, page.hashes.doc, token), duplicates=duplicates
        )

    def _data_source_gone(self, error: NotionApiError, data_source: str) -> NotionApiError:
        """A data source that answers ``object_not_found`` is a sink-wide failure (its database was deleted or
        unshared), not this document's: the worker keeps the row and re-checks the sink."""
        if error.code != "object_not_found":
            return error
        with self._lock:
            self._data_sources = {}
        return NotionApiError(
            f"{error} (data source {data_source} is gone: were the databases deleted or unshared?)",
            code=error.code,
            retryable=False,
            sink_wide=True,
        )

    def _intent_deadline(self, key: DocumentKey, state: RemoteState | None) -> float | None:
        """Until when a create of ``key`` whose answer was lost may still not show in queries: from the recorded
        intent, or the one this process remembers (an in-process retry's item carries the state from before)."""
        recorded = create_intent_deadline(state.content_hash) if state is not None and not state.remote_id else None
        with self._lock:
            remembered = self._intents.get(key)
        deadlines = [d for d in (recorded, remembered) if d is not None]
        return max(deadlines) if deadlines else None

    def _after_failed_create(self, item: UpsertItem, error: SinkError) -> None:
        """Narrow the recorded create intent by what the failure says: a 429 or a 4xx was not applied (no page
        to wait for); a 5xx ANSWER came after the work, so the page (if any) exists now and is visible
        ``read_lag_s`` from now; a timeout or a dropped connection says nothing, so the intent stays."""
        if not isinstance(error, NotionApiError):
            return
        if error.code == "rate_limited" or not error.retryable:
            self._intend(item, None)
        else:
            self._intend(item, self._clock() + self.read_lag_s)

    def _intend(self, item: UpsertItem, settled_by: float | None) -> None:
        """Record (or, with None, clear) the create intent of ``item``: in Postgres through the worker's
        ``record_intent`` (for other processes and after a crash) and in this process (for in-process retries,
        whose item still carries the state from before)."""
        key = item.document.key
        with self._lock:
            if settled_by is None:
                self._intents.pop(key, None)
            else:
                self._intents[key] = settled_by
                while len(self._intents) > CACHE_SIZE:
                    self._intents.pop(next(iter(self._intents)))
        if item.record_intent is not None:
            item.record_intent(WriteIntent("" if settled_by is None else create_intent_marker(settled_by)))

    def _write_changes(
        self, page_id: str, page: RenderedPage, written: ContentHash | None, calls: _Calls, layout: Layout | None
    ) -> int:
        """The managed section when its hash changed (or is unknown), then the properties (``Content Hash``
        last, with them), restoring the page from the trash if it is there. Returns the write token to record in
        the sink state (0: no section layout known, so the next body write reads the section back first)."""
        with self._lock:
            self._layouts.pop(page_id, None)  # until this write succeeded, nothing is known of the section
        if written is None or written.body != page.hashes.body:
            layout = self._write_section(page_id, page, layout, calls)
        self._call(
            calls, f"update page of {page.key}", self.client.pages.update, page_id,
            properties=page.properties, in_trash=False,
        )  # fmt: skip
        if layout is None:
            return 0
        token = secrets.randbelow(2**31 - 1) + 1
        with self._lock:
            self._layouts[page_id] = replace(layout, body=page.hashes.body, token=token)
            self._layouts.move_to_end(page_id)
            while len(self._layouts) > CACHE_SIZE:
                self._layouts.popitem(last=False)
        return token

    def _layout(self, page_id: str, state: RemoteState | None, written: ContentHash | None) -> Layout | None:
        """The section layout this process wrote, if it still describes the page: the sink state carries its write
        token (no other process wrote the page since) and the body hash the page holds is the one it renders."""
        with self._lock:
            layout = self._layouts.get(page_id)
        if layout is None or written is None or state is None or state.remote_id != page_id:
            return None
        if state.chunk_count != layout.token or written.body != layout.body:
            return None
        return layout

    def _write_section(self, page_id: str, page: RenderedPage, layout: Layout | None, calls: _Calls) -> Layout:
        """The managed section brought to ``page.section`` in place (see the module docstring), or replaced by a
        fresh toggle when that takes fewer calls; returns what the page holds now."""
        if layout is not None:
            try:
                return self._reconcile_section(page_id, page, layout.toggle, layout.children, [], calls)
            except NotionApiError as error:
                if error.code not in ("validation_error", "object_not_found"):
                    raise
                # A block this process wrote is gone (a person deleted the section, or part of it): what this
                # process believed is stale, so the section is read back and reconciled in this same attempt.
                log.info("notion.section_read_back", key=str(page.key), error=str(error))
        toggles = self._managed_blocks(page_id, page.key, calls)
        if not toggles:  # none on the page (an adopted legacy page, or a person deleted it): a fresh one
            return self._replace_section(page_id, page, [], calls)
        return self._reconcile_section(page_id, page, toggles[0], None, toggles[1:], calls)

    def _reconcile_section(
        self,
        page_id: str,
        page: RenderedPage,
        toggle: str,
        old: tuple[Child, ...] | None,
        extra: list[str],
        calls: _Calls,
    ) -> Layout:
        """The toggle ``toggle``'s children (``old``, or read back when None) brought to the rendered ones in
        place, or the section replaced by a fresh toggle when that takes fewer calls; ``extra``: other managed
        toggles on the page (copies from an interrupted attempt), deleted."""
        if old is None:
            old = self._section_children(toggle, page.key, calls)
        new: list[JSON] = list(page.section["toggle"].get("children") or [])
        patches, deletes, appends = section_plan(old, new)
        chunks = append_chunks(appends)
        _, rest = split_section(page.section, REQUEST_BYTES_MAX - json_bytes({"children": [], "after": toggle}))
        if len(patches) + len(deletes) + len(chunks) > 2 + len(rest):
            return self._replace_section(page_id, page, [toggle, *extra], calls)
        ids = {c.id: c for c in old}
        for block_id, block in patches:
            kind = str(block["type"])
            self._call(
                calls, f"update section of {page.key}", self.client.blocks.update, block_id,
                **{kind: {"rich_text": block[kind]["rich_text"]}},
            )  # fmt: skip
            ids[block_id] = written_child(block_id, block)
        for block_id in deletes:
            # An id that is gone already means the section is not what this process believes: the error fails the
            # attempt, and the next one reads the section back (a lost answer of our own delete lands there too).
            self._call(calls, f"delete from section of {page.key}", self.client.blocks.delete, block_id)
        kept = [ids[c.id] for c in old[: len(old) - len(deletes)]]
        for chunk in chunks:
            answer = self._call(
                calls, f"append to section of {page.key}", self.client.blocks.children.append, toggle, children=chunk
            )
            kept.extend(
                written_child(str(made["id"]), block) for made, block in zip(answer["results"], chunk, strict=True)
            )
        self._delete_sections(extra, page.key, calls)
        return Layout(toggle, tuple(kept), page.hashes.body, 0)

    def _section_children(self, toggle: str, key: DocumentKey, calls: _Calls) -> tuple[Child, ...]:
        """The managed toggle's children as they are on the page (people's edits inside it included)."""
        found: list[Child] = []
        cursor: str | None = None
        while True:
            extra = {"start_cursor": cursor} if cursor else {}
            answer = self._call(
                calls, f"list section of {key}", self.client.blocks.children.list, toggle,
                page_size=PAGE_SIZE, **extra,
            )  # fmt: skip
            for block in answer.get("results", []):
                if block.get("in_trash") or block.get("archived"):
                    continue
                found.append(
                    Child(str(block["id"]), str(block.get("type")), child_text(block), bool(block.get("has_children")))
                )
            if not answer.get("has_more"):
                return tuple(found)
            cursor = answer.get("next_cursor")

    def _create(
        self,
        page: RenderedPage,
        data_source: str,
        calls: _Calls,
        *,
        on_failure: Callable[[SinkError], None] | None = None,
    ) -> str:
        """Create the page with its managed section in one request when it fits (``REQUEST_BYTES_MAX``); else
        with the section's first children, the rest appended inside the toggle in requests that fit, and the
        ``Content Hash`` written last (until then it says "partial", so a crash half-way is rewritten)."""
        parent = {"type": "data_source_id", "data_source_id": data_source}
        room = REQUEST_BYTES_MAX - json_bytes({"parent": parent, "properties": page.properties, "children": []})
        first, rest = split_section(page.section, room)
        properties = page.properties
        if rest:
            partial = ContentHash(PARTIAL, page.hashes.props, PARTIAL)
            properties = {**page.properties, CONTENT_HASH: {"rich_text": rich_text(partial.text())}}
        try:
            created = self._call(
                calls, f"create page of {page.key}", self.client.pages.create,
                parent=parent, properties=properties, children=[first],
            )  # fmt: skip
        except SinkError as error:
            if isinstance(error, NotionApiError):
                error = self._data_source_gone(error, data_source)
            if on_failure is not None:
                on_failure(error)
            raise error from None
        page_id = str(created["id"])
        log.info("notion.page_created", key=str(page.key), page_id=page_id)
        if rest:
            toggle = self._managed_blocks(page_id, page.key, calls)[0]
            self._append_rest(toggle, rest, page.key, calls)
            self._call(
                calls, f"record the content hash of {page.key}", self.client.pages.update, page_id,
                properties={CONTENT_HASH: page.properties[CONTENT_HASH]},
            )  # fmt: skip
        return page_id

    def _append_rest(self, toggle_id: str, chunks: list[list[dict[str, Any]]], key: DocumentKey, calls: _Calls) -> None:
        """The managed section's children that did not fit its first request, appended inside the toggle."""
        for chunk in chunks:
            self._call(calls, f"append section of {key}", self.client.blocks.children.append, toggle_id, children=chunk)
        log.info("notion.section_split", key=str(key), requests=len(chunks) + 1)

    def _managed_blocks(self, page_id: str, key: DocumentKey, calls: _Calls) -> list[str]:
        """Ids of the page's top-level managed toggles (normally one), in page order."""
        found: list[str] = []
        cursor: str | None = None
        while True:
            extra = {"start_cursor": cursor} if cursor else {}
            answer = self._call(
                calls, f"list blocks of {key}", self.client.blocks.children.list, page_id,
                page_size=PAGE_SIZE, **extra,
            )  # fmt: skip
            found.extend(str(b["id"]) for b in answer.get("results", []) if is_managed_block(b))
            if not answer.get("has_more"):
                return found
            cursor = answer.get("next_cursor")

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
                try:
                    answer = call(
                        calls, doing, self.client.data_sources.query, data_source, page_size=PAGE_SIZE, **body, **extra
                    )
                except NotionApiError as error:
                    raise self._data_source_gone(error, data_source) from None
            else:
                answer = self._read(
                    doing, self.client.data_sources.query, data_source, page_size=PAGE_SIZE, **body, **extra
                )
            status = answer.get("request_status") or {}
            if status.get("type") == "incomplete":
                raise IncompleteQueryError(
                    f"notion {doing}: the query's answer is incomplete "
                    f"({status.get('incomplete_reason') or 'no reason given'}): narrow it",
                    retryable=False,
                )
            yield from answer.get("results", [])
            if not answer.get("has_more"):
                return
            cursor = answer.get("next_cursor")

    def _all_pages(self, data_source: str, doing: str) -> Iterator[dict[str, Any]]:
        """Every live page of a data source, however many: one query when it is complete; past Notion's
        10,000-result cap, one query per ``Postgres ID`` suffix (``_partition``) plus one for pages without a
        ``Postgres ID``, so no query reaches the cap."""
        try:
            pages = list(self._query(data_source, None, doing))
        except IncompleteQueryError:
            log.info("notion.inventory_partitioned", data_source=data_source)
            yield from self._partition(data_source, "", doing)
            no_id = {"property": POSTGRES_ID, "rich_text": {"is_empty": True}}
            yield from self._query(data_source, None, f"{doing} without a Postgres ID", filter=no_id)
            return
        yield from pages

    def _partition(self, data_source: str, suffix: str, doing: str) -> Iterator[dict[str, Any]]:
        """Pages whose ``Postgres ID`` ends with each hex digit + ``suffix`` (lower-case UUID text), a partition
        whose answer is incomplete split again by the digit before. A partition is read whole before any of it is
        yielded, so a split never yields a page twice.

        By the end, not the start: a UUIDv7 (migration 0009) starts with its creation time in milliseconds, so the
        ids of rows made together share their first 12 digits, while the last 10 are random in both v4 and v7 ids
        (RFC 9562 §5.4, §5.7) and split evenly."""
        for digit in "0123456789abcdef":
            narrower = digit + suffix
            by_suffix = {"property": POSTGRES_ID, "rich_text": {"ends_with": narrower}}
            try:
                pages = list(self._query(data_source, None, f"{doing} (…{narrower})", filter=by_suffix))
            except IncompleteQueryError:
                if len(narrower) >= 8:  # 16**8 partitions would be absurd already
                    raise
                yield from self._partition(data_source, narrower, doing)
                continue
            yield from pages

    def _find_page(
        self, key: DocumentKey, page: RenderedPage, data_source: str, calls: _Calls
    ) -> tuple[str | None, ContentHash | None, int]:
        """The page of ``key`` when sink state does not know it: by ``Postgres ID`` (duplicates swept, see
        ``_sweep``), else the single legacy page with the same title and no ``Postgres ID`` (adopted). Also
        returns how many duplicates were found."""
        by_id = {"property": POSTGRES_ID, "rich_text": {"equals": str(key.id)}}
        oldest_first = [{"timestamp": "created_time", "direction": "ascending"}]
        found = list(self._query(data_source, calls, f"look up {key}", filter=by_id, sorts=oldest_first))
        if found:
            keep = self._sweep(key, found, calls)
            return str(keep["id"]), ContentHash.parse(_property_text(keep, CONTENT_HASH)), len(found) - 1
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
            return str(candidates[0]["id"]), None, 0
        if candidates:
            log.warning("notion.adoption_ambiguous", key=str(key), title=page.title, candidates=len(candidates))
        return None, None, 0

    def _sweep(self, key: DocumentKey, found: list[dict[str, Any]], calls: _Calls) -> dict[str, Any]:
        """The DUPLICATE SWEEP: of several live pages with one ``Postgres ID`` (oldest first), keep one and trash
        the others — but never a page holding blocks people wrote (``_people_wrote``): the oldest such page is the
        one kept, and any other such page stays too (reported, for a person to merge; ``verify`` keeps showing
        it as duplicated). Without people's blocks anywhere, the oldest page is kept."""
        if len(found) == 1:
            return found[0]
        written_by_people = [p for p in found if self._people_wrote(str(p["id"]), calls)]
        keep = written_by_people[0] if written_by_people else found[0]
        trashed: list[str] = []
        kept_for_people: list[str] = []
        for extra in found:
            if extra is keep:
                continue
            if extra in written_by_people:
                kept_for_people.append(str(extra["id"]))
                continue
            self._trash(str(extra["id"]), calls, f"trash duplicate page of {key}")
            trashed.append(str(extra["id"]))
        log.warning("notion.duplicates_found", key=str(key), kept=keep["id"], trashed=trashed)
        if kept_for_people:
            log.warning("notion.duplicates_kept_for_people", key=str(key), kept=keep["id"], pages=kept_for_people)
        return keep

    def _bot(self, calls: _Calls) -> str:
        """The integration's own user id (``users.me``), to tell its blocks from people's."""
        if self._bot_id is None:
            me = self._call(calls, "read the integration's user", self.client.users.me)
            self._bot_id = str(me["id"])
        return self._bot_id

    def _people_wrote(self, page_id: str, calls: _Calls) -> bool:
        """Whether a page holds blocks people wrote: a top-level block that is not the managed section, or one
        created or last edited by a user other than this integration's bot (Notion's block ``created_by`` /
        ``last_edited_by``)."""
        bot = self._bot(calls)
        cursor: str | None = None
        while True:
            extra = {"start_cursor": cursor} if cursor else {}
            answer = self._call(
                calls, f"list blocks of page {page_id}", self.client.blocks.children.list, page_id,
                page_size=PAGE_SIZE, **extra,
            )  # fmt: skip
            for block in answer.get("results", []):
                if block.get("in_trash") or block.get("archived"):
                    continue
                authors = {(block.get(k) or {}).get("id") for k in ("created_by", "last_edited_by")} - {None}
                if not is_managed_block(block) or authors - {bot}:
                    return True
            if not answer.get("has_more"):
                return False
            cursor = answer.get("next_cursor")

    def _replace_section(self, page_id: str, page: RenderedPage, old: list[str], calls: _Calls) -> Layout:
        """Put a new managed toggle where the old one was (``old``: the page's managed toggles, in page order; or
        last on the page), in as many requests as its size needs (the toggle with its first children, then the
        rest inside it), then delete every old copy (a half-written new copy from an interrupted attempt
        included)."""
        # ``after`` (API 2025-09-03; ``position`` only arrived with 2026-03-11): right where the old section is,
        # or at the end of a page that has none (an adopted legacy page keeps its own content on top).
        where = {"after": old[0]} if old else {}
        first, rest = split_section(page.section, REQUEST_BYTES_MAX - json_bytes({"children": [], **where}))
        answer = self._call(
            calls, f"append section of {page.key}", self.client.blocks.children.append, page_id,
            children=[first], **where,
        )  # fmt: skip
        toggle = str(answer["results"][0]["id"])
        if rest:
            self._append_rest(toggle, rest, page.key, calls)
        self._delete_sections(old, page.key, calls)
        return Layout(toggle, None, page.hashes.body, 0)

    def _delete_sections(self, old: list[str], key: DocumentKey, calls: _Calls) -> None:
        """Delete managed toggles (old or duplicate copies)."""
        for block_id in old:
            try:
                self._call(calls, f"delete old section of {key}", self.client.blocks.delete, block_id)
            except NotionApiError as error:
                if error.code != "object_not_found" and error.code != "validation_error":
                    raise  # gone already or in the trash already: nothing left to do

    # ---- delete ---------------------------------------------------------------------------------------------

    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        try:
            sources = self.data_sources()
        except SinkConfigError as error:
            raise SinkError(str(error), retryable=False, sink_wide=True) from None
        outcomes: list[Outcome] = []
        for item in items:
            calls = _Calls()
            if not item.held():
                outcomes.append(lease_lost(item.key))
                continue
            try:
                if item.state is not None and item.state.remote_id:
                    page_ids = [item.state.remote_id]
                else:
                    by_id = {"property": POSTGRES_ID, "rich_text": {"equals": str(item.key.id)}}
                    found = self._query(sources[item.key.entity], calls, f"look up {item.key}", filter=by_id)
                    page_ids = [str(p["id"]) for p in found]
                settled_by = self._intent_deadline(item.key, item.state)
                if settled_by is not None and self._clock() < settled_by:
                    # A create whose answer was lost may have made a page a query does not show yet: trash what
                    # is seen, and look again once it must show, rather than leave it behind as an orphan.
                    for page_id in page_ids:
                        self._trash(page_id, calls, f"trash page of {item.key}")
                    wait = SinkError(
                        "a create of this page lost its answer; looking for it again in "
                        f"{settled_by - self._clock():.1f}s (NOTION_READ_LAG_S) before forgetting it",
                        retryable=True,
                    )
                    outcomes.append(Outcome(item.key, OutcomeKind.DEFERRED, error=wait, calls=calls.n))
                    continue
                for page_id in page_ids:
                    if item.out_of_scope and self._people_wrote(page_id, calls):
                        # Outside the scope, but people wrote on it: the notebook page stays (no longer updated).
                        log.warning("notion.scope_kept_for_people", key=str(item.key), page_id=page_id)
                        continue
                    self._trash(page_id, calls, f"trash page of {item.key}")
                with self._lock:
                    self._intents.pop(item.key, None)
                outcome = Outcome(item.key, OutcomeKind.DELETED)
            except SinkError as error:
                outcome = Outcome(item.key, OutcomeKind.FAILED, error=error)
            outcomes.append(replace(outcome, calls=calls.n))
        return outcomes

    def _trash(self, page_id: str, calls: _Calls, doing: str) -> None:
        try:
            self._call(calls, doing, self.client.pages.update, page_id, in_trash=True)
        except NotionApiError as error:
            if error.code == "validation_error" and "archived" in str(error):
                return  # in the trash already (a lost answer of our own trash, or a lagging query)
            if error.code != "object_not_found":
                raise

    # ---- verify ---------------------------------------------------------------------------------------------

    def inventory(self) -> Iterator[RemoteDocument]:
        """Every page with a ``Postgres ID`` in the four data sources (pages without one are people's: skipped
        and counted in ``foreign_pages``)."""
        sources = self.data_sources()
        foreign = 0
        for entity in CREATE_ORDER:
            for page in self._all_pages(sources[entity], f"list pages of {DATABASES[entity].title}"):
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

    def fetch(self, remote_ids: Sequence[str]) -> dict[str, RemoteDocument | None]:
        """Each page by id (``pages.retrieve``: Notion documents no lag for it, unlike queries), for ``verify``'s
        re-check of what a lagging inventory showed as drifted: None for a page gone, in the trash, outside the
        four data sources or without a ``Postgres ID``."""
        entities = {ds: entity for entity, ds in self.data_sources().items()}
        out: dict[str, RemoteDocument | None] = {}
        for page_id in remote_ids:
            try:
                page = self._read(f"retrieve page {page_id}", self.client.pages.retrieve, page_id)
            except NotionApiError as error:
                if error.code not in ("object_not_found", "validation_error"):
                    raise
                out[page_id] = None
                continue
            entity = entities.get(str((page.get("parent") or {}).get("data_source_id")))
            try:
                postgres_id = uuid.UUID(_property_text(page, POSTGRES_ID).strip())
            except ValueError:
                entity = None
            if entity is None or page.get("in_trash") or page.get("archived"):
                out[page_id] = None
                continue
            hashes = ContentHash.parse(_property_text(page, CONTENT_HASH))
            out[page_id] = RemoteDocument(
                DocumentKey(entity, postgres_id), str(page["id"]), hashes.doc if hashes is not None else None
            )
        return out

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


CREATE_INTENT = f"{INTENT_PREFIX}notion-create:"


def create_intent_marker(settled_by: float) -> str:
    """The sink-state hash recorded right before a page create (a ``WriteIntent`` through
    ``UpsertItem.record_intent``): the moment by which a page that create made must show in queries."""
    return f"{CREATE_INTENT}{settled_by:.3f}"


def create_intent_deadline(recorded: str | None) -> float | None:
    """From a sink-state hash written by ``create_intent_marker``: until when a lookup may still miss the page."""
    if not recorded or not recorded.startswith(CREATE_INTENT):
        return None
    try:
        return float(recorded[len(CREATE_INTENT) :])
    except ValueError:
        return None


def property_text(page: Mapping[str, Any], name: str) -> str:
    """The plain text of a text property of a page object (empty when absent)."""
    return _property_text(page, name)


def _property_text(page: Mapping[str, Any], name: str) -> str:
    prop = (page.get("properties") or {}).get(name) or {}
    return plain_text(prop.get(prop.get("type") or "rich_text") or [])


# ---- wiring -----------------------------------------------------------------------------------------------------


def database_ids(settings: Settings) -> dict[str, str | None]:
    return {
        "program": settings.notion_programs_db_id,
        "experiment": settings.notion_experiments_db_id,
        "signature": settings.notion_signature_db_id,
        "dataset": settings.notion_exp_data_db_id,
    }


def build_notion_sink(
    settings: Settings, *, limiter: RateLimiter | None = None, policy: BackoffPolicy | None = None
) -> NotionSink:
    """The sink from settings: ``NOTION_API_KEY``, ``NOTION_BASE_URL``, the four ``NOTION_*_DB_ID``, paced by
    ``limiter`` (the integration's budget, shared by every process: ``replicator.budget.notion_limiter``; without
    one, the process's token bucket at ``NOTION_RATE_PER_S``), relation targets' page ids come with each item from
    the worker. Its reads are retried under ``policy``: the factory's, or ``retry.backoff_policy(settings)``."""
    if settings.notion_api_key is None:
        raise SinkConfigError("the notion sink needs NOTION_API_KEY")
    return NotionSink(
        notion_client(
            settings.notion_api_key.get_secret_value(), settings.notion_base_url, timeout_ms=settings.notion_timeout_ms
        ),
        database_ids(settings),
        bucket=limiter if limiter is not None else shared_bucket(settings.notion_rate_per_s),
        read_policy=policy or backoff_policy(settings),
        read_lag_s=settings.notion_read_lag_s,
        request_timeout_s=settings.notion_timeout_ms / 1000,
    )
