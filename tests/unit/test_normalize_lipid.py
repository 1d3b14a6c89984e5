"""Lipid names → LIPID MAPS shorthand via pygoslin, vendor spellings cleaned, unreadable names kept as written."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.normalize import normalize
from ingest.normalize.lipid import _fast_parse, _read, clean_lipid_name


def test_a_sn_position_name_keeps_its_chains_and_gets_its_species_and_class() -> None:
    feature = normalize("PC(16:0/18:1)", "lipid")
    assert feature.normalized_name == "PC 16:0/18:1"
    assert feature.display_name == "PC 16:0/18:1"
    assert feature.species_name == "PC 34:1"
    assert feature.lipid_class == "PC"
    assert feature.parsed
    assert feature.feature_type == "lipid"


@pytest.mark.parametrize(
    ("raw", "name", "lipid_class"),
    [("PC 34:1", "PC 34:1", "PC"), ("PC(34:1)", "PC 34:1", "PC"), ("TG 52:2", "TG 52:2", "TG")],
)
def test_species_level_names_stay_species_level_and_are_never_given_a_sphingoid_base(
    raw: str, name: str, lipid_class: str
) -> None:
    # The earlier system turned "PC 34:1" into "Pc(d18:1/34:1)" and "TG 52:2" into "Tg(d18:1/52:2)".
    feature = normalize(raw, "lipid")
    assert feature.normalized_name == name
    assert feature.species_name == name
    assert feature.lipid_class == lipid_class
    assert "18:1;O2" not in feature.normalized_name


@pytest.mark.parametrize(
    ("raw", "name", "species"),
    [
        ("CER 16:0", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
        ("Ceramide C24:1", "Cer 18:1;O2/24:1", "Cer 42:2;O2"),
        ("hex_cer_24_0", "HexCer 18:1;O2/24:0", "HexCer 42:1;O2"),
        ("SM(d18:1_24:1)", "SM 18:1;O2/24:1", "SM 42:2;O2"),
        ("SM 24:1;O2", "SM 24:1;O2", "SM 24:1;O2"),  # shorthand species notation stays a species (#13)
        ("CER(d18:1/16:0)+H", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
        ("Cer(d18:1/16:0)", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
        ("DCER(16:0)", "Cer 18:0;O2/16:0", "Cer 34:0;O2"),
        ("HCER(24:0)", "HexCer 18:1;O2/24:0", "HexCer 42:1;O2"),
        ("TAG 52:2", "TG 52:2", "TG 52:2"),
    ],
)
def test_vendor_spellings_are_cleaned_into_shorthand(raw: str, name: str, species: str) -> None:
    feature = normalize(raw, "lipid")
    assert (feature.normalized_name, feature.species_name, feature.parsed) == (name, species, True)


@pytest.mark.parametrize(
    "raw",
    ["PC 34:1 [M+H]+", "PC(34:1)[M+H]1+", "PC 34:1+H", "PC 34:1 (pos)", "PC 34:1 (neg)", "PC 34:1+", "PC 34:1 1+"],
)
def test_adducts_polarity_tags_and_charges_are_removed(raw: str) -> None:
    assert normalize(raw, "lipid").normalized_name == "PC 34:1"


def test_a_ceramide_sum_composition_is_not_read_as_an_acyl_chain() -> None:
    # Only a single chain of at most 26 carbons can be an N-acyl chain; 34 carbons is base + acyl together.
    assert normalize("Cer 34:1", "lipid").normalized_name == "Cer 34:1;O2"
    assert normalize("Cer 42:2;O2", "lipid").normalized_name == "Cer 42:2;O2"


def test_the_bare_chain_rule_touches_sphingolipids_only() -> None:
    assert normalize("PC 16:0", "lipid").normalized_name == "PC 16:0"
    assert clean_lipid_name("LPC 16:0") == "LPC 16:0"


def test_molecular_species_with_chains_in_any_order_are_one_feature() -> None:
    assert normalize("PC 18:1_16:0", "lipid").normalized_name == "PC 16:0_18:1"
    assert normalize("PC(16:0_18:1)", "lipid").normalized_name == "PC 16:0_18:1"
    # sn-positions are information: they are not reordered.
    assert normalize("PC 18:1/16:0", "lipid").normalized_name == "PC 18:1/16:0"


def test_a_double_bond_position_is_kept_when_given() -> None:
    feature = normalize("PC(16:0/18:1(9Z))", "lipid")
    assert feature.normalized_name == "PC 16:0/18:1(9Z)"
    assert feature.species_name == "PC 34:1"


@pytest.mark.parametrize("raw", ["  Unknown lipid X-17 ", "glucose", "Cer(d18:1_16:0 broken", "PC 34:1 / ??"])
def test_an_unreadable_name_is_kept_as_written_only_trimmed(raw: str) -> None:
    feature = normalize(raw, "lipid")
    assert not feature.parsed
    assert feature.normalized_name == raw.strip()
    assert feature.display_name == raw.strip()
    assert feature.species_name is None
    assert feature.lipid_class is None


_FAST_PATH_NAMES = [
    template.format(cls=cls, a=a, b=b, c=c)
    for cls in ("PC", "PE", "PS", "PG", "PI", "PA")
    for template in ("{cls} {a}/{b}", "{cls}({a}/{b})", "{cls} {a}_{b}", "{cls}({b}_{a})", "{cls} {c}")
    for a, b, c in (
        ("16:0", "18:1", "34:1"),
        ("18:2", "18:2", "36:4"),
        ("20:4", "14:0", "44:10"),
        ("22:6", "9:0", "8:0"),
    )
] + [
    *(f"{cls} {chain}" for cls in ("LPC", "LPE", "LPS", "LPG", "LPI", "LPA") for chain in ("16:0", "18:1", "22:6")),
    *(f"{cls}({chain})" for cls in ("LPC", "LPE") for chain in ("16:0", "20:4")),
    "DG 16:0_18:1",
    "DG(18:1_16:0)",
    "DG 34:1",
    "TG 16:0/18:1/18:2",
    "TG(18:1_16:0_18:2)",
    "TG 52:2",
    "TG(54:6)",
    "TG 18:2_18:2_16:0",
    *(f"{cls} {e}-{chains}" for cls in ("PC", "PE") for e in "OP" for chains in ("16:0/18:1", "18:1_16:0", "38:4")),
    *(f"{cls} {e}-16:0" for cls in ("LPC", "LPE") for e in "OP"),
    *(
        f"{cls} {base}/{acyl}"
        for cls in ("Cer", "SM", "HexCer", "LacCer")
        for base in ("18:1;O2", "18:0;O2", "18:0;O3", "17:1;O", "20:2;O2")
        for acyl in ("16:0", "24:1", "2:0")
    ),
    *(
        f"{cls} {species}"
        for cls in ("Cer", "SM", "HexCer", "LacCer")
        for species in ("34:1;O2", "42:2;O2", "42:0;O3", "36:1;O")
    ),
]


@pytest.mark.parametrize("name", _FAST_PATH_NAMES)
def test_the_fast_path_gives_exactly_what_pygoslin_gives(name: str) -> None:
    fast = _fast_parse(name)
    assert fast is not None, "the name should take the fast path"
    assert _read(name) == _read(name, use_fast_path=False)


@settings(max_examples=150, deadline=None)
@given(
    cls=st.sampled_from(["PC", "PE", "PS", "PG", "PI", "PA", "DG", "TG", "LPC", "LPE", "LPA"]),
    chains=st.lists(st.tuples(st.integers(1, 36), st.integers(0, 12)), min_size=1, max_size=3),
    separator=st.sampled_from(["/", "_"]),
    parenthesised=st.booleans(),
    ether=st.sampled_from(["", "", "O-", "P-"]),
)
def test_whenever_the_fast_path_answers_pygoslin_agrees(
    cls: str, chains: list[tuple[int, int]], separator: str, parenthesised: bool, ether: str
) -> None:
    text = ether + separator.join(f"{c}:{db}" for c, db in chains)
    name = f"{cls}({text})" if parenthesised else f"{cls} {text}"
    fast = _fast_parse(name)
    if fast is not None:
        assert _read(name) == _read(name, use_fast_path=False)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalizing_arbitrary_text_never_raises_and_unparsed_names_are_only_trimmed(raw: str) -> None:
    feature = normalize(raw, "lipid")
    if not feature.parsed:
        assert feature.normalized_name == raw.strip()


_LIPID_LIKE = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(["PC", "PE", "Cer", "CER", "SM", "HexCer", "hex_cer", "TG", "DG", "LPC", "Ceramide", "PI", "FA"]),
    st.sampled_from([" ", "(", "_", " C"]),
    st.sampled_from(
        ["16:0", "34:1", "d18:1/16:0", "d18:1_24:1", "16:0/18:1", "18:1_16:0", "24:1;O2", "24_0", "O-34:1"]
    ),
    st.sampled_from(["", ")", " [M+H]+", "+H", " (pos)", "-", ")+H"]),
)


@settings(max_examples=300, deadline=None)
@given(_LIPID_LIKE)
def test_normalizing_a_display_name_again_gives_the_same_key(raw: str) -> None:
    feature = normalize(raw, "lipid")
    if feature.parsed:
        again = normalize(feature.display_name, "lipid")
        assert again.normalized_name == feature.normalized_name
        assert again.species_name == feature.species_name


def _formula(name: str) -> str | None:
    """pygoslin's sum formula of a name it reads as written (the independent reference), else None."""
    from ingest.normalize.lipid import _parser

    try:
        parsed = _parser().parse(name)
        if parsed.adduct is not None:  # the neutral molecule: the adduct goes, an isotope label stays
            parsed.adduct.adduct_string, parsed.adduct.sum_formula, parsed.adduct.charge = "", "", 0
        return str(parsed.get_sum_formula())
    except Exception:
        return None


