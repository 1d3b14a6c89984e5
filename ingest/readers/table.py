"""Read a user's CSV/TSV table of features into typed rows, refusing anything malformed with file, line and column.

Two shapes are understood. A *statistics* table has an identity column and any of log2 fold change, p-value and
intensity columns. A *sample matrix* (``ST004396.csv``: ``Metabolite,FXS1,FXS3,…``) has an identity column and
numeric sample columns; each row keeps its sample values and is summarised (mean intensity, count, min, max).
A column whose first value is not a number is an annotation and is ignored (and reported). Normalization and
duplicate handling happen later; this module only reads.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import IngestError

# Identity columns tried per omics type, in order (reference/original-system.md §2).
IDENTITY_CANDIDATES: dict[str, tuple[str, ...]] = {
    "lipidomics": ("species", "lipid", "Name", "Molecule", "compound", "metabolite"),
    "metabolomics": ("metabolite", "compound", "name", "molecule"),
    "proteomics": (
        "Protein",
        "Protein ID",
        "ProteinID",
        "protein_id",
        "Gene",
        "Gene Symbol",
        "GeneSymbol",
        "gene_name",
        "protein_name",
        "Protein Name",
    ),
    "transcriptomics": ("gene", "gene_name", "Gene Symbol", "GeneSymbol", "symbol"),
}

# Statistics columns, compared after lower-casing and dropping everything but letters and digits
# ("p-value", "p_value" and "P.Value" all become "pvalue"). Order is preference.
FOLD_CHANGE_KEYS = ("log2fc", "logfc", "log2foldchange", "lfc", "log2fold", "log2ratio")
P_VALUE_KEYS = ("pvalue", "pval", "p", "padj", "adjpval", "adjpvalue", "fdr", "qvalue", "qval")
INTENSITY_KEYS = ("intensity", "meanintensity", "abundance", "area", "peakarea")

# Cells that mean "no value". NaN and infinities are *not* here: a file that says nan/inf is refused.
MISSING = frozenset({"", "na", "n/a", "null", "none", "-"})
_NOT_FINITE = frozenset({"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
_DELIMITERS = ("\t", ",", ";", "|")


@dataclass(frozen=True)
class TableRow:
    """One data row as written, with its statistics parsed."""

    line: int
    raw_name: str
    log2_fold_change: float | None
    p_value: float | None
    intensity: float | None
    # Sample values in ``TableFile.sample_columns`` order (sample matrices only; None where a cell was empty).
    samples: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class TableFile:
    path: Path
    sha256: str
    delimiter: str
    identity_column: str
    fold_change_column: str | None
    p_value_column: str | None
    intensity_column: str | None
    sample_columns: tuple[str, ...]
    ignored_columns: tuple[str, ...]
    rows: tuple[TableRow, ...]

    @property
    def is_sample_matrix(self) -> bool:
        return bool(self.sample_columns)


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or an IngestError saying why it cannot be read."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise IngestError("is a directory, not a file", path=path) from None
    except FileNotFoundError:
        raise IngestError("no such file", path=path) from None
    except OSError as exc:
        raise IngestError(f"cannot read the file: {exc.strerror or exc}", path=path) from None
    if not data.strip():
        raise IngestError("the file is empty", path=path)
    return data


def decode_utf8(path: Path, data: bytes) -> str:
    """Strict UTF-8 (a BOM is allowed); undecodable bytes are reported with their line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise IngestError(
            f"bytes {bad} are not valid UTF-8 (byte column {column}); save the file as UTF-8", path=path, line=line
        ) from None


def detect_delimiter(header_line: str) -> str:
    """Tab when the header has one (as the earlier system did), else the most frequent of , ; |."""
    if "\t" in header_line:
        return "\t"
    counts = {d: header_line.count(d) for d in _DELIMITERS[1:]}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def find_identity_column(headers: Sequence[str], omics_type: str) -> str | None:
    """Exact name, then case-insensitive, then substring, trying the omics type's candidates in order."""
    candidates = IDENTITY_CANDIDATES[omics_type]
    for candidate in candidates:
        if candidate in headers:
            return candidate
    for candidate in candidates:
        for header in headers:
            if header.lower() == candidate.lower():
                return header
    for candidate in candidates:
        for header in headers:
            if candidate.lower() in header.lower():
                return header
    return None


def _find_stat_column(headers: Sequence[str], keys: Sequence[str], exclude: set[str]) -> str | None:
    by_key = {_key(h): h for h in headers if h not in exclude}
    for key in keys:
        if key in by_key:
            return by_key[key]
    return None


