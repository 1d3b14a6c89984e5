"""Documents: what one entity (program, experiment, dataset, signature) looks like downstream, rendered from the
CURRENT rows in Postgres (never from the change record), so rendering is idempotent and convergent.

``render(conn, keys)`` returns a ``Document`` per key, or ``None`` when the row is gone (delete downstream).
The content hash covers everything a sink writes, so an unchanged document costs no API call.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import sql

from replicator.errors import ConfigurationError
from replicator.graph import ENTITIES, RELATIONS


@dataclass(frozen=True, order=True)
class DocumentKey:
    entity: str  # one of ENTITIES
    id: uuid.UUID

    def __str__(self) -> str:
        return f"{self.entity}:{self.id}"


@dataclass(frozen=True)
class RemoteState:
    """What a sink last wrote of a document (``replicator.sink_state``): remote id, content hash, chunk count."""

    remote_id: str | None
    content_hash: str
    chunk_count: int


# A sink-state hash starting with this is a record of a write in flight (``WriteIntent``), not the hash of anything
# written: no render produces it, and ``verify --repair`` never overwrites it (the sink needs it to avoid a twin).
INTENT_PREFIX = "intent:"
# The intent of a write whose parts the sink counts (Pinecone's chunks): the write may have happened or not.
UNCONFIRMED_INTENT = f"{INTENT_PREFIX}unconfirmed"


@dataclass(frozen=True)
class WriteIntent:
    """What is recorded of a document in ``replicator.sink_state`` right BEFORE a write whose answer may be lost
    (``store.sink_state.record_intents``, committed on its own, only while the worker holds the document's outbox
    row). The replicator's one record-before-write: whatever a lost answer, a crash or a lagging read hides, the
    next attempt (in this process or another) finds the intent and cannot skip, duplicate or orphan anything.

    - ``marker``: the content hash to record, starting with ``INTENT_PREFIX`` (so the "unchanged, skip" shortcut
      never trusts it), or "" (an intent withdrawn: still no render's hash). Sinks may encode what they need to
      know later in it (Notion: until when a page create may not show in queries).
    - ``parts``: the remote parts the document may have once written (Pinecone: chunks); the recorded count
      becomes the larger of this and the stored one, so surplus parts are always covered by it.
    - ``remote_id``: the remote id to record with it (None: none yet, e.g. before a Notion page create)."""

    marker: str
    parts: int = 0
    remote_id: str | None = None


@dataclass(frozen=True)
class FeatureLine:
    """A dataset's feature with its statistics, or a signature's component."""

    name: str
    feature_type: str
    log2_fold_change: float | None = None
    p_value: float | None = None
    direction: str | None = None  # signature components: up / down / neutral / complex
    weight: float | None = None


@dataclass(frozen=True)
class SignatureMatch:
    """A dataset–signature score, seen from either side (``other`` is the counterpart's key)."""

    other: DocumentKey
    other_name: str
    score: float
    overlap_fraction: float
    matched_components: int
    total_components: int
    match_level: str


@dataclass(frozen=True)
class Narrative:
    """What people wrote on the document's Notion page (``public.narrative``), as the capture stored it."""

    text: str
    notion_page_id: str
    notion_url: str | None
    last_edited_time: str | None  # ISO 8601
    last_edited_by: str | None  # a Notion user id
    content_hash: str


@dataclass(frozen=True)
class Related:
    """One related document: its key (for Notion relations and Pinecone id lists) and its name (for text)."""

    key: DocumentKey
    name: str


@dataclass(frozen=True)
class Document:
    key: DocumentKey
    name: str
    # Scalar and list fields of the entity's row, by column name (omics_type, description, disease, …).
    fields: dict[str, Any] = field(default_factory=dict)
    # Related entities by role ("programs", "experiments", "datasets", "signatures"), each a key with its name, in
    # the order Notion relations and Pinecone's id lists are written in.
    related: dict[str, tuple[Related, ...]] = field(default_factory=dict)
    # Datasets: top features by |log2FC| then p; signatures: every component.
    features: tuple[FeatureLine, ...] = ()
    feature_count: int = 0
    signature_matches: tuple[SignatureMatch, ...] = ()
    # People's notes from the Notion page (None: nobody wrote any, or capture is off). Not written to Notion.
    narrative: Narrative | None = None

    def relation_keys(self) -> tuple[DocumentKey, ...]:
        """Every document this one relates to, over all roles, without repeats."""
        return tuple(dict.fromkeys(r.key for related in self.related.values() for r in related))

    def keys_of(self, role: str) -> tuple[DocumentKey, ...]:
        """The related documents in one role (empty when the role has none)."""
        return tuple(r.key for r in self.related.get(role, ()))

    def names_of(self, role: str) -> tuple[str, ...]:
        """The related documents' names in one role, in the same order as ``keys_of``."""
        return tuple(r.name for r in self.related.get(role, ()))

    def content_hash(self) -> str:
        """sha256 over a canonical JSON of the whole document (the narrative included when there is one, so a
        document without notes hashes as it did before notes existed)."""
        return self._hash(with_narrative=True)

    def structured_hash(self) -> str:
        """The hash of the Postgres-structured part only: what a sink that never writes the narrative (Notion,
        where the narrative comes from) compares, so a captured note costs it no API call."""
        return self._hash(with_narrative=False)

    def _hash(self, *, with_narrative: bool) -> str:
        fields = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name not in ("narrative", "related")
        }
        # Hashed as the two lists they were before keys and names were one structure, so every hash a sink stored
        # stays valid across the upgrade (no document is rewritten because its type changed shape).
        fields["relations"] = {role: self.keys_of(role) for role in self.related}
        fields["relation_names"] = {role: self.names_of(role) for role in self.related}
        if with_narrative and self.narrative is not None:
            fields["narrative"] = self.narrative
        payload = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS, default=_encode)
        return hashlib.sha256(payload).hexdigest()


