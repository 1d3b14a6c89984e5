"""Write one dataset — its row, features, per-feature statistics and links — then rescore it, in the caller's
transaction.

Features and their statistics are staged with one COPY into a temporary table (streamed from a spool file for a
large table, see ``staging``); unknown features are inserted from it, and ``dataset_feature`` is merged set-wise:
changed rows are updated (compared with ``IS DISTINCT FROM``, so equal values are never rewritten), new rows
inserted, and rows for features no longer in the file deleted.
Re-running an unchanged input therefore writes nothing at all.
"""

from __future__ import annotations

import uuid

from psycopg import sql

from ingest.scoring import ScoringOptions
from ingest.writer.features import Progress, insert_staged_features
from ingest.writer.inputs import DatasetFeatureInput, DatasetInput, WriteResult
from ingest.writer.matches import score_dataset
from ingest.writer.rows import ChangeTally, Conn, ensure_named, link, upsert_row
from ingest.writer.staging import STAGE_COLUMNS, STAGE_TABLE_DDL, StagedFeatures, feature_ids, format_row, json_text

_RESOLVE_LINKS = """
CREATE TEMP TABLE ingest_link ON COMMIT DROP AS
SELECT f.id AS feature_id, s.raw_name, s.log2_fold_change, s.p_value, s.intensity, s.extra
FROM ingest_dataset_feature s
JOIN feature f ON f.feature_type = s.feature_type AND f.normalized_name = s.normalized_name
"""

# A dataset created by this command has no dataset_feature rows yet: its links are inserted straight from the
# staged rows, with no link table to diff against and nothing to update or delete.
_INSERT_LINKS_OF_NEW_DATASET = """
INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change, p_value, intensity, extra)
SELECT %(dataset_id)s, f.id, s.raw_name, s.log2_fold_change, s.p_value, s.intensity, s.extra
FROM ingest_dataset_feature s
JOIN feature f ON f.feature_type = s.feature_type AND f.normalized_name = s.normalized_name
ORDER BY f.id  -- index-order inserts: the primary key and feature_id index fill page by page
"""

# Sorts and hashes over the staged rows stay in memory up to this size (the default 4 MB spills a 10^5-row
# table's sort to disk). Transaction-scoped (set_config(..., true)).
_WORK_MEM = "64MB"

_UPDATE_CHANGED_LINKS = """
UPDATE dataset_feature d
SET raw_name = l.raw_name, log2_fold_change = l.log2_fold_change, p_value = l.p_value,
    intensity = l.intensity, extra = l.extra
FROM ingest_link l
WHERE d.dataset_id = %(dataset_id)s
  AND d.feature_id = l.feature_id
  AND (d.raw_name, d.log2_fold_change, d.p_value, d.intensity, d.extra)
      IS DISTINCT FROM (l.raw_name, l.log2_fold_change, l.p_value, l.intensity, l.extra)
"""

_INSERT_NEW_LINKS = """
INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change, p_value, intensity, extra)
SELECT %(dataset_id)s, l.feature_id, l.raw_name, l.log2_fold_change, l.p_value, l.intensity, l.extra
FROM ingest_link l
WHERE NOT EXISTS (
    SELECT 1 FROM dataset_feature d WHERE d.dataset_id = %(dataset_id)s AND d.feature_id = l.feature_id
)
ORDER BY l.feature_id  -- index-order inserts: the primary key and feature_id index fill page by page
"""

_DELETE_REMOVED_LINKS = """
DELETE FROM dataset_feature d
WHERE d.dataset_id = %(dataset_id)s
  AND NOT EXISTS (SELECT 1 FROM ingest_link l WHERE l.feature_id = d.feature_id)
"""


