"""People's blocks become Markdown-like text (replicator/narrative/markdown.py). The block objects are shaped as
Notion's reference documents them (https://developers.notion.com/reference/block)."""

from __future__ import annotations

import uuid
from typing import Any

from replicator.changes import Action
from replicator.documents import DocumentKey
from replicator.narrative.markdown import blocks_markdown, content_hash, rich_text_markdown
from replicator.routing import DirtyDocuments, truncated_entities


def _rt(text: str, **annotations: bool) -> list[dict[str, Any]]:
    return [{"type": "text", "plain_text": text, "text": {"content": text}, "annotations": annotations}]


def _block(kind: str, text: str = "", children: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"rich_text": _rt(text), **extra}
    block: dict[str, Any] = {"object": "block", "type": kind, kind: payload}
    if children is not None:
        block["children"] = children
    return block


def test_headings_lists_todos_quotes_callouts_and_code_keep_their_structure() -> None:
    blocks = [
        _block("heading_2", "Observations"),
        _block("paragraph", "Ceramides rise in CSF."),
        _block("bulleted_list_item", "Cer 18:1", children=[_block("paragraph", "strongest in ALS")]),
        _block("numbered_list_item", "extract"),
        _block("numbered_list_item", "run LC-MS"),
        _block("to_do", "repeat with controls", checked=False),
        _block("to_do", "order standards", checked=True),
        _block("quote", "trust but verify"),
        _block("callout", "check batch 3", icon={"type": "emoji", "emoji": "⚠️"}),
        _block("code", "SELECT 1", language="sql"),
        {"type": "divider", "divider": {}},
    ]
    assert blocks_markdown(blocks).split("\n") == [
        "## Observations",
        "Ceramides rise in CSF.",
        "- Cer 18:1",
        "  strongest in ALS",
        "1. extract",
        "2. run LC-MS",
        "- [ ] repeat with controls",
        "- [x] order standards",
        "> trust but verify",
        "> ⚠️ check batch 3",
        "```sql",
        "SELECT 1",
        "```",
        "---",
    ]


def test_tables_equations_and_media_become_text_and_signed_file_urls_lose_their_query() -> None:
    table = {
        "type": "table",
        "table": {"table_width": 2, "has_column_header": True},
        "children": [
            {"type": "table_row", "table_row": {"cells": [_rt("lipid"), _rt("log2FC")]}},
            {"type": "table_row", "table_row": {"cells": [_rt("Cer 18:1"), _rt("2.1")]}},
        ],
    }
    equation = {"type": "equation", "equation": {"expression": "e=mc^2"}}
    image = {
        "type": "image",
        "image": {"type": "external", "external": {"url": "https://x.org/a.png"}, "caption": _rt("gel")},
    }
    signed = "https://s3.example/f.pdf?X-Amz-Signature=abc&X-Amz-Expires=3600"
    pdf = {"type": "pdf", "pdf": {"type": "file", "file": {"url": signed}, "caption": _rt("protocol")}}
    text = blocks_markdown([table, equation, image, pdf])
    assert text.split("\n") == [
        "| lipid | log2FC |",
        "| --- | --- |",
        "| Cer 18:1 | 2.1 |",
        "$$",
        "e=mc^2",
        "$$",
        "![gel](https://x.org/a.png)",
        "[pdf: protocol](https://s3.example/f.pdf)",
    ]
    assert "Signature" not in text


def test_annotations_links_and_inline_equations() -> None:
    items = [
        *_rt("bold", bold=True),
        {"type": "text", "plain_text": "site", "href": "https://lab.org"},
        {"type": "equation", "equation": {"expression": "x^2"}, "plain_text": "x^2"},
    ]
    assert rich_text_markdown(items) == "**bold**[site](https://lab.org)$x^2$"


def test_trashed_blocks_and_columns() -> None:
    blocks = [
        {**_block("paragraph", "gone"), "in_trash": True},
        {
            "type": "column_list",
            "column_list": {},
            "children": [{"type": "column", "children": [_block("paragraph", "kept")]}],
        },
    ]
    assert blocks_markdown(blocks) == "kept"
    assert content_hash("kept") == content_hash("kept") != content_hash("kept ")


def test_a_narrative_row_dirties_the_document_it_annotates_and_nothing_else() -> None:
    dirty = DirtyDocuments()
    dataset = uuid.uuid4()
    dirty.add_row("narrative", Action.INSERT, {"entity": "dataset", "entity_id": str(dataset)})
    dirty.add_row("narrative", Action.DELETE, {"entity": "nonsense", "entity_id": str(uuid.uuid4())})
    assert dirty.direct_keys() == {DocumentKey("dataset", dataset)}
    assert truncated_entities("narrative") == {"program", "experiment", "dataset", "signature"}
