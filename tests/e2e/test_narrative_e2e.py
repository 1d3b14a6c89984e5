"""The lab notebook round trip end to end (#14): ``python -m replicator run`` as its own process with both sinks
and ``NARRATIVE_CAPTURE=true``, against the Notion and Pinecone emulators through the real SDKs. A scientist writes
on a dataset's page with the person token; the note reaches ``public.narrative``, then — through the slot, the
outbox and the Pinecone worker, the one CDC path — vectors with ``source: notion``; ``replicator query`` answers
from it with the Postgres document first and the note as evidence with a link to the page; an edit and a delete
follow. With ``ENABLE_DUAL_WRITE=false`` the replicator writes nothing to Notion and the capture goes on.

Printed, not asserted: the capture delay (the note written → the row in Postgres) p50 / p99 over several notes.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator.documents import DocumentKey, render
from replicator.sinks.notion import notion_client
from tests.daemon_harness import wait_for
from tests.e2e.test_notion_e2e import _live_page, both_env, embedding_server
from tests.e2e.test_pinecone_e2e import INDEX, NS, Replicator, ingest_samples, replicator_cli, verify
from tests.emulators.notion import PERSON_TOKEN, NotionEmulator
from tests.emulators.pinecone import PineconeEmulator

__all__ = ["both_env", "embedding_server"]  # fixtures, imported for this module's tests

Conn = psycopg.Connection[tuple[Any, ...]]
NotionSdk = Any

pytestmark = pytest.mark.slow


@pytest.fixture
def person(notion_emulator: NotionEmulator) -> Iterator[NotionSdk]:
    client = notion_client(PERSON_TOKEN, notion_emulator.url)
    yield client
    client.close()


@pytest.fixture
def capture_env(both_env: dict[str, str]) -> dict[str, str]:
    return {**both_env, "NARRATIVE_CAPTURE": "true", "NARRATIVE_POLL_S": "0.5", "NOTION_SETTLE_MS": "200"}


@pytest.fixture
def daemon(capture_env: dict[str, str], tmp_path: Path) -> Iterator[Replicator]:
    r = Replicator(capture_env, tmp_path / "replicator.log")
    try:
        yield r
    finally:
        if r.proc is not None and r.proc.poll() is None:
            r.kill()


def _paragraph(text: str) -> dict[str, Any]:
    return {"type": "paragraph", "paragraph": {"rich_text": [{"type": "text", "text": {"content": text}}]}}


def _narrative_text(conn: Conn, key: DocumentKey) -> str | None:
    row = conn.execute(
        "SELECT text FROM narrative WHERE entity = %s AND entity_id = %s", (key.entity, key.id)
    ).fetchone()
    return None if row is None else str(row[0])


def _has_text(conn: Conn, key: DocumentKey, text: str) -> bool:
    return text in (_narrative_text(conn, key) or "")


def _note_vectors(emulator: PineconeEmulator, key: DocumentKey) -> list[dict[str, Any]]:
    if INDEX not in emulator.index_names():
        return []
    vectors = emulator.vectors(INDEX, NS).values()
    return [
        dict(v.metadata or {})
        for v in vectors
        if (v.metadata or {}).get("postgres_id") == str(key.id) and (v.metadata or {}).get("source") == "notion"
    ]


def _current_in_pinecone(conn: Conn, emulator: PineconeEmulator, key: DocumentKey) -> bool:
    """The document's note vectors are there and carry its current content hash."""
    document = render(conn, [key])[key]
    notes = _note_vectors(emulator, key)
    return document is not None and bool(notes) and all(m["content_hash"] == document.content_hash() for m in notes)


def _query(env: dict[str, str], question: str, *extra: str) -> list[dict[str, Any]]:
    result = replicator_cli(env, "query", question, "--top-k", "4", "--json", *extra)
    assert result.returncode == 0, result.stderr
    hits: list[dict[str, Any]] = json.loads(result.stdout)["hits"]
    return hits


