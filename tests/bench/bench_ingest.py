"""Benchmark: ``ingest dataset`` of a 100,000-feature transcriptomics table, next to ``psql \\copy`` of the same
rows into a plain table (the ceiling: no parsing, normalization, feature upsert, diff or scoring).

    python -m tests.bench.bench_ingest [--rows 100000]      (make bench-ingest)

Uses ``POSTGRES_URL`` when that server answers, otherwise starts a throwaway cluster (tests.pgcluster). Either way
it works in a fresh database that it creates, migrates and drops. Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from ingest.pipeline import DatasetOptions, connect, ingest_dataset, prepare_table_dataset
from ingest.scoring import ScoringOptions
from schema.migrate import upgrade
from tests.bench.report import figure, vm_hwm_mb
from tests.pgcluster import PgCluster, free_port, pg_bindir


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


def write_table(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        out.write("gene,log2FC,pvalue\n")
        for i in range(rows):
            out.write(f"GENE{i:06d},{rng.gauss(0, 1.5):.6f},{rng.random():.6g}\n")


def psql_binary() -> str:
    found = shutil.which("psql")
    return found if found else str(pg_bindir() / "psql")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with server() as admin_url, tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "bench_transcriptomics.csv"
        write_table(table, args.rows)
        dbname = f"bench_ingest_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        url = url_for(admin_url, dbname)
        try:
            upgrade(url)
            options = DatasetOptions(omics_type="transcriptomics")
            scoring = ScoringOptions()

            started = time.perf_counter()
            dataset, report = prepare_table_dataset(table, options)
            prepared = time.perf_counter()
            with connect(url) as conn:
                first = ingest_dataset(conn, dataset, scoring=scoring)
            written = time.perf_counter()

            again_start = time.perf_counter()
            dataset, _ = prepare_table_dataset(table, options)
            again_prepared = time.perf_counter()
            with connect(url) as conn:
                second = ingest_dataset(conn, dataset, scoring=scoring)
            again = time.perf_counter() - again_start
            again_write = time.perf_counter() - again_prepared

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE TABLE copy_ceiling (gene text, log2fc double precision, pvalue double precision)")
            copy_start = time.perf_counter()
            subprocess.run(
                [
                    psql_binary(),
                    url,
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    f"\\copy copy_ceiling FROM '{table}' CSV HEADER",
                ],
                check=True,
            )
            copy_seconds = time.perf_counter() - copy_start
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))

    rows = report.rows_read
    total = written - started
    print(
        f"rows: {rows:,} (features linked: {report.features:,}; rows changed by first ingest: {first.rows_changed:,})"
    )
    print(f"ingest dataset, read + normalize : {prepared - started:7.2f} s")
    print(f"ingest dataset, write + score    : {written - prepared:7.2f} s")
    print(f"ingest dataset, total            : {total:7.2f} s  {rows / total:>10,.0f} rows/s")
    print(
        f"re-ingest unchanged (no writes)  : {again:7.2f} s  (compare in Postgres {again_write:.2f} s); "
        f"rows changed: {second.rows_changed}"
    )
    print(f"psql \\copy ceiling               : {copy_seconds:7.2f} s  {rows / copy_seconds:>10,.0f} rows/s")
    ratio = total / copy_seconds
    print(f"ingest / ceiling                 : {1 / ratio:7.1%} of the \\copy rate ({ratio:.1f}x slower)")
    print(f"ingest peak RSS (VmHWM)          : {vm_hwm_mb():7.0f} MB")
    figure("ingest rate", rows / total, "rows/s", baseline=rows / copy_seconds, goal=">= 0.15x")
    figure("ingest peak RSS", vm_hwm_mb(), "MB", goal="<= 300")


if __name__ == "__main__":
    main()
