"""Metabolite names → one case-insensitive key, a human display name, and the identifiers found in the name.

Inorganic ions are one spelling each, charge kept (``Ca2+``, ``Ca++``, ``ca 2+`` → ``Ca2+``; ``Cl-`` → ``Cl-``; the
key is the casefolded spelling ``ca2+``): an ion's charge is its identity, not an adduct.

Cleaning removes what describes the measurement, not the compound: adducts (``[M+H]+``, ``[M-H]-``), polarity tags
(``(pos)``, ``(neg)``) and trailing charges (``NAD+`` → ``NAD``, ``Lactate 1-``; a bare trailing ``-`` is kept, it is an
inverted prefix as in ``inositol myo-``); ``_`` becomes a space and whitespace is collapsed.
Identifiers written in the name (HMDB, KEGG compound — also as KEGG REST writes it, ``cpd:C00025`` —, ChEBI, PubChem
CID, InChIKey) move to ``external_ids``; a name
that is only an identifier is keyed by that identifier.

Synonyms: a small table maps the spellings the team meets to one display name — amino acids with and without the
``L-`` prefix and all twenty three-letter codes (``L-Glutamine``, ``glutamine``, ``Gln`` → ``Glutamine``) and the
acid/anion pairs of central metabolism (``L-Glutamic acid``, ``glutamic acid`` → ``Glutamate``; ``lactic acid`` →
``Lactate``). ``D-`` forms are different compounds (D-serine is not serine) and are never folded into the L form.

Case: ``normalized_name`` is the casefolded display name (with Greek letters spelled out, ``α`` → ``alpha``), so
``glutamine``, ``Glutamine`` and ``L-Glutamine`` are one feature. ``display_name`` keeps the case as written (or the
synonym's spelling): chemical names are never title-cased (the earlier system wrote ``…Carboxylic Acid``).

``parsed`` is False only for names with no letters at all (numbers, NMR bins such as ``0.4...0.46``) or nothing left
after cleaning; those are kept exactly as written (whitespace-trimmed).
"""

from __future__ import annotations

import re
import unicodedata

from ingest.normalize import NormalizedFeature

_ADDUCT_TAIL = re.compile(
    r"""\s*(?:
        \[\s*\d*M\s*(?:[+-]\s*\d*[A-Za-z][A-Za-z0-9]*)*\s*\]\s*\d*[+-]*   # [M+H]+, [2M-H]-, [M+NH4]1+
      | \(\s*(?:pos|neg|positive|negative|[+-])\s*\)                       # (pos), (neg)
      | \s+(?:pos|neg|positive|negative)                                   # trailing word
      | (?<=[^\s+-])\+                                                     # NAD+ (not "-": "inositol myo-")
      | \s+\d?[+-]                                                          # "glucose -", "x 2+"
    )\s*$""",
    re.VERBOSE | re.IGNORECASE,
)

# Each pattern takes an optional registry label in front ("KEGG: C00031", "InChIKey=…") so it leaves with the id.
_IDENTIFIERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("inchikey", re.compile(r"(?:\bInChI\s*Key\s*[:=]?\s*)?\b([A-Z]{14}-[A-Z]{10}-[A-Z])\b", re.IGNORECASE)),
    ("hmdb", re.compile(r"(?:\bHMDB\s*(?:ID)?\s*[:=]\s*)?\bHMDB(\d{5,7})\b", re.IGNORECASE)),
    ("chebi", re.compile(r"\bCHEBI\s*(?:ID)?\s*[:_= ]?\s*(\d+)\b", re.IGNORECASE)),
    ("pubchem", re.compile(r"\b(?:PubChem(?:\s*CID)?|CID)\s*[:_= ]?\s*(\d+)\b", re.IGNORECASE)),
    ("kegg", re.compile(r"(?:\bKEGG\s*(?:ID)?\s*[:=]?\s*)?(?:\bcpd:)?\b(C\d{5})\b")),  # KEGG REST: cpd:C00025
)
# What is left around an identifier once it is cut out: brackets, separators.
_LEFTOVER = re.compile(r"\(\s*[,;|/]?\s*\)|\[\s*[,;|/]?\s*\]")
_EDGE_PUNCTUATION = " \t,;|/:"