_FORMULA_CLASSES = ["PC", "PE", "PS", "PG", "PI", "LPC", "LPE", "TG", "DG", "MG", "Cer", "SM", "HexCer", "GlcCer"]
_FORMULA_CLASSES += ["GalCer", "LacCer", "Hex2Cer", "PA", "LPA", "CE", "FA", "SPB", "CAR"]
_FORMULA_CHAINS = [
    "16:0/18:1",
    "18:1_16:0",
    "34:1",
    "O-34:1",
    "P-18:0/20:4",
    "18:1",
    "16:0_18:1_18:2",
    "d18:1/16:0",
    "18:1;O2/24:1",
    "42:2;O2",
    "18:1(9Z)/16:0",
    "15:0_18:1(d7)",
    "18:1(d7)",
    "4:8",
    "d18:0/24:1",
    "18:0;O2",
    "d18:1",
    "16:0",
    "24:1",
    "t18:0/16:0",
    "O-16:0/18:1",
    "18:1(d9)",
    "16:0/0:0",
    "0:0/18:1",
    "d18:1_24:0",
    "22:6",
]
_FORMULA_SUFFIXES = ["", ")", ")[M+H]1+", " [M[2]H5]", ")[M[2]H7]", " [M+H]+"]
_FORMULA_NAMES = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(_FORMULA_CLASSES),
    st.sampled_from([" ", "("]),
    st.sampled_from(_FORMULA_CHAINS),
    st.sampled_from(_FORMULA_SUFFIXES),
)


