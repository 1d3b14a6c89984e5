"""The Pinecone record schema: deterministic vector ids (``dataset:<uuid>#0003``, one per chunk) and the one
metadata schema for every entity (``vector_metadata``), kept within Pinecone's 40 KB per vector: related id lists
share a budget and are cut visibly (``budget_id_lists``), and the chunk text is shortened last (``fit_metadata``).
Pure functions of a ``Document``: the same document gives the same ids and metadata on every run and replica.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import orjson

from replicator.documents import Document, DocumentKey
from replicator.graph import ENTITIES
from replicator.sinks.base import SinkError
from replicator.sinks.pinecone.text import SOURCE_NOTION, SOURCE_POSTGRES

# Pinecone's limit on one vector's metadata (https://docs.pinecone.io/reference/api/database-limits).
MAX_METADATA_BYTES = 40 * 1024
# The share of the 40 KB metadata that related ids (``program_ids`` …) may take together; the rest is for the
# chunk text and the filter fields. A list beyond its share is cut visibly: ``<key>_count`` holds the full count
# and ``<key>_truncated`` is true (the full set stays in Postgres and in the document text).
RELATION_IDS_BUDGET = 16 * 1024

# Metadata fields a filter can use, per entity: Postgres column → metadata key. Scalars become strings, arrays
# become lists of strings; null and empty values are dropped (Pinecone stores no nulls).
_FILTER_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "dataset": (
        ("omics_type", "omics_type"),
        ("disease", "disease"),
        ("organism", "organism"),
        ("sample_type", "sample_type"),
        ("matrix", "matrix"),
        ("model_systems", "model_systems"),
        ("data_origin", "data_origin"),
    ),
    "signature": (
        ("modalities", "modalities"),
        ("biomarker_role", "biomarker_role"),
        ("phenotype_axes", "phenotype_axes"),
    ),
    "program": (("disease", "disease"),),
    "experiment": (
        ("type", "experiment_type"),
        ("disease", "disease"),
        ("matrix", "matrix"),
        ("model_systems", "model_systems"),
        ("targets", "targets"),
        ("modality", "modality"),
        ("stage", "stage"),
    ),
}
# Keys whose values are lists of strings (a query filter on them uses $in).
LIST_METADATA_KEYS = frozenset(
    {
        "disease",
        "organism",
        "sample_type",
        "matrix",
        "model_systems",
        "modalities",
        "biomarker_role",
        "phenotype_axes",
        "targets",
        "modality",
        "program_ids",
        "experiment_ids",
        "dataset_ids",
        "signature_ids",
    }
)


def id_prefix(key: DocumentKey) -> str:
    return f"{key.entity}:{key.id}#"


def vector_id(key: DocumentKey, chunk: int) -> str:
    return f"{id_prefix(key)}{chunk:04d}"


def key_of_vector_id(vector_id_: str) -> DocumentKey | None:
    """The document a vector id belongs to, or ``None`` for an id that is not ours."""
    head, sep, chunk = vector_id_.rpartition("#")
    entity, colon, raw = head.partition(":")
    if not sep or not colon or entity not in ENTITIES or not chunk.isdigit():
        return None
    try:
        return DocumentKey(entity, uuid.UUID(raw))
    except ValueError:
        return None


def vector_metadata(
    document: Document,
    *,
    chunk: int,
    chunk_count: int,
    text: str,
    content_hash: str,
    source: str = SOURCE_POSTGRES,
) -> dict[str, Any]:
    """The one metadata schema: entity, postgres_id, name, chunk, chunk_count, text, content_hash, ``source``
    (``postgres``: the structured document; ``notion``: the narrative people wrote on its page, with
    ``notion_page_id``, ``notion_url``, ``last_edited_time`` and ``last_edited_by``), then the entity's filterable
    fields and related ids (``program_ids`` …) as lists of strings."""
    meta: dict[str, Any] = {
        "entity": document.key.entity,
        "postgres_id": str(document.key.id),
        "name": document.name,
        "chunk": chunk,
        "chunk_count": chunk_count,
        "content_hash": content_hash,
        "text": text,
        "source": source,
    }
    narrative = document.narrative
    if source == SOURCE_NOTION and narrative is not None:
        meta["notion_page_id"] = narrative.notion_page_id
        for name, found in (
            ("notion_url", narrative.notion_url),
            ("last_edited_time", narrative.last_edited_time),
            ("last_edited_by", narrative.last_edited_by),
        ):
            if found:
                meta[name] = found
    for column, meta_key in _FILTER_FIELDS.get(document.key.entity, ()):
        value = _metadata_value(document.fields.get(column))
        if value is not None:
            meta[meta_key] = value
    related: dict[str, set[str]] = defaultdict(set)
    for key in document.relation_keys():
        related[f"{key.entity}_ids"].add(str(key.id))
    for match in document.signature_matches:
        related[f"{match.other.entity}_ids"].add(str(match.other.id))
    meta.update(budget_id_lists({k: sorted(v) for k, v in related.items() if v}))
    return meta


def budget_id_lists(lists: dict[str, list[str]], budget: int = RELATION_IDS_BUDGET) -> dict[str, Any]:
    """The id lists within ``budget`` bytes of JSON together, shared fairly (a short list keeps all of its ids,
    the long ones share what is left). A list that was cut keeps its first ids in sorted order and gains
    ``<key>_count`` (how many there are) and ``<key>_truncated: true``, so a reader sees the list is partial."""
    out: dict[str, Any] = {}
    remaining = budget
    ordered = sorted(lists.items(), key=lambda kv: (_json_size(kv[1]), kv[0]))
    for position, (key, ids) in enumerate(ordered):
        share = remaining // (len(ordered) - position)
        if _json_size(ids) <= share:
            out[key] = ids
            remaining -= _json_size(ids)
            continue
        kept: list[str] = []
        size = 2  # the brackets
        for item in ids:
            cost = len(orjson.dumps(item)) + 1
            if size + cost > share - 64:  # room for the count and the marker fields
                break
            kept.append(item)
            size += cost
        out[key] = kept
        out[f"{key}_count"] = len(ids)
        out[f"{key}_truncated"] = True
        remaining -= size + 64
    return out


def _json_size(value: Any) -> int:
    return len(orjson.dumps(value))


def _metadata_value(value: Any) -> str | list[str] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple | set):
        items = sorted({str(v) for v in value if v not in (None, "")})
        return items or None
    if isinstance(value, dict):
        return None  # JSON objects (external ids) are not filterable in Pinecone metadata
    text = str(value)
    return text or None


def fit_metadata(meta: dict[str, Any], limit: int = MAX_METADATA_BYTES) -> dict[str, Any]:
    """Shorten ``text`` (whole characters, never a split UTF-8 sequence) until the metadata fits ``limit``."""
    size = len(orjson.dumps(meta))
    if size <= limit:
        return meta
    text: str = meta["text"]
    rest = size - len(text.encode())
    budget = limit - rest - 16  # the ellipsis and quoting
    if budget <= 1024:
        # The other fields alone leave too little room (filter lists of thousands of values): cut the largest list
        # in half, visibly, until the text has at least 1 KB; never a permanent error for size.
        lists = {k: v for k, v in meta.items() if isinstance(v, list) and v}
        if not lists:
            raise SinkError(
                f"metadata of {meta['entity']}:{meta['postgres_id']} exceeds {limit} bytes", retryable=False
            )
        key = max(lists, key=lambda k: _json_size(lists[k]))
        values = lists[key]
        cut = dict(meta)
        cut[key] = values[: len(values) // 2]
        cut[f"{key}_count"] = meta.get(f"{key}_count", len(values))
        cut[f"{key}_truncated"] = True
        return fit_metadata(cut, limit)
    encoded = text.encode()[:budget]
    short = encoded.decode("utf-8", errors="ignore").rstrip() + " …"
    out = dict(meta, text=short)
    while len(orjson.dumps(out)) > limit:  # escapes can make JSON longer than the raw bytes
        short = short[: max(0, len(short) - 256)]
        out = dict(meta, text=short + " …")
    return out
