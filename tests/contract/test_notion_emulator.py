"""The Notion emulator driven by the real notion-client SDK: shapes, limits, errors, faults and the rate limit.

These tests pin the behaviour the Notion sink relies on, so that a sink passing against the emulator speaks the
API version the SDK speaks (2025-09-03) and handles Notion's refusals the way the real service sends them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from notion_client import APIResponseError, Client, RequestTimeoutError
from notion_client.helpers import collect_paginated_api

from tests.emulators.notion import BOT_USER, NotionEmulator
from tests.emulators.notion_fixtures import NotionClientFactory, NotionSdk

REPO = Path(__file__).resolve().parents[2]

SCHEMA: dict[str, Any] = {
    "Experiment Name": {"title": {}},
    "Postgres ID": {"rich_text": {}},
    "Omics Type": {"select": {"options": [{"name": "Lipidomics"}, {"name": "Proteomics"}]}},
    "Disease": {"multi_select": {}},
    "Signature Match Score": {"number": {}},
    "Source URL / DOI": {"url": {}},
    "Last Embedded": {"date": {}},
}


def text(content: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"content": content}}]


def make_database(sdk: NotionSdk, emulator: NotionEmulator, title: str = "Experimental Data Assets") -> str:
    """Create a database with SCHEMA under the workspace page; returns its data source id."""
    db = sdk.databases.create(
        parent={"type": "page_id", "page_id": emulator.root_page_id},
        title=text(title),
        initial_data_source={"properties": SCHEMA},
    )
    return str(db["data_sources"][0]["id"])


def make_page(sdk: NotionSdk, ds_id: str, name: str, postgres_id: str, **extra: Any) -> dict[str, Any]:
    properties = {
        "Experiment Name": {"title": text(name)},
        "Postgres ID": {"rich_text": text(postgres_id)},
        **extra,
    }
    page: dict[str, Any] = sdk.pages.create(
        parent={"type": "data_source_id", "data_source_id": ds_id}, properties=properties
    )
    return page


def api_error(call: Any, *args: Any, **kwargs: Any) -> APIResponseError:
    with pytest.raises(APIResponseError) as caught:
        call(*args, **kwargs)
    return caught.value


def headers(emulator: NotionEmulator, **overrides: str) -> dict[str, str]:
    values = {"Authorization": f"Bearer {emulator.token}", "Notion-Version": "2025-09-03"}
    values.update(overrides)
    return values


# ---- databases and data sources -------------------------------------------------------------------------------
def test_creating_a_database_makes_one_data_source_holding_the_schema(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    db_id = notion_emulator.state()["data_sources"][ds_id]["parent"]["database_id"]

    db = notion_sdk.databases.retrieve(db_id)
    ds = notion_sdk.data_sources.retrieve(ds_id)

    assert db["object"] == "database"
    assert db["data_sources"] == [{"id": ds_id, "name": "Experimental Data Assets"}]
    assert "properties" not in db
    assert ds["object"] == "data_source"
    assert ds["parent"] == {"type": "database_id", "database_id": db_id}
    assert set(ds["properties"]) == set(SCHEMA)
    assert ds["properties"]["Experiment Name"]["id"] == "title"
    assert {p["type"] for p in ds["properties"].values()} == {
        "title",
        "rich_text",
        "select",
        "multi_select",
        "number",
        "url",
        "date",
    }
    options = ds["properties"]["Omics Type"]["select"]["options"]
    assert [o["name"] for o in options] == ["Lipidomics", "Proteomics"]
    assert all({"id", "name", "color"} <= set(o) for o in options)


def test_a_database_needs_an_existing_parent_page(notion_sdk: NotionSdk) -> None:
    error = api_error(
        notion_sdk.databases.create,
        parent={"type": "page_id", "page_id": "00000000-0000-4000-8000-000000000000"},
        title=text("X"),
        initial_data_source={"properties": {"Name": {"title": {}}}},
    )
    assert error.code == "object_not_found"
    assert error.status == 404


def test_a_data_source_must_have_exactly_one_title_property(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    error = api_error(
        notion_sdk.databases.create,
        parent={"type": "page_id", "page_id": notion_emulator.root_page_id},
        title=text("X"),
        initial_data_source={"properties": {"Notes": {"rich_text": {}}}},
    )
    assert error.code == "validation_error"


def test_relations_point_at_a_data_source_and_report_its_database(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    programs = make_database(notion_sdk, notion_emulator, "Programs")
    datasets = make_database(notion_sdk, notion_emulator)

    ds = notion_sdk.data_sources.update(
        datasets, properties={"Related Programs": {"relation": {"data_source_id": programs, "single_property": {}}}}
    )

    relation = ds["properties"]["Related Programs"]["relation"]
    assert relation["data_source_id"] == programs
    assert relation["database_id"] == notion_emulator.state()["data_sources"][programs]["parent"]["database_id"]
    assert relation["type"] == "single_property"
    legacy = api_error(
        notion_sdk.data_sources.update,
        datasets,
        properties={"Old": {"relation": {"database_id": relation["database_id"], "single_property": {}}}},
    )
    assert legacy.code == "validation_error"


def test_renaming_and_removing_properties_of_a_data_source(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    old_id = notion_sdk.data_sources.retrieve(ds_id)["properties"]["Disease"]["id"]

    ds = notion_sdk.data_sources.update(ds_id, properties={"Disease": {"name": "Diseases"}, "Last Embedded": None})

    assert "Disease" not in ds["properties"]
    assert ds["properties"]["Diseases"]["id"] == old_id
    assert "Last Embedded" not in ds["properties"]


# ---- pages and queries ------------------------------------------------------------------------------------------
def test_a_created_page_reads_back_and_a_rich_text_equals_filter_finds_it(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    created = make_page(
        notion_sdk,
        ds_id,
        "ST001 lipids",
        "dataset:1",
        **{
            "Omics Type": {"select": {"name": "Lipidomics"}},
            "Disease": {"multi_select": [{"name": "NASH"}, {"name": "T2D"}]},
            "Signature Match Score": {"number": 0.75},
            "Source URL / DOI": {"url": "https://doi.org/10.1/x"},
            "Last Embedded": {"date": {"start": "2026-11-25"}},
        },
    )
    make_page(notion_sdk, ds_id, "other", "dataset:2")

    page = notion_sdk.pages.retrieve(created["id"])
    found = notion_sdk.data_sources.query(
        ds_id, filter={"property": "Postgres ID", "rich_text": {"equals": "dataset:1"}}
    )

    assert page["object"] == "page"
    assert page["parent"]["type"] == "data_source_id"
    assert page["parent"]["data_source_id"] == ds_id
    assert page["in_trash"] is False
    assert page["url"].startswith("https://www.notion.so/")
    props = page["properties"]
    assert props["Experiment Name"]["title"][0]["plain_text"] == "ST001 lipids"
    assert props["Postgres ID"]["rich_text"][0]["text"]["content"] == "dataset:1"
    assert {"id", "name", "color"} <= set(props["Omics Type"]["select"])
    assert props["Omics Type"]["select"]["name"] == "Lipidomics"
    assert [o["name"] for o in props["Disease"]["multi_select"]] == ["NASH", "T2D"]
    assert props["Signature Match Score"]["number"] == 0.75
    assert props["Last Embedded"]["date"]["start"] == "2026-11-25"
    assert found["object"] == "list"
    assert found["type"] == "page_or_data_source"
    assert [p["id"] for p in found["results"]] == [created["id"]]
    assert found["has_more"] is False
    assert found["next_cursor"] is None


def test_query_pages_through_150_pages_with_cursors(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    ids = {make_page(notion_sdk, ds_id, f"d{i}", f"dataset:{i}")["id"] for i in range(150)}

    first = notion_sdk.data_sources.query(ds_id, page_size=100)
    second = notion_sdk.data_sources.query(ds_id, page_size=100, start_cursor=first["next_cursor"])
    collected = collect_paginated_api(notion_sdk.data_sources.query, data_source_id=ds_id)

    assert len(first["results"]) == 100
    assert first["has_more"] is True
    assert first["next_cursor"]
    assert len(second["results"]) == 50
    assert second["has_more"] is False
    assert {p["id"] for p in first["results"] + second["results"]} == ids
    assert {p["id"] for p in collected} == ids


def test_filters_on_title_select_number_and_compounds(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    a = make_page(notion_sdk, ds_id, "Alpha lipids", "1", **{"Omics Type": {"select": {"name": "Lipidomics"}}})
    b = make_page(notion_sdk, ds_id, "Beta proteins", "2", **{"Signature Match Score": {"number": 3}})
    c = make_page(notion_sdk, ds_id, "Alpha proteins", "3", **{"Omics Type": {"select": {"name": "Proteomics"}}})

    def ids(filter_: dict[str, Any]) -> set[str]:
        return {p["id"] for p in notion_sdk.data_sources.query(ds_id, filter=filter_)["results"]}

    assert ids({"property": "Experiment Name", "title": {"equals": "Alpha lipids"}}) == {a["id"]}
    assert ids({"property": "Experiment Name", "title": {"contains": "alpha"}}) == {a["id"], c["id"]}
    assert ids({"property": "Omics Type", "select": {"equals": "Proteomics"}}) == {c["id"]}
    assert ids({"property": "Omics Type", "select": {"is_empty": True}}) == {b["id"]}
    assert ids({"property": "Signature Match Score", "number": {"equals": 3}}) == {b["id"]}
    assert ids({"property": "Postgres ID", "rich_text": {"is_not_empty": True}}) == {a["id"], b["id"], c["id"]}
    assert ids(
        {
            "and": [
                {"property": "Experiment Name", "title": {"contains": "Alpha"}},
                {
                    "or": [
                        {"property": "Omics Type", "select": {"equals": "Lipidomics"}},
                        {"property": "Postgres ID", "rich_text": {"equals": "nope"}},
                    ]
                },
            ]
        }
    ) == {a["id"]}


def test_filter_on_an_unknown_property_or_with_the_wrong_type_is_refused(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)

    unknown = api_error(notion_sdk.data_sources.query, ds_id, filter={"property": "Nope", "rich_text": {"equals": "x"}})
    wrong_type = api_error(
        notion_sdk.data_sources.query, ds_id, filter={"property": "Omics Type", "rich_text": {"equals": "x"}}
    )

    assert unknown.code == "validation_error"
    assert "Nope" in str(unknown)
    assert wrong_type.code == "validation_error"


def test_sorts_by_property_and_by_timestamp(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    for name, score in [("b", 2), ("a", 3), ("c", 1)]:
        make_page(notion_sdk, ds_id, name, name, **{"Signature Match Score": {"number": score}})
    make_page(notion_sdk, ds_id, "d", "d")  # no score: last whatever the direction

    def names(sorts: list[dict[str, Any]]) -> list[str]:
        results = notion_sdk.data_sources.query(ds_id, sorts=sorts)["results"]
        return [p["properties"]["Experiment Name"]["title"][0]["plain_text"] for p in results]

    assert names([{"property": "Experiment Name", "direction": "ascending"}]) == ["a", "b", "c", "d"]
    assert names([{"property": "Signature Match Score", "direction": "descending"}]) == ["a", "b", "c", "d"]
    assert names([{"property": "Signature Match Score", "direction": "ascending"}]) == ["c", "b", "a", "d"]
    assert names([{"timestamp": "created_time", "direction": "descending"}]) == ["d", "c", "a", "b"]


def test_updating_properties_changes_only_those_given(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "ST001", "dataset:1", **{"Signature Match Score": {"number": 1}})

    updated = notion_sdk.pages.update(
        page["id"],
        properties={"Signature Match Score": {"number": 2.5}, "Omics Type": {"select": {"name": "Metabolomics"}}},
    )

    assert updated["properties"]["Signature Match Score"]["number"] == 2.5
    assert notion_emulator.state()["pages"][page["id"]]["properties"] == {
        "Experiment Name": "ST001",
        "Postgres ID": "dataset:1",
        "Omics Type": "Metabolomics",
        "Disease": [],
        "Signature Match Score": 2.5,
        "Source URL / DOI": None,
        "Last Embedded": None,
    }
    # A select name that did not exist became an option of the schema, as in Notion.
    options = notion_sdk.data_sources.retrieve(ds_id)["properties"]["Omics Type"]["select"]["options"]
    assert "Metabolomics" in [o["name"] for o in options]


def test_a_trashed_page_leaves_queries_and_refuses_edits_until_restored(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "gone", "dataset:9")
    make_page(notion_sdk, ds_id, "kept", "dataset:10")

    trashed = notion_sdk.pages.update(page["id"], in_trash=True)
    refused = api_error(notion_sdk.pages.update, page["id"], properties={"Postgres ID": {"rich_text": text("x")}})
    remaining = notion_sdk.data_sources.query(ds_id)["results"]
    still_readable = notion_sdk.pages.retrieve(page["id"])
    restored = notion_sdk.pages.update(page["id"], archived=False)  # the legacy alias

    assert trashed["in_trash"] is True
    assert refused.code == "validation_error"
    assert [p["properties"]["Postgres ID"]["rich_text"][0]["plain_text"] for p in remaining] == ["dataset:10"]
    assert still_readable["in_trash"] is True
    assert restored["in_trash"] is False
    assert len(notion_sdk.data_sources.query(ds_id)["results"]) == 2


def test_a_database_id_parent_works_only_while_the_database_has_one_data_source(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    db_id = notion_emulator.state()["data_sources"][ds_id]["parent"]["database_id"]
    props = {"Experiment Name": {"title": text("via database")}}

    page = notion_sdk.pages.create(parent={"database_id": db_id}, properties=props)
    notion_sdk.data_sources.create(parent={"type": "database_id", "database_id": db_id}, properties=SCHEMA)
    refused = api_error(notion_sdk.pages.create, parent={"database_id": db_id}, properties=props)

    assert page["parent"]["data_source_id"] == ds_id
    assert len(notion_sdk.databases.retrieve(db_id)["data_sources"]) == 2
    assert refused.code == "validation_error"


def test_more_than_25_relation_references_are_cut_in_the_page_object_but_kept(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    features = make_database(notion_sdk, notion_emulator, "Features")
    datasets = make_database(notion_sdk, notion_emulator)
    notion_sdk.data_sources.update(
        datasets, properties={"Features": {"relation": {"data_source_id": features, "single_property": {}}}}
    )
    targets = [make_page(notion_sdk, features, f"f{i}", f"feature:{i}")["id"] for i in range(30)]

    page = make_page(notion_sdk, datasets, "ST001", "dataset:1", Features={"relation": [{"id": t} for t in targets]})
    items = collect_paginated_api(notion_sdk.pages.properties.retrieve, page_id=page["id"], property_id="Features")

    assert len(page["properties"]["Features"]["relation"]) == 25
    assert page["properties"]["Features"]["has_more"] is True
    assert [i["relation"]["id"] for i in items] == targets
    assert notion_emulator.state()["pages"][page["id"]]["properties"]["Features"] == targets


def test_a_two_way_relation_keeps_the_synced_property_in_step(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    programs = make_database(notion_sdk, notion_emulator, "Programs")
    datasets = make_database(notion_sdk, notion_emulator)
    notion_sdk.data_sources.update(
        datasets,
        properties={
            "Related Programs": {
                "relation": {"data_source_id": programs, "dual_property": {"synced_property_name": "Datasets"}}
            }
        },
    )
    program = make_page(notion_sdk, programs, "P1", "program:1")

    dataset = make_page(notion_sdk, datasets, "ST001", "dataset:1", **{"Related Programs": {"relation": [program]}})
    linked = notion_emulator.state()["pages"][program["id"]]["properties"]["Datasets"]
    notion_sdk.pages.update(dataset["id"], properties={"Related Programs": {"relation": []}})
    unlinked = notion_emulator.state()["pages"][program["id"]]["properties"]["Datasets"]

    assert linked == [dataset["id"]]
    assert unlinked == []


def test_concurrent_writers_each_get_their_page(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    db_id = notion_emulator.state()["data_sources"][ds_id]["parent"]["database_id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        created = list(pool.map(lambda i: make_page(notion_sdk, ds_id, f"d{i}", f"dataset:{i}")["id"], range(40)))

    pages = notion_emulator.pages_of(db_id)
    assert len(set(created)) == 40
    assert sorted(p["properties"]["Postgres ID"] for p in pages) == sorted(f"dataset:{i}" for i in range(40))
    assert set(notion_emulator.state()["data_sources"][ds_id]["page_ids"]) == set(created)


# ---- blocks -----------------------------------------------------------------------------------------------------
def test_append_list_and_delete_blocks(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "ST001", "dataset:1")
    body = [
        {"type": "heading_2", "heading_2": {"rich_text": text("Summary")}},
        {"paragraph": {"rich_text": text("two lines")}},
        {"divider": {}},
        {"code": {"rich_text": text("x = 1"), "language": "plain text"}},
        {"callout": {"rich_text": text("note"), "icon": {"type": "emoji", "emoji": "🧪"}}},
        {
            "toggle": {
                "rich_text": text("Top features"),
                "children": [{"bulleted_list_item": {"rich_text": text("PC")}}],
            }
        },
    ]

    appended = notion_sdk.blocks.children.append(page["id"], children=body)
    inserted = notion_sdk.blocks.children.append(
        page["id"],
        children=[{"numbered_list_item": {"rich_text": text("after heading")}}],
        after=appended["results"][0]["id"],
    )
    listed = notion_sdk.blocks.children.list(page["id"])
    toggle = appended["results"][-1]
    nested = notion_sdk.blocks.children.list(toggle["id"])
    deleted = notion_sdk.blocks.delete(appended["results"][1]["id"])
    after_delete = notion_sdk.blocks.children.list(page["id"])

    assert [b["type"] for b in listed["results"]] == [
        "heading_2",
        "numbered_list_item",
        "paragraph",
        "divider",
        "code",
        "callout",
        "toggle",
    ]
    assert inserted["results"][0]["parent"] == {"type": "page_id", "page_id": page["id"]}
    assert toggle["has_children"] is True
    assert nested["results"][0]["bulleted_list_item"]["rich_text"][0]["plain_text"] == "PC"
    assert deleted["in_trash"] is True
    assert "paragraph" not in [b["type"] for b in after_delete["results"]]
    assert notion_sdk.blocks.retrieve(appended["results"][1]["id"])["in_trash"] is True
    tree = notion_emulator.state()["pages"][page["id"]]["blocks"]
    assert [node["type"] for node in tree] == [
        "heading_2",
        "numbered_list_item",
        "divider",
        "code",
        "callout",
        "toggle",
    ]
    assert tree[-1]["children"][0]["text"] == "PC"


def test_tables_equations_images_files_and_bookmarks_append_and_read_back(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    """Shapes from https://developers.notion.com/reference/block: a table's rows are its children."""
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "ST001", "dataset:1")
    rows = [{"type": "table_row", "table_row": {"cells": [text("lipid"), text("fold")]}}]
    rows.append({"type": "table_row", "table_row": {"cells": [text("Cer 18:1"), []]}})
    body = [
        {"type": "table", "table": {"table_width": 2, "has_column_header": True, "children": rows}},
        {"type": "equation", "equation": {"expression": "e=mc^2"}},
        {"type": "image", "image": {"external": {"url": "https://x.org/a.png"}, "caption": text("fig 1")}},
        {"type": "file", "file": {"type": "external", "external": {"url": "https://x.org/d/raw.csv"}}},
        {"type": "bookmark", "bookmark": {"url": "https://doi.org/10.1/x"}},
    ]

    appended = notion_sdk.blocks.children.append(page["id"], children=body)
    listed = notion_sdk.blocks.children.list(page["id"])["results"]
    table = listed[0]
    table_rows = notion_sdk.blocks.children.list(table["id"])["results"]
    more = notion_sdk.blocks.children.append(
        table["id"], children=[{"table_row": {"cells": [text("SM 16:0"), text("0.5")]}}]
    )
    notion_sdk.blocks.update(table["id"], table={"has_row_header": True})

    assert [b["type"] for b in appended["results"]] == ["table", "equation", "image", "file", "bookmark"]
    assert table["has_children"] is True
    assert table["table"] == {"table_width": 2, "has_column_header": True, "has_row_header": False}
    assert [r["type"] for r in table_rows] == ["table_row", "table_row"]
    assert table_rows[0]["parent"] == {"type": "block_id", "block_id": table["id"]}
    assert table_rows[0]["has_children"] is False
    assert [[c[0]["plain_text"] if c else "" for c in r["table_row"]["cells"]] for r in table_rows] == [
        ["lipid", "fold"],
        ["Cer 18:1", ""],
    ]
    assert more["results"][0]["type"] == "table_row"
    assert notion_sdk.blocks.retrieve(table["id"])["table"]["has_row_header"] is True
    assert listed[1]["equation"] == {"expression": "e=mc^2"}
    assert listed[1]["has_children"] is False
    image = listed[2]["image"]
    assert (image["type"], image["external"], image["caption"][0]["plain_text"]) == (
        "external",
        {"url": "https://x.org/a.png"},
        "fig 1",
    )
    assert listed[3]["file"] == {
        "caption": [],
        "type": "external",
        "external": {"url": "https://x.org/d/raw.csv"},
        "name": "raw.csv",
    }
    assert listed[4]["bookmark"] == {"caption": [], "url": "https://doi.org/10.1/x"}


