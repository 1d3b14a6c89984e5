"""Fusions of the packaged MiniLM graph into ONNX Runtime's BERT operators, applied in memory when the model loads.

The packaged file is a torch ``scaled_dot_product_attention`` export: each layer's attention is three MatMul+Add
projections, reshapes and transposes, a [batch, 1, seq, seq] additive mask built from ``attention_mask`` (GatherND,
``Where``), Softmax, then ``Where(IsNaN(p), 0, p)`` over every probability, and its GELU is the erf formula in five
element-wise nodes. ONNX Runtime's own session-level fusions (``ORT_ENABLE_ALL``) do not recognise either pattern
(they fuse only SkipLayerNormalization here), and neither does ``onnxruntime.transformers.optimizer`` (measured:
``Attention: 0``), so this module rewrites them into the contrib operators that ONNX Runtime's CPU provider
implements for BERT:

- ``com.microsoft.Attention`` (https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md
  #com.microsoft.Attention): the Q, K and V weights packed into one [384, 1152] input (one GEMM instead of three),
  their biases into one [1152], ``num_heads`` 12, and ``mask_index`` the raw 2-D 0/1 ``attention_mask`` as int32.
  Its default scale 1/sqrt(head_size) is the export's (it multiplies Q and K each by head_size^-1/4). The masked
  keys get -10000 instead of the export's float32 minimum before the softmax: both give them a probability of
  exactly 0 in float32. The ``IsNaN`` guard only matters for a row with every key masked, which cannot happen:
  every text has at least its [CLS] and [SEP] tokens.
- ``com.microsoft.BiasGelu`` (same page, #com.microsoft.BiasGelu): ``x = MatMul + bias``,
  ``x * 0.5 * (1 + erf(x / sqrt 2))`` in one pass.
- The word-embedding lookup gathers the int8 rows and their per-row scales and dequantizes only those, instead of
  the whole 30522 x 384 table, which ONNX Runtime would otherwise fold into 47 MB of float32 constants.

Measured (tests/bench/bench_embedder.py, which runs both graphs alternately, 3 runs) the vectors are the unfused
graph's to cosine 1.00000 (largest difference of a component 2e-7: the same arithmetic up to float32 summation
order), 60.5 [58.7-63.2] ms of CPU per 600-character chunk against 66.6 [65.2-68.9], 1.18x [1.11-1.21] the texts
per second, and a peak resident set of 319 MB against 343; loading takes ~0.5 s longer. The other weights stay as
the file stores them (int8 with per-channel scales, dequantized by the file's own Cast and Mul nodes); the Concat
nodes that pack them are constants, which ONNX Runtime folds when the session is built. A graph that does not have
the expected shape (another export) is refused rather than half rewritten; the model's sha256 is pinned anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

from replicator.errors import ConfigurationError

NUM_HEADS = 12
LAYERS = 6
ATTENTION_MASK_INT32 = "fused_attention_mask_int32"
WORD_EMBEDDINGS = "inner.embeddings.word_embeddings.weight"
_BIAS = re.compile(r"inner\.encoder\.layer\.(\d+)\.attention\.(?:self\.(query|key|value)|(output)\.dense)\.bias$")


class GraphShapeError(ConfigurationError, ValueError):
    """The graph is not the export this module knows how to fuse (the provider reports it as ``SinkConfigError``)."""


@dataclass(frozen=True)
class Fused:
    """How many attention blocks and GELUs were fused, and how many nodes the graph lost."""

    attention: int
    gelu: int
    removed_nodes: int


def fuse_minilm(model: onnx.ModelProto) -> Fused:
    """Rewrite ``model`` in place: each layer's attention into one ``Attention`` node, each GELU into ``BiasGelu``;
    nodes left without a consumer are dropped."""
    from onnx import TensorProto, helper

    graph = model.graph
    before = len(graph.node)
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    if "attention_mask" not in {i.name for i in graph.input}:
        raise GraphShapeError("the graph has no attention_mask input")

    # Per layer: the bias Add of each projection and the MatMul feeding it.
    layers: dict[int, dict[str, tuple[onnx.NodeProto, str]]] = {}
    for node in graph.node:
        if node.op_type != "Add":
            continue
        for name in node.input:
            match = _BIAS.match(name)
            if match:
                (other,) = (i for i in node.input if i != name)
                matmul = producer.get(other)
                if matmul is None or matmul.op_type != "MatMul":
                    raise GraphShapeError(f"{name} is not added to a MatMul")
                layers.setdefault(int(match.group(1)), {})[match.group(2) or match.group(3)] = (matmul, name)
    if sorted(layers) != list(range(LAYERS)) or any(len(parts) != 4 for parts in layers.values()):
        raise GraphShapeError(f"expected {LAYERS} layers of query, key, value and output projections")

    added: list[onnx.NodeProto] = [
        helper.make_node(
            "Cast", ["attention_mask"], [ATTENTION_MASK_INT32], to=TensorProto.INT32, name="fused_attention_mask"
        )
    ]
    replaced: set[str] = set()
    for layer, parts in sorted(layers.items()):
        (q, q_bias), (k, k_bias), (v, v_bias) = parts["query"], parts["key"], parts["value"]
        hidden = q.input[0]
        if k.input[0] != hidden or v.input[0] != hidden:
            raise GraphShapeError(f"layer {layer}: query, key and value do not read the same input")
        context = parts["output"][0].input[0]  # [batch, seq, 384], what the output projection reads
        weights, bias = f"fused_qkv_weight_{layer}", f"fused_qkv_bias_{layer}"
        added += [
            helper.make_node("Concat", [q.input[1], k.input[1], v.input[1]], [weights], axis=1, name=weights),
            helper.make_node("Concat", [q_bias, k_bias, v_bias], [bias], axis=0, name=bias),
            helper.make_node(
                "Attention",
                [hidden, weights, bias, ATTENTION_MASK_INT32],
                [context],
                domain="com.microsoft",
                num_heads=NUM_HEADS,
                name=f"fused_attention_{layer}",
            ),
        ]
        replaced.add(context)

    initializers = {t.name for t in graph.initializer}
    gelus = 0
    for erf in [node for node in graph.node if node.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        linear = producer.get(div.input[0]) if div is not None else None
        plus_one = _only_consumer(consumers, erf)
        half = _only_consumer(consumers, plus_one)
        times_x = _only_consumer(consumers, half)
        if (
            div is None
            or linear is None
            or times_x is None
            or [n.op_type for n in (div, linear, plus_one, half, times_x) if n is not None]
            != ["Div", "Add", "Add", "Mul", "Mul"]
            or linear.output[0] not in times_x.input
            or linear.input[1] not in initializers
        ):
            raise GraphShapeError(f"{erf.name} is not the erf GELU of a MatMul plus a bias")
        added.append(
            helper.make_node(
                "BiasGelu",
                [linear.input[0], linear.input[1]],
                [times_x.output[0]],
                domain="com.microsoft",
                name=f"fused_gelu_{gelus}",
            )
        )
        replaced.add(times_x.output[0])
        gelus += 1
    if gelus != LAYERS:
        raise GraphShapeError(f"expected {LAYERS} GELUs, found {gelus}")

    # The word-embedding lookup: gather the int8 rows and their scales, then dequantize only those rows, instead of
    # the whole table (30522 x 384) folded into float32 constants at session build (47 MB resident for the life
    # of the process). Same products of the same float32 numbers, so the same values.
    lookups = consumers.get(WORD_EMBEDDINGS, [])
    dequantize = producer.get(WORD_EMBEDDINGS)
    cast = producer.get(dequantize.input[0]) if dequantize is not None else None
    if (
        len(lookups) != 1
        or lookups[0].op_type != "Gather"
        or lookups[0].input[0] != WORD_EMBEDDINGS
        or dequantize is None
        or dequantize.op_type != "Mul"
        or cast is None
        or cast.op_type != "Cast"
        or cast.input[0] not in initializers
        or dequantize.input[1] not in initializers
    ):
        raise GraphShapeError(f"{WORD_EMBEDDINGS} is not an int8 table dequantized by Cast and Mul for one Gather")
    (lookup,) = lookups
    ids = lookup.input[1]
    added += [
        helper.make_node("Gather", [cast.input[0], ids], ["fused_word_rows_q"], axis=0, name="fused_word_rows_q"),
        helper.make_node("Gather", [dequantize.input[1], ids], ["fused_word_scales"], axis=0, name="fused_word_scales"),
        helper.make_node(
            "Cast", ["fused_word_rows_q"], ["fused_word_rows_f"], to=TensorProto.FLOAT, name="fused_word_rows_f"
        ),
        helper.make_node("Mul", ["fused_word_rows_f", "fused_word_scales"], [lookup.output[0]], name="fused_word_rows"),
    ]
    replaced.add(lookup.output[0])

    nodes = added + [node for node in graph.node if not replaced.intersection(node.output)]
    nodes = _live(nodes, {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(_ordered(nodes, {i.name for i in graph.input} | initializers))
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return Fused(attention=len(layers), gelu=gelus, removed_nodes=before - len(graph.node))


def _only_consumer(consumers: dict[str, list[onnx.NodeProto]], node: onnx.NodeProto | None) -> onnx.NodeProto | None:
    readers = consumers.get(node.output[0], []) if node is not None else []
    return readers[0] if len(readers) == 1 else None


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop, until none is left, the nodes whose outputs nothing reads."""
    while True:
        read = {name for node in nodes for name in node.input} | outputs
        alive = [node for node in nodes if read.intersection(node.output)]
        if len(alive) == len(nodes):
            return nodes
        nodes = alive


def _ordered(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Topological order (ONNX requires it), stable for nodes already in order."""
    known = available | {""}  # "" is an omitted optional input
    ordered: list[onnx.NodeProto] = []
    pending = nodes
    while pending:
        waiting = []
        for node in pending:
            if known.issuperset(node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise GraphShapeError(f"{len(waiting)} nodes read values nothing produces")
        pending = waiting
    return ordered
