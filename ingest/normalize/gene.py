"""Gene identifiers → one key: upper-case HGNC-style symbols, or Ensembl / RefSeq ids without their version.

Symbols are upper-cased (``tp53`` → ``TP53``; mouse ``Trp53`` becomes ``TRP53``, which is how the earlier system and
the team's files compare genes across species) after removing what is not the symbol: UniProt species suffixes
(``TP53_HUMAN``), species in parentheses (``TP53 (Human)``) and ``.1``-style artefacts that spreadsheets and R add
to repeated names (``TP53.1``). Clone-based names whose version is part of the name (``AC012345.1``, ``RP11-34P13.3``)
keep it.

Ensembl ids (``ENSG00000141510.17``, ``ENST…``, ``ENSMUSG…``) and RefSeq transcripts (``NM_000546.6``) are
upper-cased and keyed without the version; the version is kept apart in ``external_ids`` (``ensembl_version``,
``refseq_version``) because a new Ensembl release bumps it without changing the gene.

**Excel dates** (``1-Sep``, ``Mar-3``, ``1-Dec``) are what a spreadsheet made of SEPT1, MARCH3, DEC1: mapped to
today's HGNC symbol (``SEPTIN1``, ``MARCHF3``, ``DELEC1``) where only one gene can have made the date, else refused
(``1-Mar`` is MARCH1 or MARC1); either way the date is kept in ``external_ids["excel_date"]`` so the ingest can
report it.

Anything else (spaces, punctuation, probe ids with lower-case parts such as ``1007_s_at``) is kept exactly as
written, whitespace-trimmed, with ``parsed=False``.
"""

from __future__ import annotations

import re

from ingest.normalize import NormalizedFeature

ENSEMBL_ID = re.compile(r"^(ENS[A-Z]{0,6}[GTPE]\d{11})(?:\.(\d+))?$", re.IGNORECASE)
_REFSEQ_ID = re.compile(r"^([NX][MR]_\d{6,9})(?:\.(\d+))?$", re.IGNORECASE)
# UniProt entry-name species codes seen on gene and protein names.
_SPECIES_CODES = (
    "HUMAN|MOUSE|RAT|BOVIN|PIG|SHEEP|HORSE|CANLF|MACMU|CHICK|XENLA|XENTR|DANRE|DROME|CAEEL|YEAST|SCHPO|ARATH|ECOLI"
)
_SPECIES_SUFFIX = re.compile(rf"_(?:{_SPECIES_CODES})$", re.IGNORECASE)
_SPECIES_IN_PARENTHESES = re.compile(
    r"\s*[\(\[]\s*(?:human|homo sapiens|mouse|mus musculus|rat|rattus norvegicus|hs|mm|rn)\s*[\)\]]$",
    re.IGNORECASE,
)
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(?:@)?$")
_REPEAT_SUFFIX = re.compile(r"^(?P<symbol>.+?)\.\d{1,2}$")
# Names whose ".N" is part of the name: GenBank-accession-style clone names and RP11-… style clone names.
_CLONE_NAME = re.compile(r"^(?:[A-Z]{1,2}\d{5,6}|[A-Z]{2,4}\d*-\d+[A-Z]\d+)\.\d+$", re.IGNORECASE)


# Excel turns MARCH1, SEPT1 and DEC1 into dates ("1-Mar", "1-Sep", "1-Dec"; Ziemann et al. 2016,
# https://doi.org/10.1186/s13059-016-1044-7). HGNC renamed them in 2020 (MARCHF*, SEPTIN*, DELEC1; Bruford et al.
# 2020, https://doi.org/10.1038/s41588-020-0669-3). A date is mapped to today's symbol only where one gene can have
# made it: "1-Mar" and "2-Mar" are also MARC1/MARC2 (now MTARC1/MTARC2), so those, and every other date, are refused.
_EXCEL_DATE = re.compile(
    r"^(?:(?P<day>\d{1,2})-(?P<month>[A-Za-z]{3})|(?P<month2>[A-Za-z]{3})-(?P<day2>\d{1,2}))(?:-\d{2,4})?$"
)
_MONTHS = frozenset({"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"})
_DATE_SYMBOLS: dict[str, tuple[str, range]] = {
    "mar": ("MARCHF", range(3, 12)),  # MARCHF3..11 (1 and 2 are ambiguous with MTARC1/2)
    "sep": ("SEPTIN", range(1, 15)),
    "dec": ("DELEC", range(1, 2)),
}


def excel_date_symbol(raw: str) -> tuple[bool, str | None]:
    """(is an Excel-mangled date, today's symbol if exactly one gene can have made it)."""
    match = _EXCEL_DATE.match(raw.strip())
    if not match:
        return False, None
    month = (match["month"] or match["month2"]).casefold()
    if month not in _MONTHS:
        return False, None
    day = int(match["day"] or match["day2"])
    prefix, days = _DATE_SYMBOLS.get(month, ("", range(0)))
    return True, (f"{prefix}{day}" if day in days else None)


def clean_gene_symbol(raw: str) -> str | None:
    """The upper-case symbol in ``raw``, or None when ``raw`` does not look like a gene symbol."""
    name = " ".join(raw.split())
    name = _SPECIES_IN_PARENTHESES.sub("", name)
    name = _SPECIES_SUFFIX.sub("", name)
    if _CLONE_NAME.match(name):
        return name.upper()
    repeat = _REPEAT_SUFFIX.match(name)
    if repeat:
        name = repeat["symbol"]
    if not _SYMBOL.match(name) or not any(ch.isalpha() for ch in name):
        return None
    return name.upper()


# The common case: ASCII letters and digits only, with a letter, not starting ENS. None of the rules below
# changes such a name but the upper-casing (Ensembl ids start ENS; RefSeq ids, species suffixes, dates, clone and
# repeat suffixes all need a "_", "-", "." or space), so it skips them.
# The pattern is also RE2's (pyarrow's regex engine), so ingest.columns finds the same names a block at a time.
PLAIN_SYMBOL_PATTERN = r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*"
_PLAIN_SYMBOL = re.compile(PLAIN_SYMBOL_PATTERN)


def normalize_gene(raw: str) -> NormalizedFeature:
    """Normalize a gene symbol or transcript/gene id; see the module docstring for the rules."""
    if _PLAIN_SYMBOL.fullmatch(raw) and raw[:3].upper() != "ENS":
        upper = raw.upper()
        return NormalizedFeature("gene", upper, upper, None, None, True, {})
    stripped = raw.strip()
    ensembl = ENSEMBL_ID.match(stripped)
    if ensembl:
        identifier = ensembl[1].upper()
        ids = {"ensembl": identifier}
        if ensembl[2] is not None:
            ids["ensembl_version"] = ensembl[2]
        return NormalizedFeature("gene", identifier, identifier, None, None, True, ids)
    refseq = _REFSEQ_ID.match(stripped)
    if refseq:
        identifier = refseq[1].upper()
        ids = {"refseq": identifier}
        if refseq[2] is not None:
            ids["refseq_version"] = refseq[2]
        return NormalizedFeature("gene", identifier, identifier, None, None, True, ids)
    is_date, renamed = excel_date_symbol(stripped)
    if is_date:
        if renamed is None:
            return NormalizedFeature("gene", stripped, stripped, None, None, False, {"excel_date": stripped})
        return NormalizedFeature("gene", renamed, renamed, None, None, True, {"excel_date": stripped})
    symbol = clean_gene_symbol(stripped)
    if symbol is None:
        return NormalizedFeature("gene", stripped, stripped, None, None, False, {})
    return NormalizedFeature("gene", symbol, symbol, None, None, True, {})
