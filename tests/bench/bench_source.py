"""Source benchmark (``make bench-source``): how fast the replicator reads wal2json compared with
``pg_recvlogical``, on the same changes in the same run.

A throwaway cluster (tests.pgcluster) is started; for each workload a fresh database is migrated to head, its
setup rows are written, three wal2json slots are created, and the workload is written once. Then, one after the
other, ``pg_recvlogical`` reads slot 1 to /dev/null, the replicator's source (in a child process, whose own peak
RSS is its ``VmHWM``: ``ru_maxrss`` would carry the parent's high-water mark into the child) reads slot 2 up to
committed outbox rows (one sink name, no workers), and ``pg_recvlogical`` reads slot 3: the baseline is the mean
rate of its two reads, so neither reader gains from going first or from the machine's drift during the run. All
use the same wal2json options. The workloads:

- ``shipped``: reference/wal2json-workload.sql adapted to our schema (50k dataset inserts and 150k
  dataset_feature inserts in 1,000-row transactions, 50k dataset updates, 10k dataset_feature deletes: ~260k
  wal2json records);
- ``small``: 40,000 transactions of 1–3 dataset inserts or updates (a record in three is a B or C);
- ``wide``: 20,000 dataset rows with a 4 kB description and 20,000 dataset_feature rows with a 2 kB jsonb
  ``extra``, in 200-row transactions, then the datasets updated once;
- ``child``: 150,000 ``dataset_feature`` updates (statistics re-computed) in 1,000-row transactions;
- ``scale`` (only with ``--changes N``, not in the default run): N row changes on N/4 datasets — N/4 inserts,
  then three passes of updates over every one of them, in 1,000-row transactions (``--changes 1000000``: the
  issue's 1M-change run, 250,000 documents).

Printed per workload: both rates (wal2json records/s), their ratio; the replicator's CPU seconds while reading
(its process; its reader thread, and how much of that in the kernel; its outbox writer thread); the peak RSS;
what the outbox took (rows inserted / updated / HOT-updated by the source's writes, rows left, dead tuples left
right after the read, its size); also as ``FIGURE`` lines for ``make bench`` (tests/bench/report.py).

    python -m tests.bench.bench_source [--workloads shipped,small,wide,child] [--changes N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg

from replicator.changes import format_lsn
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.source import SourceLoop, SourceOptions, create_slot, stream_tables
from replicator.source.protocol import WAL2JSON_OPTIONS
from schema.migrate import upgrade
from tests.bench.report import figure, vm_hwm_mb
from tests.pgcluster import PgCluster, free_port, pg_bindir

DATASETS = 50_000
FEATURES = 1_000
FEATURE_SETUP = (
    "INSERT INTO feature (feature_type, normalized_name, name) "
    "SELECT 'lipid', 'cer(d18:1/' || g || ':0)', 'Cer(d18:1/' || g || ':0)' "
    f"FROM generate_series(1, {FEATURES}) g"
)
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
SMALL_TXNS = 40_000
SMALL_WORKLOAD = f"""
DO $$
DECLARE i int;
BEGIN
FOR i IN 1..{SMALL_TXNS} LOOP
  IF i % 2 = 1 OR i < 10 THEN
    INSERT INTO dataset (natural_key, name, omics_type, description)
    SELECT 'sm-' || i || '-' || g, 'sm ' || i, 'lipidomics', 'small' FROM generate_series(1, 1 + i % 3) g;
  ELSE
    UPDATE dataset SET name = 'sm upd ' || i
    WHERE natural_key IN (SELECT 'sm-' || (i - 1) || '-' || g FROM generate_series(1, 1 + i % 3) g);
  END IF;
  COMMIT;
END LOOP;
END $$;
"""

WIDE_ROWS = 20_000
WIDE_TXN = 200
WIDE_SETUP = """
INSERT INTO feature (feature_type, normalized_name, name)
SELECT 'lipid', 'wide(' || g || ')', 'Wide(' || g || ')' FROM generate_series(1, 100) g
"""
WIDE_WORKLOAD = f"""
DO $$
DECLARE i int;
BEGIN
FOR i IN 1..{WIDE_ROWS // WIDE_TXN} LOOP
  INSERT INTO dataset (natural_key, name, omics_type, description)
  SELECT 'wide-' || i || '-' || g, 'wide ' || i, 'lipidomics', repeat('a wide description é ', 190)
  FROM generate_series(1, {WIDE_TXN}) g;
  COMMIT;
  INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change, extra)
  SELECT d.id, f.id, f.name, random(), jsonb_build_object('note', repeat('x', 2000), 'i', i)
  FROM (SELECT id FROM dataset WHERE natural_key = 'wide-' || i || '-1') d,
       (SELECT id, name FROM feature ORDER BY normalized_name LIMIT 100) f;
  INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change, extra)
  SELECT d.id, f.id, f.name, random(), jsonb_build_object('note', repeat('y', 2000), 'i', i)
  FROM (SELECT id FROM dataset WHERE natural_key = 'wide-' || i || '-2') d,
       (SELECT id, name FROM feature ORDER BY normalized_name LIMIT 100) f;
  COMMIT;
