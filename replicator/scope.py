"""Per-sink scope (#14, the staged rollout): which documents one sink carries, e.g. only the lipidomics datasets and
the programs, experiments and signatures they relate to (a pilot), then everything.

A scope is a small expression, validated once at start-up (``REPLICATOR_SCOPE_NOTION``, ``REPLICATOR_SCOPE_PINECONE``,
a plugin sink's ``"scope"`` option), of clauses separated by ``;``:

- ``dataset.FIELD=V1,V2`` (or ``!=``): datasets whose FIELD is one of the values (for a list field such as
  ``organism``: holds one of them); several dataset clauses must all hold;
- ``entities=dataset,program,…``: the entities the sink carries at all (default: every one).

A dataset is in scope when it matches every dataset clause; a program, experiment or signature when it is related,
through a link table of the graph that touches ``dataset`` (``program_dataset``, ``experiment_dataset``, the
``dataset_signature`` matches), to a dataset in scope — one hop, the documents a pilot's datasets name. Without a
dataset clause every document of the listed entities is in scope. Empty or ``all``: everything (no extra query).

Membership is evaluated in SQL against the current rows (``in_scope``), by the worker, in the snapshot it renders
from, so it is right for every change that reaches the worker: a dataset whose ``omics_type`` changes dirties
itself and its neighbours, a link row both sides. A document in scope shows only the relations (and signature
matches) whose other side is in scope too (``restrict``): a Notion relation needs the target's page, and a sink's
copy never names a document the sink does not carry.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import psycopg
from psycopg import sql

from replicator.documents import Document, DocumentKey
from replicator.errors import ConfigurationError
from replicator.graph import ENTITIES, LINKS
from schema.domain import OMICS_TYPES

# What the worker does with a document a sink holds that falls outside the sink's scope (REPLICATOR_SCOPE_NARROW).
Narrow = Literal["remove", "keep"]

# Dataset fields a scope may filter on: text columns (one value) and text[] columns (any of their values).
SCALAR_FIELDS: tuple[str, ...] = ("omics_type", "natural_key", "data_origin", "dataset_source_type")
LIST_FIELDS: tuple[str, ...] = ("organism", "disease", "sample_type", "matrix", "model_systems")
# Fields whose values are a closed set: a typo is an error, not an empty scope.
KNOWN_VALUES: Mapping[str, tuple[str, ...]] = {"omics_type": OMICS_TYPES}

EVERYTHING_TEXT = "all"


class ScopeError(ConfigurationError, ValueError):
    """A scope expression that cannot be read; the message says which clause and why (a ``ValueError`` too, so
    pydantic reports it as the setting's validation error)."""


@dataclass(frozen=True, order=True)
class Condition:
    """``dataset.FIELD=VALUES`` (``negate``: ``!=``)."""

    field: str
    values: tuple[str, ...]
    negate: bool = False

    def text(self) -> str:
        return f"dataset.{self.field}{'!=' if self.negate else '='}{','.join(self.values)}"


@dataclass(frozen=True)
class Scope:
    """A parsed scope; ``text()`` is its canonical form (what is stored and compared at start-up)."""

    conditions: tuple[Condition, ...] = ()
    entities: tuple[str, ...] = field(default=ENTITIES)

    @property
    def everything(self) -> bool:
        return not self.conditions and self.entities == ENTITIES

    def text(self) -> str:
        if self.everything:
            return EVERYTHING_TEXT
        clauses = [c.text() for c in self.conditions]
        if self.entities != ENTITIES:
            clauses.append("entities=" + ",".join(self.entities))
        return ";".join(clauses)

    def describe(self) -> str:
        """A sentence for ``rollout status``."""
        if self.everything:
            return "all documents"
        if not self.conditions:
            return f"every {', '.join(self.entities)}"
        return f"{', '.join(self.entities)} where {' and '.join(c.text() for c in self.conditions)} (related: one hop)"


EVERYTHING = Scope()


@functools.lru_cache(maxsize=64)
def parse(text: str | None) -> Scope:
    """The scope ``text`` spells (None, empty or ``all``: everything); ``ScopeError`` says what is wrong."""
    if text is None or not text.strip() or text.strip().lower() == EVERYTHING_TEXT:
        return EVERYTHING
    conditions: dict[str, Condition] = {}
    entities: tuple[str, ...] | None = None
    for raw in text.split(";"):
        clause = raw.strip()
        if not clause:
            continue
        negate = "!=" in clause
        name, sep, values_text = clause.partition("!=" if negate else "=")
        name = name.strip().lower()
        values = tuple(sorted({v.strip() for v in values_text.split(",") if v.strip()}))
        if not sep or not name:
            raise ScopeError(f"{clause!r}: expected NAME=VALUES, e.g. dataset.omics_type=lipidomics")
        if not values:
            raise ScopeError(f"{clause!r}: no value after {'!=' if negate else '='}")
        if name == "entities":
            if negate or entities is not None:
                raise ScopeError(f"{clause!r}: give entities once, as entities=dataset,program,…")
            unknown = sorted(set(values) - set(ENTITIES))
            if unknown:
                raise ScopeError(f"{clause!r}: unknown entity {unknown[0]!r}; known: {', '.join(ENTITIES)}")
            entities = tuple(e for e in ENTITIES if e in values)
            continue
        entity, dot, column = name.partition(".")
        if not dot or entity != "dataset" or column not in (*SCALAR_FIELDS, *LIST_FIELDS):
            fields = ", ".join(f"dataset.{f}" for f in (*SCALAR_FIELDS, *LIST_FIELDS))
            raise ScopeError(f"{clause!r}: unknown filter {name!r}; known: entities, {fields}")
        if column in conditions:
            raise ScopeError(f"{clause!r}: dataset.{column} is given twice (list its values once, comma-separated)")
        known = KNOWN_VALUES.get(column)
        if known is not None and (bad := sorted(set(values) - set(known))):
            raise ScopeError(f"{clause!r}: unknown {column} {bad[0]!r}; known: {', '.join(known)}")
        conditions[column] = Condition(column, values, negate)
    scope = Scope(tuple(sorted(conditions.values())), entities if entities is not None else ENTITIES)
    return EVERYTHING if scope.everything else scope


# ---- membership, in SQL -------------------------------------------------------------------------------------------


def _dataset_predicate(scope: Scope, alias: str) -> tuple[sql.Composable, dict[str, Any]]:
    """``scope``'s dataset clauses as one SQL condition on the dataset row ``alias``, with its parameters."""
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for n, condition in enumerate(scope.conditions):
        name = f"scope_{n}"
        params[name] = list(condition.values)
        column = sql.Identifier(alias, condition.field)
        if condition.field in LIST_FIELDS:
            test = sql.SQL("{} && {}::text[]").format(column, sql.Placeholder(name))
        else:
            test = sql.SQL("{} = ANY({}::text[])").format(column, sql.Placeholder(name))
        # coalesce: a NULL field matches neither = nor != (it is not one of the values, nor known not to be).
        parts.append(sql.SQL("{}coalesce({}, false)").format(sql.SQL("NOT " if condition.negate else ""), test))
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params


def members_sql(scope: Scope, entity: str, *, only_ids: bool) -> tuple[sql.Composed, dict[str, Any]] | None:
    """The statement listing the ids of ``entity``'s documents in ``scope`` (``only_ids``: of those among the
    ``%(ids)s`` parameter), or None when the scope carries no document of ``entity``."""
    if entity not in scope.entities:
        return None
    predicate, params = _dataset_predicate(scope, "d")
    among = sql.SQL(" AND {} = ANY(%(ids)s::uuid[])")
    if entity == "dataset" or not scope.conditions:
        query = sql.SQL("SELECT d.id FROM {} d WHERE {}").format(sql.Identifier(entity), predicate)
        if only_ids:
            query += among.format(sql.Identifier("d", "id"))
        return query, params
    # A program, experiment or signature: related through a link with a dataset in scope (one hop).
    parts: list[sql.Composable] = []
    for link in LINKS:
        for this, this_column, other_column in (
            (link.left, link.left_column, link.right_column),
            (link.right, link.right_column, link.left_column),
        ):
            if this != entity or (link.right if this == link.left else link.left) != "dataset":
                continue
            part = sql.SQL("SELECT l.{col} FROM {link} l JOIN dataset d ON d.id = l.{dataset} WHERE {pred}").format(
                col=sql.Identifier(this_column),
                link=sql.Identifier(link.table),
                dataset=sql.Identifier(other_column),
                pred=predicate,
            )
            if only_ids:
                part += among.format(sql.Identifier("l", this_column))
            parts.append(part)
    if not parts:
        return None  # an entity no link ties to datasets: nothing relates it to a dataset in scope
    return sql.SQL(" UNION ").join(parts), params


def in_scope(conn: psycopg.Connection[Any], scope: Scope, keys: Iterable[DocumentKey]) -> set[DocumentKey]:
    """Those of ``keys`` whose document is in ``scope`` now (one query per entity; the caller's snapshot). A key
    whose row is gone is not in scope."""
    wanted = set(keys)
    if scope.everything:
        return wanted
    by_entity: dict[str, list[uuid.UUID]] = {}
    for key in wanted:
        by_entity.setdefault(key.entity, []).append(key.id)
    inside: set[DocumentKey] = set()
    for entity, ids in sorted(by_entity.items()):
        statement = members_sql(scope, entity, only_ids=True)
        if statement is None:
            continue
        query, params = statement
        inside.update(DocumentKey(entity, row[0]) for row in conn.execute(query, {**params, "ids": ids}))
    return inside


def members(conn: psycopg.Connection[Any], scope: Scope) -> set[DocumentKey]:
    """Every document in ``scope`` now (a re-scope compares two of these; ``verify`` renders them)."""
    out: set[DocumentKey] = set()
    for entity in ENTITIES:
        if scope.everything:
            query: sql.Composed = sql.SQL("SELECT id FROM {}").format(sql.Identifier(entity))
            params: dict[str, Any] = {}
        else:
            statement = members_sql(scope, entity, only_ids=False)
            if statement is None:
                continue
            query, params = statement
        out.update(DocumentKey(entity, row[0]) for row in conn.execute(query, params))
    return out


def restrict(document: Document, inside: set[DocumentKey] | frozenset[DocumentKey]) -> Document:
    """``document`` as a scoped sink carries it: relations and signature matches to documents outside the scope
    are left out (the sink has no page or vector for them). Unchanged (the same object) when nothing is left out."""
    matched = (m.other for m in document.signature_matches)
    if all(k in inside for k in document.relation_keys()) and all(k in inside for k in matched):
        return document
    related = {role: tuple(r for r in rs if r.key in inside) for role, rs in document.related.items()}
    matches = tuple(m for m in document.signature_matches if m.other in inside)
    return replace(document, related=related, signature_matches=matches)


def related_inside(document: Document, inside: set[DocumentKey] | frozenset[DocumentKey]) -> set[DocumentKey]:
    """The documents ``document`` relates to that are in scope: the ones whose scoped copy names it (or should),
    so they are rendered again when ``document`` enters or leaves the scope."""
    related = set(document.relation_keys()) | {m.other for m in document.signature_matches}
    return {k for k in related if k in inside}