@settings(max_examples=120, deadline=None)
@given(_FORMULA_NAMES, _FORMULA_NAMES)
def test_normalization_is_idempotent_and_never_gives_one_key_to_two_sum_formulas(first: str, second: str) -> None:
    """Idempotent, and a key keeps the sum formula of every name pygoslin reads as written (#13 deliverable 5)."""
    a, b = normalize(first, "lipid"), normalize(second, "lipid")
    for raw, feature in ((first, a), (second, b)):
        if not feature.parsed:
            continue
        assert normalize(feature.normalized_name, "lipid").normalized_name == feature.normalized_name
        reference = _formula(raw)
        if reference is not None:
            assert _formula(feature.normalized_name) == reference, (raw, feature.normalized_name)
    if a.parsed and b.parsed and a.normalized_name == b.normalized_name:
        fa, fb = _formula(first), _formula(second)
        if fa is not None and fb is not None:
            assert fa == fb, (first, second)


@pytest.mark.slow
def test_every_generated_name_keeps_its_sum_formula_and_no_key_has_two() -> None:
    """The property above on the whole generated space (26 classes x 2 x 26 chains x 6 suffixes), not a sample."""
    formulas_by_key: dict[str, set[str]] = {}
    problems: list[tuple[str, str]] = []
    for parts in itertools.product(_FORMULA_CLASSES, [" ", "("], _FORMULA_CHAINS, _FORMULA_SUFFIXES):
        raw = "".join(parts)
        feature = normalize(raw, "lipid")
        if not feature.parsed:
            continue
        if normalize(feature.normalized_name, "lipid").normalized_name != feature.normalized_name:
            problems.append((raw, feature.normalized_name))
        reference = _formula(raw)
        if reference is None:
            continue
        if _formula(feature.normalized_name) != reference:
            problems.append((raw, feature.normalized_name))
        formulas_by_key.setdefault(feature.normalized_name, set()).add(reference)
    assert problems == []
    assert {key: found for key, found in formulas_by_key.items() if len(found) > 1} == {}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MG 20:0", "MG 20:0"),  # not "MG 20:0/0:0/0:0": "20:0" holds the characters "0:0" but is no empty chain
        ("DG 2:0/10:0", "DG 2:0/10:0"),
        ("DG(16:0/20:0)", "DG 16:0_20:0"),  # LIPID MAPS grammar without sn-3: molecular species
        ("TG(16:0/10:0/20:0)", "TG 16:0/10:0/20:0"),
        ("PC(20:0/0:0)", "LPC 20:0/0:0"),  # a 0:0 the name wrote is kept
    ],
)
def test_the_pygoslin_path_invents_no_empty_chain_next_to_a_chain_ending_in_0_0(name: str, expected: str) -> None:
    parsed = _read(name, use_fast_path=False)
    assert parsed is not None
    assert parsed.name == expected
