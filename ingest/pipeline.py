"""One ingest command, end to end: read → normalize → merge duplicates → write (and score) in ONE transaction.

The CLI parses options and calls these functions; tests call them directly. Bad input raises IngestError before
anything is written; a failure inside the writer rolls the whole transaction back. ``dry_run`` runs the very same
statements and rolls back, so what it reports is exactly what a real run would change.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import psycopg

from ingest.duplicates import RULES as DUPLICATE_RULES
from ingest.duplicates import MeasuredRow, MergedGroup, merge_duplicates
from ingest.errors import IngestError
from ingest.normalize import FEATURE_TYPE_FOR_OMICS, NormalizedFeature, normalize
from ingest.readers.signature import read_signature
from ingest.readers.table import IDENTITY_CANDIDATES, TableRow, TableScan
from ingest.scoring import ScoringOptions
from ingest.writer import (
    DatasetFeatureInput,
    DatasetInput,
    ExperimentInput,
    ProgramInput,
    SignatureComponentInput,
    SignatureInput,
    WriteResult,
    check_components,
    write_dataset,
    write_experiment,
    write_program,
    write_signature,
)
from ingest.writer.rows import Conn
from ingest.writer.staging import FeatureSpool, feature_ids, feature_text, format_row, json_text, staged_row

if TYPE_CHECKING:
    from ingest.columns import KeyLedger
    from ingest.readers.mwtab import MwTabStudy
    from ingest.readers.table_arrow import ColumnBlock

OMICS_TYPES = tuple(IDENTITY_CANDIDATES)
UNPARSED_EXAMPLES = 5
UNPARSED_KEPT = 1_000  # first unparsed names remembered while streaming, for the examples after merging
# Every dataset and signature write takes this transaction-scoped lock, so that scoring "both ways" cannot miss a
# pair: a dataset and a signature committed concurrently would each be scored without seeing the other.
INGEST_LOCK_KEY = 0x6F6D6963  # "omic"


class Progress(Protocol):
    """Where a long command reports how far it is (a Rich bar on a terminal; nothing otherwise)."""

    def phase(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class NoProgress:
    def phase(self, description: str, total: int | None) -> None:
        return None

    def advance(self, amount: int = 1) -> None:
        return None


@dataclass(frozen=True)
class ReadReport:
    """What was read from the file, for the summary."""

    path: str
    kind: str  # table | sample matrix | mwTab | signature
    rows_read: int
    features: int
    normalized: int
    unparsed: int
    unparsed_examples: tuple[str, ...]
    merged: tuple[MergedGroup, ...] = ()
    notes: tuple[str, ...] = ()
    # Gene names a spreadsheet turned into dates: (as written, the symbol stored, or None when refused).
    excel_dates: tuple[tuple[str, str | None], ...] = ()


EXCEL_DATES_KEPT = 1_000  # distinct dates listed in a report (all are counted)


class ExcelDates:
    """The gene names of a file that were Excel dates (``1-Sep``), for the ingest report: which were mapped to
    today's HGNC symbol and which were refused (kept as written, unparsed)."""

    def __init__(self) -> None:
        self._seen: dict[str, str | None] = {}
        self.count = 0

    def add(self, raw: str, feature: NormalizedFeature) -> None:
        written = feature.external_ids.get("excel_date")
        if written is None or raw in self._seen:
            return
        self.count += 1
        if len(self._seen) < EXCEL_DATES_KEPT:
            self._seen[raw] = feature.normalized_name if feature.parsed else None

    def entries(self) -> tuple[tuple[str, str | None], ...]:
        return tuple(self._seen.items())

    def note(self) -> str | None:
        if not self.count:
            return None
        mapped = [f"{raw} → {symbol}" for raw, symbol in self._seen.items() if symbol is not None]
        refused = [raw for raw, symbol in self._seen.items() if symbol is None]
        parts = [f"{self.count} gene name(s) were spreadsheet dates (Excel's SEPT1/MARCH3/DEC1)"]
        if mapped:
            parts.append(
                f"mapped to today's HGNC symbol: {', '.join(mapped[:10])}" + (" …" if len(mapped) > 10 else "")
            )
        if refused:
            parts.append(
                "refused (more than one gene can have made the date; kept as written, unparsed): "
                + ", ".join(refused[:10])
                + (" …" if len(refused) > 10 else "")
            )
        return "; ".join(parts)


