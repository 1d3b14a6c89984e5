"""The Pinecone sink: each document becomes overlapping text chunks, embedded by the configured provider and
upserted as vectors with deterministic ids (``dataset:<uuid>#0003``) and one metadata schema for every entity.

Spoken through the real ``pinecone`` SDK with the SDK's own retries switched off: the worker keeps the single
retry policy (backoff, ``Retry-After``, dead letters), and SDK exceptions become ``SinkError`` in this module and
nowhere else (``map_pinecone_error``). Requests stay within Pinecone's limits (1,000 vectors and 2 MB per upsert,
40 KB of metadata per vector). When a document shrinks, its surplus chunk ids are deleted up to the count recorded
in ``sink_state``, which the worker raises to this write's chunk count BEFORE the write (``planned_parts``), so an
upsert that was applied but whose answer was lost still leaves a count covering every chunk it wrote; deleting a
document deletes every id under its prefix, found by listing, so a lost ``sink_state`` never leaves vectors behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import orjson
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

from replicator.documents import Document, DocumentKey
from replicator.embedding import EmbeddingProvider
from replicator.graph import ENTITIES
from replicator.logs import event_logger
from replicator.metrics import Metrics, metered
from replicator.retry import BackoffPolicy
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
from replicator.text import SOURCE_NOTION, SOURCE_POSTGRES, ChunkPolicy, document_chunks

if TYPE_CHECKING:
    from pinecone import Index

    from replicator.config import Settings

T = TypeVar("T")
log = event_logger("replicator.pinecone")

MAX_VECTORS_PER_UPSERT = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_IDS_PER_DELETE = 1000
FETCH_BATCH = 100
# A fetch answer carries each record's values and metadata; batches are sized to stay within this, far below the
# 4 MB a query answer may be (https://docs.pinecone.io/reference/api/database-limits/operation-limits).
MAX_FETCH_ANSWER_BYTES = 2 * 1024 * 1024
# The share of the 40 KB metadata that related ids (``program_ids`` …) may take together; the rest is for the
# chunk text and the filter fields. A list beyond its share is cut visibly: ``<key>_count`` holds the full count
# and ``<key>_truncated`` is true (the full set stays in Postgres and in the document text).
RELATION_IDS_BUDGET = 16 * 1024
# Room for the request envelope and for the SDK serialising floats a little longer than we measure them.
_REQUEST_MARGIN = 64 * 1024

# The SDK retries 408/429/5xx and transport errors by default; one policy (the worker's) is enough.
NO_SDK_RETRIES = RetryConfig(max_retries=0)

# Metadata fields a filter can use, per entity: Postgres column → metadata key. Scalars become strings, arrays
# become lists of strings; null and empty values are dropped (Pinecone stores no nulls).
_FILTER_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "dataset": (
        ("omics_type", "omics_type"),
        ("disease", "disease"),
        ("organism", "organism"),
        ("sample_type", "sample_type"),
        ("matrix", "matrix"),
        ("model_systems", "model_systems"),
        ("data_origin", "data_origin"),
    ),
    "signature": (
        ("modalities", "modalities"),
        ("biomarker_role", "biomarker_role"),
        ("phenotype_axes", "phenotype_axes"),
    ),
    "program": (("disease", "disease"),),
    "experiment": (
        ("type", "experiment_type"),
        ("disease", "disease"),
        ("matrix", "matrix"),
        ("model_systems", "model_systems"),
        ("targets", "targets"),
        ("modality", "modality"),
        ("stage", "stage"),
    ),
}
# Keys whose values are lists of strings (a query filter on them uses $in).
LIST_METADATA_KEYS = frozenset(
    {
        "disease",
        "organism",
        "sample_type",
        "matrix",
        "model_systems",
        "modalities",
        "biomarker_role",
        "phenotype_axes",
        "targets",
        "modality",
        "program_ids",
        "experiment_ids",
        "dataset_ids",
        "signature_ids",
    }
)


# ---- the SDK's edge ----------------------------------------------------------------------------------------------


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


_SDK_ERRORS = (PineconeError, httpx.TransportError)


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
    the SDK's retries off. The REST data-plane client takes no retry setting (pinecone 10.2 applies ``retry_config``
    to the control plane and gRPC only), so its HTTP client is rebuilt with ``NO_SDK_RETRIES``; a test checks that
    a 429 reaches us after exactly one request."""
    try:
        index = pc.index(name=index_name if not index_host else "", host=index_host or "")
    except NotFoundError as error:
        raise SinkConfigError(
            f"Pinecone index {index_name!r} does not exist: run `replicator pinecone init`"
        ) from error
    except _SDK_ERRORS as error:
        raise map_pinecone_error(error, f"describe index {index_name!r}") from error
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
    except _SDK_ERRORS as error:
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
        try:
            model = pc.describe_index(index_name)
        except NotFoundError as error:
            raise SinkConfigError(
                f"Pinecone index {index_name!r} does not exist: run `replicator pinecone init`"
            ) from error
        except _SDK_ERRORS as error:
            raise map_pinecone_error(error, f"describe index {index_name!r}") from error
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
    except _SDK_ERRORS as error:
        raise map_pinecone_error(error, f"create index {index_name!r}") from error
    wait_until_ready(pc, index_name, timeout_s=ready_timeout_s, on_wait=on_wait, sleep=sleep)
    return InitResult(index_name, True, dimension, _host(pc, index_name))


