"""The recording sink: a test-only sink (registered by the test harness through ``REPLICATOR_SINK_PLUGINS``, never
part of the production settings) that appends every application to a JSON-lines log and fsyncs it before
returning, so its record survives ``kill -9`` of the replicator. ``load_recording`` replays the log into the final
state per document and the number of times each was applied; the guarantee tests compare that with Postgres.

Faults can be injected from outside a running process (the plugin option ``fail``, or a ``fail_file`` whose
presence makes every call fail) to simulate a sink that is down; ``delay_ms`` slows every call. The fail file's
text picks the fault: ``retryable`` (the default) or ``permanent`` fail the calls only; ``down`` (the service is
unreachable: calls fail retryably and ``check()`` fails too) and ``config`` (its configuration broke: calls fail
sink-wide and ``check()`` raises ``SinkConfigError``) model a whole sink that is gone.

``recording_plugin(path, ...)`` gives the setting that registers it: a test passes it to ``Settings(...)`` or puts
it in a child process's environment (``tests/conftest.py`` registers an in-memory one for the whole session, so a
sink named ``recording`` is always known to the tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from replicator.config import Settings
from replicator.documents import DocumentKey
from replicator.metrics import Metrics
from replicator.sinks.base import (
    DeleteItem,
    Outcome,
    OutcomeKind,
    RemoteState,
    Sink,
    SinkConfigError,
    SinkError,
    UpsertItem,
)

FailMode = Literal["none", "retryable", "permanent"]


@dataclass(frozen=True)
class RecordedDocument:
    content_hash: str
    name: str


@dataclass(frozen=True)
class RecordingState:
    """The log replayed: what the sink holds now, and how often each key was written or deleted."""

    documents: dict[DocumentKey, RecordedDocument] = field(default_factory=dict)
    applications: dict[DocumentKey, int] = field(default_factory=dict)
    deletions: dict[DocumentKey, int] = field(default_factory=dict)

    @property
    def total_applications(self) -> int:
        return sum(self.applications.values())


def _parse_key(text: str) -> DocumentKey:
    entity, _, id_ = text.partition(":")
    return DocumentKey(entity, uuid.UUID(id_))


def load_recording(path: str | os.PathLike[str]) -> RecordingState:
    """Replay the log at ``path`` (a missing file is an empty sink). A torn last line, left by a kill in the middle
    of a write that was never fsynced nor acknowledged, is ignored."""
    documents: dict[DocumentKey, RecordedDocument] = {}
    applications: dict[DocumentKey, int] = {}
    deletions: dict[DocumentKey, int] = {}
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return RecordingState()
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            if number == len(lines):  # the unterminated tail of an interrupted write
                break
            raise ValueError(f"{path}:{number}: not a JSON line") from None
        key = _parse_key(entry["key"])
        if entry["op"] == "upsert":
            documents[key] = RecordedDocument(content_hash=entry["hash"], name=entry["name"])
            applications[key] = applications.get(key, 0) + 1
        elif entry["op"] == "delete":
            documents.pop(key, None)
            deletions[key] = deletions.get(key, 0) + 1
    return RecordingState(documents=documents, applications=applications, deletions=deletions)


class RecordingSink(Sink):
    """Records applications in memory and, when ``path`` is given, in an fsynced JSON-lines log. Thread-safe, so
    several workers may share one instance."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        name: str = "recording",
        fail: FailMode = "none",
        fail_file: str | os.PathLike[str] | None = None,
        delay_s: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.path = Path(path) if path is not None else None
        self.fail = fail
        self.fail_file = Path(fail_file) if fail_file is not None else None
        self.delay_s = delay_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self.checks = 0
        self.log: list[tuple[str, DocumentKey, str | None]] = []  # (op, key, content hash) in order, in memory

    def _mode(self) -> str:
        mode: str = self.fail
        if self.fail_file is not None:
            with contextlib.suppress(FileNotFoundError):
                mode = self.fail_file.read_text().strip() or "retryable"
        return mode

    def check(self) -> None:
        self.checks += 1
        mode = self._mode()
        if mode == "down":
            raise SinkError("recording sink unreachable (injected)", retryable=True)
        if mode == "config":
            raise SinkConfigError("recording sink misconfigured (injected)")

    def _failure(self) -> SinkError | None:
        mode = self._mode()
        if mode == "config":
            return SinkError("recording sink misconfigured (injected)", retryable=False, sink_wide=True)
        if mode in ("retryable", "down"):
            return SinkError("recording sink unavailable (injected)", retryable=True)
        if mode == "permanent":
            return SinkError("recording sink rejected the document (injected)", retryable=False)
        return None

    def _append(self, entries: list[dict[str, str]]) -> None:
        if self.path is None or not entries:
            return
        payload = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        with open(self.path, "ab") as f:
            # Workers in several processes (leader and standby) may append at once: one whole batch at a time.
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        if self.delay_s:
            self._sleep(self.delay_s)
        if (error := self._failure()) is not None:
            return [Outcome(item.document.key, OutcomeKind.FAILED, error=error, calls=1) for item in items]
        outcomes = []
        entries = []
        for item in items:
            doc = item.document
            digest = doc.content_hash()
            entries.append({"op": "upsert", "key": str(doc.key), "hash": digest, "name": doc.name})
            state = RemoteState(remote_id=f"rec:{doc.key}", content_hash=digest, chunk_count=1)
            outcomes.append(Outcome(doc.key, OutcomeKind.APPLIED, state=state, calls=1))
        with self._lock:
            self._append(entries)
            self.log.extend(("upsert", item.document.key, e["hash"]) for item, e in zip(items, entries, strict=True))
        return outcomes

    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        if self.delay_s:
            self._sleep(self.delay_s)
        if (error := self._failure()) is not None:
            return [Outcome(item.key, OutcomeKind.FAILED, error=error, calls=1) for item in items]
        entries = [{"op": "delete", "key": str(item.key)} for item in items]
        with self._lock:
            self._append(entries)
            self.log.extend(("delete", item.key, None) for item in items)
        return [Outcome(item.key, OutcomeKind.DELETED, calls=1) for item in items]


