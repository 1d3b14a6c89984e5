"""``replicator query``: hybrid retrieval as the team intended it. The question is embedded with the configured
provider and matched in Pinecone; hits are grouped per document (its best chunk) and each document is then
hydrated from Postgres by its ``postgres_id`` — current name, omics type, programs, top features, signature
matches — so what a reader sees is the source of truth, with the matching chunk as evidence. A hit whose row is
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


@dataclass(frozen=True)
class Hit:
    key: DocumentKey
    score: float
    chunk: int
    chunk_text: str
    remote_name: str  # the name stored with the vector (shown for stale hits)
    document: Document | None  # None: the row no longer exists in Postgres

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
) -> list[Hit]:
    """The ``top_k`` best documents for ``question``, best first, hydrated from Postgres."""
    if not question.strip():
        raise QueryInputError("the question is empty")
    if not 1 <= top_k <= MAX_TOP_K:
        raise QueryInputError(f"--top-k {top_k}: expected 1 to {MAX_TOP_K}")
    metadata_filter = parse_filters(filters, entity)
    (vector,) = sink.provider.embed([question], query=True)
    # Ids and scores only: an answer is capped at 4 MB, and 4 × 1,000 matches with up to 40 KB of metadata each
    # would exceed it many times over (without metadata and values a match is ~100 bytes: 10,000 fit). The
    # metadata of the one best chunk per document is fetched afterwards, in small batches.
    matches = sink.query(vector, top_k=min(top_k * _OVERFETCH, 10_000), filter=metadata_filter, include_metadata=False)
    candidates: dict[DocumentKey, tuple[str, float]] = {}
    for match in matches:
        key = key_of_vector_id(match.id)
        if key is None or key in candidates:  # matches come best first, so the first one per document is its best
            continue
        candidates[key] = (match.id, float(match.score))
    best: dict[DocumentKey, tuple[float, dict[str, Any]]] = {}
    ordered = list(candidates.items())
    while ordered and len(best) < top_k:
        wanted, ordered = ordered[: top_k - len(best)], ordered[top_k - len(best) :]
        metadata = sink.fetch_metadata([vid for _, (vid, _) in wanted])
        for key, (vid, score) in wanted:
            # A chunk gone since the query saw it (read lag: the query may reflect an older state) is no hit.
            if vid in metadata:
                best[key] = (score, metadata[vid])
    documents = render(conn, list(best))
    return [
        Hit(
            key=key,
            score=score,
            chunk=int(meta.get("chunk", 0)),
            chunk_text=str(meta.get("text", "")),
            remote_name=str(meta.get("name", "")),
            document=documents.get(key),
        )
        for key, (score, meta) in best.items()
    ]


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
            programs=list(document.relation_names.get("programs", ())),
            experiments=list(document.relation_names.get("experiments", ())),
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
    out.update(chunk=hit.chunk, chunk_text=hit.chunk_text)
    return out
