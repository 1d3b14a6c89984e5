"""Rendering documents for Notion: request limits met by construction, sanitized options, whole relation sets,
separate property and body hashes, and the schema check's messages."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from replicator.documents import Document, DocumentKey, FeatureLine, Related, SignatureMatch
from replicator.sinks.notion.render import (
    PROPERTIES_BYTES_MAX,
    ContentHash,
    is_managed_block,
    json_bytes,
    managed_section,
    missing_targets,
    option_name,
    plain_text,
    relation_targets,
    render_page,
    rich_text,
    split_section,
    split_text,
    value_digest,
)
from replicator.sinks.notion.schema import DATABASES, schema_problems


def _key(entity: str) -> DocumentKey:
    return DocumentKey(entity, uuid.uuid4())


def _related(*keys: DocumentKey) -> tuple[Related, ...]:
    """Related documents named after their entity (these tests look at ids, not names)."""
    return tuple(Related(key, key.entity) for key in keys)


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@given(st.text(min_size=0, max_size=9000))
def test_split_text_keeps_every_character_in_pieces_notion_accepts(text: str) -> None:
    pieces = split_text(text)
    assert "".join(pieces) == text
    assert all(0 < _utf16(piece) <= 2000 for piece in pieces)


def test_characters_outside_the_basic_plane_count_twice_as_notion_counts_them() -> None:
    pieces = split_text("🧬" * 1500)
    assert [_utf16(p) for p in pieces] == [2000, 1000]


def test_text_longer_than_100_items_is_cut_with_a_visible_marker() -> None:
    items = rich_text("x" * 250_000)
    assert len(items) == 100
    assert items[-1]["text"]["content"].endswith("[…]")


def test_option_names_lose_commas_and_extra_space_and_empty_ones_disappear() -> None:
    assert option_name("ALS, FTD") == "ALS FTD"
    assert option_name("  a\t b ") == "a b"
    assert option_name(" , ") is None
    assert option_name("x" * 150) == "x" * 100


def test_dataset_properties_use_the_names_the_team_knows() -> None:
    signature = _key("signature")
    doc = Document(
        key=_key("dataset"),
        name="Internal Lipidomics — plasma",
        fields={
            "omics_type": "lipidomics",
            "disease": ["ALS", "ALS", "ALS, bulbar"],
            "external_ids": {"doi": "10.1/abc"},
            "summary": "s",
        },
        related={"signatures": _related(signature), "programs": (), "experiments": ()},
        signature_matches=(SignatureMatch(signature, "sig", 0.65, 1.0, 6, 6, "exact"),),
    )
    page = render_page(doc, {signature: "page-of-signature"})
    props = page.properties
    assert props["Experiment Name"]["title"][0]["text"]["content"] == "Internal Lipidomics — plasma"
    assert props["Omics Type"] == {"select": {"name": "Lipidomics"}}
    assert props["Disease"] == {"multi_select": [{"name": "ALS"}, {"name": "ALS bulbar"}]}
    assert props["Source URL / DOI"] == {"url": "https://doi.org/10.1/abc"}
    assert props["Signature Match Score"] == {"number": 0.65}
    assert props["Related Signature(s)"] == {"relation": [{"id": "page-of-signature"}]}
    assert props["Related Programs"] == {"relation": []}
    assert props["Postgres ID"]["rich_text"][0]["text"]["content"] == str(doc.key.id)
    assert set(props) == set(DATABASES["dataset"].property_types())


def test_a_document_waits_for_relation_targets_without_a_page() -> None:
    program, experiment = _key("program"), _key("experiment")
    doc = Document(_key("dataset"), "d", related={"programs": _related(program), "experiments": _related(experiment)})
    assert missing_targets(doc, {program: "p"}) == [experiment]
    assert missing_targets(doc, {program: "p", experiment: "e"}) == []


def test_only_the_lower_side_of_each_relation_is_written() -> None:
    # Programs are relation targets only; Notion's two-way relations fill their side.
    program = Document(_key("program"), "p", related={"datasets": _related(_key("dataset"))})
    assert relation_targets(program) == {}
    signature = Document(_key("signature"), "s", related={"datasets": _related(_key("dataset")), "programs": ()})
    assert list(relation_targets(signature)) == ["Related Programs"]


def test_more_than_100_signatures_keep_the_best_scoring_ones() -> None:
    keys = [_key("signature") for _ in range(120)]
    best = keys[-1]
    matches = (SignatureMatch(best, "best", 0.99, 1, 1, 1, "exact"),)
    doc = Document(_key("dataset"), "d", related={"signatures": _related(*keys)}, signature_matches=matches)
    targets = relation_targets(doc)["Related Signature(s)"]
    assert len(targets) == 100
    assert targets[0] == best


def test_a_property_change_leaves_the_body_hash_alone_and_a_body_change_the_properties_hash() -> None:
    key = _key("dataset")
    lines = (FeatureLine("Cer(d18:1/16:0)", "lipid", 1.5, 0.001),)
    base = Document(key, "d", fields={"omics_type": "lipidomics", "disease": ["ALS"]}, features=lines)
    prop_change = Document(key, "d", fields={"omics_type": "lipidomics", "disease": ["FTD"]}, features=lines)
    body_change = Document(key, "d", fields={"omics_type": "lipidomics", "disease": ["ALS"]}, features=lines * 2)
    h0, h1, h2 = (render_page(d, {}).hashes for d in (base, prop_change, body_change))
    assert h1.body == h0.body
    assert h1.props != h0.props
    assert h2.props == h0.props
    assert h2.body != h0.body
    assert len({h0.doc, h1.doc, h2.doc}) == 3


def test_the_content_hash_property_round_trips() -> None:
    hashes = render_page(Document(_key("program"), "p"), {}).hashes
    assert ContentHash.parse(hashes.text()) == hashes
    assert ContentHash.parse("") is None
    assert ContentHash.parse("something a person typed") is None


def test_the_content_hash_keeps_a_digest_of_each_owned_value_as_written() -> None:
    doc = Document(_key("dataset"), "d", fields={"omics_type": "lipidomics", "disease": ["ALS"]})
    page = render_page(doc, {})
    hashes = ContentHash.parse(page.hashes.text())
    assert hashes == page.hashes
    assert hashes is not None
    assert " " not in page.hashes.text().split(" own:", 1)[1]  # names are digested: the text splits on spaces
    written = hashes.written_value_digest("Omics Type")
    assert written == value_digest(page.properties["Omics Type"])
    assert written != value_digest({"select": {"name": "Proteomics"}})
    assert hashes.written_value_digest("No Such Property") is None
    old = ContentHash.parse("doc:a props:b body:c")  # a page written before the digests
    assert old == ContentHash("a", "b", "c")
    assert old is not None
    assert old.written_value_digest("Omics Type") is None


def test_the_managed_section_is_recognised_by_its_marker_and_lists_top_features() -> None:
    lines = (FeatureLine("TP53", "gene", -2.25, 0.0001),)
    section = managed_section(Document(_key("dataset"), "d", features=lines, feature_count=40))
    assert is_managed_block({"type": "toggle", "toggle": section["toggle"]})
    texts = [block[block["type"]]["rich_text"][0]["text"]["content"] for block in section["toggle"]["children"]]
    assert "TP53 (gene): log2FC -2.25, p 0.0001" in texts
    assert "Top features (1 of 40, by |log2FC| then p)" in texts
    assert not is_managed_block({"type": "toggle", "toggle": {"rich_text": [{"plain_text": "my notes"}]}})


def test_schema_problems_name_every_missing_wrong_and_misdirected_property() -> None:
    spec = DATABASES["experiment"]
    properties: dict[str, Any] = {name: {"type": kind} for name, kind in spec.property_types().items()}
    properties["Related Programs"] = {"type": "relation", "relation": {"data_source_id": "elsewhere"}}
    del properties["Stage"]
    properties["Type"] = {"type": "rich_text"}
    problems = schema_problems(spec, properties, {"program": "programs-ds"})
    assert problems == [
        "property 'Type' is rich_text, expected select",
        "missing property 'Stage' (select)",
        "relation 'Related Programs' points at data source elsewhere, expected programs-ds (Programs)",
    ]


def test_timeouts_and_dropped_connections_are_retryable_and_other_failures_permanent() -> None:
    import httpx
    from notion_client.errors import RequestTimeoutError

    from replicator.sinks.notion import map_notion_error

    assert map_notion_error(RequestTimeoutError(), "create page").retryable is True
    dropped = map_notion_error(httpx.RemoteProtocolError("Server disconnected"), "update page")
    assert dropped.retryable is True
    assert "update page" in str(dropped)
    assert map_notion_error(ValueError("bad"), "create page").retryable is False


def test_properties_too_big_for_one_request_are_cut_visibly_until_they_fit() -> None:
    long_text = "€" * 150_000  # 450 KB of UTF-8 per field
    fields = {"summary": long_text, "methods": long_text, "results": "short", "conclusions": long_text}
    page = render_page(Document(_key("dataset"), "d", fields=fields), {})
    assert json_bytes(page.properties) <= PROPERTIES_BYTES_MAX + 1000  # the Content Hash is added after
    assert plain_text(page.properties["Results"]["rich_text"]) == "short"
    for name in ("Summary", "Methods", "Conclusions"):
        assert plain_text(page.properties[name]["rich_text"]).endswith("[…]"), name
    assert render_page(Document(page.key, "d", fields=fields), {}).hashes == page.hashes  # deterministic


def test_a_section_is_split_into_requests_that_each_fit_and_keep_every_child_in_order() -> None:
    children = [{"type": "paragraph", "paragraph": {"rich_text": rich_text(f"{i} " + "x" * 150_000)}} for i in range(7)]
    section = {"type": "toggle", "toggle": {"rich_text": rich_text("Synced from Postgres"), "children": children}}
    first, rest = split_section(section, room=200_000)
    assert json_bytes(first) <= 200_000
    assert all(json_bytes({"children": chunk}) <= 450_000 for chunk in rest)
    assert [*first["toggle"]["children"], *(c for chunk in rest for c in chunk)] == children
    assert rest  # it did need more than one request


def test_relations_beyond_100_are_named_in_the_body_with_their_count() -> None:
    programs = tuple(_key("program") for _ in range(130))
    names = tuple(f"Program {i}" for i in range(130))
    related = tuple(Related(key, name) for key, name in zip(programs, names, strict=True))
    doc = Document(_key("experiment"), "e", related={"programs": related})
    page = render_page(doc, dict.fromkeys(programs, "p"))
    assert len(page.properties["Related Programs"]["relation"]) == 100
    texts = [plain_text(b[b["type"]]["rich_text"]) for b in page.section["toggle"]["children"]]
    (marker,) = [t for t in texts if t.startswith("Related Programs: 100 of 130 linked")]
    assert marker.endswith("Program 129")
