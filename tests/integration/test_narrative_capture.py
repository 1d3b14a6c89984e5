"""Narrative capture (#14) through the real notion-client SDK against the Notion emulator, on a real Postgres.

The replicator's pages are written by the real Notion sink (through the worker); a scientist's edits are made with
the emulator's person token (``ntn_person_token``), so ``last_edited_by`` and the edit times read as they do when
someone types in Notion. Each test drives capture rounds itself (``run_once``) and prints the Notion calls one
captured page cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator.config import Settings
from replicator.documents import DocumentKey, render
from replicator.metrics import Metrics
from replicator.narrative.capture import CaptureOptions, NarrativeCapture, RoundStats, _Calls
from replicator.retry import BackoffPolicy
from replicator.sinks.factory import build_sink
from replicator.sinks.notion import NotionSink, notion_client
from replicator.sinks.notion.render import MANAGED_MARKER, OVERWRITTEN_HASH
from replicator.sinks.pinecone import connect, ensure_index
from replicator.status import collect_status
from tests.daemon_harness import InProcessDaemon, daemon_settings, wait_for
from tests.emulators.notion import PERSON_TOKEN, PERSON_USER, NotionEmulator
from tests.emulators.openai_embeddings import serve_embeddings
from tests.emulators.pinecone import PineconeEmulator
from tests.integration.test_notion_sink import _dataset, _page, _state_hash, _sync, database_ids, sink

__all__ = ["database_ids", "sink"]  # fixtures, imported for this module's tests

Conn = psycopg.Connection[tuple[Any, ...]]
NotionSdk = Any


@pytest.fixture
def person(notion_emulator: NotionEmulator) -> Iterator[NotionSdk]:
    """The real SDK with the person token: a scientist editing pages in Notion."""
    client = notion_client(PERSON_TOKEN, notion_emulator.url)
    yield client
    client.close()


@pytest.fixture
def capture(notion_emulator: NotionEmulator, database_ids: dict[str, str], db_url: str) -> Iterator[NarrativeCapture]:
    metrics = Metrics()
    nc = NarrativeCapture(
        db_url,
        notion_client(notion_emulator.token, notion_emulator.url),
        database_ids,
        options=CaptureOptions(overlap_s=120, rewrite_overwrites=True, lock_name="test"),
        metrics=metrics,
        policy=BackoffPolicy(),
    )
    yield nc
    nc.close()
    nc.client.close()


def _text(value: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"content": value}}]


def _narrative(conn: Conn, key: DocumentKey) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT text, notion_page_id, last_edited_by, content_hash, updated_at FROM narrative "
        "WHERE entity = %s AND entity_id = %s",
        (key.entity, key.id),
    ).fetchone()


def _report(what: str, stats: RoundStats) -> None:
    reads = f"{stats.read_calls / stats.captured:.2f}" if stats.captured else "-"
    print(
        f"\n[narrative] {what}: {stats.calls} Notion calls in the round ({stats.calls - stats.read_calls} for the "
        f"poll of 4 data sources, {stats.read_calls} block reads for {stats.captured} page(s) read of "
        f"{stats.pages_seen} seen: {reads} block reads per captured page)"
    )


@pytest.fixture
def lipids(sink: NotionSink, db_url: str, conn: Conn) -> DocumentKey:
    key = _dataset(conn, "ALS CSF lipids", disease=["ALS"], description="Ceramides in CSF")
    _sync(db_url, conn, sink, key)
    return key


def test_a_persons_note_is_captured_edited_and_deleted(
    capture: NarrativeCapture, person: NotionSdk, notion_emulator: NotionEmulator, lipids: DocumentKey, conn: Conn
) -> None:
    page_id = _page(notion_emulator, lipids)["id"]
    first = capture.run_once()
    assert first.pages_seen == 1
    assert _narrative(conn, lipids) is None  # only the managed section so far: nothing people wrote

    added = person.blocks.children.append(
        page_id,
        children=[
            {"type": "heading_2", "heading_2": {"rich_text": _text("Observations")}},
            {
                "type": "bulleted_list_item",
                "bulleted_list_item": {
                    "rich_text": _text("Cer 18:1 doubles in ALS CSF"),
                    "children": [{"type": "paragraph", "paragraph": {"rich_text": _text("batch 3 only")}}],
                },
            },
            {"type": "to_do", "to_do": {"rich_text": _text("repeat with controls"), "checked": False}},
            {"type": "code", "code": {"rich_text": _text("SELECT 1"), "language": "sql"}},
        ],
    )
    stats = capture.run_once()
    _report("a note added", stats)
    row = _narrative(conn, lipids)
    assert row is not None
    text, stored_page, edited_by, digest, _updated = row
    assert text.split("\n") == [
        "## Observations",
        "- Cer 18:1 doubles in ALS CSF",
        "  batch 3 only",
        "- [ ] repeat with controls",
        "```sql",
        "SELECT 1",
        "```",
    ]
    assert MANAGED_MARKER not in text  # the replicator's section is never captured
    assert stored_page == page_id
    assert edited_by == PERSON_USER["id"]
    assert stats.changed == 1

    bullet = added["results"][1]["id"]
    person.blocks.update(bullet, bulleted_list_item={"rich_text": _text("Cer 18:1 triples in ALS CSF")})
    capture.run_once()
    edited = _narrative(conn, lipids)
    assert edited is not None
    assert "- Cer 18:1 triples in ALS CSF" in edited[0].split("\n")
    assert edited[3] != digest

    for block in added["results"]:
        person.blocks.delete(block["id"])
    deleted = capture.run_once()
    assert deleted.deleted == 1
    assert _narrative(conn, lipids) is None


def test_an_edit_inside_the_managed_section_or_by_the_replicator_changes_nothing(
    capture: NarrativeCapture,
    person: NotionSdk,
    notion_emulator: NotionEmulator,
    lipids: DocumentKey,
    sink: NotionSink,
    db_url: str,
    conn: Conn,
) -> None:
    page = _page(notion_emulator, lipids)
    person.blocks.children.append(page["id"], children=[{"paragraph": {"rich_text": _text("protocol v2 used")}}])
    capture.run_once()
    before = _narrative(conn, lipids)
    assert before is not None
    assert before[0] == "protocol v2 used"

    # A person types inside the managed toggle: the page moves, the row does not.
    toggle = next(b for b in page["blocks"] if b["type"] == "toggle")
    person.blocks.children.append(toggle["id"], children=[{"paragraph": {"rich_text": _text("my edit in there")}}])
    inside = capture.run_once()
    assert inside.captured == 1  # the edit was noticed and the page read …
    assert inside.changed == 0  # … and nothing people own had changed
    assert _narrative(conn, lipids) == before

    # The replicator rewrites the page (a new description in Postgres): no narrative change either.
    conn.execute("UPDATE dataset SET description = 'Ceramides and sphingomyelins in CSF' WHERE id = %s", (lipids.id,))
    _sync(db_url, conn, sink, lipids)
    by_bot = capture.run_once()
    assert by_bot.changed == 0
    assert by_bot.deleted == 0
    assert _narrative(conn, lipids) == before


def test_a_person_changing_an_owned_property_is_recorded_and_postgres_wins(
    capture: NarrativeCapture,
    person: NotionSdk,
    notion_emulator: NotionEmulator,
    lipids: DocumentKey,
    sink: NotionSink,
    db_url: str,
    conn: Conn,
) -> None:
    page_id = _page(notion_emulator, lipids)["id"]
    person.pages.update(page_id, properties={"Omics Type": {"select": {"name": "Proteomics"}}})
    stats = capture.run_once()
    assert stats.overwrites == 1
    rows = conn.execute(
        "SELECT property, edited_by, notion_value, postgres_value FROM replicator.property_overwrite"
    ).fetchall()
    assert rows == [("Omics Type", PERSON_USER["id"], "Proteomics", "Lipidomics")]
    assert capture.metrics.property_overwrites.labels(entity="dataset")._value.get() == 1
    state = _state_hash(conn, lipids)
    assert state is not None
    assert state[1] == OVERWRITTEN_HASH  # handed back to the Notion sink …

    _sync(db_url, conn, sink, lipids)
    assert _page(notion_emulator, lipids)["properties"]["Omics Type"] == "Lipidomics"  # … and Postgres wins
    again = capture.run_once()  # the same edit seen by a later poll is not recorded twice
    assert again.overwrites == 0

    settings = Settings.model_validate({"POSTGRES_URL": db_url})
    view = collect_status(conn, settings).narrative
    assert view is not None
    assert view.overwrites == 1
    (recent,) = view.recent_overwrites
    assert (recent.property, recent.notion_value, recent.state) == (
        "Omics Type",
        "Proteomics",
        "edited in Notion, overwritten",
    )


def test_a_persons_overwrite_while_the_replicators_write_is_pending_is_still_recorded(
    capture: NarrativeCapture,
    person: NotionSdk,
    notion_emulator: NotionEmulator,
    lipids: DocumentKey,
    sink: NotionSink,
    db_url: str,
    conn: Conn,
) -> None:
    """Postgres changed the dataset (Disease, its write dirty in the outbox, not yet done) while a person changed
    Omics Type on the page: the person's change is recorded (who, when, the person's value, Postgres's); Disease,
    which differs on the page only because the replicator has not written it yet, is not."""
    page_id = _page(notion_emulator, lipids)["id"]
    conn.execute("UPDATE dataset SET disease = ARRAY['ALS', 'FTD'] WHERE id = %s", (lipids.id,))
    conn.execute(
        "INSERT INTO replicator.outbox (sink, entity, entity_id) VALUES ('notion', %s, %s) ON CONFLICT DO NOTHING",
        (lipids.entity, lipids.id),
    )
    person.pages.update(page_id, properties={"Omics Type": {"select": {"name": "Proteomics"}}})
    edited = person.pages.retrieve(page_id)

    stats = capture.run_once()

    assert stats.overwrites == 1
    rows = conn.execute(
        "SELECT property, edited_by, edited_at, notion_value, postgres_value FROM replicator.property_overwrite"
    ).fetchall()
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [("Omics Type", PERSON_USER["id"], "Proteomics", "Lipidomics")]
    assert rows[0][2].isoformat().replace("+00:00", ".000Z") == edited["last_edited_time"]
    assert capture.metrics.property_overwrites.labels(entity="dataset")._value.get() == 1
    settings = Settings.model_validate({"POSTGRES_URL": db_url})
    view = collect_status(conn, settings).narrative
    assert view is not None
    assert view.overwrites == 1
    assert [(o.property, o.state) for o in view.recent_overwrites] == [("Omics Type", "edited in Notion, overwritten")]

    _sync(db_url, conn, sink, lipids)  # the pending write lands: Postgres wins on both
    properties = _page(notion_emulator, lipids)["properties"]
    assert (properties["Omics Type"], sorted(properties["Disease"])) == ("Lipidomics", ["ALS", "FTD"])
    assert capture.run_once().overwrites == 0  # the replicator's own write is no person's edit


def test_status_shows_the_backlog_until_the_pages_are_read(
    capture: NarrativeCapture, person: NotionSdk, notion_emulator: NotionEmulator, lipids: DocumentKey, conn: Conn
) -> None:
    page_id = _page(notion_emulator, lipids)["id"]
    person.blocks.children.append(page_id, children=[{"paragraph": {"rich_text": _text("waiting to be read")}}])
    settings = Settings.model_validate({"POSTGRES_URL": "postgresql://unused", "NARRATIVE_CAPTURE": True})
    stats = RoundStats()
    capture.poll(stats, _Calls())  # the poll alone: pages are seen, none is read yet
    pending = collect_status(conn, settings).narrative
    assert pending is not None
    assert pending.capture is True
    assert pending.pages_pending == 1
    assert pending.oldest_pending_edit is not None
    assert pending.oldest_pending_age_s is not None
    capture.capture_pending(stats)
    done = collect_status(conn, settings).narrative
    assert done is not None
    assert done.pages_pending == 0
    assert done.narratives == 1


def test_a_page_seen_again_after_its_minute_is_over_is_not_read_again(
    capture: NarrativeCapture, person: NotionSdk, notion_emulator: NotionEmulator, lipids: DocumentKey, conn: Conn
) -> None:
    page_id = _page(notion_emulator, lipids)["id"]
    person.blocks.children.append(page_id, children=[{"paragraph": {"rich_text": _text("read once")}}])
    capture.run_once()
    # Pretend the read happened long after the page's (minute-rounded) edit: the overlapping window returns the page
    # again, and it costs the query only.
    conn.execute("UPDATE replicator.narrative_page SET checked_at = seen_edit + interval '2 minutes'")
    later = capture.run_once()
    assert later.pages_seen == 1
    assert later.pages_pending == 0
    assert later.captured == 0
    _report("a page seen again, unchanged", later)


def test_a_document_renders_its_narrative_and_only_the_structured_hash_is_notions(
    capture: NarrativeCapture, person: NotionSdk, notion_emulator: NotionEmulator, lipids: DocumentKey, conn: Conn
) -> None:
    before = render(conn, [lipids])[lipids]
    assert before is not None
    person.blocks.children.append(
        _page(notion_emulator, lipids)["id"], children=[{"paragraph": {"rich_text": _text("see gel 4")}}]
    )
    started = time.monotonic()
    capture.run_once()
    print(f"\n[narrative] one capture round after a note: {time.monotonic() - started:.3f}s")
    after = render(conn, [lipids])[lipids]
    assert after is not None
    assert after.narrative is not None
    assert after.narrative.text == "see gel 4"
    assert after.content_hash() != before.content_hash()  # Pinecone re-embeds …
    assert after.structured_hash() == before.structured_hash() == before.content_hash()  # … Notion does not
    settings = Settings.model_validate(
        {"POSTGRES_URL": "postgresql://unused", "NOTION_API_KEY": "k", "PINECONE_API_KEY": "k"}
    )
    wrapped = build_sink("notion", settings)  # what the worker and verify hold: the sink behind its retries
    try:
        assert wrapped.document_hash(after) == after.structured_hash()
    finally:
        wrapped.close()


def test_the_capture_status_rollout_and_verify_commands(
    person: NotionSdk,
    notion_emulator: NotionEmulator,
    lipids: DocumentKey,
    database_ids: dict[str, str],
    db_url: str,
    conn: Conn,
) -> None:
    from typer.testing import CliRunner

    from replicator.cli import app

    env = {
        "POSTGRES_URL": db_url,
        "NOTION_API_KEY": notion_emulator.token,
        "NOTION_BASE_URL": notion_emulator.url,
        "NOTION_PROGRAMS_DB_ID": database_ids["program"],
        "NOTION_EXPERIMENTS_DB_ID": database_ids["experiment"],
        "NOTION_SIGNATURE_DB_ID": database_ids["signature"],
        "NOTION_EXP_DATA_DB_ID": database_ids["dataset"],
        "REPLICATOR_SINKS": "notion",
        "NARRATIVE_CAPTURE": "true",
    }
    page_id = _page(notion_emulator, lipids)["id"]
    person.blocks.children.append(page_id, children=[{"paragraph": {"rich_text": _text("from the CLI round")}}])
    person.pages.update(page_id, properties={"Disease": {"multi_select": [{"name": "FTD"}]}})
    runner = CliRunner()

    captured = runner.invoke(app, ["narrative", "capture", "--json"], env=env)
    assert captured.exit_code == 0, captured.output
    stats = json.loads(captured.stdout)
    assert (stats["changed"], stats["overwrites"]) == (1, 1)
    assert _narrative(conn, lipids) is not None

    shown = runner.invoke(app, ["status"], env={**env, "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "narrative capture" in shown.stdout
    assert "edited in Notion, overwritten" in shown.stdout
    assert "Disease" in shown.stdout

    checked = runner.invoke(app, ["verify"], env={**env, "COLUMNS": "200"})
    assert checked.exit_code == 0, checked.output  # Postgres's value is pending for the sink, the page still ours
    assert "edited in Notion, overwritten (1)" in checked.stdout

    rollout = runner.invoke(app, ["rollout", "status"], env={**env, "COLUMNS": "200"})
    assert rollout.exit_code == 0, rollout.output
    assert "dual write (Postgres -> Notion and Pinecone), narrative capture on" in rollout.stdout
    assert "in sync" in rollout.stdout  # the verify just run


def test_a_persons_table_equation_and_captioned_image_are_captured_as_markdown(
    capture: NarrativeCapture, person: NotionSdk, notion_emulator: NotionEmulator, lipids: DocumentKey, conn: Conn
) -> None:
    page_id = _page(notion_emulator, lipids)["id"]
    rows = [
        {"type": "table_row", "table_row": {"cells": [_text("lipid"), _text("fold change")]}},
        {"type": "table_row", "table_row": {"cells": [_text("Cer 18:1"), _text("2.1")]}},
    ]
    person.blocks.children.append(
        page_id,
        children=[
            {"type": "table", "table": {"table_width": 2, "has_column_header": True, "children": rows}},
            {"type": "equation", "equation": {"expression": r"\log_2 FC = 1.07"}},
            {
                "type": "image",
                "image": {"external": {"url": "https://lab.example.org/gel4.png"}, "caption": _text("gel 4")},
            },
        ],
    )

    stats = capture.run_once()

    _report("a table, an equation and an image", stats)
    row = _narrative(conn, lipids)
    assert row is not None
    assert row[0].split("\n") == [
        "| lipid | fold change |",
        "| --- | --- |",
        "| Cer 18:1 | 2.1 |",
        "$$",
        r"\log_2 FC = 1.07",
        "$$",
        "![gel 4](https://lab.example.org/gel4.png)",
    ]
    assert row[2] == PERSON_USER["id"]


def _note_vectors(emulator: PineconeEmulator, key: DocumentKey) -> list[dict[str, Any]]:
    """The metadata of the key's vectors that carry a note (``source: notion``)."""
    if "omics-move" not in emulator.index_names():
        return []
    vectors = emulator.vectors("omics-move", "notes").values()
    return [
        dict(v.metadata or {})
        for v in vectors
        if (v.metadata or {}).get("postgres_id") == str(key.id) and (v.metadata or {}).get("source") == "notion"
    ]


