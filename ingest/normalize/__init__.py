"""Feature-name normalizers: raw names as written in files → one natural key per feature type.

Every reader passes the raw identity of a feature (a lipid species, a metabolite, a protein, a gene) through
:func:`normalize`, which returns a :class:`NormalizedFeature`. ``(feature_type, normalized_name)`` is the natural key
of the ``feature`` table, so two spellings of the same thing must normalize to the same key, and a name that cannot
be understood is kept exactly as written (whitespace-trimmed) with ``parsed=False`` — never guessed at.
All functions here are pure (no database, no I/O).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FEATURE_TYPES: tuple[str, ...] = ("gene", "protein", "metabolite", "lipid")

FEATURE_TYPE_FOR_OMICS: dict[str, str] = {
    "lipidomics": "lipid",
    "metabolomics": "metabolite",
    "proteomics": "protein",
    "transcriptomics": "gene",
}


@dataclass(frozen=True, slots=True)  # slots: half the cost of building one (one per distinct name read)
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
    """Normalize ``raw`` as a feature of ``feature_type`` (gene | protein | metabolite | lipid).

    Never raises on a name: what cannot be read comes back with ``parsed=False``. An unknown feature type is a
    programming error (readers validate the omics type first) and raises ValueError.
    """
    if feature_type == "lipid":
        return normalize_lipid(raw)
    if feature_type == "metabolite":
        return normalize_metabolite(raw)
    if feature_type == "protein":
        return normalize_protein(raw)
    if feature_type == "gene":
        return normalize_gene(raw)
    raise ValueError(f"unknown feature type {feature_type!r}; expected one of {', '.join(FEATURE_TYPES)}")


# Shapes that mark a metabolite name rather than a gene symbol: chemical word endings, locants ("3-", "N-"),
# stereo prefixes, spaces and commas. Gene symbols are short runs of letters and digits.
_METABOLITE_SHAPE = re.compile(
    r"(?:ine|ate|ose|ol|one|ide|acid|amine|in)$|^(?:\d+(?:,\d+)*-|[LDNOS]-|\(\S+\)-|alpha-|beta-|gamma-)|[\s,]",
    re.IGNORECASE,
)
_GENE_LIKE = re.compile(r"^[A-Z0-9][A-Z0-9-]*(?:\.\d+)?$")
# A lipid name writes its chains ("PC 34:1", "hex_cer_24_0"); pygoslin also reads systematic names (Ethanol → FOH 2:0),
# which must not turn a metabolite into a lipid.
_CHAIN_WRITTEN = re.compile(r"\d:\d|_\d{1,2}_\d{1,2}$")
# Gangliosides written by class only (GM3, GD1a, GT1b): lipids, not genes.
_GANGLIOSIDE = re.compile(r"^G[MDTQ][1-4][abc]?$")
# Metabolites whose usual names are upper-case abbreviations, which would otherwise pass for gene symbols.
_METABOLITE_ABBREVIATIONS = frozenset(
    {
        "atp",
        "adp",
        "amp",
        "gtp",
        "gdp",
        "gmp",
        "ctp",
        "utp",
        "udp",
        "camp",
        "cgmp",
        "nad",
        "nadh",
        "nadp",
        "nadph",
        "fad",
        "fadh2",
        "fmn",
        "gaba",
        "gsh",
        "gssg",
        "coa",
        "sam",
        "sah",
        "tmao",
        "dopa",
        "l-dopa",
        "5-ht",
        "acetyl-coa",
        "imp",
        "xmp",
        "prpp",
        "dhap",
        "pep",
        "g6p",
        "f6p",
        "3pg",
        "2pg",
        "bh4",
        "atp-",
    }
)


def infer_feature_type(raw: str) -> str:
    """Guess the feature type of a bare name (signature files without a type column).

    In order: UniProt FASTA headers and accessions → protein; Ensembl ids (ENSP… → protein, other ENS… → gene) and
    RefSeq → gene; metabolite identifiers (HMDB, KEGG, ChEBI, PubChem, InChIKey) → metabolite; a name pygoslin reads
    with a chain written in the name (``PC 34:1``, ``CER 16:0``, ``hex_cer_24_0``; not ``Ethanol``, which pygoslin reads
    as ``FOH 2:0``) or a ganglioside class (``GM3``) → lipid; common metabolite abbreviations (``ATP``, ``GABA``,
    ``NAD+``) → metabolite; an all-upper-case symbol (``TP53``,
    ``TP53_HUMAN``) → gene; a name in the metabolite synonym table or with a chemical shape (``Glutamine``,
    ``3-Hydroxybutyrate``, ``citric acid``) → metabolite; anything else → gene, as in the earlier system.
    """
    name = raw.strip()
    protein = normalize_protein(name)
    if protein.parsed and "uniprot" in protein.external_ids:
        return "protein"
    ensembl = ENSEMBL_ID.match(name)
    if ensembl:
        return "protein" if ensembl[1].upper()[-12] == "P" else "gene"
    if "refseq" in normalize_gene(name).external_ids:
        return "gene"
    metabolite = normalize_metabolite(name)
    if metabolite.external_ids:
        return "metabolite"
    if excel_date_symbol(name)[0]:
        return "gene"  # "1-Sep": what a spreadsheet made of SEPT1, not a locant
    if _GANGLIOSIDE.match(name):
        return "lipid"
    if name.casefold().rstrip("+-") in _METABOLITE_ABBREVIATIONS:
        return "metabolite"
    lipid = normalize_lipid(name)
    if lipid.parsed and _CHAIN_WRITTEN.search(name):
        return "lipid"
    symbol = clean_gene_symbol(name)
    if symbol is not None and _GENE_LIKE.match(name.split("_")[0].split(" ")[0]):
        return "gene"
    if metabolite.parsed and (metabolite.normalized_name in SYNONYMS or _METABOLITE_SHAPE.search(name)):
        return "metabolite"
    return "gene"


# The normalizers import NormalizedFeature from this module, so they are imported after it is defined.
from ingest.normalize.gene import ENSEMBL_ID, clean_gene_symbol, excel_date_symbol, normalize_gene  # noqa: E402
from ingest.normalize.lipid import normalize_lipid  # noqa: E402
from ingest.normalize.metabolite import SYNONYMS, normalize_metabolite  # noqa: E402
from ingest.normalize.protein import normalize_protein  # noqa: E402
