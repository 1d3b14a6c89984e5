"""Feature-name normalizers: raw names as written in files → one natural key per feature type.

Every reader passes the raw identity of a feature (a lipid species, a metabolite, a protein, a gene) through
:func:`normalize`, which returns a :class:`NormalizedFeature`. ``(feature_type, normalized_name)`` is the natural key
of the ``feature`` table, so two spellings of the same thing must normalize to the same key, and a name that cannot
be understood is kept exactly as written (whitespace-trimmed) with ``parsed=False`` — never guessed at.
All functions here are pure (no database, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass, field

FEATURE_TYPES: tuple[str, ...] = ("gene", "protein", "metabolite", "lipid")

FEATURE_TYPE_FOR_OMICS: dict[str, str] = {
    "lipidomics": "lipid",
    "metabolomics": "metabolite",
    "proteomics": "protein",
    "transcriptomics": "gene",
}


@dataclass(frozen=True)
class NormalizedFeature:
    """One feature name after normalization."""

    feature_type: str  # gene | protein | metabolite | lipid
    normalized_name: str  # the natural key within the type (unique with feature_type)
    display_name: str  # what people read (LIPID MAPS shorthand for lipids, gene symbol, …)
    species_name: str | None  # lipids: species level, e.g. "PC 34:1"; else None
    lipid_class: str | None  # lipids: "PC", "Cer", …; else None
    parsed: bool  # False: could not normalize; names kept as written (stripped only)
    # e.g. {"uniprot": "P04637"}; left out of hash() so the value can live in sets and dict keys
    external_ids: dict[str, str] = field(default_factory=dict, hash=False)


def normalize(raw: str, feature_type: str) -> NormalizedFeature:
    """Normalize ``raw`` as a feature of ``feature_type`` (gene | protein | metabolite | lipid)."""
    raise NotImplementedError


def infer_feature_type(raw: str) -> str:
    """Guess the feature type of a bare name (signature files without a type column)."""
    raise NotImplementedError
