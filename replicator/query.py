"""``replicator query``: hybrid retrieval as the team intended it. The question is embedded with the configured
provider and matched in Pinecone; hits are grouped per document (its best chunk) and each document is then
hydrated from Postgres by its ``postgres_id`` — current name, omics type, programs, top features, signature
matches — so what a reader sees is the source of truth, with the matching chunk as evidence, then the matching
notes people wrote on its Notion page (chunks with ``source: notion``), each with a link to the page. A hit whose row is
gone is reported as stale, not crashed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.documents import Document, DocumentKey, render
from replicator.errors import ConfigurationError
from replicator.graph import ENTITIES
from replicator.sinks.pinecone import LIST_METADATA_KEYS, PineconeSink, key_of_vector_id

# Chunks asked for per wanted document: several chunks of one document often rank together.
_OVERFETCH = 4
MAX_TOP_K = 1000


class QueryInputError(ConfigurationError, ValueError):
    """A bad ``--filter``, ``--entity`` or ``--top-k``; the message says which and why."""


SOURCES = ("postgres", "notion", "all")


@dataclass(frozen=True)
class Note:
    """A chunk of the narrative people wrote on the document's Notion page that matched the question."""

    score: float
    chunk: int
    text: str
    notion_page_id: str | None
    notion_url: str | None
    last_edited_time: str | None
    last_edited_by: str | None
    source: str = "notion"


@dataclass(frozen=True)
class Hit:
    key: DocumentKey
    score: float  # the best score of any of the document's chunks (structured or note)
    chunk: int  # the best structured chunk (-1: only notes matched)
    chunk_text: str
    remote_name: str  # the name stored with the vector (shown for stale hits)
    document: Document | None  # None: the row no longer exists in Postgres
    notes: tuple[Note, ...] = ()  # matching notes from Notion, best first: evidence after the structured document

    @property
    def stale(self) -> bool:
        return self.document is None