END LOOP;
FOR i IN 1..{WIDE_ROWS // WIDE_TXN} LOOP
  UPDATE dataset SET description = repeat('an updated wide description ', 150)
  WHERE natural_key LIKE 'wide-' || i || '-%';
  COMMIT;
END LOOP;
END $$;
"""

CHILD_ROWS = 150_000
CHILD_SETUP = f"""
INSERT INTO feature (feature_type, normalized_name, name)
SELECT 'lipid', 'ch(' || g || ')', 'Ch(' || g || ')' FROM generate_series(1, 1000) g;
INSERT INTO dataset (natural_key, name, omics_type)
SELECT 'ch-' || g, 'ch ' || g, 'lipidomics' FROM generate_series(1, {CHILD_ROWS // 1000}) g;
INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change)
SELECT d.id, f.id, f.name, random() FROM dataset d, feature f WHERE d.natural_key LIKE 'ch-%'
"""
CHILD_WORKLOAD = """
DO $$
DECLARE d record;
BEGIN
FOR d IN SELECT id FROM dataset WHERE natural_key LIKE 'ch-%' ORDER BY natural_key LOOP
  UPDATE dataset_feature SET log2_fold_change = random(), p_value = random() WHERE dataset_id = d.id;
  COMMIT;
END LOOP;
END $$;
"""


SCALE_TXN = 1_000


def scale_workload(changes: int) -> str:
    """``changes`` row changes on ``changes // 4`` datasets: inserts, then three update passes (1,000 rows each)."""
    documents = max(changes // 4, SCALE_TXN)
    txns = documents // SCALE_TXN
    return f"""
DO $$
DECLARE i int; pass int;
BEGIN
FOR i IN 1..{txns} LOOP
  INSERT INTO dataset (natural_key, name, omics_type, description)
  SELECT 'sc-' || lpad((i * {SCALE_TXN} + g)::text, 9, '0'), 'sc ' || g, 'lipidomics', 'initial'
  FROM generate_series(0, {SCALE_TXN - 1}) g;
  COMMIT;
END LOOP;
FOR pass IN 1..3 LOOP
  FOR i IN 1..{txns} LOOP
    UPDATE dataset SET description = 'pass ' || pass
    WHERE natural_key BETWEEN 'sc-' || lpad((i * {SCALE_TXN})::text, 9, '0')
                          AND 'sc-' || lpad((i * {SCALE_TXN} + {SCALE_TXN - 1})::text, 9, '0');
    COMMIT;
  END LOOP;
END LOOP;
END $$;
"""


@dataclass(frozen=True)
class Workload:
    name: str
    label: str  # the figure's name
    setup: str  # written before the slots exist (not streamed)
    workload: str


WORKLOADS = {
    w.name: w
    for w in (
        Workload("shipped", "source rate", FEATURE_SETUP, WORKLOAD),
        Workload("small", "source rate, small transactions", FEATURE_SETUP, SMALL_WORKLOAD),
        Workload("wide", "source rate, wide rows", WIDE_SETUP, WIDE_WORKLOAD),
        Workload("child", "source rate, child-table updates", CHILD_SETUP, CHILD_WORKLOAD),
    )
}

RECV_OPTIONS = WAL2JSON_OPTIONS  # pg_recvlogical reads with the replicator's own options


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
    loop = SourceLoop(
        url,
        SourceOptions(slot=slot, sinks=("bench",), heartbeat_interval_s=30.0),
        metrics=Metrics(),
        policy=BackoffPolicy(),
    )
    cpu_started = time.process_time()
    started = time.perf_counter()
    thread = threading.Thread(target=loop.run, args=(stop,), name="source")
    thread.start()
    while loop.confirmed_lsn < endpos:
        if not thread.is_alive():
            raise SystemExit("the source stopped before reaching the end of the workload")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    threads = thread_cpu_s()
    stop.set()
    thread.join()
    print(
        orjson.dumps(
            {
                "seconds": elapsed,
                "changes": loop.changes,
                "batches": loop.batches,
                "peak_mb": vm_hwm_mb(),
                "cpu_s": cpu,
                **{f"cpu_{name}_s": value for name, value in threads.items()},
            }
        ).decode()
    )


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds so far of the source loop's thread (the reader) and of the outbox writer thread (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for thread in threading.enumerate():
        key = "writer" if thread.name == "replicator-outbox-writer" else "reader" if thread.name == "source" else None
        if key and thread.native_id is not None:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            found[key] = (int(fields[11]) + int(fields[12])) / tick
            found[key + "_sys"] = int(fields[12]) / tick
    return found


def run_workload(cluster: PgCluster, workload: Workload) -> dict[str, float]:
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE bench_{workload.name}")  # our constant names
    url = cluster.url_for(f"bench_{workload.name}")
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in workload.setup.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("SELECT pg_create_logical_replication_slot('bench_count', 'wal2json')")
        create_slot(conn, f"recv_{workload.name}")  # slot names are server-wide
        create_slot(conn, f"recv_after_{workload.name}")
        create_slot(conn, f"replicator_{workload.name}")
        started = time.perf_counter()
        conn.execute(workload.workload)
        write_s = time.perf_counter() - started
        row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
        assert row is not None
        endpos = int(row[0])
        # Counted by the server, from a third slot with the same options: exactly what both readers receive.
        counted = conn.execute(
            "SELECT count(*) FROM pg_logical_slot_get_changes('bench_count', NULL, NULL, 'format-version', '2', "
            "'include-transaction', '1', 'add-tables', %s)",
            (",".join(stream_tables()),),
        ).fetchone()
        conn.execute("SELECT pg_drop_replication_slot('bench_count')")
    assert counted is not None
    records = int(counted[0])
    # The baseline reads the same changes before AND after the replicator (its rate is their mean): whichever
    # reader goes first pays for pages the next finds cached, and a noisy machine drifts during a run.
    recv_before = read_with_pg_recvlogical(url, f"recv_{workload.name}", endpos)
    ours = read_with_replicator(url, f"replicator_{workload.name}", endpos)
    recv_after = read_with_pg_recvlogical(url, f"recv_after_{workload.name}", endpos)
    recv_s = 2 / (1 / recv_before + 1 / recv_after)  # the time of the mean rate
    time.sleep(1.0)  # the reader's backend has exited and flushed its table statistics
    with psycopg.connect(url, autocommit=True) as conn:
        outbox = conn.execute("SELECT count(*) FROM replicator.outbox").fetchone()
        stats = conn.execute(
            "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup, pg_total_relation_size(relid) "
            "FROM pg_stat_user_tables WHERE schemaname = 'replicator' AND relname = 'outbox'"
        ).fetchone()
    recv_rate = records / recv_s
    our_rate = records / ours["seconds"]
    print(f"[{workload.name}] written in {write_s:.2f} s; {records:,} wal2json records")
    print(
        f"[{workload.name}] pg_recvlogical -> /dev/null : {recv_s:6.2f} s  {recv_rate:9,.0f} records/s  "
        f"(mean rate of a read before the replicator's, {records / recv_before:,.0f}/s, and one after, "
        f"{records / recv_after:,.0f}/s)"
    )
    print(
        f"[{workload.name}] replicator -> outbox        : {ours['seconds']:6.2f} s  {our_rate:9,.0f} records/s  "
        f"({int(ours['changes']):,} row changes, {int(ours['batches'])} batches, "
        f"{outbox[0] if outbox else 0:,} outbox rows)"
    )
    print(
        f"[{workload.name}] replicator CPU while reading: {ours['cpu_s']:.2f} s (reader thread "
        f"{ours.get('cpu_reader_s', 0.0):.2f} s, {ours.get('cpu_reader_sys_s', 0.0):.2f} s of it in the kernel; "
        f"outbox writer thread {ours.get('cpu_writer_s', 0.0):.2f} s)"
    )
    print(f"[{workload.name}] ratio replicator / pg_recvlogical: {our_rate / recv_rate:.2f}  (aim: >= 0.9)")
    print(f"[{workload.name}] replicator peak RSS (VmHWM of the reading process): {ours['peak_mb']:.0f} MB")
    if stats is not None:
        ins, upd, hot, dead, size = (int(v or 0) for v in stats)
        print(
            f"[{workload.name}] outbox: {ins:,} rows inserted + {upd:,} updated ({hot:,} HOT) by the source, "
            f"{outbox[0] if outbox else 0:,} rows left, {dead:,} dead tuples right after the read, "
            f"{size / 2**20:.1f} MB"
        )
    figure(workload.label, our_rate, "records/s", baseline=recv_rate, goal=">= 0.9x")
    return {"peak_mb": ours["peak_mb"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_source")
    parser.add_argument("--workloads", default=None, help=f"comma-separated: {','.join(WORKLOADS)} (default: all)")
    parser.add_argument(
        "--changes",
        type=int,
        default=None,
        help="also a 'scale' workload of this many row changes (alone unless --workloads names others)",
    )
    args = parser.parse_args(argv)
    workloads = dict(WORKLOADS)
    if args.changes is not None:
        label = f"source rate, {args.changes:,} changes"
        workloads["scale"] = Workload("scale", label, "", scale_workload(args.changes))
    default = "scale" if args.changes is not None else ",".join(WORKLOADS)
    chosen = [name for name in (args.workloads or default).split(",") if name]
    unknown = set(chosen) - set(workloads)
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}")
    tmp = Path(tempfile.mkdtemp(prefix="omics-cdc-bench-"))
    cluster = PgCluster(tmp / "data", free_port())
    print("starting a throwaway cluster …", flush=True)
    cluster.init()
    cluster.start()
    try:
        peak = 0.0
        for name in chosen:
            print(f"[{name}] writing the workload …", flush=True)
            peak = max(peak, run_workload(cluster, workloads[name])["peak_mb"])
        figure("source peak RSS", peak, "MB")
        return 0
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_source")
    parser.add_argument("--read", nargs=3, metavar=("URL", "SLOT", "ENDPOS"))
    args, rest = parser.parse_known_args()
    if args.read:
        child_read(args.read[0], args.read[1], int(args.read[2]))
        sys.exit(0)
    sys.exit(main(rest))
