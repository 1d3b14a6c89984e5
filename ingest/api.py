"""The public Python API of ``ingest``: what a team's own pipeline calls instead of writing to Postgres, Notion and
Pinecone itself. One call writes one dataset, signature, program or experiment to Postgres, in one transaction;
the replicator carries it to Notion and Pinecone (no dual writes in the pipeline).

Every function takes ``db``: a Postgres URL (the call opens a connection and commits its own transaction), or an
open psycopg connection. With a connection, the call runs in the caller's transaction when one is open (a
savepoint inside it: nothing is committed until the caller commits, and a failed call rolls back only its own
work), or in its own transaction on an idle connection (committed when the call returns, autocommit or not).

Bad input raises ``IngestError`` (what and where: file, line, column, or the feature's index in the values given)
before anything is written. ``dry_run=True`` runs the same statements and rolls them back, so the result says
exactly what a real call would change. Results are ``IngestResult`` values: the entity and its Postgres id, whether
it was created, updated or unchanged, the rows changed per table, and the signature matches scored.

    from ingest.api import Feature, ingest_dataset
    result = ingest_dataset(
        [Feature("PC 16:0/18:1", log2_fold_change=1.2, p_value=0.01)],
        key="lab:als-csf-2026", name="ALS CSF lipids", omics_type="lipidomics", db="postgresql://…",
    )
    result.entity_id, result.status   # UUID('…'), 'created'

See docs/pipelines.md for the whole surface, with examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg

from ingest.duplicates import MeasuredRow, merge_duplicates
from ingest.errors import IngestError
from ingest.normalize import FEATURE_TYPE_FOR_OMICS, FEATURE_TYPES, infer_feature_type, normalize
from ingest.pipeline import (
    OMICS_TYPES,
    DatasetOptions,
    ReadReport,
    _parse_counts,
    _to_input,
    connect,
    prepare_mwtab_dataset,
    prepare_signature,
    prepare_table_dataset,
)
from ingest.pipeline import ingest_dataset as _write_dataset
from ingest.pipeline import ingest_experiment as _write_experiment
from ingest.pipeline import ingest_program as _write_program
from ingest.pipeline import ingest_signature as _write_signature
from ingest.scoring import ScoringOptions
from ingest.writer import (
    DatasetInput,
    ExperimentInput,
    ProgramInput,
    SignatureComponentInput,
    SignatureInput,
    WriteResult,
    check_components,
)

__all__ = [
    "Component",
    "Feature",
    "IngestError",
    "IngestResult",
    "ScoringOptions",
    "ingest_dataset",
    "ingest_dataset_file",
    "ingest_experiment",
    "ingest_mwtab_file",
    "ingest_program",
    "ingest_signature",
    "ingest_signature_file",
]

Db = str | psycopg.Connection[Any]
Direction = Literal["up", "down", "neutral", "complex"]
OmicsType = Literal["lipidomics", "metabolomics", "proteomics", "transcriptomics"]
DuplicateRule = Literal["error", "first", "last", "mean", "max-abs-fc", "min-p"]
T = TypeVar("T")


@dataclass(frozen=True)
class Feature:
    """One measured feature of a dataset, as the pipeline has it: a name as the instrument or tool printed it
    (normalized as the CLI normalizes a table's names) and its statistics."""

    name: str
    log2_fold_change: float | None = None
    p_value: float | None = None
    intensity: float | None = None
    # External identifiers (HMDB, KEGG, InChIKey, UniProt, …), kept with the feature in dataset_feature.extra.
    identifiers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Component:
    """One component of a signature: a feature name, its direction and its weight."""

    name: str
    direction: Direction
    weight: float = 1.0
    # The feature type when the name alone is ambiguous (lipid, metabolite, protein, gene); inferred otherwise.
    feature_type: str | None = None


@dataclass(frozen=True)
class IngestResult(WriteResult):
    """What one call did to Postgres (or would have done, with ``dry_run``): the writer's ``WriteResult`` (entity,
    Postgres id, created / updated / unchanged, rows changed per table, signature matches), plus what was read."""

    dry_run: bool = False
    # What was read: rows, features kept, names that could not be normalized (None for values without a file).
    report: ReadReport | None = None

    @classmethod
    def of(cls, result: WriteResult, report: ReadReport | None, dry_run: bool) -> IngestResult:
        fields = {name: getattr(result, name) for name in WriteResult.__dataclass_fields__}
        return cls(**fields, dry_run=dry_run, report=report)


# ---- the connection: the caller's transaction, or one of our own ------------------------------------------------


@contextmanager
def _connection(db: Db) -> Iterator[psycopg.Connection[Any]]:
    """A connection to write with. A URL: our own (autocommit, so the writer's one transaction is the only one),
    closed afterwards. A connection: the caller's, left open; the writer's ``conn.transaction()`` is a savepoint
    inside the caller's open transaction, or a transaction of its own on an idle connection."""
    if isinstance(db, psycopg.Connection):
        if db.closed:
            raise ValueError("the connection passed as db is closed")
        yield db
        return
    if not isinstance(db, str) or not db:
        raise ValueError("db must be a Postgres URL or an open psycopg connection")
    with connect(db) as conn:
        yield conn


def _write(db: Db, work: Callable[[psycopg.Connection[Any]], T]) -> T:
    with _connection(db) as conn:
        return work(conn)


def _scoring(scoring: ScoringOptions | None) -> ScoringOptions:
    return scoring if scoring is not None else ScoringOptions()


def _omics(omics_type: str) -> str:
    if omics_type not in FEATURE_TYPE_FOR_OMICS:
        raise IngestError(f"unknown omics type {omics_type!r} (expected one of: {', '.join(OMICS_TYPES)})")
    return omics_type


def _number(value: float | None, what: str, index: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IngestError(f"features[{index}]: {what} must be a finite number or None, not {value!r}")
    return float(value)


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise IngestError(f"{what} must be a non-empty string")
    if "\x00" in value:
        raise IngestError(f"{what} contains a NUL byte")
    return value.strip()


# ---- datasets -----------------------------------------------------------------------------------------------------


def ingest_dataset(
    features: Iterable[Feature],
    *,
    key: str,
    name: str,
    omics_type: OmicsType | str,
    db: Db,
    description: str | None = None,
    organism: Sequence[str] | None = None,
    disease: Sequence[str] | None = None,
    programs: Sequence[str] = (),
    experiments: Sequence[str] = (),
    source_url: str | None = None,
    on_duplicate: DuplicateRule = "error",
    scoring: ScoringOptions | None = None,
    dry_run: bool = False,
) -> IngestResult:
    """Create or update the dataset ``key`` from values: its features replace the stored ones (an unchanged call
        changes no row), programs and experiments are linked (created by name when missing), and the dataset is
        scored against every signature. Names are normalized as the CLI does; two features that normalize to one
        molecule are merged by ``on_duplicate`` (by default, different spellings of one molecule keep the first and
    the same name given twice is refused)."""
    omics = _omics(omics_type)
    feature_type = FEATURE_TYPE_FOR_OMICS[omics]
    rows: list[MeasuredRow] = []
    for index, item in enumerate(features):
        if not isinstance(item, Feature):
            raise IngestError(f"features[{index}]: expected ingest.api.Feature, not {type(item).__name__}")
        raw = _text(item.name, f"features[{index}].name")
        p_value = _number(item.p_value, "p_value", index)
        if p_value is not None and not 0.0 <= p_value <= 1.0:
            raise IngestError(f"features[{index}] ({raw!r}): p_value {p_value} is outside [0, 1]")
        rows.append(
            MeasuredRow(
                line=None,
                raw_name=raw,
                feature=normalize(raw, feature_type),
                log2_fold_change=_number(item.log2_fold_change, "log2_fold_change", index),
                p_value=p_value,
                intensity=_number(item.intensity, "intensity", index),
                identifiers=dict(item.identifiers),
            )
        )
    if not rows:
        raise IngestError(f"dataset {key!r}: no features given")
    try:
        kept, merged = merge_duplicates(rows, on_duplicate, path=None)
    except IngestError as error:  # the CLI's wording names its option; here it is the keyword argument
        raise IngestError(error.message.replace("--on-duplicate", "on_duplicate=")) from None
    normalized, unparsed, examples = _parse_counts(kept)
    dataset = DatasetInput(
        natural_key=_text(key, "key"),
        name=_text(name, "name"),
        omics_type=omics,
        features=tuple(_to_input(row, False) for row in kept),
        description=description,
        organism=tuple(organism) if organism is not None else None,
        disease=tuple(disease) if disease is not None else None,
        source_url=source_url,
        dataset_source_type="pipeline",
        programs=tuple(programs),
        experiments=tuple(experiments),
    )
    report = ReadReport(
        path="<values>",
        kind="values",
        rows_read=len(rows),
        features=len(kept),
        normalized=normalized,
        unparsed=unparsed,
        unparsed_examples=examples,
        merged=tuple(merged),
    )
    chosen = _scoring(scoring)
    result = _write(db, lambda conn: _write_dataset(conn, dataset, scoring=chosen, dry_run=dry_run))
    return IngestResult.of(result, report, dry_run)


def _dataset_options(
    omics_type: str | None,
    *,
    name: str | None,
    key: str | None,
    description: str | None,
    organism: Sequence[str] | None,
    disease: Sequence[str] | None,
    programs: Sequence[str],
    experiments: Sequence[str],
    on_duplicate: str,
    scoring: ScoringOptions | None,
    feature_column: str | None = None,
    allow_bins: bool = False,
) -> DatasetOptions:
    return DatasetOptions(
        omics_type=omics_type,
        name=name,
        key=key,
        description=description,
        organism=tuple(organism) if organism is not None else None,
        disease=tuple(disease) if disease is not None else None,
        programs=tuple(programs),
        experiments=tuple(experiments),
        feature_column=feature_column,
        on_duplicate=on_duplicate,
        allow_bins=allow_bins,
        scoring=_scoring(scoring),
    )


def ingest_dataset_file(
    path: str | Path,
    *,
    omics_type: OmicsType | str,
    db: Db,
    name: str | None = None,
    key: str | None = None,
    description: str | None = None,
    organism: Sequence[str] | None = None,
    disease: Sequence[str] | None = None,
    programs: Sequence[str] = (),
    experiments: Sequence[str] = (),
    feature_column: str | None = None,
    on_duplicate: DuplicateRule = "error",
    scoring: ScoringOptions | None = None,
    dry_run: bool = False,
) -> IngestResult:
    """``ingest dataset PATH --omics-type …`` as a call: a CSV/TSV table (one row per feature, or a sample
    matrix), read and checked in full before anything is written."""
    options = _dataset_options(
        _omics(omics_type),
        name=name,
        key=key,
        description=description,
        organism=organism,
        disease=disease,
        programs=programs,
        experiments=experiments,
        on_duplicate=on_duplicate,
        scoring=scoring,
        feature_column=feature_column,
    )
    dataset, report = prepare_table_dataset(Path(path), options)
    result = _write(db, lambda conn: _write_dataset(conn, dataset, scoring=options.scoring, dry_run=dry_run))
    return IngestResult.of(result, report, dry_run)


def ingest_mwtab_file(
    path: str | Path,
    *,
    db: Db,
    omics_type: OmicsType | str | None = None,
    name: str | None = None,
    disease: Sequence[str] | None = None,
    programs: Sequence[str] = (),
    experiments: Sequence[str] = (),
    on_duplicate: DuplicateRule = "mean",
    allow_bins: bool = False,
    scoring: ScoringOptions | None = None,
    dry_run: bool = False,
) -> IngestResult:
    """``ingest mwtab PATH`` as a call: a Metabolomics Workbench deposit (text or JSON)."""
    options = _dataset_options(
        _omics(omics_type) if omics_type is not None else None,
        name=name,
        key=None,
        description=None,
        organism=None,
        disease=disease,
        programs=programs,
        experiments=experiments,
        on_duplicate=on_duplicate,
        scoring=scoring,
        allow_bins=allow_bins,
    )
    dataset, report = prepare_mwtab_dataset(Path(path), options)
    result = _write(db, lambda conn: _write_dataset(conn, dataset, scoring=options.scoring, dry_run=dry_run))
    return IngestResult.of(result, report, dry_run)


# ---- signatures ---------------------------------------------------------------------------------------------------


def ingest_signature(
    components: Iterable[Component],
    *,
    name: str,
    db: Db,
    description: str | None = None,
    short_id: str | None = None,
    programs: Sequence[str] = (),
    scoring: ScoringOptions | None = None,
    dry_run: bool = False,
) -> IngestResult:
    """Create or update the signature ``name`` from values and score it against every dataset. A feature listed
    twice (after normalization) is refused, as in a file."""
    parts: list[SignatureComponentInput] = []
    for index, item in enumerate(components):
        if not isinstance(item, Component):
            raise IngestError(f"components[{index}]: expected ingest.api.Component, not {type(item).__name__}")
        raw = _text(item.name, f"components[{index}].name")
        if item.direction not in ("up", "down", "neutral", "complex"):
            raise IngestError(
                f"components[{index}] ({raw!r}): direction {item.direction!r} (expected up, down, neutral, complex)"
            )
        weight = _number(item.weight, "weight", index)
        if weight is None or weight <= 0:
            raise IngestError(f"components[{index}] ({raw!r}): weight must be a positive number")
        if item.feature_type is not None and item.feature_type not in FEATURE_TYPES:
            raise IngestError(
                f"components[{index}] ({raw!r}): feature_type {item.feature_type!r} "
                f"(expected one of: {', '.join(FEATURE_TYPES)})"
            )
        feature = normalize(raw, item.feature_type or infer_feature_type(raw))
        parts.append(SignatureComponentInput(feature=feature, raw_name=raw, direction=item.direction, weight=weight))
    if not parts:
        raise IngestError(f"signature {name!r}: no components given")
    signature = SignatureInput(
        name=_text(name, "name"),
        components=tuple(parts),
        modalities=tuple(sorted({p.feature.feature_type for p in parts})),
        description=description,
        short_id=short_id,
        programs=tuple(programs),
    )
    check_components(signature)
    chosen = _scoring(scoring)
    result = _write(db, lambda conn: _write_signature(conn, signature, scoring=chosen, dry_run=dry_run))
    return IngestResult.of(result, None, dry_run)


def ingest_signature_file(
    path: str | Path,
    *,
    db: Db,
    name: str | None = None,
    description: str | None = None,
    programs: Sequence[str] = (),
    scoring: ScoringOptions | None = None,
    dry_run: bool = False,
) -> IngestResult:
    """``ingest signature PATH`` as a call: a TSV/CSV of feature, direction and weight."""
    signature, report = prepare_signature(Path(path), name=name, description=description, programs=tuple(programs))
    chosen = _scoring(scoring)
    result = _write(db, lambda conn: _write_signature(conn, signature, scoring=chosen, dry_run=dry_run))
    return IngestResult.of(result, report, dry_run)


# ---- programs and experiments -------------------------------------------------------------------------------------


def ingest_program(
    name: str,
    *,
    db: Db,
    description: str | None = None,
    disease: Sequence[str] | None = None,
    dry_run: bool = False,
) -> IngestResult:
    """Create or update the program ``name`` (its key). A field left as None keeps its stored value."""
    program = ProgramInput(
        name=_text(name, "name"), description=description, disease=tuple(disease) if disease is not None else None
    )
    result = _write(db, lambda conn: _write_program(conn, program, dry_run=dry_run))
    return IngestResult.of(result, None, dry_run)


ExperimentType = Literal["in_vivo", "in_vitro", "patient"]


def ingest_experiment(
    name: str,
    *,
    db: Db,
    type: ExperimentType | None = None,
    description: str | None = None,
    disease: Sequence[str] | None = None,
    programs: Sequence[str] = (),
    dry_run: bool = False,
) -> IngestResult:
    """Create or update the experiment ``name`` (its key), linked to ``programs`` (created by name when missing)."""
    if type is not None and type not in ("in_vivo", "in_vitro", "patient"):
        raise IngestError(f"experiment {name!r}: type {type!r} (expected in_vivo, in_vitro or patient)")
    experiment = ExperimentInput(
        name=_text(name, "name"),
        type=type,
        description=description,
        disease=tuple(disease) if disease is not None else None,
        programs=tuple(programs),
    )
    result = _write(db, lambda conn: _write_experiment(conn, experiment, dry_run=dry_run))
    return IngestResult.of(result, None, dry_run)
