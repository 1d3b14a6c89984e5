"""The Notion sink updates a page's managed section in place (#15 item 4): a body change costs one block call plus
the properties' PATCH once the section is known, the toggle and its children keep their ids, people's blocks are
untouched, and a lost answer or another process's write makes the next attempt read the section back and
reconcile it exactly. Real notion-client SDK against the emulator, documents from a real Postgres, applied by the
real ``SinkWorker``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from notion_client import Client

from replicator.documents import DocumentKey, render
from replicator.retry import BackoffPolicy
from replicator.sinks.notion import NotionSink, notion_client
from replicator.sinks.notion.render import MANAGED_MARKER, body_children, plain_text
from tests.emulators.notion import PERSON_TOKEN, NotionEmulator
from tests.integration.test_notion_exact import dead_letters, drain, set_faults
from tests.integration.test_notion_sink import _dataset, _page, database_ids

Conn = psycopg.Connection[tuple[Any, ...]]
__all__ = ["database_ids"]  # the fixture, shared with test_notion_sink


def _sink(emulator: NotionEmulator, ids: dict[str, str]) -> NotionSink:
    """A sink with a short SDK timeout (0.4 s), as a replica of its own (its own in-memory state)."""
    sink = NotionSink(
        notion_client(emulator.token, emulator.url, timeout_ms=400),
        ids,
        sleep=lambda _s: None,
        read_lag_s=0.0,
        request_timeout_s=0.4,
        read_policy=BackoffPolicy(),
    )
    sink.check()
    return sink


@pytest.fixture
def sink(notion_emulator: NotionEmulator, database_ids: dict[str, str]) -> Iterator[NotionSink]:
    made = _sink(notion_emulator, database_ids)
    yield made
    made.close()


def _expected(conn: Conn, key: DocumentKey) -> list[tuple[str, str]]:
    doc = render(conn, [key])[key]
    assert doc is not None
    return [(b["type"], plain_text(b[b["type"]]["rich_text"])) for b in body_children(doc)]


def _section(emulator: NotionEmulator, key: DocumentKey) -> dict[str, Any]:
    sections: list[dict[str, Any]] = [b for b in _page(emulator, key)["blocks"] if b["text"].startswith(MANAGED_MARKER)]
    [section] = sections
    return section


def _assert_exact(emulator: NotionEmulator, conn: Conn, key: DocumentKey, note: dict[str, Any]) -> dict[str, Any]:
    """One managed section holding exactly the rendered children; the person's note untouched, after it."""
    section = _section(emulator, key)
    assert [(c["type"], c["text"]) for c in section["children"]] == _expected(conn, key)
    blocks = _page(emulator, key)["blocks"]
    assert [b["id"] for b in blocks] == [section["id"], note["id"]]
    assert (blocks[1]["text"], blocks[1]["last_edited_by"]) == (note["text"], note["last_edited_by"])
    return section


def _person_note(emulator: NotionEmulator, key: DocumentKey) -> dict[str, Any]:
    person = Client(auth=PERSON_TOKEN, base_url=emulator.url, logger=logging.getLogger("tests.person"))
    person.blocks.children.append(
        _page(emulator, key)["id"],
        children=[{"type": "paragraph", "paragraph": {"rich_text": [{"text": {"content": "my lab note"}}]}}],
    )
    person.close()
    note: dict[str, Any] = _page(emulator, key)["blocks"][-1]
    return note


def _calls(emulator: NotionEmulator) -> list[tuple[str, str]]:
    return [(r["method"], r["path"].split("/")[2]) for r in emulator.requests]