def _encode(value: object) -> Any:
    if isinstance(value, DocumentKey):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, tuple | list):
        return list(value)
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    raise TypeError(f"cannot hash {type(value).__name__}")


# ---- rendering ---------------------------------------------------------------------------------------------------
# One or a few set-based queries per entity type for a whole batch of keys (never one query per document). Every
# ORDER BY ends on a unique column, so a document renders to the same bytes, and the same hash, every time.

TOP_FEATURES = 20

_PROGRAM_FIELDS = ("description", "disease", "external_ids")
_EXPERIMENT_FIELDS = (
    "type",
    "description",
    "disease",
    "matrix",
    "model_systems",
    "targets",
    "modality",
    "biomarker_role",
    "phenotype_axes",
    "treatment_arms",
    "stage",
)
_DATASET_FIELDS = (
    "natural_key",
    "omics_type",
    "description",
    "organism",
    "sample_type",
    "disease",
    "matrix",
    "model_systems",
    "methods",
    "summary",
    "results",
    "conclusions",
    "data_origin",
    "dataset_source_type",
    "source_url",
    "file_paths",
    "external_ids",
)
_SIGNATURE_FIELDS = ("short_id", "description", "modalities", "biomarker_role", "phenotype_axes", "data_ownership")

_FIELDS = {
    "program": _PROGRAM_FIELDS,
    "experiment": _EXPERIMENT_FIELDS,
    "dataset": _DATASET_FIELDS,
    "signature": _SIGNATURE_FIELDS,
}


class UnknownEntityError(ConfigurationError, ValueError):
    """A document key names an entity that is not one of ``ENTITIES``."""


def render(conn: psycopg.Connection[Any], keys: Iterable[DocumentKey]) -> dict[DocumentKey, Document | None]:
    """Render each key from the current rows; ``None`` for a key whose row no longer exists.

    Runs a handful of queries per entity type present in ``keys``. The caller chooses the transaction; a
    REPEATABLE READ one gives a snapshot consistent across the queries (the worker uses one)."""
    by_entity: dict[str, list[uuid.UUID]] = defaultdict(list)
    for key in sorted(set(keys)):
        if key.entity not in _FIELDS:
            raise UnknownEntityError(f"unknown entity {key.entity!r} in {key}; expected one of {ENTITIES}")
        by_entity[key.entity].append(key.id)
    out: dict[DocumentKey, Document | None] = {}
    for entity, ids in by_entity.items():
        out.update(_render_entity(conn, entity, ids))
    return out


