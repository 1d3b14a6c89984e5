"""The narrative capture stage: Notion → Postgres for what people write on the managed pages.

One round (``run_once``):

1. **Poll.** Each managed database's data source is queried for pages with ``last_edited_time`` on or after the
   previous round's start minus ``NARRATIVE_OVERLAP_S`` (the first round reads them all). Notion rounds the time
   down to the minute (https://developers.notion.com/changelog/last-edited-time-is-now-rounded-to-the-nearest-minute)
   and its list endpoints may lag, so the windows overlap; a page seen again is pending only when its edit time
   moved, or its blocks were last read before that rounded minute was over (``narrative_seen`` in queries.sql).
   Pages without a ``Postgres ID`` are people's own pages: skipped.
2. **Owned properties.** A page a person edited (``last_edited_by`` is not the integration's bot) whose
   ``Content Hash`` says it was last written from the current Postgres row is compared with what the sink writes;
   a property that differs is recorded in ``replicator.property_overwrite`` (who, when, their value, Postgres's)
   and the page is handed back to the Notion sink to be rewritten: Postgres wins, but not silently.
3. **Capture.** For each pending page (oldest edit first, ``NARRATIVE_BATCH_PAGES`` per round) the blocks are
   read (https://developers.notion.com/reference/get-block-children: 100 per page of results, children of a block
   with ``has_children`` read the same way), every top-level block but the replicator's managed toggle is kept,
   rendered as Markdown-like text and hashed; ``public.narrative`` is written only when the hash (or the page)
   changed, and the row is deleted when nothing people wrote is left. An edit inside the managed toggle or by the
   replicator alone therefore changes no row, and nothing flows downstream.

Every call goes through the integration's Notion budget (``replicator/budget.py``: the sink's workers of every
process with the token draw on it too), and a 429 penalizes it for its ``Retry-After``. Only one
process captures at a time: the stage runs in the leader, and holds an advisory lock of its own as a second guard.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from replicator.documents import DocumentKey, render
from replicator.leader import LeaderLock
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy, RateLimiter
from replicator.sinks.base import SinkConfigError, SinkError
from replicator.sinks.notion.client import NotionClient, paced_call
from replicator.sinks.notion.render import (
    OVERWRITTEN_HASH,
    ContentHash,
    is_managed_block,
    owned_properties,
    property_value,
    value_digest,
)
from replicator.sinks.notion.schema import CONTENT_HASH, POSTGRES_ID
from replicator.sinks.notion.sink import NotionSink, property_text
from replicator.store import narrative as store
from replicator.store import sink_state
from replicator.store.outbox import current_lsn, enqueue

from .markdown import blocks_markdown, content_hash

log = event_logger("replicator.narrative")

PAGE_SIZE = 100
MAX_DEPTH = 8  # nesting levels read below a top-level block
# A read is trusted for a minute-rounded edit time only once the minute is over, plus this margin for clock skew.
SETTLE_MARGIN_S = 5.0


@dataclass(frozen=True)
class CaptureOptions:
    poll_s: float = 30.0
    overlap_s: float = 120.0
    batch_pages: int = 50
    # Hand pages whose owned properties a person changed back to the Notion sink (off when it is not enabled:
    # the overwrite is still recorded and applied once Notion writes are back on and resynced).
    rewrite_overwrites: bool = True
    lock_name: str = "omics_cdc"


@dataclass
class RoundStats:
    pages_seen: int = 0
    pages_pending: int = 0
    captured: int = 0  # pages whose blocks were read
    changed: int = 0  # narrative rows written
    deleted: int = 0  # narrative rows removed
    unchanged: int = 0
    overwrites: int = 0
    calls: int = 0  # every Notion request of the round
    read_calls: int = 0  # of which block reads (the cost of the pages read; the rest is the poll)
    errors: list[str] = field(default_factory=list)


class _Calls:
    def __init__(self) -> None:
        self.n = 0


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class NarrativeCapture:
    """Polls the managed databases and captures people's blocks. One per process; ``run`` in its own thread."""

    def __init__(
        self,
        dsn: str,
        client: NotionClient,
        database_ids: Mapping[str, str | None],
        *,
        options: CaptureOptions = CaptureOptions(),
        metrics: Metrics | None = None,
        bucket: RateLimiter | None = None,
        policy: BackoffPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.dsn = dsn
        self.client = client
        self.options = options
        self.metrics = metrics or Metrics()
        self._bucket = bucket
        self._clock = clock
        # Resolves the data sources through the sink's reads, retried under the replicator's one policy.
        self._resolver = NotionSink(client, database_ids, bucket=bucket, read_policy=policy)
        self._since: datetime | None = None
        self._bot_id: str | None = None
        self._conn: psycopg.Connection[Any] | None = None

    # ---- the API edge -----------------------------------------------------------------------------------------

    def _call(self, calls: _Calls, doing: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.n += 1
        self.metrics.narrative_requests.inc()
        return paced_call(self._bucket, doing, method, *args, **kwargs)

    def _paginate(
        self, calls: _Calls, doing: str, method: Callable[..., Any], *args: Any, **body: Any
    ) -> Iterator[Any]:
        cursor: str | None = None
        while True:
            extra = {"start_cursor": cursor} if cursor else {}
            answer = self._call(calls, doing, method, *args, page_size=PAGE_SIZE, **body, **extra)
            yield from answer.get("results", [])
            if not answer.get("has_more"):
                return
            cursor = answer.get("next_cursor")

    def bot_id(self, calls: _Calls) -> str:
        """The integration's own user id: edits by it are the replicator's, never a person's."""
        if self._bot_id is None:
            me = self._call(calls, "retrieve the integration's user", self.client.users.me)
            self._bot_id = str(me.get("id"))
        return self._bot_id

    # ---- connections ------------------------------------------------------------------------------------------

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, application_name="replicator-narrative")
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    # ---- the loop ---------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Rounds every ``poll_s`` until ``stop``; a failed round is logged and the next one tries again."""
        lock = LeaderLock(self.dsn, f"{self.options.lock_name}:narrative", poll_s=self.options.poll_s)
        log.info("narrative.started", poll_s=self.options.poll_s, overlap_s=self.options.overlap_s)
        try:
            if not lock.acquire(stop):
                return
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self.run_once()
                except SinkConfigError as error:  # the databases are not what the capture needs: say so, stop
                    log.error("narrative.config_error", error=str(error))
                    return
                except (SinkError, psycopg.Error) as error:
                    log.warning("narrative.round_failed", error=str(error))
                    self.close()
                stop.wait(max(self.options.poll_s - (time.monotonic() - started), 0.05))
        finally:
            lock.release()
            self.close()
            log.info("narrative.stopped")

    def run_once(self) -> RoundStats:
        """One round: poll, check owned properties, capture the pending pages."""
        stats = RoundStats()
        calls = _Calls()
        try:
            self.poll(stats, calls)
            self.capture_pending(stats)
        finally:
            stats.calls += calls.n
        if stats.changed or stats.deleted or stats.overwrites:
            log.info(
                "narrative.round",
                seen=stats.pages_seen,
                captured=stats.captured,
                changed=stats.changed,
                deleted=stats.deleted,
                overwrites=stats.overwrites,
                calls=stats.calls,
            )
        return stats

    # ---- 1. poll ----------------------------------------------------------------------------------------------

    def poll(self, stats: RoundStats, calls: _Calls) -> None:
        sources = self._resolver.data_sources()
        bot = self.bot_id(calls)
        started = self._clock()
        conn = self._db()
        sorts = [{"timestamp": "last_edited_time", "direction": "ascending"}]
        for entity, data_source in sources.items():
            body: dict[str, Any] = {"sorts": sorts}
            if self._since is not None:
                body["filter"] = {
                    "timestamp": "last_edited_time",
                    "last_edited_time": {"on_or_after": _iso(self._since)},
                }
            doing = f"query edited pages of {entity}"
            for page in self._paginate(calls, doing, self.client.data_sources.query, data_source, **body):
                seen = self._seen_page(entity, page)
                if seen is None:
                    continue
                stats.pages_seen += 1
                is_pending = store.seen(conn, seen, settle_s=60.0 + SETTLE_MARGIN_S)
                if is_pending:
                    stats.pages_pending += 1
                    if seen.seen_by is not None and seen.seen_by != bot:
                        stats.overwrites += self._check_overwrites(conn, seen, page)
        self._since = started - timedelta(seconds=self.options.overlap_s)

    @staticmethod
    def _seen_page(entity: str, page: Mapping[str, Any]) -> store.SeenPage | None:
        try:
            postgres_id = uuid.UUID(property_text(page, POSTGRES_ID).strip())
        except ValueError:
            return None  # a page people made themselves: no entity to attach its text to
        edited = _parse_time(page.get("last_edited_time"))
        if edited is None:
            return None
        by = (page.get("last_edited_by") or {}).get("id")
        return store.SeenPage(
            page_id=str(page["id"]),
            key=DocumentKey(entity, postgres_id),
            url=page.get("url"),
            seen_edit=edited,
            seen_by=str(by) if by else None,
        )

    # ---- 2. owned properties ----------------------------------------------------------------------------------

    def _check_overwrites(self, conn: psycopg.Connection[Any], seen: store.SeenPage, page: Mapping[str, Any]) -> int:
        document = render(conn, [seen.key]).get(seen.key)
        if document is None:
            return 0
        written = ContentHash.parse(property_text(page, CONTENT_HASH))
        if written is None:
            return 0
        # In sync, every owned value on the page should be Postgres's. With a write pending (the page was last
        # written from another version of the row), a value may differ only because the replicator has not
        # written it yet: a person changed it only if it differs from what was last written, which the page's
        # per-property digests say (pages written before them say nothing, and the sink's next write decides).
        pending = written.doc != document.structured_hash()
        if pending and not written.owned:
            return 0
        actual = page.get("properties") or {}
        recorded = 0
        with conn.transaction():
            for name, expected in owned_properties(document).items():
                have = actual.get(name)
                if not isinstance(have, Mapping):
                    continue
                ours, theirs = property_value(expected), property_value(have)
                if ours is None or theirs is None or ours == theirs:
                    continue
                if pending and written.written_value_digest(name) in (None, value_digest(have)):
                    continue  # as the replicator last wrote it: Postgres's new value is on its way
                item = store.Overwrite(
                    key=seen.key,
                    page_id=seen.page_id,
                    property=name,
                    edited_by=seen.seen_by,
                    edited_at=seen.seen_edit,
                    notion_value=theirs,
                    postgres_value=ours,
                )
                if store.record_overwrite(conn, item):
                    recorded += 1
                    self.metrics.property_overwrites.labels(entity=seen.key.entity).inc()
                    log.warning(
                        "narrative.property_overwritten",
                        key=str(seen.key),
                        page_id=seen.page_id,
                        property=name,
                        edited_by=seen.seen_by,
                        notion_value=theirs[:200],
                        postgres_value=ours[:200],
                    )
            if recorded and self.options.rewrite_overwrites:
                sink_state.invalidate(conn, "notion", [seen.key], OVERWRITTEN_HASH)
                enqueue(conn, {"notion": [seen.key]}, current_lsn(conn))
        return recorded

    # ---- 3. capture -------------------------------------------------------------------------------------------

    def capture_pending(self, stats: RoundStats) -> None:
        conn = self._db()
        for page in store.pending(conn, self.options.batch_pages):
            calls = _Calls()
            checked_at = self._clock()
            try:
                blocks = self._read_children(page.page_id, calls, depth=0)
            except SinkError as error:
                stats.calls += calls.n
                stats.read_calls += calls.n
                if error.retryable:
                    raise  # Notion is busy: the page stays pending for the next round
                stats.errors.append(f"{page.key}: {error}")
                log.warning("narrative.page_failed", key=str(page.key), page_id=page.page_id, error=str(error))
                if getattr(error, "code", None) != "object_not_found":
                    continue
                blocks = []  # the page is gone for good: nothing people wrote is left on it
            stats.calls += calls.n
            stats.read_calls += calls.n
            stats.captured += 1
            people = [b for b in blocks if not is_managed_block(b)]
            text = blocks_markdown(people)
            edited, edited_by = _newest_edit(people)
            outcome = "unchanged"
            with conn.transaction():
                current = store.stored_hash(conn, page.key)
                if not text.strip():
                    if current is not None and store.delete(conn, page.key):
                        outcome = "deleted"
                else:
                    digest = content_hash(text)
                    if current != (digest, page.page_id):
                        store.store(
                            conn,
                            page.key,
                            page_id=page.page_id,
                            url=page.url,
                            text=text,
                            edited=edited,
                            edited_by=edited_by,
                            content_hash=digest,
                        )
                        outcome = "changed"
                store.checked(conn, page.page_id, seen_edit=page.seen_edit, checked_at=checked_at)
            self.metrics.narrative_pages.labels(outcome=outcome).inc()
            if outcome == "changed":
                stats.changed += 1
            elif outcome == "deleted":
                stats.deleted += 1
            else:
                stats.unchanged += 1

    def _read_children(self, block_id: str, calls: _Calls, *, depth: int) -> list[dict[str, Any]]:
        doing = f"list blocks of {block_id}"
        blocks = [dict(b) for b in self._paginate(calls, doing, self.client.blocks.children.list, block_id)]
        for block in blocks:
            if depth == 0 and is_managed_block(block):
                continue  # the replicator's own section: never read, never captured
            kind = block.get("type")
            if block.get("has_children") and kind not in ("child_page", "child_database") and depth < MAX_DEPTH:
                block["children"] = self._read_children(str(block["id"]), calls, depth=depth + 1)
        return blocks


def _newest_edit(blocks: Sequence[Mapping[str, Any]]) -> tuple[datetime | None, str | None]:
    """The newest last_edited_time among the blocks (nested included) and who made it."""
    best: tuple[datetime | None, str | None] = (None, None)
    stack = list(blocks)
    while stack:
        block = stack.pop()
        stack.extend(block.get("children") or [])
        moment = _parse_time(block.get("last_edited_time"))
        if moment is not None and (best[0] is None or moment > best[0]):
            by = (block.get("last_edited_by") or {}).get("id")
            best = (moment, str(by) if by else None)
    return best
