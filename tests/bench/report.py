"""``make bench``: runs every benchmark (``BENCHES``), each ``--runs`` times (3 by default: the figures are quoted
as median [min–max]), passes their human output through, and prints one table: figure, value, baseline measured
in the same run, ratio value/baseline, goal, and whether the median meets it.

A benchmark reports a figure by printing one machine-readable line besides its human output, through
``figure()``::

    FIGURE {"name": "source rate", "value": 61000, "unit": "records/s", "baseline": 70000, "goal": ">= 0.9x"}

``goal`` is ``">= N"`` / ``"<= N"`` on the value, or with a trailing ``x`` on the ratio to the baseline
(``">= 0.9x"``). Adding a benchmark is one line in ``BENCHES`` (its module must print ``FIGURE`` lines); adding a
figure to an existing one is one ``figure(...)`` call. Memory figures use ``vm_hwm_mb()``: the peak RSS of the
process that did the work (``VmHWM`` in ``/proc/<pid>/status``, reset at exec), never ``ru_maxrss``, which a child
inherits from its parent.

    python -m tests.bench.report [--runs 3] [--only source,ingest]
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

PREFIX = "FIGURE "


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    args: tuple[str, ...] = ()


BENCHES: tuple[Bench, ...] = (
    Bench("source", "tests.bench.bench_source"),
    Bench("latency", "tests.bench.bench_latency", ("--runs", "1")),
    Bench("claim", "tests.bench.bench_claim", ("--runs", "1")),
    Bench("ingest", "tests.bench.bench_ingest", ("--runs", "1")),
    Bench("pinecone", "tests.bench.bench_sinks"),
    Bench("notion", "tests.bench.bench_notion"),
    Bench("embedder", "tests.bench.bench_embedder", ("--runs", "1")),
)


# ---- what a benchmark calls --------------------------------------------------------------------------------------


def figure(name: str, value: float, unit: str, *, baseline: float | None = None, goal: str | None = None) -> None:
    """Print one ``FIGURE`` line (flushed, so it interleaves correctly with the human output)."""
    if goal is not None:
        parse_goal(goal)  # a typo fails in the benchmark, not in the table
    record: dict[str, Any] = {"name": name, "value": value, "unit": unit, "baseline": baseline, "goal": goal}
    print(PREFIX + orjson.dumps(record).decode(), flush=True)


def vm_hwm_mb(pid: int | str = "self") -> float:
    """Peak resident set size of process ``pid`` in MB, from ``VmHWM`` in ``/proc/<pid>/status`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


# ---- parsing and aggregation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    goal: str | None = None

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def format(self, digits: int) -> str:
        text = _number(self.median, digits)
        if self.runs > 1:
            text += f" [{_number(self.low, digits)}–{_number(self.high, digits)}]"
        return text


@dataclass(frozen=True)
class Row:
    name: str
    unit: str
    value: Spread
    baseline: Spread | None
    ratio: Spread | None
    goal: str | None

    @property
    def met(self) -> bool | None:
        """Whether the median meets the goal (None: no goal, or a ratio goal without a baseline)."""
        if self.goal is None:
            return None
        op, target, on_ratio = parse_goal(self.goal)
        if on_ratio and self.ratio is None:
            return None
        measured = self.ratio.median if on_ratio and self.ratio is not None else self.value.median
        return measured >= target if op == ">=" else measured <= target


def parse_goal(goal: str) -> tuple[str, float, bool]:
    """``">= 0.9x"`` → (">=", 0.9, True); ``"<= 400"`` → ("<=", 400.0, False)."""
    text = goal.strip()
    op = text[:2]
    if op not in (">=", "<="):
        raise ValueError(f"goal {goal!r} must start with >= or <=")
    number = text[2:].strip()
    on_ratio = number.endswith("x")
    try:
        target = float(number.removesuffix("x"))
    except ValueError:
        raise ValueError(f"goal {goal!r}: {number!r} is not a number (with an optional trailing x)") from None
    return op, target, on_ratio


def parse_figures(output: str, *, source: str = "output") -> list[Figure]:
    """The ``FIGURE`` lines of one benchmark run; a malformed one raises naming its line."""
    figures = []
    for number, line in enumerate(output.splitlines(), start=1):
        if not line.startswith(PREFIX):
            continue
        try:
            raw = orjson.loads(line[len(PREFIX) :])
            figures.append(
                Figure(
                    name=str(raw["name"]),
                    value=float(raw["value"]),
                    unit=str(raw["unit"]),
                    baseline=None if raw.get("baseline") is None else float(raw["baseline"]),
                    goal=raw.get("goal"),
                )
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source} line {number}: bad FIGURE line ({error}): {line}") from None
    return figures


def aggregate(runs: list[list[Figure]]) -> list[Row]:
    """One row per figure name (in first-seen order) over all runs: median [min–max] of the value, the baseline
    and the per-run ratio."""
    by_name: dict[str, list[Figure]] = {}
    for run in runs:
        for fig in run:
            by_name.setdefault(fig.name, []).append(fig)
    rows = []
    for name, figs in by_name.items():
        baselines = [f.baseline for f in figs if f.baseline is not None]
        ratios = [r for f in figs if (r := f.ratio) is not None]
        rows.append(
            Row(
                name=name,
                unit=figs[0].unit,
                value=Spread.of([f.value for f in figs]),
                baseline=Spread.of(baselines) if baselines else None,
                ratio=Spread.of(ratios) if ratios else None,
                goal=figs[0].goal,
            )
        )
    return rows


def _number(value: float, digits: int) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def format_table(rows: list[Row]) -> str:
    header = ("figure", "value", "baseline", "ratio", "goal", "met")
    cells = [
        (
            row.name,
            f"{row.value.format(2)} {row.unit}",
            f"{row.baseline.format(2)} {row.unit}" if row.baseline else "",
            row.ratio.format(2) if row.ratio else "",
            row.goal or "",
            {True: "yes", False: "NO", None: ""}[row.met],
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *cells]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---- running -----------------------------------------------------------------------------------------------------


def run_bench(bench: Bench) -> list[Figure]:
    """Run one benchmark once, echoing its output, and return its figures."""
    command = [sys.executable, "-m", bench.module, *bench.args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if not line.startswith(PREFIX):
            print(f"[{bench.name}] {line}", end="", flush=True)
    if process.wait() != 0:
        raise SystemExit(f"bench {bench.name} ({' '.join(command)}) exited {process.returncode}")
    return parse_figures("".join(lines), source=bench.module)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.report")
    parser.add_argument("--runs", type=int, default=3, help="runs of each benchmark (figures: median [min–max])")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(b.name for b in BENCHES)}")
    args = parser.parse_args(argv)
    wanted = {name for name in args.only.split(",") if name}
    unknown = wanted - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown bench(es) {', '.join(sorted(unknown))}")
    rows: list[Row] = []
    for bench in BENCHES:
        if wanted and bench.name not in wanted:
            continue
        runs = []
        for run in range(1, args.runs + 1):
            print(f"== {bench.name}: run {run} of {args.runs}", flush=True)
            runs.append(run_bench(bench))
        rows.extend(aggregate(runs))
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
