"""Lipid names as instruments and tools print them (#13), each normalized to LIPID MAPS shorthand 2020.

Sources for the formats: Liebisch et al. 2020, "Update on LIPID MAPS classification, nomenclature, and shorthand
notation" (https://www.jlr.org/article/S0022-2275(20)60017-7/fulltext) for the target grammar, isotope labels and
the species / molecular species / sn-position levels; the Goslin documentation
(https://apps.lifs-tools.org/goslin/documentation) for the reference parser; the LIPID MAPS shorthand table for
glycerolipids, where ``0:0`` marks a free position (https://www.lipidomicnet.org/index.php/Shorthand_notation_for_Glycerolipids_%28GL%29);
Biocrates AbsoluteIDQ names ("PC aa C36:2", "PC ae C38:4", "lysoPC a C16:0") as used in Metabolites 9(6):109
(https://www.mdpi.com/2218-1989/9/6/109/htm); the vendor spellings of LipidSearch, MS-DIAL 4/5 and Lipidyzer as
reported from real exports in issue #13 and catalogued in Hoffmann et al. 2022, Metabolites 12(7):584
(https://pmc.ncbi.nlm.nih.gov/articles/PMC9319858).
"""

from __future__ import annotations

import re

import pytest

from ingest.normalize import normalize

