"""Signature scoring: how well a dataset's measured features agree with a signature's expected directions.

The earlier system's rule, with its defects fixed (reference/original-system.md §3). Each signature component gets a
value m: +1 when the dataset moves in the signature's direction, −1 when it moves the other way, 0 when the feature
is missing *or* present without a usable direction on either side. The score is ``(Σ wᵢ·mᵢ / Σ wᵢ + 1) / 2`` over all
components, in [0, 1] (0.5 = no evidence either way). A dataset matches only when at least one component matched and
``matched / total ≥ overlap_threshold``; otherwise :func:`score_signature` returns None and nothing is stored.

Matching is within one feature type, at the most specific level both sides share (#13):

* **exact**: the same normalized name;
* **molecular** (lipids): the same chains once positions are set aside (``PC 16:0/18:1`` ↔ ``PC 16:0_18:1``,
  ``PC 16:0/18:1(9Z)`` ↔ ``PC 16:0_18:1``) — the same molecule told at two levels of detail;
* **species** (lipids): only when at least one side is known *only* at species level (``PC 34:1`` ↔
  ``PC 16:0/18:1``). Two names both known at molecular-species level or better that differ are different molecules
  and never match (``PC 16:0/18:1`` ≠ ``PC 16:1_18:0``; ``Cer 18:1;O2/24:0`` ≠ the dihydroceramide
  ``Cer 18:0;O2/24:1``), however alike their sums.

There is no class-only fallback (the earlier system matched any ceramide to any ceramide, which inflated overlap).
Components are matched level by level (every exact match first, then molecular, then species), and **one dataset
feature satisfies at most one component**: a species-level feature cannot count for two components, of the same or
opposite direction. Labelled internal standards (``is_standard``: the normalizer's heavy label) are never evidence.
Two components with the same feature are refused (ValueError): a signature lists a feature once.

**Missing p-values.** A dataset feature counts with a direction only when its p-value is given and ``p <= max_p_value``:
a missing p-value is *no* evidence, exactly like a non-significant one (before #13 a missing p-value counted as full
evidence while ``p = 0.06`` counted as none, so leaving the column out made a dataset look stronger). A dataset
without a p-value column still matches on overlap; its score is 0.5 (no directional evidence). The earlier system's
0.3 rule (reference/original-system.md §3: "present, no usable direction" scored +0.3) is not kept either, see
:func:`component_value`.

Pure functions over typed inputs; the writer loads components and features from Postgres and stores the result.
"""

from __future__ import annotations

import math
import re
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
    is_standard: bool = False  # a labelled internal standard (heavy label in the key): never evidence


@dataclass(frozen=True)
class ScoreResult:
    score: float
    overlap_fraction: float
    matched_components: int
    total_components: int
    match_level: str  # "exact" | "molecular" | "species" | "mixed"
    # per matched component: component, feature, level, signature_direction, dataset_direction, value, weight
    details: tuple[dict[str, object], ...]


DIRECTIONS = ("up", "down", "neutral", "complex")


def dataset_direction(feature: MeasuredFeature, options: ScoringOptions) -> str | None:
    """ "up" / "down" from the sign of log2FC when the change is usable, else None.

    Usable: a finite log2FC with ``|log2FC| > min_abs_log2fc`` and a finite p-value with ``p <= max_p_value``. A
    missing p-value is treated as a non-significant one (module docstring): never more lenient.
    """
    fold_change = feature.log2_fold_change
    if fold_change is None or not math.isfinite(fold_change) or abs(fold_change) <= options.min_abs_log2fc:
        return None
    p_value = feature.p_value
    if p_value is None or not (math.isfinite(p_value) and p_value <= options.max_p_value):
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
    """Sort key among candidates at one level: a usable direction first, then p, then |log2FC|, then the name."""
    usable = dataset_direction(feature, options) is not None
    p_value = feature.p_value if feature.p_value is not None and math.isfinite(feature.p_value) else math.inf
    fold_change = feature.log2_fold_change
    magnitude = abs(fold_change) if fold_change is not None and math.isfinite(fold_change) else 0.0
    return (0 if usable else 1, p_value, -magnitude, feature.normalized_name)


_POSITIONS = re.compile(r"\([^()]*\)")


