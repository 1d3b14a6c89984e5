"""The table reader's fast path (text split on newlines and delimiters, block by block) reads exactly what
``csv.reader`` reads: the same cells at the same physical line numbers, the same blank records skipped, whatever
the line ends, and wherever a block boundary, a quote or a carriage return falls."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from ingest.errors import IngestError
from ingest.readers.table import TableScan

Row = tuple[int, str, float | None, float | None]


def _reference(path: Path, delimiter: str) -> list[Row]:
    """What the reader made of a file before the fast path: csv.reader over the whole text."""
    out: list[Row] = []
    with path.open(encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text, delimiter=delimiter, strict=True)
        next(reader)
        for record in reader:
            if (record and record[0].strip()) or "".join(record).strip():
                fc, p = (None if not c.strip() else float(c) for c in record[1:3])
                out.append((reader.line_num, record[0].strip(), fc, p))
    return out


def _read(path: Path) -> list[Row]:
    scan = TableScan(path, "transcriptomics")
    return [(r.line, r.raw_name, r.log2_fold_change, r.p_value) for r in scan.rows()]


def _name(rng: random.Random, delimiter: str) -> str:
    kind = rng.random()
    if kind < 0.02:
        inner = rng.choice(["a,b", "x\ny", 'say ""hi""', "tab\there", "cr\r\nlf", "plain"])
        return '"' + inner.replace("\t", " " if delimiter == "\t" else "\t") + '"'
    if kind < 0.05:
        return f"  GENE{rng.randrange(10**6)}  "
    return f"G{rng.randrange(10**6)}"


@pytest.mark.parametrize("seed", range(12))
def test_the_fast_path_reads_what_csv_reads(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    delimiter = rng.choice([",", "\t", ";"])
    newline = rng.choice(["\n", "\r\n", "\n", "\r"])
    quotes = seed % 3 != 0  # some files are quote-free all the way (the fast path throughout)
    lines = [delimiter.join(["gene", "log2FC", "pvalue"])]
    for _ in range(rng.randrange(2_000, 12_000)):
        roll = rng.random()
        if roll < 0.01:
            lines.append("")
        elif roll < 0.02:
            lines.append("   ")
        elif roll < 0.03:
            lines.append(delimiter * 2)
        else:
            name = _name(rng, delimiter) if quotes else f"G{rng.randrange(10**6)}"
            p = "" if rng.random() < 0.05 else f"{rng.random():.6g}"
            lines.append(delimiter.join([name, f"{rng.gauss(0, 2):.5f}", p]))
    body = newline.join(lines) + rng.choice([newline, ""])
    if seed % 4 == 1:
        body = "\ufeff" + body
    path = tmp_path / "t.csv"
    path.write_bytes(body.encode())
    assert _read(path) == _reference(path, delimiter)


def test_a_carriage_return_split_from_its_newline_by_a_block_boundary(tmp_path: Path) -> None:
    # Lines of 32 characters: the 64 KiB block ends exactly between a "\r" and its "\n".
    lines = ["gene,log2FC,pvalue"] + [f"G{i:020d},{i % 7}.50,0.{i % 9}" for i in range(5_000)]
    for shift in range(4):
        path = tmp_path / f"crlf{shift}.csv"
        path.write_bytes(("x" * shift + "\r\n".join(lines) + "\r\n").encode())
        assert _read(path) == _reference(path, ",")


def test_a_late_quote_switches_to_csv_with_the_right_line_numbers(tmp_path: Path) -> None:
    lines = ["gene,log2FC,pvalue"] + [f"G{i},1.0,0.5" for i in range(20_000)]
    lines[15_000] = '"TWO\nLINES",2.0,0.25'
    path = tmp_path / "late.csv"
    path.write_text("\n".join(lines) + "\nLAST,3.0,0.125\n")
    rows = _read(path)
    assert rows == _reference(path, ",")
    assert rows[-1] == (20_003, "LAST", 3.0, 0.125)


def test_a_bad_cell_after_the_fast_path_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    lines = ["gene,log2FC,pvalue"] + [f"G{i},1.0,0.5" for i in range(30_000)]
    lines.insert(7, "")
    lines[25_000] = "BAD,1.0,nope"
    path = tmp_path / "bad.csv"
    path.write_text("\r\n".join(lines) + "\r\n")
    with pytest.raises(IngestError) as refused:
        _read(path)
    assert (refused.value.line, refused.value.column) == (25_001, "pvalue")


def test_a_row_with_too_few_cells_is_reported_at_its_line(tmp_path: Path) -> None:
    lines = ["gene\tlog2FC\tpvalue"] + [f"G{i}\t1.0\t0.5" for i in range(9_000)] + ["SHORT\t1.0"]
    path = tmp_path / "short.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(IngestError) as refused:
        _read(path)
    assert refused.value.line == 9_002
    assert "has 2 cells, the header has 3" in str(refused.value)
