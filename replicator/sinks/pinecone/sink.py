"""The Pinecone sink: each document becomes overlapping text chunks (``text``), embedded by the configured provider
(``embedding``) and upserted as vectors with the ids and metadata of ``metadata``, through the SDK objects of
``client`` (whose ``map_pinecone_error`` is the one place SDK exceptions become ``SinkError``).

Requests stay within Pinecone's limits (1,000 vectors and 2 MB per upsert). When a document shrinks, its surplus
chunk ids are deleted up to the count recorded in ``sink_state``, which the worker raises to this write's chunk
count BEFORE the write (``write_intents``), so an upsert that was applied but whose answer was lost still leaves a
count covering every chunk it wrote; deleting a document deletes every id under its prefix, found by listing, so a
lost ``sink_state`` never leaves vectors behind. Reads (``check``, ``inventory``, ``fetch_metadata``, the freshness
wait of ``settle_reads``) are retried under the replicator's one backoff policy; retrieval (``query``) is what
``replicator query`` asks.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from replicator.documents import UNCONFIRMED_INTENT, DocumentKey, WriteIntent
from replicator.graph import ENTITIES
from replicator.logs import event_logger
from replicator.retry import BackoffPolicy, retry_reads
from replicator.sinks.base import (
    DeleteItem,
    LeaseLostError,
    Outcome,
    OutcomeKind,
    RemoteDocument,
    RemoteState,
    Sink,
    SinkConfigError,
    SinkError,
    UpsertItem,
    lease_lost,
)
from replicator.sinks.pinecone.client import SDK_ERRORS, index_dimension, map_pinecone_error
from replicator.sinks.pinecone.embedding import EmbeddingProvider
from replicator.sinks.pinecone.metadata import (
    MAX_METADATA_BYTES,
    fit_metadata,
    id_prefix,
    key_of_vector_id,
    vector_id,
    vector_metadata,
)
from replicator.sinks.pinecone.text import ChunkPolicy, document_chunks

if TYPE_CHECKING:
    from pinecone import Index, Pinecone

T = TypeVar("T")
log = event_logger("replicator.pinecone")

MAX_VECTORS_PER_UPSERT = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_IDS_PER_DELETE = 1000
FETCH_BATCH = 100
# A fetch answer carries each record's values and metadata; batches are sized to stay within this, far below the
# 4 MB a query answer may be (https://docs.pinecone.io/reference/api/database-limits/operation-limits).
MAX_FETCH_ANSWER_BYTES = 2 * 1024 * 1024
# Room for the request envelope and for the SDK serialising floats a little longer than we measure them.
_REQUEST_MARGIN = 64 * 1024

# The id of the freshness probe ``settle_reads`` writes (not a document id: no ``entity:`` prefix, so inventory,
# query and verify never take it for a document).
FRESHNESS_PROBE_ID = "replicator-freshness-probe"
FRESHNESS_POLL_S = 0.25


@dataclass(frozen=True)
class VectorMatch:
    """One query match: the vector id, its score under the index metric, its metadata."""

    id: str
    score: float
    metadata: dict[str, Any]


@dataclass
class _Prepared:
    item: UpsertItem
    content_hash: str
    vectors: list[dict[str, Any]]
    calls: int = 0
    error: SinkError | None = None


class PineconeSink(Sink):
    name = "pinecone"
    fix_command = "replicator pinecone init (an index whose dimension matches the embedding provider)"

    def __init__(
        self,
        *,
        index: Index,
        provider: EmbeddingProvider,
        namespace: str,
        index_name: str,
        control: Pinecone | None = None,
        chunking: ChunkPolicy = ChunkPolicy(),
        max_vectors_per_upsert: int = MAX_VECTORS_PER_UPSERT,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        read_policy: BackoffPolicy,
        read_attempts: int = 6,
        freshness_timeout_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index = index
        self._provider = provider
        self._namespace = namespace
        self._index_name = index_name
        self._control = control
        self._chunking = chunking
        self._max_vectors = max_vectors_per_upsert
        self._max_bytes = max_request_bytes - _REQUEST_MARGIN
        # inventory() makes many read calls in a row; each is retried under the replicator's one backoff policy
        # (writes are retried by RetryingSink around upsert/delete, reads have no such wrapper).
        self._read_policy = read_policy
        self._read_attempts = read_attempts
        self._freshness_timeout_s = freshness_timeout_s
        self._sleep = sleep
        self._clock = clock

    @property
    def provider(self) -> EmbeddingProvider:
        return self._provider

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def index(self) -> Index:
        return self._index

    # ---- start-up ------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """The index exists and its dimension is the provider's."""
        expected = self._provider.dimension
        if self._control is not None:
            control = self._control
            actual = retry_reads(
                lambda: index_dimension(control, self._index_name),
                policy=self._read_policy,
                attempts=self._read_attempts,
                sleep=self._sleep,
            )
            if actual is None:
                raise SinkConfigError(
                    f"Pinecone index {self._index_name!r} does not exist: run `replicator pinecone init`"
                )
        else:
            try:
                actual = self._index.describe_index_stats().dimension
            except SDK_ERRORS as error:
                raise map_pinecone_error(error, "describe index stats") from error
        if actual != expected:
            raise SinkConfigError(
                f"Pinecone index {self._index_name!r} has dimension {actual}, but the {self._provider.name} "
                f"embedding provider ({self._provider.model}) gives {expected}: use a matching index or provider"
            )

    # ---- writes --------------------------------------------------------------------------------------------------
    def write_intents(self, items: Sequence[UpsertItem]) -> dict[DocumentKey, WriteIntent]:
        """The chunk count of each document (chunking is pure and cheap; no API call). The worker records it before
        ``upsert`` so ``_delete_surplus`` covers every chunk a write with a lost answer may have left."""
        return {
            item.document.key: WriteIntent(
                UNCONFIRMED_INTENT,
                parts=len(document_chunks(item.document, self._chunking)),
                remote_id=item.state.remote_id if item.state is not None else None,
            )
            for item in items
        }

    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        prepared, failed = self._prepare(items)
        for batch in self._batches(prepared):
            self._send(batch)
        outcomes = list(failed)
        for p in prepared:
            if p.error is None:
                self._delete_surplus(p)
            key = p.item.document.key
            if p.error is not None:
                outcomes.append(Outcome(key, OutcomeKind.FAILED, error=p.error, calls=p.calls))
                continue
            state = RemoteState(id_prefix(key), p.content_hash, len(p.vectors))
            outcomes.append(Outcome(key, OutcomeKind.APPLIED, state=state, calls=p.calls))
        return outcomes

    def _prepare(self, items: Sequence[UpsertItem]) -> tuple[list[_Prepared], list[Outcome]]:
        chunked = [(item, document_chunks(item.document, self._chunking)) for item in items]
        texts = [chunk.text for _, chunks in chunked for chunk in chunks]
        try:
            vectors = self._provider.embed(texts)
        except SinkError as embed_error:
            return [], [Outcome(item.document.key, OutcomeKind.FAILED, error=embed_error) for item, _ in chunked]
        if len(vectors) != len(texts):
            short = SinkError(f"embedding returned {len(vectors)} vectors for {len(texts)} chunks", retryable=True)
            return [], [Outcome(item.document.key, OutcomeKind.FAILED, error=short) for item, _ in chunked]
        prepared: list[_Prepared] = []
        failed: list[Outcome] = []
        position = 0
        for item, chunks in chunked:
            document = item.document
            content_hash = document.content_hash()
            entries = []
            try:
                for number, chunk in enumerate(chunks):
                    meta = vector_metadata(
                        document,
                        chunk=number,
                        chunk_count=len(chunks),
                        text=chunk.text,
                        content_hash=content_hash,
                        source=chunk.source,
                    )
                    entries.append(
                        {
                            "id": vector_id(document.key, number),
                            "values": vectors[position + number],
                            "metadata": fit_metadata(meta),
                        }
                    )
            except SinkError as error:
                failed.append(Outcome(document.key, OutcomeKind.FAILED, error=error))
            else:
                prepared.append(_Prepared(item, content_hash, entries))
            position += len(chunks)
        return prepared, failed

    def _batches(self, prepared: list[_Prepared]) -> Iterator[list[tuple[_Prepared, list[dict[str, Any]]]]]:
        """Requests within the vector-count and byte limits; a document's vectors stay together unless they alone
        exceed one request."""
        batch: list[tuple[_Prepared, list[dict[str, Any]]]] = []
        count = size = 0
        for p in prepared:
            sizes = [len(orjson.dumps(v)) + 1 for v in p.vectors]
            if batch and (count + len(p.vectors) > self._max_vectors or size + sum(sizes) > self._max_bytes):
                yield batch
                batch, count, size = [], 0, 0
            part: list[dict[str, Any]] = []
            for vector, vsize in zip(p.vectors, sizes, strict=True):
                if part and (count + 1 > self._max_vectors or size + vsize > self._max_bytes):
                    batch.append((p, part))
                    yield batch
                    batch, part, count, size = [], [], 0, 0
                part.append(vector)
                count += 1
                size += vsize
            batch.append((p, part))
        if batch:
            yield batch

    def _send(self, batch: list[tuple[_Prepared, list[dict[str, Any]]]]) -> None:
        for p, _ in batch:
            if p.error is None and not p.item.held():
                p.error = LeaseLostError(p.item.document.key)  # the fence: never write a row we no longer hold
        live = [(p, vs) for p, vs in batch if p.error is None]
        if not live:
            return
        error = self._upsert_vectors([v for _, vs in live for v in vs], live)
        if error is None:
            return
        if error.retryable or len({id(p) for p, _ in live}) == 1:
            for p, _ in live:
                p.error = error
            return
        # A permanent error in a request that carried several documents: send each alone, so one bad document
        # is dead-lettered and the others are written.
        for p, vs in live:
            p.error = self._upsert_vectors(vs, [(p, vs)])

    def _upsert_vectors(
        self, vectors: list[dict[str, Any]], owners: list[tuple[_Prepared, list[dict[str, Any]]]]
    ) -> SinkError | None:
        for p in {id(p): p for p, _ in owners}.values():
            p.calls += 1
        try:
            self._index.upsert(vectors=vectors, namespace=self._namespace)
        except SDK_ERRORS as error:
            return map_pinecone_error(error, f"upsert of {len(vectors)} vectors")
        return None

    def _delete_surplus(self, p: _Prepared) -> None:
        key = p.item.document.key
        keep = {v["id"] for v in p.vectors}
        state = p.item.state
        try:
            if state is not None:
                # The recorded count is at least every count ever attempted since the last confirmed write: the
                # worker records each write's chunk count as an intent before the write (``write_intents``).
                old = {vector_id(key, n) for n in range(state.chunk_count)}
            else:
                # No record of earlier writes (first write, or the state was lost): ask the index.
                p.calls += 1
                old = set(self._list_ids(id_prefix(key), p))
            surplus = sorted(old - keep)
            for start in range(0, len(surplus), MAX_IDS_PER_DELETE):
                if not p.item.held():
                    p.error = LeaseLostError(key)
                    return
                p.calls += 1
                self._index.delete(ids=surplus[start : start + MAX_IDS_PER_DELETE], namespace=self._namespace)
        except SDK_ERRORS as error:
            p.error = map_pinecone_error(error, f"delete surplus chunks of {key}")

    def _list_ids(self, prefix: str, p: _Prepared | None = None) -> list[str]:
        ids: list[str] = []
        for number, page in enumerate(self._index.list(prefix=prefix, namespace=self._namespace)):
            if p is not None and number:
                p.calls += 1
            ids.extend(item.id for item in page.vectors if item.id)
        return ids

    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for item in items:
            calls = 1
            try:
                ids = set(self._list_ids(id_prefix(item.key)))
                if item.state is not None:
                    ids |= {vector_id(item.key, n) for n in range(item.state.chunk_count)}
                ordered = sorted(ids)
                if ordered and not item.held():
                    outcomes.append(lease_lost(item.key))
                    continue
                for start in range(0, len(ordered), MAX_IDS_PER_DELETE):
                    calls += 1
                    self._index.delete(ids=ordered[start : start + MAX_IDS_PER_DELETE], namespace=self._namespace)
            except SDK_ERRORS as error:
                outcomes.append(
                    Outcome(
                        item.key, OutcomeKind.FAILED, error=map_pinecone_error(error, f"delete {item.key}"), calls=calls
                    )
                )
                continue
            outcomes.append(Outcome(item.key, OutcomeKind.DELETED, calls=calls))
        return outcomes

    # ---- retrieval -----------------------------------------------------------------------------------------------
    def query(
        self,
        vector: Sequence[float],
        *,
        top_k: int,
        filter: dict[str, Any] | None = None,
        include_metadata: bool = True,
    ) -> list[VectorMatch]:
        """Nearest chunks to ``vector`` in this sink's namespace, best first, with their metadata (or without, for
        a large ``top_k``: a query answer is capped at 4 MB; ``fetch_metadata`` then reads what is needed)."""
        try:
            response = self._index.query(
                vector=list(vector),
                top_k=top_k,
                include_metadata=include_metadata,
                include_values=False,
                filter=filter,
                namespace=self._namespace,
            )
        except SDK_ERRORS as error:
            raise map_pinecone_error(error, "query") from error
        return [VectorMatch(m.id, float(m.score), dict(m.metadata or {})) for m in response.matches]

    def fetch_metadata(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The metadata of each of ``ids`` that exists, read in batches whose answers stay small (values and up
        to 40 KB of metadata per record)."""
        return self._fetch_metadata(list(ids))

    # ---- verify --------------------------------------------------------------------------------------------------
    def inventory(self) -> Iterator[RemoteDocument]:
        """One ``RemoteDocument`` per document and content hash found in its chunks' metadata: a document whose
        chunks disagree (a half-applied shrink, leftovers of an older version) appears once per hash, and one with
        missing chunks has ``content_hash=None`` so it never looks in sync."""
        for entity in ENTITIES:
            ids = self._read(functools.partial(self._list_ids, f"{entity}:"), f"list {entity} vectors")
            by_doc: dict[DocumentKey, list[str]] = defaultdict(list)
            for vid in ids:
                key = key_of_vector_id(vid)
                if key is not None:
                    by_doc[key].append(vid)
            keys = sorted(by_doc)
            for start in range(0, len(keys), max(1, FETCH_BATCH // 4)):
                group = keys[start : start + max(1, FETCH_BATCH // 4)]
                metadata = self._fetch_metadata([vid for key in group for vid in by_doc[key]])
                for key in group:
                    yield from _remote_documents(key, {vid: metadata.get(vid, {}) for vid in by_doc[key]})

    def inventory_of(self, keys: Collection[DocumentKey]) -> Iterator[RemoteDocument]:
        """``inventory`` for a few documents: one listing by each document's id prefix, then their metadata (for
        many documents, one pass over the whole namespace is cheaper)."""
        wanted = sorted(set(keys))
        if len(wanted) > 200:
            yield from super().inventory_of(wanted)
            return
        by_doc = {
            key: self._read(functools.partial(self._list_ids, id_prefix(key)), f"list vectors of {key}")
            for key in wanted
        }
        metadata = self._fetch_metadata([vid for ids in by_doc.values() for vid in ids])
        for key, ids in by_doc.items():
            if ids:
                yield from _remote_documents(key, {vid: metadata.get(vid, {}) for vid in ids})

    def settle_reads(self) -> None:
        """Wait until list and query reflect every write made before this call, as Pinecone's "check data
        freshness" guide says (https://docs.pinecone.io/guides/index-data/check-data-freshness): a write answers
        with the log sequence number it committed at (``x-pinecone-request-lsn``), a list or query answer with the
        newest one it reflects (``x-pinecone-max-indexed-lsn``). Only a write tells the current position, so a
        probe record is upserted (and deleted again afterwards); then a one-id listing is polled until it has
        caught up, for at most ``freshness_timeout_s`` (then a warning, and ``verify`` re-checks what it finds). A
        probe that cannot be written (a read-only key) leaves freshness unknown: a warning, no error."""
        dimension = self._provider.dimension
        probe = {
            "id": FRESHNESS_PROBE_ID,
            "values": [1.0] + [0.0] * (dimension - 1),
            "metadata": {"entity": "freshness-probe"},
        }
        upsert = functools.partial(self._index.upsert, vectors=[probe], namespace=self._namespace)
        try:
            written = self._read(upsert, "freshness probe")  # idempotent, so retried like a read
        except SinkError as error:
            # E.g. a read-only API key: freshness stays unknown, and verify's re-check still applies.
            log.warning("pinecone.freshness_unknown", index=self._index_name, error=str(error))
            return
        info = getattr(written, "response_info", None)
        target = info.lsn_committed if info is not None else None
        deadline = self._clock() + self._freshness_timeout_s
        reached: int | None = None
        try:
            while target is not None:
                listing = functools.partial(
                    self._index.list_paginated, prefix=FRESHNESS_PROBE_ID, limit=1, namespace=self._namespace
                )
                page = self._read(listing, "freshness check")
                page_info = getattr(page, "response_info", None)
                reached = page_info.lsn_reconciled if page_info is not None else None
                if reached is None or reached >= target:
                    break
                if self._clock() >= deadline:
                    log.warning(
                        "pinecone.reads_not_settled", index=self._index_name, target_lsn=target,
                        reconciled_lsn=reached, waited_s=self._freshness_timeout_s,
                    )  # fmt: skip
                    return
                self._sleep(FRESHNESS_POLL_S)
            log.info("pinecone.reads_settled", index=self._index_name, target_lsn=target, reconciled_lsn=reached)
        finally:
            with contextlib.suppress(*SDK_ERRORS):
                self._index.delete(ids=[FRESHNESS_PROBE_ID], namespace=self._namespace)

    def _read(self, call: Callable[[], T], doing: str) -> T:
        """A read call, retried on retryable failures with the replicator's backoff policy."""

        def mapped() -> T:
            try:
                return call()
            except SDK_ERRORS as error:
                raise map_pinecone_error(error, doing) from error

        return retry_reads(mapped, policy=self._read_policy, attempts=self._read_attempts, sleep=self._sleep)

    def _fetch_batch(self) -> int:
        """Ids per fetch, so that an answer of full-size records stays within ``MAX_FETCH_ANSWER_BYTES``."""
        per_record = self._provider.dimension * 24 + MAX_METADATA_BYTES
        return max(1, min(FETCH_BATCH, MAX_FETCH_ANSWER_BYTES // per_record))

    def _fetch_metadata(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        step = self._fetch_batch()
        for start in range(0, len(ids), step):
            batch = ids[start : start + step]
            fetch = functools.partial(self._index.fetch, ids=batch, namespace=self._namespace)
            response = self._read(fetch, f"fetch {len(batch)} vectors")
            for vid, vector in response.vectors.items():
                out[vid] = dict(vector.metadata or {})
        return out

    def close(self) -> None:
        self._index.close()
        self._provider.close()
        if self._control is not None:
            self._control.close()


def _remote_documents(key: DocumentKey, chunks: dict[str, dict[str, Any]]) -> Iterable[RemoteDocument]:
    by_hash: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for meta in chunks.values():
        raw = meta.get("content_hash")
        by_hash[raw if isinstance(raw, str) else None].append(meta)
    for content_hash, metas in sorted(by_hash.items(), key=lambda kv: kv[0] or ""):
        numbers = {int(m["chunk"]) for m in metas if isinstance(m.get("chunk"), int | float)}
        counts = {int(m["chunk_count"]) for m in metas if isinstance(m.get("chunk_count"), int | float)}
        complete = len(counts) == 1 and numbers == set(range(counts.pop()))
        yield RemoteDocument(key, id_prefix(key), content_hash if complete else None)
