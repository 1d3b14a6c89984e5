"""The streaming table path: cells that COPY's text format must escape arrive intact, merged duplicate groups
replace their spooled rows, a bad last line leaves nothing behind, and a re-ingest changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.errors import IngestError
from ingest.pipeline import DatasetOptions, connect, ingest_dataset, prepare_table_dataset
from ingest.scoring import ScoringOptions
from ingest.writer.staging import StagedFeatures

Conn = psycopg.Connection[tuple[Any, ...]]


def _ingest(url: str, path: Path, **options: Any) -> tuple[int, Any]:
    dataset, report = prepare_table_dataset(path, DatasetOptions(omics_type="transcriptomics", **options))
    assert isinstance(dataset.features, StagedFeatures)
    with connect(url) as conn:
        result = ingest_dataset(conn, dataset, scoring=ScoringOptions())
    return result.rows_changed, report


def test_names_with_tabs_newlines_and_backslashes_are_stored_as_written(tmp_path: Path, db_url: str) -> None:
    table = tmp_path / "odd.csv"
    table.write_text('gene,log2FC,pvalue\n"a\\b c",1.5,0.01\n"x\ty",-2,0.5\n"two\nlines",0.25,1\nTP53,3,0\n')
    changed, report = _ingest(db_url, table)
    assert report.rows_read == 4
    assert changed > 0
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT raw_name, log2_fold_change, p_value FROM dataset_feature ORDER BY raw_name"
        ).fetchall()
        names = {r[0] for r in conn.execute("SELECT normalized_name FROM feature").fetchall()}
    assert rows == [("TP53", 3.0, 0.0), ("a\\b c", 1.5, 0.01), ("two\nlines", 0.25, 1.0), ("x\ty", -2.0, 0.5)]
    assert names == {"TP53", "a\\b c", "two\nlines", "x\ty"}
    assert _ingest(db_url, table)[0] == 0


def test_a_merged_duplicate_group_replaces_its_rows(tmp_path: Path, db_url: str) -> None:
    table = tmp_path / "dups.csv"
    table.write_text("gene,log2FC,pvalue\nTP53,1,0.1\nEGFR,2,0.2\ntp53,3,0.3\nKRAS,4,0.4\nTP53_HUMAN,5,0.5\n")
    _, report = _ingest(db_url, table, on_duplicate="mean")
    assert report.rows_read == 5
    assert report.features == 3
    assert [(g.raw_names, g.lines) for g in report.merged] == [(("TP53", "tp53", "TP53_HUMAN"), (2, 4, 6))]
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT f.normalized_name, d.raw_name, d.log2_fold_change, d.p_value, d.extra "
            "FROM dataset_feature d JOIN feature f ON f.id = d.feature_id ORDER BY 1"
        ).fetchall()
    assert [r[:4] for r in rows] == [("EGFR", "EGFR", 2.0, 0.2), ("KRAS", "KRAS", 4.0, 0.4), ("TP53", "TP53", 3.0, 0.5)]
    assert rows[2][4]["merged_from"] == [
        {"raw_name": "TP53", "line": 2},
        {"raw_name": "tp53", "line": 4},
        {"raw_name": "TP53_HUMAN", "line": 6},
    ]
    assert _ingest(db_url, table, on_duplicate="mean")[0] == 0


def test_the_same_name_twice_is_refused_at_its_second_line(tmp_path: Path) -> None:
    table = tmp_path / "twice.csv"
    table.write_text("gene,log2FC,pvalue\nTP53,1,0.1\nEGFR,2,0.2\nTP53,3,0.3\n")
    with pytest.raises(IngestError) as refused:
        prepare_table_dataset(table, DatasetOptions(omics_type="transcriptomics"))
    assert refused.value.line == 4
    assert "first at line 2" in str(refused.value)


def test_a_bad_last_line_is_refused_before_the_database_is_touched(tmp_path: Path, db_url: str) -> None:
    table = tmp_path / "bad.csv"
    lines = [f"GENE{i},{i / 7:.4f},0.5" for i in range(5000)]
    table.write_text("gene,log2FC,pvalue\n" + "\n".join(lines) + "\nLAST,1.0,nope\n")
    with pytest.raises(IngestError) as refused:
        prepare_table_dataset(table, DatasetOptions(omics_type="transcriptomics"))
    assert (refused.value.line, refused.value.column) == (5002, "pvalue")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM feature").fetchone() == (0,)
