"""Proteins keyed by UniProt accession (else symbol), genes by upper-case symbol or versionless Ensembl id; type
inference for signature files without a type column."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.normalize import FEATURE_TYPE_FOR_OMICS, infer_feature_type, normalize


def test_a_uniprot_fasta_header_gives_accession_and_gene() -> None:
    feature = normalize("sp|P04637|TP53_HUMAN", "protein")
    assert feature.normalized_name == "P04637"
    assert feature.external_ids == {"uniprot": "P04637", "gene": "TP53"}
    assert feature.display_name == "TP53 (P04637)"
    assert normalize(feature.display_name, "protein").normalized_name == "P04637"


def test_an_isoform_is_keyed_by_its_canonical_accession_and_kept_in_external_ids() -> None:
    feature = normalize("Q9Y6K9-2", "protein")
    assert feature.normalized_name == "Q9Y6K9"
    assert feature.external_ids == {"uniprot": "Q9Y6K9", "uniprot_isoform": "Q9Y6K9-2"}


@pytest.mark.parametrize("accession", ["P04637", "Q9Y6K9", "A0A024R161", "O15530"])
def test_accessions_matching_the_official_pattern_are_kept(accession: str) -> None:
    assert normalize(accession, "protein").normalized_name == accession


def test_a_protein_group_is_keyed_by_its_leading_accession() -> None:
    feature = normalize("P04637;Q9Y6K9-2", "protein")
    assert feature.normalized_name == "P04637"
    assert feature.external_ids["uniprot_group"] == "P04637;Q9Y6K9-2"


def test_a_trembl_entry_named_after_its_accession_gives_no_gene() -> None:
    assert "gene" not in normalize("tr|A0A024R161|A0A024R161_HUMAN", "protein").external_ids


@pytest.mark.parametrize("raw", ["actb", "ACTB", "ACTB_HUMAN", "ACTB (Human)"])
def test_a_gene_symbol_only_protein_is_keyed_by_the_upper_case_symbol(raw: str) -> None:
    feature = normalize(raw, "protein")
    assert (feature.normalized_name, feature.external_ids) == ("ACTB", {"gene": "ACTB"})


@pytest.mark.parametrize("raw", ["tp53", "TP53", "TP53_HUMAN", "TP53.1", "TP53 (Human)", " tp53 "])
def test_gene_symbols_are_upper_cased_without_species_or_repeat_suffixes(raw: str) -> None:
    feature = normalize(raw, "gene")
    assert (feature.normalized_name, feature.parsed) == ("TP53", True)


@pytest.mark.parametrize("raw", ["AC012345.1", "RP11-34P13.3"])
def test_clone_based_gene_names_keep_their_version(raw: str) -> None:
    assert normalize(raw, "gene").normalized_name == raw


@pytest.mark.parametrize(
    ("raw", "key", "version"),
    [
        ("ENSG00000141510", "ENSG00000141510", None),
        ("ensg00000141510.17", "ENSG00000141510", "17"),
        ("ENST00000269305.9", "ENST00000269305", "9"),
        ("ENSMUSG00000059552.3", "ENSMUSG00000059552", "3"),
    ],
)
def test_ensembl_ids_are_upper_cased_with_the_version_kept_apart(raw: str, key: str, version: str | None) -> None:
    feature = normalize(raw, "gene")
    assert feature.normalized_name == key
    assert feature.external_ids.get("ensembl") == key
    assert feature.external_ids.get("ensembl_version") == version


@pytest.mark.parametrize("raw", ["1007_s_at", "gene with spaces", "???"])
def test_names_that_are_not_symbols_are_kept_as_written(raw: str) -> None:
    feature = normalize(raw, "gene")
    assert (feature.normalized_name, feature.parsed) == (raw, False)


def test_an_unknown_feature_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown feature type"):
        normalize("TP53", "transcript")


def test_every_omics_type_maps_to_a_feature_type_normalize_knows() -> None:
    for feature_type in FEATURE_TYPE_FOR_OMICS.values():
        assert normalize("X1", feature_type).feature_type == feature_type


@pytest.mark.parametrize(
    ("raw", "feature_type"),
    [
        ("sp|P04637|TP53_HUMAN", "protein"),
        ("Q9Y6K9-2", "protein"),
        ("ENSP00000269305", "protein"),
        ("ENSG00000141510.17", "gene"),
        ("NM_000546.6", "gene"),
        ("TP53", "gene"),
        ("TP53_HUMAN", "gene"),
        ("Gapdh", "gene"),
        ("HMDB0000641", "metabolite"),
        ("Glutamine", "metabolite"),
        ("L-Glutamic acid", "metabolite"),
        ("3-hydroxy_butyrate", "metabolite"),
        ("Cer(d18:1/16:0)", "lipid"),
        ("PC 34:1", "lipid"),
        ("CER 16:0", "lipid"),
        ("hex_cer_24_0", "lipid"),
    ],
)
def test_the_feature_type_is_inferred_from_the_name(raw: str, feature_type: str) -> None:
    assert infer_feature_type(raw) == feature_type


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["gene", "protein"]))
def test_normalizing_arbitrary_text_never_raises_and_is_idempotent(raw: str, feature_type: str) -> None:
    feature = normalize(raw, feature_type)
    if feature.parsed:
        assert normalize(feature.display_name, feature_type).normalized_name == feature.normalized_name
    else:
        assert feature.normalized_name == raw.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_inferring_a_type_never_raises(raw: str) -> None:
    assert infer_feature_type(raw) in {"gene", "protein", "metabolite", "lipid"}
