"""Text of a document for retrieval: what the Pinecone sink embeds, rendered from a ``Document`` (itself rendered
from the current Postgres rows), then cut into overlapping chunks.

Both steps are pure and deterministic: the same document gives the same chunks, so the same vector ids and the
same metadata, on every run and every replica. Chunks break on line boundaries first, then sentence ends, then
spaces; each chunk after the first repeats the document's title line so that a chunk found on its own still says
what it is about.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from replicator.documents import Document, FeatureLine, SignatureMatch

CHUNK_SIZE = 1000
CHUNK_OVERLAP = 150

_TITLES = {"dataset": "Dataset", "signature": "Signature", "program": "Program", "experiment": "Experiment"}

# Per entity: (label, field name) in the order they are written. Lists are joined with ", ".
_FIELD_LINES: dict[str, tuple[tuple[str, str], ...]] = {
    "dataset": (
        ("Omics type", "omics_type"),
        ("Organism", "organism"),
        ("Sample type", "sample_type"),
        ("Disease", "disease"),
        ("Matrix", "matrix"),
        ("Model systems", "model_systems"),
        ("Data origin", "data_origin"),
        ("Source", "source_url"),
        ("Description", "description"),
        ("Summary", "summary"),
        ("Methods", "methods"),
        ("Results", "results"),
        ("Conclusions", "conclusions"),
    ),
    "signature": (
        ("Short id", "short_id"),
        ("Modalities", "modalities"),
        ("Biomarker role", "biomarker_role"),
        ("Phenotype axes", "phenotype_axes"),
        ("Description", "description"),
    ),
    "program": (("Disease", "disease"), ("Description", "description")),
    "experiment": (
        ("Type", "type"),
        ("Disease", "disease"),
        ("Matrix", "matrix"),
        ("Model systems", "model_systems"),
        ("Targets", "targets"),
        ("Modality", "modality"),
        ("Biomarker role", "biomarker_role"),
        ("Phenotype axes", "phenotype_axes"),
        ("Treatment arms", "treatment_arms"),
        ("Stage", "stage"),
        ("Description", "description"),
    ),
}
_ROLE_LABELS = (("programs", "Programs"), ("experiments", "Experiments"), ("datasets", "Datasets"))
_ARROWS = {"up": "↑", "down": "↓", "neutral": "→", "complex": "↕"}


@dataclass(frozen=True)
class ChunkPolicy:
    size: int = CHUNK_SIZE
    overlap: int = CHUNK_OVERLAP

    def __post_init__(self) -> None:
        if self.size < 100 or not 0 <= self.overlap < self.size // 2:
            raise ValueError(f"chunk size {self.size} / overlap {self.overlap}: need size ≥ 100, 0 ≤ overlap < size/2")


def title_line(document: Document) -> str:
    return f"{_TITLES.get(document.key.entity, document.key.entity.title())}: {document.name}"


def document_text(document: Document) -> str:
    """The document as plain lines: title, fields, related names, features, signature matches."""
    lines = [title_line(document)]
    for label, name in _FIELD_LINES.get(document.key.entity, ()):
        value = _plain(document.fields.get(name))
        if value:
            lines.append(f"{label}: {value}")
    for role, label in _ROLE_LABELS:
        names = document.names_of(role)
        if names:
            lines.append(f"{label}: {', '.join(names)}")
    if document.features:
        lines.extend(_feature_lines(document))
    if document.signature_matches:
        lines.append("Signature matches:" if document.key.entity == "dataset" else "Matching datasets:")
        lines.extend(_match_line(m) for m in document.signature_matches)
    return "\n".join(lines)


def _feature_lines(document: Document) -> list[str]:
    if document.key.entity == "signature":
        head = f"Components ({len(document.features)}):"
        return [head, *(_component_line(f) for f in document.features)]
    total = max(document.feature_count, len(document.features))
    head = f"Top features ({len(document.features)} of {total}):"
    return [head, *(_feature_line(f) for f in document.features)]


def _feature_line(feature: FeatureLine) -> str:
    stats = []
    if feature.log2_fold_change is not None:
        stats.append(f"log2FC {feature.log2_fold_change:+.3g}")
    if feature.p_value is not None:
        stats.append(f"p {feature.p_value:.3g}")
    tail = f": {', '.join(stats)}" if stats else ""
    return f"- {feature.name} ({feature.feature_type}){tail}"


def _component_line(feature: FeatureLine) -> str:
    arrow = f" {_ARROWS.get(feature.direction, feature.direction)}" if feature.direction else ""
    direction = f" {feature.direction}{arrow}" if feature.direction else ""
    weight = f", weight {feature.weight:g}" if feature.weight is not None else ""
    return f"- {feature.name} ({feature.feature_type}){direction}{weight}"


def _match_line(match: SignatureMatch) -> str:
    return (
        f"- {match.other_name}: score {match.score:.3f}, overlap {match.overlap_fraction:.2f} "
        f"({match.matched_components}/{match.total_components} components, {match.match_level})"
    )


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value if v not in (None, ""))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()) if v not in (None, ""))
    return " ".join(str(value).split()) if "\n" not in str(value) else str(value).strip()


# ---- chunking ----------------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def chunk_document(document: Document, policy: ChunkPolicy = ChunkPolicy()) -> list[str]:
    return chunk_text(document_text(document), policy, header=title_line(document))


SOURCE_POSTGRES = "postgres"
SOURCE_NOTION = "notion"


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document and where its text came from: ``postgres`` (the structured document) or ``notion``
    (the narrative people wrote on its page)."""

    text: str
    source: str