def _host(pc: Pinecone, index_name: str) -> str | None:
    try:
        return pc.describe_index(index_name).host
    except _SDK_ERRORS as error:
        raise map_pinecone_error(error, f"describe index {index_name!r}") from error


# ---- ids and metadata --------------------------------------------------------------------------------------------


def id_prefix(key: DocumentKey) -> str:
    return f"{key.entity}:{key.id}#"


def vector_id(key: DocumentKey, chunk: int) -> str:
    return f"{id_prefix(key)}{chunk:04d}"


def key_of_vector_id(vector_id_: str) -> DocumentKey | None:
    """The document a vector id belongs to, or ``None`` for an id that is not ours."""
    head, sep, chunk = vector_id_.rpartition("#")
    entity, colon, raw = head.partition(":")
    if not sep or not colon or entity not in ENTITIES or not chunk.isdigit():
        return None
    try:
        return DocumentKey(entity, uuid.UUID(raw))
    except ValueError:
        return None


def vector_metadata(
    document: Document,
    *,
    chunk: int,
    chunk_count: int,
    text: str,
    content_hash: str,
    source: str = SOURCE_POSTGRES,
) -> dict[str, Any]:
    """The one metadata schema: entity, postgres_id, name, chunk, chunk_count, text, content_hash, ``source``
    (``postgres``: the structured document; ``notion``: the narrative people wrote on its page, with
    ``notion_page_id``, ``notion_url``, ``last_edited_time`` and ``last_edited_by``), then the entity's filterable
    fields and related ids (``program_ids`` …) as lists of strings."""
    meta: dict[str, Any] = {
        "entity": document.key.entity,
        "postgres_id": str(document.key.id),
        "name": document.name,
        "chunk": chunk,
        "chunk_count": chunk_count,
        "content_hash": content_hash,
        "text": text,
        "source": source,
    }
    narrative = document.narrative
    if source == SOURCE_NOTION and narrative is not None:
        meta["notion_page_id"] = narrative.notion_page_id
        for name, found in (
            ("notion_url", narrative.notion_url),
            ("last_edited_time", narrative.last_edited_time),
            ("last_edited_by", narrative.last_edited_by),
        ):
            if found:
                meta[name] = found
    for column, meta_key in _FILTER_FIELDS.get(document.key.entity, ()):
        value = _metadata_value(document.fields.get(column))
        if value is not None:
            meta[meta_key] = value
    related: dict[str, set[str]] = defaultdict(set)
    for key in document.relation_keys():
        related[f"{key.entity}_ids"].add(str(key.id))
    for match in document.signature_matches:
        related[f"{match.other.entity}_ids"].add(str(match.other.id))
    meta.update(budget_id_lists({k: sorted(v) for k, v in related.items() if v}))
    return meta