def write_dataset(
    conn: Conn,
    dataset: DatasetInput,
    *,
    scoring: ScoringOptions | None = None,
    progress: Progress | None = None,
) -> WriteResult:
    """Store ``dataset`` and score it against every signature. Runs in the caller's transaction."""
    tally = ChangeTally()
    row = upsert_row(
        conn,
        tally,
        "dataset",
        "natural_key",
        dataset.natural_key,
        {
            "name": dataset.name,
            "omics_type": dataset.omics_type,
            "description": dataset.description,
            "organism": dataset.organism,
            "disease": dataset.disease,
            "sample_type": dataset.sample_type,
            "matrix": dataset.matrix,
            "model_systems": dataset.model_systems,
            "summary": dataset.summary,
            "methods": dataset.methods,
            "results": dataset.results,
            "conclusions": dataset.conclusions,
            "data_origin": dataset.data_origin,
            "dataset_source_type": dataset.dataset_source_type,
            "source_url": dataset.source_url,
            "file_paths": dataset.file_paths,
            "external_ids": dataset.external_ids,
            "source_sha256": dataset.source_sha256,
        },
    )
    created_links = _link_programs_and_experiments(conn, tally, row.id, dataset)

    work_mem = conn.execute("SELECT current_setting('work_mem'), set_config('work_mem', %s, true)", (_WORK_MEM,))
    caller_work_mem = str(_first(work_mem.fetchone()))
    _stage(conn, dataset.features, progress)
    conn.execute("ANALYZE ingest_dataset_feature")
    # A dataset names each feature once (duplicate rows were merged before), so the staged rows are the features.
    insert_staged_features(conn, tally, "ingest_dataset_feature")
    params = {"dataset_id": row.id}
    if row.created:
        tally.add("dataset_feature", inserted=conn.execute(_INSERT_LINKS_OF_NEW_DATASET, params).rowcount)
    else:
        conn.execute(_RESOLVE_LINKS)
        conn.execute("ANALYZE ingest_link")
        tally.add("dataset_feature", updated=conn.execute(_UPDATE_CHANGED_LINKS, params).rowcount)
        tally.add("dataset_feature", inserted=conn.execute(_INSERT_NEW_LINKS, params).rowcount)
        tally.add("dataset_feature", deleted=conn.execute(_DELETE_REMOVED_LINKS, params).rowcount)

    # Back to the caller's setting: the API may run this inside a transaction of the caller's that goes on.
    conn.execute("SELECT set_config('work_mem', %s, true)", (caller_work_mem,))
    matches = score_dataset(conn, tally, row.id, scoring or ScoringOptions())
    changes = tally.freeze()
    status = row.status(changes)
    return WriteResult(
        entity="dataset",
        entity_id=row.id,
        name=dataset.name,
        status=status,
        changed_columns=row.changed_columns,
        changes=changes,
        matches=matches,
        created_links=created_links,
    )


def _stage(conn: Conn, features: tuple[DatasetFeatureInput, ...] | StagedFeatures, progress: Progress | None) -> None:
    """Fill ``ingest_dataset_feature`` with one COPY: spooled bytes as they are, in-memory rows formatted alike."""
    conn.execute(STAGE_TABLE_DDL)
    copy_sql = sql.SQL("COPY ingest_dataset_feature ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, STAGE_COLUMNS))
    )
    with conn.cursor().copy(copy_sql) as copy:
        if isinstance(features, StagedFeatures):
            for chunk in features.chunks():
                copy.write(chunk)
        else:
            for done, item in enumerate(features, start=1):
                copy.write(_row(item))
                if progress is not None and done % 5000 == 0:
                    progress(5000)
    if isinstance(features, StagedFeatures) and (features.replaced_lines or features.replacements):
        # Rows of merged duplicate groups give way to the merged rows.
        conn.execute("DELETE FROM ingest_dataset_feature WHERE line = ANY(%s)", (list(features.replaced_lines),))
        with conn.cursor().copy(copy_sql) as copy:
            for row in features.replacements:
                copy.write(row)
    if progress is not None:
        progress(len(features) if isinstance(features, StagedFeatures) else len(features) % 5000)


def _first(row: tuple[object, ...] | None) -> object:
    assert row is not None
    return row[0]


def _row(item: DatasetFeatureInput) -> str:
    return format_row(
        None,
        item.feature,
        feature_ids(item.feature, _identifiers(item.extra)),
        item.raw_name,
        item.log2_fold_change,
        item.p_value,
        item.intensity,
        json_text(item.extra),
    )


def _identifiers(extra: object) -> dict[str, str]:
    """Identifiers a reader attached to a measured feature (``extra["identifiers"]``) also belong on the feature."""
    if isinstance(extra, dict):
        ids = extra.get("identifiers")
        if isinstance(ids, dict):
            return {str(k): str(v) for k, v in ids.items()}
    return {}


def _link_programs_and_experiments(
    conn: Conn, tally: ChangeTally, dataset_id: uuid.UUID, dataset: DatasetInput
) -> tuple[str, ...]:
    notes: list[str] = []
    for name in dict.fromkeys(dataset.programs):
        program_id, created = ensure_named(conn, tally, "program", name)
        if created:
            notes.append(f"program {name!r} created")
        link(conn, tally, "program_dataset", ("program_id", program_id), ("dataset_id", dataset_id))
    for name in dict.fromkeys(dataset.experiments):
        experiment_id, created = ensure_named(conn, tally, "experiment", name)
        if created:
            notes.append(f"experiment {name!r} created")
        link(conn, tally, "experiment_dataset", ("experiment_id", experiment_id), ("dataset_id", dataset_id))
    return tuple(notes)
