"""The chaos run (#12 item 3): two ``replicator run`` replicas (both sinks, Notion and Pinecone emulators, the
local hash embedder of the e2e tests) are SIGKILLed ``KILLS`` times at random moments (a seeded RNG; a killed
replica is always restarted after a short random pause) while a writer ingests, renames, deletes and re-creates
datasets, programs and signatures for ``DURATION_S`` seconds, with both emulators answering ``RATE_429`` 429s,
``RATE_5XX`` 500/503s, ``APPLY_THEN_FAIL_RATE`` applied-then-lost writes and ``READ_LAG_S`` of read lag.

Then the faults are cleared, the replicas drain (``replicator status --json``: the slot has confirmed the WAL the
writer produced and no sink has an outbox row left) and the invariants are checked on what the services hold:

- ``replicator verify`` is clean right after draining. ``verify --repair`` never makes the test pass: when verify
  is not clean the test records what repair enqueues and whether a second verify after it is clean, then fails
  on the first verify.
- An independent read-back through the real SDKs (notion-client data-source queries over every page, paginated;
  pinecone list + fetch), compared with Postgres: exactly one live page per row, no orphan page, no page without
  a Postgres ID, current titles and content hashes, one managed section in each page's body; per document
  exactly the vector ids of its current chunks (no missing, no surplus chunk), with current metadata (name,
  content hash, chunk count); no orphan vector.
- No outbox row dead-lettered, no replica exited on its own.

The lost answers of ``"timeout"`` kind are held ``APPLY_THEN_FAIL_TIMEOUT_S`` by the emulator and then dropped:
the replicator has no setting for its SDK timeouts (30 s for notion-client, the pinecone SDK's default), so the
hold is set below them to keep the run short — the client sees the connection close after the hold, the write
having been applied, which is what a timed-out answer is to it.

Every knob is a module constant, overridable from the environment (``CHAOS_KILLS=3 CHAOS_DURATION_S=20 …``) so
a short variant runs in a couple of minutes; ``make test-chaos`` runs this file with ``-s`` so the counts print.
Marked ``slow`` (so ``make test-slow`` and CI run it: the full run took about 2 minutes on a loaded 2-core machine)
and ``chaos`` (so ``make test-chaos`` selects it alone). Should the full run grow past ~5 minutes, exclude
``chaos`` from ``make test-slow``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from notion_client import Client as NotionClient

from ingest.api import Component, Feature, ingest_dataset, ingest_program, ingest_signature
from replicator.documents import Document, DocumentKey, render
from replicator.graph import ENTITIES
from replicator.sinks.notion.render import MANAGED_MARKER, ContentHash, is_managed_block
from replicator.sinks.notion.schema import CONTENT_HASH, DATABASES, POSTGRES_ID
from replicator.sinks.pinecone import key_of_vector_id, vector_id
from replicator.sinks.pinecone.text import chunk_document
from tests.daemon_harness import wait_for
from tests.e2e.test_pinecone_e2e import INDEX, NS, Replicator, replicator_cli
from tests.emulators.notion import NotionEmulator
from tests.emulators.openai_embeddings import EmbeddingsServer, serve_embeddings
from tests.emulators.pinecone import PineconeEmulator
from tests.emulators.pinecone_fixtures import index_client, pinecone_client

Conn = psycopg.Connection[tuple[Any, ...]]


def _knob(name: str, default: float) -> float:
    return float(os.environ.get(f"CHAOS_{name}", default))


# ---- the knobs (the short variant: CHAOS_KILLS=3 CHAOS_DURATION_S=20 CHAOS_CHANGES=60 and lower rates) ----------
SEED = int(_knob("SEED", 20261202))
REPLICAS = 2
KILLS = int(_knob("KILLS", 20))  # SIGKILLs among the replicas during the storm
DURATION_S = _knob("DURATION_S", 75.0)  # how long the writer writes (and the kills happen)
CHANGES = int(_knob("CHANGES", 300))  # writer operations (each one committed transaction), spread over DURATION_S
RESTART_PAUSE_S = (_knob("RESTART_PAUSE_MIN_S", 0.3), _knob("RESTART_PAUSE_MAX_S", 2.5))
RATE_429 = _knob("RATE_429", 0.10)
RATE_5XX = _knob("RATE_5XX", 0.05)
APPLY_THEN_FAIL_RATE = _knob("APPLY_THEN_FAIL_RATE", 0.10)
APPLY_THEN_FAIL_TIMEOUT_S = _knob("APPLY_THEN_FAIL_TIMEOUT_S", 2.0)  # below every SDK timeout (see the docstring)
READ_LAG_S = _knob("READ_LAG_S", 2.0)  # Notion queries/search, Pinecone query/list/stats
RETRY_AFTER_S = _knob("RETRY_AFTER_S", 1.0)
LEASE_S = _knob("LEASE_S", 10.0)  # REPLICATOR_LEASE_S: a killed replica's claims come back after this
INITIAL_PROGRAMS, INITIAL_DATASETS, INITIAL_SIGNATURES = 4, 10, 2  # written before the first start (backfilled)
DRAIN_TIMEOUT_S = _knob("DRAIN_TIMEOUT_S", 480.0)
SETTLED_S = _knob("SETTLED_S", 3.0)  # drained = caught up and nothing pending, twice, this far apart
READBACK_PAGE_SIZE = 10  # small, so the read-back crosses many pages of every query and listing
TEST_TIMEOUT_S = int(DURATION_S + DRAIN_TIMEOUT_S + 600)

LIPIDS = (
    *(f"Cer(d18:1/{c}:0)" for c in range(14, 27)),
    *(f"PC 16:0/{c}:{d}" for c in (16, 18, 20, 22) for d in (0, 1, 2)),
    *(f"SM(d18:1/{c}:0)" for c in range(14, 25, 2)),
    *(f"TG {c}:2" for c in range(48, 57, 2)),
)
WORDS = (
    "lipid", "ceramide", "cohort", "plasma", "csf", "neuron", "axon", "decline", "onset", "biomarker", "panel",
    "assay", "batch", "control",
)  # fmt: skip
log = logging.getLogger("tests.chaos")


# ---- the writer --------------------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Random changes through ingest's public API (creates, re-ingests, re-creates) and SQL on the domain tables
    (renames, description growth and shrink, deletes). Keeps its own view of what is live to choose from."""

    conn: Conn
    rng: random.Random
    serial: int = 0
    programs: list[str] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)  # natural key → current name
    gone_datasets: dict[str, str] = field(default_factory=dict)  # deleted: natural key → its last name
    signatures: list[str] = field(default_factory=list)
    gone_signatures: list[str] = field(default_factory=list)
    done: Counter[str] = field(default_factory=Counter)

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def _features(self) -> list[Feature]:
        names = self.rng.sample(LIPIDS, self.rng.randint(3, 9))
        return [
            Feature(n, log2_fold_change=round(self.rng.uniform(-3, 3), 3), p_value=round(self.rng.uniform(0, 0.05), 4))
            for n in names
        ]

    def _components(self) -> list[Component]:
        names = self.rng.sample(LIPIDS, self.rng.randint(3, 6))
        return [Component(n, self.rng.choice(("up", "down")), round(self.rng.uniform(0.5, 2.0), 2)) for n in names]

    def _text(self, words: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(words))

    def _linked_programs(self) -> list[str]:
        k = min(len(self.programs), self.rng.choice((0, 1, 1, 2)))
        return self.rng.sample(self.programs, k)

    # -- operations ------------------------------------------------------------------------------------------------
    def create_program(self) -> None:
        name = f"Program {self._next()}"
        ingest_program(name, db=self.conn, description=self._text(12), disease=[self.rng.choice(("ALS", "FTD"))])
        self.programs.append(name)

    def rename_program(self) -> None:
        old = self.rng.choice(self.programs)
        new = f"{old.split(' (')[0]} (renamed {self._next()})"
        self.conn.execute("UPDATE program SET name = %s WHERE name = %s", (new, old))
        self.programs[self.programs.index(old)] = new

    def delete_program(self) -> None:
        old = self.rng.choice(self.programs)
        self.conn.execute("DELETE FROM program WHERE name = %s", (old,))
        self.programs.remove(old)

    def create_dataset(self, key: str | None = None, name: str | None = None) -> None:
        n = self._next()
        key = key or f"chaos-{n}"
        name = name or f"Dataset {n}"
        ingest_dataset(
            self._features(), key=key, name=name, omics_type="lipidomics", db=self.conn,
            description=self._text(20), programs=self._linked_programs(),
        )  # fmt: skip
        self.datasets[key] = name

    def update_dataset(self) -> None:
        key = self.rng.choice(sorted(self.datasets))
        ingest_dataset(
            self._features(), key=key, name=self.datasets[key], omics_type="lipidomics", db=self.conn,
            description=self._text(20), programs=self._linked_programs(),
        )  # fmt: skip

    def rename_dataset(self) -> None:
        key = self.rng.choice(sorted(self.datasets))
        new = f"{self.datasets[key].split(' (')[0]} (renamed {self._next()})"
        self.conn.execute("UPDATE dataset SET name = %s WHERE natural_key = %s", (new, key))
        self.datasets[key] = new

    def grow_dataset(self) -> None:
        """A long description: the document grows to several chunks (and Notion text past one rich-text item)."""
        key = self.rng.choice(sorted(self.datasets))
        text = self._text(self.rng.randint(400, 1200))
        self.conn.execute("UPDATE dataset SET description = %s WHERE natural_key = %s", (text, key))

    def shrink_dataset(self) -> None:
        key = self.rng.choice(sorted(self.datasets))
        self.conn.execute("UPDATE dataset SET description = %s WHERE natural_key = %s", (self._text(5), key))

    def delete_dataset(self) -> None:
        key = self.rng.choice(sorted(self.datasets))
        self.conn.execute("DELETE FROM dataset WHERE natural_key = %s", (key,))
        self.gone_datasets[key] = self.datasets.pop(key)

    def recreate_dataset(self) -> None:
        """The same natural key and name again: a new row (a new Postgres ID), so a new page and new vectors."""
        key = self.rng.choice(sorted(self.gone_datasets))
        self.create_dataset(key, self.gone_datasets.pop(key))

    def create_signature(self, name: str | None = None) -> None:
        name = name or f"Signature {self._next()}"
        ingest_signature(
            self._components(), name=name, db=self.conn, description=self._text(10), programs=self._linked_programs()
        )
        self.signatures.append(name)

    def rename_signature(self) -> None:
        old = self.rng.choice(self.signatures)
        new = f"{old.split(' (')[0]} (renamed {self._next()})"
        self.conn.execute("UPDATE signature SET name = %s WHERE name = %s", (new, old))
        self.signatures[self.signatures.index(old)] = new

    def delete_signature(self) -> None:
        old = self.rng.choice(self.signatures)
        self.conn.execute("DELETE FROM signature WHERE name = %s", (old,))
        self.signatures.remove(old)
        self.gone_signatures.append(old)

    def recreate_signature(self) -> None:
        name = self.rng.choice(self.gone_signatures)
        self.gone_signatures.remove(name)
        self.create_signature(name)

    def step(self) -> str:
        """One random operation among those possible now; returns its name."""
        weights = {
            "create_dataset": 4.0,
            "update_dataset": 3.0 if self.datasets else 0,
            "rename_dataset": 3.0 if self.datasets else 0,
            "grow_dataset": 1.5 if self.datasets else 0,
            "shrink_dataset": 1.5 if self.datasets else 0,
            "delete_dataset": 2.0 if len(self.datasets) > 3 else 0,
            "recreate_dataset": 1.5 if self.gone_datasets else 0,
            "create_program": 1.0,
            "rename_program": 1.0 if self.programs else 0,
            "delete_program": 0.5 if len(self.programs) > 2 else 0,
            "create_signature": 0.8,
            "rename_signature": 1.0 if self.signatures else 0,
            "delete_signature": 0.6 if len(self.signatures) > 1 else 0,
            "recreate_signature": 0.5 if self.gone_signatures else 0,
        }
        names = [n for n, w in weights.items() if w > 0]
        op = self.rng.choices(names, [weights[n] for n in names])[0]
        getattr(self, op)()
        self.done[op] += 1
        return op


