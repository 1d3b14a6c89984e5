"""Benchmark: ``ingest dataset`` of a transcriptomics table, next to ``psql \\copy`` of the same rows into a plain
table (the ceiling: no parsing, normalization, feature upsert, diff or scoring), in the same run.

    python -m tests.bench.bench_ingest [--rows 100000] [--runs 3]      (make bench-ingest)
    python -m tests.bench.bench_ingest --rows 1000000                   (the 10^6-row figure)

Each figure is ``--runs`` runs, printed as median [min–max]. ``ingest`` runs as a child process (the real CLI,
``python -m ingest dataset … --json``), into a fresh database each run; its peak memory is the child's own
``VmHWM`` from ``/proc/<pid>/status``, polled while it runs (the high-water mark only grows, so the last reading
before exit is the peak to within one polling interval), never the parent's ``ru_maxrss``. Also measured: a
re-ingest of the unchanged file (its rows changed must be 0), and a file whose last line is bad (time and memory
until the error, and that nothing was written).

Uses ``POSTGRES_URL`` when that server answers, otherwise starts a throwaway cluster (tests.pgcluster). Either way
it works in fresh databases that it creates, migrates and drops. Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql

from schema.migrate import upgrade
from tests.bench.report import figure
from tests.pgcluster import PgCluster, free_port, pg_bindir

POLL_SECONDS = 0.005


@contextmanager
def server() -> Iterator[str]:
    url = os.environ.get("POSTGRES_URL")
    if url:
        try:
            with psycopg.connect(url, connect_timeout=3):
                pass
            yield url
            return
        except psycopg.OperationalError:
            print(f"POSTGRES_URL does not answer; starting a throwaway cluster instead ({url.split('@')[-1]})")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    cluster = PgCluster(tmp / "data", free_port())
    cluster.init()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def url_for(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def write_table(path: Path, rows: int, seed: int = 7, bad_last_line: bool = False) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        out.write("gene,log2FC,pvalue\n")
        for i in range(rows):
            pvalue = "oops" if bad_last_line and i == rows - 1 else f"{rng.random():.6g}"
            out.write(f"GENE{i:06d},{rng.gauss(0, 1.5):.6f},{pvalue}\n")


def psql_binary() -> str:
    found = shutil.which("psql")
    return found if found else str(pg_bindir() / "psql")


@dataclass(frozen=True)
class Child:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: bytes
    stderr: bytes


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None  # a zombie has no memory lines


def run_child(argv: Sequence[str]) -> Child:
    """Run ``argv``, timing it and polling its own VmHWM until it exits."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        peak = 0
        while proc.poll() is None:
            hwm = _vm_hwm_kb(proc.pid)
            if hwm is not None:
                peak = max(peak, hwm)
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Child(seconds, peak / 1024, proc.returncode, out.read(), err.read())


def ingest_argv(table: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ingest",
        "dataset",
        str(table),
        "--omics-type",
        "transcriptomics",
        "--db",
        url,
        "--json",
    ]


def _fresh_database(admin_url: str) -> tuple[str, str]:
    dbname = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = url_for(admin_url, dbname)
    upgrade(url)
    return dbname, url