def parse_filters(pairs: Sequence[str], entity: str | None = None) -> dict[str, Any] | None:
    """``KEY=VALUE`` pairs as a Pinecone metadata filter: ``$eq`` for scalar fields, ``$in`` for list fields and
    for a key given more than once; clauses are AND-ed. ``entity`` adds ``entity $eq``."""
    values: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise QueryInputError(f"--filter {pair!r}: expected KEY=VALUE, e.g. omics_type=lipidomics")
        if key.startswith("$"):
            raise QueryInputError(f"--filter {pair!r}: operators are not accepted as keys")
        values.setdefault(key, [])
        if value not in values[key]:
            values[key].append(value)
    if entity is not None:
        if entity not in ENTITIES:
            raise QueryInputError(f"--entity {entity!r}: expected one of {', '.join(ENTITIES)}")
        values["entity"] = [entity]
    clauses: list[dict[str, Any]] = []
    for key, items in values.items():
        if key in LIST_METADATA_KEYS or len(items) > 1:
            clauses.append({key: {"$in": items}})
        else:
            clauses.append({key: {"$eq": items[0]}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def search(
    conn: psycopg.Connection[Any],
    sink: PineconeSink,
    question: str,
    *,
    top_k: int = 5,
    entity: str | None = None,
    filters: Sequence[str] = (),
    source: str = "all",
    notes_per_hit: int = 3,
) -> list[Hit]:
    """The ``top_k`` best documents for ``question``, best first, hydrated from Postgres. ``source``: ``postgres``
    (structured chunks only), ``notion`` (documents found through the notes people wrote) or ``all``; the notes
    that matched come with each hit as evidence. A vector written before chunks carried ``source`` counts as
    ``postgres``."""
    if not question.strip():
        raise QueryInputError("the question is empty")
    if not 1 <= top_k <= MAX_TOP_K:
        raise QueryInputError(f"--top-k {top_k}: expected 1 to {MAX_TOP_K}")
    if source not in SOURCES:
        raise QueryInputError(f"--source {source!r}: expected one of {', '.join(SOURCES)}")
    metadata_filter = parse_filters(filters, entity)
    if source != "all":
        # A chunk written before chunks carried ``source`` has none: $ne counts it as postgres.
        clause = {"source": {"$eq": "notion"}} if source == "notion" else {"source": {"$ne": "notion"}}
        metadata_filter = clause if metadata_filter is None else {"$and": [metadata_filter, clause]}
    (vector,) = sink.provider.embed([question], query=True)
    # Ids and scores only: an answer is capped at 4 MB, and 4 × 1,000 matches with up to 40 KB of metadata each
    # would exceed it many times over (without metadata and values a match is ~100 bytes: 10,000 fit). The
    # metadata of the matched chunks of the first top_k documents is fetched afterwards, in small batches.
    matches = sink.query(vector, top_k=min(top_k * _OVERFETCH, 10_000), filter=metadata_filter, include_metadata=False)
    order: dict[DocumentKey, float] = {}
    chunks: list[tuple[DocumentKey, str, float]] = []
    for match in matches:
        key = key_of_vector_id(match.id)
        if key is None:
            continue
        if key not in order:
            if len(order) == top_k:
                continue  # matches come best first: documents past top_k are not wanted, their chunks neither
            order[key] = float(match.score)
        chunks.append((key, match.id, float(match.score)))
    metadata = sink.fetch_metadata([vid for _, vid, _ in chunks])
    names: dict[DocumentKey, str] = {}
    structured: dict[DocumentKey, tuple[float, dict[str, Any]]] = {}
    notes: dict[DocumentKey, list[Note]] = {}
    for key, vid, score in chunks:
        meta = metadata.get(vid)
        if meta is None:
            continue  # a chunk gone since the query saw it (read lag: the query may reflect an older state)
        names.setdefault(key, str(meta.get("name", "")))
        if meta.get("source") == "notion":
            found = notes.setdefault(key, [])
            if len(found) < notes_per_hit:
                found.append(_note(score, meta))
        elif key not in structured:
            structured[key] = (score, meta)
    found_keys = [key for key in order if key in names]
    documents = render(conn, found_keys)
    hits: list[Hit] = []
    for key in found_keys:
        best = structured.get(key)
        hits.append(
            Hit(
                key=key,
                score=order[key],
                chunk=int(best[1].get("chunk", 0)) if best else -1,
                chunk_text=str(best[1].get("text", "")) if best else "",
                remote_name=names[key],
                document=documents.get(key),
                notes=tuple(notes.get(key, ())),
            )
        )
    return hits


def _note(score: float, meta: dict[str, Any]) -> Note:
    def text(name: str) -> str | None:
        value = meta.get(name)
        return str(value) if value else None

    return Note(
        score=score,
        chunk=int(meta.get("chunk", 0)),
        text=str(meta.get("text", "")),
        notion_page_id=text("notion_page_id"),
        notion_url=text("notion_url") or notion_link(text("notion_page_id")),
        last_edited_time=text("last_edited_time"),
        last_edited_by=text("last_edited_by"),
    )


def notion_link(page_id: str | None) -> str | None:
    """A link to a Notion page from its id (Notion's own URL form: the id without dashes)."""
    return f"https://www.notion.so/{page_id.replace('-', '')}" if page_id else None


def hit_json(hit: Hit) -> dict[str, Any]:
    """A hit for ``--json``: Postgres data first, then the matching chunk."""
    out: dict[str, Any] = {"entity": hit.key.entity, "postgres_id": str(hit.key.id), "score": hit.score}
    document = hit.document
    if document is None:
        out.update(stale=True, name=hit.remote_name)
    else:
        out.update(
            stale=False,
            name=document.name,
            omics_type=document.fields.get("omics_type"),
            programs=list(document.names_of("programs")),
            experiments=list(document.names_of("experiments")),
            top_features=[
                {
                    "name": f.name,
                    "feature_type": f.feature_type,
                    "log2_fold_change": f.log2_fold_change,
                    "p_value": f.p_value,
                    "direction": f.direction,
                }
                for f in document.features[:10]
            ],
            signature_matches=[
                {
                    "name": m.other_name,
                    "postgres_id": str(m.other.id),
                    "score": m.score,
                    "overlap_fraction": m.overlap_fraction,
                }
                for m in document.signature_matches[:5]
            ],
        )
    out.update(source="postgres", chunk=hit.chunk, chunk_text=hit.chunk_text)
    out["notes"] = [
        {
            "source": note.source,
            "score": note.score,
            "chunk": note.chunk,
            "text": note.text,
            "notion_page_id": note.notion_page_id,
            "notion_url": note.notion_url,
            "last_edited_time": note.last_edited_time,
            "last_edited_by": note.last_edited_by,
        }
        for note in hit.notes
    ]
    return out