def _has_page(emulator: NotionEmulator, key: DocumentKey) -> bool:
    pages = emulator.state()["pages"].values()
    return any(p["properties"].get("Postgres ID") == str(key.id) and not p["in_trash"] for p in pages)


def _lipids(conn: Conn) -> DocumentKey:
    (lipids_id,) = conn.execute("SELECT id FROM dataset WHERE natural_key = 'lipids'").fetchone() or ()
    return DocumentKey("dataset", lipids_id)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_a_note_written_in_notion_reaches_postgres_and_query_and_its_edit_and_delete_follow(
    conn: Conn,
    db_url: str,
    capture_env: dict[str, str],
    sample_data: Path,
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    person: NotionSdk,
    daemon: Replicator,
) -> None:
    ingest_samples(db_url, sample_data / "samples")
    daemon.start()
    lipids = _lipids(conn)
    wait_for(lambda: _has_page(notion_emulator, lipids), what="the lipids page in Notion")
    page_id = str(_live_page(notion_emulator, str(lipids.id))["id"])

    # Several notes, one after the other: each must reach Postgres; the delay is printed.
    delays: list[float] = []
    note_ids: list[str] = []
    for n in range(10):
        text = f"Observation {n}: mitochondrial swelling seen by cryo-EM in batch {n}"
        written = time.monotonic()
        answer = person.blocks.children.append(page_id, children=[_paragraph(text)])
        note_ids.append(str(answer["results"][0]["id"]))
        wait_for(functools.partial(_has_text, conn, lipids, text), what=f"note {n} in Postgres")
        delays.append(time.monotonic() - written)
    print(
        f"\n[narrative e2e] capture delay over {len(delays)} notes: p50 {statistics.median(delays):.2f}s, "
        f"p99 {_percentile(delays, 0.99):.2f}s (NARRATIVE_POLL_S=0.5)"
    )

    # Through the slot, the outbox and the worker: vectors that say they came from Notion, with a link.
    wait_for(
        lambda: any("batch 9" in m.get("text", "") for m in _note_vectors(pinecone_emulator, lipids)),
        what="the notes in Pinecone",
    )
    (meta, *_) = _note_vectors(pinecone_emulator, lipids)
    assert meta["entity"] == "dataset"
    assert meta["omics_type"] == "lipidomics"  # the entity's filterable metadata is kept on note vectors
    assert meta["notion_page_id"] == page_id

    hits = _query(capture_env, "mitochondrial swelling cryo-EM observation batch")
    top = next(h for h in hits if h["postgres_id"] == str(lipids.id))
    assert list(top)[:4] == ["entity", "postgres_id", "score", "stale"]  # the Postgres document first …
    (name,) = conn.execute("SELECT name FROM dataset WHERE id = %s", (lipids.id,)).fetchone() or ()
    assert top["name"] == name
    assert top["notes"], top  # … then the notes as evidence
    note = top["notes"][0]
    assert note["source"] == "notion"
    assert "mitochondrial swelling" in note["text"]
    assert note["notion_page_id"] == page_id
    assert note["notion_url"]
    print(f"\n[narrative e2e] query answer citing a Notion note: {json.dumps(top['notes'][0])[:400]}")
    notion_only = _query(capture_env, "mitochondrial swelling cryo-EM observation batch", "--source", "notion")
    assert any(h["postgres_id"] == str(lipids.id) and h["notes"] for h in notion_only)
    structured_only = _query(capture_env, "mitochondrial swelling cryo-EM observation batch", "--source", "postgres")
    assert all(h["notes"] == [] for h in structured_only)

    # Notion never carries the narrative (it is where it comes from) and Pinecone has it: both in sync.
    payload = verify(capture_env)
    assert payload["in_sync"], payload

    # An edit and a delete follow.
    person.blocks.update(note_ids[0], paragraph={"rich_text": [{"type": "text", "text": {"content": "retracted"}}]})
    wait_for(lambda: "retracted" in (_narrative_text(conn, lipids) or ""), what="the edit in Postgres")
    for block_id in note_ids:
        person.blocks.delete(block_id)
    wait_for(lambda: _narrative_text(conn, lipids) is None, what="the delete in Postgres")
    wait_for(lambda: _note_vectors(pinecone_emulator, lipids) == [], what="the note vectors deleted")

    def narrative_status() -> dict[str, Any]:
        status = replicator_cli(capture_env, "status", "--json")
        view: dict[str, Any] = json.loads(status.stdout)["narrative"]
        return view

    # Each round re-reads pages edited in the current minute (Notion rounds edit times), so the backlog drains
    # between rounds rather than staying at zero.
    view = wait_for(lambda: (v := narrative_status())["pages_pending"] == 0 and v, what="an empty backlog")
    assert view["capture"] is True
    assert view["narratives"] == 0
    assert daemon.stop() == 0


