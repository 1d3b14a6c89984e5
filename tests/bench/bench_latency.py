"""Commit → outbox latency (``make bench-latency``): how long a committed change takes to become a committed
outbox row, at a steady rate, with the replicator's default settings; ``pg_recvlogical``'s commit → receive
latency on the same stream is the floor.

A throwaway cluster (tests.pgcluster) runs with ``track_commit_timestamp = on``, so the server stamps every
transaction with its commit time. For each run (``--runs``, 3 by default), a fresh database is migrated and two
wal2json slots are created; on one, ``pg_recvlogical`` writes the stream to a pipe that this process reads, noting
when each commit record arrives; on the other, the replicator's source (a child process, ``SourceOptions`` built
from the ``Settings`` defaults, one sink name, no workers) writes outbox rows. A writer then commits transactions
of ``--rows`` dataset inserts at a steady rate (each rate in ``--rates`` for ``--seconds``), on a fixed schedule
(a late transaction is not made up for by a burst). Every inserted row is a new document, so it gets exactly one
outbox row, written once. Measured, for every row: its outbox row's commit time − its own commit time (both the
server's ``pg_xact_commit_timestamp``, on the same clock); for the floor, the time ``pg_recvlogical`` delivered
its transaction's commit record − the commit time wal2json reports. Printed per rate: p50 / p99 / max of each,
then over the runs median [min–max]; also as ``FIGURE`` lines for ``make bench`` (tests/bench/report.py).

    python -m tests.bench.bench_latency [--runs 3] [--rates 2000,5000,10000] [--seconds 10] [--rows 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson
import psycopg

from replicator.config import Settings
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.source import SourceLoop, SourceOptions, create_slot, stream_tables
from schema.migrate import upgrade
from tests.bench.bench_source import RECV_OPTIONS
from tests.bench.report import Spread, figure
from tests.pgcluster import PgCluster, free_port, pg_bindir

SINK = "bench"


def default_options(slot: str) -> SourceOptions:
    """What ``replicator run`` would use, with every source setting at its default."""
    fields = Settings.model_fields
    return SourceOptions(
        slot=slot,
        sinks=(SINK,),
        batch_max_changes=fields["batch_max_changes"].default,
        batch_max_wait_ms=fields["batch_max_wait_ms"].default,
        heartbeat_interval_s=fields["heartbeat_interval_s"].default,
        shutdown_deadline_s=fields["shutdown_deadline_s"].default,
    )


def child_source(url: str, slot: str) -> None:
    """In the child: stream the slot into the outbox until stdin closes."""
    stop = threading.Event()
    loop = SourceLoop(url, default_options(slot), metrics=Metrics(), policy=BackoffPolicy())
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    sys.stdin.read()
    stop.set()
    thread.join()


class Receiver(threading.Thread):
    """Reads pg_recvlogical's output; for each commit record of a transaction that inserted datasets, notes
    (receive time − commit time) once per inserted row."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.samples: list[tuple[float, float]] = []  # (commit time, latency ms), one per row

    def run(self) -> None:
        rows = 0
        for line in self.out:
            received = time.time()
            record = orjson.loads(line)
            action = record.get("action")
            if action == "B":
                rows = 0
            elif action == "I" and record.get("table") == "dataset":
                rows += 1
            elif action == "C" and rows:
                committed = _epoch(record["timestamp"])
                self.samples.extend([(committed, (received - committed) * 1000.0)] * rows)


def _epoch(text: str) -> float:
    """wal2json's commit timestamp (``2026-12-02 16:17:02.176922+00``) as Unix time."""
    return dt.datetime.fromisoformat(text).timestamp()


def write_steadily(url: str, rate: float, seconds: float, rows: int, prefix: str) -> tuple[float, float, int]:
    """Commit ``rows``-row insert transactions at ``rate`` rows/s for ``seconds``; returns (start, end, rows
    written)."""
    interval = rows / rate
    count = int(seconds / interval)
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.time()
        for i in range(count):
            due = started + i * interval
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            conn.execute(
                "INSERT INTO dataset (natural_key, name, omics_type) "
                "SELECT %s || g, 'latency', 'lipidomics' FROM generate_series(1, %s) g",
                (f"{prefix}{i}-", rows),
            )
        ended = time.time()
    return started, ended, count * rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Results = dict[float, dict[str, float]]  # rate → figure → value


