"""Signature scoring: how well a dataset's measured features agree with a signature's expected directions.

The earlier system's rule, with its defects fixed (reference/original-system.md §3). Each signature component gets a
value m: +1 when the dataset moves in the signature's direction, −1 when it moves the other way, 0 when the feature
is missing *or* present without a usable direction on either side. The score is ``(Σ wᵢ·mᵢ / Σ wᵢ + 1) / 2`` over all
components, in [0, 1] (0.5 = no evidence either way). A dataset matches only when at least one component matched and
``matched / total ≥ overlap_threshold``; otherwise :func:`score_signature` returns None and nothing is stored.

Matching is within one feature type: the exact normalized name first; for lipids with no exact match, the species
level (``PC 34:1`` ↔ ``PC 16:0/18:1``), the most specific level both sides share. There is no class-only fallback
(the earlier system matched any ceramide to any ceramide, which inflated overlap).

Pure functions over typed inputs; the writer loads components and features from Postgres and stores the result.
"""

from __future__ import annotations

import math
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


DIRECTIONS = ("up", "down", "neutral", "complex")


def dataset_direction(feature: MeasuredFeature, options: ScoringOptions) -> str | None:
    """ "up" / "down" from the sign of log2FC when the change is usable, else None.

    Usable: a finite log2FC with ``|log2FC| > min_abs_log2fc``, and, where the dataset gives a p-value, ``p <=
    max_p_value`` (a non-finite p-value is not evidence). Without a p-value column the sign alone counts.
    """
    fold_change = feature.log2_fold_change
    if fold_change is None or not math.isfinite(fold_change) or abs(fold_change) <= options.min_abs_log2fc:
        return None
    if feature.p_value is not None and not (math.isfinite(feature.p_value) and feature.p_value <= options.max_p_value):
        return None
    return "up" if fold_change > 0 else "down"


def component_value(signature_direction: str, measured_direction: str | None) -> float:
    """+1 same direction, −1 opposite, 0 when either side has no up/down direction.

    The earlier system gave 0.3 to "present, no usable direction". Since its datasets carried no directions at all,
    every matched component scored 0.3, so a dataset scored 0.65 against any signature it merely shared names with,
    and a score said nothing about agreement. Presence is already measured by the overlap; the score measures only
    directional agreement, so no direction means no evidence: 0.
    """
    if measured_direction is None or signature_direction not in {"up", "down"}:
        return 0.0
    return 1.0 if signature_direction == measured_direction else -1.0


def _strength(feature: MeasuredFeature, options: ScoringOptions) -> tuple[int, float, float, str]:
    """Sort key: the best candidate first among several dataset features matching one component at species level."""
    usable = dataset_direction(feature, options) is not None
    p_value = feature.p_value if feature.p_value is not None and math.isfinite(feature.p_value) else math.inf
    fold_change = feature.log2_fold_change
    magnitude = abs(fold_change) if fold_change is not None and math.isfinite(fold_change) else 0.0
    return (0 if usable else 1, p_value, -magnitude, feature.normalized_name)


class _FeatureIndex:
    """Dataset features looked up by exact key and, for lipids, by species-level name."""

    def __init__(self, features: Sequence[MeasuredFeature]) -> None:
        self.exact: dict[tuple[str, str], list[MeasuredFeature]] = {}
        self.by_species: dict[str, list[MeasuredFeature]] = {}
        self.by_name: dict[str, list[MeasuredFeature]] = {}
        for feature in features:
            self.exact.setdefault((feature.feature_type, feature.normalized_name), []).append(feature)
            if feature.feature_type == "lipid":
                self.by_name.setdefault(feature.normalized_name, []).append(feature)
                if feature.species_name is not None:
                    self.by_species.setdefault(feature.species_name, []).append(feature)

    def species_candidates(self, component: ComponentInput) -> list[MeasuredFeature]:
        """Dataset lipids sharing the component's species: same species name, or one side *is* the other's species."""
        found: dict[int, MeasuredFeature] = {}
        keys = {component.normalized_name}
        if component.species_name is not None:
            keys.add(component.species_name)
        for key in keys:
            for feature in self.by_species.get(key, ()):  # dataset species == component species / component name
                found[id(feature)] = feature
        if component.species_name is not None:
            for feature in self.by_name.get(component.species_name, ()):  # dataset name is the component's species
                found[id(feature)] = feature
        return list(found.values())


def score_signature(
    components: Sequence[ComponentInput],
    features: Sequence[MeasuredFeature],
    options: ScoringOptions = ScoringOptions(),
) -> ScoreResult | None:
    """Score a signature against a dataset; None when it is not a match (no overlap, or overlap below threshold).

    When several dataset features match one component at species level (``PC 34:1`` against ``PC 16:0/18:1`` and
    ``PC 18:0/16:1``), the component takes the one with the strongest evidence: a usable direction first, then the
    smallest p-value, then the largest |log2FC|, then the name (for a deterministic result). Averaging them would let
    a weak, noisy species dilute a significant one; counting each would let one component weigh more than its weight.
    """
    if not components:
        return None
    for component in components:
        if component.direction not in DIRECTIONS:
            raise ValueError(f"component {component.display_name!r}: unknown direction {component.direction!r}")
        if not (math.isfinite(component.weight) and component.weight > 0):
            raise ValueError(f"component {component.display_name!r}: weight must be finite and > 0")
    index = _FeatureIndex(features)
    weighted_sum = 0.0
    total_weight = 0.0
    levels: set[str] = set()
    details: list[dict[str, object]] = []
    for component in components:
        total_weight += component.weight
        level = "exact"
        candidates = index.exact.get((component.feature_type, component.normalized_name), [])
        if not candidates and component.feature_type == "lipid":
            level = "species"
            candidates = index.species_candidates(component)
        if not candidates:
            continue  # missing: value 0, weight still counted
        feature = min(candidates, key=lambda candidate: _strength(candidate, options))
        direction = dataset_direction(feature, options)
        value = component_value(component.direction, direction)
        weighted_sum += component.weight * value
        levels.add(level)
        details.append(
            {
                "component": component.display_name,
                "feature": feature.normalized_name,
                "level": level,
                "signature_direction": component.direction,
                "dataset_direction": direction,
                "value": value,
                "weight": component.weight,
            }
        )
    matched = len(details)
    total = len(components)
    overlap = matched / total
    if matched == 0 or overlap < options.overlap_threshold:
        return None
    match_level = levels.pop() if len(levels) == 1 else "mixed"
    return ScoreResult(
        score=(weighted_sum / total_weight + 1.0) / 2.0,
        overlap_fraction=overlap,
        matched_components=matched,
        total_components=total,
        match_level=match_level,
        details=tuple(details),
    )