def test_notion_read_only_writes_nothing_to_notion_while_capture_goes_on(
    conn: Conn,
    db_url: str,
    capture_env: dict[str, str],
    sample_data: Path,
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    person: NotionSdk,
    tmp_path: Path,
) -> None:
    ingest_samples(db_url, sample_data / "samples")
    first = Replicator({**capture_env, "NARRATIVE_CAPTURE": "false"}, tmp_path / "first.log")
    first.start()
    lipids = _lipids(conn)
    try:
        wait_for(lambda: _has_page(notion_emulator, lipids), what="the lipids page in Notion")
    finally:
        assert first.stop() == 0
    page_id = str(_live_page(notion_emulator, str(lipids.id))["id"])

    read_only = {**capture_env, "ENABLE_DUAL_WRITE": "false"}
    notion_emulator.requests.clear()
    daemon = Replicator(read_only, tmp_path / "read-only.log")
    daemon.start()
    try:
        person.blocks.children.append(page_id, children=[_paragraph("read-only stage: lipid droplets in astrocytes")])
        person.pages.update(page_id, properties={"Omics Type": {"select": {"name": "Proteomics"}}})
        wait_for(lambda: "lipid droplets" in (_narrative_text(conn, lipids) or ""), what="the note in Postgres")
        wait_for(
            lambda: bool(conn.execute("SELECT 1 FROM replicator.property_overwrite").fetchone()),
            what="the overwrite recorded",
        )
        conn.execute("UPDATE dataset SET description = 'changed while read-only' WHERE id = %s", (lipids.id,))
        wait_for(lambda: _current_in_pinecone(conn, pinecone_emulator, lipids), what="the note and change in Pinecone")
    finally:
        assert daemon.stop() == 0
    writes = [
        r
        for r in notion_emulator.requests
        if r["method"] in ("PATCH", "DELETE") or (r["method"] == "POST" and not r["path"].endswith("/query"))
    ]
    person_writes = 2  # the note and the property edit above, made with the person token
    assert len(writes) == person_writes, writes
    assert _live_page(notion_emulator, str(lipids.id))["properties"]["Omics Type"] == "Proteomics"  # not written back

    checked = verify(read_only)  # the pinecone sink (Notion is off) and the overwrite the capture recorded
    assert checked["in_sync"], checked
    overwritten = checked["edited_in_notion_overwritten"]
    assert overwritten["total"] == 1
    assert overwritten["recent"][0]["property"] == "Omics Type"
    assert overwritten["recent"][0]["state"] == "edited in Notion, overwritten"

    rollout = replicator_cli(read_only, "rollout", "status", "--json")
    assert rollout.returncode == 0, rollout.stderr
    payload = json.loads(rollout.stdout)
    print(f"\n[narrative e2e] rollout status --json: {json.dumps(payload)}")
    assert payload["dual_write"] is False
    assert payload["capture"] is True
    assert payload["stage"].startswith("Notion read-only")
    assert payload["counts"]["dataset"]["postgres"] == 3
    assert payload["counts"]["dataset"]["narrative"] == 1
    assert payload["edited_in_notion_overwritten"] == 1
    assert payload["last_verify"]["pinecone"]["in_sync"] is True
