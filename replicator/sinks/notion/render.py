"""Rendering a ``Document`` into what the Notion sink writes: the page properties (as the API wants them) and
the ONE managed section of the page body (a toggle block holding summary, top features and signature matches).

Pure functions, no I/O. Notion's request limits are met here: rich text is split into items of at most 2,000
characters (counted in UTF-16 code units, as Notion counts them) and at most 100 items; arrays (multi-select,
relations, children) hold at most 100 entries; select names lose commas (Notion rejects them) and stay ≤ 100
characters. The properties and the body are hashed separately, so a change to one does not rewrite the other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from replicator.documents import Document, DocumentKey, FeatureLine, SignatureMatch
from replicator.sinks.notion.schema import CONTENT_HASH, DATABASES, POSTGRES_ID

TEXT_ITEM_MAX = 2000  # characters per rich-text item
ARRAY_MAX = 100  # rich-text items, multi-select values, relation ids, children per request
OPTION_NAME_MAX = 100
URL_MAX = 2000
BODY_MATCHES_MAX = 25
TRUNCATED = " […]"
# Request sizes (https://developers.notion.com/reference/request-limits: "1,000 block elements and 500KB
# overall"), measured as the SDK sends a body: compact JSON in UTF-8. The margins leave room for the request's
# other fields.
REQUEST_BYTES_MAX = 450_000  # one request body (500 KB is the limit)
REQUEST_BLOCKS_MAX = 1000
TEXT_BYTES_MAX = 200_000  # UTF-8 bytes of one rich-text array (2,000 × 100 ASCII characters fit)
PROPERTIES_BYTES_MAX = 300_000  # every property of one page, so a create carries them with room to spare

# The managed section is a toggle whose text starts with this marker; the sink finds it again by this text and
# never touches any other block (people write on these pages too).
MANAGED_MARKER = "Synced from Postgres"
MANAGED_TITLE = f"{MANAGED_MARKER} (omics-cdc; edits inside this toggle are replaced)"

JSON = dict[str, Any]


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = TEXT_ITEM_MAX) -> list[str]:
    """Pieces of at most ``limit`` UTF-16 code units, preferring to break after whitespace, never inside a
    character."""
    pieces: list[str] = []
    rest = text
    while rest:
        if _utf16_len(rest) <= limit:
            pieces.append(rest)
            break
        # Largest prefix within the limit (code points outside the BMP count twice).
        end, units = 0, 0
        for char in rest:
            width = 2 if ord(char) > 0xFFFF else 1
            if units + width > limit:
                break
            units += width
            end += 1
        space = max(rest.rfind(" ", 0, end), rest.rfind("\n", 0, end))
        cut = space + 1 if space >= end // 2 else end
        pieces.append(rest[:cut])
        rest = rest[cut:]
    return pieces


def rich_text(text: str | None) -> list[JSON]:
    """A rich-text array for ``text``: ≤2,000-character items, at most 100 of them (longer text is cut with a
    visible marker rather than refused)."""
    if not text:
        return []
    if len(text.encode("utf-8")) > TEXT_BYTES_MAX:  # e.g. 2,000-character items of 3-byte characters
        text = text.encode("utf-8")[: TEXT_BYTES_MAX - len(TRUNCATED.encode())].decode("utf-8", "ignore") + TRUNCATED
    pieces = split_text(text)
    if len(pieces) > ARRAY_MAX:
        pieces = pieces[:ARRAY_MAX]
        last = pieces[-1]
        pieces[-1] = last[: len(last) - len(TRUNCATED)] + TRUNCATED
    return [{"type": "text", "text": {"content": piece}} for piece in pieces]


def json_bytes(value: Any) -> int:
    """Bytes of ``value`` as the SDK sends it (httpx: compact JSON, UTF-8)."""
    return len(orjson.dumps(value))


def block_count(blocks: Iterable[Mapping[str, Any]]) -> int:
    """Block elements in ``blocks``, nested children included (Notion counts all of them)."""
    total = 0
    for block in blocks:
        total += 1
        payload = block.get(str(block.get("type"))) or {}
        total += block_count(payload.get("children") or [])
    return total


def fit_properties(properties: JSON, protected: Iterable[str] = ()) -> JSON:
    """``properties`` cut until their JSON is at most ``PROPERTIES_BYTES_MAX``: the largest text property (rich
    text or title, never one in ``protected``) loses half its text, with the visible marker, until they fit.
    Deterministic, so the same document always renders the same properties (and hash). The full text stays in
    Postgres."""
    out = dict(properties)
    keep = set(protected)
    while json_bytes(out) > PROPERTIES_BYTES_MAX:
        sizes = {
            name: json_bytes(value)
            for name, value in out.items()
            if name not in keep and isinstance(value, dict) and (value.get("rich_text") or value.get("title"))
        }
        if not sizes:
            break
        name = max(sizes, key=lambda n: (sizes[n], n))
        kind = "title" if "title" in out[name] else "rich_text"
        current = plain_text(out[name][kind])
        if current.endswith(TRUNCATED):
            current = current[: -len(TRUNCATED)]
        out[name] = {kind: rich_text(current[: len(current) // 2].rstrip() + TRUNCATED)}
    return out


def split_section(section: JSON, room: int) -> tuple[JSON, list[list[JSON]]]:
    """The managed toggle cut to fit one request: the toggle with the first children that fit in ``room``
    bytes, and the remaining children in chunks that each fit one ``blocks.children.append`` (at most
    ``REQUEST_BYTES_MAX`` bytes, ``REQUEST_BLOCKS_MAX`` blocks and ``ARRAY_MAX`` children)."""
    children = list(section["toggle"].get("children") or [])
    shell = {**section, "toggle": {**section["toggle"], "children": []}}
    first: list[JSON] = []
    used = json_bytes(shell)
    blocks = 1
    for child in children:
        size = json_bytes(child) + 1
        count = block_count([child])
        if used + size > room or blocks + count > REQUEST_BLOCKS_MAX:
            break
        first.append(child)
        used += size
        blocks += count
    index = len(first)
    chunks: list[list[JSON]] = []
    chunk: list[JSON] = []
    used, blocks = 0, 0
    for child in children[index:]:
        size = json_bytes(child) + 1
        count = block_count([child])
        if chunk and (
            used + size > REQUEST_BYTES_MAX or blocks + count > REQUEST_BLOCKS_MAX or len(chunk) >= ARRAY_MAX
        ):
            chunks.append(chunk)
            chunk, used, blocks = [], 0, 0
        chunk.append(child)
        used += size
        blocks += count
    if chunk:
        chunks.append(chunk)
    return {**section, "toggle": {**section["toggle"], "children": first}}, chunks


def plain_text(items: Iterable[Any]) -> str:
    """The plain text of a rich-text array from an API response."""
    out = []
    for item in items:
        if isinstance(item, dict):
            text = item.get("plain_text")
            if text is None:
                text = (item.get("text") or {}).get("content", "")
            out.append(str(text))
    return "".join(out)


def option_name(value: object) -> str | None:
    """A select / multi-select option name Notion accepts: no commas, collapsed spaces, ≤100 characters; None
    when nothing is left."""
    if value is None:
        return None
    text = re.sub(r"\s+", " ", str(value).replace(",", " ")).strip()
    text = text[:OPTION_NAME_MAX].strip()
    return text or None


def _select(value: object) -> JSON:
    name = option_name(value)
    return {"select": {"name": name} if name else None}


def _multi_select(values: object) -> JSON:
    names: list[str] = []
    for value in values if isinstance(values, list | tuple) else ([] if values is None else [values]):
        name = option_name(value)
        if name and name not in names:
            names.append(name)
    return {"multi_select": [{"name": n} for n in names[:ARRAY_MAX]]}


def _text(value: object) -> JSON:
    return {"rich_text": rich_text(None if value is None else str(value))}


def _url(value: str | None) -> JSON:
    return {"url": value if value and len(value) <= URL_MAX else None}


def _number(value: float | None) -> JSON:
    return {"number": value}


def _source_url(doc: Document) -> str | None:
    url = doc.fields.get("source_url")
    if url:
        return str(url)
    external = doc.fields.get("external_ids") or {}
    doi = external.get("doi") if isinstance(external, dict) else None
    return f"https://doi.org/{doi}" if doi else None


def _best_score(matches: tuple[SignatureMatch, ...]) -> float | None:
    return max((m.score for m in matches), default=None)


def _field_properties(doc: Document) -> JSON:
    f = doc.fields
    entity = doc.key.entity
    if entity == "dataset":
        return {
            "Omics Type": _select(str(f.get("omics_type") or "").capitalize() or None),
            "Data Origin": _select(f.get("data_origin")),
            "Dataset Source Type": _select(f.get("dataset_source_type")),
            "Summary": _text(f.get("summary") or f.get("description")),
            "Methods": _text(f.get("methods")),
            "Results": _text(f.get("results")),
            "Conclusions": _text(f.get("conclusions")),
            "Model Systems": _multi_select(f.get("model_systems")),
            "Disease": _multi_select(f.get("disease")),
            "Matrix": _multi_select(f.get("matrix")),
            "Source URL / DOI": _url(_source_url(doc)),
            "Signature Match Score": _number(_best_score(doc.signature_matches)),
        }
    if entity == "signature":
        return {
            "Short ID": _text(f.get("short_id")),
            "Description": _text(f.get("description")),
            "Modalities": _multi_select([str(m).capitalize() for m in f.get("modalities") or []]),
            "Data Ownership": _select(f.get("data_ownership")),
        }
    if entity == "experiment":
        return {
            "Type": _select(f.get("type")),
            "Description": _text(f.get("description")),
            "Disease": _multi_select(f.get("disease")),
            "Matrix": _multi_select(f.get("matrix")),
            "Model Systems": _multi_select(f.get("model_systems")),
            "Targets": _multi_select(f.get("targets")),
            "Modality": _multi_select(f.get("modality")),
            "Biomarker Role": _multi_select(f.get("biomarker_role")),
            "Phenotype Axes": _multi_select(f.get("phenotype_axes")),
            "Treatment Arms": _multi_select(f.get("treatment_arms")),
            "Stage": _select(f.get("stage")),
        }
    return {"Description": _text(f.get("description")), "Disease": _multi_select(f.get("disease"))}


def owned_properties(doc: Document) -> JSON:
    """The non-relation properties the sink writes for ``doc`` (title, fields, Postgres ID), in request shape: what
    a person's edit of a replicator-owned property is compared with."""
    spec = DATABASES[doc.key.entity]
    properties: JSON = {spec.title_property: {"title": rich_text(doc.name)}}
    properties.update(_field_properties(doc))
    properties[POSTGRES_ID] = _text(str(doc.key.id))
    return properties