def parse_number(text: str, *, path: Path, line: int, column: str) -> float | None:
    """A finite float, None for an empty/NA cell; anything else is an IngestError at that cell."""
    cell = text.strip()
    if cell.lower() in MISSING:
        return None
    if cell.lower() in _NOT_FINITE:
        raise IngestError(f"{cell!r} is not a finite number", path=path, line=line, column=column)
    try:
        value = float(cell)
    except ValueError:
        raise IngestError(f"not a number: {cell!r}", path=path, line=line, column=column) from None
    if not math.isfinite(value):
        raise IngestError(f"{cell!r} is not a finite number", path=path, line=line, column=column)
    return value


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_table(path: Path, omics_type: str, *, feature_column: str | None = None) -> TableFile:
    """Read and check a CSV/TSV feature table. Raises IngestError (with file, line, column) on bad input."""
    if omics_type not in IDENTITY_CANDIDATES:
        known = ", ".join(IDENTITY_CANDIDATES)
        raise IngestError(f"unknown omics type {omics_type!r} (expected one of: {known})", path=path)
    data = read_bytes(path)
    text = decode_utf8(path, data)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise IngestError("contains NUL bytes: not a text table", path=path, line=line)
    first_line = next((ln for ln in text.splitlines() if ln.strip()), "")
    delimiter = detect_delimiter(first_line)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        records = [(reader.line_num, record) for record in reader]
    except csv.Error as exc:
        raise IngestError(
            f"malformed {_delimiter_name(delimiter)} table: {exc}", path=path, line=reader.line_num
        ) from None
    records = [(n, r) for n, r in records if "".join(r).strip()]
    if not records:
        raise IngestError("the file is empty", path=path)
    header_line, raw_headers = records[0]
    headers = [h.strip() for h in raw_headers]
    for index, header in enumerate(headers):
        if not header:
            raise IngestError(f"column {index + 1} has no name", path=path, line=header_line)
        if headers.index(header) != index:
            raise IngestError(f"column name {header!r} appears twice", path=path, line=header_line, column=header)
    body = records[1:]
    if not body:
        raise IngestError("the table has a header but no data rows", path=path, line=header_line)

    identity = _resolve_identity(path, headers, omics_type, feature_column, header_line)
    used = {identity}
    fold_change = _find_stat_column(headers, FOLD_CHANGE_KEYS, used)
    used |= {fold_change} if fold_change else set()
    p_value = _find_stat_column(headers, P_VALUE_KEYS, used)
    used |= {p_value} if p_value else set()
    intensity = _find_stat_column(headers, INTENSITY_KEYS, used)
    used |= {intensity} if intensity else set()

    index_of = {h: i for i, h in enumerate(headers)}
    samples: list[str] = []
    ignored: list[str] = []
    for header in headers:
        if header in used:
            continue
        column_at = index_of[header]
        first = next(
            (
                r[column_at].strip()
                for _, r in body
                if len(r) > column_at and r[column_at].strip().lower() not in MISSING
            ),
            "",
        )
        # Only a table without statistics columns is a sample matrix; otherwise extra columns are annotations.
        if fold_change is None and p_value is None and intensity is None and _is_number(first):
            samples.append(header)
        else:
            ignored.append(header)

    rows: list[TableRow] = []
    for line, record in body:
        if len(record) != len(headers):
            raise IngestError(f"has {len(record)} cells, the header has {len(headers)}", path=path, line=line)
        name = record[index_of[identity]].strip()
        if not name:
            raise IngestError("the feature name is empty", path=path, line=line, column=identity)

        def number(column: str | None, cells: list[str] = record, at: int = line) -> float | None:
            if column is None:
                return None
            return parse_number(cells[index_of[column]], path=path, line=at, column=column)

        p = number(p_value)
        if p is not None and not 0.0 <= p <= 1.0:
            raise IngestError(f"p-value {p} is outside [0, 1]", path=path, line=line, column=p_value)
        sample_values = tuple(number(column) for column in samples)
        rows.append(
            TableRow(
                line=line,
                raw_name=name,
                log2_fold_change=number(fold_change),
                p_value=p,
                intensity=number(intensity),
                samples=sample_values,
            )
        )
    return TableFile(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        delimiter=delimiter,
        identity_column=identity,
        fold_change_column=fold_change,
        p_value_column=p_value,
        intensity_column=intensity,
        sample_columns=tuple(samples),
        ignored_columns=tuple(ignored),
        rows=tuple(rows),
    )


def _present(cells: list[str], at: int) -> bool:
    return len(cells) > at and cells[at].strip().lower() not in MISSING


def _delimiter_name(delimiter: str) -> str:
    return {"\t": "TSV", ",": "CSV"}.get(delimiter, f"{delimiter!r}-separated")


def _resolve_identity(path: Path, headers: list[str], omics_type: str, override: str | None, line: int) -> str:
    if override is not None:
        if override in headers:
            return override
        folded = [h for h in headers if h.lower() == override.lower()]
        if folded:
            return folded[0]
        raise IngestError(
            f"--feature-column {override!r} is not a column; the columns are: {', '.join(headers)}",
            path=path,
            line=line,
        )
    found = find_identity_column(headers, omics_type)
    if found is None:
        tried = ", ".join(IDENTITY_CANDIDATES[omics_type])
        raise IngestError(
            f"no feature column for {omics_type} (tried {tried}; columns are {', '.join(headers)}); "
            "name it with --feature-column",
            path=path,
            line=line,
        )
    return found