@dataclass(frozen=True)
class DatasetOptions:
    omics_type: str | None = None  # required for tables; mwTab decides itself unless given
    name: str | None = None
    key: str | None = None
    description: str | None = None
    organism: tuple[str, ...] | None = None
    disease: tuple[str, ...] | None = None
    programs: tuple[str, ...] = ()
    experiments: tuple[str, ...] = ()
    feature_column: str | None = None
    on_duplicate: str = "error"
    allow_bins: bool = False
    scoring: ScoringOptions = field(default_factory=ScoringOptions)


Normalizer = Callable[[str, str], NormalizedFeature]


def _normalize_all(
    names: Sequence[str], feature_type: str, progress: Progress, normalizer: Normalizer
) -> list[NormalizedFeature]:
    progress.phase("normalizing", len(names))
    cache: dict[str, NormalizedFeature] = {}
    out: list[NormalizedFeature] = []
    for index, name in enumerate(names, start=1):
        feature = cache.get(name)
        if feature is None:
            feature = cache[name] = normalizer(name, feature_type)
        out.append(feature)
        if index % 1000 == 0:
            progress.advance(1000)
    progress.advance(len(names) % 1000)
    return out


def _sample_summary(samples: tuple[float | None, ...]) -> tuple[float | None, dict[str, object]]:
    present = [v for v in samples if v is not None]
    if not present:
        return None, {"n_samples": 0}
    return math.fsum(present) / len(present), {"n_samples": len(present), "min": min(present), "max": max(present)}


def _to_input(row: MeasuredRow, sample_matrix: bool) -> DatasetFeatureInput:
    extra: dict[str, object] = {}
    intensity = row.intensity
    if sample_matrix:
        intensity, extra = _sample_summary(row.samples)
    if row.identifiers:
        extra["identifiers"] = dict(row.identifiers)
    if row.merged_from:
        extra["merged_from"] = [{"raw_name": name, "line": line} for name, line in row.merged_from]
    return DatasetFeatureInput(
        feature=row.feature,
        raw_name=row.raw_name,
        log2_fold_change=row.log2_fold_change,
        p_value=row.p_value,
        intensity=intensity,
        extra=extra,
    )


