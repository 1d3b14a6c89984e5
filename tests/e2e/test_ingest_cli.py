"""The ``ingest`` CLI as a user runs it: exit codes, messages that name file/line/column, nothing written on bad
input, ``--json`` and ``--dry-run``, and a database that cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from ingest.cli import app

Conn = psycopg.Connection[tuple[Any, ...]]
TABLES = ("dataset", "feature", "dataset_feature", "signature", "signature_component", "dataset_signature", "program")


def run(*args: object) -> Any:
    # POSTGRES_URL is unset so that a test can only ever reach the database it names with --db.
    return CliRunner().invoke(app, [str(a) for a in args], env={"POSTGRES_URL": None})


def snapshot(conn: Conn) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the domain tables, so "nothing written" covers updates as well as inserts."""
    return {t: sorted(map(tuple, conn.execute(f"SELECT * FROM {t}").fetchall()), key=repr) for t in TABLES}


@pytest.fixture
def seeded(db_url: str, conn: Conn, sample_data: Path) -> dict[str, list[tuple[Any, ...]]]:
    samples = sample_data / "samples"
    assert run("signature", samples / "ALS-CSF-Core-6Ceramides.tsv", "--db", db_url).exit_code == 0
    ok = run(
        "dataset", samples / "sample_lipidomics_data.csv", "--omics-type", "lipidomics", "--key", "target",
        "--db", db_url,
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    return snapshot(conn)


BAD_TABLES: dict[str, tuple[bytes, str, str]] = {
    # name: (content, omics type, expected message fragment with location)
    "empty": (b"", "lipidomics", "the file is empty"),
    "blank lines only": (b"\n\n  \n", "lipidomics", "the file is empty"),
    "header only": (b"Lipid Species,log2FC\n", "lipidomics", ":1: the table has a header but no data rows"),
    "no identity column": (b"foo,bar\nx,1\n", "transcriptomics", ":1: no feature column for transcriptomics"),
    "duplicate rows": (b"gene,log2FC\nTP53,1\nEGFR,2\nTP53,3\n", "transcriptomics", ":4: duplicate feature row"),
    "non-numeric statistic": (b"gene,log2FC\nTP53,1\nEGFR,high\n", "transcriptomics", ":3:log2FC: not a number"),
    "nan": (b"gene,log2FC,pvalue\nTP53,NaN,0.1\n", "transcriptomics", ":2:log2FC: 'NaN' is not a finite number"),
    "inf": (b"gene,log2FC,pvalue\nTP53,1,inf\n", "transcriptomics", ":2:pvalue: 'inf' is not a finite number"),
    "p-value out of range": (b"gene,pvalue\nTP53,1.5\n", "transcriptomics", ":2:pvalue: p-value 1.5 is outside"),
    "undecodable bytes": (b"gene,log2FC\nTP53,1\nEGF\xffR,2\n", "transcriptomics", ":3: bytes ff are not valid UTF-8"),
    "ragged row": (b"gene,log2FC\nTP53,1,7\n", "transcriptomics", ":2: has 3 cells, the header has 2"),
    "empty feature name": (b"gene,log2FC\n,1\n", "transcriptomics", ":2:gene: the feature name is empty"),
    "nan in a sample matrix": (b"Metabolite,S1,S2\nalanine,1,2\nglycine,3,nan\n", "metabolomics", ":3:S2:"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_table_exits_2_naming_file_and_line_and_writes_nothing(
    case: str, db_url: str, conn: Conn, seeded: dict[str, list[tuple[Any, ...]]], tmp_path: Path
) -> None:
    content, omics_type, fragment = BAD_TABLES[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    # Same key as the seeded dataset: a partial write would show up as changed rows.
    result = run("dataset", path, "--omics-type", omics_type, "--key", "target", "--db", db_url)
    assert result.exit_code == 2, result.output
    assert str(path) in result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert snapshot(conn) == seeded


def test_no_database_given_exits_2(sample_data: Path) -> None:
    result = run("dataset", sample_data / "samples" / "ST004396.csv", "--omics-type", "metabolomics")
    assert result.exit_code == 2
    assert "no database: pass --db URL or set POSTGRES_URL" in result.output


def test_unknown_omics_type_exits_2(db_url: str, sample_data: Path) -> None:
    result = run("dataset", sample_data / "samples" / "ST004396.csv", "--omics-type", "glycomics", "--db", db_url)
    assert result.exit_code == 2
    assert "unknown omics type 'glycomics'" in result.output


def test_missing_file_exits_2(db_url: str, tmp_path: Path) -> None:
    result = run("dataset", tmp_path / "nope.csv", "--omics-type", "lipidomics", "--db", db_url)
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_unknown_feature_column_exits_2_listing_the_columns(db_url: str, sample_data: Path) -> None:
    path = sample_data / "samples" / "sample_lipidomics_data.csv"
    result = run("dataset", path, "--omics-type", "lipidomics", "--feature-column", "Name", "--db", db_url)
    assert result.exit_code == 2
    assert "'Name' is not a column" in result.output
    assert "Lipid Species" in result.output


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda text: text[:20000], ":178: cannot parse mwTab"),
        (lambda text: "hello\tworld\n", "not an mwTab file"),
        (lambda text: text.replace("MS_METABOLITE_DATA", "XX_DATA"), "no metabolite data"),
    ],
    ids=["truncated", "not mwtab", "no data section"],
)
def test_mwtab_that_does_not_parse_exits_2_and_writes_nothing(
    make: Any, fragment: str, db_url: str, conn: Conn, seeded: dict[str, list[tuple[Any, ...]]],
    sample_data: Path, tmp_path: Path,
) -> None:  # fmt: skip
    path = tmp_path / "broken.txt"
    path.write_text(make((sample_data / "mwtab" / "ST000001_AN000001.txt").read_text()))
    result = run("mwtab", path, "--db", db_url)
    assert result.exit_code == 2, result.output
    assert str(path) in result.output
    assert fragment in result.output
    assert snapshot(conn) == seeded


def test_database_unreachable_exits_1_without_the_password(sample_data: Path) -> None:
    url = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/nowhere"
    result = run("dataset", sample_data / "samples" / "ST004396.csv", "--omics-type", "metabolomics", "--db", url)
    assert result.exit_code == 1
    assert "cannot use the database at 127.0.0.1:1/nowhere" in result.output
    assert "s3cr3t-pw" not in result.output
    assert "Traceback" not in result.output


def test_json_summary_and_a_second_run_that_changes_nothing(db_url: str, sample_data: Path) -> None:
    path = sample_data / "samples" / "ST004396.csv"
    first = run("dataset", path, "--omics-type", "metabolomics", "--db", db_url, "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["status"] == "created"
    assert summary["read"]["features"] == 82
    assert summary["changes"]["dataset_feature"]["inserted"] == 82
    second = json.loads(run("dataset", path, "--omics-type", "metabolomics", "--db", db_url, "--json").stdout)
    assert second["status"] == "unchanged"
    assert second["rows_changed"] == 0


def test_dry_run_shows_changes_and_writes_nothing(db_url: str, conn: Conn, sample_data: Path) -> None:
    result = run("mwtab", sample_data / "mwtab" / "ST000001_AN000001.txt", "--dry-run", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    assert "ribitol" in result.output  # the merged duplicate group is reported
    assert conn.execute("SELECT count(*) FROM dataset").fetchone() == (0,)


def test_program_and_experiment_commands_create_then_leave_unchanged(db_url: str, conn: Conn) -> None:
    assert run("program", "ALS", "--disease", "ALS", "--db", db_url).exit_code == 0
    created = json.loads(
        run("experiment", "CSF", "--type", "patient", "--program", "ALS", "--db", db_url, "--json").stdout
    )
    assert created["status"] == "created"
    again = json.loads(
        run("experiment", "CSF", "--type", "patient", "--program", "ALS", "--db", db_url, "--json").stdout
    )
    assert again["rows_changed"] == 0
    assert conn.execute("SELECT count(*) FROM program_experiment").fetchone() == (1,)
    bad = run("experiment", "CSF", "--type", "in_silico", "--db", db_url)
    assert bad.exit_code == 2