def budget_id_lists(lists: dict[str, list[str]], budget: int = RELATION_IDS_BUDGET) -> dict[str, Any]:
    """The id lists within ``budget`` bytes of JSON together, shared fairly (a short list keeps all of its ids,
    the long ones share what is left). A list that was cut keeps its first ids in sorted order and gains
    ``<key>_count`` (how many there are) and ``<key>_truncated: true``, so a reader sees the list is partial."""
    out: dict[str, Any] = {}
    remaining = budget
    ordered = sorted(lists.items(), key=lambda kv: (_json_size(kv[1]), kv[0]))
    for position, (key, ids) in enumerate(ordered):
        share = remaining // (len(ordered) - position)
        if _json_size(ids) <= share:
            out[key] = ids
            remaining -= _json_size(ids)
            continue
        kept: list[str] = []
        size = 2  # the brackets
        for item in ids:
            cost = len(orjson.dumps(item)) + 1
            if size + cost > share - 64:  # room for the count and the marker fields
                break
            kept.append(item)
            size += cost
        out[key] = kept
        out[f"{key}_count"] = len(ids)
        out[f"{key}_truncated"] = True
        remaining -= size + 64
    return out


def _json_size(value: Any) -> int:
    return len(orjson.dumps(value))


def _metadata_value(value: Any) -> str | list[str] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple | set):
        items = sorted({str(v) for v in value if v not in (None, "")})
        return items or None
    if isinstance(value, dict):
        return None  # JSON objects (external ids) are not filterable in Pinecone metadata
    text = str(value)
    return text or None