def _render_entity(
    conn: psycopg.Connection[Any], entity: str, ids: list[uuid.UUID]
) -> dict[DocumentKey, Document | None]:
    columns = _FIELDS[entity]
    query = sql.SQL("SELECT id, name, {} FROM {} WHERE id = ANY(%s)").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(entity)
    )
    rows = {row[0]: row for row in conn.execute(query, (ids,)).fetchall()}
    related = _relations(conn, entity, list(rows))
    features: dict[uuid.UUID, tuple[FeatureLine, ...]] = {}
    counts: dict[uuid.UUID, int] = {}
    matches: dict[uuid.UUID, tuple[SignatureMatch, ...]] = {}
    if entity == "dataset":
        features, counts = _dataset_features(conn, list(rows))
        matches = _matches(conn, list(rows), from_side="dataset")
    elif entity == "signature":
        features = _signature_components(conn, list(rows))
        counts = {sid: len(lines) for sid, lines in features.items()}
        matches = _matches(conn, list(rows), from_side="signature")

    narratives = _narratives(conn, entity, list(rows))

    out: dict[DocumentKey, Document | None] = {}
    for id_ in ids:
        key = DocumentKey(entity, id_)
        row = rows.get(id_)
        if row is None:
            out[key] = None
            continue
        out[key] = Document(
            key=key,
            name=row[1],
            fields=dict(zip(columns, row[2:], strict=True)),
            related={role: related.get((role, id_), ()) for role in _relation_roles(entity)},
            features=features.get(id_, ()),
            feature_count=counts.get(id_, 0),
            signature_matches=matches.get(id_, ()),
            narrative=narratives.get(id_),
        )
    return out


_NARRATIVE_SQL = """
SELECT entity_id, text, notion_page_id, notion_url, last_edited_time, last_edited_by, content_hash
FROM narrative WHERE entity = %s AND entity_id = ANY(%s)
"""


def _narratives(conn: psycopg.Connection[Any], entity: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, Narrative]:
    if not ids:
        return {}
    out: dict[uuid.UUID, Narrative] = {}
    for entity_id, text, page_id, url, edited, edited_by, digest in conn.execute(_NARRATIVE_SQL, (entity, ids)):
        out[entity_id] = Narrative(
            text=text,
            notion_page_id=page_id,
            notion_url=url,
            last_edited_time=edited.isoformat() if edited is not None else None,
            last_edited_by=edited_by,
            content_hash=digest,
        )
    return out


def _relation_roles(entity: str) -> tuple[str, ...]:
    return tuple(r.role for r in RELATIONS[entity])


def _relations(
    conn: psycopg.Connection[Any], entity: str, ids: list[uuid.UUID]
) -> dict[tuple[str, uuid.UUID], tuple[Related, ...]]:
    """Every relation of every id in one UNION ALL query, ordered by role, owner, then the other side's id (the
    order Notion relations and Pinecone's id lists are written in)."""
    related: dict[tuple[str, uuid.UUID], list[Related]] = defaultdict(list)
    if not ids:
        return {}
    parts = [
        sql.SQL(
            "SELECT {role} AS role, {other_entity} AS other_entity, l.{this} AS owner, l.{other} AS other, o.name "
            "FROM {link} l JOIN {other_table} o ON o.id = l.{other} WHERE l.{this} = ANY(%(ids)s)"
        ).format(
            role=sql.Literal(role),
            other_entity=sql.Literal(other_entity),
            this=sql.Identifier(this),
            other=sql.Identifier(other),
            link=sql.Identifier(link),
            other_table=sql.Identifier(other_entity),
        )
        for role, link, this, other, other_entity in (
            (r.role, r.link, r.this_column, r.other_column, r.other) for r in RELATIONS[entity]
        )
    ]
    query = sql.SQL(" UNION ALL ").join(parts) + sql.SQL(" ORDER BY role, owner, other")
    for role, other_entity, owner, other, name in conn.execute(query, {"ids": ids}):
        related[(role, owner)].append(Related(DocumentKey(other_entity, other), name))
    return {k: tuple(v) for k, v in related.items()}


