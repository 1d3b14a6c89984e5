"""Staging rows of a block read by columns (pyarrow): the same COPY text lines as :func:`staging.staged_row`, built
by Arrow's kernels instead of one Python string per row.

Imported only when a table is read (pyarrow takes a few tenths of a second to import). Every value here is text
that COPY's text format reads as :func:`staging.staged_row` writes it: numbers are either their cells as written
(plain decimals that read back as the same double, see ``readers.table_arrow``) or the double's shortest
round-trip text; feature columns come from :func:`staging.feature_text` or, for names that need no escaping and
normalize to themselves upper-cased, from :func:`plain_feature_text`.
"""

from __future__ import annotations

import struct
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest.writer.staging import NULL_TEXT


def number_text(values: Any, cells: Any, cells_are_values: bool) -> Any:
    """A statistics column as COPY text: ``\\N`` where missing, else the number (its cell where that reads back as
    the value, else the double's shortest round-trip text, like ``repr``)."""
    if cells_are_values:
        return pc.if_else(pc.equal(cells, ""), NULL_TEXT, cells)
    return pc.fill_null(pc.cast(values, pa.string()), NULL_TEXT)


def plain_feature_text(feature_type: str, normalized: Any, raw: Any) -> Any:
    """:func:`staging.feature_text` of parsed features whose display name is their normalized name, with no species,
    class or identifiers, for names (``normalized`` and ``raw``) that hold nothing COPY escapes."""
    return pc.binary_join_element_wise(
        pa.scalar(feature_type), normalized, normalized, f"{NULL_TEXT}\t{NULL_TEXT}\tt\t{{}}", raw, "\t"
    )


def rows_text(lines: Any, feature_columns: Any, numbers: list[Any | None], extra_json: str) -> memoryview:
    """The COPY text lines (newlines included) of a block: line, feature columns, the three statistics (None: the
    column is absent, all ``\\N``) and ``extra`` (the same JSON for every row, escaping-free)."""
    parts = [pc.cast(lines, pa.string()), feature_columns]
    parts += [NULL_TEXT if n is None else n for n in numbers]
    parts.append(pa.scalar(f"{extra_json}\n"))
    joined = pc.binary_join_element_wise(*parts, "\t")
    assert joined.null_count == 0
    return _text_bytes(joined)


def _text_bytes(strings: Any) -> memoryview:
    """The concatenated UTF-8 of a string array without nulls, as its data buffer holds it."""
    if not len(strings):
        return memoryview(b"")
    offsets, data = strings.buffers()[1], strings.buffers()[2]
    start = struct.unpack_from("<i", offsets, 4 * strings.offset)[0]
    end = struct.unpack_from("<i", offsets, 4 * (strings.offset + len(strings)))[0]
    return memoryview(data)[start:end]
