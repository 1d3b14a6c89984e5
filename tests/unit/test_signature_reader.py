"""Signature files: columns found by name, directions and weights validated, bad input named by file, line, column."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ingest.errors import IngestError
from ingest.readers.signature import read_signature

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


def _write(tmp_path: Path, text: str, name: str = "sig.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_als_ceramide_signature_reads_as_six_lipid_components() -> None:
    path = SAMPLES / "ALS-CSF-Core-6Ceramides.tsv"
    signature = read_signature(path)
    assert signature.name == "ALS-CSF-Core-6Ceramides"
    assert signature.modalities == ("lipid",)
    assert signature.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [(r.line, r.raw_name, r.direction, r.weight) for r in signature.rows] == [
        (2, "Cer(d18:1/16:0)", "up", 1.0),
        (3, "Cer(d18:1/18:0)", "up", 1.0),
        (4, "Cer(d18:1/24:0)", "up", 1.0),
        (5, "Cer(d18:1/24:1)", "up", 1.0),
        (6, "SM(d18:1/16:0)", "down", 0.8),
        (7, "SM(d18:1/18:0)", "down", 0.8),
    ]
    assert signature.rows[0].feature.normalized_name == "Cer 18:1;O2/16:0"
    assert signature.rows[0].feature.species_name == "Cer 34:1;O2"


def test_a_given_name_replaces_the_file_stem(tmp_path: Path) -> None:
    path = _write(tmp_path, "feature\tdirection\nTP53\tup\n")
    assert read_signature(path, name="  My signature ").name == "My signature"


@pytest.mark.parametrize(
    ("written", "direction"),
    [
        ("↑", "up"),
        ("UP", "up"),
        ("+", "up"),
        ("Increased", "up"),
        ("↓", "down"),
        ("down", "down"),
        ("-", "down"),
        ("decreased", "down"),
        ("Neutral", "neutral"),
        ("COMPLEX", "complex"),
    ],
)
def test_directions_are_read_case_insensitively(tmp_path: Path, written: str, direction: str) -> None:
    path = _write(tmp_path, f"feature,direction\nTP53,{written}\n", "sig.csv")
    assert read_signature(path).rows[0].direction == direction


def test_a_comma_separated_file_with_types_quotes_and_default_weights(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "Feature Name,Feature_Type,Direction,Weight\n"
        '"2,3-Dihydroxybutyrate",metabolite,up,\n'
        "sp|P04637|TP53_HUMAN,Proteins,down,2\n"
        "tp53,gene,up,0.5\n",
        "sig.csv",
    )
    signature = read_signature(path)
    assert [(r.feature.feature_type, r.feature.normalized_name, r.weight) for r in signature.rows] == [
        ("metabolite", "2,3-dihydroxybutyrate", 1.0),
        ("protein", "P04637", 2.0),
        ("gene", "TP53", 0.5),
    ]
    assert signature.modalities == ("gene", "metabolite", "protein")


def test_types_are_inferred_per_row_without_a_type_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "name\tdirection\nPC 34:1\tup\nGlutamine\tdown\nENSG00000141510.3\tup\nQ9Y6K9-2\tup\n")
    assert [r.feature.feature_type for r in read_signature(path).rows] == ["lipid", "metabolite", "gene", "protein"]


def test_a_feature_column_named_after_a_type_types_its_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "metabolite\tdirection\nATP\tup\n")
    assert read_signature(path).rows[0].feature.feature_type == "metabolite"


def test_blank_and_comment_lines_are_skipped_and_lines_are_counted_in_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "# a comment\n\nfeature\tdirection\n\nTP53\tup\n")
    assert [r.line for r in read_signature(path).rows] == [5]


def _error(path: Path) -> IngestError:
    with pytest.raises(IngestError) as caught:
        read_signature(path)
    return caught.value


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    error = _error(tmp_path / "absent.tsv")
    assert error.path == str(tmp_path / "absent.tsv")
    assert "cannot read" in error.message


def test_a_directory_is_not_readable(tmp_path: Path) -> None:
    assert "cannot read" in _error(tmp_path).message


def test_undecodable_bytes_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "sig.tsv"
    path.write_bytes(b"feature\tdirection\nTP53\tup\nEGF\xff\xfeR\tdown\n")
    error = _error(path)
    assert (error.line, "UTF-8" in error.message) == (3, True)


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n"])
def test_an_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    assert _error(_write(tmp_path, text)).message in {"empty file", "no header line (only comments)"}


def test_a_header_without_rows_is_refused(tmp_path: Path) -> None:
    assert "no signature rows" in _error(_write(tmp_path, "feature\tdirection\n")).message


def test_a_file_without_a_feature_column_is_refused_on_its_header_line(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, "thing\tdirection\nTP53\tup\n"))
    assert (error.line, "no feature column" in error.message) == (1, True)


def test_a_file_without_a_direction_column_is_refused(tmp_path: Path) -> None:
    assert "no direction column" in _error(_write(tmp_path, "feature\tweight\nTP53\t1\n")).message


def test_a_bad_direction_names_file_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "feature\tDirection\nTP53\tup\nEGFR\tsideways\n")
    error = _error(path)
    assert (error.line, error.column) == (3, "Direction")
    assert str(error) == (
        f"{path}:3:Direction: unknown direction 'sideways' "
        "(expected ↑ ↓ up down + - increased decreased neutral complex)"
    )


@pytest.mark.parametrize(
    ("weight", "problem"),
    [("abc", "not a number"), ("nan", "finite"), ("inf", "finite"), ("-inf", "finite"), ("0", "> 0"), ("-1.5", "> 0")],
)
def test_a_bad_weight_is_refused(tmp_path: Path, weight: str, problem: str) -> None:
    error = _error(_write(tmp_path, f"feature\tdirection\tweight\nTP53\tup\t{weight}\n"))
    assert (error.line, error.column) == (2, "weight")
    assert problem in error.message


def test_a_duplicate_feature_names_both_lines(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, "feature\tdirection\nTP53\tup\nEGFR\tup\ntp53_HUMAN\tdown\n"))
    assert (error.line, error.column) == (4, "feature")
    assert "line 2" in error.message
    assert "'TP53'" in error.message


def test_an_unknown_feature_type_is_refused(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, "feature\tfeature_type\tdirection\nTP53\tglycan\tup\n"))
    assert (error.line, error.column) == (2, "feature_type")


def test_an_empty_feature_name_is_refused(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, "feature\tdirection\n\tup\n"))
    assert (error.line, error.column, error.message) == (2, "feature", "empty feature name")


def test_a_row_with_more_fields_than_the_header_is_refused(tmp_path: Path) -> None:
    assert _error(_write(tmp_path, "feature\tdirection\nTP53\tup\textra\n")).line == 2


def test_an_ingest_error_prints_file_line_column_and_message_leaving_out_unknown_parts() -> None:
    assert str(IngestError("not a number: 'abc'", path="data.csv", line=12, column="log2FC")) == (
        "data.csv:12:log2FC: not a number: 'abc'"
    )
    assert str(IngestError("empty file", path=Path("x.tsv"))) == "x.tsv: empty file"
    assert str(IngestError("bad", line=3)) == "3: bad"
    assert str(IngestError("unknown omics type")) == "unknown omics type"


def test_an_ingest_error_keeps_its_location_through_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(IngestError("bad weight", path="s.tsv", line=4, column="weight")))
    assert (error.message, error.path, error.line, error.column) == ("bad weight", "s.tsv", 4, "weight")
    assert str(error) == "s.tsv:4:weight: bad weight"
