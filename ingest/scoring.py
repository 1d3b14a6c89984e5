"""Signature scoring: how well a dataset's measured features agree with a signature's expected directions.

Pure functions over typed inputs; the writer loads components and features from Postgres and stores the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoringOptions:
    overlap_threshold: float = 0.3  # a match needs overlap >= this (and > 0 always)
    max_p_value: float = 0.05  # dataset direction counts only when p <= this, where p-values exist
    min_abs_log2fc: float = 0.0  # and |log2FC| > this


@dataclass(frozen=True)
class ComponentInput:
    """One signature component."""

    feature_type: str
    normalized_name: str
    species_name: str | None
    display_name: str
    direction: str  # up | down | neutral | complex
    weight: float


@dataclass(frozen=True)
class MeasuredFeature:
    """One dataset feature with its statistics."""

    feature_type: str
    normalized_name: str
    species_name: str | None
    log2_fold_change: float | None
    p_value: float | None


@dataclass(frozen=True)
class ScoreResult:
    score: float
    overlap_fraction: float
    matched_components: int
    total_components: int
    match_level: str  # "exact" | "species" | "mixed"
    # per matched component: component, feature, level, signature_direction, dataset_direction, value, weight
    details: tuple[dict[str, object], ...]


def score_signature(
    components: Sequence[ComponentInput],
    features: Sequence[MeasuredFeature],
    options: ScoringOptions = ScoringOptions(),
) -> ScoreResult | None:
    """Score a signature against a dataset; None when it is not a match."""
    raise NotImplementedError
