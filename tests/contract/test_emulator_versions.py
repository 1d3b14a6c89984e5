"""``tests.emulators.base.Versions`` and ``Faults``: the history lagged reads come from, and the knob checks."""

from __future__ import annotations

import pytest

from tests.emulators.base import MAX_READ_LAG_S, Faults, Versions


def test_a_lagged_read_sees_not_yet_created_then_each_version_then_deleted() -> None:
    versions: Versions[str] = Versions()
    versions.record("k", 10.0, "v1")
    versions.record("k", 20.0, "v2")
    versions.record("k", 30.0, None)

    assert versions.as_of("k", 9.9) == (True, None)  # not created yet
    assert versions.as_of("k", 10.0) == (True, "v1")
    assert versions.as_of("k", 25.0) == (True, "v2")
    assert versions.as_of("k", 31.0) == (True, None)  # deleted
    assert versions.as_of("other", 31.0) == (False, None)  # no history: the caller reads the current state


def test_versions_older_than_the_longest_lag_are_folded_into_one() -> None:
    versions: Versions[int] = Versions()
    for i in range(100):
        versions.record("k", float(i), i)
    versions.record("k", 99 + MAX_READ_LAG_S + 1, 100)

    assert versions.as_of("k", 99.0) == (True, 99)  # the newest version older than the horizon is kept
    assert versions.as_of("k", 50.0) == (True, None)


@pytest.mark.parametrize(
    "settings",
    [
        {"apply_then_fail_rate": -0.1},
        {"apply_then_fail_rate": 2},
        {"apply_then_fail_kinds": []},
        {"apply_then_fail_kinds": ["418"]},
        {"apply_then_fail_timeout_s": -1},
        {"read_lag_s": MAX_READ_LAG_S + 1},
        {"read_by_id_lag_s": -1},
        {"index_init_s": "soon"},
    ],
)
def test_bad_knob_values_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        Faults(**settings)  # type: ignore[arg-type]


def test_every_knob_is_off_by_default() -> None:
    faults = Faults()
    assert (faults.apply_then_fail_rate, faults.read_lag_s, faults.read_by_id_lag_s, faults.index_init_s) == (
        0,
        0,
        0,
        0,
    )
    assert faults.apply_then_fail_kinds == ["500", "503", "drop", "timeout"]
