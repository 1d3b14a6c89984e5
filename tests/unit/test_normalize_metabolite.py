"""Metabolite names: adducts and tags stripped, one case-insensitive key, synonyms, identifiers kept."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.normalize import normalize


@pytest.mark.parametrize("raw", ["glutamine", "Glutamine", "L-Glutamine", "GLUTAMINE", " l-glutamine ", "Gln"])
def test_spellings_of_one_amino_acid_are_one_feature(raw: str) -> None:
    feature = normalize(raw, "metabolite")
    assert feature.normalized_name == "glutamine"
    assert feature.display_name == "Glutamine"
    assert feature.parsed


def test_a_d_amino_acid_is_a_different_compound() -> None:
    assert normalize("D-Serine", "metabolite").normalized_name != normalize("L-Serine", "metabolite").normalized_name


@pytest.mark.parametrize(
    ("raw", "display"),
    [
        ("L-Glutamic acid", "Glutamate"),
        ("glutamic acid", "Glutamate"),
        ("Lactic acid", "Lactate"),
        ("3-hydroxy_butyrate", "3-Hydroxybutyrate"),
        ("citric acid", "Citrate"),
    ],
)
def test_the_synonym_table_maps_acids_and_anions_to_one_name(raw: str, display: str) -> None:
    assert normalize(raw, "metabolite").display_name == display


def test_chemical_names_are_not_title_cased() -> None:
    feature = normalize("1-Aminocyclopropanecarboxylic acid", "metabolite")
    assert feature.display_name == "1-Aminocyclopropanecarboxylic acid"
    assert feature.normalized_name == "1-aminocyclopropanecarboxylic acid"


@pytest.mark.parametrize(
    "raw",
    ["Creatinine [M+H]+", "Creatinine (pos)", "Creatinine(neg)", "Creatinine [M-H]-", "creatinine+", "Creatinine 1+"],
)
def test_adducts_polarity_tags_and_charges_are_removed(raw: str) -> None:
    assert normalize(raw, "metabolite").normalized_name == "creatinine"


def test_a_trailing_hyphen_is_an_inverted_prefix_not_a_charge() -> None:
    # Metabolomics Workbench (BinBase) names write stereo prefixes last: "inositol myo-" is myo-inositol.
    assert normalize("inositol myo-", "metabolite").display_name == "inositol myo-"


def test_underscores_and_runs_of_spaces_become_single_spaces() -> None:
    assert normalize("N-acetyl__aspartyl   glutamate", "metabolite").display_name == "N-acetyl aspartyl glutamate"


def test_greek_letters_and_their_names_share_a_key() -> None:
    assert (
        normalize("α-Tocopherol", "metabolite").normalized_name
        == normalize("alpha-tocopherol", "metabolite").normalized_name
    )


@pytest.mark.parametrize(
    ("raw", "ids"),
    [
        ("Glutamine (HMDB00641)", {"hmdb": "HMDB0000641"}),
        ("Glucose|CHEBI:17234|C00031", {"chebi": "CHEBI:17234", "kegg": "C00031"}),
        ("Glucose, InChIKey=WQZGKKKJIJFFOK-GASJEMHNSA-N", {"inchikey": "WQZGKKKJIJFFOK-GASJEMHNSA-N"}),
        ("Glucose (PubChem CID 5793)", {"pubchem": "5793"}),
    ],
)
def test_identifiers_in_the_name_move_to_external_ids(raw: str, ids: dict[str, str]) -> None:
    feature = normalize(raw, "metabolite")
    assert feature.external_ids == ids
    assert feature.normalized_name in {"glutamine", "glucose"}


def test_a_name_that_is_only_an_identifier_is_keyed_by_it() -> None:
    feature = normalize("HMDB0000641", "metabolite")
    assert (feature.normalized_name, feature.parsed, feature.external_ids) == (
        "HMDB0000641",
        True,
        {"hmdb": "HMDB0000641"},
    )


@pytest.mark.parametrize("raw", ["0.4...0.46", "  123.456  ", "-"])
def test_names_without_letters_are_kept_as_written_and_unparsed(raw: str) -> None:
    feature = normalize(raw, "metabolite")
    assert not feature.parsed
    assert feature.normalized_name == raw.strip()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_normalizing_arbitrary_text_never_raises_and_is_idempotent(raw: str) -> None:
    feature = normalize(raw, "metabolite")
    if feature.parsed:
        assert normalize(feature.display_name, "metabolite").normalized_name == feature.normalized_name
    else:
        assert feature.normalized_name == raw.strip()


_METABOLITE_LIKE = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(["", "L-", "D-", "3-", "N-acetyl-"]),
    st.sampled_from(["glutamine", "Glutamic acid", "lactate", "hydroxy_butyrate", "NAD", "Citrate", "α-ketoglutarate"]),
    st.sampled_from(["", " (HMDB00641)", " C00064", " CID:123", "; CHEBI:17234"]),
    st.sampled_from(["", " [M+H]+", " (pos)", "-", "+", " [2M-H]-"]),
)


@settings(max_examples=300, deadline=None)
@given(_METABOLITE_LIKE)
def test_normalizing_a_display_name_again_gives_the_same_key(raw: str) -> None:
    feature = normalize(raw, "metabolite")
    assert feature.parsed
    assert normalize(feature.display_name, "metabolite").normalized_name == feature.normalized_name
