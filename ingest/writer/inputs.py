"""What the writer is asked to store, and what it reports back: typed values between the pipeline and the SQL.

A field left as ``None`` in an input means "not given": a new row gets the column default and an existing row
keeps its value. Everything else is stored exactly, so that an unchanged input changes no row.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from ingest.normalize import NormalizedFeature
from ingest.writer.staging import StagedFeatures


@dataclass(frozen=True)
class DatasetFeatureInput:
    """One feature measured in a dataset (after normalization and duplicate merging)."""

    feature: NormalizedFeature
    raw_name: str
    log2_fold_change: float | None = None
    p_value: float | None = None
    intensity: float | None = None
    # JSON-serialisable; stored in dataset_feature.extra (sample summary, merged rows, identifiers).
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class DatasetInput:
    natural_key: str
    name: str
    omics_type: str
    # In memory, or staged on disk by a streaming reader (ingest.writer.staging).
    features: tuple[DatasetFeatureInput, ...] | StagedFeatures
    source_sha256: str | None = None
    description: str | None = None
    organism: tuple[str, ...] | None = None
    disease: tuple[str, ...] | None = None
    sample_type: tuple[str, ...] | None = None
    matrix: tuple[str, ...] | None = None
    model_systems: tuple[str, ...] | None = None
    summary: str | None = None
    methods: str | None = None
    results: str | None = None
    conclusions: str | None = None
    data_origin: str | None = None
    dataset_source_type: str | None = None
    source_url: str | None = None
    file_paths: tuple[str, ...] | None = None
    external_ids: Mapping[str, str] | None = field(default=None, hash=False)
    # Programs and experiments to link (created by name when missing). Links are only ever added here.
    programs: tuple[str, ...] = ()
    experiments: tuple[str, ...] = ()


@dataclass(frozen=True)
class SignatureComponentInput:
    feature: NormalizedFeature
    raw_name: str
    direction: str  # up | down | neutral | complex
    weight: float
    line: int | None = None


@dataclass(frozen=True)
class SignatureInput:
    name: str
    components: tuple[SignatureComponentInput, ...]
    modalities: tuple[str, ...] | None = None
    description: str | None = None
    short_id: str | None = None
    source_sha256: str | None = None
    programs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProgramInput:
    name: str
    description: str | None = None
    disease: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ExperimentInput:
    name: str
    type: str | None = None
    description: str | None = None
    disease: tuple[str, ...] | None = None
    programs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableChanges:
    """Rows a command inserted, updated and deleted in one table."""

    table: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass(frozen=True)
class MatchOutcome:
    """A dataset × signature pair after scoring, and what happened to its stored row."""

    dataset_id: uuid.UUID
    dataset_name: str
    signature_id: uuid.UUID
    signature_name: str
    score: float | None  # None: not a match (any stored row was deleted)
    overlap_fraction: float | None
    matched_components: int
    total_components: int
    match_level: str | None
    change: str  # inserted | updated | unchanged | deleted


@dataclass(frozen=True)
class WriteResult:
    """What one command did to the database (or would have done, in a dry run)."""

    entity: str  # dataset | signature | program | experiment
    entity_id: uuid.UUID
    name: str
    status: str  # created | updated | unchanged
    changed_columns: tuple[str, ...]
    changes: tuple[TableChanges, ...]
    matches: tuple[MatchOutcome, ...] = ()
    created_links: tuple[str, ...] = ()  # e.g. "program ALS (created)"

    @property
    def rows_changed(self) -> int:
        return sum(c.total for c in self.changes)
