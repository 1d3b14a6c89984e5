"""Signature scoring: +1 same direction, −1 opposite, 0 missing or directionless; overlap gate; lipid levels."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from ingest.normalize import normalize
from ingest.readers.signature import read_signature
from ingest.scoring import ComponentInput, MeasuredFeature, ScoringOptions, score_signature

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


def _component(name: str, direction: str = "up", weight: float = 1.0, feature_type: str = "lipid") -> ComponentInput:
    feature = normalize(name, feature_type)
    return ComponentInput(
        feature_type=feature.feature_type,
        normalized_name=feature.normalized_name,
        species_name=feature.species_name,
        display_name=feature.display_name,
        direction=direction,
        weight=weight,
    )


def _measured(
    name: str, log2fc: float | None = 1.0, p_value: float | None = 0.01, feature_type: str = "lipid"
) -> MeasuredFeature:
    feature = normalize(name, feature_type)
    return MeasuredFeature(
        feature_type=feature.feature_type,
        normalized_name=feature.normalized_name,
        species_name=feature.species_name,
        log2_fold_change=log2fc,
        p_value=p_value,
    )


def test_the_als_ceramide_signature_scores_0_714_against_the_sample_lipidomics_data() -> None:
    signature = read_signature(SAMPLES / "ALS-CSF-Core-6Ceramides.tsv")
    components = [
        ComponentInput(
            feature_type=row.feature.feature_type,
            normalized_name=row.feature.normalized_name,
            species_name=row.feature.species_name,
            display_name=row.feature.display_name,
            direction=row.direction,
            weight=row.weight,
        )
        for row in signature.rows
    ]
    with (SAMPLES / "sample_lipidomics_data.csv").open(newline="", encoding="utf-8") as handle:
        features = [
            _measured(row["Lipid Species"], float(row["log2FC"]), float(row["p-value"]))
            for row in csv.DictReader(handle)
        ]
    assert all((f.log2_fold_change or 0) > 0 for f in features)

    result = score_signature(components, features)

    assert result is not None
    # 4 ceramides up (w 1.0) agree, 2 sphingomyelins down (w 0.8) disagree: (4 − 1.6) / 5.6 = 0.4286 → 0.714.
    assert round(result.score, 3) == 0.714
    assert result.overlap_fraction == 1.0
    assert (result.matched_components, result.total_components, result.match_level) == (6, 6, "exact")
    assert [d["value"] for d in result.details] == [1.0, 1.0, 1.0, 1.0, -1.0, -1.0]


def test_zero_overlap_is_not_a_match() -> None:
    components = [_component("Cer(d18:1/16:0)"), _component("SM(d18:1/16:0)", "down")]
    assert score_signature(components, [_measured("PC(16:0/18:1)")]) is None


def test_no_features_at_all_is_not_a_match() -> None:
    assert score_signature([_component("PC 34:1")], []) is None


def test_overlap_below_the_threshold_is_not_a_match() -> None:
    components = [_component(f"PC 16:0/{c}:1") for c in (14, 16, 18, 20)]
    features = [_measured("PC 16:0/14:1")]
    assert score_signature(components, features) is None  # 0.25 < 0.3
    lenient = score_signature(components, features, ScoringOptions(overlap_threshold=0.25))
    assert lenient is not None
    assert lenient.overlap_fraction == 0.25


def test_missing_components_count_with_their_weight_and_value_zero() -> None:
    components = [_component("PC 16:0/18:1", weight=1.0), _component("PE 16:0/18:1", weight=3.0)]
    result = score_signature(components, [_measured("PC(16:0/18:1)", 2.0)])
    assert result is not None
    assert result.score == pytest.approx((1.0 / 4.0 + 1.0) / 2.0)
    assert (result.matched_components, result.total_components, result.overlap_fraction) == (1, 2, 0.5)


def test_an_opposite_direction_scores_minus_one() -> None:
    result = score_signature([_component("PC 16:0/18:1", "up")], [_measured("PC 16:0/18:1", -1.2, 0.001)])
    assert result is not None
    assert result.score == 0.0
    assert result.details[0]["dataset_direction"] == "down"
    assert result.details[0]["value"] == -1.0


def test_a_change_with_p_above_the_cut_off_has_no_direction_and_scores_zero() -> None:
    result = score_signature([_component("PC 16:0/18:1", "up")], [_measured("PC 16:0/18:1", 3.0, 0.2)])
    assert result is not None
    assert result.details[0]["dataset_direction"] is None
    assert result.details[0]["value"] == 0.0
    assert result.score == 0.5
    relaxed = score_signature(
        [_component("PC 16:0/18:1", "up")], [_measured("PC 16:0/18:1", 3.0, 0.2)], ScoringOptions(max_p_value=0.25)
    )
    assert relaxed is not None
    assert relaxed.score == 1.0


@pytest.mark.parametrize(
    ("log2fc", "p_value", "value"),
    [(None, 0.001, 0.0), (1.0, None, 0.0), (0.0, 0.001, 0.0), (math.nan, 0.001, 0.0), (1.0, math.nan, 0.0)],
)
def test_a_direction_needs_a_finite_nonzero_fold_change_and_a_usable_p_value(
    log2fc: float | None, p_value: float | None, value: float
) -> None:
    result = score_signature([_component("PC 34:1")], [_measured("PC 34:1", log2fc, p_value)])
    assert result is not None
    assert result.details[0]["value"] == value


def test_a_minimum_fold_change_filters_small_changes() -> None:
    options = ScoringOptions(min_abs_log2fc=0.5)
    result = score_signature([_component("PC 34:1")], [_measured("PC 34:1", 0.4, 0.001)], options)
    assert result is not None
    assert result.details[0]["value"] == 0.0


@pytest.mark.parametrize("direction", ["neutral", "complex"])
def test_neutral_and_complex_components_count_for_overlap_but_not_for_direction(direction: str) -> None:
    result = score_signature([_component("PC 34:1", direction)], [_measured("PC 34:1", 2.0)])
    assert result is not None
    assert (result.score, result.overlap_fraction) == (0.5, 1.0)


def test_a_species_component_matches_a_more_specific_dataset_lipid_at_species_level() -> None:
    result = score_signature([_component("PC 34:1", "up")], [_measured("PC(16:0/18:1)", 1.5)])
    assert result is not None
    assert result.match_level == "species"
    assert result.details[0]["level"] == "species"
    assert result.details[0]["feature"] == "PC 16:0/18:1"
    assert result.score == 1.0


def test_a_specific_component_matches_a_species_level_dataset_lipid() -> None:
    result = score_signature([_component("Cer(d18:1/16:0)", "up")], [_measured("Cer 34:1;O2", -1.0)])
    assert result is not None
    assert (result.match_level, result.score) == ("species", 0.0)


def test_an_exact_match_wins_over_a_species_match() -> None:
    features = [_measured("PC 18:0/16:1", -2.0, 0.0001), _measured("PC 16:0/18:1", 1.0, 0.01)]
    result = score_signature([_component("PC 16:0/18:1", "up")], features)
    assert result is not None
    assert (result.match_level, result.details[0]["feature"], result.score) == ("exact", "PC 16:0/18:1", 1.0)


def test_several_species_candidates_give_the_component_the_most_significant_one() -> None:
    features = [
        _measured("PC 16:0/18:1", 0.5, 0.04),
        _measured("PC 18:0/16:1", -2.0, 0.0001),
        _measured("PC 14:0/20:1", 3.0, 0.5),
    ]
    result = score_signature([_component("PC 34:1", "up")], features)
    assert result is not None
    assert result.details[0]["feature"] == "PC 18:0/16:1"
    assert result.score == 0.0


def test_exact_and_species_matches_together_are_mixed() -> None:
    components = [_component("PC 16:0/18:1"), _component("PE 34:1")]
    result = score_signature(components, [_measured("PC 16:0/18:1"), _measured("PE 16:0/18:1")])
    assert result is not None
    assert result.match_level == "mixed"


def test_lipids_of_the_same_class_but_another_species_do_not_match() -> None:
    # The earlier system fell back to "same class, first species found"; that inflated overlap.
    components = [_component("Cer(d18:1/24:0)")]
    assert score_signature(components, [_measured("Cer(d18:1/16:0)")]) is None


def test_matching_stays_within_one_feature_type() -> None:
    components = [_component("TP53", feature_type="gene")]
    assert score_signature(components, [_measured("TP53", feature_type="protein")]) is None
    result = score_signature(components, [_measured("tp53", feature_type="gene")])
    assert result is not None
    assert result.match_level == "exact"


def test_an_invalid_component_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="direction"):
        score_signature([_component("PC 34:1", "sideways")], [_measured("PC 34:1")])
    with pytest.raises(ValueError, match="weight"):
        score_signature([_component("PC 34:1", weight=0.0)], [_measured("PC 34:1")])


# --- #13: matching never merges two molecules ------------------------------------------------------------------


def test_two_molecular_species_with_the_same_sum_do_not_match() -> None:
    # Before #13, "PC 16:0/18:1" took "PC 16:1_18:0" (same PC 34:1); both are known at molecular level.
    assert score_signature([_component("PC 16:0/18:1", "up")], [_measured("PC 16:1_18:0", 2.0, 0.001)]) is None


def test_a_ceramide_never_matches_a_dihydroceramide_of_the_same_sum() -> None:
    assert score_signature([_component("Cer(d18:1/24:0)", "up")], [_measured("Cer(d18:0/24:1)", 2.0, 0.001)]) is None


def test_the_same_chains_at_two_levels_of_detail_match_at_molecular_level() -> None:
    result = score_signature([_component("PC 16:0/18:1(9Z)", "up")], [_measured("PC 18:1_16:0", 2.0, 0.001)])
    assert result is not None
    assert (result.match_level, result.score) == ("molecular", 1.0)


def test_the_most_specific_candidate_is_taken_before_the_strongest() -> None:
    features = [_measured("PC 34:1", -3.0, 1e-9), _measured("PC 16:0_18:1", 1.0, 0.01)]
    result = score_signature([_component("PC 16:0/18:1", "up")], features)
    assert result is not None
    assert (result.details[0]["feature"], result.details[0]["level"], result.score) == (
        "PC 16:0_18:1",
        "molecular",
        1.0,
    )


def test_a_dataset_with_none_of_the_signatures_molecules_does_not_match() -> None:
    components = [_component(name, "up") for name in ("PC 16:0/18:1", "PE 18:0/20:4", "Cer(d18:1/24:0)")]
    features = [_measured("PC 16:1_18:0"), _measured("PE 16:0_22:4"), _measured("Cer(d18:0/24:1)")]
    assert score_signature(components, features) is None


def test_one_dataset_feature_satisfies_at_most_one_component() -> None:
    # PC 34:1 (species only) is the species of both components; it may count for one of them, not both.
    components = [_component("PC 16:0/18:1", "up"), _component("PC 18:0/16:1", "down")]
    result = score_signature(components, [_measured("PC 34:1", 2.0, 0.001)], ScoringOptions(overlap_threshold=0.1))
    assert result is not None
    assert result.matched_components == 1
    assert len({str(d["feature"]) for d in result.details}) == len(result.details)


def test_an_exact_match_of_a_later_component_is_not_taken_by_an_earlier_species_match() -> None:
    components = [_component("PC 34:1", "up"), _component("PC 16:0/18:1", "up")]
    result = score_signature(components, [_measured("PC 16:0/18:1", 2.0, 0.001)], ScoringOptions(overlap_threshold=0.1))
    assert result is not None
    assert [(d["component"], d["level"]) for d in result.details] == [("PC 16:0/18:1", "exact")]


def test_duplicate_components_are_refused() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        score_signature([_component("PC 34:1", "up"), _component("PC(34:1)", "up")], [_measured("PC 34:1")])


def test_a_missing_p_value_is_never_more_lenient_than_a_non_significant_one() -> None:
    component = [_component("PC 34:1", "up")]
    missing = score_signature(component, [_measured("PC 34:1", 2.0, None)])
    not_significant = score_signature(component, [_measured("PC 34:1", 2.0, 0.06)])
    assert missing is not None
    assert not_significant is not None
    # The rule is "no evidence" for both: exactly the score of a non-significant change, never more.
    assert (missing.score, not_significant.score) == (0.5, 0.5)
    assert missing.details[0]["dataset_direction"] is None


def test_labelled_internal_standards_are_never_evidence() -> None:
    standard = normalize("PC 15:0_18:1(d7)", "lipid")
    assert "heavy_label" in standard.external_ids
    measured = MeasuredFeature("lipid", standard.normalized_name, standard.species_name, 2.0, 0.001, is_standard=True)
    component = ComponentInput("lipid", standard.normalized_name, standard.species_name, "std", "up", 1.0)
    assert score_signature([component], [measured]) is None
    endogenous = [_component("PC 15:0_18:1", "up")]
    assert score_signature(endogenous, [measured]) is None


def test_a_species_feature_taken_by_one_component_is_not_offered_to_one_of_the_opposite_direction() -> None:
    # Before #13 "PC 34:1" counted +1 for the up component and -1 for the down one (or twice +1 the other way round).
    components = [_component("PC 16:0/18:1", "up"), _component("PC 18:0/16:1", "down")]
    result = score_signature(components, [_measured("PC 34:1", 2.0, 0.001)], ScoringOptions(overlap_threshold=0.1))
    assert result is not None
    assert [(d["component"], d["value"]) for d in result.details] == [("PC 16:0/18:1", 1.0)]
    assert result.score == 0.75  # (1 + 0) / 2 weights, mapped to [0, 1]


def test_a_species_only_component_takes_a_molecular_species_of_the_dataset() -> None:
    result = score_signature([_component("Cer 42:1;O2", "down")], [_measured("Cer(d18:0/24:1)", -1.0, 0.01)])
    assert result is not None
    assert (result.match_level, result.score) == ("species", 1.0)


def test_two_signature_lipids_at_molecular_level_never_meet_at_species_level_in_either_direction() -> None:
    component = [_component("PC 16:1_18:0", "up")]
    assert score_signature(component, [_measured("PC 16:0/18:1", 2.0, 0.001)]) is None