def one_run(cluster: PgCluster, run: int, rates: list[float], seconds: float, rows: int) -> Results:
    name = f"latency_{run}"
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # our constant name
    url = cluster.url_for(name)
    upgrade(url)
    recv_slot, our_slot = f"recv_{run}", f"replicator_{run}"  # slot names are server-wide
    with psycopg.connect(url, autocommit=True) as conn:
        create_slot(conn, recv_slot)
        create_slot(conn, our_slot)
    options = [f"--option={k}={v}" for k, v in {**RECV_OPTIONS, "add-tables": ",".join(stream_tables())}.items()]
    command = [str(pg_bindir() / "pg_recvlogical"), "--dbname", url, "--slot", recv_slot, "--start", "--file", "-"]
    recv = subprocess.Popen([*command, *options], stdout=subprocess.PIPE)
    assert recv.stdout is not None
    receiver = Receiver(recv.stdout)
    receiver.start()
    source = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_latency", "--source", url, our_slot], stdin=subprocess.PIPE
    )
    results: Results = {}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            _wait(lambda: _slot_active(conn, our_slot) and _slot_active(conn, recv_slot), "both readers")
            time.sleep(1.0)
            phases = []
            for rate in rates:
                prefix = f"lat{int(rate)}-"
                phases.append((rate, prefix, *write_steadily(url, rate, seconds, rows, prefix)))
            end_lsn = _current_lsn(conn)
            _wait(lambda: _confirmed(conn, our_slot) >= end_lsn, "the source to confirm the writes")
            time.sleep(1.0)
            for rate, prefix, started, ended, written in phases:
                achieved = written / (ended - started)
                ours = [
                    float(r[0])
                    for r in conn.execute(
                        "SELECT 1000 * extract(epoch FROM pg_xact_commit_timestamp(o.xmin) "
                        "- pg_xact_commit_timestamp(d.xmin)) "
                        "FROM dataset d JOIN replicator.outbox o ON o.entity = 'dataset' AND o.entity_id = d.id "
                        "WHERE d.natural_key LIKE %s",
                        (prefix + "%",),
                    ).fetchall()
                ]
                floor = [ms for committed, ms in receiver.samples if started <= committed <= ended]
                if len(ours) != written or len(floor) != written:
                    raise SystemExit(f"rate {rate:g}: {written} rows, {len(ours)} outbox rows, {len(floor)} received")
                results[rate] = {
                    "achieved": achieved,
                    "p50": percentile(ours, 0.50),
                    "p99": percentile(ours, 0.99),
                    "max": max(ours),
                    "floor_p50": percentile(floor, 0.50),
                    "floor_p99": percentile(floor, 0.99),
                }
                r = results[rate]
                print(
                    f"run {run} at {rate:>6,.0f} changes/s (achieved {achieved:,.0f}): commit -> outbox p50 "
                    f"{r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms; pg_recvlogical commit -> "
                    f"receive p50 {r['floor_p50']:.1f} ms, p99 {r['floor_p99']:.1f} ms",
                    flush=True,
                )
    finally:
        assert source.stdin is not None
        source.stdin.close()
        source.wait(60)
        recv.terminate()
        recv.wait(30)
    return results


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _slot_active(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> bool:
    row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return bool(row and row[0])


def _confirmed(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> int:
    row = conn.execute(
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    return int(str(row[0])) if row and row[0] is not None else 0


def _current_lsn(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
    assert row is not None
    return int(str(row[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_latency")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="2000,5000,10000", help="changes/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each rate")
    parser.add_argument("--rows", type=int, default=50, help="rows per transaction")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    tmp = Path(tempfile.mkdtemp(prefix="omics-cdc-latency-"))
    cluster = PgCluster(tmp / "data", free_port())
    print("starting a throwaway cluster (track_commit_timestamp = on) …", flush=True)
    cluster.init()
    with (cluster.datadir / "postgresql.conf").open("a") as conf:
        conf.write("track_commit_timestamp = on\n")
    cluster.start()
    try:
        runs = [one_run(cluster, run, rates, args.seconds, args.rows) for run in range(1, args.runs + 1)]
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"over {args.runs} run(s), median [min–max]:")
    for rate in rates:
        spread = {k: Spread.of([run[rate][k] for run in runs]) for k in runs[0][rate]}
        print(
            f"  {rate:>6,.0f} changes/s: commit -> outbox p50 {spread['p50'].format(1)} ms, "
            f"p99 {spread['p99'].format(1)} ms, max {spread['max'].format(1)} ms; "
            f"pg_recvlogical p50 {spread['floor_p50'].format(1)} ms, p99 {spread['floor_p99'].format(1)} ms"
        )
        label = f"{rate:g}"
        figure(f"commit->outbox p50 at {label}/s", spread["p50"].median, "ms", baseline=spread["floor_p50"].median)
        figure(
            f"commit->outbox p99 at {label}/s",
            spread["p99"].median,
            "ms",
            baseline=spread["floor_p99"].median,
            goal="<= 10",
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--source":
        child_source(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