def property_value(value: Mapping[str, Any]) -> str | None:
    """A property value as comparable text, from a request body or an API response alike (title and rich text:
    plain text; select: its name; multi-select: sorted names; url, number, checkbox: as text); None for a type
    this does not compare (relations, formulas)."""
    for kind in ("title", "rich_text"):
        if kind in value:
            return plain_text(value.get(kind) or [])
    if "select" in value:
        option = value.get("select")
        return str(option.get("name") or "") if isinstance(option, Mapping) else ""
    if "multi_select" in value:
        names = [str(o.get("name") or "") for o in value.get("multi_select") or [] if isinstance(o, Mapping)]
        return ", ".join(sorted(names))
    if "url" in value:
        return str(value.get("url") or "")
    if "number" in value:
        number = value.get("number")
        return "" if number is None else repr(float(number))
    return None


OVERWRITTEN_HASH = "notion:properties-overwritten"
"""What narrative capture records as a page's hash after a person changed a property the sink owns: the sink then
rewrites the page's properties even though its ``Content Hash`` still matches (Postgres wins)."""


def relation_targets(doc: Document) -> dict[str, tuple[DocumentKey, ...]]:
    """The relations the sink writes for ``doc``, by property name → target keys (whole sets, at most 100 each;
    signatures beyond 100 keep the best-scoring ones). A cut set is said on the page: ``cut_relations``."""
    out: dict[str, tuple[DocumentKey, ...]] = {}
    for relation in DATABASES[doc.key.entity].relations:
        keys = doc.keys_of(relation.role)
        if len(keys) > ARRAY_MAX and relation.role == "signatures":
            ranked = [m.other for m in doc.signature_matches if m.other in set(keys)]
            keys = tuple(ranked + [k for k in keys if k not in set(ranked)])
        out[relation.name] = keys[:ARRAY_MAX]
    return out


def cut_relations(doc: Document) -> dict[str, int]:
    """Relations with more targets than a Notion relation property takes (100): property name → full count."""
    return {
        relation.name: len(doc.related.get(relation.role, ()))
        for relation in DATABASES[doc.key.entity].relations
        if len(doc.related.get(relation.role, ())) > ARRAY_MAX
    }


def relation_cut_marker(name: str, total: int) -> str:
    """The body paragraph that says a relation property shows only part of the set (the count is the marker)."""
    return f"{name}: {ARRAY_MAX} of {total} linked (Notion takes at most {ARRAY_MAX}); all {total} are in Postgres"


def _name_paragraphs(first: str, more: str, names: Sequence[str]) -> list[str]:
    """``first: name, name, …`` and as many ``more: …`` paragraphs as it takes so that no name is cut: each text
    within one rich-text array (``TEXT_BYTES_MAX``), a name longer than that alone in its paragraph (cut there)."""
    texts: list[str] = []
    parts: list[str] = []
    head, size = first, len(first.encode()) + 2
    for name in names:
        cost = len(name.encode()) + 2
        if parts and size + cost > TEXT_BYTES_MAX - len(TRUNCATED.encode()):
            texts.append(f"{head}: {', '.join(parts)}")
            head, parts, size = more, [], len(more.encode()) + 2
        parts.append(name)
        size += cost
    texts.append(f"{head}: {', '.join(parts)}")
    return texts