# ---- the replicas and the storm ----------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The replicas, the kills done to them, and any exit none of us asked for (restarted, and counted)."""

    replicas: list[Replicator]
    kills: list[tuple[float, int, float]] = field(default_factory=list)  # (at s, replica, pause s)
    crashes: list[tuple[int, int | None]] = field(default_factory=list)  # (replica, exit code)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def supervise(self) -> None:
        with self.lock:
            for number, replica in enumerate(self.replicas):
                if replica.proc is not None and replica.proc.poll() is not None:
                    self.crashes.append((number, replica.proc.returncode))
                    replica.start()

    def kill(self, number: int, pause_s: float, started: float) -> None:
        self.supervise()
        with self.lock:
            self.replicas[number].kill()
            self.kills.append((round(time.monotonic() - started, 1), number, round(pause_s, 2)))
        time.sleep(pause_s)
        with self.lock:
            self.replicas[number].start()


def storm(fleet: Fleet, rng: random.Random, started: float, stop: threading.Event) -> None:
    """``KILLS`` SIGKILLs at random moments of the storm, each followed by a restart after a random pause."""
    moments = sorted(rng.uniform(0.5, max(DURATION_S - 1.0, 1.0)) for _ in range(KILLS))
    for moment in moments:
        while time.monotonic() - started < moment:
            if stop.wait(0.05):
                return
        fleet.kill(rng.randrange(len(fleet.replicas)), rng.uniform(*RESTART_PAUSE_S), started)


