"""Write one signature — its row, component features and components — then score it against every dataset,
in the caller's transaction. Components are merged set-wise like dataset features: changed rows updated, new
rows inserted, components no longer in the file deleted, equal rows left alone."""

from __future__ import annotations

from ingest.errors import IngestError
from ingest.scoring import ScoringOptions
from ingest.writer.features import upsert_features
from ingest.writer.inputs import SignatureInput, WriteResult
from ingest.writer.matches import score_signature_everywhere
from ingest.writer.rows import ChangeTally, Conn, ensure_named, link, upsert_row

_STAGE_COMPONENTS = """
CREATE TEMP TABLE ingest_component (
    feature_type text NOT NULL,
    normalized_name text NOT NULL,
    raw_name text NOT NULL,
    direction text NOT NULL,
    weight double precision NOT NULL
) ON COMMIT DROP
"""

_RESOLVE = """
CREATE TEMP TABLE ingest_component_link ON COMMIT DROP AS
SELECT f.id AS feature_id, s.raw_name, s.direction, s.weight
FROM ingest_component s
JOIN feature f ON f.feature_type = s.feature_type AND f.normalized_name = s.normalized_name
"""

_UPDATE = """
UPDATE signature_component c
SET raw_name = l.raw_name, direction = l.direction, weight = l.weight
FROM ingest_component_link l
WHERE c.signature_id = %(signature_id)s AND c.feature_id = l.feature_id
  AND (c.raw_name, c.direction, c.weight) IS DISTINCT FROM (l.raw_name, l.direction, l.weight)
"""

_INSERT = """
INSERT INTO signature_component (signature_id, feature_id, raw_name, direction, weight)
SELECT %(signature_id)s, l.feature_id, l.raw_name, l.direction, l.weight
FROM ingest_component_link l
WHERE NOT EXISTS (
    SELECT 1 FROM signature_component c WHERE c.signature_id = %(signature_id)s AND c.feature_id = l.feature_id
)
"""

_DELETE = """
DELETE FROM signature_component c
WHERE c.signature_id = %(signature_id)s
  AND NOT EXISTS (SELECT 1 FROM ingest_component_link l WHERE l.feature_id = c.feature_id)
"""


def check_components(signature: SignatureInput, path: str | None = None) -> None:
    """A signature lists each feature once: two rows naming one feature (after normalization) are refused."""
    seen: dict[tuple[str, str], int | None] = {}
    for component in signature.components:
        key = (component.feature.feature_type, component.feature.normalized_name)
        if key in seen:
            first = seen[key]
            where = f" (first at line {first})" if first is not None else ""
            raise IngestError(
                f"feature {component.feature.normalized_name!r} appears twice in the signature{where}",
                path=path,
                line=component.line,
            )
        seen[key] = component.line


def write_signature(conn: Conn, signature: SignatureInput, *, scoring: ScoringOptions | None = None) -> WriteResult:
    """Store ``signature`` and score it against every dataset. Runs in the caller's transaction."""
    check_components(signature)
    tally = ChangeTally()
    row = upsert_row(
        conn,
        tally,
        "signature",
        "name",
        signature.name,
        {
            "description": signature.description,
            "short_id": signature.short_id,
            "modalities": signature.modalities,
            "source_sha256": signature.source_sha256,
        },
    )
    notes: list[str] = []
    for name in dict.fromkeys(signature.programs):
        program_id, created = ensure_named(conn, tally, "program", name)
        if created:
            notes.append(f"program {name!r} created")
        link(conn, tally, "program_signature", ("program_id", program_id), ("signature_id", row.id))

    upsert_features(conn, tally, ((c.feature, {}) for c in signature.components))
    conn.execute(_STAGE_COMPONENTS)
    with conn.cursor().copy(
        "COPY ingest_component (feature_type, normalized_name, raw_name, direction, weight) FROM STDIN"
    ) as copy:
        for c in signature.components:
            copy.write_row((c.feature.feature_type, c.feature.normalized_name, c.raw_name, c.direction, c.weight))
    conn.execute(_RESOLVE)
    params = {"signature_id": row.id}
    tally.add("signature_component", updated=conn.execute(_UPDATE, params).rowcount)
    tally.add("signature_component", inserted=conn.execute(_INSERT, params).rowcount)
    tally.add("signature_component", deleted=conn.execute(_DELETE, params).rowcount)

    matches = score_signature_everywhere(conn, tally, row.id, scoring or ScoringOptions())
    changes = tally.freeze()
    return WriteResult(
        entity="signature",
        entity_id=row.id,
        name=signature.name,
        status=row.status(changes),
        changed_columns=row.changed_columns,
        changes=changes,
        matches=matches,
        created_links=tuple(notes),
    )
