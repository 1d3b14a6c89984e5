"""Signature reader: a TSV/CSV of features with expected directions and weights → a typed SignatureFile.

Columns (header names compared case-insensitively, spaces and hyphens read as ``_``):

* the feature: the first of ``feature``, ``feature_name``, ``name``, ``species``, ``lipid``, ``lipid_species``,
  ``metabolite``, ``protein``, ``gene``, ``gene_symbol``, ``symbol``, ``component``, ``component_name``,
  ``compound``, ``molecule``, ``identifier``, ``id``; required;
* ``feature_type`` (or ``type``), optional: gene | protein | metabolite | lipid (plurals and omics names accepted);
  when absent or blank the type comes from a ``lipid``/``metabolite``/``protein``/``gene`` feature column, else it
  is inferred from the name (:func:`ingest.normalize.infer_feature_type`);
* ``direction``, required: ``↑ up + increased`` → up, ``↓ down - decreased`` → down, ``neutral``, ``complex``;
* ``weight``, optional: a finite number > 0, 1.0 when absent or blank.

The delimiter is the one of tab, comma and semicolon that the header line holds most of (tab wins ties, as in the
earlier system). Blank lines and lines starting with ``#`` are skipped. Pure parsing and validation, no database:
bad input raises :class:`IngestError` naming file, line and column, and the whole file is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import IngestError
from ingest.normalize import FEATURE_TYPES, NormalizedFeature, infer_feature_type, normalize
from ingest.readers.table import refuse_nul


@dataclass(frozen=True)
class SignatureRow:
    line: int
    raw_name: str
    feature: NormalizedFeature
    direction: str  # up | down | neutral | complex
    weight: float


@dataclass(frozen=True)
class SignatureFile:
    path: Path
    name: str
    rows: tuple[SignatureRow, ...]
    modalities: tuple[str, ...]  # feature types present, sorted
    sha256: str


_FEATURE_COLUMNS = (
    "feature",
    "feature_name",
    "name",
    "species",
    "lipid",
    "lipid_species",
    "metabolite",
    "protein",
    "gene",
    "gene_symbol",
    "symbol",
    "component",
    "component_name",
    "compound",
    "molecule",
    "identifier",
    "id",
)
# A feature column whose name says what it holds types its rows when there is no feature_type column.
_TYPE_OF_FEATURE_COLUMN = {
    "lipid": "lipid",
    "lipid_species": "lipid",
    "metabolite": "metabolite",
    "protein": "protein",
    "gene": "gene",
    "gene_symbol": "gene",
}
_TYPE_COLUMNS = ("feature_type", "type", "modality")
_DIRECTION_COLUMNS = ("direction", "dir", "regulation")
_WEIGHT_COLUMNS = ("weight", "w")

_DIRECTIONS: dict[str, str] = {
    **dict.fromkeys(("↑", "up", "+", "increased", "increase", "upregulated", "up-regulated", "higher"), "up"),
    **dict.fromkeys(("↓", "down", "-", "decreased", "decrease", "downregulated", "down-regulated", "lower"), "down"),
    **dict.fromkeys(("neutral", "unchanged", "no change", "nochange", "="), "neutral"),
    "complex": "complex",
}
_FEATURE_TYPE_SPELLINGS: dict[str, str] = {
    **{t: t for t in FEATURE_TYPES},
    **{f"{t}s": t for t in FEATURE_TYPES},
    "lipidomics": "lipid",
    "metabolomics": "metabolite",
    "proteomics": "protein",
    "transcriptomics": "gene",
    "transcript": "gene",
}


def _column_key(header: str) -> str:
    return re.sub(r"[\s-]+", "_", header.strip().lower())


def _find_column(keys: list[str], candidates: tuple[str, ...]) -> int | None:
    for candidate in candidates:
        if candidate in keys:
            return keys.index(candidate)
    return None


def _decode(data: bytes, path: Path) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise IngestError(f"not UTF-8 text: byte 0x{bad} at offset {exc.start}", path=path, line=line) from exc
    refuse_nul(path, text)
    return text


def _delimiter(header_line: str) -> str:
    counts = {delimiter: header_line.count(delimiter) for delimiter in ("\t", ",", ";")}
    best = max(counts, key=lambda delimiter: counts[delimiter])  # dict order: tab wins ties
    return best if counts[best] else "\t"


def _parse_direction(value: str, path: Path, line: int, column: str) -> str:
    direction = _DIRECTIONS.get(" ".join(value.split()).lower())
    if direction is None:
        if not value.strip():
            raise IngestError("missing direction", path=path, line=line, column=column)
        raise IngestError(
            f"unknown direction {value.strip()!r} (expected ↑ ↓ up down + - increased decreased neutral complex)",
            path=path,
            line=line,
            column=column,
        )
    return direction


def _parse_weight(value: str, path: Path, line: int, column: str) -> float:
    text = value.strip()
    if not text:
        return 1.0
    try:
        weight = float(text)
    except ValueError:
        raise IngestError(f"weight is not a number: {text!r}", path=path, line=line, column=column) from None
    if not math.isfinite(weight):
        raise IngestError(f"weight must be a finite number: {text!r}", path=path, line=line, column=column)
    if weight <= 0:
        raise IngestError(f"weight must be > 0: {text!r}", path=path, line=line, column=column)
    return weight


def _parse_feature_type(value: str, path: Path, line: int, column: str) -> str | None:
    text = value.strip().lower()
    if not text:
        return None
    feature_type = _FEATURE_TYPE_SPELLINGS.get(text)
    if feature_type is None:
        raise IngestError(
            f"unknown feature type {value.strip()!r} (expected one of: {', '.join(FEATURE_TYPES)})",
            path=path,
            line=line,
            column=column,
        )
    return feature_type


@dataclass(frozen=True)
class _Columns:
    header: tuple[str, ...]
    feature: int
    direction: int
    feature_type: int | None
    weight: int | None
    implied_type: str | None  # from a feature column named after a type ("gene", "lipid", …)


def _refuse_repeated_roles(header: tuple[str, ...], keys: list[str], path: Path, line: int) -> None:
    """Two columns for one role (``direction`` twice, or ``direction`` and ``regulation``) are refused: which one
    holds the directions is not ours to guess (the table reader refuses a repeated column name the same way)."""
    for index, key in enumerate(keys):
        if key and keys.index(key) != index:
            raise IngestError(f"column name {header[index]!r} appears twice", path=path, line=line, column=index + 1)
    for role, candidates in (
        ("feature", _FEATURE_COLUMNS),
        ("direction", _DIRECTION_COLUMNS),
        ("feature type", _TYPE_COLUMNS),
        ("weight", _WEIGHT_COLUMNS),
    ):
        found = [index for index, key in enumerate(keys) if key in candidates]
        if role != "feature" and len(found) > 1:
            names = " and ".join(repr(header[i]) for i in found)
            raise IngestError(f"two {role} columns ({names}); keep one", path=path, line=line, column=found[1] + 1)


def _columns(record: list[str], path: Path, line: int) -> _Columns:
    header = tuple(cell.strip() for cell in record)
    keys = [_column_key(cell) for cell in header]
    _refuse_repeated_roles(header, keys, path, line)
    feature = _find_column(keys, _FEATURE_COLUMNS)
    if feature is None:
        raise IngestError(
            f"no feature column (expected one of: {', '.join(_FEATURE_COLUMNS)}; found: {', '.join(header)})",
            path=path,
            line=line,
        )
    direction = _find_column(keys, _DIRECTION_COLUMNS)
    if direction is None:
        raise IngestError(
            f"no direction column (expected one of: {', '.join(_DIRECTION_COLUMNS)}; found: {', '.join(header)})",
            path=path,
            line=line,
        )
    return _Columns(
        header=header,
        feature=feature,
        direction=direction,
        feature_type=_find_column(keys, _TYPE_COLUMNS),
        weight=_find_column(keys, _WEIGHT_COLUMNS),
        implied_type=_TYPE_OF_FEATURE_COLUMN.get(keys[feature]),
    )


def _row(cells: list[str], columns: _Columns, path: Path, line: int) -> SignatureRow:
    header = columns.header
    raw_name = cells[columns.feature].strip()
    if not raw_name:
        raise IngestError("empty feature name", path=path, line=line, column=header[columns.feature])
    direction = _parse_direction(cells[columns.direction], path, line, header[columns.direction])
    weight = 1.0
    if columns.weight is not None:
        weight = _parse_weight(cells[columns.weight], path, line, header[columns.weight])
    feature_type = None
    if columns.feature_type is not None:
        feature_type = _parse_feature_type(cells[columns.feature_type], path, line, header[columns.feature_type])
    feature_type = feature_type or columns.implied_type or infer_feature_type(raw_name)
    return SignatureRow(line, raw_name, normalize(raw_name, feature_type), direction, weight)


def read_signature(path: Path, *, name: str | None = None) -> SignatureFile:
    """Read and validate a signature file. Raises IngestError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    sha256 = hashlib.sha256(data).hexdigest()
    text = _decode(data, path)
    if not text.strip():
        raise IngestError("empty file", path=path)
    signature_name = (name if name is not None else path.stem).strip()
    if not signature_name:
        raise IngestError("signature name is empty", path=path)

    content = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not content:
        raise IngestError("no header line (only comments)", path=path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(content[0]))
    columns: _Columns | None = None
    rows: list[SignatureRow] = []
    seen: dict[tuple[str, str], SignatureRow] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record) or record[0].lstrip().startswith("#"):
                continue
            if columns is None:
                columns = _columns(record, path, line)
                continue
            width = len(columns.header)
            if len(record) > width and any(cell.strip() for cell in record[width:]):
                raise IngestError(f"{len(record)} fields, but the header has {width}", path=path, line=line)
            row = _row(record + [""] * (width - len(record)), columns, path, line)
            key = (row.feature.feature_type, row.feature.normalized_name)
            first = seen.get(key)
            if first is not None:
                raise IngestError(
                    f"duplicate feature {row.raw_name!r}: the same {row.feature.feature_type} "
                    f"({row.feature.normalized_name}) as {first.raw_name!r} on line {first.line}",
                    path=path,
                    line=line,
                    column=columns.header[columns.feature],
                )
            seen[key] = row
            rows.append(row)
    except csv.Error as exc:
        raise IngestError(f"cannot parse as delimited text: {exc}", path=path, line=reader.line_num) from exc
    if not rows:
        raise IngestError("no signature rows below the header", path=path)
    modalities = tuple(sorted({row.feature.feature_type for row in rows}))
    return SignatureFile(path=path, name=signature_name, rows=tuple(rows), modalities=modalities, sha256=sha256)
