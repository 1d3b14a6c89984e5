"""Ingest into a real Postgres: counts for every sample file, signature scores in either order, idempotence read
back from a wal2json slot, changed files updating only what changed, dry runs, and mwTab specifics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from ingest.errors import IngestError
from ingest.pipeline import (
    DatasetOptions,
    connect,
    ingest_dataset,
    ingest_signature,
    prepare_mwtab_dataset,
    prepare_signature,
    prepare_table_dataset,
)
from ingest.scoring import ScoringOptions
from ingest.writer import WriteResult

Conn = psycopg.Connection[tuple[Any, ...]]
DOMAIN_TABLES = (
    "program",
    "experiment",
    "dataset",
    "feature",
    "dataset_feature",
    "signature",
    "signature_component",
    "dataset_signature",
    "program_dataset",
    "experiment_dataset",
    "program_experiment",
    "program_signature",
)
SCORING = ScoringOptions()


def ingest_table(url: str, path: Path, omics_type: str, *, dry_run: bool = False, **options: Any) -> WriteResult:
    dataset, _ = prepare_table_dataset(path, DatasetOptions(omics_type=omics_type, **options))
    with connect(url) as conn:
        return ingest_dataset(conn, dataset, scoring=SCORING, dry_run=dry_run)


def ingest_mwtab(url: str, path: Path, **options: Any) -> WriteResult:
    dataset, _ = prepare_mwtab_dataset(path, DatasetOptions(**options))
    with connect(url) as conn:
        return ingest_dataset(conn, dataset, scoring=SCORING)


def ingest_sig(url: str, path: Path) -> WriteResult:
    signature, _ = prepare_signature(path)
    with connect(url) as conn:
        return ingest_signature(conn, signature, scoring=SCORING)


def counts(conn: Conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in DOMAIN_TABLES}  # type: ignore[index]


def features_of(conn: Conn, natural_key: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM dataset_feature df JOIN dataset d ON d.id = df.dataset_id WHERE d.natural_key = %s",
        (natural_key,),
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("file", "omics_type", "key", "features"),
    [
        ("ST004396.csv", "metabolomics", "metabolomics:ST004396.csv", 82),
        ("sample_lipidomics_data.csv", "lipidomics", "lipidomics:sample_lipidomics_data.csv", 12),
        ("test_proteomics_mixed.csv", "proteomics", "proteomics:test_proteomics_mixed.csv", 3),
        # tp53 and TP53_HUMAN are one gene: merged (and reported), ENSG00000141510 stays apart.
        ("test_transcriptomics_mixed.csv", "transcriptomics", "transcriptomics:test_transcriptomics_mixed.csv", 2),
    ],
)
def test_every_sample_table_ingests_with_its_feature_count(
    db_url: str, conn: Conn, sample_data: Path, file: str, omics_type: str, key: str, features: int
) -> None:
    result = ingest_table(db_url, sample_data / "samples" / file, omics_type)
    assert result.status == "created"
    assert features_of(conn, key) == features


def test_sample_matrix_rows_keep_mean_intensity_and_sample_summary(db_url: str, conn: Conn, sample_data: Path) -> None:
    ingest_table(db_url, sample_data / "samples" / "ST004396.csv", "metabolomics")
    row = conn.execute(
        "SELECT df.intensity, df.extra FROM dataset_feature df WHERE df.raw_name = '3-Dehydroxycarnitine'"
    ).fetchone()
    assert row is not None
    values = [105083117, 159364713, 143510553, 145162624]
    assert row[0] == pytest.approx(sum(values) / 4)
    assert row[1] == {"n_samples": 4, "min": min(values), "max": max(values)}


@pytest.mark.parametrize(
    ("file", "key", "rows", "features"),
    [
        ("ST000001_AN000001.txt", "mw:ST000001:AN000001", 108, 107),  # ribitol twice → merged
        ("ST000122_AN000204.txt", "mw:ST000122:AN000204", 14, 14),
        ("ST000122_AN000204.json", "mw:ST000122:AN000204", 14, 14),
        ("ST000122_AN000204_ids.txt", "mw:ST000122:AN000204", 14, 14),
        ("ST000122_AN000204_ids.json", "mw:ST000122:AN000204", 14, 14),  # Data rows keyed metabolite_name
    ],
)
def test_every_mwtab_fixture_ingests_with_its_metabolite_count(
    db_url: str, conn: Conn, sample_data: Path, file: str, key: str, rows: int, features: int
) -> None:
    dataset, report = prepare_mwtab_dataset(sample_data / "mwtab" / file, DatasetOptions())
    assert report.rows_read == rows
    with connect(db_url) as c:
        ingest_dataset(c, dataset, scoring=SCORING)
    assert features_of(conn, key) == features


def test_mwtab_study_metadata_and_identifiers_are_kept(db_url: str, conn: Conn, sample_data: Path) -> None:
    dataset, report = prepare_mwtab_dataset(sample_data / "mwtab" / "ST000001_AN000001.txt", DatasetOptions())
    with connect(db_url) as c:
        ingest_dataset(c, dataset, scoring=SCORING)
    row = conn.execute(
        "SELECT name, omics_type, organism, external_ids, summary, description FROM dataset "
        "WHERE natural_key = 'mw:ST000001:AN000001'"
    ).fetchone()
    assert row is not None
    name, omics_type, organism, external_ids, summary, description = row
    assert name == "Fatb Induction Experiment (FatBIE)"
    assert omics_type == "metabolomics"
    assert organism == ["Arabidopsis thaliana"]
    assert external_ids == {"mw_study_id": "ST000001", "mw_analysis_id": "AN000001"}
    assert summary.startswith("This experiment tests the consequence of a mutation at the FatB gene")
    assert "University of California, Davis" in description
    [ribitol] = [g for g in report.merged if "ribitol" in g.raw_names]
    assert ribitol.lines == (241, 260)
    assert ribitol.rule == "mean"
    ids = conn.execute(
        "SELECT f.external_ids, df.extra FROM dataset_feature df JOIN feature f ON f.id = df.feature_id "
        "WHERE df.raw_name = '1,2,4-benzenetriol'"
    ).fetchone()
    assert ids is not None
    assert ids[0]["pubchem_cid"] == "10787"
    assert ids[0]["kegg"] == "C02814"
    assert ids[1]["identifiers"]["kegg"] == "C02814"
    assert ids[1]["n_samples"] == 24


def test_mwtab_project_id_is_an_external_id(db_url: str, conn: Conn, sample_data: Path) -> None:
    ingest_mwtab(db_url, sample_data / "mwtab" / "ST000122_AN000204.txt")
    row = conn.execute("SELECT external_ids FROM dataset").fetchone()
    assert row is not None
    assert row[0] == {"mw_study_id": "ST000122", "mw_analysis_id": "AN000204", "mw_project_id": "PR000109"}


def _binned_copy(sample_data: Path, tmp_path: Path) -> Path:
    text = (sample_data / "mwtab" / "ST000122_AN000204.txt").read_text()
    text = text.replace("MS_METABOLITE_DATA", "NMR_BINNED_DATA").replace("Samples\t", "Bin range(ppm)\t", 1)
    lines = []
    for number, line in enumerate(text.splitlines()):
        if line and line[0].isdigit() and "\t" in line and not line.startswith("1,"):
            line = f"{number / 100:.2f}...{number / 100 + 0.04:.2f}\t" + line.split("\t", 1)[1]
        lines.append(line)
    path = tmp_path / "binned.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_binned_nmr_data_is_refused_unless_allowed(db_url: str, conn: Conn, sample_data: Path, tmp_path: Path) -> None:
    path = _binned_copy(sample_data, tmp_path)
    with pytest.raises(IngestError, match=r"NMR_BINNED_DATA.*--allow-bins"):
        prepare_mwtab_dataset(path, DatasetOptions())
    result = ingest_mwtab(db_url, path, allow_bins=True)
    assert result.status == "created"
    assert features_of(conn, "mw:ST000122:AN000204") > 0


@pytest.mark.parametrize("signature_first", [True, False], ids=["signature-first", "dataset-first"])
def test_als_signature_scores_0714_with_full_overlap_in_either_order(
    db_url: str, conn: Conn, sample_data: Path, signature_first: bool
) -> None:
    samples = sample_data / "samples"
    if signature_first:
        ingest_sig(db_url, samples / "ALS-CSF-Core-6Ceramides.tsv")
        result = ingest_table(db_url, samples / "sample_lipidomics_data.csv", "lipidomics")
    else:
        ingest_table(db_url, samples / "sample_lipidomics_data.csv", "lipidomics")
        result = ingest_sig(db_url, samples / "ALS-CSF-Core-6Ceramides.tsv")
    [match] = result.matches
    assert match.change == "inserted"
    row = conn.execute(
        "SELECT score, overlap_fraction, matched_components, total_components FROM dataset_signature"
    ).fetchone()
    assert row is not None
    assert round(row[0], 3) == 0.714
    assert row[1:] == (1.0, 6, 6)


def test_metabolite_dataset_does_not_match_the_lipid_signature(db_url: str, conn: Conn, sample_data: Path) -> None:
    ingest_sig(db_url, sample_data / "samples" / "ALS-CSF-Core-6Ceramides.tsv")
    result = ingest_table(db_url, sample_data / "samples" / "ST004396.csv", "metabolomics")
    assert result.matches == ()
    assert counts(conn)["dataset_signature"] == 0


def _ingest_everything(url: str, sample_data: Path) -> None:
    samples, mw = sample_data / "samples", sample_data / "mwtab"
    ingest_sig(url, samples / "ALS-CSF-Core-6Ceramides.tsv")
    for file, omics_type in [
        ("ST004396.csv", "metabolomics"),
        ("sample_lipidomics_data.csv", "lipidomics"),
        ("test_proteomics_mixed.csv", "proteomics"),
        ("test_transcriptomics_mixed.csv", "transcriptomics"),
    ]:
        ingest_table(url, samples / file, omics_type, programs=("ALS",), experiments=("CSF panel",))
    ingest_mwtab(url, mw / "ST000001_AN000001.txt")
    ingest_mwtab(url, mw / "ST000122_AN000204.txt")


def _slot_changes(conn: Conn, slot: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, 'format-version', '2')", (slot,)
    ).fetchall()
    return [orjson.loads(r[0]) for r in rows]


def test_reingesting_unchanged_files_writes_no_row_to_the_wal(db_url: str, conn: Conn, sample_data: Path) -> None:
    _ingest_everything(db_url, sample_data)
    before = counts(conn)
    conn.execute("SELECT pg_create_logical_replication_slot('ingest_idempotence', 'wal2json')")
    _ingest_everything(db_url, sample_data)
    changes = [r for r in _slot_changes(conn, "ingest_idempotence") if r["action"] in ("I", "U", "D")]
    conn.execute("SELECT pg_drop_replication_slot('ingest_idempotence')")
    assert changes == []
    assert counts(conn) == before
    assert before["dataset_signature"] == 1


def test_a_changed_file_updates_only_what_changed(db_url: str, conn: Conn, tmp_path: Path) -> None:
    path = tmp_path / "genes.csv"
    path.write_text("gene,log2FC,pvalue\nTP53,1.0,0.01\nBRCA1,-2.0,0.001\nEGFR,0.5,0.2\n")
    ingest_table(db_url, path, "transcriptomics")
    conn.execute("SELECT pg_create_logical_replication_slot('ingest_changed', 'wal2json')")
    path.write_text("gene,log2FC,pvalue\nTP53,1.0,0.01\nBRCA1,-2.5,0.001\nMYC,3.0,0.0001\n")
    result = ingest_table(db_url, path, "transcriptomics")
    records = [r for r in _slot_changes(conn, "ingest_changed") if r["action"] in ("I", "U", "D")]
    conn.execute("SELECT pg_drop_replication_slot('ingest_changed')")
    by_table: dict[str, list[str]] = {}
    for record in records:
        by_table.setdefault(record["table"], []).append(record["action"])
    # The dataset row changes (its file hash), BRCA1 is updated, MYC inserted (feature + link), EGFR unlinked.
    assert {t: sorted(a) for t, a in by_table.items()} == {
        "dataset": ["U"],
        "feature": ["I"],
        "dataset_feature": ["D", "I", "U"],
    }
    assert result.changed_columns == ("source_sha256",)
    names = {r[0] for r in conn.execute("SELECT raw_name FROM dataset_feature").fetchall()}
    assert names == {"TP53", "BRCA1", "MYC"}


def test_a_changed_dataset_that_no_longer_matches_loses_its_stored_match(
    db_url: str, conn: Conn, sample_data: Path, tmp_path: Path
) -> None:
    ingest_sig(db_url, sample_data / "samples" / "ALS-CSF-Core-6Ceramides.tsv")
    path = tmp_path / "lipids.csv"
    path.write_text((sample_data / "samples" / "sample_lipidomics_data.csv").read_text())
    ingest_table(db_url, path, "lipidomics", key="lipids")
    assert counts(conn)["dataset_signature"] == 1
    path.write_text("Lipid Species,log2FC\nPC(16:0/18:1),1.0\n")
    result = ingest_table(db_url, path, "lipidomics", key="lipids")
    assert [m.change for m in result.matches] == ["deleted"]
    assert counts(conn)["dataset_signature"] == 0


def test_dry_run_reports_the_changes_and_writes_nothing(db_url: str, conn: Conn, sample_data: Path) -> None:
    before = counts(conn)
    result = ingest_table(db_url, sample_data / "samples" / "ST004396.csv", "metabolomics", dry_run=True)
    assert result.status == "created"
    assert {c.table: c.inserted for c in result.changes} == {"dataset": 1, "feature": 82, "dataset_feature": 82}
    assert counts(conn) == before


def test_repeated_names_in_a_table_are_refused_unless_a_merge_rule_is_named(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    path = tmp_path / "dupes.csv"
    path.write_text("gene,log2FC,pvalue\nTP53,1.0,0.01\nBRCA1,-2.0,0.001\nTP53,3.0,0.02\n")
    with pytest.raises(IngestError, match="duplicate feature row 'TP53'") as error:
        prepare_table_dataset(path, DatasetOptions(omics_type="transcriptomics"))
    assert error.value.line == 4
    ingest_table(db_url, path, "transcriptomics", on_duplicate="max-abs-fc")
    row = conn.execute("SELECT log2_fold_change, p_value FROM dataset_feature WHERE raw_name = 'TP53'").fetchone()
    assert row == (3.0, 0.02)


def test_stored_matches_follow_the_13_rules_molecular_species_and_standards(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    """Through Postgres: the same chains match at molecular level, a species-only dataset lipid at species level, a
    dihydroceramide never matches a ceramide, a labelled standard is never evidence, and a missing p-value gives no
    direction (#13 item 4)."""
    signature = tmp_path / "sig.tsv"
    signature.write_text(
        "species\tdirection\tweight\n"
        "PC 16:0/18:1\tup\t1.0\n"
        "SM(d18:1/16:0)\tup\t1.0\n"
        "Cer(d18:1/24:0)\tdown\t1.0\n"
        "PC(15:0-18:1(d7))\tup\t1.0\n"
    )
    dataset = tmp_path / "lipids.csv"
    dataset.write_text(
        "Lipid Species,log2FC,p-value\n"
        "PC 18:1_16:0,1.0,0.01\n"
        "SM 34:1;O2,1.0,\n"
        "Cer(d18:0/24:1),-2.0,0.001\n"
        "PC(15:0-18:1(d7)),3.0,0.001\n"
    )
    ingest_sig(db_url, signature)
    result = ingest_table(db_url, dataset, "lipidomics")
    [match] = result.matches
    query = "SELECT score, overlap_fraction, matched_components, match_level, details FROM dataset_signature"
    stored = conn.execute(query).fetchone()
    assert stored is not None
    score, overlap, matched, level, details = stored
    assert (round(score, 3), overlap, matched, level) == (0.625, 0.5, 2, "mixed")
    assert sorted((d["feature"], d["level"], d["value"]) for d in details) == [
        ("PC 16:0_18:1", "molecular", 1.0),
        ("SM 34:1;O2", "species", 0.0),
    ]
    assert match.match_level == "mixed"
