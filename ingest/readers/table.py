"""Read a user's CSV/TSV table of features into typed rows, refusing anything malformed with file, line and column.

Two shapes are understood. A *statistics* table has an identity column and any of log2 fold change, p-value and
intensity columns. A *sample matrix* (``ST004396.csv``: ``Metabolite,FXS1,FXS3,…``) has an identity column and
numeric sample columns; each row keeps its sample values and is summarised (mean intensity, count, min, max).
A column whose first value is not a number is an annotation and is ignored (and reported). Normalization and
duplicate handling happen later; this module only reads. :class:`TableScan` reads as a stream (bounded memory
whatever the file's size); :func:`read_table` collects the rows of one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from ingest.errors import IngestError

if TYPE_CHECKING:
    from ingest.readers.table_arrow import ColumnBlock

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
_BLOCK_CHARS = 1 << 16  # text read per block by the fast path (below csv's default field limit of 128 KiB)
_BATCH_ROWS = 2_000  # records per block once csv.reader reads (quoted cells)


class TableRow(NamedTuple):
    """One data row as written, with its statistics parsed (a named tuple: one is built per row)."""

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


def refuse_nul(path: Path, text: str) -> None:
    """A NUL character is refused with its line and column: no text input holds one, and Postgres text cannot
    store it (it would fail the whole transaction with a database error naming no file)."""
    at = text.find("\x00")
    if at < 0:
        return
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    raise IngestError(
        f"a NUL byte (0x00) at character {column}: not text (a UTF-16 or binary file?); save the file as UTF-8 text",
        path=path,
        line=line,
        column=column,
    )


def decode_utf8(path: Path, data: bytes) -> str:
    """Strict UTF-8 (a BOM is allowed); undecodable bytes and NUL bytes are reported with their line and column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise IngestError(
            f"bytes {bad} are not valid UTF-8 (byte column {column}); save the file as UTF-8", path=path, line=line
        ) from None
    refuse_nul(path, text)
    return text


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


