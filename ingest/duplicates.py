"""Rows that name the same feature: refuse them, or merge each group by a named rule.

A dataset holds a feature once, so rows that normalize to the same (feature type, normalized name) must become
one. What counts as a mistake and what as a merge:

* the same name written twice in a user's table is refused by default (``error``): that is a copy-paste or join
  error the user should see. ``--on-duplicate`` names a merge rule instead;
* different spellings of one feature (``tp53`` and ``TP53_HUMAN``) are what normalization is for: they are merged
  with the chosen rule, ``first`` by default, and every merged group is reported;
* mwTab deposits repeat metabolite names now and then; they are merged with ``mean`` by default.

Rules: ``first`` / ``last`` keep that row; ``mean`` averages log2FC, intensity and each sample value (missing
values ignored) and keeps the largest p-value (the conservative one); ``max-abs-fc`` keeps the row with the largest
|log2FC|; ``min-p`` keeps the row with the smallest p-value. Ties go to the earlier row. Identifiers are unioned,
the first row's value winning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ingest.errors import IngestError
from ingest.normalize import NormalizedFeature

RULES = ("error", "first", "last", "mean", "max-abs-fc", "min-p")
MERGE_RULES = RULES[1:]


@dataclass(frozen=True)
class MeasuredRow:
    """A row as read, with its normalized feature."""

    line: int | None
    raw_name: str
    feature: NormalizedFeature
    log2_fold_change: float | None = None
    p_value: float | None = None
    intensity: float | None = None
    samples: tuple[float | None, ...] = ()
    identifiers: Mapping[str, str] = field(default_factory=dict, hash=False)
    merged_from: tuple[tuple[str, int | None], ...] = ()  # (raw name, line) of every row merged into this one

    @property
    def key(self) -> tuple[str, str]:
        return (self.feature.feature_type, self.feature.normalized_name)


@dataclass(frozen=True)
class MergedGroup:
    """Rows merged into one feature, for the summary."""

    feature: str
    raw_names: tuple[str, ...]
    lines: tuple[int | None, ...]
    rule: str


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


def _merge(group: Sequence[MeasuredRow], rule: str) -> MeasuredRow:
    identifiers: dict[str, str] = {}
    for row in group:
        for key, value in row.identifiers.items():
            identifiers.setdefault(key, value)
    provenance = tuple((r.raw_name, r.line) for r in group)
    if rule == "mean":
        width = max(len(r.samples) for r in group)
        samples = tuple(_mean([r.samples[i] if i < len(r.samples) else None for r in group]) for i in range(width))
        p_values = [r.p_value for r in group if r.p_value is not None]
        kept = replace(
            group[0],
            log2_fold_change=_mean([r.log2_fold_change for r in group]),
            p_value=max(p_values) if p_values else None,
            intensity=_mean([r.intensity for r in group]),
            samples=samples,
        )
    elif rule == "first":
        kept = group[0]
    elif rule == "last":
        kept = group[-1]
    elif rule == "max-abs-fc":
        kept = max(group, key=lambda r: -1.0 if r.log2_fold_change is None else abs(r.log2_fold_change))
    elif rule == "min-p":
        kept = min(group, key=lambda r: math.inf if r.p_value is None else r.p_value)
    else:  # pragma: no cover - guarded by merge_duplicates
        raise ValueError(rule)
    return replace(kept, identifiers=identifiers, merged_from=provenance)


def merge_duplicates(
    rows: Sequence[MeasuredRow],
    rule: str,
    *,
    path: str | None = None,
    variant_rule: str = "first",
) -> tuple[list[MeasuredRow], list[MergedGroup]]:
    """One row per feature, in first-seen order, and the groups that were merged.

    ``rule`` applies to every group; with ``error``, a repeated raw name is an IngestError at its second line,
    and groups of different spellings are merged with ``variant_rule``.
    """
    if rule not in RULES:
        raise IngestError(f"unknown --on-duplicate rule {rule!r} (expected one of: {', '.join(RULES)})", path=path)
    groups: dict[tuple[str, str], list[MeasuredRow]] = {}
    for row in rows:
        groups.setdefault(row.key, []).append(row)
    merged: list[MeasuredRow] = []
    reports: list[MergedGroup] = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        applied = rule
        if rule == "error":
            seen: dict[str, int | None] = {}
            for row in group:
                if row.raw_name in seen:
                    first = seen[row.raw_name]
                    where = f" (first at line {first})" if first is not None else ""
                    raise IngestError(
                        f"duplicate feature row {row.raw_name!r}{where}; choose a merge rule with "
                        f"--on-duplicate ({', '.join(MERGE_RULES)})",
                        path=path,
                        line=row.line,
                    )
                seen[row.raw_name] = row.line
            applied = variant_rule
        merged.append(_merge(group, applied))
        reports.append(
            MergedGroup(
                feature=group[0].feature.display_name,
                raw_names=tuple(r.raw_name for r in group),
                lines=tuple(r.line for r in group),
                rule=applied,
            )
        )
    return merged, reports
