"""Routing: which documents a change makes dirty (DESIGN.md "Documents").

Entity rows dirty themselves; link and child tables dirty their parents (``dataset_feature`` → dataset,
``dataset_signature`` → dataset and signature, …); an UPDATE of a ``feature`` row (a rename, as far as we can tell
without the old tuple) dirties every dataset and signature that holds it; inserting or deleting a feature dirties
nothing by itself (its ``dataset_feature`` / ``signature_component`` rows do). An UPDATE of an entity row also
dirties its related documents, because documents show their relations' names (a renamed program changes the text
of each of its datasets); unchanged neighbours cost a render, not an API call (their content hash is equal).
A ``narrative`` row (people's notes on an entity's page) dirties the document it annotates, named by its
``entity`` and ``entity_id`` columns. Inserts need no fan-out (a new row has no links yet; its link rows route
themselves) and deletes neither (the cascaded link-row deletes do). A TRUNCATE dirties every document of the
affected entities.

``DirtyDocuments`` collects a batch in a set, so a 200,000-row transaction touching one dataset is ONE key and
memory stays bounded. Keys stay (entity, id text) pairs as wal2json sent them, all the way into the outbox
statement (``resolve_pairs``): no ``uuid.UUID`` or ``DocumentKey`` is built per change. Feature holders are
looked up once per batch through the small ``FeatureHolders`` interface, so the routing itself is pure and unit
tests need no database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import psycopg

from replicator.changes import ROW_ACTIONS, Action, Change
from replicator.documents import DocumentKey
from replicator.graph import ANNOTATIONS, ENTITIES, FEATURE_HOLDERS, FEATURE_TABLE, LINKS, PARENTS, SOURCE_TABLES

_ANNOTATIONS = {a.table: a for a in ANNOTATIONS}

DOMAIN_SCHEMA = "public"

__all__ = [
    "DOMAIN_SCHEMA",
    "ENTITY_TABLES",
    "FEATURE_TABLE",
    "PARENTS",
    "ROUTE_COLUMNS",
    "SOURCE_TABLES",
    "DirtyBatch",
    "DirtyDocuments",
    "FeatureHolders",
    "Routed",
    "SqlFeatureHolders",
    "route",
    "truncated_entities",
]


def truncated_entities(table: str) -> frozenset[str]:
    """Entities whose every document a TRUNCATE of ``table`` may change."""
    if table == FEATURE_TABLE:
        return frozenset(holder.entity for holder in FEATURE_HOLDERS)
    if table in _ANNOTATIONS:
        return frozenset(ENTITIES)
    return frozenset(entity for entity, _ in PARENTS.get(table, ()))


ENTITY_TABLES = frozenset(ENTITIES)

# table → the key columns routing reads from its rows, in the order ``DirtyDocuments.add_values`` takes them: the
# parents' key columns (an entity's own ``id``), or ``id`` for a feature.
ROUTE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    **{table: tuple(column for _, column in parents) for table, parents in PARENTS.items()},
    FEATURE_TABLE: ("id",),
    **{a.table: (a.entity_column, a.id_column) for a in ANNOTATIONS},
}
# table → (the entities its values dirty, in ROUTE_COLUMNS order; whether an UPDATE of it fans out to neighbours)
_ROUTES: Mapping[str, tuple[tuple[str, ...], bool]] = {
    table: (tuple(entity for entity, _ in parents), table in ENTITY_TABLES) for table, parents in PARENTS.items()
}


class FeatureHolders(Protocol):
    def holders(self, feature_ids: Iterable[uuid.UUID]) -> set[DocumentKey]:
        """Every dataset and signature that holds one of these features."""
        ...

    def related_pairs(self, updated: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Every document linked to one of these (through link tables and signature matches), as (entity, id
        text) pairs, the routing's raw keys."""
        ...


@dataclass(frozen=True)
class Routed:
    """What one change dirties: documents, features whose holders must be looked up, whole entities."""

    keys: frozenset[DocumentKey] = frozenset()
    renamed_features: frozenset[uuid.UUID] = frozenset()
    whole_entities: frozenset[str] = frozenset()


def route(change: Change) -> Routed:
    """The documents one change dirties (pure)."""
    dirty = DirtyDocuments()
    dirty.add(change)
    return Routed(frozenset(dirty.direct_keys()), frozenset(dirty.renamed_features()), dirty.whole_entities)


@dataclass(frozen=True)
class DirtyBatch:
    keys: frozenset[DocumentKey]
    whole_entities: frozenset[str]

    def __len__(self) -> int:
        return len(self.keys)


