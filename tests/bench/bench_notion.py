"""Notion half of ``make bench-sinks``: Notion API calls per changed document for a burst of 1,000 updates over
50 datasets. Figures, not assertions.

A throwaway cluster (tests.pgcluster) migrated to head, the Notion emulator in this process (its own rate limit
off: we count calls, the sink's token bucket paces them at ``--rate``), and the replicator daemon
(``replicator.daemon.run``) in a thread with ``REPLICATOR_SINKS=notion``. 50 datasets are created and replicated
first; then a burst of 1,000 single-row UPDATE transactions, spread round-robin over the 50 datasets, is committed
as fast as possible, and the emulator's request log counts every call the replicator makes until Notion shows the
final state of each dataset. The floor is one call per distinct changed document (one PATCH of its properties).
Three bursts: one that changes only properties (``disease``), then two that also change the managed page body
(``summary``). The sink updates the managed section in place: the first body change of a page in this process
reads the section back (the page's blocks and the toggle's children: 2 GETs) before patching the changed child and
the properties; every later one is the block PATCH plus the properties' PATCH. The second body burst shows that
steady state.

    python -m tests.bench.bench_notion [--datasets 50] [--updates 1000] [--rate 50]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.daemon import run
from replicator.documents import DocumentKey, render
from replicator.sinks.notion import create_databases, notion_client
from schema.migrate import upgrade
from tests.bench.report import figure
from tests.emulators.notion import NotionEmulator
from tests.pgcluster import PgCluster, free_port

ENTITY_SETTING = {
    "program": "NOTION_PROGRAMS_DB_ID",
    "experiment": "NOTION_EXPERIMENTS_DB_ID",
    "signature": "NOTION_SIGNATURE_DB_ID",
    "dataset": "NOTION_EXP_DATA_DB_ID",
}


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-notion: {what} did not finish within {timeout} s")
        time.sleep(0.05)


def _in_sync(conn: psycopg.Connection[Any], emulator: NotionEmulator, keys: list[DocumentKey]) -> bool:
    """Every dataset's page carries the content hash of its current row (and exactly one live page each)."""
    expected = {str(k.id): d.content_hash() for k, d in render(conn, keys).items() if d is not None}
    stored: dict[str, list[str]] = {}
    for page in emulator.state()["pages"].values():
        pid = page["properties"].get("Postgres ID")
        if pid and not page["in_trash"]:
            stored.setdefault(pid, []).append(str(page["properties"].get("Content Hash") or "").split(" ")[0][4:])
    return all(stored.get(pid) == [h] for pid, h in expected.items())


def _burst(
    conn: psycopg.Connection[Any],
    emulator: NotionEmulator,
    keys: list[DocumentKey],
    updates: int,
    column: str,
) -> dict[str, float]:
    with emulator.lock:
        emulator.requests.clear()
    started = time.monotonic()
    for n in range(updates):
        key = keys[n % len(keys)]
        if column == "disease":
            conn.execute("UPDATE dataset SET disease = %s WHERE id = %s", ([f"Disease {n}"], key.id))
        else:
            text = f"summary after update {n} of {updates} ({started:.0f})"  # differs from an earlier burst's
            conn.execute("UPDATE dataset SET summary = %s WHERE id = %s", (text, key.id))
    committed = time.monotonic() - started
    _wait(lambda: _in_sync(conn, emulator, keys), 300, f"the {column} burst")
    elapsed = time.monotonic() - started
    with emulator.lock:
        methods = Counter(f"{r['method']} {r['path'].split('/')[2]}" for r in emulator.requests)
    calls = sum(methods.values())
    return {
        "updates": float(updates),
        "documents": float(len(keys)),
        "calls": float(calls),
        "calls_per_document": calls / len(keys),
        "calls_per_update": calls / updates,
        "burst_commit_s": committed,
        "visible_s": elapsed,
        **{f"[{k}]": float(v) for k, v in sorted(methods.items())},
    }


def notion_calls_per_document(*, datasets: int = 50, updates: int = 1000, rate: float = 50.0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-notion-"))
    cluster = PgCluster(tmp / "data", free_port())
    cluster.init()
    cluster.start()
    emulator = NotionEmulator(rate_per_s=None)
    emulator.start("127.0.0.1", 0)
    stop = threading.Event()
    daemon: threading.Thread | None = None
    try:
        url = cluster.url
        upgrade(url)
        client = notion_client(emulator.token, emulator.url)
        ids = create_databases(client, emulator.root_page_id)
        client.close()
        settings = Settings.model_validate(
            {
                "POSTGRES_URL": url,
                "REPLICATOR_SLOT": "bench_notion",
                "REPLICATOR_SINKS": "notion",
                "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
                "REPLICATOR_HEARTBEAT_INTERVAL_S": 1.0,
                "REPLICATOR_BATCH_MAX_WAIT_MS": 20,
                "REPLICATOR_LOG_LEVEL": "WARNING",
                "NOTION_API_KEY": emulator.token,
                "NOTION_BASE_URL": emulator.url,
                "NOTION_RATE_PER_S": rate,
                **ids,
            }
        )
        with psycopg.connect(url, autocommit=True) as conn:
            keys = []
            for i in range(datasets):
                row = conn.execute(
                    "INSERT INTO dataset (natural_key, name, omics_type, summary) VALUES (%s, %s, 'lipidomics', 's') "
                    "RETURNING id",
                    (f"bench-{i}", f"Bench dataset {i}"),
                ).fetchone()
                assert row is not None
                keys.append(DocumentKey("dataset", row[0]))
            daemon = threading.Thread(target=run, args=(settings,), kwargs={"stop": stop}, daemon=True)
            daemon.start()
            _wait(lambda: _in_sync(conn, emulator, keys), 300, "the initial 50 pages")
            return {
                "properties only": _burst(conn, emulator, keys, updates, "disease"),
                "properties and body (first body change in this process)": _burst(
                    conn, emulator, keys, updates, "summary"
                ),
                "properties and body": _burst(conn, emulator, keys, updates, "summary"),
            }
    finally:
        stop.set()
        if daemon is not None:
            daemon.join(30)
        emulator.stop()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(figures: dict[str, Any], rate: float) -> str:
    lines = []
    for name, f in figures.items():
        split = ", ".join(f"{k[1:-1]} {v:g}" for k, v in f.items() if k.startswith("["))
        lines.append(
            f"notion calls per changed document ({name}; {f['updates']:.0f} updates over {f['documents']:.0f} "
            f"datasets, sink paced at {rate:g} calls/s): {f['calls_per_document']:.2f} "
            f"({f['calls']:.0f} calls, {f['calls_per_update']:.3f} per update; burst committed in "
            f"{f['burst_commit_s']:.1f} s, all visible after {f['visible_s']:.1f} s; {split})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_notion")
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="NOTION_RATE_PER_S for the sink's token bucket")
    args = parser.parse_args(argv)
    figures = notion_calls_per_document(datasets=args.datasets, updates=args.updates, rate=args.rate)
    print(report(figures, args.rate))
    for name, goal in (
        ("properties only", "<= 1"),
        ("properties and body (first body change in this process)", None),
        ("properties and body", "<= 2"),
    ):
        figure(f"notion calls per document ({name})", figures[name]["calls_per_document"], "calls", goal=goal)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