# ---- reading what the replicator and the services say ------------------------------------------------------------


def status_json(env: dict[str, str]) -> dict[str, Any]:
    result = replicator_cli(env, "status", "--json")
    assert result.returncode == 0, result.stderr
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def drained(env: dict[str, str], conn: Conn, end_lsn: str, fleet: Fleet) -> dict[str, Any] | None:
    """The status when the slot has confirmed ``end_lsn`` and no enabled sink has an outbox row, else None."""
    fleet.supervise()
    status = status_json(env)
    confirmed = status["slot"].get("confirmed_flush_lsn")
    if not confirmed:
        return None
    (caught_up,) = conn.execute("SELECT %s::pg_lsn >= %s::pg_lsn", (confirmed, end_lsn)).fetchone() or (False,)
    pending = {s["name"]: s["pending"] for s in status["sinks"] if s["enabled"]}
    if caught_up and set(pending) == {"notion", "pinecone"} and not any(pending.values()):
        return status
    return None


def verify_json(env: dict[str, str], *extra: str) -> tuple[int, dict[str, Any]]:
    result = replicator_cli(env, "verify", "--json", *extra)
    assert result.returncode in (0, 1, 3), result.stderr
    if result.returncode == 3:
        return 3, {"in_sync": False, "error": result.stderr.strip()}
    payload: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, payload


