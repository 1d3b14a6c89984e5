"""Notion blocks as Markdown-like text (pure functions, no I/O).

A block is the API's block object (https://developers.notion.com/reference/block) with its children, read by the
capture, under the key ``children``. Text blocks keep their structure (headings ``#``, bulleted ``-`` and
numbered ``1.`` lists, to-dos ``- [ ]`` / ``- [x]``, quotes and callouts ``>``, code fences, ``$$`` equations,
tables as pipe rows, dividers ``---``); media and files become their caption and URL (a Notion-hosted file's
signed URL loses its query string, which expires hourly and would change the hash of unchanged text); nested
children are indented two spaces. Columns and synced blocks are transparent; child pages and databases are named,
not entered (they are pages of their own).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

JSON = Mapping[str, Any]

_HEADINGS = {"heading_1": "#", "heading_2": "##", "heading_3": "###"}
_MEDIA = ("image", "file", "pdf", "video", "audio")
_LINKS = ("bookmark", "embed", "link_preview")
_TRANSPARENT = ("column_list", "column", "synced_block")
_SKIPPED = ("table_of_contents", "breadcrumb", "unsupported", "template", "link_to_page")


def rich_text_markdown(items: Iterable[Any]) -> str:
    """Rich text with its annotations as Markdown: bold, italic, strikethrough, code, links, inline equations."""
    out: list[str] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "equation":
            expression = (item.get("equation") or {}).get("expression") or item.get("plain_text") or ""
            out.append(f"${expression}$")
            continue
        text = item.get("plain_text")
        if text is None:
            text = (item.get("text") or {}).get("content", "")
        text = str(text)
        if not text:
            continue
        notes = item.get("annotations") or {}
        if notes.get("code"):
            text = f"`{text}`"
        if notes.get("bold"):
            text = f"**{text}**"
        if notes.get("italic"):
            text = f"*{text}*"
        if notes.get("strikethrough"):
            text = f"~~{text}~~"
        href = item.get("href") or ((item.get("text") or {}).get("link") or {}).get("url")
        if href:
            text = f"[{text}]({href})"
        out.append(text)
    return "".join(out)


def _stable_url(payload: JSON) -> str:
    kind = payload.get("type")
    source = payload.get(kind) if isinstance(kind, str) else None
    url = str((source or {}).get("url") or payload.get("url") or "")
    if kind == "file":
        url = url.split("?", 1)[0]  # a signed URL: the path names the file, the query only grants an hour
    return url


def _lines(block: JSON, number: int) -> list[str]:
    """The block's own lines (children excluded)."""
    kind = str(block.get("type") or "")
    payload: JSON = block.get(kind) or {}
    text = rich_text_markdown(payload.get("rich_text") or [])
    if kind == "paragraph":
        return [text] if text else []
    if kind in _HEADINGS:
        return [f"{_HEADINGS[kind]} {text}"]
    if kind == "bulleted_list_item" or kind == "toggle":
        return [f"- {text}"]
    if kind == "numbered_list_item":
        return [f"{number}. {text}"]
    if kind == "to_do":
        return [f"- [{'x' if payload.get('checked') else ' '}] {text}"]
    if kind == "quote":
        return [f"> {line}" for line in (text or "").split("\n")]
    if kind == "callout":
        icon = payload.get("icon") or {}
        emoji = icon.get("emoji") if isinstance(icon, Mapping) and icon.get("type") == "emoji" else None
        head = f"{emoji} " if emoji else ""
        return [f"> {head}{line}" if i == 0 else f"> {line}" for i, line in enumerate((text or "").split("\n"))]
    if kind == "code":
        language = str(payload.get("language") or "")
        caption = rich_text_markdown(payload.get("caption") or [])
        fence = ["```" + ("" if language == "plain text" else language), *text.split("\n"), "```"]
        return [*fence, caption] if caption else fence
    if kind == "equation":
        return ["$$", str(payload.get("expression") or ""), "$$"]
    if kind == "divider":
        return ["---"]
    if kind in _MEDIA:
        caption = rich_text_markdown(payload.get("caption") or []) or str(payload.get("name") or "")
        url = _stable_url(payload)
        if kind == "image":
            return [f"![{caption}]({url})"]
        return [f"[{kind}: {caption or url}]({url})"]
    if kind in _LINKS:
        caption = rich_text_markdown(payload.get("caption") or [])
        url = str(payload.get("url") or "")
        return [f"[{caption}]({url})" if caption else f"<{url}>"]
    if kind == "child_page":
        return [f"[page: {payload.get('title') or ''}]"]
    if kind == "child_database":
        return [f"[database: {payload.get('title') or ''}]"]
    return [text] if text else []


def _table(block: JSON) -> list[str]:
    payload: JSON = block.get("table") or {}
    rows: list[str] = []
    for index, row in enumerate(block.get("children") or []):
        cells = (row.get("table_row") or {}).get("cells") or []
        rows.append("| " + " | ".join(rich_text_markdown(c).replace("|", "\\|") for c in cells) + " |")
        if index == 0 and payload.get("has_column_header"):
            rows.append("|" + " --- |" * max(len(cells), 1))
    return rows


def blocks_markdown(blocks: Sequence[JSON], depth: int = 0) -> str:
    """The blocks (with ``children``) as Markdown-like text, one line per line of text, blocks in order."""
    return "\n".join(_render(blocks, depth)).strip("\n")


def _render(blocks: Sequence[JSON], depth: int) -> list[str]:
    out: list[str] = []
    indent = "  " * depth
    number = 0
    for block in blocks:
        kind = str(block.get("type") or "")
        if block.get("in_trash") or block.get("archived") or kind in _SKIPPED:
            continue
        number = number + 1 if kind == "numbered_list_item" else 0
        children: Sequence[JSON] = block.get("children") or []
        if kind in _TRANSPARENT:
            out.extend(_render(children, depth))
            continue
        if kind == "table":
            out.extend(indent + line for line in _table(block))
            continue
        out.extend(indent + line if line else line for line in _lines(block, number))
        if children and kind not in ("child_page", "child_database"):
            out.extend(_render(children, depth + 1))
    return out


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
