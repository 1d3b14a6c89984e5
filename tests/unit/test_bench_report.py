"""The ``make bench`` table (tests/bench/report.py): FIGURE lines are parsed, runs aggregate to median [min–max]
with the ratio to the same run's baseline, goals are judged on the median, and the daemon's own peak RSS is read
from ``/proc/<pid>/status``. No timing here: the benchmarks themselves are scripts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.bench.report import BENCHES, Figure, aggregate, format_table, parse_figures, parse_goal, vm_hwm_mb


def _line(name: str, value: float, baseline: float | None = None, goal: str | None = None) -> str:
    import orjson

    record = {"name": name, "value": value, "unit": "u", "baseline": baseline, "goal": goal}
    return "FIGURE " + orjson.dumps(record).decode()


def test_figure_lines_are_picked_out_of_the_human_output() -> None:
    output = "\n".join(["starting …", _line("rate", 90.0, 100.0, ">= 0.9x"), "ratio: 0.90", _line("rss", 50.0)])
    assert parse_figures(output) == [Figure("rate", 90.0, "u", 100.0, ">= 0.9x"), Figure("rss", 50.0, "u")]


def test_a_malformed_figure_line_names_its_line() -> None:
    with pytest.raises(ValueError, match="bench_x line 2: bad FIGURE line"):
        parse_figures('ok\nFIGURE {"name": "rate"}', source="bench_x")


def test_runs_aggregate_to_median_and_spread_with_per_run_ratios() -> None:
    runs = [
        [Figure("rate", 80.0, "r/s", 100.0, ">= 0.9x"), Figure("rss", 60.0, "MB", goal="<= 400")],
        [Figure("rate", 99.0, "r/s", 110.0, ">= 0.9x"), Figure("rss", 50.0, "MB", goal="<= 400")],
        [Figure("rate", 45.0, "r/s", 50.0, ">= 0.9x"), Figure("rss", 70.0, "MB", goal="<= 400")],
    ]
    rate, rss = aggregate(runs)
    assert (rate.value.median, rate.value.low, rate.value.high) == (80.0, 45.0, 99.0)
    assert rate.baseline is not None
    assert rate.baseline.median == 100.0
    # The ratio is taken per run (against that run's baseline), not as median value / median baseline.
    assert rate.ratio is not None
    assert (rate.ratio.median, rate.ratio.low, rate.ratio.high) == pytest.approx((0.9, 0.8, 0.9))
    assert rate.met is True
    assert (rss.value.median, rss.ratio, rss.met) == (60.0, None, True)


def test_goals_are_judged_on_the_median() -> None:
    slow = aggregate([[Figure("p99", v, "ms", goal="<= 1000")] for v in (900.0, 1200.0, 1500.0)])[0]
    assert slow.met is False
    no_goal = aggregate([[Figure("n", 1.0, "x")]])[0]
    assert no_goal.met is None
    no_baseline = aggregate([[Figure("r", 1.0, "x", goal=">= 2x")]])[0]
    assert no_baseline.met is None


def test_goal_syntax() -> None:
    assert parse_goal(">= 0.9x") == (">=", 0.9, True)
    assert parse_goal("<= 400") == ("<=", 400.0, False)
    with pytest.raises(ValueError, match="must start with"):
        parse_goal("0.9x")
    with pytest.raises(ValueError, match="not a number"):
        parse_goal(">= fast")


def test_the_table_has_one_row_per_figure_with_spread_ratio_and_verdict() -> None:
    runs = [
        [Figure("source rate", v, "records/s", b, ">= 0.9x")] for v, b in ((40e3, 80e3), (42e3, 70e3), (35e3, 70e3))
    ]
    table = format_table(aggregate(runs)).splitlines()
    assert table[0].split() == ["figure", "value", "baseline", "ratio", "goal", "met"]
    assert table[2].startswith("source rate")
    assert "40,000 [35,000–42,000] records/s" in table[2]
    assert "70,000 [70,000–80,000] records/s" in table[2]
    assert "0.50 [0.50–0.60]" in table[2]
    assert table[2].endswith("NO")


def test_every_registered_bench_is_a_module_that_exists() -> None:
    import importlib.util

    assert len({b.name for b in BENCHES}) == len(BENCHES)
    for bench in BENCHES:
        assert importlib.util.find_spec(bench.module) is not None, bench.module


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_vm_hwm_is_the_childs_own_peak_not_the_parents() -> None:
    ballast = bytearray(200 * 1024 * 1024)  # the parent's peak is now above 200 MB
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert vm_hwm_mb() > 200
    code = "from tests.bench.report import vm_hwm_mb; print(vm_hwm_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 150
    del ballast