class DirtyDocuments:
    """A coalescing accumulator of dirty documents for one batch. Keys are kept as raw (entity, id text) pairs
    while streaming (cheap to hash) and turned into ``DocumentKey`` once, when the batch is resolved."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._features: set[str] = set()
        self._updated: set[tuple[str, str]] = set()
        self._whole: set[str] = set()

    def __len__(self) -> int:
        return len(self._keys) + len(self._features) + len(self._updated)

    def __bool__(self) -> bool:
        return bool(self._keys or self._features or self._updated or self._whole)

    @property
    def whole_entities(self) -> frozenset[str]:
        return frozenset(self._whole)

    def add(self, change: Change) -> None:
        if change.schema != DOMAIN_SCHEMA or change.table is None:
            return
        if change.action in ROW_ACTIONS:
            self.add_row(change.table, change.action, change.key)
        elif change.action is Action.TRUNCATE:
            self._whole |= truncated_entities(change.table)

    def add_row(self, table: str, action: Action, key: Mapping[str, Any]) -> None:
        columns = ROUTE_COLUMNS.get(table)
        if columns is not None:
            self.add_values(table, action, tuple(key.get(column) for column in columns))

    def add_values(self, table: str, action: Action, values: tuple[str | None, ...]) -> None:
        """One row change given as its ``ROUTE_COLUMNS[table]`` values (the source's fast path)."""
        route = _ROUTES.get(table)
        if route is not None:
            keys = self._keys
            for entity, value in zip(route[0], values, strict=False):
                if value is not None:
                    keys.add((entity, value))
            if route[1] and action is Action.UPDATE and values[0] is not None:
                self._updated.add((table, values[0]))
        elif table == FEATURE_TABLE and action is Action.UPDATE and values[0] is not None:
            self._features.add(values[0])
        elif table in _ANNOTATIONS and len(values) == 2:
            kind, value = values  # ROUTE_COLUMNS: (entity_column, id_column)
            if kind in ENTITY_TABLES and value is not None:
                self._keys.add((str(kind), str(value)))

    def merge(self, other: DirtyDocuments) -> None:
        """Take in another batch's dirty documents (batches handed over while the outbox was busy)."""
        self._keys |= other._keys
        self._features |= other._features
        self._updated |= other._updated
        self._whole |= other._whole

    def direct_keys(self) -> set[DocumentKey]:
        return {DocumentKey(entity, uuid.UUID(value)) for entity, value in self._keys}

    def renamed_features(self) -> set[uuid.UUID]:
        return {uuid.UUID(v) for v in self._features}

    def resolve(self, lookup: FeatureHolders) -> DirtyBatch:
        """Every document of the batch, with renamed features' holders looked up in one go."""
        keys = self.direct_keys()
        if self._features:
            keys |= lookup.holders(self.renamed_features())
        if self._updated:
            keys |= {DocumentKey(entity, uuid.UUID(value)) for entity, value in lookup.related_pairs(self._updated)}
        whole = frozenset(self._whole)
        return DirtyBatch(frozenset(k for k in keys if k.entity not in whole), whole)

    def resolve_pairs(self, lookup: FeatureHolders) -> tuple[set[tuple[str, str]], frozenset[str]]:
        """``resolve`` without building a ``DocumentKey`` per document: (entity, id text) pairs, and the whole
        entities. Consumes the accumulator (its key set is returned, not copied)."""
        keys = self._keys
        self._keys = set()
        if self._features:
            keys |= {(k.entity, str(k.id)) for k in lookup.holders(self.renamed_features())}
        if self._updated:
            keys |= lookup.related_pairs(self._updated)
        whole = frozenset(self._whole)
        if whole:
            keys = {k for k in keys if k[0] not in whole}
        return keys, whole

    def clear(self) -> None:
        self._keys.clear()
        self._features.clear()
        self._updated.clear()
        self._whole.clear()


class SqlFeatureHolders:
    """``FeatureHolders`` over the current rows: one query for the whole batch."""

    # Holders are read from the CURRENT rows: a holder that let go of the feature since is dirtied by its own
    # dataset_feature / signature_component delete, so nothing is missed.
    HOLDERS_SQL = "\nUNION\n".join(
        f"SELECT '{h.entity}', {h.column} FROM {h.table} WHERE feature_id = ANY(%(ids)s::uuid[])"
        for h in FEATURE_HOLDERS
    )

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    # Neighbours of updated entities, over the current links (both directions of every link in the graph): every
    # relation a document renders by name. Only the branches whose entity has updated ids (a batch of dataset
    # updates runs the three dataset branches, not all ten), ids in and out as text: no ``uuid.UUID`` or
    # ``DocumentKey`` per document on the source's path. Keyed by the entities present (each built once).
    _RELATED_PAIRS_SQL: ClassVar[dict[frozenset[str], str]] = {}

    @classmethod
    def _related_pairs_sql(cls, entities: frozenset[str]) -> str:
        query = cls._RELATED_PAIRS_SQL.get(entities)
        if query is None:
            query = cls._RELATED_PAIRS_SQL[entities] = "\nUNION ".join(
                f"SELECT '{other}', {other_column}::text FROM {link.table} "
                f"WHERE {this_column} = ANY(string_to_array(%({this})s, ',')::uuid[])"
                for link in LINKS
                for this, this_column, other, other_column in (
                    (link.left, link.left_column, link.right, link.right_column),
                    (link.right, link.right_column, link.left, link.left_column),
                )
                if this in entities
            )
        return query

    def related_pairs(self, updated: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Every document linked to one of ``updated`` over the current links (``FeatureHolders.related_pairs``)."""
        by_entity: dict[str, list[str]] = {}
        for entity, entity_id in updated:
            if entity in ENTITY_TABLES:
                by_entity.setdefault(entity, []).append(entity_id)
        if not by_entity:
            return set()
        query = self._related_pairs_sql(frozenset(by_entity))
        if not query:
            return set()
        params = {entity: ",".join(ids) for entity, ids in by_entity.items()}
        return {(entity, entity_id) for entity, entity_id in self._conn.execute(query, params).fetchall()}

    def holders(self, feature_ids: Iterable[uuid.UUID]) -> set[DocumentKey]:
        ids = list(feature_ids)
        if not ids:
            return set()
        rows = self._conn.execute(self.HOLDERS_SQL, {"ids": ids}).fetchall()
        return {DocumentKey(entity, entity_id) for entity, entity_id in rows}
