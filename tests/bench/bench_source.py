"""Source benchmark (``make bench-source``): how fast the replicator reads wal2json compared with
``pg_recvlogical``, on the same changes in the same run.

A throwaway cluster (tests.pgcluster) is migrated to head; two wal2json slots are created; the workload of
reference/wal2json-workload.sql, adapted to our schema (50k dataset inserts and 150k dataset_feature inserts in
1,000-row transactions, 50k dataset updates, 10k dataset_feature deletes: ~260k wal2json records), is written
once. Then, one after the other, ``pg_recvlogical`` reads slot 1 to /dev/null and the replicator's source (in a
child process, whose own peak RSS is its ``VmHWM``: ``ru_maxrss`` would carry the parent's high-water
mark into the child) reads slot 2 up to committed outbox rows (one sink name, no workers).
Both use the same wal2json options. Printed: both rates (wal2json records/s), their ratio and the peak RSS,
also as ``FIGURE`` lines for ``make bench`` (tests/bench/report.py).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psycopg

from replicator.changes import format_lsn
from replicator.metrics import Metrics
from replicator.source import SourceLoop, SourceOptions, create_slot, stream_tables
from schema.migrate import upgrade
from tests.bench.report import figure, vm_hwm_mb
from tests.pgcluster import PgCluster, free_port, pg_bindir

DATASETS = 50_000
FEATURES = 1_000
LINK_TXNS = 150
UPDATES = 50_000
DELETES = 10_000
TXN = 1_000

WORKLOAD = f"""
DO $$
DECLARE i int;
BEGIN
FOR i IN 1..{DATASETS // TXN} LOOP
  INSERT INTO dataset (natural_key, name, omics_type, description)
  SELECT 'ds-' || i || '-' || g, 'ds-' || i || '-' || g, 'lipidomics', repeat('desc ', 20)
  FROM generate_series(1, {TXN}) g;
  COMMIT;
END LOOP;
FOR i IN 1..{LINK_TXNS} LOOP
  INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change)
  SELECT d.id, f.id, f.name, random()
  FROM (SELECT id FROM dataset ORDER BY natural_key OFFSET (i - 1) * 333 LIMIT 1) d,
       (SELECT id, name FROM feature ORDER BY normalized_name LIMIT {TXN}) f;
  COMMIT;
END LOOP;
FOR i IN 1..{UPDATES // TXN} LOOP
  UPDATE dataset SET description = 'upd ' || i
  WHERE id IN (SELECT id FROM dataset ORDER BY natural_key OFFSET (i - 1) * {TXN} LIMIT {TXN});
  COMMIT;
END LOOP;
FOR i IN 1..{DELETES // TXN} LOOP
  DELETE FROM dataset_feature WHERE (dataset_id, feature_id) IN (
    SELECT dataset_id, feature_id FROM dataset_feature ORDER BY dataset_id, feature_id LIMIT {TXN});
  COMMIT;
END LOOP;
END $$;
"""
ROW_CHANGES = DATASETS + LINK_TXNS * TXN + UPDATES + DELETES
TRANSACTIONS = (DATASETS + UPDATES + DELETES) // TXN + LINK_TXNS
RECORDS = ROW_CHANGES + 2 * TRANSACTIONS  # plus B and C records

RECV_OPTIONS = {
    "format-version": "2",
    "include-lsn": "1",
    "include-xids": "1",
    "include-pk": "1",
    "include-timestamp": "1",
    "include-transaction": "1",
}


def read_with_pg_recvlogical(url: str, slot: str, endpos: int) -> float:
    options = [f"--option={k}={v}" for k, v in {**RECV_OPTIONS, "add-tables": ",".join(stream_tables())}.items()]
    command = [
        str(pg_bindir() / "pg_recvlogical"),
        "--dbname",
        url,
        "--slot",
        slot,
        "--start",
        "--no-loop",
        "--endpos",
        format_lsn(endpos),
        "--file",
        "/dev/null",
        *options,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def read_with_replicator(url: str, slot: str, endpos: int) -> dict[str, float]:
    """In a child process: stream the slot into the outbox until the server confirms ``endpos``."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench_source", "--read", url, slot, str(endpos)],
        check=True,
        capture_output=True,
    )
    result: dict[str, float] = orjson.loads(out.stdout.splitlines()[-1])
    return result


def child_read(url: str, slot: str, endpos: int) -> None:
    stop = threading.Event()
    loop = SourceLoop(url, SourceOptions(slot=slot, sinks=("bench",), heartbeat_interval_s=30.0), metrics=Metrics())
    started = time.perf_counter()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    while loop.confirmed_lsn < endpos:
        if not thread.is_alive():
            raise SystemExit("the source stopped before reaching the end of the workload")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    print(
        orjson.dumps(
            {"seconds": elapsed, "changes": loop.changes, "batches": loop.batches, "peak_mb": vm_hwm_mb()}
        ).decode()
    )


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="omics-cdc-bench-"))
    cluster = PgCluster(tmp / "data", free_port())
    print("starting a throwaway cluster …", flush=True)
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = cluster.url_for("bench")
        upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO feature (feature_type, normalized_name, name) "
                "SELECT 'lipid', 'cer(d18:1/' || g || ':0)', 'Cer(d18:1/' || g || ':0)' "
                f"FROM generate_series(1, {FEATURES}) g"
            )
            create_slot(conn, "bench_recv")
            create_slot(conn, "bench_replicator")
            print(f"writing the workload: {ROW_CHANGES:,} row changes in {TRANSACTIONS} transactions …", flush=True)
            started = time.perf_counter()
            conn.execute(WORKLOAD)
            write_s = time.perf_counter() - started
            row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
            assert row is not None
            endpos = int(row[0])
        recv_s = read_with_pg_recvlogical(url, "bench_recv", endpos)
        ours = read_with_replicator(url, "bench_replicator", endpos)
        with psycopg.connect(url, autocommit=True) as conn:
            outbox = conn.execute("SELECT count(*) FROM replicator.outbox").fetchone()
        recv_rate = RECORDS / recv_s
        our_rate = RECORDS / ours["seconds"]
        print(f"workload written in {write_s:.2f} s; {RECORDS:,} wal2json records ({ROW_CHANGES:,} row changes)")
        print(f"pg_recvlogical -> /dev/null : {recv_s:6.2f} s  {recv_rate:9,.0f} records/s")
        print(
            f"replicator -> outbox        : {ours['seconds']:6.2f} s  {our_rate:9,.0f} records/s  "
            f"({int(ours['changes']):,} row changes, {int(ours['batches'])} batches, "
            f"{outbox[0] if outbox else 0:,} outbox rows)"
        )
        print(f"ratio replicator / pg_recvlogical: {our_rate / recv_rate:.2f}  (aim: >= 0.5)")
        print(f"replicator peak RSS (VmHWM of the reading process): {ours['peak_mb']:.0f} MB")
        figure("source rate", our_rate, "records/s", baseline=recv_rate, goal=">= 0.9x")
        figure("source peak RSS", ours["peak_mb"], "MB")
        return 0
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_source")
    parser.add_argument("--read", nargs=3, metavar=("URL", "SLOT", "ENDPOS"))
    args = parser.parse_args()
    if args.read:
        child_read(args.read[0], args.read[1], int(args.read[2]))
        sys.exit(0)
    sys.exit(main())
