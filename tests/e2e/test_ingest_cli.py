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
    # #13: before, the NUL reached Postgres ("exit 1, database error: ... NUL (0x00) bytes", no file or line)
    "NUL in a metabolite name": (
        b"Metabolite,S1,S2\nalanine,1,2\ngly\x00cine,3,4\n",
        "metabolomics",
        ":3:4: a NUL byte",
    ),
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


def _mwtab_lines(sample_data: Path) -> tuple[list[str], int]:
    lines = (sample_data / "mwtab" / "ST000122_AN000204.txt").read_text().split("\n")
    return lines, lines.index("MS_METABOLITE_DATA_START")


def _missing_values(lines: list[str], start: int) -> str:
    lines[start + 5] = "\t".join(lines[start + 5].split("\t")[:-3])  # data row 3 of 14: 3 of 42 values missing
    return "\n".join(lines)


def _extra_values(lines: list[str], start: int) -> str:
    lines[start + 3] += "\t1.0\t2.0"  # data row 1: two values beyond the last sample
    return "\n".join(lines)


def _short_header(lines: list[str], start: int) -> str:
    lines[start + 1] = "\t".join(lines[start + 1].split("\t")[:-2])  # Samples line: two samples fewer than the data
    return "\n".join(lines)


def _nul_in_name(lines: list[str], start: int) -> str:
    lines[start + 3] = "17-hydroxy\x00pregnenolone" + lines[start + 3].removeprefix("17-hydroxypregnenolone")
    return "\n".join(lines)


# (edit of ST000122_AN000204.txt, data line offset from MS_METABOLITE_DATA_START (0-based), column, message)
BAD_MWTAB = {
    "missing values": (_missing_values, 5, 41, "39 values for 42 samples (header on line"),
    "extra values": (_extra_values, 3, 44, "44 values, but the samples header on line"),
    "samples header shorter than the data": (_short_header, 2, 42, "names 40 samples"),
    "NUL in a metabolite name": (_nul_in_name, 3, 11, "a NUL byte (0x00)"),
}


@pytest.mark.parametrize("case", list(BAD_MWTAB))
def test_bad_mwtab_rows_exit_2_with_file_line_and_column_and_write_nothing(
    case: str, db_url: str, conn: Conn, seeded: dict[str, list[tuple[Any, ...]]], sample_data: Path, tmp_path: Path
) -> None:
    """#13 item 6. Ragged rows are refused, not padded: which sample lacks a value is unknown (reader docstring)."""
    edit, offset, column, fragment = BAD_MWTAB[case]
    lines, start = _mwtab_lines(sample_data)
    path = tmp_path / "deposit.txt"
    path.write_text(edit(lines, start))
    result = run("mwtab", path, "--db", db_url, "--json")
    assert result.exit_code == 2, result.output
    assert f"{path}:{start + offset + 1}:{column}:" in result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert "list index out of range" not in result.output
    assert snapshot(conn) == seeded


def test_a_json_mwtab_row_without_a_sample_exits_2_naming_the_row_and_sample(
    db_url: str, conn: Conn, seeded: dict[str, list[tuple[Any, ...]]], sample_data: Path, tmp_path: Path
) -> None:
    deposit = json.loads((sample_data / "mwtab" / "ST000122_AN000204.json").read_text())
    del deposit["MS_METABOLITE_DATA"]["Data"][0]["CER040_242995_ML_2"]
    path = tmp_path / "deposit.json"
    path.write_text(json.dumps(deposit))
    result = run("mwtab", path, "--db", db_url)
    assert result.exit_code == 2, result.output
    assert f"{path}:CER040_242995_ML_2: MS_METABOLITE_DATA Data row 1 ('17-hydroxypregnenolone') has no value" in (
        result.output
    )
    assert snapshot(conn) == seeded


BAD_SIGNATURES: dict[str, tuple[bytes, str]] = {
    # #13: before, the first direction column was used and the second ignored
    "two direction columns": (b"species\tdirection\tdirection\nCer(d18:1/16:0)\tup\tdown\n", ":1:3: column name"),
    "direction and regulation": (
        b"species\tdirection\tregulation\nCer(d18:1/16:0)\tup\tdown\n",
        ":1:3: two direction columns ('direction' and 'regulation')",
    ),
    # #13: before, the NUL reached Postgres and failed the transaction with a database error
    "NUL in a signature feature name": (b"species\tdirection\nCer(d18:1/16:0)\x00\tup\n", ":2:16: a NUL byte"),
}


@pytest.mark.parametrize("case", list(BAD_SIGNATURES))
def test_bad_signature_exits_2_naming_file_line_and_column_and_writes_nothing(
    case: str, db_url: str, conn: Conn, seeded: dict[str, list[tuple[Any, ...]]], tmp_path: Path
) -> None:
    content, fragment = BAD_SIGNATURES[case]
    path = tmp_path / "ALS-CSF-Core-6Ceramides.tsv"  # the seeded signature's name: a partial write would show
    path.write_bytes(content)
    result = run("signature", path, "--db", db_url)
    assert result.exit_code == 2, result.output
    assert f"{path}{fragment}" in result.output
    assert "Traceback" not in result.output
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
    # The command's time and its phases, in the order the progress display showed them.
    phases = [p["phase"] for p in summary["phases"]]
    assert phases == ["reading ST004396.csv", "writing"]
    assert all(p["seconds"] >= 0 for p in summary["phases"])
    assert sum(p["seconds"] for p in summary["phases"]) <= summary["seconds"] + 0.002
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


def test_gene_names_excel_made_into_dates_are_mapped_or_refused_and_reported(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    table = tmp_path / "degs.csv"
    table.write_text("gene,log2FC,pvalue\nTP53,1.2,0.01\n2-Sep,0.5,0.2\nMar-3,-0.7,0.03\n1-Mar,0.1,0.5\n")
    result = run("dataset", table, "--omics-type", "transcriptomics", "--db", db_url, "--json")
    assert result.exit_code == 0, result.output
    read = json.loads(result.output)["read"]
    assert read["excel_dates"] == [
        {"written": "2-Sep", "stored_as": "SEPTIN2"},
        {"written": "Mar-3", "stored_as": "MARCHF3"},
        {"written": "1-Mar", "stored_as": None},  # MARCH1 or MARC1: refused, not guessed
    ]
    (note,) = (n for n in read["notes"] if "spreadsheet dates" in n)
    assert "2-Sep → SEPTIN2" in note
    assert "refused" in note
    assert "1-Mar" in note
    assert read["unparsed"] == 1
    stored = conn.execute(
        "SELECT f.normalized_name, f.parsed FROM dataset_feature df JOIN feature f ON f.id = df.feature_id "
        "ORDER BY f.normalized_name"
    ).fetchall()
    assert stored == [("1-Mar", False), ("MARCHF3", True), ("SEPTIN2", True), ("TP53", True)]

    person = run("dataset", table, "--omics-type", "transcriptomics", "--key", "again", "--db", db_url)
    assert person.exit_code == 0, person.output
    assert "spreadsheet dates" in " ".join(person.output.split())
