"""The sink interface. A sink applies a batch of rendered documents and deletes keys, returning one outcome per
item; it never raises for one document's failure. SDK and HTTP exceptions are mapped to ``SinkError`` (retryable
or permanent) at the sink's edge and never escape its module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from replicator.documents import INTENT_PREFIX, Document, DocumentKey, RemoteState, WriteIntent
from replicator.errors import ConfigurationError, ReplicatorError

__all__ = [
    "INTENT_PREFIX",
    "DeleteItem",
    "LeaseLostError",
    "Outcome",
    "OutcomeKind",
    "RemoteDocument",
    "RemoteState",
    "Sink",
    "SinkConfigError",
    "SinkError",
    "SinkSchemaError",
    "UpsertItem",
    "WriteIntent",
    "always_held",
    "lease_lost",
]


class SinkError(ReplicatorError):
    """A sink failure. ``retryable`` errors (429, 5xx, timeouts, dropped connections) are retried with backoff,
    honouring ``retry_after``; permanent ones (validation) dead-letter the row at once.

    ``sink_wide``: the failure is the sink's, not the document's (a Notion database that is gone, a configuration
    that broke while running). The worker then never dead-letters the row: it puts it back without counting an
    attempt, marks the sink down and re-checks it (``check()``) with backoff until it answers again."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None, sink_wide: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable  # per instance: the same call can fail either way
        self.retry_after = retry_after
        self.sink_wide = sink_wide


class SinkSchemaError(SinkError):
    """The downstream schema lacks what the sink writes for ``entity`` (a property a person renamed or deleted):
    the document WAITS (a ``DEFERRED`` outcome that never runs out of time) until the schema is fixed, and
    ``status`` / ``health`` show ``problem``, which names the property and the command that fixes it."""

    def __init__(self, message: str, *, entity: str) -> None:
        super().__init__(message, retryable=True)
        self.entity = entity


class SinkConfigError(ConfigurationError):
    """The sink cannot start: missing settings, a database without the properties it writes, a wrong dimension."""


def always_held() -> bool:
    return True


@dataclass(frozen=True)
class UpsertItem:
    document: Document
    state: RemoteState | None  # None: never written to this sink (or state lost)
    # Remote ids (Notion page ids) of the document's relation targets in this sink, as recorded in its state;
    # filled by the worker for sinks that set ``wants_relation_ids``.
    relation_ids: Mapping[DocumentKey, str] = field(default_factory=dict)
    # Records a ``WriteIntent`` of this document at once, in its own transaction (the worker's one
    # record-before-write, the same as for ``Sink.write_intents``): a sink calls it right BEFORE a write whose
    # answer may be lost and whose intent it can only know then (Notion: a page create, with the moment by which
    # the page must show in queries), so a retry — in this process or another, after a crash — knows a page may
    # exist that a lagging query does not show yet.
    record_intent: Callable[[WriteIntent], None] | None = field(default=None, compare=False)
    # The worker's lease on this document: False once it is lost (or about to run out unrenewed). A sink calls it
    # right before each write request that carries the document and leaves the document out when it is False
    # (outcome FAILED, retryable: the worker that holds the row now writes it).
    held: Callable[[], bool] = field(default=always_held, compare=False, repr=False)
    # Rewrite even if the sink's own record says the remote copy is current (``replicator resync --force``, a
    # ``verify --repair`` of a missing or stale document): the remote copy may be gone although our records say
    # otherwise. A sink with a hash check of its own (Notion's cache, its content-hash property) skips it.
    force: bool = False


@dataclass(frozen=True)
class DeleteItem:
    key: DocumentKey
    state: RemoteState | None
    held: Callable[[], bool] = field(default=always_held, compare=False, repr=False)
    # The document still exists but fell outside the sink's scope (a narrowed REPLICATOR_SCOPE_*, #14): a sink
    # whose copies hold what people wrote (Notion's pages) keeps a copy that does, instead of removing it.
    out_of_scope: bool = False