def fit_metadata(meta: dict[str, Any], limit: int = MAX_METADATA_BYTES) -> dict[str, Any]:
    """Shorten ``text`` (whole characters, never a split UTF-8 sequence) until the metadata fits ``limit``."""
    size = len(orjson.dumps(meta))
    if size <= limit:
        return meta
    text: str = meta["text"]
    rest = size - len(text.encode())
    budget = limit - rest - 16  # the ellipsis and quoting
    if budget <= 1024:
        # The other fields alone leave too little room (filter lists of thousands of values): cut the largest list
        # in half, visibly, until the text has at least 1 KB; never a permanent error for size.
        lists = {k: v for k, v in meta.items() if isinstance(v, list) and v}
        if not lists:
            raise SinkError(
                f"metadata of {meta['entity']}:{meta['postgres_id']} exceeds {limit} bytes", retryable=False
            )
        key = max(lists, key=lambda k: _json_size(lists[k]))
        values = lists[key]
        cut = dict(meta)
        cut[key] = values[: len(values) // 2]
        cut[f"{key}_count"] = meta.get(f"{key}_count", len(values))
        cut[f"{key}_truncated"] = True
        return fit_metadata(cut, limit)
    encoded = text.encode()[:budget]
    short = encoded.decode("utf-8", errors="ignore").rstrip() + " …"
    out = dict(meta, text=short)
    while len(orjson.dumps(out)) > limit:  # escapes can make JSON longer than the raw bytes
        short = short[: max(0, len(short) - 256)]
        out = dict(meta, text=short + " …")
    return out


# The id of the freshness probe ``settle_reads`` writes (not a document id: no ``entity:`` prefix, so inventory,
# query and verify never take it for a document).
FRESHNESS_PROBE_ID = "replicator-freshness-probe"
FRESHNESS_POLL_S = 0.25

# ---- the sink ----------------------------------------------------------------------------------------------------


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
        read_policy: BackoffPolicy | None = None,
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
        self._read_policy = read_policy or BackoffPolicy()
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
            except _SDK_ERRORS as error:
                raise map_pinecone_error(error, "describe index stats") from error
        if actual != expected:
            raise SinkConfigError(
                f"Pinecone index {self._index_name!r} has dimension {actual}, but the {self._provider.name} "
                f"embedding provider ({self._provider.model}) gives {expected}: use a matching index or provider"
            )

    # ---- writes --------------------------------------------------------------------------------------------------
    def planned_parts(self, items: Sequence[UpsertItem]) -> dict[DocumentKey, int]:
        """The chunk count of each document (chunking is pure and cheap; no API call). The worker records it before
        ``upsert`` so ``_delete_surplus`` covers every chunk a write with a lost answer may have left."""
        return {item.document.key: len(document_chunks(item.document, self._chunking)) for item in items}

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
        except _SDK_ERRORS as error:
            return map_pinecone_error(error, f"upsert of {len(vectors)} vectors")
        return None

    def _delete_surplus(self, p: _Prepared) -> None:
        key = p.item.document.key
        keep = {v["id"] for v in p.vectors}
        state = p.item.state
        try:
            if state is not None:
                # The recorded count is at least every count ever attempted since the last confirmed write: the
                # worker records each write's chunk count as an intent before the write (``planned_parts``).
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
        except _SDK_ERRORS as error:
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
            except _SDK_ERRORS as error:
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
        except _SDK_ERRORS as error:
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
            with contextlib.suppress(*_SDK_ERRORS):
                self._index.delete(ids=[FRESHNESS_PROBE_ID], namespace=self._namespace)

    def _read(self, call: Callable[[], T], doing: str) -> T:
        """A read call, retried on retryable failures with the replicator's backoff policy."""

        def mapped() -> T:
            try:
                return call()
            except _SDK_ERRORS as error:
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


# ---- wiring ------------------------------------------------------------------------------------------------------


def build_pinecone_sink(
    settings: Settings, provider: EmbeddingProvider | None = None, *, metrics: Metrics | None = None
) -> PineconeSink:
    """The sink from settings: ``PINECONE_API_KEY``, ``PINECONE_CONTROLLER_HOST``, ``PINECONE_INDEX``,
    ``PINECONE_INDEX_HOST`` (else found through the control plane), ``PINECONE_NAMESPACE``, and the embedding
    provider named by ``EMBEDDING_PROVIDER`` (its texts and call times counted in ``metrics`` when given)."""
    from replicator.embedding import build_provider

    if settings.pinecone_api_key is None:
        raise SinkConfigError("the pinecone sink needs PINECONE_API_KEY")
    policy = BackoffPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_max_s)
    pc = connect(settings.pinecone_api_key.get_secret_value(), settings.pinecone_controller_host)
    retry_reads(
        lambda: wait_until_ready(pc, settings.pinecone_index, timeout_s=settings.pinecone_index_ready_timeout_s),
        policy=policy,
        attempts=6,
    )
    index = retry_reads(
        lambda: open_index(pc, settings.pinecone_index, settings.pinecone_index_host), policy=policy, attempts=6
    )
    return PineconeSink(
        index=index,
        provider=metered(provider or build_provider(settings), metrics),
        namespace=settings.pinecone_namespace,
        index_name=settings.pinecone_index,
        control=pc,
        read_policy=policy,
        freshness_timeout_s=settings.pinecone_freshness_timeout_s,
    )


def retry_reads(
    call: Callable[[], T], *, policy: BackoffPolicy, attempts: int, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Run a read-only call (describe, list, fetch), retrying retryable ``SinkError``s under ``policy``. Writes are
    retried by ``RetryingSink`` around ``upsert``/``delete``; reads made outside it (start-up, ``inventory``) use
    this, so they follow the same backoff policy."""
    attempt = 1
    while True:
        try:
            return call()
        except SinkError as error:
            if not error.retryable or attempt >= attempts:
                raise
            sleep(policy.delay(attempt, error.retry_after))
            attempt += 1