# Inorganic ions keep their charge (Fe2+ and Fe3+ are different species); written "Ca2+", "Ca++", "Cl-", "NH4+".
_ION = re.compile(r"^(?P<symbol>[A-Za-z][A-Za-z0-9]{0,4}?)\s?(?P<count>[1-4])?(?P<signs>\+{1,4}|-{1,4})$")
_ION_SYMBOLS = {
    symbol.casefold(): symbol
    for symbol in (
        "H",
        "Li",
        "Na",
        "K",
        "Rb",
        "Cs",
        "Mg",
        "Ca",
        "Sr",
        "Ba",
        "Mn",
        "Fe",
        "Co",
        "Ni",
        "Cu",
        "Zn",
        "Cd",
        "Hg",
        "Pb",
        "Al",
        "F",
        "Cl",
        "Br",
        "I",
        "NH4",
        "OH",
        "HCO3",
        "CO3",
        "NO3",
        "NO2",
        "SO4",
        "HSO4",
        "PO4",
        "HPO4",
        "H2PO4",
    )
}

_GREEK = {"α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ω": "omega", "ε": "epsilon"}

_AMINO_ACIDS = (
    "Alanine",
    "Arginine",
    "Asparagine",
    "Cysteine",
    "Glutamine",
    "Glycine",
    "Histidine",
    "Isoleucine",
    "Leucine",
    "Lysine",
    "Methionine",
    "Phenylalanine",
    "Proline",
    "Serine",
    "Threonine",
    "Tryptophan",
    "Tyrosine",
    "Valine",
    "Citrulline",
    "Ornithine",
    "Carnitine",
    "Homocysteine",
    "Cystine",
)
# (display name, other spellings). Keys are compared casefolded.
_SYNONYM_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Glutamate", ("glutamic acid", "l-glutamic acid", "l-glutamate", "glu")),
    ("Aspartate", ("aspartic acid", "l-aspartic acid", "l-aspartate", "asp")),
    ("Lactate", ("lactic acid", "l-lactic acid", "l-lactate")),
    ("Pyruvate", ("pyruvic acid",)),
    ("Citrate", ("citric acid",)),
    ("Isocitrate", ("isocitric acid",)),
    ("Succinate", ("succinic acid",)),
    ("Fumarate", ("fumaric acid",)),
    ("Malate", ("malic acid", "l-malic acid", "l-malate")),
    ("2-Oxoglutarate", ("alpha-ketoglutarate", "alpha-ketoglutaric acid", "2-oxoglutaric acid", "2-ketoglutarate")),
    (
        "3-Hydroxybutyrate",
        ("3-hydroxybutyric acid", "3-hydroxy butyrate", "beta-hydroxybutyrate", "3-hydroxybutanoate", "bhb"),
    ),
    ("Glucose", ("d-glucose",)),
    ("Urate", ("uric acid",)),
    ("Kynurenine", ("l-kynurenine",)),
    ("Alanine", ("ala",)),
    ("Asparagine", ("asn",)),
    ("Cysteine", ("cys",)),
    ("Isoleucine", ("ile",)),
    ("Arginine", ("arg",)),
    ("Glutamine", ("gln",)),
    ("Glycine", ("gly",)),
    ("Histidine", ("his",)),
    ("Leucine", ("leu",)),
    ("Lysine", ("lys",)),
    ("Methionine", ("met",)),
    ("Phenylalanine", ("phe",)),
    ("Proline", ("pro",)),
    ("Serine", ("ser",)),
    ("Threonine", ("thr",)),
    ("Tryptophan", ("trp",)),
    ("Tyrosine", ("tyr",)),
    ("Valine", ("val",)),
)