# DATASET_TOP_FEATURES: the strongest changes first (|log2FC| desc), then the most significant (p asc); features
# without statistics sort last; feature name and id break ties so the order is total.
_DATASET_FEATURES_SQL = """
SELECT ranked.dataset_id, ranked.name, ranked.feature_type, ranked.log2_fold_change, ranked.p_value, ranked.total
FROM (
    SELECT df.dataset_id, f.name, f.feature_type, df.log2_fold_change, df.p_value,
           count(*) OVER (PARTITION BY df.dataset_id) AS total,
           row_number() OVER (
               PARTITION BY df.dataset_id
               ORDER BY abs(df.log2_fold_change) DESC NULLS LAST, df.p_value ASC NULLS LAST, f.name, f.id
           ) AS rank
    FROM dataset_feature df JOIN feature f ON f.id = df.feature_id
    WHERE df.dataset_id = ANY(%s)
) ranked
WHERE ranked.rank <= %s
ORDER BY ranked.dataset_id, ranked.rank
"""


def _dataset_features(
    conn: psycopg.Connection[Any], ids: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, tuple[FeatureLine, ...]], dict[uuid.UUID, int]]:
    lines: dict[uuid.UUID, list[FeatureLine]] = defaultdict(list)
    counts: dict[uuid.UUID, int] = {}
    if not ids:
        return {}, {}
    for dataset_id, name, feature_type, lfc, p, total in conn.execute(_DATASET_FEATURES_SQL, (ids, TOP_FEATURES)):
        lines[dataset_id].append(FeatureLine(name=name, feature_type=feature_type, log2_fold_change=lfc, p_value=p))
        counts[dataset_id] = total
    return {k: tuple(v) for k, v in lines.items()}, counts


_SIGNATURE_COMPONENTS_SQL = """
SELECT sc.signature_id, f.name, f.feature_type, sc.direction, sc.weight
FROM signature_component sc JOIN feature f ON f.id = sc.feature_id
WHERE sc.signature_id = ANY(%s)
ORDER BY sc.signature_id, f.name, f.feature_type, f.id
"""


def _signature_components(
    conn: psycopg.Connection[Any], ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[FeatureLine, ...]]:
    lines: dict[uuid.UUID, list[FeatureLine]] = defaultdict(list)
    if not ids:
        return {}
    for signature_id, name, feature_type, direction, weight in conn.execute(_SIGNATURE_COMPONENTS_SQL, (ids,)):
        lines[signature_id].append(
            FeatureLine(name=name, feature_type=feature_type, direction=direction, weight=weight)
        )
    return {k: tuple(v) for k, v in lines.items()}


def _matches(
    conn: psycopg.Connection[Any], ids: list[uuid.UUID], *, from_side: str
) -> dict[uuid.UUID, tuple[SignatureMatch, ...]]:
    """dataset_signature rows seen from one side, best score first (then the counterpart's name and id)."""
    if not ids:
        return {}
    this, other, other_entity = (
        ("dataset_id", "signature_id", "signature")
        if from_side == "dataset"
        else ("signature_id", "dataset_id", "dataset")
    )
    query = sql.SQL(
        "SELECT ds.{this}, ds.{other}, o.name, ds.score, ds.overlap_fraction, ds.matched_components, "
        "ds.total_components, ds.match_level FROM dataset_signature ds JOIN {other_table} o ON o.id = ds.{other} "
        "WHERE ds.{this} = ANY(%s) ORDER BY ds.{this}, ds.score DESC, o.name, ds.{other}"
    ).format(this=sql.Identifier(this), other=sql.Identifier(other), other_table=sql.Identifier(other_entity))
    out: dict[uuid.UUID, list[SignatureMatch]] = defaultdict(list)
    for owner, other_id, name, score, overlap, matched, total, level in conn.execute(query, (ids,)):
        out[owner].append(
            SignatureMatch(
                other=DocumentKey(other_entity, other_id),
                other_name=name,
                score=score,
                overlap_fraction=overlap,
                matched_components=matched,
                total_components=total,
                match_level=level,
            )
        )
    return {k: tuple(v) for k, v in out.items()}
