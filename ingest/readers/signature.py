"""Signature reader: a TSV/CSV of features with expected directions and weights → a typed SignatureFile.

Pure parsing and validation; the writer stores the result. Bad input raises IngestError naming file, line, column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingest.normalize import NormalizedFeature


@dataclass(frozen=True)
class SignatureRow:
    line: int
    raw_name: str
    feature: NormalizedFeature
    direction: str  # up | down | neutral | complex
    weight: float


@dataclass(frozen=True)
class SignatureFile:
    path: Path
    name: str
    rows: tuple[SignatureRow, ...]
    modalities: tuple[str, ...]  # feature types present, sorted
    sha256: str


def read_signature(path: Path, *, name: str | None = None) -> SignatureFile:
    """Read and validate a signature file. Raises IngestError."""
    raise NotImplementedError
