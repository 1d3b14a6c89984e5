"""The table path's work by columns (pyarrow): plain gene symbols a block at a time, and the file's feature keys
kept as Arrow arrays to find duplicates at the end instead of in a dict of one entry per feature.

Imported only when a table is read (pyarrow takes a few tenths of a second to import).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from ingest.normalize import NormalizedFeature
from ingest.normalize.gene import PLAIN_SYMBOL_PATTERN
from ingest.writer.staging_arrow import plain_feature_text

_PLAIN_SYMBOL = f"^(?:{PLAIN_SYMBOL_PATTERN})$"


def plain_gene_symbols(names: Any) -> Any:
    """Which names ``normalize_gene`` reads by its first rule (ASCII letters and digits with a letter, not starting
    ``ENS`` in any case): each of those is its own upper-case symbol, parsed, with no identifiers."""
    return pc.and_(
        pc.match_substring_regex(names, _PLAIN_SYMBOL),
        pc.invert(pc.starts_with(names, "ens", ignore_case=True)),
    )


class Named(Protocol):
    """What the pipeline knows of a name as written (``pipeline._Named``)."""

    @property
    def feature(self) -> NormalizedFeature: ...

    @property
    def key(self) -> str: ...

    @property
    def columns(self) -> str: ...


def name_block(names: Any, named: Callable[[str], Named], plain_genes: bool) -> tuple[Any, Any, Any]:
    """A block's staged feature columns, keys and unparsed flags, one per name.

    With ``plain_genes`` (the table's features are genes, normalized by ``normalize``), names that ``normalize_gene``
    reads by its first rule are done by column: each is its own upper-case symbol, parsed, with no identifiers, and
    holds nothing COPY escapes. Every other name goes through ``named`` (one call per row; it caches per name).
    """
    rows = len(names)
    if plain_genes:
        plain = plain_gene_symbols(names)
        others = pc.invert(plain)
        upper = pc.ascii_upper(names)  # str.upper for ASCII names, which plain names are
        text, keys, unparsed = plain_feature_text("gene", upper, names), upper, pa.repeat(False, rows)
        if not pc.any(others).as_py():
            return text, keys, unparsed
        found = [named(raw) for raw in pc.filter(names, others).to_pylist()]
        return (
            pc.replace_with_mask(text, others, pa.array([n.columns for n in found], pa.string())),
            pc.replace_with_mask(keys, others, pa.array([n.key for n in found], pa.string())),
            pc.replace_with_mask(unparsed, others, pa.array([not n.feature.parsed for n in found], pa.bool_())),
        )
    found = [named(raw) for raw in names.to_pylist()]
    return (
        pa.array([n.columns for n in found], pa.string()),
        pa.array([n.key for n in found], pa.string()),
        pa.array([not n.feature.parsed for n in found], pa.bool_()),
    )


class KeyLedger:
    """Each row's feature key and line, block by block (and the name as written of each unparsed row); at the end
    the file's feature count, the lines of every key that more than one row names, and the unparsed features.

    Keys are strings (``pipeline._key``). A row is a key's first row when no earlier row has its key; the counts and
    examples are those of first rows, as a dict keyed by feature that kept each key's first line would give them.
    """

    def __init__(self) -> None:
        self._keys: list[Any] = []
        self._lines: list[Any] = []
        self._unparsed: list[tuple[Any, Any, Any]] = []  # (lines, keys, names) of unparsed rows

    def add(self, keys: Any, lines: Any, names: Any, unparsed: Any) -> None:
        """One block's rows: Arrow arrays, or lists (keys and names str, lines int, unparsed bool)."""
        keys = keys if isinstance(keys, pa.Array) else pa.array(keys, pa.string())
        lines = lines if isinstance(lines, pa.Array) else pa.array(lines, pa.int64())
        unparsed = unparsed if isinstance(unparsed, pa.Array) else pa.array(unparsed, pa.bool_())
        self._keys.append(keys)
        self._lines.append(lines)
        if pc.any(unparsed).as_py():
            names = names if isinstance(names, pa.Array) else pa.array(names, pa.string())
            self._unparsed.append(tuple(pc.filter(column, unparsed) for column in (lines, keys, names)))

    def finish(self, examples: int) -> tuple[int, set[int], int, list[tuple[str, str]]]:
        """(distinct keys, lines of the rows whose key repeats, unparsed first rows, the first ``examples`` of those
        as (key, name as written) in file order)."""
        keys = pa.chunked_array(self._keys, pa.string())
        lines = pa.chunked_array(self._lines, pa.int64())
        counts = pc.value_counts(keys)
        features = len(counts)
        repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        del counts
        duplicate_lines: set[int] = set()
        unparsed_lines = pa.chunked_array([u[0] for u in self._unparsed], pa.int64())
        unparsed_keys = pa.chunked_array([u[1] for u in self._unparsed], pa.string())
        unparsed_names = pa.chunked_array([u[2] for u in self._unparsed], pa.string())
        if len(repeated):
            in_group = pc.is_in(keys, value_set=repeated)
            first: dict[str, int] = {}
            group_lines = pc.filter(lines, in_group).to_pylist()
            for key, line in zip(pc.filter(keys, in_group).to_pylist(), group_lines, strict=True):
                first.setdefault(key, line)
            duplicate_lines = set(group_lines)
            later = pa.array(sorted(duplicate_lines - set(first.values())), pa.int64())
            if len(unparsed_lines):
                first_rows = pc.invert(pc.is_in(unparsed_lines, value_set=later))
                unparsed_keys = pc.filter(unparsed_keys, first_rows)
                unparsed_names = pc.filter(unparsed_names, first_rows)
        kept_keys = unparsed_keys.slice(0, examples).to_pylist()
        kept_names = unparsed_names.slice(0, examples).to_pylist()
        return features, duplicate_lines, len(unparsed_keys), list(zip(kept_keys, kept_names, strict=True))