def molecular_key(normalized_name: str) -> str | None:
    """A lipid name with chain positions set aside: class, then its chains sorted; None for a single chain.

    ``PC 16:0/18:1``, ``PC 18:1_16:0`` and ``PC 16:0/18:1(9Z)`` → ``PC 16:0_18:1``. Sphingoid bases keep their
    hydroxyl suffix (``18:1;O2``), so a base is never confused with an acyl chain; ``0:0`` placeholders are dropped.
    """
    head, _, chains = normalized_name.partition(" ")
    if not chains:
        return None
    pieces = [piece for piece in re.split(r"[/_]", _POSITIONS.sub("", chains)) if piece != "0:0"]
    if len(pieces) < 2:
        return None
    return f"{head} " + "_".join(sorted(pieces))


def _species_only(normalized_name: str, species_name: str | None) -> bool:
    return species_name is not None and normalized_name == species_name


class _FeatureIndex:
    """Dataset features by exact key and, for lipids, by molecular key and species; labelled standards left out."""

    def __init__(self, features: Sequence[MeasuredFeature]) -> None:
        self.exact: dict[tuple[str, str], list[MeasuredFeature]] = {}
        self.molecular: dict[str, list[MeasuredFeature]] = {}
        self.by_species: dict[str, list[MeasuredFeature]] = {}
        for feature in features:
            if feature.is_standard:
                continue
            self.exact.setdefault((feature.feature_type, feature.normalized_name), []).append(feature)
            if feature.feature_type != "lipid":
                continue
            key = molecular_key(feature.normalized_name)
            if key is not None:
                self.molecular.setdefault(key, []).append(feature)
            if feature.species_name is not None:
                self.by_species.setdefault(feature.species_name, []).append(feature)

    def candidates(self, component: ComponentInput, level: str) -> list[MeasuredFeature]:
        if level == "exact":
            return self.exact.get((component.feature_type, component.normalized_name), [])
        if component.feature_type != "lipid":
            return []
        if level == "molecular":
            key = molecular_key(component.normalized_name)
            found = self.molecular.get(key, []) if key is not None else []
            return [f for f in found if f.normalized_name != component.normalized_name]
        # species: same species, and one side known only at species level
        if component.species_name is None:
            return []
        component_species_only = _species_only(component.normalized_name, component.species_name)
        return [
            feature
            for feature in self.by_species.get(component.species_name, [])
            if component_species_only or _species_only(feature.normalized_name, feature.species_name)
        ]


_LEVELS = ("exact", "molecular", "species")


def _check(components: Sequence[ComponentInput]) -> None:
    seen: set[tuple[str, str]] = set()
    for component in components:
        if component.direction not in DIRECTIONS:
            raise ValueError(f"component {component.display_name!r}: unknown direction {component.direction!r}")
        if not (math.isfinite(component.weight) and component.weight > 0):
            raise ValueError(f"component {component.display_name!r}: weight must be finite and > 0")
        key = (component.feature_type, component.normalized_name)
        if key in seen:
            raise ValueError(
                f"component {component.display_name!r} is listed twice ({component.feature_type} "
                f"{component.normalized_name!r}); a signature lists each feature once"
            )
        seen.add(key)


def score_signature(
    components: Sequence[ComponentInput],
    features: Sequence[MeasuredFeature],
    options: ScoringOptions = ScoringOptions(),
) -> ScoreResult | None:
    """Score a signature against a dataset; None when it is not a match (no overlap, or overlap below threshold).

    Components are matched level by level — every exact match first, then molecular, then species — so the most
    specific candidate is taken first, and a feature taken by one component is not offered to another. Among several
    candidates at one level (``PC 34:1`` against ``PC 16:0/18:1`` and ``PC 18:0/16:1``) the component takes the one
    with the strongest evidence: a usable direction first, then the smallest p-value, then the largest |log2FC|, then
    the name (deterministic). Averaging them would let a weak, noisy species dilute a significant one; counting each
    would let one component weigh more than its weight. Raises ValueError on an invalid or duplicated component.
    """
    if not components:
        return None
    _check(components)
    index = _FeatureIndex(features)
    taken: set[tuple[str, str]] = set()
    chosen: dict[int, tuple[MeasuredFeature, str]] = {}
    for level in _LEVELS:
        for position, component in enumerate(components):
            if position in chosen:
                continue
            free = [f for f in index.candidates(component, level) if (f.feature_type, f.normalized_name) not in taken]
            if not free:
                continue
            feature = min(free, key=lambda candidate: _strength(candidate, options))
            taken.add((feature.feature_type, feature.normalized_name))
            chosen[position] = (feature, level)
    weighted_sum = 0.0
    total_weight = 0.0
    levels: set[str] = set()
    details: list[dict[str, object]] = []
    for position, component in enumerate(components):
        total_weight += component.weight
        if position not in chosen:
            continue  # missing: value 0, weight still counted
        feature, level = chosen[position]
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