def narrative_header(document: Document) -> str:
    return f"{title_line(document)} (notes in Notion)"


def document_chunks(document: Document, policy: ChunkPolicy = ChunkPolicy()) -> list[Chunk]:
    """The structured document's chunks first, then the narrative's (each narrative chunk names the document)."""
    chunks = [Chunk(text, SOURCE_POSTGRES) for text in chunk_document(document, policy)]
    narrative = document.narrative
    if narrative is not None and narrative.text.strip():
        header = narrative_header(document)
        body = chunk_text(f"{header}\n{narrative.text.strip()}", policy, header=header)
        chunks.extend(Chunk(text, SOURCE_NOTION) for text in body)
    return chunks


def chunk_text(text: str, policy: ChunkPolicy = ChunkPolicy(), *, header: str | None = None) -> list[str]:
    """Pack ``text`` into chunks of at most ``policy.size`` characters; each chunk after the first starts with
    ``header`` (when given) and then the last ≤ ``policy.overlap`` characters of the previous chunk's body."""
    prefix = f"{header} (continued)\n" if header else ""
    if len(prefix) > policy.size // 2:
        prefix = ""  # a title that long would crowd out the content; chunks stay attributable by metadata
    units = _units(text, policy.size - len(prefix))
    if not units:
        return [header or ""] if header else []
    chunks: list[str] = []
    body: list[str] = []
    for unit in units:
        limit = policy.size - (len(prefix) if chunks else 0)
        if body and _joined_len([*body, unit]) > limit:
            chunks.append(_emit(body, prefix if chunks else ""))
            body = _tail(body, policy.overlap, policy.size - len(prefix) - len(unit) - 1)
        body.append(unit)
    chunks.append(_emit(body, prefix if chunks else ""))
    return chunks


def _emit(body: Sequence[str], prefix: str) -> str:
    return prefix + "\n".join(body)


def _joined_len(parts: Sequence[str]) -> int:
    return sum(len(p) for p in parts) + max(0, len(parts) - 1)


def _tail(body: Sequence[str], overlap: int, room: int) -> list[str]:
    """The end of the previous chunk to repeat: whole trailing units within ``overlap`` characters, else the last
    ``overlap`` characters cut at a word boundary; never more than ``room`` characters."""
    budget = min(overlap, max(0, room))
    if budget <= 0:
        return []
    tail: list[str] = []
    for unit in reversed(body):
        if _joined_len([unit, *tail]) > budget:
            break
        tail.insert(0, unit)
    if tail:
        return tail
    last = body[-1][-budget:]
    space = last.find(" ")
    piece = last[space + 1 :] if 0 <= space < len(last) - 1 else last
    return [piece] if piece.strip() else []


def _units(text: str, max_len: int) -> list[str]:
    """Lines, with a line longer than ``max_len`` split at sentence ends, then spaces, then hard."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line.strip():
            continue
        if len(line) <= max_len:
            out.append(line)
            continue
        for sentence in _SENTENCE_END.split(line):
            out.extend(_split_words(sentence, max_len))
    return out


def _split_words(text: str, max_len: int) -> list[str]:
    if len(text) <= max_len:
        return [text] if text else []
    pieces: list[str] = []
    rest = text
    while len(rest) > max_len:
        cut = rest.rfind(" ", 0, max_len + 1)
        if cut <= 0:
            cut = max_len
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces
