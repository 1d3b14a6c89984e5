"""Sink benchmarks (``make bench-sinks``). Figures, not assertions.

Pinecone half — commit-to-visible latency under steady load: a throwaway cluster (tests.pgcluster) migrated to
head, the Pinecone emulator and a local OpenAI-compatible embeddings server in this process, and the replicator
daemon (``replicator.daemon.run``) in a thread with ``REPLICATOR_SINKS=pinecone``. 50 datasets are created and
replicated first; then dataset updates are committed at a steady rate, each writing a unique marker into the
description, and a poller watches the emulator's stored chunk-0 metadata for that marker. Printed: count, p50,
p90, p99 and max of (visible - commit), in milliseconds.

Notion half — calls per changed document for a burst of 1,000 updates over 50 datasets — is
``tests/bench/bench_notion.py``; ``make bench-sinks`` runs both.

    python -m tests.bench.bench_sinks [--rate 20] [--seconds 20] [--datasets 50]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from replicator.config import Settings
from replicator.daemon import run
from replicator.sinks.pinecone import connect, ensure_index
from schema.migrate import upgrade
from tests.bench.report import figure
from tests.emulators.openai_embeddings import serve_embeddings
from tests.emulators.pinecone import PineconeEmulator
from tests.pgcluster import PgCluster, free_port

INDEX = "bench"
NAMESPACE = "bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def pinecone_latency(*, rate: float, seconds: float, datasets: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-sinks-"))
    cluster = PgCluster(tmp / "data", free_port())
    cluster.init()
    cluster.start()
    emulator = PineconeEmulator()
    emulator.start("127.0.0.1", 0)
    stop = threading.Event()
    try:
        url = cluster.url
        upgrade(url)
        with serve_embeddings(dimension=64) as embeddings:
            pc = connect(emulator.api_key, emulator.url)
            ensure_index(pc, INDEX, 64)
            pc.close()
            settings = Settings.model_validate(
                {
                    "POSTGRES_URL": url,
                    "REPLICATOR_SLOT": "bench_sinks",
                    "REPLICATOR_SINKS": "pinecone",
                    "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
                    "REPLICATOR_HEARTBEAT_INTERVAL_S": 1.0,
                    "REPLICATOR_BATCH_MAX_WAIT_MS": 20,
                    "REPLICATOR_LOG_LEVEL": "WARNING",
                    "PINECONE_API_KEY": emulator.api_key,
                    "PINECONE_CONTROLLER_HOST": emulator.url,
                    "PINECONE_INDEX": INDEX,
                    "PINECONE_NAMESPACE": NAMESPACE,
                    "PINECONE_RATE_PER_S": 1000,
                    "EMBEDDING_PROVIDER": "openai",
                    "EMBEDDING_MODEL": "hash-embedding",
                    "OPENAI_BASE_URL": embeddings.base_url,
                }
            )
            with psycopg.connect(url, autocommit=True) as conn:
                ids = [
                    row[0]
                    for row in conn.execute(
                        "INSERT INTO dataset (natural_key, name, omics_type, description) "
                        "SELECT 'bench-' || g, 'Bench dataset ' || g, 'lipidomics', 'initial' "
                        "FROM generate_series(1, %s) g RETURNING id",
                        (datasets,),
                    )
                ]
                daemon = threading.Thread(target=run, args=(settings,), kwargs={"stop": stop}, daemon=True)
                daemon.start()
                _wait(lambda: len(emulator.vectors(INDEX, NAMESPACE)) >= datasets, 120, "initial replication")

                pending: dict[str, tuple[uuid.UUID, float]] = {}
                latencies: list[float] = []
                lock = threading.Lock()
                done = threading.Event()

                def poll() -> None:
                    while not (done.is_set() and not pending):
                        with lock:
                            waiting = dict(pending)
                        if waiting:
                            stored = emulator.vectors(INDEX, NAMESPACE)
                            now = time.monotonic()
                            for marker, (dataset_id, committed) in waiting.items():
                                vector = stored.get(f"dataset:{dataset_id}#0000")
                                if vector is not None and marker in str((vector.metadata or {}).get("text", "")):
                                    with lock:
                                        pending.pop(marker, None)
                                    latencies.append((now - committed) * 1000)
                        time.sleep(0.005)

                poller = threading.Thread(target=poll, daemon=True)
                poller.start()
                interval = 1.0 / rate
                start = time.monotonic()
                n = 0
                while time.monotonic() - start < seconds:
                    dataset_id = ids[n % len(ids)]
                    marker = f"marker{n:06d}x"
                    conn.execute("UPDATE dataset SET description = %s WHERE id = %s", (marker, dataset_id))
                    with lock:
                        # A newer update to the same dataset supersedes an older, not yet visible one.
                        for old, (other, _) in list(pending.items()):
                            if other == dataset_id:
                                pending.pop(old)
                        pending[marker] = (dataset_id, time.monotonic())
                    n += 1
                    time.sleep(max(0.0, start + n * interval - time.monotonic()))
                done.set()
                poller.join(60)
        return {
            "updates": float(n),
            "measured": float(len(latencies)),
            "p50_ms": statistics.median(latencies),
            "p90_ms": _percentile(latencies, 0.90),
            "p99_ms": _percentile(latencies, 0.99),
            "max_ms": max(latencies),
        }
    finally:
        stop.set()
        time.sleep(1.0)
        emulator.stop()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-sinks: {what} did not finish within {timeout} s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_sinks")
    parser.add_argument("--rate", type=float, default=20.0, help="dataset updates committed per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the steady load")
    parser.add_argument("--datasets", type=int, default=50)
    args = parser.parse_args(argv)

    figures = pinecone_latency(rate=args.rate, seconds=args.seconds, datasets=args.datasets)
    print(
        f"pinecone commit-to-visible ({args.rate:g} updates/s over {args.datasets} datasets, {args.seconds:g} s): "
        f"{figures['measured']:.0f} of {figures['updates']:.0f} updates measured "
        f"(the rest were superseded by a newer update of the same dataset before becoming visible); "
        f"p50 {figures['p50_ms']:.0f} ms, p90 {figures['p90_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, "
        f"max {figures['max_ms']:.0f} ms"
    )
    figure(f"pinecone commit-to-visible p50 at {args.rate:g}/s", figures["p50_ms"], "ms")
    figure(f"pinecone commit-to-visible p99 at {args.rate:g}/s", figures["p99_ms"], "ms", goal="<= 1000")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