def missing_targets(doc: Document, pages: Mapping[DocumentKey, str]) -> list[DocumentKey]:
    """Relation targets of ``doc`` that have no Notion page yet (the document must wait for them)."""
    return sorted({k for keys in relation_targets(doc).values() for k in keys if k not in pages})


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _feature_line(line: FeatureLine) -> str:
    if line.direction is not None or line.weight is not None:
        weight = "" if line.weight is None else f", weight {line.weight:g}"
        return f"{line.name} ({line.feature_type}) {line.direction or ''}{weight}".replace(" ,", ",")
    lfc, p = _fmt(line.log2_fold_change, ".2f"), _fmt(line.p_value, ".3g")
    return f"{line.name} ({line.feature_type}): log2FC {lfc}, p {p}"


def _match_line(match: SignatureMatch) -> str:
    return (
        f"{match.other_name}: score {match.score:.3f}, {match.matched_components}/{match.total_components} "
        f"components matched ({match.match_level})"
    )


def _paragraph(text: str) -> JSON:
    return {"object": "block", "type": "paragraph", "paragraph": {"rich_text": rich_text(text)}}


def _heading(text: str) -> JSON:
    return {"object": "block", "type": "heading_3", "heading_3": {"rich_text": rich_text(text)}}


def _bullet(text: str) -> JSON:
    return {"object": "block", "type": "bulleted_list_item", "bulleted_list_item": {"rich_text": rich_text(text)}}


def body_children(doc: Document) -> list[JSON]:
    """The blocks inside the managed toggle (at most 100)."""
    blocks: list[JSON] = []
    f = doc.fields
    summary = f.get("summary") or f.get("description")
    if summary:
        blocks.append(_paragraph(str(summary)))
    if doc.key.entity == "dataset":
        shown = len(doc.features)
        blocks.append(_heading(f"Top features ({shown} of {doc.feature_count}, by |log2FC| then p)"))
        blocks.extend(_bullet(_feature_line(line)) for line in doc.features)
    elif doc.key.entity == "signature":
        blocks.append(_heading(f"Components ({doc.feature_count})"))
        blocks.extend(_bullet(_feature_line(line)) for line in doc.features)
    if doc.key.entity in ("dataset", "signature"):
        matches = doc.signature_matches
        title = "Signature matches" if doc.key.entity == "dataset" else "Dataset matches"
        blocks.append(_heading(f"{title} ({len(matches)})"))
        blocks.extend(_bullet(_match_line(m)) for m in matches[:BODY_MATCHES_MAX])
    else:
        for role in sorted(doc.related):
            if names := doc.names_of(role):
                blocks.append(_paragraph(f"{role.capitalize()}: {', '.join(names)}"))
    if not blocks:
        blocks.append(_paragraph("No summary in Postgres yet."))
    if len(blocks) > ARRAY_MAX:
        blocks = [*blocks[: ARRAY_MAX - 1], _paragraph("… (truncated)")]
    # Relations beyond what a Notion relation property takes: the count, and every name, in the body.
    roles = {r.name: r.role for r in DATABASES[doc.key.entity].relations}
    cut = [
        _paragraph(text)
        for name, total in cut_relations(doc).items()
        for text in _name_paragraphs(relation_cut_marker(name, total), f"{name} (continued)", doc.names_of(roles[name]))
    ]
    if cut:
        blocks = [*blocks[: ARRAY_MAX - len(cut)], *cut]
    return blocks


