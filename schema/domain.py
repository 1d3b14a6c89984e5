"""Domain tables: programs, experiments, datasets, features, signatures and the links between them.

Written only by ``ingest``, in one transaction per command; read by the replicator, which renders documents from
them. Fixes over the earlier system (reference/original-system.md §1, §6): natural keys are unique constraints,
``dataset_feature`` keeps the statistics a file carries, ``dataset_signature`` keeps score *and* overlap, every
timestamp is ``timestamptz`` with ``updated_at`` maintained by a trigger, and no Notion id lives here (downstream
ids belong to the replicator's own state).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from schema.base import Base

OMICS_TYPES = ("lipidomics", "metabolomics", "proteomics", "transcriptomics")
FEATURE_TYPES = ("gene", "protein", "metabolite", "lipid")
DIRECTIONS = ("up", "down", "neutral", "complex")
MATCH_LEVELS = ("exact", "molecular", "species", "mixed")
EXPERIMENT_TYPES = ("in_vivo", "in_vitro", "patient")
# The entities whose Notion pages people write on (the replicator's documents).
ENTITY_KINDS = ("program", "experiment", "dataset", "signature")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("uuid_v7()"))  # migration 0009


def _text_array() -> Mapped[list[str]]:
    return mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"))


def _json_object() -> Mapped[dict[str, Any]]:
    return mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


class Timestamped:
    """``created_at`` set on insert; ``updated_at`` kept by the ``set_updated_at`` trigger (see the migration)."""

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Program(Timestamped, Base):
    __tablename__ = "program"

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    disease: Mapped[list[str]] = _text_array()
    external_ids: Mapped[dict[str, Any]] = _json_object()


class Experiment(Timestamped, Base):
    __tablename__ = "experiment"
    __table_args__ = (CheckConstraint(_in("type", EXPERIMENT_TYPES), name="type"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    type: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    disease: Mapped[list[str]] = _text_array()
    matrix: Mapped[list[str]] = _text_array()
    model_systems: Mapped[list[str]] = _text_array()
    targets: Mapped[list[str]] = _text_array()
    modality: Mapped[list[str]] = _text_array()
    biomarker_role: Mapped[list[str]] = _text_array()
    phenotype_axes: Mapped[list[str]] = _text_array()
    treatment_arms: Mapped[list[str]] = _text_array()
    stage: Mapped[str | None] = mapped_column(Text)


class Dataset(Timestamped, Base):
    """One omics dataset. ``natural_key`` makes re-ingesting the same source update it in place:
    ``mw:<study>:<analysis>`` for a Metabolomics Workbench deposit, the user's ``--key`` or one derived from the
    file name otherwise."""

    __tablename__ = "dataset"
    __table_args__ = (CheckConstraint(_in("omics_type", OMICS_TYPES), name="omics_type"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    natural_key: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    omics_type: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    description: Mapped[str | None] = mapped_column(Text)
    organism: Mapped[list[str]] = _text_array()
    sample_type: Mapped[list[str]] = _text_array()
    disease: Mapped[list[str]] = _text_array()
    matrix: Mapped[list[str]] = _text_array()
    model_systems: Mapped[list[str]] = _text_array()
    methods: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    results: Mapped[str | None] = mapped_column(Text)
    conclusions: Mapped[str | None] = mapped_column(Text)
    data_origin: Mapped[str | None] = mapped_column(Text)
    dataset_source_type: Mapped[str | None] = mapped_column(Text)
    source_url: Mapped[str | None] = mapped_column(Text)
    file_paths: Mapped[list[str]] = _text_array()
    external_ids: Mapped[dict[str, Any]] = _json_object()
    # sha256 of the ingested file: lets ingest report "unchanged" without touching any row.
    source_sha256: Mapped[str | None] = mapped_column(Text)


class Feature(Timestamped, Base):
    """A gene, protein, metabolite or lipid, unique by (feature type, normalized name)."""

    __tablename__ = "feature"
    __table_args__ = (
        UniqueConstraint("feature_type", "normalized_name"),
        CheckConstraint(_in("feature_type", FEATURE_TYPES), name="feature_type"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    feature_type: Mapped[str] = mapped_column(Text, nullable=False)
    normalized_name: Mapped[str] = mapped_column(Text, nullable=False)
    # Display name; for lipids the LIPID MAPS shorthand at the most specific level parsed.
    name: Mapped[str] = mapped_column(Text, nullable=False)
    # Lipids: species-level name (``PC 34:1``) and class (``PC``), for matching across levels.
    species_name: Mapped[str | None] = mapped_column(Text, index=True)
    lipid_class: Mapped[str | None] = mapped_column(Text)
    # False when the normalizer could not parse the name and kept it as written.
    parsed: Mapped[bool] = mapped_column(nullable=False, server_default=text("true"))
    aliases: Mapped[list[str]] = _text_array()
    external_ids: Mapped[dict[str, Any]] = _json_object()


class DatasetFeature(Timestamped, Base):
    """A feature measured in a dataset, with what the file says about it."""

    __tablename__ = "dataset_feature"

    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    feature_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("feature.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    raw_name: Mapped[str] = mapped_column(Text, nullable=False)
    log2_fold_change: Mapped[float | None] = mapped_column(Double)
    p_value: Mapped[float | None] = mapped_column(Double)
    # A per-feature intensity summary (the value in a table, or the mean across samples in a matrix).
    intensity: Mapped[float | None] = mapped_column(Double)
    # Anything else worth keeping per feature (sample count, min/max, merged duplicate rows, identifiers).
    extra: Mapped[dict[str, Any]] = _json_object()


class Signature(Timestamped, Base):
    __tablename__ = "signature"

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    short_id: Mapped[str | None] = mapped_column(Text, index=True)
    description: Mapped[str | None] = mapped_column(Text)
    modalities: Mapped[list[str]] = _text_array()
    biomarker_role: Mapped[list[str]] = _text_array()
    phenotype_axes: Mapped[list[str]] = _text_array()
    data_ownership: Mapped[str | None] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(Text)


class SignatureComponent(Timestamped, Base):
    __tablename__ = "signature_component"
    __table_args__ = (
        CheckConstraint(_in("direction", DIRECTIONS), name="direction"),
        CheckConstraint("weight > 0", name="weight_positive"),
    )

    signature_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("signature.id", ondelete="CASCADE"), primary_key=True)
    feature_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("feature.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    raw_name: Mapped[str] = mapped_column(Text, nullable=False)
    direction: Mapped[str] = mapped_column(Text, nullable=False)
    weight: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("1.0"))


class DatasetSignature(Timestamped, Base):
    """A dataset scored against a signature. Only matches (overlap ≥ threshold, never zero) are stored."""

    __tablename__ = "dataset_signature"
    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 1", name="score_range"),
        CheckConstraint("overlap_fraction > 0 AND overlap_fraction <= 1", name="overlap_range"),
        CheckConstraint("matched_components > 0 AND matched_components <= total_components", name="matched_le_total"),
        CheckConstraint(_in("match_level", MATCH_LEVELS), name="match_level"),
    )

    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    signature_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("signature.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    score: Mapped[float] = mapped_column(Double, nullable=False)
    overlap_fraction: Mapped[float] = mapped_column(Double, nullable=False)
    matched_components: Mapped[int] = mapped_column(Integer, nullable=False)
    total_components: Mapped[int] = mapped_column(Integer, nullable=False)
    # exact: every matched component matched by name; molecular: by lipid chains, positions set aside; species: at
    # lipid species level (one side known only at species level); mixed: more than one of these.
    match_level: Mapped[str] = mapped_column(Text, nullable=False)
    # Per matched component: feature name, level, signature and dataset directions, contribution.
    details: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))


def _fk(target: str, *, index: bool = False) -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey(f"{target}.id", ondelete="CASCADE"), primary_key=True, index=index)


class _Link:
    """A plain many-to-many link: a composite key of two cascading foreign keys and a creation time."""

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class ProgramExperiment(_Link, Base):
    __tablename__ = "program_experiment"
    program_id: Mapped[uuid.UUID] = _fk("program")
    experiment_id: Mapped[uuid.UUID] = _fk("experiment", index=True)


class ProgramDataset(_Link, Base):
    __tablename__ = "program_dataset"
    program_id: Mapped[uuid.UUID] = _fk("program")
    dataset_id: Mapped[uuid.UUID] = _fk("dataset", index=True)


class ExperimentDataset(_Link, Base):
    __tablename__ = "experiment_dataset"
    experiment_id: Mapped[uuid.UUID] = _fk("experiment")
    dataset_id: Mapped[uuid.UUID] = _fk("dataset", index=True)


class ProgramSignature(_Link, Base):
    __tablename__ = "program_signature"
    program_id: Mapped[uuid.UUID] = _fk("program")
    signature_id: Mapped[uuid.UUID] = _fk("signature", index=True)


class Narrative(Timestamped, Base):
    """What people wrote on an entity's Notion page, outside the replicator's managed section (#14): one row per
    page, written by the replicator's narrative capture (the one writer of this table) and carried to retrieval
    by the same stream as every other domain table. ``text`` is Markdown-like; ``content_hash`` (sha256 of the
    text) lets capture skip a page whose people's blocks did not change."""

    __tablename__ = "narrative"
    __table_args__ = (CheckConstraint(_in("entity", ENTITY_KINDS), name="entity"),)

    entity: Mapped[str] = mapped_column(Text, primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    notion_page_id: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    notion_url: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    # The newest people's block: when it was edited and by whom (a Notion user id), as the API reports them.
    last_edited_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_edited_by: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)


# Tables whose updated_at the database maintains (the migration installs one trigger per table).
TIMESTAMPED_TABLES = (
    "program",
    "experiment",
    "dataset",
    "feature",
    "dataset_feature",
    "signature",
    "signature_component",
    "dataset_signature",
    "narrative",
)