def test_a_note_moved_to_another_page_leaves_the_first_narrative_and_its_vectors_and_joins_the_second(
    capture: NarrativeCapture,
    person: NotionSdk,
    notion_emulator: NotionEmulator,
    pinecone_emulator: PineconeEmulator,
    lipids: DocumentKey,
    sink: NotionSink,
    db_url: str,
    conn: Conn,
    tmp_path: Path,
) -> None:
    """Notion's API moves pages (POST /v1/pages/{id}/move) but no other block: "Moving databases or other block
    types in the API is not currently supported" (https://developers.notion.com/reference/move-page). A note moved
    in the UI therefore reads, through the API, as its block trashed on page A and the same text appended to page B;
    the narrative rows follow, and their changes reach Pinecone through the slot, the outbox and the worker."""
    plasma = _dataset(conn, "ALS plasma lipids", disease=["ALS"], description="Ceramides in plasma")
    _sync(db_url, conn, sink, plasma)
    page_a, page_b = _page(notion_emulator, lipids)["id"], _page(notion_emulator, plasma)["id"]
    note = "Batch 7 thawed overnight; re-extract before analysis."
    with serve_embeddings(dimension=16) as embeddings:
        pc = connect(pinecone_emulator.api_key, pinecone_emulator.url)
        ensure_index(pc, "omics-move", 16)
        pc.close()
        settings = daemon_settings(
            db_url,
            tmp_path / "recording.jsonl",
            sinks="pinecone",
            PINECONE_API_KEY=pinecone_emulator.api_key,
            PINECONE_CONTROLLER_HOST=pinecone_emulator.url,
            PINECONE_INDEX="omics-move",
            PINECONE_NAMESPACE="notes",
            EMBEDDING_PROVIDER="openai",
            EMBEDDING_MODEL="hash-embedding",
            OPENAI_BASE_URL=embeddings.base_url,
        )
        with InProcessDaemon(settings):
            written = person.blocks.children.append(page_a, children=[{"paragraph": {"rich_text": _text(note)}}])
            capture.run_once()
            stored_a = _narrative(conn, lipids)
            assert stored_a is not None
            assert stored_a[0] == note
            wait_for(lambda: _note_vectors(pinecone_emulator, lipids), timeout=30, what="A's note vectors")

            # The move, as the API shows it: deleted on A, appended (a new block, a new id) on B.
            person.blocks.delete(written["results"][0]["id"])
            person.blocks.children.append(page_b, children=[{"paragraph": {"rich_text": _text(note)}}])
            moved = capture.run_once()

            assert (moved.changed, moved.deleted) == (1, 1)
            assert _narrative(conn, lipids) is None  # A's narrative no longer holds it …
            stored_b = _narrative(conn, plasma)
            assert stored_b is not None
            assert (stored_b[0], stored_b[1], stored_b[2]) == (note, page_b, PERSON_USER["id"])  # … B's does
            wait_for(
                lambda: not _note_vectors(pinecone_emulator, lipids) and _note_vectors(pinecone_emulator, plasma),
                timeout=30,
                what="the note's vectors moved from A to B",
            )
            drained = "SELECT count(*) FROM replicator.outbox WHERE sink = 'pinecone'"
            wait_for(lambda: conn.execute(drained).fetchone() == (0,), timeout=30, what="the outbox drained")
    (on_b, *_) = _note_vectors(pinecone_emulator, plasma)
    assert on_b["source"] == "notion"
    assert on_b["omics_type"] == "lipidomics"  # the entity's filterable metadata kept on the note's vectors
