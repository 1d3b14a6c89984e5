"""Routing changes to the documents they dirty, with no database: feature holders come from a stub lookup."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pytest

from replicator.changes import Action, Change
from replicator.documents import DocumentKey
from replicator.graph import ENTITIES
from replicator.routing import PARENTS, ROUTE_COLUMNS, DirtyDocuments, Routed, route, truncated_entities

D1, D2, S1, P1, E1, F1, F2 = (uuid.uuid4() for _ in range(7))


def row(table: str, action: Action = Action.INSERT, **key: Any) -> Change:
    return Change(action, 1, schema="public", table=table, key={k: str(v) for k, v in key.items()})


class Holders:
    def __init__(
        self,
        table: dict[uuid.UUID, set[DocumentKey]],
        links: dict[DocumentKey, set[DocumentKey]] | None = None,
    ) -> None:
        self.table = table
        self.links = links or {}
        self.calls: list[set[uuid.UUID]] = []
        self.related_calls: list[set[DocumentKey]] = []

    def holders(self, feature_ids: Iterable[uuid.UUID]) -> set[DocumentKey]:
        ids = set(feature_ids)
        self.calls.append(ids)
        return set().union(*(self.table.get(f, set()) for f in ids))

    def related_pairs(self, updated: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = {DocumentKey(entity, uuid.UUID(value)) for entity, value in updated}
        self.related_calls.append(wanted)
        return {(k.entity, str(k.id)) for k in set().union(*(self.links.get(k, set()) for k in wanted))}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (row("dataset", id=D1), {DocumentKey("dataset", D1)}),
        (row("program", Action.DELETE, id=P1), {DocumentKey("program", P1)}),
        (row("dataset_feature", dataset_id=D1, feature_id=F1), {DocumentKey("dataset", D1)}),
        (
            row("dataset_signature", Action.UPDATE, dataset_id=D1, signature_id=S1),
            {DocumentKey("dataset", D1), DocumentKey("signature", S1)},
        ),
        (row("signature_component", signature_id=S1, feature_id=F1), {DocumentKey("signature", S1)}),
        (
            row("program_dataset", Action.DELETE, program_id=P1, dataset_id=D1),
            {DocumentKey("program", P1), DocumentKey("dataset", D1)},
        ),
        (
            row("program_experiment", program_id=P1, experiment_id=E1),
            {DocumentKey("program", P1), DocumentKey("experiment", E1)},
        ),
        (
            row("experiment_dataset", experiment_id=E1, dataset_id=D1),
            {DocumentKey("experiment", E1), DocumentKey("dataset", D1)},
        ),
        (
            row("program_signature", program_id=P1, signature_id=S1),
            {DocumentKey("program", P1), DocumentKey("signature", S1)},
        ),
        (row("feature", Action.INSERT, id=F1), set()),
        (row("feature", Action.DELETE, id=F1), set()),
    ],
)
def test_each_table_dirties_its_documents(change: Change, expected: set[DocumentKey]) -> None:
    assert route(change).keys == expected


def test_a_renamed_feature_dirties_every_dataset_and_signature_holding_it_in_one_lookup() -> None:
    lookup = Holders({F1: {DocumentKey("dataset", D1), DocumentKey("signature", S1)}, F2: {DocumentKey("dataset", D2)}})
    dirty = DirtyDocuments()
    for feature in (F1, F2, F1):
        dirty.add(row("feature", Action.UPDATE, id=feature))
    batch = dirty.resolve(lookup)
    assert batch.keys == {DocumentKey("dataset", D1), DocumentKey("signature", S1), DocumentKey("dataset", D2)}
    assert lookup.calls == [{F1, F2}]


def test_an_updated_entity_dirties_the_documents_that_show_its_name_in_one_lookup() -> None:
    program, dataset, signature = DocumentKey("program", P1), DocumentKey("dataset", D1), DocumentKey("signature", S1)
    lookup = Holders({}, {program: {dataset, signature}, DocumentKey("dataset", D2): {program}})
    dirty = DirtyDocuments()
    dirty.add(row("program", Action.UPDATE, id=P1))
    dirty.add(row("dataset", Action.UPDATE, id=D2))
    dirty.add(row("program", Action.INSERT, id=P1))
    batch = dirty.resolve(lookup)
    assert batch.keys == {program, dataset, signature, DocumentKey("dataset", D2)}
    assert lookup.related_calls == [{program, DocumentKey("dataset", D2)}]


def test_inserted_and_deleted_entities_need_no_neighbour_lookup() -> None:
    lookup = Holders({})
    dirty = DirtyDocuments()
    dirty.add(row("program", Action.INSERT, id=P1))
    dirty.add(row("dataset", Action.DELETE, id=D1))
    assert dirty.resolve(lookup).keys == {DocumentKey("program", P1), DocumentKey("dataset", D1)}
    assert lookup.related_calls == []


def test_many_changes_to_one_document_coalesce_into_one_key() -> None:
    dirty = DirtyDocuments()
    for _ in range(10_000):
        dirty.add(row("dataset_feature", dataset_id=D1, feature_id=uuid.uuid4()))
    assert len(dirty) == 1
    assert dirty.resolve(Holders({})).keys == {DocumentKey("dataset", D1)}


def test_a_truncate_dirties_whole_entities_of_the_table_and_its_parents() -> None:
    assert route(Change(Action.TRUNCATE, 1, schema="public", table="dataset")).whole_entities == {"dataset"}
    assert route(Change(Action.TRUNCATE, 1, schema="public", table="program_dataset")).whole_entities == {
        "program",
        "dataset",
    }
    assert truncated_entities("feature") == {"dataset", "signature"}


def test_whole_entities_absorb_their_single_keys() -> None:
    dirty = DirtyDocuments()
    dirty.add(row("program_dataset", program_id=P1, dataset_id=D1))
    dirty.add(Change(Action.TRUNCATE, 1, schema="public", table="dataset"))
    batch = dirty.resolve(Holders({}))
    assert batch.whole_entities == {"dataset"}
    assert batch.keys == {DocumentKey("program", P1)}


def test_rows_of_other_schemas_and_unknown_tables_dirty_nothing() -> None:
    heartbeat = Change(Action.UPDATE, 1, schema="replicator", table="heartbeat", key={"slot_name": "s"})
    assert not route(heartbeat).keys
    assert not route(row("some_new_table", id=D1)).keys
    assert route(Change(Action.COMMIT, 1)) == Routed()


def test_every_parent_is_a_known_entity() -> None:
    assert {entity for parents in PARENTS.values() for entity, _ in parents} == set(ENTITIES)


def test_the_fast_path_dirties_what_the_full_path_dirties() -> None:
    changes = [
        row("dataset", Action.UPDATE, id=D1),
        row("dataset_signature", Action.INSERT, dataset_id=D2, signature_id=S1),
        row("feature", Action.UPDATE, id=F1),
        row("program", Action.DELETE, id=P1),
    ]
    lookup = Holders({F1: {DocumentKey("signature", S1)}}, {DocumentKey("dataset", D1): {DocumentKey("program", P1)}})
    full, fast = DirtyDocuments(), DirtyDocuments()
    for change in changes:
        assert change.table is not None
        full.add(change)
        fast.add_values(change.table, change.action, tuple(change.key.get(c) for c in ROUTE_COLUMNS[change.table]))
    batch = full.resolve(lookup)
    pairs, whole = fast.resolve_pairs(lookup)
    assert pairs == {(k.entity, str(k.id)) for k in batch.keys}
    assert whole == batch.whole_entities


def test_merged_batches_hold_the_documents_of_both() -> None:
    first, second = DirtyDocuments(), DirtyDocuments()
    first.add(row("dataset", id=D1))
    second.add(row("program_dataset", program_id=P1, dataset_id=D1))
    second.add(Change(Action.TRUNCATE, 1, schema="public", table="signature"))
    first.merge(second)
    assert first.resolve_pairs(Holders({})) == ({("dataset", str(D1)), ("program", str(P1))}, frozenset({"signature"}))
