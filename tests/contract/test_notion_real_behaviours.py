"""The Notion emulator's hard behaviours, through the real notion-client SDK: lost answers of applied writes,
read lag, the 10,000-result query cap, the 500 KB / 1,000-block request limits and a person's edits.

Each behaviour is one the real service has (see the module docstring of ``tests.emulators.notion`` for the
Notion pages it follows); the knobs are those of ``POST /_emulator/faults``, off by default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from notion_client import APIResponseError, Client, RequestTimeoutError

from tests.contract.test_notion_emulator import api_error, make_database, make_page, text
from tests.emulators.notion import BOT_USER, PERSON_TOKEN, PERSON_USER, QUERY_RESULT_CAP, NotionEmulator
from tests.emulators.notion_fixtures import NotionClientFactory, NotionSdk


def set_faults(emulator: NotionEmulator, **faults: Any) -> None:
    httpx.post(f"{emulator.url}/_emulator/faults", json=faults).raise_for_status()


def pages_with(sdk: NotionSdk, ds_id: str, postgres_id: str) -> list[dict[str, Any]]:
    answer = sdk.data_sources.query(ds_id, filter={"property": "Postgres ID", "rich_text": {"equals": postgres_id}})
    results: list[dict[str, Any]] = answer["results"]
    return results


def lost(emulator: NotionEmulator) -> list[str]:
    return [str(r["apply_then_fail"]) for r in emulator.requests if "apply_then_fail" in r]


# ---- apply, then lose the answer ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "raised"),
    [
        ("500", APIResponseError),
        ("503", APIResponseError),
        ("drop", httpx.TransportError),
        ("timeout", RequestTimeoutError),
    ],
)
def test_a_create_whose_answer_is_lost_was_applied_all_the_same(
    notion_emulator: NotionEmulator, notion_sdk_factory: NotionClientFactory, kind: str, raised: type[Exception]
) -> None:
    sdk = notion_sdk_factory(retry=False, timeout_ms=300)
    ds_id = make_database(sdk, notion_emulator)
    set_faults(notion_emulator, apply_then_fail_rate=1.0, apply_then_fail_kinds=[kind], apply_then_fail_timeout_s=1.0)

    with pytest.raises(raised):
        make_page(sdk, ds_id, "Lost answer", "dataset:1")
    set_faults(notion_emulator)

    assert [
        p["properties"]["Experiment Name"]["title"][0]["plain_text"] for p in pages_with(sdk, ds_id, "dataset:1")
    ] == ["Lost answer"]
    assert lost(notion_emulator) == [kind]


def test_updates_appends_block_edits_and_deletes_are_applied_before_their_answer_is_lost(
    notion_emulator: NotionEmulator, notion_sdk_factory: NotionClientFactory
) -> None:
    sdk = notion_sdk_factory(retry=False)
    ds_id = make_database(sdk, notion_emulator)
    page = make_page(sdk, ds_id, "Before", "dataset:1")
    block = sdk.blocks.children.append(page["id"], children=[{"paragraph": {"rich_text": text("one")}}])["results"][0]
    doomed = sdk.blocks.children.append(page["id"], children=[{"paragraph": {"rich_text": text("two")}}])["results"][0]
    set_faults(notion_emulator, apply_then_fail_rate=1.0, apply_then_fail_kinds=["500"])

    writes = [
        lambda: sdk.pages.update(page["id"], properties={"Experiment Name": {"title": text("After")}}),
        lambda: sdk.blocks.children.append(page["id"], children=[{"paragraph": {"rich_text": text("three")}}]),
        lambda: sdk.blocks.update(block["id"], paragraph={"rich_text": text("one, edited")}),
        lambda: sdk.blocks.delete(doomed["id"]),
    ]
    errors = [api_error(write).code for write in writes]
    retrieved = sdk.pages.retrieve(page["id"])  # reads are never apply-then-fail candidates
    set_faults(notion_emulator)

    assert errors == ["internal_server_error"] * 4
    assert retrieved["properties"]["Experiment Name"]["title"][0]["plain_text"] == "After"
    blocks = notion_emulator.state()["pages"][page["id"]]["blocks"]
    assert [b["text"] for b in blocks] == ["one, edited", "three"]
    assert lost(notion_emulator) == ["500"] * 4


def test_the_sdk_retry_of_a_lost_delete_meets_an_archived_block(
    notion_emulator: NotionEmulator, notion_sdk: NotionSdk
) -> None:
    """notion-client retries a 500 on DELETE by itself; the retry finds the block already trashed."""
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "p", "dataset:1")
    block = notion_sdk.blocks.children.append(page["id"], children=[{"paragraph": {"rich_text": text("x")}}])
    set_faults(notion_emulator, apply_then_fail_rate=1.0, apply_then_fail_kinds=["500"], retry_after_s=0)

    error = api_error(notion_sdk.blocks.delete, block["results"][0]["id"])

    assert error.code == "validation_error"
    assert "archived" in str(error)


def test_apply_then_fail_settings_are_checked(notion_emulator: NotionEmulator) -> None:
    refused = httpx.post(f"{notion_emulator.url}/_emulator/faults", json={"apply_then_fail_kinds": ["404"]})
    too_much = httpx.post(f"{notion_emulator.url}/_emulator/faults", json={"apply_then_fail_rate": 1.5})

    assert refused.status_code == 400
    assert "apply_then_fail_kinds" in refused.json()["message"]
    assert too_much.status_code == 400


# ---- read lag --------------------------------------------------------------------------------------------------
def test_a_query_sees_writes_only_read_lag_s_after_they_were_applied(
    notion_emulator: NotionEmulator, notion_sdk: NotionSdk
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    kept = make_page(notion_sdk, ds_id, "Old title", "dataset:1")
    trashed = make_page(notion_sdk, ds_id, "Going", "dataset:2")
    set_faults(notion_emulator, read_lag_s=0.8)
    time.sleep(0.9)  # the two pages have settled

    created = make_page(notion_sdk, ds_id, "New", "dataset:3")
    notion_sdk.pages.update(kept["id"], properties={"Experiment Name": {"title": text("New title")}})
    notion_sdk.pages.update(trashed["id"], in_trash=True)
    lagging = notion_sdk.data_sources.query(ds_id)["results"]
    by_id = notion_sdk.pages.retrieve(created["id"])  # reads by id have a knob of their own, off here
    time.sleep(0.9)
    settled = notion_sdk.data_sources.query(ds_id)["results"]

    def titles(results: list[dict[str, Any]]) -> list[str]:
        return [r["properties"]["Experiment Name"]["title"][0]["plain_text"] for r in results]

    assert titles(lagging) == ["Old title", "Going"]  # not yet created, not yet trashed, not yet renamed
    assert by_id["id"] == created["id"]
    assert titles(settled) == ["New title", "New"]


def test_reads_by_id_lag_only_with_their_own_knob(notion_emulator: NotionEmulator, notion_sdk: NotionSdk) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    set_faults(notion_emulator, read_by_id_lag_s=0.6)

    page = make_page(notion_sdk, ds_id, "Fresh", "dataset:1")
    missing = api_error(notion_sdk.pages.retrieve, page["id"])
    queried = pages_with(notion_sdk, ds_id, "dataset:1")
    time.sleep(0.7)

    assert missing.code == "object_not_found"
    assert [p["id"] for p in queried] == [page["id"]]
    assert notion_sdk.pages.retrieve(page["id"])["id"] == page["id"]


# ---- the 10,000-result query cap --------------------------------------------------------------------------------
def test_a_query_stops_at_10000_results_and_says_it_is_incomplete(
    notion_emulator: NotionEmulator, notion_sdk: NotionSdk
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    rows = [
        {"Experiment Name": {"title": text(f"ds {i}")}, "Postgres ID": {"rich_text": text(f"dataset:{i}")}}
        for i in range(QUERY_RESULT_CAP + 50)
    ]
    ids = notion_emulator.create_pages(ds_id, rows)

    seen: list[str] = []
    statuses: list[Any] = []
    cursor = None
    while True:
        answer = notion_sdk.data_sources.query(ds_id, start_cursor=cursor, page_size=100)
        seen.extend(r["id"] for r in answer["results"])
        statuses.append(answer.get("request_status"))
        if not answer["has_more"]:
            break
        cursor = answer["next_cursor"]
    beyond = notion_sdk.data_sources.query(
        ds_id, filter={"property": "Postgres ID", "rich_text": {"equals": f"dataset:{QUERY_RESULT_CAP + 49}"}}
    )

    assert len(seen) == QUERY_RESULT_CAP
    assert seen == ids[:QUERY_RESULT_CAP]
    assert answer["next_cursor"] is None
    assert statuses == [{"type": "incomplete", "incomplete_reason": "query_result_limit_reached"}] * len(statuses)
    # A query narrow enough to stay under the cap reaches the rows beyond it, and is complete.
    assert [r["id"] for r in beyond["results"]] == [ids[-1]]
    assert "request_status" not in beyond


# ---- request limits -------------------------------------------------------------------------------------------------
def big_paragraph() -> dict[str, Any]:
    """One paragraph of 100 rich-text items of 2,000 characters: about 210 KB of JSON."""
    return {"paragraph": {"rich_text": [{"text": {"content": "x" * 2000}} for _ in range(100)]}}


def test_a_request_over_500_kb_is_a_validation_error_and_changes_nothing(
    notion_emulator: NotionEmulator, notion_sdk: NotionSdk
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "p", "dataset:1")

    fits = notion_sdk.blocks.children.append(page["id"], children=[big_paragraph()] * 2)
    error = api_error(notion_sdk.blocks.children.append, page["id"], children=[big_paragraph()] * 3)

    assert len(fits["results"]) == 2
    assert error.status == 400
    assert error.code == "validation_error"
    assert "500KB" in str(error)
    assert len(notion_emulator.state()["pages"][page["id"]]["blocks"]) == 2


def test_more_than_1000_block_elements_in_one_request_are_refused(
    notion_emulator: NotionEmulator, notion_sdk: NotionSdk
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "p", "dataset:1")
    nested = {"toggle": {"rich_text": text("t"), "children": [{"paragraph": {"rich_text": text("c")}}] * 9}}

    fits = notion_sdk.blocks.children.append(page["id"], children=[nested] * 100)  # 1,000 elements
    one_more = {"toggle": {"rich_text": text("t"), "children": [{"paragraph": {"rich_text": text("c")}}] * 10}}
    error = api_error(notion_sdk.blocks.children.append, page["id"], children=[nested] * 99 + [one_more])

    assert len(fits["results"]) == 100
    assert error.code == "validation_error"
    assert "at most 1000 blocks" in str(error)


# ---- a person's edits ---------------------------------------------------------------------------------------------
@pytest.fixture
def clocked() -> Iterator[tuple[NotionEmulator, list[float]]]:
    """An emulator on a clock the test moves (the rate limit off)."""
    now = [1_767_225_600.0]  # 2026-01-01T00:00:00Z
    emulator = NotionEmulator(rate_per_s=None, clock=lambda: now[0])
    emulator.start()
    try:
        yield emulator, now
    finally:
        emulator.stop()


def client(emulator: NotionEmulator, token: str) -> Any:
    return Client(auth=token, base_url=emulator.url, retry=False, logger=logging.getLogger("tests.notion_sdk"))


def test_edits_made_with_the_person_token_are_made_by_a_person(clocked: tuple[NotionEmulator, list[float]]) -> None:
    emulator, now = clocked
    bot, person = client(emulator, emulator.token), client(emulator, PERSON_TOKEN)
    ds_id = make_database(bot, emulator)
    page = make_page(bot, ds_id, "Dataset", "dataset:1")
    managed = bot.blocks.children.append(page["id"], children=[{"paragraph": {"rich_text": text("managed")}}])

    now[0] += 150.7  # 2 min 30.7 s later
    note = person.blocks.children.append(page["id"], children=[{"to_do": {"rich_text": text("check QC")}}])
    person.blocks.update(managed["results"][0]["id"], paragraph={"rich_text": text("edited by hand")})
    by_person = bot.pages.retrieve(page["id"])
    blocks = {b["id"]: b for b in bot.blocks.children.list(page["id"])["results"]}
    now[0] += 60
    bot.pages.update(page["id"], properties={"Signature Match Score": {"number": 0.5}})
    by_bot = bot.pages.retrieve(page["id"])

    assert person.users.me()["type"] == "person"
    assert bot.users.me()["type"] == "bot"
    assert page["created_by"] == page["last_edited_by"] == BOT_USER
    assert by_person["created_by"] == BOT_USER
    assert by_person["last_edited_by"] == PERSON_USER
    # Rounded down to the minute, as Notion reports edit times.
    assert page["last_edited_time"] == "2026-01-01T00:00:00.000Z"
    assert by_person["last_edited_time"] == "2026-01-01T00:02:00.000Z"
    assert by_person["created_time"] == "2026-01-01T00:00:00.000Z"
    written = blocks[note["results"][0]["id"]]
    assert written["created_by"] == written["last_edited_by"] == PERSON_USER
    edited = blocks[managed["results"][0]["id"]]
    assert edited["created_by"] == BOT_USER
    assert edited["last_edited_by"] == PERSON_USER
    assert edited["paragraph"]["rich_text"][0]["plain_text"] == "edited by hand"
    assert by_bot["last_edited_by"] == BOT_USER
    assert by_bot["last_edited_time"] == "2026-01-01T00:03:00.000Z"
    bot.close()
    person.close()


def test_a_query_on_last_edited_time_finds_the_pages_a_person_edited(
    clocked: tuple[NotionEmulator, list[float]],
) -> None:
    emulator, now = clocked
    bot, person = client(emulator, emulator.token), client(emulator, PERSON_TOKEN)
    ds_id = make_database(bot, emulator)
    untouched = make_page(bot, ds_id, "a", "dataset:1")
    touched = make_page(bot, ds_id, "b", "dataset:2")
    now[0] += 600
    person.blocks.children.append(touched["id"], children=[{"paragraph": {"rich_text": text("a note")}}])

    edited = bot.data_sources.query(
        ds_id, filter={"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": "2026-01-01T00:05:00Z"}}
    )["results"]

    assert [p["id"] for p in edited] == [touched["id"]]
    assert untouched["id"] not in [p["id"] for p in edited]
    bot.close()
    person.close()


def test_an_unknown_token_is_still_unauthorized(notion_sdk_factory: NotionClientFactory) -> None:
    assert api_error(notion_sdk_factory(auth="ntn_someone_else").users.me).code == "unauthorized"


def test_search_finds_pages_and_data_sources_by_title_and_lags_like_queries(
    notion_emulator: NotionEmulator, notion_sdk: NotionSdk
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator, title="Lipid assets")
    first = make_page(notion_sdk, ds_id, "Lipid panel A", "dataset:1")
    make_page(notion_sdk, ds_id, "Proteome B", "dataset:2")
    set_faults(notion_emulator, read_lag_s=0.6)
    time.sleep(0.7)
    late = make_page(notion_sdk, ds_id, "Lipid panel C", "dataset:3")

    lagging = notion_sdk.search(query="lipid panel", filter={"property": "object", "value": "page"})
    sources = notion_sdk.search(query="lipid", filter={"property": "object", "value": "data_source"})
    time.sleep(0.7)
    settled = notion_sdk.search(
        query="LIPID",
        filter={"property": "object", "value": "page"},
        sort={"timestamp": "last_edited_time", "direction": "ascending"},
    )

    assert [r["id"] for r in lagging["results"]] == [first["id"]]
    assert [r["id"] for r in sources["results"]] == [ds_id]
    assert [r["id"] for r in settled["results"]] == [first["id"], late["id"]]


def test_a_schedule_loses_the_answer_of_exactly_the_next_write(
    notion_emulator: NotionEmulator, notion_sdk_factory: NotionClientFactory
) -> None:
    sdk = notion_sdk_factory(retry=False)
    ds_id = make_database(sdk, notion_emulator)
    set_faults(notion_emulator, apply_then_fail_schedule=["ok", "503"])

    first = make_page(sdk, ds_id, "one", "dataset:1")
    sdk.pages.retrieve(first["id"])  # a read takes no entry of the schedule
    second = api_error(make_page, sdk, ds_id, "two", "dataset:2")
    third = make_page(sdk, ds_id, "three", "dataset:3")

    assert second.code == "service_unavailable"
    assert third["id"]
    assert [len(pages_with(sdk, ds_id, f"dataset:{i}")) for i in (1, 2, 3)] == [1, 1, 1]
    assert lost(notion_emulator) == ["503"]
