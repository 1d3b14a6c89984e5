"""Programs and experiments: created or updated by name, only the given fields, only when they differ."""

from __future__ import annotations

from ingest.writer.inputs import ExperimentInput, ProgramInput, WriteResult
from ingest.writer.rows import ChangeTally, Conn, ensure_named, link, upsert_row


def write_program(conn: Conn, program: ProgramInput) -> WriteResult:
    tally = ChangeTally()
    row = upsert_row(
        conn, tally, "program", "name", program.name, {"description": program.description, "disease": program.disease}
    )
    changes = tally.freeze()
    return WriteResult(
        entity="program",
        entity_id=row.id,
        name=program.name,
        status=row.status(changes),
        changed_columns=row.changed_columns,
        changes=changes,
    )


def write_experiment(conn: Conn, experiment: ExperimentInput) -> WriteResult:
    tally = ChangeTally()
    row = upsert_row(
        conn,
        tally,
        "experiment",
        "name",
        experiment.name,
        {"type": experiment.type, "description": experiment.description, "disease": experiment.disease},
    )
    notes: list[str] = []
    for name in dict.fromkeys(experiment.programs):
        program_id, created = ensure_named(conn, tally, "program", name)
        if created:
            notes.append(f"program {name!r} created")
        link(conn, tally, "program_experiment", ("program_id", program_id), ("experiment_id", row.id))
    changes = tally.freeze()
    return WriteResult(
        entity="experiment",
        entity_id=row.id,
        name=experiment.name,
        status=row.status(changes),
        changed_columns=row.changed_columns,
        changes=changes,
        created_links=tuple(notes),
    )