def _parse_counts(kept: Sequence[MeasuredRow]) -> tuple[int, int, tuple[str, ...]]:
    """Parsed and unparsed feature counts, and a few unparsed names as written."""
    unparsed = [r for r in kept if not r.feature.parsed]
    examples = tuple(r.raw_name for r in unparsed[:UNPARSED_EXAMPLES])
    return len(kept) - len(unparsed), len(unparsed), examples


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector's automatic runs off for the streaming pass, which builds millions of small
    objects (records, rows, staged lines) while keeping an entry per feature: its collections would rescan that
    growing heap again and again (reading 10^6 rows took 3.9 s of CPU with them, 1.5 s without). Reference
    counting frees what the pass builds; what a normalizer may leave in cycles (a parser's tree) is collected by
    :func:`_collect_young` every ``_COLLECT_EVERY_BLOCKS`` blocks."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_COLLECT_EVERY_BLOCKS = 64  # ~140,000 rows of a three-column table


def _collect_young(block_number: int) -> None:
    if block_number % _COLLECT_EVERY_BLOCKS == 0:
        gc.collect(0)  # the objects made since the last one: cycles among them are garbage


# Distinct names whose normalization is remembered while a table is read (repeated names are common; a bound
# keeps a file of a million distinct names from holding a million results).
NORMALIZE_CACHE_SIZE = 100_000


def prepare_table_dataset(
    path: Path, options: DatasetOptions, progress: Progress | None = None, normalizer: Normalizer = normalize
) -> tuple[DatasetInput, ReadReport]:
    """Read, check and normalize a CSV/TSV table into a dataset to write. Raises IngestError.

    One streaming pass: each row is checked, normalized and appended to a spool file of staging rows, so memory
    holds one entry per distinct feature (to find duplicates) rather than the rows themselves, and the database
    is not touched until the whole file has been read. Rows of a duplicate group are read again, merged by
    ``merge_duplicates`` and replace their spooled rows.
    """
    progress = progress or NoProgress()
    omics_type = options.omics_type
    if omics_type not in FEATURE_TYPE_FOR_OMICS:
        raise IngestError(f"unknown omics type {omics_type!r} (expected one of: {', '.join(OMICS_TYPES)})", path=path)
    if options.on_duplicate not in DUPLICATE_RULES:
        merge_duplicates([], options.on_duplicate, path=str(path))  # raises the unknown-rule error
    progress.phase(f"reading {path.name}", None)
    scan = TableScan(path, omics_type, feature_column=options.feature_column)
    feature_type = FEATURE_TYPE_FOR_OMICS[omics_type]
    sample_matrix = scan.is_sample_matrix
    spool = FeatureSpool()
    # Per distinct name as written: its feature, duplicate key, staged feature columns and whether it was an Excel
    # date. A table names each feature in one row, or repeats names across rows: either way each distinct name is
    # normalized and formatted once (up to NORMALIZE_CACHE_SIZE of them).
    cache: dict[str, _Named] = {}
    excel_dates = ExcelDates()

    def named(raw: str) -> _Named:
        found = cache.get(raw)
        if found is None:
            found = _named(raw, normalizer(raw, feature_type), feature_type)
            if len(cache) < NORMALIZE_CACHE_SIZE:
                cache[raw] = found
        if found.is_date:
            excel_dates.add(raw, found.feature)
        return found

    # Imported here: pyarrow takes a few tenths of a second to import, which the other commands never need.
    from ingest.columns import KeyLedger

    ledger = KeyLedger()  # each row's key, to find the features and the duplicate groups at the end
    rows_read = 0
    # A statistics table is read by columns where a block allows (see TableScan.column_blocks); sample matrices
    # and the blocks it leaves to the row reader come as rows.
    blocks = scan.row_blocks() if sample_matrix else scan.column_blocks()
    plain_genes = normalizer is normalize and feature_type == "gene"
    with _collector_paused():
        for block_number, block in enumerate(blocks, start=1):
            _collect_young(block_number)
            if isinstance(block, list):
                _stage_rows(block, named, sample_matrix, spool, ledger)
            else:
                _stage_columns(block, named, plain_genes, scan, spool, ledger)
            rows_read += len(block)
            progress.advance(len(block))
        features, duplicate_lines, unparsed_first, unparsed = ledger.finish(UNPARSED_KEPT)
    merged: list[MergedGroup] = []
    replacements: list[str] = []
    merged_rows: dict[str, MeasuredRow] = {}
    unparsed_count = unparsed_first
    if duplicate_lines:
        kept, merged, first_rows = _merge_groups(scan, omics_type, duplicate_lines, options.on_duplicate, normalizer)
        for kept_row in kept:
            key = _key(kept_row.feature, feature_type)
            replacements.append(_staged_row(kept_row, sample_matrix))
            merged_rows[key] = kept_row
            # A merged group counts once, as its kept row, where the first pass counted its first row.
            unparsed_count += (not kept_row.feature.parsed) - (not first_rows[key].feature.parsed)
    staged = spool.finish(tuple(sorted(duplicate_lines)), tuple(replacements), features=features)
    examples = tuple(
        merged_rows[k].raw_name if k in merged_rows else raw
        for k, raw in unparsed
        if k not in merged_rows or not merged_rows[k].feature.parsed
    )[:UNPARSED_EXAMPLES]
    notes = []
    if scan.ignored_columns:
        notes.append(f"columns ignored (not statistics or samples): {', '.join(scan.ignored_columns)}")
    stats = [c for c in (scan.fold_change_column, scan.p_value_column, scan.intensity_column) if c]
    notes.append(
        f"feature column {scan.identity_column!r}; "
        + (f"{len(scan.sample_columns)} sample columns summarised" if sample_matrix else "")
        + (f"statistics: {', '.join(stats)}" if stats else "")
    )
    if (dates_note := excel_dates.note()) is not None:
        notes.append(dates_note)
    dataset = DatasetInput(
        natural_key=options.key or f"{omics_type}:{path.name}",
        name=options.name or f"Internal {omics_type.capitalize()} — {path.stem}",
        omics_type=omics_type,
        features=staged,
        source_sha256=scan.sha256,
        description=options.description,
        organism=options.organism,
        disease=options.disease,
        data_origin="Internal",
        dataset_source_type="Sample matrix" if sample_matrix else "Processed table",
        file_paths=(str(path.resolve()),),
        programs=options.programs,
        experiments=options.experiments,
    )
    report = ReadReport(
        path=str(path),
        kind="sample matrix" if sample_matrix else "table",
        rows_read=rows_read,
        features=features,
        normalized=features - unparsed_count,
        unparsed=unparsed_count,
        unparsed_examples=examples,
        merged=tuple(merged),
        notes=tuple(notes),
        excel_dates=excel_dates.entries(),
    )
    return dataset, report


class _Named(NamedTuple):
    feature: NormalizedFeature
    key: str
    columns: str  # the staged row's feature columns (staging.feature_text)
    is_date: bool  # the name was a spreadsheet date (reported)


def _named(raw: str, feature: NormalizedFeature, feature_type: str) -> _Named:
    return _Named(
        feature,
        _key(feature, feature_type),
        feature_text(feature, feature_ids(feature, {}), raw),
        "excel_date" in feature.external_ids,
    )


def _key(feature: NormalizedFeature, feature_type: str) -> str:
    # A table's features share one type (the normalizer's answer, checked): the name alone is the key. Another type
    # is kept apart by a NUL, which no name holds (readers refuse it).
    name = feature.normalized_name
    return name if feature.feature_type == feature_type else f"{feature.feature_type}\x00{name}"


def _stage_rows(
    block: list[TableRow],
    named: Callable[[str], _Named],
    sample_matrix: bool,
    spool: FeatureSpool,
    ledger: KeyLedger,
) -> None:
    """Spool a block of rows read one by one, and note their keys."""
    staged: list[str] = []
    keys: list[str] = []
    unparsed: list[bool] = []
    for row in block:
        feature, key, columns, _ = named(row.raw_name)
        keys.append(key)
        unparsed.append(not feature.parsed)
        if sample_matrix:
            intensity, summary = _sample_summary(row.samples)
            staged.append(
                staged_row(row.line, columns, row.log2_fold_change, row.p_value, intensity, json_text(summary))
            )
        else:
            staged.append(staged_row(row.line, columns, row.log2_fold_change, row.p_value, row.intensity, "{}"))
    spool.extend(staged)
    ledger.add(keys, [row.line for row in block], [row.raw_name for row in block], unparsed)


def _stage_columns(
    block: ColumnBlock,
    named: Callable[[str], _Named],
    plain_genes: bool,
    scan: TableScan,
    spool: FeatureSpool,
    ledger: KeyLedger,
) -> None:
    """Spool a block read by columns, and note its keys. Names ``normalize_gene`` reads as plain symbols are
    normalized and formatted by column (the same text ``_named`` gives them); every other name by ``named``."""
    from ingest.columns import name_block
    from ingest.writer.staging_arrow import number_text, rows_text

    text, keys, unparsed = name_block(block.names, named, plain_genes)
    numbers = [
        None if column is None else number_text(*_number_parts(block, column))
        for column in (scan.fold_change_column, scan.p_value_column, scan.intensity_column)
    ]
    lines = block.lines()
    spool.write(rows_text(lines, text, numbers, "{}"), len(block))
    ledger.add(keys, lines, block.names, unparsed)


def _number_parts(block: ColumnBlock, column: str) -> tuple[object, object, bool]:
    numbers = block.numbers[column]
    return numbers.values, numbers.cells, numbers.cells_are_values


def _merge_groups(
    scan: TableScan, omics_type: str, lines: set[int], rule: str, normalizer: Normalizer
) -> tuple[list[MeasuredRow], list[MergedGroup], dict[str, MeasuredRow]]:
    """Read the rows at ``lines`` again (the duplicate groups) and merge each group by ``rule``.

    Returns the merged rows, the groups for the summary, and each group's first row by key.
    """
    feature_type = FEATURE_TYPE_FOR_OMICS[omics_type]
    again = TableScan(scan.path, omics_type, feature_column=scan.identity_column)
    rows = [
        MeasuredRow(
            line=r.line,
            raw_name=r.raw_name,
            feature=normalizer(r.raw_name, feature_type),
            log2_fold_change=r.log2_fold_change,
            p_value=r.p_value,
            intensity=r.intensity,
            samples=r.samples,
        )
        for r in again.rows()
        if r.line in lines
    ]
    kept, merged = merge_duplicates(rows, rule, path=str(scan.path))
    first_rows: dict[str, MeasuredRow] = {}
    for row in rows:
        first_rows.setdefault(_key(row.feature, feature_type), row)
    return kept, merged, first_rows


def _staged_row(row: MeasuredRow, sample_matrix: bool) -> str:
    item = _to_input(row, sample_matrix)
    return format_row(
        row.line,
        item.feature,
        feature_ids(item.feature, {}),
        item.raw_name,
        item.log2_fold_change,
        item.p_value,
        item.intensity,
        json_text(item.extra),
    )


def _bin_feature(raw: str) -> NormalizedFeature:
    name = f"NMR bin {raw} ppm"
    return NormalizedFeature("metabolite", name, name, None, None, True)


def prepare_mwtab_dataset(
    path: Path, options: DatasetOptions, progress: Progress | None = None, normalizer: Normalizer = normalize
) -> tuple[DatasetInput, ReadReport]:
    """Read a Metabolomics Workbench deposit into a dataset to write. Raises IngestError."""
    # Imported here: the mwtab package loads pandas (most of a second and ~60 MB), which tables never need.
    from ingest.readers.mwtab import read_mwtab

    progress = progress or NoProgress()
    progress.phase(f"reading {path.name}", None)
    study: MwTabStudy = read_mwtab(path, allow_bins=options.allow_bins)
    omics_type = options.omics_type or study.omics_type
    if omics_type not in FEATURE_TYPE_FOR_OMICS:
        raise IngestError(f"unknown omics type {omics_type!r} (expected one of: {', '.join(OMICS_TYPES)})", path=path)
    names = [m.name for m in study.metabolites]
    if study.binned:
        features = [_bin_feature(n) for n in names]
    else:
        features = _normalize_all(names, FEATURE_TYPE_FOR_OMICS[omics_type], progress, normalizer)
    rows = [
        MeasuredRow(line=m.line, raw_name=m.name, feature=f, samples=m.values, identifiers=m.identifiers)
        for m, f in zip(study.metabolites, features, strict=True)
    ]
    rule = "mean" if options.on_duplicate == "error" else options.on_duplicate
    kept, merged = merge_duplicates(rows, rule, path=str(path))
    normalized, unparsed, examples = _parse_counts(kept)
    external_ids = {"mw_study_id": study.study_id, "mw_analysis_id": study.analysis_id}
    if study.project_id:
        external_ids["mw_project_id"] = study.project_id
    notes = [f"{study.data_section}: {len(study.samples)} samples; omics type {omics_type}"]
    if study.non_numeric_cells:
        notes.append(f"{study.non_numeric_cells} non-numeric cells treated as missing")
    excel_dates = ExcelDates()
    for row in rows:
        excel_dates.add(row.raw_name, row.feature)
    if (dates_note := excel_dates.note()) is not None:
        notes.append(dates_note)
    dataset = DatasetInput(
        natural_key=options.key or f"mw:{study.study_id}:{study.analysis_id}",
        name=options.name or study.title,
        omics_type=omics_type,
        features=tuple(_to_input(r, True) for r in kept),
        source_sha256=study.sha256,
        description=options.description or study.description,
        organism=options.organism or study.organism,
        disease=options.disease,
        sample_type=study.sample_type,
        summary=study.summary,
        methods=study.methods,
        data_origin="External – Metabolomics Workbench",
        dataset_source_type="mwTab",
        source_url=f"https://www.metabolomicsworkbench.org/data/DRCCMetadata.php?Mode=Study&StudyID={study.study_id}",
        file_paths=(str(path.resolve()),),
        external_ids=external_ids,
        programs=options.programs,
        experiments=options.experiments,
    )
    report = ReadReport(
        path=str(path),
        kind="mwTab",
        rows_read=len(study.metabolites),
        features=len(kept),
        normalized=normalized,
        unparsed=unparsed,
        unparsed_examples=examples,
        merged=tuple(merged),
        notes=tuple(notes),
        excel_dates=excel_dates.entries(),
    )
    return dataset, report


def prepare_signature(
    path: Path,
    *,
    name: str | None = None,
    description: str | None = None,
    programs: tuple[str, ...] = (),
) -> tuple[SignatureInput, ReadReport]:
    parsed = read_signature(path, name=name)
    components = tuple(
        SignatureComponentInput(
            feature=r.feature, raw_name=r.raw_name, direction=r.direction, weight=r.weight, line=r.line
        )
        for r in parsed.rows
    )
    signature = SignatureInput(
        name=parsed.name,
        components=components,
        modalities=parsed.modalities,
        description=description,
        short_id=path.stem,
        source_sha256=parsed.sha256,
        programs=programs,
    )
    check_components(signature, str(path))
    unparsed = [r for r in parsed.rows if not r.feature.parsed]
    excel_dates = ExcelDates()
    for r in parsed.rows:
        excel_dates.add(r.raw_name, r.feature)
    dates_note = excel_dates.note()
    report = ReadReport(
        path=str(path),
        kind="signature",
        rows_read=len(parsed.rows),
        features=len(components),
        normalized=len(components) - len(unparsed),
        unparsed=len(unparsed),
        unparsed_examples=tuple(r.raw_name for r in unparsed[:UNPARSED_EXAMPLES]),
        notes=(dates_note,) if dates_note is not None else (),
        excel_dates=excel_dates.entries(),
    )
    return signature, report


def _in_transaction(conn: Conn, dry_run: bool, write: Callable[[Conn], WriteResult]) -> WriteResult:
    # force_rollback: a dry run executes every statement (so it reports exact counts) and keeps none of them.
    with conn.transaction(force_rollback=dry_run):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_LOCK_KEY,))
        return write(conn)


def ingest_dataset(
    conn: Conn,
    dataset: DatasetInput,
    *,
    scoring: ScoringOptions,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> WriteResult:
    progress = progress or NoProgress()
    progress.phase("writing", len(dataset.features))
    return _in_transaction(
        conn, dry_run, lambda c: write_dataset(c, dataset, scoring=scoring, progress=progress.advance)
    )


def ingest_signature(
    conn: Conn, signature: SignatureInput, *, scoring: ScoringOptions, dry_run: bool = False
) -> WriteResult:
    return _in_transaction(conn, dry_run, lambda c: write_signature(c, signature, scoring=scoring))


def ingest_program(conn: Conn, program: ProgramInput, *, dry_run: bool = False) -> WriteResult:
    return _in_transaction(conn, dry_run, lambda c: write_program(c, program))


def ingest_experiment(conn: Conn, experiment: ExperimentInput, *, dry_run: bool = False) -> WriteResult:
    return _in_transaction(conn, dry_run, lambda c: write_experiment(c, experiment))


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection: each command opens exactly one explicit transaction."""
    return psycopg.connect(url, autocommit=True, application_name="ingest")