# (raw, key, species)
LIPIDSEARCH = [
    ("Hex1Cer(d18:1_24:1)+H", "HexCer 18:1;O2/24:1", "HexCer 42:2;O2"),
    ("Hex2Cer(d18:1_24:1)+H", "Hex2Cer 18:1;O2/24:1", "Hex2Cer 42:2;O2"),
    ("AcCa(16:0)+H", "CAR 16:0", "CAR 16:0"),
    ("So(d18:1)+H", "SPB 18:1;O2", "SPB 18:1;O2"),
    ("ZyE(18:1)+NH4", "SE 27:2/18:1", "SE 27:2/18:1"),
    ("ChE(18:1)+NH4", "SE 27:1/18:1", "SE 27:1/18:1"),
    ("PC(16:0_18:1)+H", "PC 16:0_18:1", "PC 34:1"),
    ("PE(18:0p_20:4)-H", "PE P-18:0/20:4", "PE O-38:5"),
    ("PC(16:0e_18:1)+H", "PC O-16:0/18:1", "PC O-34:1"),
    ("TG(16:0_18:1_18:2)+NH4", "TG 16:0_18:1_18:2", "TG 52:3"),
    ("Cer(d18:1_16:0)+H", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
    ("SM(d18:1_16:0)+H", "SM 18:1;O2/16:0", "SM 34:1;O2"),
    ("LPC(18:1)+H", "LPC 18:1", "LPC 18:1"),
]
MSDIAL4 = [
    ("Cer 18:1;2O/16:0", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
    ("SM 34:1;2O", "SM 34:1;O2", "SM 34:1;O2"),
    ("Cer-NS d18:1/16:0", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
    ("Cer_NS d18:1/16:0", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
    ("Cer-NDS d18:0/24:1", "Cer 18:0;O2/24:1", "Cer 42:1;O2"),
    ("HexCer 18:1;2O/24:1", "HexCer 18:1;O2/24:1", "HexCer 42:2;O2"),
    ("PC 16:0_18:1", "PC 16:0_18:1", "PC 34:1"),
]
MSDIAL5 = [
    ("Cer 18:1;O2/16:0", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
    ("PC 34:1|PC 16:0_18:1", "PC 16:0_18:1", "PC 34:1"),
    ("SM 34:1;O2|SM 18:1;O2/16:0", "SM 18:1;O2/16:0", "SM 34:1;O2"),
    ("TG 52:3|TG 16:0_18:1_18:2", "TG 16:0_18:1_18:2", "TG 52:3"),
    ("PE O-38:5|PE P-18:0_20:4", "PE P-18:0/20:4", "PE O-38:5"),
]
LIPOSTAR = [  # Lipostar annotates against LIPID MAPS: LIPID MAPS names with adducts
    ("PC(16:0/18:1(9Z)) [M+H]+", "PC 16:0/18:1(9Z)", "PC 34:1"),
    ("SM(d18:1/16:0) [M+H]+", "SM 18:1;O2/16:0", "SM 34:1;O2"),
    ("TG(16:0/18:1(9Z)/18:2(9Z,12Z)) [M+NH4]+", "TG 16:0/18:1(9Z)/18:2(9Z,12Z)", "TG 52:3"),
]
LIPIDYZER = [
    ("CER(16:0)", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
    ("DCER(16:0)", "Cer 18:0;O2/16:0", "Cer 34:0;O2"),
    ("HCER(24:0)", "HexCer 18:1;O2/24:0", "HexCer 42:1;O2"),
    ("LCER(16:0)", "LacCer 18:1;O2/16:0", "LacCer 34:1;O2"),
    # Lipidyzer's "SM(24:1)" is spelled exactly as the shorthand species SM 24:1 (C29): it stays that species, as
    # pygoslin reads it (module docstring of ingest.normalize.lipid); the upper-case CER/HCER/LCER/DCER are vendor-only.
    ("SM(24:1)", "SM 24:1;O2", "SM 24:1;O2"),
    ("TAG52:2-FA18:1", "TG 18:1_34:1", "TG 52:2"),
    ("DAG(16:0/18:1)", "DG 16:0/18:1", "DG 34:1"),
    ("MAG(18:1)", "MG 18:1", "MG 18:1"),
    ("FFA(18:1)", "FA 18:1", "FA 18:1"),
    ("CE(18:1)", "SE 27:1/18:1", "SE 27:1/18:1"),
    ("PE(P-16:0/18:1)", "PE P-16:0/18:1", "PE O-34:2"),
]
BIOCRATES = [
    ("PC aa C36:2", "PC 36:2", "PC 36:2"),
    ("PC ae C38:4", "PC O-38:4", "PC O-38:4"),
    ("lysoPC a C16:0", "LPC 16:0", "LPC 16:0"),
    ("lysoPC a C18:1", "LPC 18:1", "LPC 18:1"),
    ("SM C24:1", "SM 18:1;O2/24:1", "SM 42:2;O2"),
    ("TG(16:0_34:1)", "TG 16:0_34:1", "TG 50:1"),
]
LIPID_MAPS = [
    ("PC(16:0/18:1(9Z))", "PC 16:0/18:1(9Z)", "PC 34:1"),
    ("PC(18:1(9Z)/0:0)", "LPC 18:1(9Z)/0:0", "LPC 18:1"),
    ("PE(0:0/18:1(9Z))", "LPE 0:0/18:1(9Z)", "LPE 18:1"),
    ("Cer(d18:1(4E)/16:0)", "Cer 18:1;O2/16:0", "Cer 34:1;O2"),
    ("SM(d18:1(4E)/16:0)", "SM 18:1;O2/16:0", "SM 34:1;O2"),
    ("GlcCer(d18:1/16:0)", "GlcCer 18:1;O2/16:0", "GlcCer 34:1;O2"),
    ("GalCer(d18:1/16:0)", "GalCer 18:1;O2/16:0", "GalCer 34:1;O2"),
    ("DG(16:0/18:1(9Z)/0:0)", "DG 16:0/18:1(9Z)/0:0", "DG 34:1"),
    ("PE(P-18:0/20:4(5Z,8Z,11Z,14Z))", "PE P-18:0/20:4(5Z,8Z,11Z,14Z)", "PE O-38:5"),
]
OLDER_D18 = [
    ("Cer(d18:1/24:0)", "Cer 18:1;O2/24:0", "Cer 42:1;O2"),
    ("Cer d18:0/24:1", "Cer 18:0;O2/24:1", "Cer 42:1;O2"),
    ("SM(d18:1_24:1)", "SM 18:1;O2/24:1", "SM 42:2;O2"),
    ("GlcCer d18:1/24:1", "GlcCer 18:1;O2/24:1", "GlcCer 42:2;O2"),
]
SHORTHAND = [
    ("GlcCer 18:1;O2/16:0", "GlcCer 18:1;O2/16:0", "GlcCer 34:1;O2"),
    ("GalCer 18:1;O2/16:0", "GalCer 18:1;O2/16:0", "GalCer 34:1;O2"),
    ("Cer 24:1;O2", "Cer 24:1;O2", "Cer 24:1;O2"),
    ("Cer 42:2;O2", "Cer 42:2;O2", "Cer 42:2;O2"),
    # a bare chain spelled in shorthand is species notation, labelled or not: never rewritten as Cer 18:1;O2/18:1
    ("Cer 18:1", "Cer 18:1;O2", "Cer 18:1;O2"),
    ("Cer(16:0)", "Cer 16:0;O2", "Cer 16:0;O2"),
    ("HexCer 24:0", "HexCer 24:0;O2", "HexCer 24:0;O2"),
    ("Cer 18:1 [M[2]H5]", "Cer 18:1;O2[M[2]H5]", "Cer 18:1;O2[M[2]H5]"),
    ("SM(24:1) [M[2]H9]", "SM 24:1;O2[M[2]H9]", "SM 24:1;O2[M[2]H9]"),
    ("MG 18:1", "MG 18:1", "MG 18:1"),
    ("DG 16:0/18:1", "DG 16:0/18:1", "DG 34:1"),
]
HEAVY = [
    ("PC(15:0-18:1(d7))", "PC 15:0_18:1[M[2]H7]", "PC 33:1[M[2]H7]"),
    ("PC 15:0_18:1[M[2]H7]", "PC 15:0_18:1[M[2]H7]", "PC 33:1[M[2]H7]"),
    ("PC 15:0-18:1-d7", "PC 15:0_18:1[M[2]H7]", "PC 33:1[M[2]H7]"),
    ("LPC 18:1(d7)", "LPC 18:1[M[2]H7]", "LPC 18:1[M[2]H7]"),
    ("SM(d18:1/18:1(d9))", "SM 18:1;O2/18:1[M[2]H9]", "SM 36:2;O2[M[2]H9]"),
    ("CE(18:1(d7))", "SE 27:1/18:1[M[2]H7]", "SE 27:1/18:1[M[2]H7]"),
]
ALL = LIPIDSEARCH + MSDIAL4 + MSDIAL5 + LIPOSTAR + LIPIDYZER + BIOCRATES + LIPID_MAPS + OLDER_D18 + SHORTHAND + HEAVY


@pytest.mark.parametrize(("raw", "key", "species"), ALL)
def test_vendor_spelling_normalizes_to_the_shorthand_key_and_species(raw: str, key: str, species: str) -> None:
    feature = normalize(raw, "lipid")
    assert (feature.normalized_name, feature.species_name, feature.parsed) == (key, species, True)
    again = normalize(feature.normalized_name, "lipid")
    assert (again.normalized_name, again.species_name) == (key, species), "a key must read back to itself"


@pytest.mark.parametrize(("raw", "key", "species"), HEAVY)
def test_a_labelled_standard_keeps_its_label_apart_from_the_endogenous_lipid(raw: str, key: str, species: str) -> None:
    feature = normalize(raw, "lipid")
    assert feature.external_ids["heavy_label"] in key
    endogenous = normalize(re.sub(r"\(d\d\)|-d\d$|\[M\[2\]H\d\]", "", raw), "lipid")
    assert endogenous.normalized_name != feature.normalized_name
    assert endogenous.species_name != feature.species_name
    assert "heavy_label" not in endogenous.external_ids


def test_glucosyl_and_galactosyl_ceramides_stay_two_features() -> None:
    assert (
        normalize("GlcCer(d18:1/16:0)", "lipid").normalized_name
        != normalize("GalCer(d18:1/16:0)", "lipid").normalized_name
    )
    assert (
        normalize("GlcCer 18:1;O2/16:0", "lipid").normalized_name
        != normalize("HexCer 18:1;O2/16:0", "lipid").normalized_name
    )


def test_lyso_names_of_lipid_maps_meet_the_lyso_class_at_species_level() -> None:
    assert normalize("PC(18:1(9Z)/0:0)", "lipid").species_name == normalize("LPC 18:1", "lipid").normalized_name


@pytest.mark.parametrize("raw", ["MAG(18:1)", "MG 18:1", "DAG(16:0/18:1)", "DG 16:0/18:1", "TG 52:2", "LPC 18:1"])
def test_no_free_position_is_invented(raw: str) -> None:
    assert "0:0" not in normalize(raw, "lipid").normalized_name


@pytest.mark.parametrize("raw", ["Cer 24:1;O2", "SM 24:1;O2", "Cer 42:2;O2", "PC 34:1", "HexCer 42:1;O2"])
def test_species_notation_stays_at_species_level(raw: str) -> None:
    feature = normalize(raw, "lipid")
    assert feature.normalized_name == feature.species_name


@pytest.mark.parametrize(
    "raw",
    [
        "0",
        "42",
        "3.14",
        "PC 4:8",
        "PC 16:0/18:12",
        "TG 2:3",
        "Cer 18:1;O2/2:4",
        "PC",
        "PC 34:1\x00",
        "hello",
        "-",
        "PC 16:0|PE 16:0",
    ],
)
def test_junk_and_chemically_impossible_names_are_refused_and_kept_raw(raw: str) -> None:
    feature = normalize(raw, "lipid")
    assert not feature.parsed
    assert feature.normalized_name == raw.strip()
    assert feature.species_name is None


VENDOR_TABLES = {
    "LipidSearch": LIPIDSEARCH,
    "MS-DIAL 4": MSDIAL4,
    "MS-DIAL 5": MSDIAL5,
    "Lipostar": LIPOSTAR,
    "Lipidyzer": LIPIDYZER,
    "Biocrates": BIOCRATES,
    "LIPID MAPS": LIPID_MAPS,
    "older d18:1": OLDER_D18,
    "shorthand 2020": SHORTHAND,
    "heavy labels": HEAVY,
}
