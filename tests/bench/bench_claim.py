"""The claim query with a backlog (``make bench-claim``): ``claim_batch`` with 100,000 rows of one sink pending
(and as many of another), with ``ix_outbox_claim`` and, as the baseline in the same run, without it (dropped in a
transaction that is rolled back, so the planner can only scan and sort as before migration 0003).

Each timing is one claim of ``REPLICATOR_WORKER_BATCH``'s default (50 rows) in a transaction that is rolled back,
so every claim sees the same backlog; printed: the median and max of ``--repeat`` claims, also as ``FIGURE``
lines for ``make bench`` (tests/bench/report.py).

    python -m tests.bench.bench_claim [--runs 3] [--pending 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.store.queries import QUERIES
from schema.migrate import upgrade
from tests.bench.report import Spread, figure
from tests.pgcluster import PgCluster, free_port


def time_claims(conn: psycopg.Connection[Any], repeat: int, *, with_index: bool) -> list[float]:
    params = {
        "sink": "notion",
        "limit": Settings.model_fields["worker_batch_size"].default,
        "worker": "bench",
        "lease": 60.0,
        "settle": 1.0,
    }
    timings = []
    for _ in range(repeat):
        conn.execute("BEGIN")
        if not with_index:
            conn.execute("DROP INDEX replicator.ix_outbox_claim")
        started = time.perf_counter()
        claimed = conn.execute(QUERIES["claim_batch"], params).fetchall()
        timings.append((time.perf_counter() - started) * 1000.0)
        conn.execute("ROLLBACK")
        assert len(claimed) == params["limit"]
    return timings


def one_run(cluster: PgCluster, run: int, pending: int, repeat: int) -> dict[str, float]:
    name = f"claim_{run}"
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # our constant name
    url = cluster.url_for(name)
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # Two sinks' backlogs, enqueued over the last hour, all settled and due.
        conn.execute(
            "INSERT INTO replicator.outbox (sink, entity, entity_id, first_enqueued_at, last_enqueued_at) "
            "SELECT s, 'dataset', gen_random_uuid(), now() - interval '1 hour' + g * interval '30 ms', "
            "now() - interval '1 hour' + g * interval '30 ms' "
            "FROM unnest(array['notion', 'pinecone']) s, generate_series(1, %s) g",
            (pending,),
        )
        conn.execute("VACUUM ANALYZE replicator.outbox")
        indexed = time_claims(conn, repeat, with_index=True)
        scanned = time_claims(conn, repeat, with_index=False)
    result = {
        "median": statistics.median(indexed),
        "max": max(indexed),
        "median_without": statistics.median(scanned),
        "max_without": max(scanned),
    }
    print(
        f"run {run}: claim of 50 with {pending:,} pending: {result['median']:.2f} ms median, {result['max']:.2f} ms "
        f"max; without ix_outbox_claim {result['median_without']:.1f} ms median, {result['max_without']:.1f} ms max",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_claim")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="omics-cdc-claim-"))
    cluster = PgCluster(tmp / "data", free_port())
    cluster.init()
    cluster.start()
    try:
        runs = [one_run(cluster, run, args.pending, args.repeat) for run in range(1, args.runs + 1)]
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    spread = {k: Spread.of([run[k] for run in runs]) for k in runs[0]}
    print(
        f"over {args.runs} run(s), median [min–max]: claim {spread['median'].format(2)} ms "
        f"(without the index {spread['median_without'].format(1)} ms)"
    )
    figure(
        f"claim query, {args.pending:,} pending",
        spread["median"].median,
        "ms",
        baseline=spread["median_without"].median,
        goal="<= 20",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
