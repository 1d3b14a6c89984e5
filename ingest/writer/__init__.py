"""The writer: typed inputs into Postgres in the caller's single transaction, touching only rows that change.

``write_dataset`` and ``write_signature`` also score (dataset against every signature, signature against every
dataset) before returning, so a command's data and its matches commit together or not at all.
"""

from ingest.writer.dataset import write_dataset
from ingest.writer.entities import write_experiment, write_program
from ingest.writer.inputs import (
    DatasetFeatureInput,
    DatasetInput,
    ExperimentInput,
    MatchOutcome,
    ProgramInput,
    SignatureComponentInput,
    SignatureInput,
    TableChanges,
    WriteResult,
)
from ingest.writer.signature import check_components, write_signature

__all__ = [
    "DatasetFeatureInput",
    "DatasetInput",
    "ExperimentInput",
    "MatchOutcome",
    "ProgramInput",
    "SignatureComponentInput",
    "SignatureInput",
    "TableChanges",
    "WriteResult",
    "check_components",
    "write_dataset",
    "write_experiment",
    "write_program",
    "write_signature",
]