def verify_summary(payload: dict[str, Any]) -> dict[str, Any]:
    if "sinks" not in payload:
        return payload
    return {
        s["sink"]: {k: (len(s[k]) if isinstance(s[k], list) else s[k]) for k in s if k != "sink"}
        for s in payload["sinks"]
    }


def documents(conn: Conn) -> dict[DocumentKey, Document]:
    """Every current row, rendered as the replicator renders it (one REPEATABLE READ snapshot)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        keys = [DocumentKey(e, row[0]) for e in ENTITIES for row in conn.execute(f"SELECT id FROM {e}")]
        rendered = render(conn, keys)
    return {k: d for k, d in rendered.items() if d is not None}


def row_names(conn: Conn) -> dict[DocumentKey, str]:
    """Postgres ID → the row's name, straight from the domain tables (the titles the services must show)."""
    return {DocumentKey(e, i): n for e in ENTITIES for i, n in conn.execute(f"SELECT id, name FROM {e}")}


def _plain(prop: dict[str, Any] | None) -> str:
    if not prop:
        return ""
    return "".join(part.get("plain_text", "") for part in prop.get(prop.get("type") or "rich_text") or [])


def managed_sections(client: Any, page_id: str) -> int:
    """How many copies of the sink's managed toggle a page holds (top-level blocks, every page of children)."""
    count = 0
    cursor: str | None = None
    while True:
        extra = {"start_cursor": cursor} if cursor else {}
        answer = client.blocks.children.list(page_id, page_size=100, **extra)
        count += sum(1 for block in answer["results"] if is_managed_block(block))
        if not answer.get("has_more"):
            return count
        cursor = answer["next_cursor"]


def notion_readback(
    env: dict[str, str], docs: dict[DocumentKey, Document], names: dict[DocumentKey, str]
) -> dict[str, Any]:
    """Every live page of the four data sources through notion-client, compared with Postgres."""
    # notion-client types its answers as ``Any | Awaitable[Any]`` even on the sync client: held as Any.
    client: Any = NotionClient(
        auth=env["NOTION_API_KEY"], base_url=env["NOTION_BASE_URL"], logger=logging.getLogger("tests.chaos.sdk")
    )
    pages_by_key: dict[DocumentKey, list[dict[str, Any]]] = defaultdict(list)
    found: dict[str, list[Any]] = defaultdict(list)
    queries = 0
    try:
        for entity, spec in DATABASES.items():
            database = client.databases.retrieve(env[spec.env_var])
            [source] = database["data_sources"]
            cursor: str | None = None
            while True:
                extra = {"start_cursor": cursor} if cursor else {}
                answer = client.data_sources.query(source["id"], page_size=READBACK_PAGE_SIZE, **extra)
                queries += 1
                if (answer.get("request_status") or {}).get("type") == "incomplete":
                    found["incomplete_query"].append(entity)
                for page in answer["results"]:
                    if page.get("in_trash") or page.get("archived"):
                        found["trashed_in_live_query"].append(page["id"])
                        continue
                    raw = _plain(page["properties"].get(POSTGRES_ID)).strip()
                    try:
                        key = DocumentKey(entity, uuid.UUID(raw))
                    except ValueError:
                        found["without_postgres_id"].append(page["id"])
                        continue
                    pages_by_key[key].append(page)
                if not answer.get("has_more"):
                    break
                cursor = answer["next_cursor"]
        sections = {p["id"]: managed_sections(client, p["id"]) for k in docs for p in pages_by_key.get(k, ())}
    finally:
        client.close()
    for key, pages in pages_by_key.items():
        if key not in docs:
            found["orphan"].extend(p["id"] for p in pages)
            continue
        if len(pages) > 1:
            found["duplicated"].append(str(key))
        for page in pages:
            if sections[page["id"]] != 1:
                found["managed_sections_not_one"].append((str(key), sections[page["id"]]))
            title = _plain(page["properties"].get(DATABASES[key.entity].title_property))
            if title != names[key]:
                found["wrong_title"].append((str(key), title, names[key]))
            hashes = ContentHash.parse(_plain(page["properties"].get(CONTENT_HASH)))
            if hashes is None or hashes.doc != docs[key].content_hash():
                found["stale"].append(str(key))
    found["missing"] = [str(k) for k in docs if k not in pages_by_key]
    live = sum(len(p) for p in pages_by_key.values())
    return {"rows": len(docs), "live_pages": live, "queries": queries, "problems": dict(found)}


