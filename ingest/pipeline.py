"""One ingest command, end to end: read → normalize → merge duplicates → write (and score) in ONE transaction.

The CLI parses options and calls these functions; tests call them directly. Bad input raises IngestError before
anything is written; a failure inside the writer rolls the whole transaction back. ``dry_run`` runs the very same
statements and rolls back, so what it reports is exactly what a real run would change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg

from ingest.duplicates import MeasuredRow, MergedGroup, merge_duplicates
from ingest.errors import IngestError
from ingest.normalize import FEATURE_TYPE_FOR_OMICS, NormalizedFeature, normalize
from ingest.readers.mwtab import MwTabStudy, read_mwtab
from ingest.readers.signature import read_signature
from ingest.readers.table import IDENTITY_CANDIDATES, TableFile, read_table
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

OMICS_TYPES = tuple(IDENTITY_CANDIDATES)
UNPARSED_EXAMPLES = 5
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


def prepare_table_dataset(
    path: Path, options: DatasetOptions, progress: Progress | None = None, normalizer: Normalizer = normalize
) -> tuple[DatasetInput, ReadReport]:
    """Read and normalize a CSV/TSV table into a dataset to write. Raises IngestError."""
    progress = progress or NoProgress()
    omics_type = options.omics_type
    if omics_type not in FEATURE_TYPE_FOR_OMICS:
        raise IngestError(f"unknown omics type {omics_type!r} (expected one of: {', '.join(OMICS_TYPES)})", path=path)
    progress.phase(f"reading {path.name}", None)
    table: TableFile = read_table(path, omics_type, feature_column=options.feature_column)
    feature_type = FEATURE_TYPE_FOR_OMICS[omics_type]
    features = _normalize_all([r.raw_name for r in table.rows], feature_type, progress, normalizer)
    rows = [
        MeasuredRow(
            line=r.line,
            raw_name=r.raw_name,
            feature=feature,
            log2_fold_change=r.log2_fold_change,
            p_value=r.p_value,
            intensity=r.intensity,
            samples=r.samples,
        )
        for r, feature in zip(table.rows, features, strict=True)
    ]
    kept, merged = merge_duplicates(rows, options.on_duplicate, path=str(path))
    normalized, unparsed, examples = _parse_counts(kept)
    notes = []
    if table.ignored_columns:
        notes.append(f"columns ignored (not statistics or samples): {', '.join(table.ignored_columns)}")
    stats = [c for c in (table.fold_change_column, table.p_value_column, table.intensity_column) if c]
    notes.append(
        f"feature column {table.identity_column!r}; "
        + (f"{len(table.sample_columns)} sample columns summarised" if table.is_sample_matrix else "")
        + (f"statistics: {', '.join(stats)}" if stats else "")
    )
    dataset = DatasetInput(
        natural_key=options.key or f"{omics_type}:{path.name}",
        name=options.name or f"Internal {omics_type.capitalize()} — {path.stem}",
        omics_type=omics_type,
        features=tuple(_to_input(r, table.is_sample_matrix) for r in kept),
        source_sha256=table.sha256,
        description=options.description,
        organism=options.organism,
        disease=options.disease,
        data_origin="Internal",
        dataset_source_type="Sample matrix" if table.is_sample_matrix else "Processed table",
        file_paths=(str(path.resolve()),),
        programs=options.programs,
        experiments=options.experiments,
    )
    report = ReadReport(
        path=str(path),
        kind="sample matrix" if table.is_sample_matrix else "table",
        rows_read=len(table.rows),
        features=len(kept),
        normalized=normalized,
        unparsed=unparsed,
        unparsed_examples=examples,
        merged=tuple(merged),
        notes=tuple(notes),
    )
    return dataset, report


def _bin_feature(raw: str) -> NormalizedFeature:
    name = f"NMR bin {raw} ppm"
    return NormalizedFeature("metabolite", name, name, None, None, True)


def prepare_mwtab_dataset(
    path: Path, options: DatasetOptions, progress: Progress | None = None, normalizer: Normalizer = normalize
) -> tuple[DatasetInput, ReadReport]:
    """Read a Metabolomics Workbench deposit into a dataset to write. Raises IngestError."""
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
    report = ReadReport(
        path=str(path),
        kind="signature",
        rows_read=len(parsed.rows),
        features=len(components),
        normalized=len(components) - len(unparsed),
        unparsed=len(unparsed),
        unparsed_examples=tuple(r.raw_name for r in unparsed[:UNPARSED_EXAMPLES]),
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
