"""Group commit in the source: batches handed over while the outbox writer commits are merged into one, which
must confirm the latest commit, keep the latest heartbeat and hold the documents of both."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from replicator.changes import Action
from replicator.documents import DocumentKey
from replicator.routing import DirtyDocuments
from replicator.source.writer import Batch

D1 = "53e9da94-2042-49b3-b652-2046d72c2de7"
D2 = "6ad5cea9-4761-4b9b-a55c-2c3d55b5ca46"


def batch(dataset: str | None, confirm: int | None, beat: str | None, lsn: int) -> Batch:
    dirty = DirtyDocuments()
    if dataset is not None:
        dirty.add_values("dataset", Action.INSERT, (dataset,))
    return Batch(dirty, confirm, beat, lsn, {"dataset": 1} if dataset else {})


class NoLookups:
    def holders(self, feature_ids: Iterable[uuid.UUID]) -> set[DocumentKey]:
        raise AssertionError("no feature renamed: no lookup expected")

    def related_pairs(self, updated: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        raise AssertionError("no entity updated: no lookup expected")


def test_a_merged_batch_confirms_the_later_commit_and_holds_both_batches_documents() -> None:
    merged = batch(D1, 100, "t1", 90).merge(batch(D2, 200, None, 190))
    assert (merged.confirm, merged.heartbeat_seen, merged.lsn) == (200, "t1", 190)
    assert merged.per_table == {"dataset": 2}
    assert merged.dirty.resolve_pairs(NoLookups()) == ({("dataset", D1), ("dataset", D2)}, frozenset())


def test_a_later_piece_of_an_open_transaction_keeps_the_earlier_commit_to_confirm() -> None:
    merged = batch(D1, 100, None, 90).merge(batch(D2, None, "t2", 150))
    assert (merged.confirm, merged.heartbeat_seen, merged.lsn) == (100, "t2", 150)


def test_a_commit_with_nothing_to_write_merged_in_still_moves_the_confirmation() -> None:
    merged = batch(D1, 100, None, 90).merge(batch(None, 300, None, 300))
    assert merged.confirm == 300
    assert len(merged.dirty) == 1
