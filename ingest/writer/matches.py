"""Signature scoring inside the ingest transaction, both ways, storing only matches.

After a dataset is written it is scored against every signature; after a signature is written, every dataset is
scored against it. A stored ``dataset_signature`` row is inserted, updated only when its values differ (scores
come from the same inputs in the same order, so equal inputs give bit-identical floats), or deleted when the pair
no longer matches.

Only dataset features that can match a component are handed to the scorer: same feature type, and the
lower-cased normalized or species-level name shared with a component's. The scorer matches on those names, so
the result is the same as scoring the whole dataset, and a 100,000-feature dataset costs a few dictionary look-ups
per signature.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from ingest.scoring import ComponentInput, MeasuredFeature, ScoreResult, ScoringOptions, score_signature
from ingest.writer.features import json_text
from ingest.writer.inputs import MatchOutcome
from ingest.writer.rows import ChangeTally, Conn

_Key = tuple[str, str]


def _keys(feature_type: str, normalized_name: str, species_name: str | None) -> set[_Key]:
    # str.lower() mirrors the SQL lower() used when scoring a signature against every dataset.
    keys = {(feature_type, normalized_name.lower())}
    if species_name:
        keys.add((feature_type, species_name.lower()))
    return keys


@dataclass(frozen=True)
class _Signature:
    id: uuid.UUID
    name: str
    components: tuple[ComponentInput, ...]

    def match_keys(self) -> set[_Key]:
        found: set[_Key] = set()
        for c in self.components:
            found |= _keys(c.feature_type, c.normalized_name, c.species_name)
        return found


@dataclass(frozen=True)
class _Stored:
    score: float
    overlap_fraction: float
    matched_components: int
    total_components: int
    match_level: str


_COMPONENTS = """
SELECT sc.signature_id, s.name, f.feature_type, f.normalized_name, f.species_name, f.name, sc.direction, sc.weight
FROM signature_component sc
JOIN signature s ON s.id = sc.signature_id
JOIN feature f ON f.id = sc.feature_id
{where}
ORDER BY s.name, f.feature_type, f.normalized_name
"""


def _load_signatures(conn: Conn, signature_id: uuid.UUID | None = None) -> list[_Signature]:
    where = "WHERE sc.signature_id = %s" if signature_id else ""
    rows = conn.execute(_COMPONENTS.format(where=where), (signature_id,) if signature_id else ()).fetchall()
    grouped: dict[uuid.UUID, tuple[str, list[ComponentInput]]] = {}
    for sig_id, sig_name, ftype, norm, species, display, direction, weight in rows:
        grouped.setdefault(sig_id, (sig_name, []))[1].append(
            ComponentInput(ftype, norm, species, display, direction, float(weight))
        )
    return [_Signature(sig_id, name, tuple(comps)) for sig_id, (name, comps) in grouped.items()]


def _index(features: Iterable[MeasuredFeature]) -> dict[_Key, list[MeasuredFeature]]:
    index: dict[_Key, list[MeasuredFeature]] = defaultdict(list)
    for feature in features:
        for key in _keys(feature.feature_type, feature.normalized_name, feature.species_name):
            index[key].append(feature)
    return index


def _candidates(signature: _Signature, index: dict[_Key, list[MeasuredFeature]]) -> list[MeasuredFeature]:
    chosen: dict[tuple[str, str], MeasuredFeature] = {}
    for key in signature.match_keys():
        for feature in index.get(key, ()):
            chosen[(feature.feature_type, feature.normalized_name)] = feature
    return [chosen[k] for k in sorted(chosen)]


# Dataset features that share a (feature type, lower-cased normalized or species name) key with some component.
_FEATURES_MATCHING = """
WITH k(feature_type, name) AS (SELECT * FROM unnest(%(types)s::text[], %(names)s::text[]))
SELECT DISTINCT d.dataset_id, ds.name, f.feature_type, f.normalized_name, f.species_name,
       d.log2_fold_change, d.p_value, f.external_ids ? 'heavy_label' AS is_standard