def pinecone_readback(
    emulator: PineconeEmulator, docs: dict[DocumentKey, Document], names: dict[DocumentKey, str]
) -> dict[str, Any]:
    """Every vector id of the namespace (pinecone list, paginated) and its metadata (fetch), compared with
    Postgres: per document exactly its current chunks, with current metadata; nothing else."""
    pc = pinecone_client(emulator)
    index = index_client(pc, INDEX)
    found: dict[str, list[Any]] = defaultdict(list)
    try:
        ids = [v.id for page in index.list(namespace=NS, limit=READBACK_PAGE_SIZE) for v in page.vectors if v.id]
        metadata: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 100):
            response = index.fetch(ids=ids[start : start + 100], namespace=NS)
            metadata.update({vid: dict(v.metadata or {}) for vid, v in response.vectors.items()})
    finally:
        index.close()
        pc.close()
    by_key: dict[DocumentKey, set[str]] = defaultdict(set)
    for vid in ids:
        key = key_of_vector_id(vid)
        if key is None or key not in docs:
            found["orphan"].append(vid)
        else:
            by_key[key].add(vid)
    for key, document in docs.items():
        chunks = chunk_document(document)
        want = {vector_id(key, n) for n in range(len(chunks))}
        have = by_key.get(key, set())
        if not have:
            found["missing"].append(str(key))
            continue
        if have - want:
            found["surplus_chunks"].append((str(key), len(have - want)))
        if want - have:
            found["missing_chunks"].append((str(key), len(want - have)))
        for vid in sorted(have & want):
            meta = metadata.get(vid)
            if meta is None:
                found["unfetchable"].append(vid)
                continue
            if meta.get("name") != names[key]:
                found["wrong_name"].append((vid, meta.get("name"), names[key]))
            if meta.get("content_hash") != document.content_hash() or meta.get("chunk_count") != len(chunks):
                found["stale"].append(vid)
            if meta.get("postgres_id") != str(key.id) or meta.get("entity") != key.entity:
                found["wrong_identity"].append(vid)
    return {"documents": len(docs), "vectors": len(ids), "problems": {k: v for k, v in found.items() if v}}


def notion_duplicate_history(emulator: NotionEmulator, docs: dict[DocumentKey, Document]) -> dict[str, int]:
    """From the emulator's own state (every page ever created, trashed ones included): pages created beyond the
    first for one Postgres ID (duplicates created), and how many of those are in the trash now (swept)."""
    pages: dict[str, list[bool]] = defaultdict(list)  # Postgres ID → in_trash of each of its pages
    for page in emulator.state()["pages"].values():
        postgres_id = page["properties"].get("Postgres ID")
        if page["data_source_id"] and postgres_id:
            pages[str(postgres_id)].append(bool(page["in_trash"]))
    current = {str(k.id) for k in docs}
    created = sum(len(p) - 1 for p in pages.values())
    unswept = sum(max(0, p.count(False) - 1) for pid, p in pages.items() if pid in current)
    unswept += sum(p.count(False) for pid, p in pages.items() if pid not in current)
    return {"duplicates_created": created, "duplicates_swept": created - unswept, "left_live": unswept}


def log_events(logs: list[Path]) -> Counter[str]:
    """Counts of the sinks' events in the replicas' JSON logs (a SIGKILLed process may have lost its last lines)."""
    counts: Counter[str] = Counter()
    created: Counter[str] = Counter()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            event = str(entry.get("event", ""))
            if event == "notion.page_created":
                created[str(entry.get("key"))] += 1
            elif event == "notion.duplicates_trashed":
                counts["notion.duplicate_pages_trashed"] += len(entry.get("trashed") or [])
            if event.startswith(("notion.", "pinecone.")) or "duplicate" in event:
                counts[event] += 1
    counts["notion.keys_created_more_than_once"] = sum(1 for n in created.values() if n > 1)
    return counts


def creates_of(logs: list[Path], keys: list[str]) -> dict[str, list[str]]:
    """The ``notion.page_created`` events of these keys (``entity:uuid``), as "replica-N.log at <ts>"."""
    out: dict[str, list[str]] = defaultdict(list)
    wanted = set(keys)
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"notion.page_created"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("key") in wanted:
                out[str(entry["key"])].append(f"{path.name} at {entry.get('ts')} page {entry.get('page_id')}")
    return dict(out)


def create_requests_of(emulator: NotionEmulator, keys: list[str]) -> dict[str, list[str]]:
    """The ``POST /v1/pages`` the Notion emulator received for these keys, and whether each was applied with its
    answer lost ("no answer lost": applied and answered, or refused by a 429/5xx drawn before applying)."""
    wanted = {k.split(":", 1)[1]: k for k in keys}
    out: dict[str, list[str]] = defaultdict(list)
    for request in list(emulator.requests):
        if request["method"] != "POST" or request["path"] != "/v1/pages":
            continue
        prop = ((request.get("body") or {}).get("properties") or {}).get(POSTGRES_ID) or {}
        postgres_id = "".join(t.get("text", {}).get("content", "") for t in prop.get("rich_text") or [])
        if postgres_id in wanted:
            lost = request.get("apply_then_fail")
            stamp = time.strftime("%H:%M:%S", time.gmtime(request["at"])) + f".{int(request['at'] * 1000) % 1000:03d}"
            out[wanted[postgres_id]].append(
                f"at {stamp}Z" + (f", applied, answer lost ({lost})" if lost else ", no answer lost")
            )
    return dict(out)


