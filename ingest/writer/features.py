"""Bulk feature writes: COPY into temporary tables, then set-based statements that touch only what differs.

``feature`` rows are shared by every dataset and signature, so an existing feature is never renamed here (the
first writer's display name stays; otherwise two files spelling a feature differently would flip it back and
forth). Identifiers are merged in, the stored value winning on a conflict, and only when something is new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from psycopg import sql

from ingest.normalize import NormalizedFeature
from ingest.writer.rows import ChangeTally, Conn
from ingest.writer.staging import json_text

Progress = Callable[[int], None]

__all__ = ["Progress", "insert_staged_features", "json_text", "upsert_features"]

_STAGE_FEATURES = """
CREATE TEMP TABLE ingest_feature (
    feature_type text NOT NULL,
    normalized_name text NOT NULL,
    name text NOT NULL,
    species_name text,
    lipid_class text,
    parsed boolean NOT NULL,
    external_ids jsonb NOT NULL
) ON COMMIT DROP
"""

# Features not yet known. NOT EXISTS keeps the statement from touching existing rows; ON CONFLICT covers a
# concurrent ingest that inserts the same feature first. The ids are UUIDv7 (migration 0009) of one millisecond,
# numbered in (feature_type, normalized_name) order, so they increase with the unique key: both indexes, the heap
# and, later, dataset_feature's inserts (made in feature id order) fill page after page.
_INSERT_NEW_FEATURES = """
INSERT INTO feature (id, feature_type, normalized_name, name, species_name, lipid_class, parsed, external_ids)
SELECT uuid_v7_at(now_ms.ms, row_number() OVER (ORDER BY s.feature_type, s.normalized_name)),
       s.feature_type, s.normalized_name, s.name, s.species_name, s.lipid_class, s.parsed, s.external_ids
FROM {staged} s
CROSS JOIN (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) now_ms
WHERE NOT EXISTS (
    SELECT 1 FROM feature f WHERE f.feature_type = s.feature_type AND f.normalized_name = s.normalized_name
)
ORDER BY s.feature_type, s.normalized_name
ON CONFLICT (feature_type, normalized_name) DO NOTHING
"""

# New identifiers only: `s || f` lets the stored value win, and the WHERE skips rows it would not change.
_MERGE_IDENTIFIERS = """
UPDATE feature f
SET external_ids = s.external_ids || f.external_ids
FROM {staged} s
WHERE f.feature_type = s.feature_type
  AND f.normalized_name = s.normalized_name
  AND s.external_ids <> '{{}}'::jsonb
  AND (s.external_ids || f.external_ids) IS DISTINCT FROM f.external_ids
"""


def upsert_features(
    conn: Conn,
    tally: ChangeTally,
    features: Iterable[tuple[NormalizedFeature, dict[str, str]]],
    progress: Progress | None = None,
) -> int:
    """Insert unknown features and merge new identifiers into known ones; returns the distinct features staged.

    Each item is a feature with extra identifiers (e.g. from an mwTab METABOLITES table) to add to its own.
    """
    merged: dict[tuple[str, str], tuple[NormalizedFeature, dict[str, str]]] = {}
    for feature, identifiers in features:
        key = (feature.feature_type, feature.normalized_name)
        ids = {**identifiers, **feature.external_ids}
        if key in merged:
            first, known = merged[key]
            merged[key] = (first, {**ids, **known})
        else:
            merged[key] = (feature, ids)
    conn.execute(_STAGE_FEATURES)
    with conn.cursor().copy(
        "COPY ingest_feature (feature_type, normalized_name, name, species_name, lipid_class, parsed, external_ids) "
        "FROM STDIN"
    ) as copy:
        for done, (feature, ids) in enumerate(merged.values(), start=1):
            copy.write_row(
                (
                    feature.feature_type,
                    feature.normalized_name,
                    feature.display_name,
                    feature.species_name,
                    feature.lipid_class,
                    feature.parsed,
                    json_text(ids),
                )
            )
            if progress is not None and done % 5000 == 0:
                progress(5000)
    if progress is not None:
        progress(len(merged) % 5000)
    conn.execute("ANALYZE ingest_feature")
    insert_staged_features(conn, tally)
    return len(merged)


def insert_staged_features(conn: Conn, tally: ChangeTally, staged: str = "ingest_feature") -> None:
    """Insert the unknown features of the temporary table ``staged`` and merge new identifiers into known ones.

    ``staged`` has the columns of ``ingest_feature`` and holds each (feature type, normalized name) once.
    """
    table = sql.Identifier(staged)
    tally.add("feature", inserted=conn.execute(sql.SQL(_INSERT_NEW_FEATURES).format(staged=table)).rowcount)
    tally.add("feature", updated=conn.execute(sql.SQL(_MERGE_IDENTIFIERS).format(staged=table)).rowcount)