def test_a_body_change_costs_two_calls_once_the_section_is_known_and_every_block_keeps_its_id(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    key = _dataset(conn, "D", summary="first summary")
    drain(db_url, conn, sink, key)
    note = _person_note(notion_emulator, key)
    before = _section(notion_emulator, key)

    # The first body change of this process reads the section back (the page's blocks, the toggle's children).
    conn.execute("UPDATE dataset SET summary = 'second summary' WHERE id = %s", (key.id,))
    notion_emulator.requests.clear()
    drain(db_url, conn, sink, key)
    assert _calls(notion_emulator) == [("GET", "blocks"), ("GET", "blocks"), ("PATCH", "blocks"), ("PATCH", "pages")]
    first = _assert_exact(notion_emulator, conn, key, note)

    # Every later one: the changed child patched in place, then the properties.
    for n in range(3):
        conn.execute("UPDATE dataset SET summary = %s WHERE id = %s", (f"summary {n}", key.id))
        notion_emulator.requests.clear()
        drain(db_url, conn, sink, key)
        assert _calls(notion_emulator) == [("PATCH", "blocks"), ("PATCH", "pages")]
        after = _assert_exact(notion_emulator, conn, key, note)
        assert after["id"] == before["id"]
        assert [c["id"] for c in after["children"]] == [c["id"] for c in first["children"]]
    assert _page(notion_emulator, key)["properties"]["Summary"] == "summary 2"

    # A property-only change: one call.
    conn.execute("UPDATE dataset SET data_origin = 'External – Open Dataset' WHERE id = %s", (key.id,))
    notion_emulator.requests.clear()
    drain(db_url, conn, sink, key)
    assert _calls(notion_emulator) == [("PATCH", "pages")]

    # A change of the section's structure (no summary any more: the first child's type changes) is written
    # exactly too, in place or with a fresh toggle, whichever takes fewer calls.
    conn.execute("UPDATE dataset SET summary = NULL, description = NULL WHERE id = %s", (key.id,))
    drain(db_url, conn, sink, key)
    _assert_exact(notion_emulator, conn, key, note)
    conn.execute("UPDATE dataset SET summary = 'back again' WHERE id = %s", (key.id,))
    drain(db_url, conn, sink, key)
    _assert_exact(notion_emulator, conn, key, note)
    assert dead_letters(conn) == []


@pytest.mark.parametrize("kind", ["500", "drop", "timeout"])
@pytest.mark.parametrize("lost", ["in-place update", "fresh toggle"])
def test_a_lost_answer_of_a_section_write_is_reconciled_exactly_by_the_next_attempt(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn, kind: str, lost: str
) -> None:
    key = _dataset(conn, "D", summary="first summary")
    drain(db_url, conn, sink, key)
    note = _person_note(notion_emulator, key)
    conn.execute("UPDATE dataset SET summary = 'second summary' WHERE id = %s", (key.id,))
    drain(db_url, conn, sink, key)  # the section is known now
    if lost == "in-place update":
        change = "UPDATE dataset SET summary = 'third summary' WHERE id = %s"
    else:  # the first child's type changes: a fresh toggle, whose append (the first write) is lost
        change = "UPDATE dataset SET summary = NULL, description = NULL WHERE id = %s"
    conn.execute(change, (key.id,))
    # The next write (the block PATCH, or the fresh toggle's append) is applied and its answer lost.
    set_faults(notion_emulator, apply_then_fail_schedule=[kind], apply_then_fail_timeout_s=0.8)
    notion_emulator.requests.clear()

    drain(db_url, conn, sink, key)

    assert [r["apply_then_fail"] for r in notion_emulator.requests if "apply_then_fail" in r] == [kind]
    _assert_exact(notion_emulator, conn, key, note)
    assert dead_letters(conn) == []


def test_a_page_another_process_wrote_meanwhile_is_read_back_before_it_is_updated_in_place(
    sink: NotionSink, notion_emulator: NotionEmulator, database_ids: dict[str, str], db_url: str, conn: Conn
) -> None:
    other = _sink(notion_emulator, database_ids)
    try:
        key = _dataset(conn, "D", summary="v1")
        drain(db_url, conn, sink, key)
        note = _person_note(notion_emulator, key)
        conn.execute("UPDATE dataset SET summary = 'v2' WHERE id = %s", (key.id,))
        drain(db_url, conn, sink, key)  # this process knows the section now
        # Another replica writes the page twice, back to the very version this process wrote last.
        for summary in ("v3", "v2"):
            conn.execute("UPDATE dataset SET summary = %s WHERE id = %s", (summary, key.id))
            drain(db_url, conn, other, key)
        conn.execute("UPDATE dataset SET summary = 'v4' WHERE id = %s", (key.id,))
        notion_emulator.requests.clear()

        drain(db_url, conn, sink, key)

        # The sink state's write token is the other replica's: the section is read back, not assumed.
        assert _calls(notion_emulator)[:2] == [("GET", "blocks"), ("GET", "blocks")]
        _assert_exact(notion_emulator, conn, key, note)
    finally:
        other.close()


def test_a_block_a_person_deleted_inside_the_section_makes_the_sink_read_it_back_in_the_same_attempt(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    key = _dataset(conn, "D", summary="v1")
    drain(db_url, conn, sink, key)
    note = _person_note(notion_emulator, key)
    conn.execute("UPDATE dataset SET summary = 'v2' WHERE id = %s", (key.id,))
    drain(db_url, conn, sink, key)  # this process knows the section now
    person = Client(auth=PERSON_TOKEN, base_url=notion_emulator.url, logger=logging.getLogger("tests.person"))
    person.blocks.delete(_section(notion_emulator, key)["children"][0]["id"])  # the summary paragraph
    person.close()
    conn.execute("UPDATE dataset SET summary = 'v3' WHERE id = %s", (key.id,))

    drain(db_url, conn, sink, key)

    _assert_exact(notion_emulator, conn, key, note)
    assert dead_letters(conn) == []
