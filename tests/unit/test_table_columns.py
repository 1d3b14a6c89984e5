"""Reading a statistics table by columns (pyarrow) gives what reading it row by row gives: the same staged rows (the
same text, numbers that read back as the same doubles), the same report, and the same error at the same line and
column — whatever the names, the number formats, blank lines and bad cells, and wherever they fall."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import IngestError
from ingest.normalize.gene import PLAIN_SYMBOL_PATTERN, normalize_gene
from ingest.pipeline import DatasetOptions, prepare_table_dataset
from ingest.readers.table import TableScan
from ingest.writer.staging import StagedFeatures

NAMES = [
    "TP53", "tp53", "TP53_HUMAN", " KRAS ", "\u00a0EGFR", "EGFR\u2003", "ENSG00000141510.17", "ens1", "Ensx", "1-Sep",
    "Mar-3", "x y", "1007_s_at", "é", "AC012345.1", "a\\b", "TP53.1", "123", "Glutamine", "citric acid", "PC 34:1",
]  # fmt: skip
GOOD_CELLS = [
    "1.5", "-2", "0", "1e5", "1E-3", "+.5", "5.", "-.25e-2", "", "NA", "n/a", "-", " 0.5", "0.25 ", "1_0", "007",
    "1e-400", "0.1234567890123456789012345678901", "-0.0", "1" * 40,
]  # fmt: skip
BAD_CELLS = ["abc", "nan", "inf", "-Infinity", "1e999", "1.5.2", "0x10"]
P_VALUES = ["0.01", "1", "0", "1e-300", "", "NA", "5e-324", " 0.5", "-0.0"]


def _name(rng: random.Random) -> str:
    return rng.choice(NAMES) if rng.random() < 0.03 else f"{rng.choice(['G', 'gene', 'Ab'])}{rng.randrange(10**5)}"


def _table(rng: random.Random, delimiter: str, bad: bool) -> str:
    lines = [delimiter.join(["gene", "log2FC", "pvalue", "note"])]
    rows = rng.randrange(3_000, 9_000)
    bad_at = rng.randrange(rows) if bad else -1
    for i in range(rows):
        roll = rng.random()
        if roll < 0.003:
            lines.append(rng.choice(["", "  ", delimiter * 3]))
            continue
        fc = rng.choice(GOOD_CELLS) if roll < 0.05 else f"{rng.gauss(0, 2):.5f}"
        p = rng.choice(P_VALUES) if roll < 0.08 else f"{rng.random():.6g}"
        cells = [_name(rng), fc, p, "x"]
        if i == bad_at:
            kind = rng.randrange(4)
            if kind == 0:
                cells[1] = rng.choice(BAD_CELLS)
            elif kind == 1:
                cells[2] = rng.choice(["1.5", "-0.1", "2e0"])
            elif kind == 2:
                cells = cells[:3]
            else:
                cells[0] = "  "
        lines.append(delimiter.join(cells))
    return "\n".join(lines) + "\n"


def _staged(features: StagedFeatures) -> list[list[Any]]:
    rows = b"".join(features.chunks()).decode().split("\n")
    assert rows.pop() == ""
    out: list[list[Any]] = []
    for row in rows:
        cells: list[Any] = row.split("\t")
        assert len(cells) == 13, row
        cells[9:12] = [None if c == "\\N" else float(c) for c in cells[9:12]]
        out.append(cells)
    return out


def _prepare(path: Path, omics_type: str, on_duplicate: str) -> object:
    try:
        dataset, report = prepare_table_dataset(path, DatasetOptions(omics_type=omics_type, on_duplicate=on_duplicate))
    except IngestError as error:
        return ("refused", str(error), error.line, error.column)
    assert isinstance(dataset.features, StagedFeatures)
    features = dataset.features
    return (_staged(features), features.replaced_lines, features.replacements, dataset.source_sha256, report)


@pytest.mark.parametrize("seed", range(16))
def test_columns_read_what_rows_read(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    delimiter = rng.choice([",", "\t", ";"])
    omics_type = "transcriptomics" if seed % 4 else "metabolomics"
    on_duplicate = "error" if seed % 5 == 0 else "first"
    path = tmp_path / "t.csv"
    path.write_text(_table(rng, delimiter, bad=seed % 2 == 1))
    by_columns = _prepare(path, omics_type, on_duplicate)
    with monkeypatch.context() as patch:
        patch.setattr(TableScan, "column_blocks", TableScan.row_blocks)
        by_rows = _prepare(path, omics_type, on_duplicate)
    assert by_columns == by_rows


def test_a_clean_table_is_read_by_columns_and_a_bad_block_by_rows(tmp_path: Path) -> None:
    lines = ["gene,log2FC,pvalue"] + [f"G{i},{i % 7}.5,0.{i % 9}" for i in range(20_000)]
    lines[15_000] = "BAD,1.0,NA"  # a cell the columns leave to the row reader
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    kinds = [type(block).__name__ for block in TableScan(path, "transcriptomics").column_blocks()]
    assert kinds.count("list") == 2  # the first data row (read with the header) and the block with "NA"
    assert kinds.count("ColumnBlock") == len(kinds) - 2 > 0


def test_plain_gene_symbols_are_the_names_normalize_gene_reads_by_its_first_rule() -> None:
    import pyarrow as pa

    from ingest.columns import plain_gene_symbols

    rng = random.Random(3)
    alphabet = "aAzZ09eEnNsS-_. é\u00a0"
    names = ["ENS", "ens", "Ens1", "EN", "E", "ENSG", "x", "1", "a1", "1a", "A-1", "TP53", "tp53", "éA", "A\u00a0"]
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 6))) for _ in range(5_000)]
    plain = plain_gene_symbols(pa.array(names, pa.string())).to_pylist()
    # The mask is normalize_gene's first test, name for name ...
    assert plain == [bool(re.fullmatch(PLAIN_SYMBOL_PATTERN, n)) and n[:3].upper() != "ENS" for n in names]
    assert [n for n, p in zip(names, plain, strict=True) if p][:4] == ["EN", "E", "x", "a1"]
    # ... and what the columns make of those names is what normalize_gene makes of them.
    for name in (n for n, p in zip(names, plain, strict=True) if p):
        feature = normalize_gene(name)
        assert (feature.normalized_name, feature.display_name, feature.parsed, feature.external_ids) == (
            name.upper(),
            name.upper(),
            True,
            {},
        ), name


@pytest.mark.parametrize(
    ("column", "cell"),
    [(1, c) for c in BAD_CELLS] + [(2, c) for c in ("1.5", "-0.1", "2e0", "1e999")] + [(0, "  "), (0, ""), (3, None)],
)
def test_each_bad_cell_is_refused_at_its_line_and_column_as_rows_refuse_it(
    tmp_path: Path, column: int, cell: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(column)
    lines = ["gene,log2FC,pvalue,note"] + [f"G{i},{rng.gauss(0, 2):.4f},{rng.random():.5f},x" for i in range(6_000)]
    at = rng.randrange(3_000, 6_000)
    cells = lines[at].split(",")
    if cell is None:
        cells.pop()  # a row with a cell too few
    else:
        cells[column] = cell
    lines[at] = ",".join(cells)
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    by_columns = _prepare(path, "transcriptomics", "error")
    with monkeypatch.context() as patch:
        patch.setattr(TableScan, "column_blocks", TableScan.row_blocks)
        by_rows = _prepare(path, "transcriptomics", "error")
    assert by_columns == by_rows
    assert isinstance(by_rows, tuple)
    assert (by_rows[0], by_rows[2]) == ("refused", at + 1)