def duplicate_figures(status: dict[str, Any], logs: list[Path]) -> dict[str, Any]:
    """Whatever ``status --json`` and the live replicas' /metrics say about duplicates (per-process metrics
    restart at zero after a kill, so they cover the last life of each replica only)."""
    out: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif "duplicat" in path.lower():
            out[f"status:{path}"] = value

    walk(status, "")
    for path in logs:
        urls = re.findall(r'"event": ?"http\.listening"[^\n]*?"url": ?"([^"]+)"', path.read_text(errors="replace"))
        urls += re.findall(r'"url": ?"([^"]+)"[^\n]*?"event": ?"http\.listening"', path.read_text(errors="replace"))
        if not urls:
            continue
        try:
            with urllib.request.urlopen(f"{urls[-1].rstrip('/')}/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if "duplicat" in line and not line.startswith("#"):
                out[f"{path.stem}:{line.rsplit(' ', 1)[0]}"] = float(line.rsplit(" ", 1)[1])
    return out


# ---- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    with serve_embeddings(dimension=32) as server:
        yield server


@pytest.fixture
def chaos_env(
    db_url: str, notion_emulator: NotionEmulator, pinecone_emulator: PineconeEmulator, embeddings: EmbeddingsServer
) -> dict[str, str]:
    """Both sinks on the emulators, as the e2e tests set them up (`notion init`, `pinecone init`), with a short
    lease so a killed replica's claims come back within the run."""
    env = {
        "POSTGRES_URL": db_url,
        "REPLICATOR_SLOT": f"chaos_{uuid.uuid4().hex[:8]}",
        "REPLICATOR_SINKS": "notion,pinecone",
        "REPLICATOR_HTTP_ADDR": "127.0.0.1:0",
        "REPLICATOR_HEARTBEAT_INTERVAL_S": "0.5",
        "REPLICATOR_BATCH_MAX_WAIT_MS": "50",
        "REPLICATOR_STANDBY_POLL_S": "0.5",
        "REPLICATOR_WORKER_IDLE_POLL_S": "0.5",
        "REPLICATOR_RETRY_BASE_S": "0.05",
        "REPLICATOR_RETRY_MAX_S": "1",
        "REPLICATOR_DEFER_S": "0.5",
        "REPLICATOR_LEASE_S": f"{LEASE_S:g}",
        "REPLICATOR_LOG_FORMAT": "json",
        "NOTION_API_KEY": notion_emulator.token,
        "NOTION_BASE_URL": notion_emulator.url,
        "NOTION_RATE_PER_S": "30",
        "PINECONE_API_KEY": pinecone_emulator.api_key,
        "PINECONE_CONTROLLER_HOST": pinecone_emulator.url,
        "PINECONE_INDEX": INDEX,
        "PINECONE_NAMESPACE": NS,
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_MODEL": "hash-embedding",
        "OPENAI_BASE_URL": embeddings.base_url,
    }
    init = replicator_cli(env, "notion", "init", "--parent-page", notion_emulator.root_page_id)
    assert init.returncode == 0, init.stderr
    for line in init.stdout.splitlines():
        name, value = line.split("=", 1)
        env[name] = value
    assert replicator_cli(env, "pinecone", "init").returncode == 0
    return env


@pytest.fixture
def fleet(chaos_env: dict[str, str], tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet([Replicator(chaos_env, tmp_path / f"replica-{n}.log") for n in range(REPLICAS)])
    try:
        yield f
    finally:
        with f.lock:
            for replica in f.replicas:
                if replica.proc is not None and replica.proc.poll() is None:
                    replica.kill()


# ---- the test ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_after_kills_and_faults_in_both_services_verify_is_clean_and_both_sinks_hold_exactly_postgres(
    conn: Conn,
    chaos_env: dict[str, str],
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    writer = Writer(conn, random.Random(rng.random()))
    for _ in range(INITIAL_PROGRAMS):
        writer.create_program()
    for _ in range(INITIAL_DATASETS):
        writer.create_dataset()
    for _ in range(INITIAL_SIGNATURES):
        writer.create_signature()
    initial = INITIAL_PROGRAMS + INITIAL_DATASETS + INITIAL_SIGNATURES

    faults = {
        "rate_429": RATE_429,
        "rate_5xx": RATE_5XX,
        "retry_after_s": RETRY_AFTER_S,
        "apply_then_fail_rate": APPLY_THEN_FAIL_RATE,
        "apply_then_fail_timeout_s": APPLY_THEN_FAIL_TIMEOUT_S,
        "read_lag_s": READ_LAG_S,
    }
    notion_emulator.set_faults({**faults, "seed": rng.randrange(2**31)})
    pinecone_emulator.set_faults({**faults, "seed": rng.randrange(2**31)})
    for replica in fleet.replicas:
        replica.start()

    # The storm: the writer here, the kills in a thread, both on their own seeded RNG.
    started = time.monotonic()
    stop = threading.Event()
    killer = threading.Thread(target=storm, args=(fleet, random.Random(rng.random()), started, stop), daemon=True)
    killer.start()
    try:
        for number in range(CHANGES):
            delay = started + DURATION_S * number / CHANGES - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            writer.step()
        killer.join(DURATION_S + 60)
    finally:
        stop.set()
    assert not killer.is_alive()
    storm_s = time.monotonic() - started
    (end_lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("",)

    # Faults off; both replicas running; wait until everything written has gone through.
    notion_emulator.set_faults({})
    pinecone_emulator.set_faults({})
    fleet.supervise()
    drain_started = time.monotonic()

    def settled() -> dict[str, Any] | None:
        if drained(chaos_env, conn, end_lsn, fleet) is None:
            return None
        time.sleep(SETTLED_S)
        return drained(chaos_env, conn, end_lsn, fleet)

    status = wait_for(settled, timeout=DRAIN_TIMEOUT_S, what="the replicas drained")
    drain_s = time.monotonic() - drain_started

    # The checks, on what the services hold right after draining (nothing repaired yet).
    verify_code, verify_payload = verify_json(chaos_env)
    docs = documents(conn)
    names = row_names(conn)
    notion = notion_readback(chaos_env, docs, names)
    pinecone = pinecone_readback(pinecone_emulator, docs, names)
    history = notion_duplicate_history(notion_emulator, docs)
    logs = [r.log for r in fleet.replicas]
    events = log_events(logs)
    dead_letters = {s["name"]: s["dead_letters"] for s in status["sinks"]}
    lost_answers = {
        "notion": sum(1 for r in notion_emulator.requests if "apply_then_fail" in r),
        "pinecone": sum(1 for r in pinecone_emulator.requests if "apply_then_fail" in r),
    }
    report: dict[str, Any] = {
        "seed": SEED,
        "kills": len(fleet.kills),
        "kill_schedule": fleet.kills,
        "replica_exits_not_ours": fleet.crashes,
        "changes_written": sum(writer.done.values()),
        "initial_rows": initial,
        "changes_by_kind": dict(writer.done),
        "storm_s": round(storm_s, 1),
        "drain_s": round(drain_s, 1),
        "slot_lag_s_when_drained": status["slot"].get("lag_seconds"),
        "lost_answers_injected": lost_answers,
        "requests": {"notion": len(notion_emulator.requests), "pinecone": len(pinecone_emulator.requests)},
        "dead_letters": dead_letters,
        "verify_exit": verify_code,
        "verify": verify_summary(verify_payload),
        "notion_readback": {**notion, "problems": {p: len(x) for p, x in notion["problems"].items()}},
        "pinecone_readback": {**pinecone, "problems": {p: len(x) for p, x in pinecone["problems"].items()}},
        "notion_duplicates_from_emulator_state": history,
        "duplicates_reported_by_replicator": duplicate_figures(status, logs),
        "log_events": dict(events),
    }

    print("\nCHAOS REPORT " + json.dumps(report, indent=1, default=str))
    print("CHAOS DETAIL notion " + json.dumps(notion["problems"], default=str)[:4000])
    if notion["problems"].get("duplicated"):
        duplicated = notion["problems"]["duplicated"]
        print("CHAOS DETAIL creates logged " + json.dumps(creates_of(logs, duplicated), indent=1))
        print("CHAOS DETAIL creates received " + json.dumps(create_requests_of(notion_emulator, duplicated), indent=1))
    print("CHAOS DETAIL pinecone " + json.dumps(pinecone["problems"], default=str)[:4000])
    if not verify_payload.get("in_sync"):
        # Recorded, never what makes the test pass: what repair enqueues, and whether it would have converged.
        _, repaired = verify_json(chaos_env, "--repair")
        print("CHAOS REPAIR would enqueue " + json.dumps(repaired.get("repair"), default=str))
        try:
            wait_for(lambda: drained(chaos_env, conn, end_lsn, fleet), timeout=DRAIN_TIMEOUT_S, what="repair drained")
            print("CHAOS REPAIR then verify " + json.dumps(verify_summary(verify_json(chaos_env)[1])))
        except AssertionError as error:
            print(f"CHAOS REPAIR {error}")
    exits = [replica.stop() for replica in fleet.replicas]

    # Every invariant is checked, and every one that fails is named.
    failed = [
        *([f"{len(fleet.kills)} kills done, {KILLS} planned"] if len(fleet.kills) != KILLS else []),
        *([f"verify after draining (exit {verify_code}): {report['verify']}"] if not verify_payload["in_sync"] else []),
        *[f"notion read-back: {k} {len(v)}" for k, v in notion["problems"].items() if v],
        *[f"pinecone read-back: {k} {len(v)}" for k, v in pinecone["problems"].items()],
        *([f"{notion['live_pages']} live pages for {len(docs)} rows"] if notion["live_pages"] != len(docs) else []),
        *([f"dead letters {dead_letters}"] if any(dead_letters.values()) else []),
        *([f"replicas exited on their own: {fleet.crashes}"] if fleet.crashes else []),
        *([f"replica exit codes on SIGTERM: {exits}"] if any(exits) else []),
    ]
    assert failed == [], "chaos invariants failed:\n" + "\n".join(failed)


@pytest.mark.slow
def test_the_readback_reports_each_drift_it_checks_for(
    conn: Conn,
    chaos_env: dict[str, str],
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    tmp_path: Path,
) -> None:
    """The chaos test's own checks can fail: after one clean sync (no faults, no kills) drift is planted through
    the SDKs, one of each kind, and the read-back names exactly those."""
    writer = Writer(conn, random.Random(5))
    writer.create_program()
    writer.create_dataset()
    writer.create_dataset()
    writer.create_signature()
    fleet = Fleet([Replicator(chaos_env, tmp_path / "replica.log")])
    fleet.replicas[0].start()
    try:
        (end_lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("",)
        wait_for(lambda: drained(chaos_env, conn, end_lsn, fleet), timeout=120, what="the first sync")
    finally:
        assert fleet.replicas[0].stop() == 0
    docs, names = documents(conn), row_names(conn)
    clean_notion = notion_readback(chaos_env, docs, names)
    clean_pinecone = pinecone_readback(pinecone_emulator, docs, names)
    assert {k: v for k, v in clean_notion["problems"].items() if v} == {}
    assert clean_notion["queries"] == 4  # one page of results per data source
    assert clean_pinecone["problems"] == {}

    program = next(k for k in docs if k.entity == "program")
    first, second = sorted(k for k in docs if k.entity == "dataset")
    signature = next(k for k in docs if k.entity == "signature")
    pages = {p["properties"].get("Postgres ID"): p for p in notion_emulator.state()["pages"].values()}
    sdk: Any = NotionClient(auth=chaos_env["NOTION_API_KEY"], base_url=chaos_env["NOTION_BASE_URL"])
    try:

        def text(value: str) -> dict[str, Any]:
            return {"rich_text": [{"text": {"content": value}}]}

        def new_page(entity: str, title: str, postgres_id: str | None, content_hash: str = "") -> None:
            spec = DATABASES[entity]
            properties = {spec.title_property: {"title": [{"text": {"content": title}}]}}
            if postgres_id is not None:
                properties[POSTGRES_ID] = text(postgres_id)
            if content_hash:
                properties[CONTENT_HASH] = text(content_hash)
            parent = {"type": "data_source_id", "data_source_id": pages[str(program.id)]["data_source_id"]}
            if entity != "program":
                parent["data_source_id"] = pages[str(first.id)]["data_source_id"]
            sdk.pages.create(parent=parent, properties=properties)

        # A second page for one row, in step with it (so it counts as a duplicate, nothing else).
        new_page("dataset", names[first], str(first.id), str(pages[str(first.id)]["properties"][CONTENT_HASH]))
        new_page("program", "Gone program", str(uuid.uuid4()))  # a page whose row does not exist
        new_page("program", "A page someone made", None)  # a page without a Postgres ID
        title = DATABASES["dataset"].title_property
        sdk.pages.update(pages[str(second.id)]["id"], properties={title: {"title": [{"text": {"content": "Old"}}]}})
        sdk.pages.update(pages[str(program.id)]["id"], properties={CONTENT_HASH: text("doc:0000 props:0 body:0")})
        sdk.pages.update(pages[str(signature.id)]["id"], in_trash=True)  # its row still exists: missing
        toggle = {"type": "toggle", "toggle": {"rich_text": [{"text": {"content": f"{MANAGED_MARKER} copy"}}]}}
        sdk.blocks.children.append(pages[str(program.id)]["id"], children=[toggle])  # a second managed section
    finally:
        sdk.close()
    pc = pinecone_client(pinecone_emulator)
    index = index_client(pc, INDEX)
    try:
        values = [0.1] * 32
        surplus = {"id": vector_id(first, 9), "values": values, "metadata": {"name": names[first]}}
        orphan = {"id": vector_id(DocumentKey("dataset", uuid.uuid4()), 0), "values": values, "metadata": {}}
        index.upsert(vectors=[surplus, orphan], namespace=NS, show_progress=False)
        index.update(id=vector_id(second, 0), set_metadata={"name": "Old"}, namespace=NS)
        index.update(id=vector_id(program, 0), set_metadata={"content_hash": "0000"}, namespace=NS)
        chunks = len(chunk_document(docs[signature]))
        index.delete(ids=[vector_id(signature, n) for n in range(chunks)], namespace=NS)
    finally:
        index.close()
        pc.close()

    notion = notion_readback(chaos_env, docs, names)["problems"]
    assert {k: len(v) for k, v in notion.items() if v} == {
        "duplicated": 1, "orphan": 1, "without_postgres_id": 1, "wrong_title": 1, "stale": 1, "missing": 1,
        "managed_sections_not_one": 2,
    }  # fmt: skip
    # The planted duplicate has no body at all; the program page has two sections.
    assert sorted(notion["managed_sections_not_one"]) == sorted([(str(first), 0), (str(program), 2)])
    assert notion["duplicated"] == [str(first)]
    assert notion["wrong_title"] == [(str(second), "Old", names[second])]
    assert notion["stale"] == [str(program)]
    assert notion["missing"] == [str(signature)]
    vectors = pinecone_readback(pinecone_emulator, docs, names)["problems"]
    assert {k: len(v) for k, v in vectors.items()} == {
        "surplus_chunks": 1, "orphan": 1, "wrong_name": 1, "stale": 1, "missing": 1,
    }  # fmt: skip
    assert vectors["surplus_chunks"] == [(str(first), 1)]
    assert vectors["missing"] == [str(signature)]
