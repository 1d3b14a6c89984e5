"""Metabolites, proteins, genes and type inference: the cases of #13, written from the registries' own formats.

Formats: KEGG REST identifiers ``cpd:C00025`` (https://www.kegg.jp/kegg/rest/keggapi.html); UniProt FASTA headers
``>db|UniqueIdentifier|EntryName ProteinName OS=… OX=… GN=GeneName PE=… SV=…``
(https://www.uniprot.org/help/fasta-headers) and accession numbers (https://www.uniprot.org/help/accession_numbers);
Excel's conversion of gene symbols to dates (Ziemann et al. 2016, https://doi.org/10.1186/s13059-016-1044-7) and
HGNC's 2020 renames to MARCHF*, SEPTIN*, DELEC1 (Bruford et al. 2020, https://doi.org/10.1038/s41588-020-0669-3);
the IUPAC three-letter amino-acid codes.
"""

from __future__ import annotations

import pytest

from ingest.normalize import infer_feature_type, normalize

METABOLITES = [
    ("cpd:C00025", "C00025", {"kegg": "C00025"}),
    ("cpd:C00031", "C00031", {"kegg": "C00031"}),
    ("Glucose (cpd:C00031)", "glucose", {"kegg": "C00031"}),
    ("Ile", "isoleucine", {}),
    ("Cys", "cysteine", {}),
    ("Asn", "asparagine", {}),
    ("Leu", "leucine", {}),
    ("Val", "valine", {}),
    ("Glu", "glutamate", {}),
    ("Ca2+", "ca2+", {}),
    ("Ca++", "ca2+", {}),
    ("Cl-", "cl-", {}),
    ("Na+", "na+", {}),
    ("NH4+", "nh4+", {}),
    ("Fe2+", "fe2+", {}),
    ("Fe3+", "fe3+", {}),
]
THREE_LETTER = {
    "Ala": "alanine", "Arg": "arginine", "Asn": "asparagine", "Asp": "aspartate", "Cys": "cysteine",
    "Gln": "glutamine", "Glu": "glutamate", "Gly": "glycine", "His": "histidine", "Ile": "isoleucine",
    "Leu": "leucine", "Lys": "lysine", "Met": "methionine", "Phe": "phenylalanine", "Pro": "proline",
    "Ser": "serine", "Thr": "threonine", "Trp": "tryptophan", "Tyr": "tyrosine", "Val": "valine",
}  # fmt: skip


@pytest.mark.parametrize(("raw", "key", "ids"), METABOLITES)
def test_metabolite_spellings(raw: str, key: str, ids: dict[str, str]) -> None:
    feature = normalize(raw, "metabolite")
    assert (feature.normalized_name, feature.external_ids, feature.parsed) == (key, ids, True)


def test_two_kegg_rest_ids_are_two_metabolites() -> None:
    assert (
        normalize("cpd:C00025", "metabolite").normalized_name != normalize("cpd:C00031", "metabolite").normalized_name
    )


@pytest.mark.parametrize(("code", "key"), sorted(THREE_LETTER.items()))
def test_every_three_letter_amino_acid_code_folds_into_its_amino_acid(code: str, key: str) -> None:
    assert normalize(code, "metabolite").normalized_name == key
    assert normalize(code.upper(), "metabolite").normalized_name == key
    assert normalize(key.capitalize(), "metabolite").normalized_name == key


def test_ions_keep_their_charge_and_one_spelling() -> None:
    assert normalize("Fe2+", "metabolite").normalized_name != normalize("Fe3+", "metabolite").normalized_name
    assert normalize("Ca 2+", "metabolite").display_name == "Ca2+"
    assert normalize("Cl-", "metabolite").display_name == "Cl-"


ALBUMIN = "sp|P02768|ALBU_HUMAN Serum albumin OS=Homo sapiens OX=9606 GN=ALB PE=1 SV=2"


def test_the_fasta_gene_field_wins_over_the_entry_mnemonic() -> None:
    feature = normalize(ALBUMIN, "protein")
    assert (feature.normalized_name, feature.external_ids["gene"], feature.display_name) == (
        "P02768",
        "ALB",
        "ALB (P02768)",
    )
    # Without GN= the entry name is all there is.
    assert normalize("sp|P04637|TP53_HUMAN", "protein").external_ids["gene"] == "TP53"


@pytest.mark.parametrize("raw", ["A0B1C2D3E4F", "Q9Y6K9ZZZZZ", "P0463712345"])
def test_an_accession_shaped_string_that_is_no_accession_is_not_a_gene(raw: str) -> None:
    feature = normalize(raw, "protein")
    assert not feature.parsed
    assert feature.normalized_name == raw
    assert "gene" not in feature.external_ids


@pytest.mark.parametrize(
    ("raw", "symbol"),
    [("1-Sep", "SEPTIN1"), ("7-Sep", "SEPTIN7"), ("Sep-7", "SEPTIN7"), ("1-Dec", "DELEC1"), ("3-Mar", "MARCHF3")],
)
def test_excel_dates_of_one_possible_gene_map_to_todays_symbol_and_say_so(raw: str, symbol: str) -> None:
    feature = normalize(raw, "gene")
    assert (feature.normalized_name, feature.parsed, feature.external_ids) == (symbol, True, {"excel_date": raw})


@pytest.mark.parametrize("raw", ["1-Mar", "2-Mar", "15-Sep", "2-Dec", "3-Apr", "1-Jan-2020"])
def test_other_excel_dates_are_refused(raw: str) -> None:
    feature = normalize(raw, "gene")
    assert not feature.parsed
    assert feature.normalized_name == raw
    assert feature.external_ids == {"excel_date": raw}


def test_genes_that_look_like_months_are_still_genes() -> None:
    assert normalize("MARCH1", "gene").normalized_name == "MARCH1"
    assert normalize("SEPT7", "gene").normalized_name == "SEPT7"
    assert normalize("DEC1", "gene").external_ids == {}


@pytest.mark.parametrize(
    ("raw", "feature_type"),
    [
        ("GM3", "lipid"),
        ("GD1a", "lipid"),
        ("GABA", "metabolite"),
        ("NAD+", "metabolite"),
        ("ATP", "metabolite"),
        ("cAMP", "metabolite"),
        ("Ethanol", "metabolite"),
        ("1-Sep", "gene"),
        ("TP53", "gene"),
        ("PC 34:1", "lipid"),
        ("cpd:C00025", "metabolite"),
        (ALBUMIN, "protein"),
    ],
)
def test_type_inference(raw: str, feature_type: str) -> None:
    assert infer_feature_type(raw) == feature_type
