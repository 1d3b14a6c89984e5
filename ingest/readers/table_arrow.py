"""A quote-free block of a statistics table read by columns (pyarrow), or ``None`` where the row-by-row reader must
decide.

:meth:`ingest.readers.table.TableScan.column_blocks` hands each quote-free block of text (the ones its fast path
splits on newlines and delimiters) to :func:`read_block`. The block is accepted only where every row is one the row
reader would accept and read identically: exactly one row per physical line (no blank line, every line with the
header's number of cells), every feature name non-empty after ``str.strip``, every statistics cell either empty or a
decimal number that is finite (and a p-value in [0, 1]). Anything else — a blank line to skip, a cell to report with
its line and column, ``NA``, a number with spaces or underscores — returns ``None`` and the block goes through the row
reader, which skips, reads or refuses it exactly as before. So this module never raises on bad input and never
decides an error message; it only saves the per-row Python work of the common case.

Imported only when a table is read (pyarrow takes a few tenths of a second to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

# A decimal number as both Python's float() and Postgres' float8in read it (correctly rounded, the same double):
# optional sign, digits with an optional point (or a point and digits), an optional exponent. RE2's \d is ASCII only
# (Python's float() would also take other scripts' digits and "1_0"; those go to the row reader).
_DECIMAL = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
# Cells whose text can go to COPY as written: no exponent and at most 30 characters, so the value is a normal
# double (|x| < 1e30, and 0 or >= 1e-29) that any correctly rounded parser reads from this text as float() does.
_SHORT_DECIMAL = r"^[+-]?(?:\d+\.?\d*|\.\d+)$"
_SHORT_DECIMAL_CHARS = 30
# A name that str.strip() leaves as it is and that is not empty: first and last characters printable ASCII, not
# space. (Other names are stripped in Python, whose notion of whitespace is the one the row reader uses.)
_UNSTRIPPED = r"^[!-~](?:.*[!-~])?$"


@dataclass(frozen=True)
class Numbers:
    """One statistics column of a block: the values (null where the cell was empty) and their cells as written."""

    values: Any  # pa.DoubleArray
    cells: Any  # pa.StringArray, "" where missing
    # Every present cell is a short plain decimal (see _SHORT_DECIMAL): its text reads back as its value.
    cells_are_values: bool


@dataclass(frozen=True)
class ColumnBlock:
    """The rows of one block, checked: row ``i`` is physical line ``first_line + i``."""

    first_line: int
    names: Any  # pa.StringArray: the feature names, stripped (TableRow.raw_name)
    numbers: dict[str, Numbers]  # by column name (the fold change, p-value and intensity columns present)

    def __len__(self) -> int:
        return len(self.names)

    def lines(self) -> Any:
        """The rows' physical line numbers (pa.Int64Array)."""
        return pc.add(_counting(len(self)), self.first_line)


_COUNTING: list[Any] = []  # 0, 1, 2, … as one Int64Array, grown as blocks need (built once per process)


def _counting(rows: int) -> Any:
    if not _COUNTING or len(_COUNTING[0]) < rows:
        _COUNTING[:] = [pa.array(range(max(rows, 1 << 16)), pa.int64())]
    return _COUNTING[0].slice(0, rows)


def read_block(
    text: str,
    first_line: int,
    *,
    delimiter: str,
    width: int,
    name_at: int,
    number_columns: Sequence[tuple[int, str]],
    p_value_column: str | None,
) -> ColumnBlock | None:
    """The block's rows by columns, or None where the row reader must read it (see the module docstring).

    ``text`` holds whole physical lines separated by ``"\\n"`` (no quote, no carriage return), the first of them at
    line ``first_line``.
    """
    lines = text.count("\n") + (not text.endswith("\n"))
    if not lines or text.startswith("\n") or "\n\n" in text:
        return None  # a blank line: the row reader skips it (and keeps the line numbers)
    names_of = [f"c{i}" for i in range(width)]
    wanted = [name_at, *(at for at, _ in number_columns)]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(text.encode()),
            read_options=pacsv.ReadOptions(column_names=names_of, use_threads=False, block_size=len(text) + 1024),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char=False,
                double_quote=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={names_of[at]: pa.string() for at in wanted},
                include_columns=[names_of[at] for at in wanted],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=False,  # decoded (strictly) before
            ),
        )
    except pa.ArrowInvalid:
        return None  # a row with another number of cells: the row reader reports it (or skips a blank one)
    if table.num_rows != lines:
        return None
    names = _names(table.column(names_of[name_at]).combine_chunks())
    if names is None:
        return None
    numbers: dict[str, Numbers] = {}
    for at, column in number_columns:
        read = _numbers(table.column(names_of[at]).combine_chunks(), is_p_value=column == p_value_column)
        if read is None:
            return None
        numbers[column] = read
    return ColumnBlock(first_line, names, numbers)


def _names(cells: Any) -> Any | None:
    clean = pc.match_substring_regex(cells, _UNSTRIPPED)
    if pc.all(clean).as_py():
        return cells
    unclean = pc.invert(clean)
    stripped = [cell.strip() for cell in pc.filter(cells, unclean).to_pylist()]
    if not all(stripped):
        return None  # an empty name: refused (or, with every cell blank, skipped) by the row reader
    return pc.replace_with_mask(cells, unclean, pa.array(stripped, pa.string()))


def _numbers(cells: Any, *, is_p_value: bool) -> Numbers | None:
    empty = pc.equal(cells, "")
    if pc.all(pc.or_(pc.match_substring_regex(cells, _SHORT_DECIMAL), empty)).as_py():
        longest = pc.max(pc.binary_length(cells)).as_py() or 0
        cells_are_values = longest <= _SHORT_DECIMAL_CHARS
    elif pc.all(pc.or_(pc.match_substring_regex(cells, _DECIMAL), empty)).as_py():
        cells_are_values = False
    else:
        return None  # NA, text, nan, spaces…: the row reader reads or refuses it
    try:
        values = pc.cast(pc.if_else(empty, pa.scalar(None, pa.string()), cells), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if pc.any(pc.invert(pc.is_finite(values))).as_py():
        return None  # overflow to infinity: the row reader refuses it
    if is_p_value:
        low_high = pc.min_max(values)
        low, high = low_high["min"].as_py(), low_high["max"].as_py()
        if low is not None and not (low >= 0.0 and high <= 1.0):
            return None  # outside [0, 1]: the row reader refuses it with its line
    return Numbers(values, cells, cells_are_values)
