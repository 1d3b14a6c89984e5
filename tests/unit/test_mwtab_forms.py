"""mwTab: the text and JSON forms of one deposit read to the same features, values and identifiers; ragged data
rows are refused with their line and column (#13 items 3 and 6).

Fixtures: ``ST000122_AN000204.txt`` / ``.json`` are the Workbench's two forms of one analysis (from the ``mwtab``
project's test data). ``ST000122_AN000204_ids.txt`` / ``.json`` are the same deposit in the newer layout — JSON
``Data`` and ``Metabolites`` rows keyed ``metabolite_name`` (as the text header names the column), and a METABOLITES
table with ``refmet_name``, ``inchi_key``, ``inchi``, ``kegg_id`` and ``hmdb_id`` columns — whose identifier values
for cortisol, progesterone and testosterone were filled in by hand (from PubChem / HMDB) for this test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.errors import IngestError
from ingest.pipeline import DatasetOptions, prepare_mwtab_dataset
from ingest.readers.mwtab import read_mwtab

MWTAB = Path(__file__).resolve().parents[1] / "fixtures" / "mwtab"
PAIRS = [
    ("ST000122_AN000204.txt", "ST000122_AN000204.json"),
    ("ST000122_AN000204_ids.txt", "ST000122_AN000204_ids.json"),
]


def _features(path: Path) -> list[tuple[object, ...]]:
    dataset, _ = prepare_mwtab_dataset(path, DatasetOptions())
    assert isinstance(dataset.features, tuple)
    return [
        (f.feature, f.raw_name, f.log2_fold_change, f.p_value, f.intensity, json.dumps(f.extra, sort_keys=True))
        for f in dataset.features
    ]


@pytest.mark.parametrize(("text", "json_form"), PAIRS)
def test_the_text_and_json_forms_of_a_deposit_give_identical_features(text: str, json_form: str) -> None:
    a, b = read_mwtab(MWTAB / text), read_mwtab(MWTAB / json_form)
    assert (a.format, b.format) == ("mwtab", "json")
    assert a.samples == b.samples
    assert len(a.metabolites) == 14
    assert [(m.name, m.values, dict(m.identifiers)) for m in a.metabolites] == [
        (m.name, m.values, dict(m.identifiers)) for m in b.metabolites
    ]
    # Through the pipeline too: normalized features, sample summaries and identifiers, row for row.
    assert _features(MWTAB / text) == _features(MWTAB / json_form)


def test_json_rows_keyed_metabolite_name_are_read() -> None:
    raw = json.loads((MWTAB / "ST000122_AN000204_ids.json").read_text())
    assert "metabolite_name" in raw["MS_METABOLITE_DATA"]["Data"][0]
    assert "Metabolite" not in raw["MS_METABOLITE_DATA"]["Data"][0]
    study = read_mwtab(MWTAB / "ST000122_AN000204_ids.json")
    assert study.metabolites[0].name == "17-hydroxypregnenolone"
    assert len(study.samples) == 42


@pytest.mark.parametrize("name", ["ST000122_AN000204_ids.txt", "ST000122_AN000204_ids.json"])
def test_inchi_inchikey_refmet_hmdb_kegg_and_pubchem_are_kept(name: str) -> None:
    study = read_mwtab(MWTAB / name)
    [testosterone] = [m for m in study.metabolites if m.name == "Testosterone"]
    assert dict(testosterone.identifiers) == {
        "refmet_name": "Testosterone",
        "pubchem_cid": "6013",
        "inchikey": "MUMGGOZAMZWBJJ-DYKIIFRCSA-N",
        "inchi": (
            "InChI=1S/C19H28O2/c1-18-9-7-13(20)11-12(18)3-4-14-15-5-6-17(21)19(15,2)10-8-16(14)18/h11,14-17,21H,"
            "3-10H2,1-2H3/t14-,15-,16-,17-,18-,19-/m0/s1"
        ),
        "kegg": "C00535",
        "hmdb": "HMDB0000234",
    }
    features = prepare_mwtab_dataset(MWTAB / name, DatasetOptions())[0].features
    assert isinstance(features, tuple)
    [dataset_row] = [f for f in features if f.raw_name == "Testosterone"]
    assert dataset_row.extra["identifiers"] == dict(testosterone.identifiers)


def _edited(tmp_path: Path, edit: dict[int, str]) -> tuple[Path, dict[int, int]]:
    """ST000122 text with some data lines replaced; returns the path and {data row → file line}."""
    lines = (MWTAB / "ST000122_AN000204.txt").read_text().split("\n")
    start = lines.index("MS_METABOLITE_DATA_START")
    rows = {n: start + 3 + n for n in range(1, 15)}  # Samples and Factors lines, then 14 data rows
    for row, text in edit.items():
        lines[rows[row] - 1] = text
    path = tmp_path / "deposit.txt"
    path.write_text("\n".join(lines))
    return path, rows


def _row(n: int) -> list[str]:
    lines = (MWTAB / "ST000122_AN000204.txt").read_text().split("\n")
    start = lines.index("MS_METABOLITE_DATA_START")
    return lines[start + 2 + n].split("\t")


def test_a_data_row_with_missing_cells_is_refused_with_line_and_column(tmp_path: Path) -> None:
    cells = _row(3)
    path, rows = _edited(tmp_path, {3: "\t".join(cells[:-3])})  # 3 of 42 values missing
    with pytest.raises(IngestError) as error:
        read_mwtab(path)
    assert (error.value.line, error.value.column) == (rows[3], len(cells) - 2)
    assert "39 values for 42 samples" in error.value.message


def test_a_data_row_with_extra_values_is_refused_with_line_and_column(tmp_path: Path) -> None:
    cells = _row(5)
    path, rows = _edited(tmp_path, {5: "\t".join([*cells, "1.0", "2.0"])})
    with pytest.raises(IngestError) as error:
        read_mwtab(path)
    assert (error.value.line, error.value.column) == (rows[5], len(cells) + 1)
    assert "44 values, but the samples header on line" in error.value.message


def test_empty_cells_and_na_for_values_not_measured_are_accepted(tmp_path: Path) -> None:
    cells = _row(2)
    cells[3], cells[-1] = "", "NA"
    path, _ = _edited(tmp_path, {2: "\t".join(cells)})
    study = read_mwtab(path)
    values = study.metabolites[1].values
    assert (values[2], values[-1], sum(v is None for v in values)) == (None, None, 2)


def test_a_samples_header_shorter_than_the_data_names_both_lines(tmp_path: Path) -> None:
    lines = (MWTAB / "ST000122_AN000204.txt").read_text().split("\n")
    start = lines.index("MS_METABOLITE_DATA_START")
    lines[start + 1] = "\t".join(lines[start + 1].split("\t")[:-2])  # the Samples line loses two samples
    path = tmp_path / "deposit.txt"
    path.write_text("\n".join(lines))
    with pytest.raises(IngestError) as error:
        read_mwtab(path)
    assert error.value.line == start + 3  # the Factors line is the first to reach past the header
    assert f"the samples header on line {start + 2} names 40 samples" in error.value.message
    assert "list index out of range" not in str(error.value)


def test_a_json_data_row_without_a_sample_is_refused_naming_the_sample(tmp_path: Path) -> None:
    raw = json.loads((MWTAB / "ST000122_AN000204_ids.json").read_text())
    del raw["MS_METABOLITE_DATA"]["Data"][2]["CER055_249947_ML_3"]
    path = tmp_path / "deposit.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(IngestError) as error:
        read_mwtab(path)
    assert error.value.column == "CER055_249947_ML_3"
    assert "Data row 3 ('Allodihydrotestosterone') has no value for sample" in error.value.message


def test_a_json_data_row_with_a_key_no_other_row_has_is_refused(tmp_path: Path) -> None:
    raw = json.loads((MWTAB / "ST000122_AN000204.json").read_text())
    raw["MS_METABOLITE_DATA"]["Data"][4]["CER999_extra"] = "1.0"
    path = tmp_path / "deposit.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(IngestError) as error:
        read_mwtab(path)
    assert error.value.column == "CER999_extra"
    assert "Data row 5 ('Androstenolone (DHEA)') has a value for 'CER999_extra'" in error.value.message
