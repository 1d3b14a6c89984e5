"""Write one dataset — its row, features, per-feature statistics and links — then rescore it, in the caller's
transaction.

``dataset_feature`` is merged set-wise from a COPY-filled temporary table: changed rows are updated (compared
with ``IS DISTINCT FROM``, so equal values are never rewritten), new rows inserted, and rows for features no
longer in the file deleted. Re-running an unchanged input therefore writes nothing at all.
"""

from __future__ import annotations

import uuid

from ingest.scoring import ScoringOptions
from ingest.writer.features import Progress, json_text, upsert_features
from ingest.writer.inputs import DatasetInput, WriteResult
from ingest.writer.matches import score_dataset
from ingest.writer.rows import ChangeTally, Conn, ensure_named, link, upsert_row

_STAGE_LINKS = """
CREATE TEMP TABLE ingest_dataset_feature (
    feature_type text NOT NULL,
    normalized_name text NOT NULL,
    raw_name text NOT NULL,
    log2_fold_change double precision,
    p_value double precision,
    intensity double precision,
    extra jsonb NOT NULL
) ON COMMIT DROP
"""

_RESOLVE_LINKS = """
CREATE TEMP TABLE ingest_link ON COMMIT DROP AS
SELECT f.id AS feature_id, s.raw_name, s.log2_fold_change, s.p_value, s.intensity, s.extra
FROM ingest_dataset_feature s
JOIN feature f ON f.feature_type = s.feature_type AND f.normalized_name = s.normalized_name
"""

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

    upsert_features(
        conn,
        tally,
        ((f.feature, _identifiers(f.extra)) for f in dataset.features),
        progress,
    )
    conn.execute(_STAGE_LINKS)
    with conn.cursor().copy(
        "COPY ingest_dataset_feature (feature_type, normalized_name, raw_name, log2_fold_change, p_value, "
        "intensity, extra) FROM STDIN"
    ) as copy:
        for done, item in enumerate(dataset.features, start=1):
            copy.write_row(
                (
                    item.feature.feature_type,
                    item.feature.normalized_name,
                    item.raw_name,
                    item.log2_fold_change,
                    item.p_value,
                    item.intensity,
                    json_text(item.extra),
                )
            )
            if progress is not None and done % 5000 == 0:
                progress(5000)
    if progress is not None:
        progress(len(dataset.features) % 5000)
    conn.execute(_RESOLVE_LINKS)
    conn.execute("ANALYZE ingest_link")
    params = {"dataset_id": row.id}
    tally.add("dataset_feature", updated=conn.execute(_UPDATE_CHANGED_LINKS, params).rowcount)
    tally.add("dataset_feature", inserted=conn.execute(_INSERT_NEW_LINKS, params).rowcount)
    tally.add("dataset_feature", deleted=conn.execute(_DELETE_REMOVED_LINKS, params).rowcount)

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
