"""The Notion sink through the real notion-client SDK against the Notion emulator, with documents rendered from
a real Postgres and relation targets' page ids read from ``replicator.sink_state`` by the production lookup.
Documents reach the sink through the real ``SinkWorker`` (outbox → render → sink → sink_state)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from replicator.config import Settings
from replicator.documents import DocumentKey, render
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.sinks.base import OutcomeKind, SinkConfigError, UpsertItem
from replicator.sinks.notion import NotionSink, create_databases, notion_client
from replicator.sinks.notion.render import MANAGED_MARKER
from replicator.store import sink_state
from replicator.worker import SinkWorker
from tests.emulators.notion import NotionEmulator

Conn = psycopg.Connection[tuple[Any, ...]]
ENTITY_SETTING = {
    "program": "NOTION_PROGRAMS_DB_ID",
    "experiment": "NOTION_EXPERIMENTS_DB_ID",
    "signature": "NOTION_SIGNATURE_DB_ID",
    "dataset": "NOTION_EXP_DATA_DB_ID",
}


@pytest.fixture
def database_ids(notion_emulator: NotionEmulator) -> dict[str, str]:
    """The four databases, created as ``replicator notion init`` creates them; entity → database id."""
    client = notion_client(notion_emulator.token, notion_emulator.url)
    try:
        ids = create_databases(client, notion_emulator.root_page_id)
    finally:
        client.close()
    return {entity: ids[name] for entity, name in ENTITY_SETTING.items()}


@pytest.fixture
def sink(notion_emulator: NotionEmulator, database_ids: dict[str, str], db_url: str) -> Iterator[NotionSink]:
    notion = NotionSink(
        notion_client(notion_emulator.token, notion_emulator.url),
        database_ids,
        sleep=lambda _s: None,
        read_policy=BackoffPolicy(),
    )
    notion.check()
    yield notion
    notion.close()


def _sync(db_url: str, conn: Conn, sink: NotionSink, *keys: DocumentKey) -> None:
    """Enqueue ``keys`` for the notion sink and let one worker drain what is due."""
    for key in keys:
        conn.execute(
            "INSERT INTO replicator.outbox AS o (sink, entity, entity_id) VALUES ('notion', %s, %s) "
            "ON CONFLICT (sink, entity, entity_id) DO UPDATE SET version = o.version + 1, next_attempt_at = now()",
            (key.entity, key.id),
        )
    # No settle window: these tests drive one worker pass right after enqueueing.
    settings = Settings.model_validate({"POSTGRES_URL": db_url, "REPLICATOR_SINKS": "notion", "NOTION_SETTLE_MS": 0})
    worker = SinkWorker(
        db_url, sink, settings=settings, metrics=Metrics(), worker_id="t", policy=BackoffPolicy(base_s=30.0)
    )
    try:
        while worker.run_once():
            pass
    finally:
        worker.close()


def _program(conn: Conn, name: str) -> DocumentKey:
    row = conn.execute("INSERT INTO program (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert row is not None
    return DocumentKey("program", row[0])


def _dataset(conn: Conn, name: str, **fields: Any) -> DocumentKey:
    columns = ["natural_key", "name", "omics_type", *fields]
    values = [f"key-{uuid.uuid4()}", name, "lipidomics", *fields.values()]
    query = f"INSERT INTO dataset ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(values))}) RETURNING id"
    row = conn.execute(query, values).fetchone()  # column names are this test's literals
    assert row is not None
    return DocumentKey("dataset", row[0])


def _link(conn: Conn, program: DocumentKey, dataset: DocumentKey) -> None:
    conn.execute("INSERT INTO program_dataset (program_id, dataset_id) VALUES (%s, %s)", (program.id, dataset.id))


def _pages(emulator: NotionEmulator, *, trashed: bool = False) -> dict[str, dict[str, Any]]:
    """Live (or trashed) database pages by Postgres ID."""
    out: dict[str, dict[str, Any]] = {}
    for page in emulator.state()["pages"].values():
        if page["data_source_id"] and page["in_trash"] == trashed:
            out.setdefault(page["properties"].get("Postgres ID") or f"legacy:{page['id']}", page)
    return out


def _page(emulator: NotionEmulator, key: DocumentKey) -> dict[str, Any]:
    return _pages(emulator)[str(key.id)]


def _state_hash(conn: Conn, key: DocumentKey) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT remote_id, content_hash FROM replicator.sink_state WHERE sink = 'notion' AND entity_id = %s",
        (key.id,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _data_source(emulator: NotionEmulator, database_id: str) -> str:
    return str(emulator.state()["databases"][database_id]["data_source_ids"][0])


def test_a_dataset_is_created_updated_and_trashed_with_its_row(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    key = _dataset(conn, "Internal Lipidomics — plasma", disease=["ALS"], data_origin="Internal – Amprenta")
    _sync(db_url, conn, sink, key)
    page = _page(notion_emulator, key)
    assert page["title"] == "Internal Lipidomics — plasma"
    assert page["properties"]["Omics Type"] == "Lipidomics"
    assert page["properties"]["Disease"] == ["ALS"]
    assert page["properties"]["Content Hash"].startswith("doc:")
    assert _state_hash(conn, key) == (page["id"], page["properties"]["Content Hash"].split()[0][4:])

    conn.execute("UPDATE dataset SET disease = %s, name = 'renamed' WHERE id = %s", (["ALS", "FTD"], key.id))
    _sync(db_url, conn, sink, key)
    updated = _page(notion_emulator, key)
    assert (updated["id"], updated["title"], updated["properties"]["Disease"]) == (
        page["id"],
        "renamed",
        ["ALS", "FTD"],
    )

    conn.execute("DELETE FROM dataset WHERE id = %s", (key.id,))
    _sync(db_url, conn, sink, key)
    assert str(key.id) not in _pages(notion_emulator)
    assert _pages(notion_emulator, trashed=True)[str(key.id)]["id"] == page["id"]
    assert _state_hash(conn, key) is None


def test_relations_are_written_as_whole_sets_from_postgres(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    p1, p2 = _program(conn, "P1"), _program(conn, "P2")
    dataset = _dataset(conn, "D")
    _link(conn, p1, dataset)
    _link(conn, p2, dataset)
    _sync(db_url, conn, sink, p1, p2, dataset)
    ids = {k: _page(notion_emulator, k)["id"] for k in (p1, p2)}
    assert sorted(_page(notion_emulator, dataset)["properties"]["Related Programs"]) == sorted(ids.values())
    # Notion keeps the other side of the two-way relation.
    assert _page(notion_emulator, p1)["properties"]["Related Datasets"] == [_page(notion_emulator, dataset)["id"]]

    conn.execute("DELETE FROM program_dataset WHERE program_id = %s", (p1.id,))
    _sync(db_url, conn, sink, dataset)
    assert _page(notion_emulator, dataset)["properties"]["Related Programs"] == [ids[p2]]
    assert _page(notion_emulator, p1)["properties"]["Related Datasets"] == []


def test_a_dataset_waits_for_its_program_page_instead_of_writing_a_partial_relation(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    program = _program(conn, "P")
    dataset = _dataset(conn, "D")
    _link(conn, program, dataset)
    docs = render(conn, [dataset])
    document = docs[dataset]
    assert document is not None

    [outcome] = sink.upsert([UpsertItem(document, None)])
    assert outcome.kind is OutcomeKind.DEFERRED
    assert str(program) in str(outcome.error)
    assert str(dataset.id) not in _pages(notion_emulator)

    _sync(db_url, conn, sink, program)  # the program's page now exists and is recorded
    # As the worker does: the relation targets' page ids, from this sink's state.
    recorded = sink_state.remote_ids(conn, "notion", [program])
    [outcome] = sink.upsert([UpsertItem(document, None, relation_ids=recorded)])
    assert outcome.kind is OutcomeKind.APPLIED
    assert _page(notion_emulator, dataset)["properties"]["Related Programs"] == [_page(notion_emulator, program)["id"]]


def test_long_text_is_split_into_items_of_at_most_2000_characters(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    methods = " ".join(f"step{i:05d}" for i in range(1500))  # about 15,000 characters
    key = _dataset(conn, "D", methods=methods)
    _sync(db_url, conn, sink, key)
    raw = _page(notion_emulator, key)["raw_properties"]["Methods"]["rich_text"]
    assert len(raw) > 7
    assert all(len(item["text"]["content"]) <= 2000 for item in raw)
    assert "".join(item["text"]["content"] for item in raw) == methods


def _blocks(emulator: NotionEmulator, key: DocumentKey) -> list[dict[str, Any]]:
    return list(_page(emulator, key)["blocks"])


def test_the_body_is_replaced_only_when_its_hash_changes_and_blocks_people_added_survive(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    key = _dataset(conn, "D", summary="first summary")
    _sync(db_url, conn, sink, key)
    page_id = _page(notion_emulator, key)["id"]
    sink.client.blocks.children.append(
        page_id,
        children=[{"type": "paragraph", "paragraph": {"rich_text": [{"text": {"content": "my lab note"}}]}}],
    )
    [managed] = [b for b in _blocks(notion_emulator, key) if b["text"].startswith(MANAGED_MARKER)]

    notion_emulator.requests.clear()
    conn.execute("UPDATE dataset SET data_origin = 'External – Open Dataset' WHERE id = %s", (key.id,))
    _sync(db_url, conn, sink, key)
    assert [r["method"] for r in notion_emulator.requests] == ["PATCH"]  # properties only, one call
    assert [b["id"] for b in _blocks(notion_emulator, key) if b["text"].startswith(MANAGED_MARKER)] == [managed["id"]]

    conn.execute("UPDATE dataset SET summary = 'second summary' WHERE id = %s", (key.id,))
    _sync(db_url, conn, sink, key)
    blocks = _blocks(notion_emulator, key)
    sections = [b for b in blocks if b["text"].startswith(MANAGED_MARKER)]
    assert len(sections) == 1
    assert sections[0]["id"] == managed["id"]  # updated in place (#15 item 4): the toggle keeps its id
    assert sections[0]["children"][0]["text"] == "second summary"
    assert [b["text"] for b in blocks] == [sections[0]["text"], "my lab note"]  # same place, the note kept
    assert _page(notion_emulator, key)["properties"]["Summary"] == "second summary"


def test_a_page_created_before_a_crash_is_found_by_postgres_id_not_duplicated(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    key = _dataset(conn, "D")
    _sync(db_url, conn, sink, key)
    page_id = _page(notion_emulator, key)["id"]
    # The crash: the page exists downstream, but sink_state never recorded it; the row changed meanwhile.
    conn.execute("DELETE FROM replicator.sink_state")
    conn.execute("UPDATE dataset SET summary = 'after the crash' WHERE id = %s", (key.id,))
    _sync(db_url, conn, sink, key)
    pages = [p for p in notion_emulator.state()["pages"].values() if p["properties"].get("Postgres ID") == str(key.id)]
    assert [p["id"] for p in pages] == [page_id]
    assert pages[0]["properties"]["Summary"] == "after the crash"


def test_a_page_trashed_by_a_person_is_restored_when_verify_repair_rewrites_it(
    sink: NotionSink, notion_emulator: NotionEmulator, db_url: str, conn: Conn
) -> None:
    from replicator.verify import INVALIDATED_HASH

    key = _dataset(conn, "D")
    _sync(db_url, conn, sink, key)
    page_id = _page(notion_emulator, key)["id"]
    sink.client.pages.update(page_id, in_trash=True)
    assert [d.key for d in sink.inventory()] == []  # verify: missing
    conn.execute("UPDATE replicator.sink_state SET content_hash = %s", (INVALIDATED_HASH,))
    _sync(db_url, conn, sink, key)
    assert _page(notion_emulator, key)["id"] == page_id
    assert [d.key for d in sink.inventory()] == [key]


def test_duplicate_pages_keep_the_oldest_and_trash_the_others_when_looked_up(
    sink: NotionSink, notion_emulator: NotionEmulator, database_ids: dict[str, str], db_url: str, conn: Conn
) -> None:
    key = _dataset(conn, "D")
    _sync(db_url, conn, sink, key)
    oldest = _page(notion_emulator, key)["id"]
    ds = _data_source(notion_emulator, database_ids["dataset"])
    duplicate = sink.client.pages.create(
        parent={"type": "data_source_id", "data_source_id": ds},
        properties={
            "Experiment Name": {"title": [{"text": {"content": "D"}}]},
            "Postgres ID": {"rich_text": [{"text": {"content": str(key.id)}}]},
        },
    )["id"]
    assert sorted(d.remote_id for d in sink.inventory() if d.key == key) == sorted([oldest, duplicate])

    conn.execute("DELETE FROM replicator.sink_state")  # what `verify --repair` does for a duplicated key
    _sync(db_url, conn, sink, key)
    assert [d.remote_id for d in sink.inventory() if d.key == key] == [oldest]
    assert notion_emulator.state()["pages"][duplicate]["in_trash"] is True


def test_a_legacy_page_with_the_same_title_and_no_postgres_id_is_adopted(
    sink: NotionSink, notion_emulator: NotionEmulator, database_ids: dict[str, str], db_url: str, conn: Conn
) -> None:
    ds = _data_source(notion_emulator, database_ids["dataset"])
    legacy = sink.client.pages.create(
        parent={"type": "data_source_id", "data_source_id": ds},
        properties={"Experiment Name": {"title": [{"text": {"content": "ST004396"}}]}},
        children=[{"type": "heading_2", "heading_2": {"rich_text": [{"text": {"content": "mwTab Data"}}]}}],
    )["id"]
    key = _dataset(conn, "ST004396")
    _sync(db_url, conn, sink, key)
    pages = [p for p in notion_emulator.state()["pages"].values() if p["data_source_id"] == ds]
    assert [p["id"] for p in pages] == [legacy]
    assert pages[0]["properties"]["Postgres ID"] == str(key.id)
    texts = [b["text"] for b in pages[0]["blocks"]]
    assert texts[0] == "mwTab Data"
    assert texts[1].startswith(MANAGED_MARKER)
    assert len(texts) == 2
    # Pages that are not ours are not listed as documents.
    assert [d.remote_id for d in sink.inventory()] == [legacy]


def test_a_429_becomes_a_retryable_error_carrying_retry_after(
    sink: NotionSink, notion_emulator: NotionEmulator, conn: Conn
) -> None:
    key = _dataset(conn, "D")
    document = render(conn, [key])[key]
    assert document is not None
    notion_emulator.set_faults({"schedule": ["429"], "retry_after_s": 7})
    [outcome] = sink.upsert([UpsertItem(document, None)])
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.retryable is True
    assert outcome.error.retry_after == 7
    notion_emulator.set_faults({"schedule": ["503"]})
    [outcome] = sink.upsert([UpsertItem(document, None)])
    assert outcome.error is not None
    assert outcome.error.retryable is True


def test_a_dropped_connection_is_retryable_and_the_retry_creates_one_page_once_a_lost_create_would_show(
    notion_emulator: NotionEmulator, database_ids: dict[str, str], conn: Conn
) -> None:
    now = [1_000.0]
    sink = NotionSink(
        notion_client(notion_emulator.token, notion_emulator.url),
        database_ids,
        sleep=lambda _s: None,
        read_lag_s=30,
        request_timeout_s=30,
        clock=lambda: now[0],
        read_policy=BackoffPolicy(),
    )
    sink.check()
    key = _dataset(conn, "D")
    document = render(conn, [key])[key]
    assert document is not None
    notion_emulator.set_faults({"schedule": ["ok", "ok", "drop"]})  # look-ups pass, the create gets no answer
    [outcome] = sink.upsert([UpsertItem(document, None)])
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.retryable is True
    # The create may have been applied: until it would show in queries (timeout + read lag), the retry waits.
    now[0] += 59
    [outcome] = sink.upsert([UpsertItem(document, None)])
    assert outcome.kind is OutcomeKind.DEFERRED
    now[0] += 2
    [outcome] = sink.upsert([UpsertItem(document, None)])
    assert outcome.kind is OutcomeKind.APPLIED
    assert [d.key for d in sink.inventory()] == [key]
    sink.close()


def test_a_validation_error_is_permanent_and_dead_letters_the_row(
    sink: NotionSink, notion_emulator: NotionEmulator, database_ids: dict[str, str], db_url: str, conn: Conn
) -> None:
    # Notion refuses the document itself: its program relation names a page of another database (a property
    # renamed or deleted in the UI is another matter: the document waits, tests/integration/test_notion_exact.py).
    program, other = _program(conn, "P"), _dataset(conn, "other")
    key = _dataset(conn, "D")
    _link(conn, program, key)
    _sync(db_url, conn, sink, program, other)
    wrong = _page(notion_emulator, other)["id"]
    document = render(conn, [key])[key]
    assert document is not None
    [outcome] = sink.upsert([UpsertItem(document, None, relation_ids={program: wrong})])
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.retryable is False
    assert "Related Programs" in str(outcome.error)

    conn.execute("UPDATE replicator.sink_state SET remote_id = %s WHERE entity_id = %s", (wrong, program.id))
    _sync(db_url, conn, sink, key)
    row = conn.execute("SELECT permanent, error FROM replicator.dead_letter WHERE entity_id = %s", (key.id,)).fetchone()
    assert row is not None
    assert row[0] is True
    assert "validation_error" in row[1]


def test_check_lists_every_missing_or_mistyped_property(
    sink: NotionSink, notion_emulator: NotionEmulator, database_ids: dict[str, str]
) -> None:
    ds = _data_source(notion_emulator, database_ids["dataset"])
    sink.client.data_sources.update(ds, properties={"Methods": None, "Signature Match Score": {"rich_text": {}}})
    sig = _data_source(notion_emulator, database_ids["signature"])
    sink.client.data_sources.update(sig, properties={"Short ID": None})
    with pytest.raises(SinkConfigError) as raised:
        sink.check()
    message = str(raised.value)
    assert "missing property 'Methods'" in message
    assert "'Signature Match Score' is rich_text, expected number" in message
    assert "Signatures (NOTION_SIGNATURE_DB_ID): missing property 'Short ID'" in message


def test_a_database_without_exactly_one_data_source_is_refused(
    notion_emulator: NotionEmulator, database_ids: dict[str, str]
) -> None:
    client = notion_client(notion_emulator.token, notion_emulator.url)
    client.data_sources.create(parent={"database_id": database_ids["program"]}, properties={"Name": {"title": {}}})
    fresh = NotionSink(client, database_ids, read_policy=BackoffPolicy())
    with pytest.raises(SinkConfigError, match=r"NOTION_PROGRAMS_DB_ID=.* has 2 data sources"):
        fresh.check()
    fresh.close()


def test_notion_init_prints_four_settings_that_the_sink_accepts(notion_emulator: NotionEmulator) -> None:
    from replicator.cli import app

    env = {"NOTION_API_KEY": notion_emulator.token, "NOTION_BASE_URL": notion_emulator.url}
    result = CliRunner().invoke(app, ["notion", "init", "--parent-page", notion_emulator.root_page_id], env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == list(ENTITY_SETTING.values())
    values = dict(line.split("=", 1) for line in lines)
    client = notion_client(notion_emulator.token, notion_emulator.url)
    NotionSink(client, {e: values[n] for e, n in ENTITY_SETTING.items()}, read_policy=BackoffPolicy()).check()
    client.close()
    assert notion_emulator.token not in result.output


def test_notion_init_without_a_token_is_a_usage_error(notion_emulator: NotionEmulator) -> None:
    from replicator.cli import app

    result = CliRunner().invoke(app, ["notion", "init", "--parent-page", "x"], env={"NOTION_API_KEY": None})
    assert result.exit_code == 2
    assert result.stdout == ""