class _HashingReader(io.RawIOBase):
    """The file's bytes as read, hashed on the way; a NUL byte stops the read (it is reported by ``_refuse``)."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.saw_nul = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            chunk = bytes(memoryview(buffer)[:n])
            self.sha256.update(chunk)
            if b"\x00" in chunk:
                self.saw_nul = True
                raise _BadBytesError
        return n or 0


class _BadBytesError(Exception):
    """Raised inside the stream; turned into the precise IngestError by re-reading the file (a rare path)."""


def _refuse(path: Path) -> NoReturn:
    """The error for a file with bytes that are not UTF-8 text, with its line (and byte column)."""
    data = read_bytes(path)
    text = decode_utf8(path, data)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise IngestError("contains NUL bytes: not a text table", path=path, line=line)
    raise IngestError("cannot be read as UTF-8 text", path=path)  # pragma: no cover - the checks above raise


def _open(path: Path) -> tuple[_HashingReader, io.TextIOWrapper]:
    try:
        raw = path.open("rb")
    except IsADirectoryError:
        raise IngestError("is a directory, not a file", path=path) from None
    except FileNotFoundError:
        raise IngestError("no such file", path=path) from None
    except OSError as exc:
        raise IngestError(f"cannot read the file: {exc.strerror or exc}", path=path) from None
    hashing = _HashingReader(raw)
    return hashing, io.TextIOWrapper(io.BufferedReader(hashing, 1 << 16), encoding="utf-8-sig", newline="")


class TableScan:
    """A CSV/TSV feature table read as a stream: the layout from its header, then its rows one at a time.

    Only the header (and, for a table without statistics columns, the first value of each other column) is read
    up front; :meth:`rows` checks and yields the data rows, so memory stays bounded whatever the file's size.
    ``sha256`` is the file's digest once :meth:`rows` has run to the end.
    """

    def __init__(self, path: Path, omics_type: str, *, feature_column: str | None = None) -> None:
        if omics_type not in IDENTITY_CANDIDATES:
            known = ", ".join(IDENTITY_CANDIDATES)
            raise IngestError(f"unknown omics type {omics_type!r} (expected one of: {known})", path=path)
        self.path = path
        self.sha256 = ""
        self.delimiter = detect_delimiter(self._first_line())
        self._hashing, self._text = _open(path)
        try:
            self._reader = csv.reader(self._text, delimiter=self.delimiter, strict=True)
            self._records = self._nonblank()
            first = next(self._records, None)
            if first is None:
                raise IngestError("the file is empty", path=path)
            self.header_line, raw_headers = first
            self.headers = [h.strip() for h in raw_headers]
            for index, header in enumerate(self.headers):
                if not header:
                    raise IngestError(f"column {index + 1} has no name", path=path, line=self.header_line)
                if self.headers.index(header) != index:
                    raise IngestError(
                        f"column name {header!r} appears twice", path=path, line=self.header_line, column=header
                    )
            self._first_body = next(self._records, None)
            if self._first_body is None:
                raise IngestError("the table has a header but no data rows", path=path, line=self.header_line)
            self._layout(omics_type, feature_column)
        except BaseException:
            self._text.close()
            raise

    def _first_line(self) -> str:
        _, text = _open(self.path)
        with text:
            try:
                for physical in text:
                    if physical.strip():
                        return next(ln for ln in physical.splitlines() if ln.strip())
            except (_BadBytesError, UnicodeDecodeError):
                _refuse(self.path)
        return ""

    def _nonblank(self, offset: int = 0) -> Iterator[tuple[int, list[str]]]:
        reader = self._reader
        try:
            for record in reader:
                # A blank record (no cells, or only empty ones) is skipped; the first cell usually decides.
                if (record and record[0].strip()) or "".join(record).strip():
                    yield offset + reader.line_num, record
        except csv.Error as exc:
            raise IngestError(
                f"malformed {_delimiter_name(self.delimiter)} table: {exc}",
                path=self.path,
                line=offset + reader.line_num,
            ) from None
        except (_BadBytesError, UnicodeDecodeError):
            _refuse(self.path)

    def _blocks(self) -> Iterator[list[tuple[int, list[str]]]]:
        """The records after the first data row, in blocks of about 64 KiB of text (see :meth:`_text_blocks`)."""
        for block in self._text_blocks():
            yield _split(block) if isinstance(block, _Text) else block

    def _text_blocks(self) -> Iterator[_Text | list[tuple[int, list[str]]]]:
        """The text after the first data row, in blocks of about 64 KiB: quote-free text as it is, the rest as
        ``csv.reader``'s records.

        A block without quotes or lone carriage returns is split on newlines and delimiters (:func:`_split`), which
        is exactly what ``csv.reader`` makes of such text (same cells, same physical line numbers, same blank records
        skipped) at a fraction of its cost. From the first block that holds a quote or a lone carriage return on, the
        rest of the file goes through ``csv.reader`` as before (a quoted cell may span lines and blocks).
        """
        text, delimiter = self._text, self.delimiter
        line = self._reader.line_num  # physical lines consumed by the header and the first data row
        limit = csv.field_size_limit()
        try:
            while block := text.read(_BLOCK_CHARS):
                if not block.endswith("\n"):
                    block += text.readline()  # the rest of the last line (a "\r" followed by "\n" included)
                crlf = "\r" in block
                # A quote, a lone "\r", or a block longer than csv's field limit (it may hold a cell csv refuses):
                # csv decides, from here to the end.
                if '"' in block or len(block) > limit or (crlf and block.count("\r") != block.count("\r\n")):
                    self._reader = csv.reader(
                        itertools.chain(io.StringIO(block, newline=""), text), delimiter=delimiter, strict=True
                    )
                    yield from _batched(self._nonblank(offset=line))
                    return
                if crlf:
                    block = block.replace("\r\n", "\n")  # Windows line ends: one physical line each, as csv reads
                lines = block.count("\n") + (not block.endswith("\n"))
                yield _Text(line + 1, block, delimiter)
                line += lines
        except (_BadBytesError, UnicodeDecodeError):
            _refuse(self.path)

    def _layout(self, omics_type: str, feature_column: str | None) -> None:
        headers = self.headers
        identity = _resolve_identity(self.path, headers, omics_type, feature_column, self.header_line)
        used = {identity}
        fold_change = _find_stat_column(headers, FOLD_CHANGE_KEYS, used)
        used |= {fold_change} if fold_change else set()
        p_value = _find_stat_column(headers, P_VALUE_KEYS, used)
        used |= {p_value} if p_value else set()
        intensity = _find_stat_column(headers, INTENSITY_KEYS, used)
        used |= {intensity} if intensity else set()
        others = [h for h in headers if h not in used]
        # Only a table without statistics columns is a sample matrix; otherwise extra columns are annotations.
        if fold_change is None and p_value is None and intensity is None:
            first = self._first_values([headers.index(h) for h in others])
            samples = [h for h, value in zip(others, first, strict=True) if _is_number(value)]
        else:
            samples = []
        self.identity_column = identity
        self.fold_change_column = fold_change
        self.p_value_column = p_value
        self.intensity_column = intensity
        self.sample_columns = tuple(samples)
        self.ignored_columns = tuple(h for h in others if h not in samples)

    def _first_values(self, columns: list[int]) -> list[str]:
        """The first present value of each column, looking ahead with a second reader (usually one row)."""
        found: dict[int, str] = {}
        _, text = _open(self.path)
        with text:
            reader = csv.reader(text, delimiter=self.delimiter, strict=True)
            try:
                for record in reader:
                    if reader.line_num <= self.header_line:
                        continue
                    for at in columns:
                        if at not in found and _present(record, at):
                            found[at] = record[at].strip()
                    if len(found) == len(columns):
                        break
            except (csv.Error, _BadBytesError, UnicodeDecodeError):
                pass  # reported, with its line, by the pass over the rows
        return [found.get(at, "") for at in columns]

    @property
    def is_sample_matrix(self) -> bool:
        return bool(self.sample_columns)

    def rows(self) -> Iterator[TableRow]:
        """The data rows, checked; raises IngestError at the first bad cell (file, line, column)."""
        for block in self.row_blocks():
            yield from block

    def row_blocks(self) -> Iterator[list[TableRow]]:
        """The data rows, checked, in blocks of a few thousand; raises IngestError at the first bad cell (file,
        line, column), before yielding the block that holds it."""
        check = self._checker()
        assert self._first_body is not None
        with self._text:
            for block in itertools.chain(([self._first_body],), self._blocks()):
                yield check(block)
            self.sha256 = self._hashing.sha256.hexdigest()

    def column_blocks(self) -> Iterator[ColumnBlock | list[TableRow]]:
        """What :meth:`row_blocks` yields, with each quote-free block of a statistics table read by columns (a
        :class:`~ingest.readers.table_arrow.ColumnBlock`) where that reads it identically; the others as rows.
        Raises IngestError exactly where :meth:`row_blocks` does. Not for sample matrices."""
        from ingest.readers.table_arrow import read_block

        assert not self.sample_columns, "a sample matrix is read by rows"
        check = self._checker()
        index_of = {h: i for i, h in enumerate(self.headers)}
        numbers = [(index_of[c], c) for c in (self.fold_change_column, self.p_value_column, self.intensity_column) if c]
        name_at, width = index_of[self.identity_column], len(self.headers)
        assert self._first_body is not None
        with self._text:
            yield check([self._first_body])
            for block in self._text_blocks():
                if isinstance(block, _Text):
                    read = read_block(
                        block.text,
                        block.first_line,
                        delimiter=self.delimiter,
                        width=width,
                        name_at=name_at,
                        number_columns=numbers,
                        p_value_column=self.p_value_column,
                    )
                    yield read if read is not None else check(_split(block))
                else:
                    yield check(block)
            self.sha256 = self._hashing.sha256.hexdigest()

    def _checker(self) -> Callable[[list[tuple[int, list[str]]]], list[TableRow]]:
        """The check of a block of records into rows; raises IngestError at the first bad cell."""
        path = self.path
        headers = self.headers
        width = len(headers)
        index_of = {h: i for i, h in enumerate(headers)}
        name_at = index_of[self.identity_column]
        fold_change, p_value, intensity = self.fold_change_column, self.p_value_column, self.intensity_column
        fc_at = index_of[fold_change] if fold_change else None
        p_at = index_of[p_value] if p_value else None
        intensity_at = index_of[intensity] if intensity else None
        samples = [(index_of[c], c) for c in self.sample_columns]
        identity = self.identity_column

        def check(block: list[tuple[int, list[str]]]) -> list[TableRow]:
            out: list[TableRow] = []
            for line, record in block:
                if len(record) != width:
                    raise IngestError(f"has {len(record)} cells, the header has {width}", path=path, line=line)
                name = record[name_at].strip()
                if not name:
                    raise IngestError("the feature name is empty", path=path, line=line, column=identity)
                fc = None if fc_at is None else _cell(record[fc_at], path, line, fold_change)
                p = None if p_at is None else _cell(record[p_at], path, line, p_value)
                if p is not None and not 0.0 <= p <= 1.0:
                    raise IngestError(f"p-value {p} is outside [0, 1]", path=path, line=line, column=p_value)
                value = None if intensity_at is None else _cell(record[intensity_at], path, line, intensity)
                out.append(
                    TableRow(
                        line,
                        name,
                        fc,
                        p,
                        value,
                        tuple(_cell(record[at], path, line, column) for at, column in samples) if samples else (),
                    )
                )
            return out

        return check


class _Text(NamedTuple):
    """Quote-free text of whole physical lines ("\n"-separated, no carriage return), the first at ``first_line``."""

    first_line: int
    text: str
    delimiter: str


def _split(block: _Text) -> list[tuple[int, list[str]]]:
    """The non-blank records of a quote-free block, as ``csv.reader`` reads them, with their physical lines."""
    lines = block.text.split("\n")
    if lines[-1] == "":
        lines.pop()
    delimiter = block.delimiter
    out: list[tuple[int, list[str]]] = []
    for number, physical in enumerate(lines, start=block.first_line):
        record = physical.split(delimiter)
        if record[0].strip() or "".join(record).strip():
            out.append((number, record))
    return out


def _batched(records: Iterator[tuple[int, list[str]]]) -> Iterator[list[tuple[int, list[str]]]]:
    while batch := list(itertools.islice(records, _BATCH_ROWS)):
        yield batch


def _cell(text: str, path: Path, line: int, column: str | None) -> float | None:
    # Fast path for the common case (a finite number); everything else goes through parse_number's checks.
    try:
        value = float(text)
    except ValueError:
        return parse_number(text, path=path, line=line, column=column or "")
    if value - value == 0.0:  # finite (inf - inf and nan - nan are nan)
        return value
    return parse_number(text, path=path, line=line, column=column or "")


def read_table(path: Path, omics_type: str, *, feature_column: str | None = None) -> TableFile:
    """Read and check a whole CSV/TSV feature table into memory. Raises IngestError (with file, line, column)."""
    scan = TableScan(path, omics_type, feature_column=feature_column)
    rows = tuple(scan.rows())
    return TableFile(
        path=path,
        sha256=scan.sha256,
        delimiter=scan.delimiter,
        identity_column=scan.identity_column,
        fold_change_column=scan.fold_change_column,
        p_value_column=scan.p_value_column,
        intensity_column=scan.intensity_column,
        sample_columns=scan.sample_columns,
        ignored_columns=scan.ignored_columns,
        rows=rows,
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