FROM feature f
JOIN k ON k.feature_type = f.feature_type AND (lower(f.normalized_name) = k.name OR lower(f.species_name) = k.name)
JOIN dataset_feature d ON d.feature_id = f.id
JOIN dataset ds ON ds.id = d.dataset_id
{where}
"""


def _features_matching(conn: Conn, keys: set[_Key], dataset_id: uuid.UUID | None = None) -> list[tuple[Any, ...]]:
    types, names = zip(*sorted(keys), strict=True)
    where = "WHERE d.dataset_id = %(dataset_id)s" if dataset_id else ""
    return conn.execute(
        _FEATURES_MATCHING.format(where=where),
        {"types": list(types), "names": list(names), "dataset_id": dataset_id},
    ).fetchall()


def _stored(conn: Conn, column: str, value: uuid.UUID) -> dict[tuple[uuid.UUID, uuid.UUID], _Stored]:
    rows = conn.execute(
        f"SELECT dataset_id, signature_id, score, overlap_fraction, matched_components, total_components, "
        f"match_level FROM dataset_signature WHERE {column} = %s",
        (value,),
    ).fetchall()
    return {(r[0], r[1]): _Stored(r[2], r[3], r[4], r[5], r[6]) for r in rows}


def _apply(
    conn: Conn,
    tally: ChangeTally,
    dataset_id: uuid.UUID,
    signature_id: uuid.UUID,
    result: ScoreResult | None,
    exists: bool,
) -> str:
    key = {"d": dataset_id, "s": signature_id}
    if result is None:
        if not exists:
            return "none"
        conn.execute("DELETE FROM dataset_signature WHERE dataset_id = %(d)s AND signature_id = %(s)s", key)
        tally.add("dataset_signature", deleted=1)
        return "deleted"
    values = {
        **key,
        "score": result.score,
        "overlap": result.overlap_fraction,
        "matched": result.matched_components,
        "total": result.total_components,
        "level": result.match_level,
        "details": Jsonb(list(result.details), dumps=json_text),
    }
    if not exists:
        conn.execute(
            "INSERT INTO dataset_signature (dataset_id, signature_id, score, overlap_fraction, matched_components, "
            "total_components, match_level, details) "
            "VALUES (%(d)s, %(s)s, %(score)s, %(overlap)s, %(matched)s, %(total)s, %(level)s, %(details)s)",
            values,
        )
        tally.add("dataset_signature", inserted=1)
        return "inserted"
    cur = conn.execute(
        "UPDATE dataset_signature SET score = %(score)s, overlap_fraction = %(overlap)s, "
        "matched_components = %(matched)s, total_components = %(total)s, match_level = %(level)s, "
        "details = %(details)s "
        "WHERE dataset_id = %(d)s AND signature_id = %(s)s "
        "AND (score, overlap_fraction, matched_components, total_components, match_level, details) "
        "IS DISTINCT FROM (%(score)s::float8, %(overlap)s::float8, %(matched)s::int, %(total)s::int, "
        "%(level)s::text, %(details)s::jsonb)",
        values,
    )
    tally.add("dataset_signature", updated=cur.rowcount)
    return "updated" if cur.rowcount else "unchanged"


def _outcome(
    dataset: tuple[uuid.UUID, str], signature: _Signature, result: ScoreResult | None, change: str
) -> MatchOutcome:
    return MatchOutcome(
        dataset_id=dataset[0],
        dataset_name=dataset[1],
        signature_id=signature.id,
        signature_name=signature.name,
        score=result.score if result else None,
        overlap_fraction=result.overlap_fraction if result else None,
        matched_components=result.matched_components if result else 0,
        total_components=len(signature.components),
        match_level=result.match_level if result else None,
        change=change,
    )


def score_dataset(
    conn: Conn, tally: ChangeTally, dataset_id: uuid.UUID, options: ScoringOptions
) -> tuple[MatchOutcome, ...]:
    """Score one dataset against every signature; returns matches and deleted (stale) matches."""
    name_row = conn.execute("SELECT name FROM dataset WHERE id = %s", (dataset_id,)).fetchone()
    assert name_row is not None
    dataset = (dataset_id, str(name_row[0]))
    signatures = _load_signatures(conn)
    keys: set[_Key] = set()
    for signature in signatures:
        keys |= signature.match_keys()
    rows = _features_matching(conn, keys, dataset_id) if keys else []
    index = _index(MeasuredFeature(*row[2:]) for row in rows)
    stored = _stored(conn, "dataset_id", dataset_id)
    outcomes: list[MatchOutcome] = []
    for signature in signatures:
        candidates = _candidates(signature, index)
        result = score_signature(signature.components, candidates, options) if candidates else None
        change = _apply(conn, tally, dataset_id, signature.id, result, (dataset_id, signature.id) in stored)
        if change != "none":
            outcomes.append(_outcome(dataset, signature, result, change))
    return tuple(outcomes)


def score_signature_everywhere(
    conn: Conn, tally: ChangeTally, signature_id: uuid.UUID, options: ScoringOptions
) -> tuple[MatchOutcome, ...]:
    """Score one signature against every dataset that shares a feature with it (others cannot match)."""
    found = _load_signatures(conn, signature_id)
    stored = _stored(conn, "signature_id", signature_id)
    if not found:
        for dataset_id, _ in stored:
            _apply(conn, tally, dataset_id, signature_id, None, True)
        return ()
    signature = found[0]
    rows = _features_matching(conn, signature.match_keys())
    per_dataset: dict[tuple[uuid.UUID, str], list[MeasuredFeature]] = defaultdict(list)
    for dataset_id, dataset_name, *feature in rows:
        per_dataset[(dataset_id, dataset_name)].append(MeasuredFeature(*feature))
    names_of = dict(per_dataset)
    stale = [k for k in stored if k[0] not in {d for d, _ in names_of}]
    outcomes: list[MatchOutcome] = []
    for dataset, features in sorted(per_dataset.items(), key=lambda item: (item[0][1], str(item[0][0]))):
        candidates = _candidates(signature, _index(features))
        result = score_signature(signature.components, candidates, options) if candidates else None
        change = _apply(conn, tally, dataset[0], signature_id, result, (dataset[0], signature_id) in stored)
        if change != "none":
            outcomes.append(_outcome(dataset, signature, result, change))
    for dataset_id, _ in stale:
        name_row = conn.execute("SELECT name FROM dataset WHERE id = %s", (dataset_id,)).fetchone()
        _apply(conn, tally, dataset_id, signature_id, None, True)
        outcomes.append(_outcome((dataset_id, str(name_row[0]) if name_row else "?"), signature, None, "deleted"))
    return tuple(outcomes)
