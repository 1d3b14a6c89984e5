"""The database schema of omics-cdc: domain tables (written by ingest) and the replicator's own state.

Both are SQLAlchemy 2.0 typed models on one ``MetaData`` with a naming convention, so constraint names are
stable across Alembic migrations. This package imports nothing else of ours.
"""

from schema.base import Base, metadata
from schema.domain import (
    FEATURE_TYPES,
    OMICS_TYPES,
    Dataset,
    DatasetFeature,
    DatasetSignature,
    Experiment,
    ExperimentDataset,
    Feature,
    Program,
    ProgramDataset,
    ProgramExperiment,
    ProgramSignature,
    Signature,
    SignatureComponent,
)
from schema.replicator_state import (
    REPLICATOR_SCHEMA,
    DeadLetter,
    Heartbeat,
    Outbox,
    SinkState,
    SinkStatus,
    SourceCheckpoint,
)

__all__ = [
    "FEATURE_TYPES",
    "OMICS_TYPES",
    "REPLICATOR_SCHEMA",
    "Base",
    "Dataset",
    "DatasetFeature",
    "DatasetSignature",
    "DeadLetter",
    "Experiment",
    "ExperimentDataset",
    "Feature",
    "Heartbeat",
    "Outbox",
    "Program",
    "ProgramDataset",
    "ProgramExperiment",
    "ProgramSignature",
    "Signature",
    "SignatureComponent",
    "SinkState",
    "SinkStatus",
    "SourceCheckpoint",
    "metadata",
]
