"""Gene identifiers → one key: upper-case HGNC-style symbols, or Ensembl / RefSeq ids without their version.

Symbols are upper-cased (``tp53`` → ``TP53``; mouse ``Trp53`` becomes ``TRP53``, which is how the earlier system and
the team's files compare genes across species) after removing what is not the symbol: UniProt species suffixes
(``TP53_HUMAN``), species in parentheses (``TP53 (Human)``) and ``.1``-style artefacts that spreadsheets and R add
to repeated names (``TP53.1``). Clone-based names whose version is part of the name (``AC012345.1``, ``RP11-34P13.3``)
keep it.

Ensembl ids (``ENSG00000141510.17``, ``ENST…``, ``ENSMUSG…``) and RefSeq transcripts (``NM_000546.6``) are
upper-cased and keyed without the version; the version is kept apart in ``external_ids`` (``ensembl_version``,
``refseq_version``) because a new Ensembl release bumps it without changing the gene.

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


def normalize_gene(raw: str) -> NormalizedFeature:
    """Normalize a gene symbol or transcript/gene id; see the module docstring for the rules."""
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
    symbol = clean_gene_symbol(stripped)
    if symbol is None:
        return NormalizedFeature("gene", stripped, stripped, None, None, False, {})
    return NormalizedFeature("gene", symbol, symbol, None, None, True, {})
