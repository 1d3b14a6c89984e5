"""The managed section of a page, planned in place: what this process last wrote of a page's section (``Layout``,
its children as ``Child``), and how to turn the toggle's children into the rendered ones with the fewest block
calls (``section_plan``: patch what keeps its type, delete and append the tail; ``append_chunks``: appends that
each fit one request). Pure: no API call; the sink (``sink._write_section``) sends what these plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from replicator.sinks.notion.render import JSON, plain_text, split_section


@dataclass(frozen=True)
class Child:
    """One child block of the managed toggle as written (or as read back): id, type, plain text; ``nested``: it
    has children of its own (never one of ours: a person's, so it is replaced rather than patched)."""

    id: str
    type: str
    text: str
    nested: bool = False


@dataclass(frozen=True)
class Layout:
    """What this process last wrote of a page's managed section: the toggle's id, its children in page order (None
    after a fresh toggle, whose append answer names only the toggle), the body hash they render, and the write
    token recorded with that write in the sink state (``chunk_count``)."""

    toggle: str
    children: tuple[Child, ...] | None
    body: str
    token: int


def child_text(block: Mapping[str, Any]) -> str:
    payload = block.get(str(block.get("type"))) or {}
    return plain_text(payload.get("rich_text") or [])


def written_child(block_id: str, block: Mapping[str, Any]) -> Child:
    return Child(block_id, str(block["type"]), child_text(block))


def section_plan(old: Sequence[Child], new: Sequence[JSON]) -> tuple[list[tuple[str, JSON]], list[str], list[JSON]]:
    """How to turn the toggle's children ``old`` into ``new`` in place: (block id, new block) pairs to patch — same
    position, same type, other text —, then, from the first position whose type differs (a type cannot change in
    place), the old blocks to delete and the new ones to append at the end."""
    patches: list[tuple[str, JSON]] = []
    same = 0
    for before, after in zip(old, new, strict=False):
        if before.type != after["type"] or before.nested:
            break
        if before.text != child_text(after):
            patches.append((before.id, after))
        same += 1
    return patches, [c.id for c in old[same:]], list(new[same:])


def append_chunks(blocks: list[JSON]) -> list[list[JSON]]:
    """``blocks`` in chunks that each fit one ``blocks.children.append`` (``split_section``'s limits)."""
    if not blocks:
        return []
    _, chunks = split_section({"type": "toggle", "toggle": {"rich_text": [], "children": blocks}}, 0)
    return chunks