class OutcomeKind(Enum):
    APPLIED = "applied"  # written; ``state`` is the new RemoteState to record
    DELETED = "deleted"  # removed downstream (or was never there); forget the sink_state row
    DEFERRED = "deferred"  # not written yet, for a reason that will pass (e.g. relation targets have no page)
    FAILED = "failed"  # ``error`` says why; retryable or not


@dataclass(frozen=True)
class Outcome:
    key: DocumentKey
    kind: OutcomeKind
    state: RemoteState | None = None
    error: SinkError | None = None
    calls: int = 0  # API calls this item cost (metrics, benchmarks)
    duplicates: int = 0  # extra downstream copies of this document the sink found (and removed or reported)


class LeaseLostError(SinkError):
    """The document was left out because the worker's lease on it is gone (``UpsertItem.held`` said False)."""

    def __init__(self, key: DocumentKey) -> None:
        super().__init__(f"{key}: the worker's lease on this row ran out or was taken; not written", retryable=True)


def lease_lost(key: DocumentKey) -> Outcome:
    """The outcome of a document left out because the worker's lease on it is gone."""
    return Outcome(key, OutcomeKind.FAILED, error=LeaseLostError(key))


@dataclass(frozen=True)
class RemoteDocument:
    """One document as it exists downstream, for ``replicator verify``. ``content_hash`` is the hash the sink
    stored with it (Notion: a property; Pinecone: metadata), so staleness is visible without re-rendering."""

    key: DocumentKey
    remote_id: str
    content_hash: str | None


class Sink(ABC):
    name: str
    # The command that fixes a configuration this sink reports with ``SinkConfigError`` (shown by `status` and
    # `health` while the sink is down for it); None: the generic advice.
    fix_command: str | None = None
    # True: the worker hands each UpsertItem the remote ids of its relation targets (Notion relations).
    wants_relation_ids: bool = False

    def document_hash(self, document: Document) -> str:
        """The hash this sink records for ``document`` (the worker skips a document whose hash is unchanged).
        The whole document by default; a sink that writes only part of it hashes only that part."""
        return document.content_hash()

    def check(self) -> None:  # noqa: B027 - optional hook
        """Start-up checks; raise ``SinkConfigError`` with a message that says what to fix."""

    def write_intents(self, items: Sequence[UpsertItem]) -> dict[DocumentKey, WriteIntent]:
        """The ``WriteIntent`` of each document that this sink knows before the pass (Pinecone: how many chunks
        each will have, for a sink that cleans up surplus parts by their recorded count). The worker records them
        in one transaction BEFORE ``upsert``, so a write whose answer is lost (or a worker killed right after it)
        can never leave parts that the recorded count does not cover. Must be cheap and make no API call. An
        intent known only right before a call goes through ``UpsertItem.record_intent``. Default: none."""
        return {}

    @abstractmethod
    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        """Create or update each document; one outcome per item, in any order."""

    @abstractmethod
    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        """Remove each document downstream; one outcome per item."""

    def inventory(self) -> Iterator[RemoteDocument]:
        """Every document this sink holds downstream (duplicates included: two pages for one key are two items)."""
        raise NotImplementedError(f"sink {self.name!r} cannot list its documents")

    def fetch(self, remote_ids: Sequence[str]) -> dict[str, RemoteDocument | None] | None:
        """Read these remote documents by id, bypassing any lagging list or query (``verify`` re-checks what its
        inventory showed as drifted): id → the document, or None when it is gone or in the trash. None when
        the sink cannot read by id (then ``verify`` reports the inventory as it is)."""
        return None

    def inventory_of(self, keys: Collection[DocumentKey]) -> Iterator[RemoteDocument]:
        """What ``inventory`` says of ``keys`` only (``verify`` re-checks drift with it); sinks that can look
        documents up one by one override this cheaper default."""
        wanted = set(keys)
        return (item for item in self.inventory() if item.key in wanted)

    def settle_reads(self) -> None:  # noqa: B027 - optional hook
        """Wait until this sink's reads reflect every write acknowledged before the call, where the service says
        how far its reads have caught up (Pinecone's log sequence numbers). ``verify`` calls it before reading."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""
