"""Protein identifiers → one key: the canonical UniProt accession when the name has one, else the gene symbol.

Recognised forms:

* UniProt FASTA headers ``sp|P04637|TP53_HUMAN`` (and ``tr|…``): accession ``P04637``; the gene from the header's
  ``GN=`` field when there is one (``sp|P02768|ALBU_HUMAN Serum albumin OS=Homo sapiens OX=9606 GN=ALB`` → ``ALB``,
  not the mnemonic ``ALBU``), else from the entry name (TrEMBL entry names that are just the accession give no
  gene).
* Bare accessions by UniProt's official pattern, isoforms included: ``Q9Y6K9-2`` → ``Q9Y6K9``, the isoform kept in
  ``external_ids["uniprot_isoform"]``. Protein groups (``P04637;Q9Y6K9``, MaxQuant) are keyed by their leading
  accession; the whole group is kept in ``external_ids["uniprot_group"]``.
* ``TP53 (P04637)``, the display form written below, reads back to the same key.
* Gene-symbol-only names (``actb``, ``TP53_HUMAN``, ``TP53 (Human)``) → upper-case symbol, as for genes. A string
  of ten or more letters and digits shaped like an accession (``A0B1C2D3E4F``) that fails UniProt's pattern is
  neither an accession nor a gene: kept as written, ``parsed=False``.

**Key choice.** ``normalized_name`` is the accession when there is one, because an accession names one protein
sequence while a symbol may name several products and changes with HGNC renames; a symbol-only name is keyed by the
symbol. So ``sp|P04637|TP53_HUMAN`` and ``TP53`` are two features (``P04637`` with ``gene=TP53``, and ``TP53``): we
do not map symbols to accessions without a mapping table. ``display_name`` is what people read: ``TP53 (P04637)``
when the gene is known, else the accession or the symbol.
"""

from __future__ import annotations

import re

from ingest.normalize import NormalizedFeature
from ingest.normalize.gene import clean_gene_symbol

# UniProt's accession pattern (https://www.uniprot.org/help/accession_numbers).
UNIPROT_ACCESSION = r"(?:[OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9](?:[A-Z][A-Z0-9]{2}[0-9]){1,2})"
_ACCESSION = re.compile(rf"^(?P<acc>{UNIPROT_ACCESSION})(?:-(?P<isoform>\d+))?$")
_FASTA_HEADER = re.compile(
    rf"^(?:sp|tr)\|(?P<acc>{UNIPROT_ACCESSION})(?:-(?P<isoform>\d+))?\|(?P<entry>[A-Za-z0-9]+)_(?P<species>[A-Za-z0-9]+)"
    r"(?:\s.*)?$",
    re.IGNORECASE,
)
# FASTA header fields (https://www.uniprot.org/help/fasta-headers): "... OS=Homo sapiens OX=9606 GN=ALB PE=1 SV=2".
_GENE_NAME_FIELD = re.compile(r"\sGN=(?P<gene>[^\s=]+)(?=\s|$)")
# Upper-case letter-digit strings of accession length that fail UniProt's pattern: not accessions, and not genes.
_ACCESSION_SHAPED = re.compile(r"^[A-Z][0-9][A-Z0-9]{4,}$")
_SYMBOL_WITH_ACCESSION = re.compile(
    rf"^(?P<symbol>\S+)\s*\(\s*(?P<acc>{UNIPROT_ACCESSION})(?:-(?P<isoform>\d+))?\s*\)$"
)


def _with_accession(accession: str, isoform: str | None, gene: str | None, extra: dict[str, str]) -> NormalizedFeature:
    ids = {"uniprot": accession, **extra}
    if isoform is not None:
        ids["uniprot_isoform"] = f"{accession}-{isoform}"
    if gene is not None:
        ids["gene"] = gene
    display = f"{gene} ({accession})" if gene is not None else accession
    return NormalizedFeature("protein", accession, display, None, None, True, ids)


def normalize_protein(raw: str) -> NormalizedFeature:
    """Normalize a protein identifier; see the module docstring for the rules."""
    stripped = raw.strip()
    header = _FASTA_HEADER.match(stripped)
    if header:
        accession = header["acc"].upper()
        entry = header["entry"].upper()
        named = _GENE_NAME_FIELD.search(stripped)
        # UniProt's own gene field wins over the entry mnemonic (ALBU_HUMAN is ALB).
        mnemonic = None if entry == accession else clean_gene_symbol(entry)
        gene = clean_gene_symbol(named["gene"]) if named else mnemonic
        return _with_accession(accession, header["isoform"], gene, {})
    accession_match = _ACCESSION.match(stripped)
    if accession_match:
        return _with_accession(accession_match["acc"], accession_match["isoform"], None, {})
    members = [member.strip() for member in stripped.split(";")]
    if len(members) > 1 and all(_ACCESSION.match(member) for member in members):
        leading = _ACCESSION.match(members[0])
        assert leading is not None
        return _with_accession(leading["acc"], leading["isoform"], None, {"uniprot_group": ";".join(members)})
    labelled = _SYMBOL_WITH_ACCESSION.match(stripped)
    if labelled:
        return _with_accession(labelled["acc"], labelled["isoform"], clean_gene_symbol(labelled["symbol"]), {})
    symbol = clean_gene_symbol(stripped)
    if symbol is None or (len(stripped) >= 10 and _ACCESSION_SHAPED.match(stripped)):
        return NormalizedFeature("protein", stripped, stripped, None, None, False, {})
    return NormalizedFeature("protein", symbol, symbol, None, None, True, {"gene": symbol})