FACTORY = f"{__name__}:build"


def build(settings: Settings, options: dict[str, Any], metrics: Metrics | None) -> RecordingSink:
    """The plugin factory (``REPLICATOR_SINK_PLUGINS``): options ``path``, ``fail``, ``fail_file``, ``delay_ms``, and
    ``build_delay_ms``: building the sink takes that long, as a heavy one does (an embedding model loading)."""
    if build_delay_ms := float(options.get("build_delay_ms", 0)):
        time.sleep(build_delay_ms / 1000.0)
    fail = options.get("fail", "none")
    if fail not in ("none", "retryable", "permanent"):
        raise ValueError(f"recording sink: fail must be none, retryable or permanent, not {fail!r}")
    return RecordingSink(
        options.get("path"),
        fail=fail,
        fail_file=options.get("fail_file"),
        delay_s=float(options.get("delay_ms", 0)) / 1000.0,
    )


def recording_plugin(
    path: str | os.PathLike[str] | None = None,
    *,
    fail: FailMode = "none",
    fail_file: str | os.PathLike[str] | None = None,
    delay_ms: int = 0,
    build_delay_ms: int = 0,
) -> dict[str, str]:
    """``{"REPLICATOR_SINK_PLUGINS": ...}`` registering the recording sink with these options."""
    options: dict[str, Any] = {"factory": FACTORY, "fail": fail, "delay_ms": delay_ms}
    if build_delay_ms:
        options["build_delay_ms"] = build_delay_ms
    if path is not None:
        options["path"] = str(path)
    if fail_file is not None:
        options["fail_file"] = str(fail_file)
    return {"REPLICATOR_SINK_PLUGINS": orjson.dumps({"recording": options}).decode()}
