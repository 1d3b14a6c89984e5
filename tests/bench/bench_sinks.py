"""Sink benchmarks (``make bench-sinks``). Figures, not assertions.

Pinecone half — commit-to-visible latency under steady load: a throwaway cluster (tests.pgcluster) migrated to
head, the Pinecone emulator and a local OpenAI-compatible embeddings server in this process, and the replicator
daemon (``replicator.daemon.run``) in a thread with ``REPLICATOR_SINKS=pinecone``. 50 datasets are created and
replicated first; then dataset updates are committed at a steady rate, each writing a unique marker into the
description, and a poller watches the emulator's stored chunk-0 metadata for that marker. Printed: count, p50,
p90, p99 and max of (visible - commit), in milliseconds.

With ``--embedder local`` the daemon embeds with the shipped local ONNX Runtime provider (``EMBEDDING_PROVIDER=local``,
384 dimensions) instead of the emulated OpenAI endpoint, and runs in a child process of its own, so its peak
resident set (``VmHWM`` from its /proc status, read as it stops) is the daemon's alone; after the load, the same
embedder's own ceiling is timed in this process on 256 chunk-sized (600-character) texts, so both figures share
the run's machine load.

Notion half — calls per changed document for a burst of 1,000 updates over 50 datasets — is
``tests/bench/bench_notion.py``; ``make bench-sinks`` runs both.

    python -m tests.bench.bench_sinks [--rate 20] [--seconds 20] [--datasets 50] [--embedder emulated|local]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

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


ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIMENSION = 384  # all-MiniLM-L6-v2, the local provider's model


def _vm_hwm_mb(status: str) -> float:
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in the process status")


def daemon_child() -> int:
    """``--daemon-child``: the daemon alone in this process, configured from the environment, until SIGTERM;
    then its own peak resident set on stdout (one JSON line)."""
    code = run(Settings())  # type: ignore[call-arg]  # values come from the environment
    print(json.dumps({"vm_hwm_mb": _vm_hwm_mb(Path("/proc/self/status").read_text()), "exit": code}))
    return 0


def embedder_ceiling(settings: Settings, texts: int = 256) -> float:
    """Texts/s of the configured embedder on ``texts`` chunk-sized texts (after a warm-up batch)."""
    from replicator.sinks.pinecone.embedding import build_provider
    from tests.bench.bench_embedder import chunks

    provider = build_provider(settings)
    batch = chunks(texts)
    provider.embed(batch[:32])
    started = time.perf_counter()
    provider.embed(batch)
    elapsed = time.perf_counter() - started
    provider.close()
    return texts / elapsed


def pinecone_latency(*, rate: float, seconds: float, datasets: int, embedder: str = "emulated") -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-sinks-"))
    cluster = PgCluster(tmp / "data", free_port())
    cluster.init()
    cluster.start()
    emulator = PineconeEmulator()
    emulator.start("127.0.0.1", 0)
    stop = threading.Event()
    child: subprocess.Popen[str] | None = None
    extra: dict[str, float] = {}
    local = embedder == "local"
    try:
        url = cluster.url
        upgrade(url)
        with serve_embeddings(dimension=64) as embeddings:
            pc = connect(emulator.api_key, emulator.url)
            ensure_index(pc, INDEX, LOCAL_DIMENSION if local else 64)
            pc.close()
            embedding: dict[str, Any] = (
                {"EMBEDDING_PROVIDER": "local"}
                if local
                else {
                    "EMBEDDING_PROVIDER": "openai",
                    "EMBEDDING_MODEL": "hash-embedding",
                    "OPENAI_BASE_URL": embeddings.base_url,
                }
            )
            values: dict[str, Any] = {
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
                **embedding,
            }
            settings = Settings.model_validate(values)
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
                if local:
                    env = {**os.environ, **{k: str(v) for k, v in values.items()}, "PYTHONPATH": str(ROOT)}
                    command = [sys.executable, "-m", "tests.bench.bench_sinks", "--daemon-child"]
                    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
                else:
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
            if child is not None:
                child.send_signal(signal.SIGTERM)
                out, _ = child.communicate(timeout=60)
                extra["daemon_vm_hwm_mb"] = float(json.loads(out.strip().splitlines()[-1])["vm_hwm_mb"])
                child = None
                extra["embedder_texts_per_s"] = embedder_ceiling(settings)
        return {
            **extra,
            "updates": float(n),
            "measured": float(len(latencies)),
            "p50_ms": statistics.median(latencies),
            "p90_ms": _percentile(latencies, 0.90),
            "p99_ms": _percentile(latencies, 0.99),
            "max_ms": max(latencies),
        }
    finally:
        stop.set()
        if child is not None:
            child.kill()
            child.wait(10)
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
    parser.add_argument(
        "--embedder",
        choices=("emulated", "local"),
        default="emulated",
        help="emulated: an OpenAI-compatible hash embedder in this process; local: the ONNX provider in the daemon",
    )
    parser.add_argument("--daemon-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.daemon_child:
        return daemon_child()

    figures = pinecone_latency(rate=args.rate, seconds=args.seconds, datasets=args.datasets, embedder=args.embedder)
    print(
        f"pinecone commit-to-visible ({args.embedder} embedder, {args.rate:g} updates/s over {args.datasets} "
        f"datasets, {args.seconds:g} s): "
        f"{figures['measured']:.0f} of {figures['updates']:.0f} updates measured "
        f"(the rest were superseded by a newer update of the same dataset before becoming visible); "
        f"p50 {figures['p50_ms']:.0f} ms, p90 {figures['p90_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, "
        f"max {figures['max_ms']:.0f} ms"
    )
    if "daemon_vm_hwm_mb" in figures:
        print(
            f"daemon peak RSS (its own VmHWM, local embedder loaded): {figures['daemon_vm_hwm_mb']:.0f} MB; "
            f"the embedder's own ceiling in this run: {figures['embedder_texts_per_s']:.0f} texts/s "
            "(600-character chunks)"
        )
        figure("daemon VmHWM with the local embedder", figures["daemon_vm_hwm_mb"], "MB", goal="<= 400")
        figure("local embedder ceiling (same run)", figures["embedder_texts_per_s"], "texts/s")
    suffix = "" if args.embedder == "emulated" else f" ({args.embedder} embedder)"
    figure(f"pinecone commit-to-visible p50 at {args.rate:g}/s{suffix}", figures["p50_ms"], "ms")
    figure(f"pinecone commit-to-visible p99 at {args.rate:g}/s{suffix}", figures["p99_ms"], "ms", goal="<= 1000")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