def _drop(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def _write_seconds(child: Child) -> float:
    """The first ingest's "writing" phase (staging COPY, feature and link statements, scoring, commit) from the
    summary's ``phases``: the part of its time that the server's work bounds."""
    phases = orjson.loads(child.stdout)["phases"]
    return float(sum(p["seconds"] for p in phases if p["phase"] == "writing"))


def _rows_changed(child: Child) -> int:
    if child.returncode != 0:
        raise SystemExit(f"ingest failed ({child.returncode}): {child.stderr.decode(errors='replace')[-2000:]}")
    summary = orjson.loads(child.stdout)
    return int(summary["rows_changed"])


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ours: list[Child] = []
    again: list[Child] = []
    bad: list[Child] = []
    ceiling: list[float] = []
    changed_first: list[int] = []
    changed_again: list[int] = []
    bad_wrote: list[int] = []
    with server() as admin_url, tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "bench_transcriptomics.csv"
        write_table(table, args.rows)
        bad_table = Path(tmp) / "bench_transcriptomics_bad_last_line.csv"
        write_table(bad_table, args.rows, bad_last_line=True)
        for run in range(args.runs):
            dbname, url = _fresh_database(admin_url)
            try:
                first = run_child(ingest_argv(table, url))
                changed_first.append(_rows_changed(first))
                ours.append(first)
                second = run_child(ingest_argv(table, url))
                changed_again.append(_rows_changed(second))
                again.append(second)

                failed = run_child(ingest_argv(bad_table, url))
                if failed.returncode != 2:
                    raise SystemExit(f"the bad file was not refused as bad input: {failed.stderr.decode()[-500:]}")
                bad.append(failed)
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM dataset WHERE natural_key LIKE '%bad_last_line%'"
                    ).fetchone()
                    bad_wrote.append(int(row[0]) if row else 0)

                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(
                        f"CREATE TABLE copy_ceiling_{run} (gene text, log2fc double precision, pvalue double precision)"
                    )
                copy_start = time.perf_counter()
                subprocess.run(
                    [
                        psql_binary(),
                        url,
                        "-q",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-c",
                        f"\\copy copy_ceiling_{run} FROM '{table}' CSV HEADER",
                    ],
                    check=True,
                )
                ceiling.append(time.perf_counter() - copy_start)
            finally:
                _drop(admin_url, dbname)
            print(f"run {run + 1}/{args.runs}: ingest {first.seconds:.2f} s, \\copy {ceiling[-1]:.2f} s", flush=True)
            figure(
                "ingest rate", args.rows / first.seconds, "rows/s", baseline=args.rows / ceiling[-1], goal=">= 0.15x"
            )
            figure("ingest peak RSS (VmHWM)", first.peak_rss_mb, "MB", goal="<= 300")

    rows = args.rows
    print(f"\nrows: {rows:,}; {args.runs} runs, median [min–max]; each ingest a child process, fresh database per run")
    print(f"rows changed by the first ingest   : {changed_first}")
    seconds = [c.seconds for c in ours]
    print(f"ingest dataset (CLI), wall         : {spread(seconds)} s")
    print(f"ingest dataset, rows/s             : {spread([rows / s for s in seconds], '{:,.0f}')}")
    print(f"ingest dataset, peak RSS (VmHWM)   : {spread([c.peak_rss_mb for c in ours], '{:.0f}')} MB")
    print(
        f"re-ingest unchanged                : {spread([c.seconds for c in again])} s, "
        f"peak {spread([c.peak_rss_mb for c in again], '{:.0f}')} MB; rows changed {changed_again}"
    )
    print(
        f"bad last line, until the error     : {spread([c.seconds for c in bad])} s, "
        f"peak {spread([c.peak_rss_mb for c in bad], '{:.0f}')} MB; datasets written {bad_wrote}"
    )
    print(f"  the error: {bad[0].stderr.decode(errors='replace').strip()[:300]}")
    print(f"psql \\copy ceiling                 : {spread(ceiling)} s")
    print(f"psql \\copy rows/s                  : {spread([rows / s for s in ceiling], '{:,.0f}')}")
    ratios = [c / s for c, s in zip(ceiling, seconds, strict=True)]
    print(f"ingest rate / \\copy rate (per run) : {spread(ratios, '{:.3f}')}  (goal ≥ 0.15 at 100k rows)")
    writing = [_write_seconds(c) for c in ours]
    print(f"  of which the writing phase       : {spread(writing)} s")
    bound = [c / w for c, w in zip(ceiling, writing, strict=True)]
    print(f"  the ratio if reading took no time: {spread(bound, '{:.3f}')}")


if __name__ == "__main__":
    main()