def _build_synonyms() -> dict[str, str]:
    table: dict[str, str] = {}
    for amino_acid in _AMINO_ACIDS:
        table[amino_acid.casefold()] = amino_acid
        table[f"l-{amino_acid.casefold()}"] = amino_acid
    for display, spellings in _SYNONYM_GROUPS:
        table[display.casefold()] = display
        for spelling in spellings:
            table[spelling] = display
    return table


SYNONYMS: dict[str, str] = _build_synonyms()


def metabolite_key(display: str) -> str:
    """The case-insensitive natural key of a cleaned display name."""
    key = display.casefold()
    for letter, word in _GREEK.items():
        key = key.replace(letter, word)
    return key


def find_identifiers(name: str) -> tuple[str, dict[str, str]]:
    """Cut HMDB / KEGG / ChEBI / PubChem / InChIKey identifiers out of ``name``: (rest of the name, ids)."""
    ids: dict[str, str] = {}
    rest = name
    for kind, pattern in _IDENTIFIERS:
        match = pattern.search(rest)
        if not match:
            continue
        if kind == "hmdb":
            ids[kind] = f"HMDB{int(match[1]):07d}"  # HMDB00123 (old 5-digit form) → HMDB0000123
        elif kind == "chebi":
            ids[kind] = f"CHEBI:{match[1]}"
        elif kind == "inchikey":
            ids[kind] = match[1].upper()
        else:
            ids[kind] = match[1]
        rest = rest[: match.start()] + " " + rest[match.end() :]
    if ids:
        rest = _LEFTOVER.sub(" ", rest)
        rest = " ".join(rest.split()).strip(_EDGE_PUNCTUATION)
    return rest, ids


def _identifier_name(kind: str, value: str) -> str:
    return f"CID:{value}" if kind == "pubchem" else value


def clean_metabolite_name(raw: str) -> str:
    """Strip adducts, polarity tags and charges; ``_`` → space; collapse whitespace."""
    name = unicodedata.normalize("NFKC", raw).replace("_", " ")
    name = " ".join(name.split())
    previous = None
    while previous != name:
        previous = name
        name = _ADDUCT_TAIL.sub("", name).strip()
    return name


def _ion(name: str) -> str | None:
    """The canonical spelling of an inorganic ion ("Ca2+", "Ca++", "ca 2+" → "Ca2+"; "Cl-" → "Cl-"), else None."""
    match = _ION.match(name)
    if not match:
        return None
    symbol = _ION_SYMBOLS.get(match["symbol"].casefold())
    written_count = match["count"]
    if symbol is None and written_count:  # "NH4+": the digit belongs to the formula, not the charge
        symbol, written_count = _ION_SYMBOLS.get((match["symbol"] + written_count).casefold()), None
    if symbol is None:
        return None
    signs = match["signs"]
    count = int(written_count) if written_count else len(signs)
    if len(signs) > 1 and written_count:
        return None  # "Ca2++": not a charge anyone writes
    return f"{symbol}{count if count > 1 else ''}{signs[0]}"


def normalize_metabolite(raw: str) -> NormalizedFeature:
    """Normalize a metabolite name; see the module docstring for the rules."""
    stripped = raw.strip()
    ion = _ion(" ".join(unicodedata.normalize("NFKC", stripped).split()))
    if ion is not None:
        return NormalizedFeature("metabolite", ion.casefold(), ion, None, None, True, {})
    name, ids = find_identifiers(clean_metabolite_name(stripped))
    name = clean_metabolite_name(name)
    if not name:
        identifier = next((_identifier_name(kind, ids[kind]) for kind, _ in _IDENTIFIERS if kind in ids), None)
        if identifier is None:
            return NormalizedFeature("metabolite", stripped, stripped, None, None, False, {})
        # Only an identifier: it is the key, written as the registries write it (and read back the same way).
        return NormalizedFeature("metabolite", identifier, identifier, None, None, True, ids)
    if not any(ch.isalpha() for ch in name):
        return NormalizedFeature("metabolite", stripped, stripped, None, None, False, ids)
    display = SYNONYMS.get(metabolite_key(name), name)
    return NormalizedFeature("metabolite", metabolite_key(display), display, None, None, True, ids)
