"""Documents: what one entity (program, experiment, dataset, signature) looks like downstream, rendered from the
CURRENT rows in Postgres (never from the change record), so rendering is idempotent and convergent.

``render(conn, keys)`` returns a ``Document`` per key, or ``None`` when the row is gone (delete downstream).
The content hash covers everything a sink writes, so an unchanged document costs no API call.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

ENTITIES = ("program", "experiment", "dataset", "signature")


@dataclass(frozen=True, order=True)
class DocumentKey:
    entity: str  # one of ENTITIES
    id: uuid.UUID

    def __str__(self) -> str:
        return f"{self.entity}:{self.id}"


@dataclass(frozen=True)
class FeatureLine:
    """A dataset's feature with its statistics, or a signature's component."""

    name: str
    feature_type: str
    log2_fold_change: float | None = None
    p_value: float | None = None
    direction: str | None = None  # signature components: up / down / neutral / complex
    weight: float | None = None


@dataclass(frozen=True)
class SignatureMatch:
    """A dataset–signature score, seen from either side (``other`` is the counterpart's key)."""

    other: DocumentKey
    other_name: str
    score: float
    overlap_fraction: float
    matched_components: int
    total_components: int
    match_level: str


@dataclass(frozen=True)
class Document:
    key: DocumentKey
    name: str
    # Scalar and list fields of the entity's row, by column name (omics_type, description, disease, …).
    fields: dict[str, Any] = field(default_factory=dict)
    # Related entities by role, as sorted keys: "programs", "experiments", "datasets", "signatures".
    relations: dict[str, tuple[DocumentKey, ...]] = field(default_factory=dict)
    # Datasets: top features by |log2FC| then p; signatures: every component.
    features: tuple[FeatureLine, ...] = ()
    feature_count: int = 0
    signature_matches: tuple[SignatureMatch, ...] = ()

    def content_hash(self) -> str:
        """sha256 over a canonical JSON of the whole document."""
        payload = orjson.dumps(self, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS, default=_encode)
        return hashlib.sha256(payload).hexdigest()


def _encode(value: object) -> Any:
    if isinstance(value, DocumentKey):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, tuple | list):
        return list(value)
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    raise TypeError(f"cannot hash {type(value).__name__}")
