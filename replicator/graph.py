"""The entity/link graph, declared once: which entities become documents, which link tables relate them, which
child tables belong to one of them. Routing (which documents a change dirties), rendering (which relations a
document shows) and backfill (which entities exist) all read it from here, so adding a link table is one line.

The graph is the domain schema's (``schema/domain.py``): four entities with a table each, five many-to-many link
tables, two child tables of per-entity rows, ``feature``, shared by the datasets and signatures that hold it, and
``narrative``, the notes people wrote on any entity's Notion page (an annotation: its entity is a column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Every entity that is a document, in the order documents list their relations (and operators read them).
ENTITIES: tuple[str, ...] = ("program", "experiment", "dataset", "signature")


@dataclass(frozen=True)
class Link:
    """A many-to-many link table between two entities (``left_column`` holds a ``left`` id, …)."""

    table: str
    left: str
    left_column: str
    right: str
    right_column: str


@dataclass(frozen=True)
class Relation:
    """One side's view of a link: ``entity``'s documents show their ``role`` (the plural of ``other``)."""

    role: str
    link: str
    this_column: str
    other_column: str
    other: str


@dataclass(frozen=True)
class Child:
    """A table of rows that belong to one entity's document (``column`` holds the owner's id)."""

    table: str
    entity: str
    column: str


LINKS: tuple[Link, ...] = (
    Link("program_experiment", "program", "program_id", "experiment", "experiment_id"),
    Link("program_dataset", "program", "program_id", "dataset", "dataset_id"),
    Link("program_signature", "program", "program_id", "signature", "signature_id"),
    Link("experiment_dataset", "experiment", "experiment_id", "dataset", "dataset_id"),
    # The signature matches: a dataset and a signature relate through their scored match.
    Link("dataset_signature", "dataset", "dataset_id", "signature", "signature_id"),
)

CHILDREN: tuple[Child, ...] = (
    Child("dataset_feature", "dataset", "dataset_id"),
    Child("signature_component", "signature", "signature_id"),
)


@dataclass(frozen=True)
class Annotation:
    """A table of rows that belong to a document of ANY entity: ``entity_column`` names the entity, ``id_column``
    its id (the narrative people wrote on a page, #14). Its rows dirty the document they annotate."""

    table: str
    entity_column: str
    id_column: str


NARRATIVE = Annotation("narrative", "entity", "entity_id")
ANNOTATIONS: tuple[Annotation, ...] = (NARRATIVE,)

# A feature row is shared: its holders are the owners of the child rows that reference it.
FEATURE_TABLE = "feature"
FEATURE_HOLDERS: tuple[Child, ...] = CHILDREN


def role_of(entity: str) -> str:
    """The role under which other documents list ``entity``'s documents ("programs", "datasets", …)."""
    return f"{entity}s"


def _relations(entity: str) -> tuple[Relation, ...]:
    found: list[Relation] = []
    for link in LINKS:
        if link.left == entity:
            found.append(Relation(role_of(link.right), link.table, link.left_column, link.right_column, link.right))
        if link.right == entity:
            found.append(Relation(role_of(link.left), link.table, link.right_column, link.left_column, link.left))
    return tuple(sorted(found, key=lambda r: ENTITIES.index(r.other)))


# entity → the relations its documents show, ordered as ENTITIES.
RELATIONS: Mapping[str, tuple[Relation, ...]] = {entity: _relations(entity) for entity in ENTITIES}


def _parents() -> dict[str, tuple[tuple[str, str], ...]]:
    parents: dict[str, tuple[tuple[str, str], ...]] = {entity: ((entity, "id"),) for entity in ENTITIES}
    for child in CHILDREN:
        parents[child.table] = ((child.entity, child.column),)
    for link in LINKS:
        parents[link.table] = ((link.left, link.left_column), (link.right, link.right_column))
    return parents


# table → the (entity, key column) pairs one of its rows dirties (an entity row itself, a child row its owner, a
# link row both sides).
PARENTS: Mapping[str, tuple[tuple[str, str], ...]] = _parents()

# Every domain table the stream must carry (wal2json ``add-tables``).
SOURCE_TABLES: tuple[str, ...] = (*PARENTS, FEATURE_TABLE, *(a.table for a in ANNOTATIONS))