@pytest.mark.parametrize(
    ("children", "where"),
    [
        ([{"table": {"table_width": 2}}], "children"),
        ([{"table": {"table_width": 2, "children": []}}], "table_row"),
        ([{"table": {"children": [{"table_row": {"cells": [text("a")]}}]}}], "table_width"),
        ([{"table": {"table_width": 2, "children": [{"table_row": {"cells": [text("a")]}}]}}], "table_width (2)"),
        ([{"table": {"table_width": 1, "children": [{"paragraph": {"rich_text": text("a")}}]}}], "table_row"),
        ([{"table_row": {"cells": [text("a")]}}], "outside a table"),
        ([{"equation": {}}], "expression"),
        ([{"image": {"caption": text("no url")}}], "external"),
    ],
)
def test_malformed_tables_equations_and_images_are_refused(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator, children: list[dict[str, Any]], where: str
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "ST001", "dataset:1")

    error = api_error(notion_sdk.blocks.children.append, page["id"], children=children)

    assert (error.status, error.code) == (400, "validation_error")
    assert where in str(error)
    assert notion_sdk.blocks.children.list(page["id"])["results"] == []


def test_a_table_row_of_the_wrong_width_is_refused_when_appended_or_updated(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "ST001", "dataset:1")
    row = {"table_row": {"cells": [text("a"), text("b")]}}
    table = notion_sdk.blocks.children.append(page["id"], children=[{"table": {"table_width": 2, "children": [row]}}])[
        "results"
    ][0]
    first_row = notion_sdk.blocks.children.list(table["id"])["results"][0]

    appended = api_error(notion_sdk.blocks.children.append, table["id"], children=[{"table_row": {"cells": []}}])
    updated = api_error(notion_sdk.blocks.update, first_row["id"], table_row={"cells": [text("only one")]})
    widened = api_error(notion_sdk.blocks.update, table["id"], table={"table_width": 3})

    assert [(e.status, e.code) for e in (appended, updated, widened)] == [(400, "validation_error")] * 3
    assert len(notion_sdk.blocks.children.list(table["id"])["results"]) == 1


