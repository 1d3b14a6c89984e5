"""The public Python API (ingest/api.py) on a real Postgres: values and files, the caller's transaction or its
own, idempotence, dry runs, bad values refused before anything is written, and signature scoring both ways."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest import api
from ingest.api import Component, Feature, IngestError

Conn = psycopg.Connection[tuple[Any, ...]]

CERAMIDES = (
    Feature("Cer(d18:1/16:0)", log2_fold_change=1.5, p_value=0.001),
    Feature("Cer(d18:1/18:0)", log2_fold_change=2.0, p_value=0.002),
    Feature("Cer(d18:1/24:0)", log2_fold_change=1.1, p_value=0.01),
    Feature("Cer(d18:1/24:1)", log2_fold_change=0.9, p_value=0.02, identifiers={"lipidmaps": "LMSP02010012"}),
)
SIGNATURE = tuple(
    Component(name, "up") for name in ("Cer(d18:1/16:0)", "Cer(d18:1/18:0)", "Cer(d18:1/24:0)", "Cer(d18:1/24:1)")
)


def _count(conn: Conn, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _dataset(db: api.Db, **overrides: Any) -> api.IngestResult:
    values: dict[str, Any] = {"key": "lab:als-csf", "name": "ALS CSF lipids", "omics_type": "lipidomics"}
    return api.ingest_dataset(CERAMIDES, db=db, **{**values, **overrides})


def test_a_dataset_from_values_is_created_then_unchanged_and_its_names_are_normalized(conn: Conn, db_url: str) -> None:
    first = _dataset(db_url, programs=["ALS"])
    assert (first.entity, first.status, first.dry_run) == ("dataset", "created", False)
    assert first.report is not None
    assert first.report.features == 4
    assert first.report.unparsed == 0
    again = _dataset(db_url, programs=["ALS"])
    assert (again.entity_id, again.status, again.rows_changed) == (first.entity_id, "unchanged", 0)
    names = {r[0] for r in conn.execute("SELECT f.name FROM feature f JOIN dataset_feature df ON df.feature_id = f.id")}
    assert "Cer 18:1;O2/16:0" in names
    extra = conn.execute(
        "SELECT df.extra FROM dataset_feature df JOIN feature f ON f.id = df.feature_id WHERE f.name LIKE %s",
        ("Cer 18:1;O2/24:1",),
    ).fetchone()
    assert extra is not None
    assert extra[0]["identifiers"] == {"lipidmaps": "LMSP02010012"}
    assert conn.execute("SELECT name FROM program").fetchall() == [("ALS",)]


def test_in_the_callers_transaction_nothing_is_committed_until_the_caller_commits(conn: Conn, db_url: str) -> None:
    with psycopg.connect(db_url) as caller:  # not autocommit: the caller's transaction
        caller.execute("INSERT INTO program (name) VALUES ('caller program')")
        result = _dataset(caller)
        assert result.status == "created"
        assert _count(conn, "dataset") == 0  # another session sees nothing yet
        caller.rollback()
    assert _count(conn, "dataset") == 0
    assert _count(conn, "program") == 0

    with psycopg.connect(db_url) as caller:
        caller.execute("INSERT INTO program (name) VALUES ('caller program')")
        _dataset(caller)
        caller.commit()
    assert _count(conn, "dataset") == 1
    assert _count(conn, "program") == 1


def test_a_failed_call_in_the_callers_transaction_undoes_only_its_own_work(conn: Conn, db_url: str) -> None:
    with psycopg.connect(db_url) as caller:
        caller.execute("INSERT INTO program (name) VALUES ('kept')")
        _dataset(caller)
        with pytest.raises(IngestError):
            api.ingest_signature(
                [Component("Cer(d18:1/16:0)", "up"), Component("Cer 18:1;O2/16:0", "down")], name="dup", db=caller
            )
        caller.commit()
    assert _count(conn, "program") == 1
    assert _count(conn, "dataset") == 1
    assert _count(conn, "signature") == 0


def test_an_idle_connection_gets_a_transaction_of_its_own_committed_by_the_call(conn: Conn, db_url: str) -> None:
    with psycopg.connect(db_url) as idle:
        _dataset(idle)
        assert _count(conn, "dataset") == 1  # visible at once from another session
    with psycopg.connect(db_url, autocommit=True) as autocommit:
        assert api.ingest_program("Neuro", db=autocommit, description="d").status == "created"
    assert _count(conn, "program") == 1


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([*CERAMIDES[:1], Feature("Cer(d18:1/18:0)", p_value=math.nan)], r"features\[1\]: p_value must be a finite"),
        ([Feature("Cer(d18:1/16:0)", p_value=1.5)], r"features\[0\] \('Cer\(d18:1/16:0\)'\): p_value 1.5 is outside"),
        ([Feature("  ")], r"features\[0\].name must be a non-empty string"),
        ([Feature("PC 16:0\x00/18:1")], r"features\[0\].name contains a NUL byte"),
        ([], "no features given"),
        (
            [*CERAMIDES, CERAMIDES[0]],
            r"duplicate feature row 'Cer\(d18:1/16:0\)'; choose a merge rule with on_duplicate",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_feature_and_nothing_is_written(
    conn: Conn, db_url: str, features: list[Feature], message: str
) -> None:
    with pytest.raises(IngestError, match=message):
        api.ingest_dataset(features, key="k", name="n", omics_type="lipidomics", db=db_url)
    assert _count(conn, "dataset") == 0
    assert _count(conn, "feature") == 0


def test_an_unknown_omics_type_and_a_bad_db_are_clear_errors(db_url: str) -> None:
    with pytest.raises(IngestError, match="unknown omics type 'lipids'"):
        api.ingest_dataset(CERAMIDES, key="k", name="n", omics_type="lipids", db=db_url)
    with pytest.raises(ValueError, match="db must be a Postgres URL or an open psycopg connection"):
        api.ingest_program("p", db="")


def test_duplicates_merged_by_the_rule_given(conn: Conn, db_url: str) -> None:
    features = [*CERAMIDES, Feature("Cer 18:1;O2/16:0", log2_fold_change=3.5, p_value=0.0001)]
    result = api.ingest_dataset(features, key="k", name="n", omics_type="lipidomics", on_duplicate="min-p", db=db_url)
    assert result.report is not None
    assert result.report.features == 4
    assert len(result.report.merged) == 1
    row = conn.execute("SELECT max(p_value) FILTER (WHERE log2_fold_change = 3.5) FROM dataset_feature").fetchone()
    assert row is not None
    assert row[0] == pytest.approx(0.0001)


def test_a_dry_run_reports_what_would_change_and_writes_nothing(conn: Conn, db_url: str) -> None:
    dry = _dataset(db_url, dry_run=True)
    assert (dry.status, dry.dry_run) == ("created", True)
    assert dry.rows_changed > 0
    assert _count(conn, "dataset") == 0


def test_a_signature_from_values_is_scored_against_the_datasets_and_duplicates_are_refused(
    conn: Conn, db_url: str
) -> None:
    dataset = _dataset(db_url)
    signature = api.ingest_signature(SIGNATURE, name="Core ceramides", db=db_url, programs=["ALS"])
    assert signature.entity == "signature"
    assert signature.status == "created"
    assert [(m.dataset_id, m.change) for m in signature.matches] == [(dataset.entity_id, "inserted")]
    with pytest.raises(IngestError, match="appears twice"):
        api.ingest_signature([*SIGNATURE, Component("Cer 18:1;O2/16:0", "down")], name="twice", db=db_url)
    with pytest.raises(IngestError, match=r"components\[0\] \('x'\): direction 'sideways'"):
        api.ingest_signature([Component("x", "sideways")], name="bad", db=db_url)  # type: ignore[arg-type]
    assert _count(conn, "signature") == 1


def test_files_through_the_api_equal_the_cli_path(conn: Conn, db_url: str, sample_data: Path) -> None:
    samples = sample_data / "samples"
    table = api.ingest_dataset_file(samples / "sample_lipidomics_data.csv", omics_type="lipidomics", db=db_url)
    assert table.status == "created"
    assert table.report is not None
    assert table.report.features == 12
    sig = api.ingest_signature_file(samples / "ALS-CSF-Core-6Ceramides.tsv", db=db_url)
    assert [m.dataset_id for m in sig.matches] == [table.entity_id]
    experiment = api.ingest_experiment("CSF cohort", db=db_url, type="patient", programs=["ALS"])
    assert experiment.entity == "experiment"
    assert experiment.status == "created"
    with pytest.raises(IngestError, match="type 'mouse'"):
        api.ingest_experiment("x", db=db_url, type="mouse")  # type: ignore[arg-type]
    assert _count(conn, "experiment") == 1