def managed_section(doc: Document) -> JSON:
    """The toggle block the sink owns on each page."""
    return {
        "object": "block",
        "type": "toggle",
        "toggle": {"rich_text": rich_text(MANAGED_TITLE), "children": body_children(doc)},
    }


def is_managed_block(block: Mapping[str, Any]) -> bool:
    """A top-level block of a page that is (a copy of) the sink's managed section."""
    if block.get("type") != "toggle" or block.get("in_trash") or block.get("archived"):
        return False
    return plain_text((block.get("toggle") or {}).get("rich_text", [])).startswith(MANAGED_MARKER)


@dataclass(frozen=True)
class ContentHash:
    """What the ``Content Hash`` property holds: the document hash (what ``verify`` compares) and the hashes of
    the written properties and body (what the sink compares to skip unchanged parts), and ``owned``: a short
    digest of each owned property's value as written (``owned_digests``), so narrative capture can tell a
    person's change of a property from a value the replicator has not written yet while its write is pending.
    Pages written before ``owned`` existed parse with it empty."""

    doc: str
    props: str
    body: str
    owned: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        owned = f" own:{','.join(f'{name}={value}' for name, value in self.owned)}" if self.owned else ""
        return f"doc:{self.doc} props:{self.props} body:{self.body}{owned}"

    @staticmethod
    def parse(text: str | None) -> ContentHash | None:
        if not text:
            return None
        parts = dict(part.split(":", 1) for part in text.split() if ":" in part)
        if not {"doc", "props", "body"} <= parts.keys():
            return None
        pairs = (item.split("=", 1) for item in parts.get("own", "").split(",") if "=" in item)
        owned = tuple((name, value) for name, value in pairs)
        return ContentHash(parts["doc"], parts["props"], parts["body"], owned)

    def written_value_digest(self, name: str) -> str | None:
        """The digest of property ``name``'s value as last written, None when the page does not say."""
        return dict(self.owned).get(_short_digest(name))


def _short_digest(text: str) -> str:
    # 8 hex digits keep ten properties under 200 characters of the Content Hash; a collision only hides an edit.
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def owned_digests(properties: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(digest of name, digest of value) of each comparable property (``property_value``), names sorted: names
    are hashed because the ``Content Hash`` text is split on spaces."""
    out: list[tuple[str, str]] = []
    for name in sorted(properties):
        value = properties[name]
        text = property_value(value) if isinstance(value, Mapping) else None
        if text is not None:
            out.append((_short_digest(name), _short_digest(text)))
    return tuple(out)


def value_digest(value: Mapping[str, Any]) -> str | None:
    """The digest ``owned_digests`` keeps for one property value (request or response shape)."""
    text = property_value(value)
    return None if text is None else _short_digest(text)


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True)
class RenderedPage:
    key: DocumentKey
    title: str
    properties: JSON  # every property the sink writes, Content Hash included
    section: JSON  # the managed toggle block
    hashes: ContentHash


def render_page(doc: Document, pages: Mapping[DocumentKey, str]) -> RenderedPage:
    """Properties and managed section of ``doc``; ``pages`` maps every relation target to its page id (check
    ``missing_targets`` first)."""
    spec = DATABASES[doc.key.entity]
    properties: JSON = {spec.title_property: {"title": rich_text(doc.name)}}
    properties.update(_field_properties(doc))
    for name, keys in relation_targets(doc).items():
        properties[name] = {"relation": [{"id": pages[k]} for k in keys]}
    properties[POSTGRES_ID] = _text(str(doc.key.id))
    properties = fit_properties(properties, protected=(POSTGRES_ID,))
    section = managed_section(doc)
    owned = owned_digests({name: properties[name] for name in owned_properties(doc) if name in properties})
    hashes = ContentHash(doc=doc.structured_hash(), props=_digest(properties), body=_digest(section), owned=owned)
    properties[CONTENT_HASH] = _text(hashes.text())
    return RenderedPage(doc.key, doc.name, properties, section, hashes)
