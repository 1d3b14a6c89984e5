"""The sink interface. A sink applies a batch of rendered documents and deletes keys, returning one outcome per
item; it never raises for one document's failure. SDK and HTTP exceptions are mapped to ``SinkError`` (retryable
or permanent) at the sink's edge and never escape its module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from replicator.documents import Document, DocumentKey, RemoteState

__all__ = [
    "DeleteItem",
    "Outcome",
    "OutcomeKind",
    "RemoteDocument",
    "RemoteState",
    "Sink",
    "SinkConfigError",
    "SinkError",
    "UpsertItem",
]


class SinkError(Exception):
    """A sink failure. ``retryable`` errors (429, 5xx, timeouts, dropped connections) are retried with backoff,
    honouring ``retry_after``; permanent ones (validation) dead-letter the row at once."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class SinkConfigError(Exception):
    """The sink cannot start: missing settings, a database without the properties it writes, a wrong dimension."""


@dataclass(frozen=True)
class UpsertItem:
    document: Document
    state: RemoteState | None  # None: never written to this sink (or state lost)
    # Remote ids (Notion page ids) of the document's relation targets in this sink, as recorded in its state;
    # filled by the worker for sinks that set ``wants_relation_ids``.
    relation_ids: Mapping[DocumentKey, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeleteItem:
    key: DocumentKey
    state: RemoteState | None


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


@dataclass(frozen=True)
class RemoteDocument:
    """One document as it exists downstream, for ``replicator verify``. ``content_hash`` is the hash the sink
    stored with it (Notion: a property; Pinecone: metadata), so staleness is visible without re-rendering."""

    key: DocumentKey
    remote_id: str
    content_hash: str | None


class Sink(ABC):
    name: str
    # True: the worker hands each UpsertItem the remote ids of its relation targets (Notion relations).
    wants_relation_ids: bool = False

    def document_hash(self, document: Document) -> str:
        """The hash this sink records for ``document`` (the worker skips a document whose hash is unchanged).
        The whole document by default; a sink that writes only part of it hashes only that part."""
        return document.content_hash()

    def check(self) -> None:  # noqa: B027 - optional hook
        """Start-up checks; raise ``SinkConfigError`` with a message that says what to fix."""

    @abstractmethod
    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        """Create or update each document; one outcome per item, in any order."""

    @abstractmethod
    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        """Remove each document downstream; one outcome per item."""

    def inventory(self) -> Iterator[RemoteDocument]:
        """Every document this sink holds downstream (duplicates included: two pages for one key are two items)."""
        raise NotImplementedError(f"sink {self.name!r} cannot list its documents")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""