def test_block_children_are_listed_100_at_a_time(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "ST001", "dataset:1")
    for start in (0, 100):
        notion_sdk.blocks.children.append(
            page["id"], children=[{"paragraph": {"rich_text": text(str(i))}} for i in range(start, start + 100)]
        )

    first = notion_sdk.blocks.children.list(page["id"])
    everything = collect_paginated_api(notion_sdk.blocks.children.list, block_id=page["id"], page_size=30)

    assert len(first["results"]) == 100
    assert first["has_more"] is True
    assert [b["paragraph"]["rich_text"][0]["plain_text"] for b in everything] == [str(i) for i in range(200)]


def test_a_page_can_be_created_with_its_body(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = notion_sdk.pages.create(
        parent={"type": "data_source_id", "data_source_id": ds_id},
        properties={"Experiment Name": {"title": text("with body")}},
        children=[{"paragraph": {"rich_text": text("hello")}}],
    )

    assert notion_emulator.state()["pages"][page["id"]]["blocks"] == [
        {
            "id": notion_sdk.blocks.children.list(page["id"])["results"][0]["id"],
            "type": "paragraph",
            "text": "hello",
            "created_by": BOT_USER["id"],
            "last_edited_by": BOT_USER["id"],
            "children": [],
        }
    ]


# ---- limits and validation --------------------------------------------------------------------------------------
LONG = "x" * 2001


@pytest.mark.parametrize(
    ("properties", "fragment"),
    [
        ({"Postgres ID": {"rich_text": text(LONG)}}, "body.properties.Postgres ID.rich_text[0].text.content.length"),
        ({"Experiment Name": {"title": text(LONG)}}, "title[0].text.content.length should be ≤ `2000`"),
        ({"Postgres ID": {"rich_text": text("a") * 101}}, "rich_text.length should be ≤ `100`"),
        ({"Disease": {"multi_select": [{"name": f"d{i}"} for i in range(101)]}}, "multi_select.length"),
        ({"Source URL / DOI": {"url": "https://x/" + "a" * 2000}}, "url.length should be ≤ `2000`"),
        ({"Signature Match Score": {"number": "3"}}, "should be a number"),
        ({"Signature Match Score": {"rich_text": text("3")}}, "Signature Match Score is expected to be number."),
        ({"Nope": {"rich_text": text("x")}}, "Nope is not a property that exists."),
        ({"Omics Type": {"select": {"name": "a,b"}}}, "commas"),
        ({"Last Embedded": {"date": {"start": "yesterday"}}}, "ISO 8601"),
    ],
)
def test_page_property_values_beyond_limits_or_off_schema_are_refused(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator, properties: dict[str, Any], fragment: str
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)

    error = api_error(
        notion_sdk.pages.create, parent={"type": "data_source_id", "data_source_id": ds_id}, properties=properties
    )

    assert error.code == "validation_error"
    assert error.status == 400
    assert fragment in str(error)
    assert notion_emulator.state()["pages"].keys() == {notion_emulator.root_page_id}  # nothing partial written


def test_relation_values_must_be_at_most_100_existing_pages_of_the_related_data_source(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    programs = make_database(notion_sdk, notion_emulator, "Programs")
    datasets = make_database(notion_sdk, notion_emulator)
    notion_sdk.data_sources.update(
        datasets, properties={"Programs": {"relation": {"data_source_id": programs, "single_property": {}}}}
    )
    own = make_page(notion_sdk, datasets, "same data source", "dataset:0")
    page = make_page(notion_sdk, datasets, "ST001", "dataset:1")

    def refused(relation: list[dict[str, str]]) -> APIResponseError:
        return api_error(notion_sdk.pages.update, page["id"], properties={"Programs": {"relation": relation}})

    too_many = refused([{"id": f"00000000-0000-4000-8000-{i:012d}"} for i in range(101)])
    not_a_uuid = refused([{"id": "program-1"}])
    missing = refused([{"id": "00000000-0000-4000-8000-000000000001"}])
    wrong_source = refused([{"id": own["id"]}])

    assert [e.code for e in (too_many, not_a_uuid, missing, wrong_source)] == ["validation_error"] * 4
    assert "relation.length should be ≤ `100`" in str(too_many)
    assert "uuid" in str(not_a_uuid)


def test_a_refused_page_write_adds_no_select_option(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    notion_sdk.data_sources.update(
        ds_id, properties={"Derived From": {"relation": {"data_source_id": ds_id, "single_property": {}}}}
    )
    page = make_page(notion_sdk, ds_id, "ST001", "dataset:1")
    missing_page = "00000000-0000-4000-8000-000000000001"

    error = api_error(
        notion_sdk.pages.update,
        page["id"],
        properties={
            "Omics Type": {"select": {"name": "Glycomics"}},
            "Derived From": {"relation": [{"id": missing_page}]},
        },
    )

    options = notion_sdk.data_sources.retrieve(ds_id)["properties"]["Omics Type"]["select"]["options"]
    assert error.code == "validation_error"
    assert "Glycomics" not in [o["name"] for o in options]
    assert notion_emulator.state()["pages"][page["id"]]["properties"]["Omics Type"] is None


@pytest.mark.parametrize(
    ("children", "fragment"),
    [
        ([{"paragraph": {"rich_text": text("p")}}] * 101, "body.children.length should be ≤ `100`, instead was `101`"),
        ([{"paragraph": {"rich_text": text(LONG)}}], "body.children[0].paragraph.rich_text[0].text.content.length"),
        ([{"code": {"rich_text": text("x")}}], "body.children[0].code.language should be defined"),
        ([{"paragraph": {}}], "body.children[0].paragraph.rich_text should be defined"),
        ([{"synced_block": {"synced_from": None}}], "body.children[0].type"),
        ([{"table": {"table_width": 2}}], "body.children[0].table.children should be defined"),
        ([{"divider": {"children": [{"paragraph": {"rich_text": []}}]}}], "divider.children should be not present"),
        (
            [
                {
                    "toggle": {
                        "rich_text": [],
                        "children": [{"toggle": {"rich_text": [], "children": [{"paragraph": {"rich_text": []}}]}}],
                    }
                }
            ],
            "toggle.children[0].toggle.children should be not present",
        ),
    ],
)
def test_block_appends_beyond_limits_or_malformed_are_refused(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator, children: list[dict[str, Any]], fragment: str
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)
    page = make_page(notion_sdk, ds_id, "ST001", "dataset:1")

    error = api_error(notion_sdk.blocks.children.append, page["id"], children=children)

    assert error.code == "validation_error"
    assert fragment in str(error)
    assert notion_emulator.state()["pages"][page["id"]]["blocks"] == []


def test_pages_are_created_with_at_most_100_children(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)

    error = api_error(
        notion_sdk.pages.create,
        parent={"type": "data_source_id", "data_source_id": ds_id},
        properties={"Experiment Name": {"title": text("x")}},
        children=[{"paragraph": {"rich_text": text("p")}}] * 101,
    )

    assert error.code == "validation_error"
    assert "body.children.length should be ≤ `100`" in str(error)


def test_a_query_page_size_above_100_is_refused(notion_sdk: NotionSdk, notion_emulator: NotionEmulator) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)

    error = api_error(notion_sdk.data_sources.query, ds_id, page_size=101)

    assert error.code == "validation_error"
    assert "page_size" in str(error)


def test_unknown_ids_are_object_not_found(notion_sdk: NotionSdk) -> None:
    missing = "5c6a2821-6bb1-4a7e-b6e1-c50111515c3d"
    for call in (
        notion_sdk.pages.retrieve,
        notion_sdk.databases.retrieve,
        notion_sdk.data_sources.retrieve,
        notion_sdk.blocks.retrieve,
    ):
        error = api_error(call, missing)
        assert error.code == "object_not_found"
        assert error.status == 404
        assert missing in str(error)


def test_a_removed_endpoint_of_older_versions_is_an_invalid_url(notion_emulator: NotionEmulator) -> None:
    response = httpx.post(
        f"{notion_emulator.url}/v1/databases/5c6a2821-6bb1-4a7e-b6e1-c50111515c3d/query",
        headers=headers(notion_emulator),
        json={},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request_url"


# ---- auth, version, JSON ----------------------------------------------------------------------------------------
def test_a_wrong_token_is_unauthorized(notion_sdk_factory: NotionClientFactory) -> None:
    sdk = notion_sdk_factory(auth="ntn_wrong")

    error = api_error(sdk.users.me)

    assert error.code == "unauthorized"
    assert error.status == 401
    assert "ntn_wrong" not in str(error)


def test_the_notion_version_header_is_required_and_must_be_current(
    notion_emulator: NotionEmulator, notion_sdk_factory: NotionClientFactory
) -> None:
    url = f"{notion_emulator.url}/v1/users/me"
    auth_only = {"Authorization": f"Bearer {notion_emulator.token}"}

    missing = httpx.get(url, headers=auth_only)
    unknown = httpx.get(url, headers={**auth_only, "Notion-Version": "2099-01-01"})
    downgraded = api_error(notion_sdk_factory(notion_version="2022-06-28").users.me)
    current = httpx.get(url, headers=headers(notion_emulator))
    newer = httpx.get(url, headers=headers(notion_emulator, **{"Notion-Version": "2026-03-11"}))

    assert missing.status_code == 400
    assert missing.json()["code"] == "missing_version"
    assert missing.json()["object"] == "error"
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "validation_error"
    assert downgraded.code == "validation_error"
    assert (current.status_code, newer.status_code) == (200, 200)


def test_malformed_json_is_invalid_json(notion_emulator: NotionEmulator) -> None:
    response = httpx.post(
        f"{notion_emulator.url}/v1/pages",
        headers={**headers(notion_emulator), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


# ---- faults and rate limit --------------------------------------------------------------------------------------
def set_faults(emulator: NotionEmulator, **faults: Any) -> None:
    httpx.post(f"{emulator.url}/_emulator/faults", json=faults).raise_for_status()


def calls(emulator: NotionEmulator, path: str) -> int:
    log = httpx.get(f"{emulator.url}/_emulator/requests").json()["requests"]
    return sum(1 for entry in log if entry["path"] == path)


def test_a_scheduled_429_is_retried_by_the_sdk_and_raised_without_its_retries(
    notion_emulator: NotionEmulator, notion_sdk_factory: NotionClientFactory
) -> None:
    retrying = notion_sdk_factory()
    plain = notion_sdk_factory(retry=False)

    set_faults(notion_emulator, schedule=["429"], retry_after_s=0)
    me = retrying.users.me()
    retried_calls = calls(notion_emulator, "/v1/users/me")
    set_faults(notion_emulator, schedule=["429"], retry_after_s=2)
    error = api_error(plain.users.me)

    assert me["object"] == "user"
    assert retried_calls == 2
    assert error.code == "rate_limited"
    assert error.status == 429
    assert error.headers["retry-after"] == "2"


def test_server_errors_are_retried_by_the_sdk_for_reads_only(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    ds_id = make_database(notion_sdk, notion_emulator)

    set_faults(notion_emulator, schedule=["503"])
    read = notion_sdk.data_sources.retrieve(ds_id)
    set_faults(notion_emulator, schedule=["500"])
    write = api_error(make_page, notion_sdk, ds_id, "x", "dataset:1")

    assert read["id"] == ds_id
    assert write.code == "internal_server_error"
    assert write.status == 500
    set_faults(notion_emulator, schedule=["503"])
    assert api_error(make_page, notion_sdk, ds_id, "x", "dataset:1").code == "service_unavailable"


def test_a_dropped_connection_or_a_slow_answer_surfaces_from_the_sdk(
    notion_emulator: NotionEmulator, notion_sdk_factory: NotionClientFactory
) -> None:
    sdk = notion_sdk_factory(timeout_ms=200)

    set_faults(notion_emulator, schedule=["drop"])
    with pytest.raises(httpx.TransportError):
        sdk.users.me()
    set_faults(notion_emulator, latency_ms=600)
    with pytest.raises(RequestTimeoutError):
        sdk.users.me()


def test_the_token_bucket_answers_429_beyond_the_burst(
    notion_emulator: NotionEmulator, notion_sdk_factory: NotionClientFactory
) -> None:
    sdk = notion_sdk_factory(retry=False)
    httpx.post(f"{notion_emulator.url}/_emulator/rate_limit", json={"rate_per_s": 0.2, "burst": 3}).raise_for_status()

    for _ in range(3):
        sdk.users.me()
    error = api_error(sdk.users.me)
    httpx.post(f"{notion_emulator.url}/_emulator/rate_limit", json={"rate_per_s": None}).raise_for_status()

    assert error.code == "rate_limited"
    assert int(error.headers["retry-after"]) >= 1
    assert sdk.users.me()["object"] == "user"


def test_the_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    emulator = NotionEmulator(rate_per_s=2.0, burst=2, monotonic=lambda: now[0])
    bucket_calls = []
    for at in (0.0, 0.0, 0.0, 0.5, 0.5, 1.5):
        now[0] = at
        try:
            emulator.check_request(_request(emulator))
            bucket_calls.append("ok")
        except Exception as error:
            bucket_calls.append(getattr(error, "code", "?"))

    assert bucket_calls == ["ok", "ok", "rate_limited", "ok", "rate_limited", "ok"]


def _request(emulator: NotionEmulator) -> Any:
    from tests.emulators.base import Request

    return Request(
        "GET",
        "/v1/users/me",
        {},
        {},
        {"authorization": f"Bearer {emulator.token}", "notion-version": "2025-09-03"},
        None,
        b"",
    )


def test_reset_forgets_everything_but_the_workspace_page(
    notion_sdk: NotionSdk, notion_emulator: NotionEmulator
) -> None:
    make_database(notion_sdk, notion_emulator)

    httpx.post(f"{notion_emulator.url}/_emulator/reset").raise_for_status()
    state = httpx.get(f"{notion_emulator.url}/_emulator/state").json()

    assert state["databases"] == {}
    assert list(state["pages"]) == [notion_emulator.root_page_id]


def test_the_emulator_runs_on_its_own_from_the_command_line(tmp_path: Path) -> None:
    from tests.pgcluster import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators", "notion", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sdk: NotionSdk = Client(auth="ntn_emulator_token", base_url=f"http://127.0.0.1:{port}", retry=False)
        for _ in range(100):
            try:
                me = sdk.users.me()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("the emulator did not start")
        assert me["object"] == "user"
        assert httpx.get(f"http://127.0.0.1:{port}/_emulator/rate_limit").json() == {"rate_per_s": 3.0, "burst": 10}
    finally:
        process.terminate()
        process.wait(timeout=5)
