"""Dataset features on their way to ``COPY``: one row format for the temporary staging table, and a spool file.

A large table is read, checked and normalized into a :class:`FeatureSpool` — COPY text lines in an anonymous
temporary file — before the database is touched, so a bad last line is reported at bounded memory and with
nothing written. The writer then streams the spool's bytes into ``COPY`` unchanged; rows held in memory (mwTab
deposits, callers of the API, merged duplicate groups) go through the same :func:`format_row`, so every path
stages identical text.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

import orjson

from ingest.normalize import NormalizedFeature

# The staging table's columns, in COPY order. ``line`` is the row's line in the source file (NULL when none):
# rows of a merged duplicate group are deleted by it and replaced by the merged row.
STAGE_COLUMNS = (
    "line",
    "feature_type",
    "normalized_name",
    "name",
    "species_name",
    "lipid_class",
    "parsed",
    "external_ids",
    "raw_name",
    "log2_fold_change",
    "p_value",
    "intensity",
    "extra",
)

STAGE_TABLE_DDL = """
CREATE TEMP TABLE ingest_dataset_feature (
    line integer,
    feature_type text NOT NULL,
    normalized_name text NOT NULL,
    name text NOT NULL,
    species_name text,
    lipid_class text,
    parsed boolean NOT NULL,
    external_ids jsonb NOT NULL,
    raw_name text NOT NULL,
    log2_fold_change double precision,
    p_value double precision,
    intensity double precision,
    extra jsonb NOT NULL
) ON COMMIT DROP
"""

_CHUNK = 1 << 20
NULL_TEXT = "\\N"  # COPY text format's NULL


def json_text(value: object) -> str:
    """Deterministic JSON for jsonb columns (sorted keys; floats as Python's shortest round-trip repr)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def _text(value: str) -> str:
    # COPY text format: backslash, tab, newline and carriage return are escaped; nothing else is special.
    # https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.2
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _opt_text(value: str | None) -> str:
    return NULL_TEXT if value is None else _text(value)


def feature_ids(feature: NormalizedFeature, identifiers: Mapping[str, str]) -> str:
    """The JSON of a feature's identifiers: those a reader attached, overridden by the normalizer's own."""
    if not identifiers and not feature.external_ids:
        return "{}"
    return json_text({**identifiers, **feature.external_ids})


def feature_text(feature: NormalizedFeature, ids_json: str, raw_name: str) -> str:
    """The columns of a staging row that depend only on the feature and its name as written (``feature_type``
    to ``raw_name``), tab-separated: a table that repeats a name formats them once."""
    return "\t".join(
        (
            _text(feature.feature_type),
            _text(feature.normalized_name),
            _text(feature.display_name),
            _opt_text(feature.species_name),
            _opt_text(feature.lipid_class),
            "t" if feature.parsed else "f",
            _text(ids_json),
            _text(raw_name),
        )
    )


def staged_row(
    line: int | None,
    feature_columns: str,
    log2_fold_change: float | None,
    p_value: float | None,
    intensity: float | None,
    extra_json: str,
) -> str:
    """One staging row as a COPY text line (newline included), ``feature_columns`` from :func:`feature_text`."""
    return (
        f"{NULL_TEXT if line is None else line}\t{feature_columns}\t"
        f"{NULL_TEXT if log2_fold_change is None else repr(log2_fold_change)}\t"
        f"{NULL_TEXT if p_value is None else repr(p_value)}\t"
        f"{NULL_TEXT if intensity is None else repr(intensity)}\t{_text(extra_json)}\n"
    )


def format_row(
    line: int | None,
    feature: NormalizedFeature,
    ids_json: str,
    raw_name: str,
    log2_fold_change: float | None,
    p_value: float | None,
    intensity: float | None,
    extra_json: str,
) -> str:
    """One staging row as a COPY text line (newline included)."""
    return staged_row(line, feature_text(feature, ids_json, raw_name), log2_fold_change, p_value, intensity, extra_json)


class FeatureSpool:
    """Staging rows written to an anonymous temporary file (gone when closed or collected)."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="ingest-spool-")  # noqa: SIM115 - owned by the spool
        self._pending: list[str] = []
        self._pending_chars = 0
        self.rows = 0

    def add(self, row: str) -> None:
        self.extend((row,))

    def extend(self, rows: Sequence[str]) -> None:
        """Add rows (COPY text lines, newlines included), written out in chunks of about 1 MB."""
        self._pending.extend(rows)
        self._pending_chars += sum(map(len, rows))
        self.rows += len(rows)
        if self._pending_chars >= _CHUNK:
            self._flush()

    def write(self, text: bytes | memoryview, rows: int) -> None:
        """Add ``rows`` rows already encoded (COPY text lines, newlines included), after the pending ones."""
        self._flush()
        self._file.write(text)
        self.rows += rows

    def _flush(self) -> None:
        if self._pending:
            self._file.write("".join(self._pending).encode())
            self._pending.clear()
            self._pending_chars = 0

    def finish(
        self, replaced_lines: tuple[int, ...] = (), replacements: tuple[str, ...] = (), features: int | None = None
    ) -> StagedFeatures:
        """Close the spool for writing: the rows at ``replaced_lines`` give way to ``replacements``."""
        self._flush()
        self._file.flush()
        count = self.rows - len(replaced_lines) + len(replacements)
        return StagedFeatures(self._file, features if features is not None else count, replaced_lines, replacements)


@dataclass(frozen=True)
class StagedFeatures:
    """A dataset's features as staging rows on disk, ready for ``COPY`` (see :class:`FeatureSpool`)."""

    file: IO[bytes] = field(repr=False, compare=False)
    count: int
    replaced_lines: tuple[int, ...] = ()
    replacements: tuple[str, ...] = field(default=(), repr=False)

    def __len__(self) -> int:
        return self.count

    def chunks(self) -> Iterator[bytes]:
        """The spooled rows, from the start, in chunks of about a megabyte."""
        self.file.seek(0)
        while chunk := self.file.read(_CHUNK):
            yield chunk
