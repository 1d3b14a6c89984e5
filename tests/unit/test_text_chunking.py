"""Entity text and chunking for Pinecone: what a document reads like, and how it is cut."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.documents import Document, DocumentKey, FeatureLine, Related, SignatureMatch
from replicator.sinks.pinecone.text import ChunkPolicy, chunk_document, chunk_text, document_text

DATASET = DocumentKey("dataset", uuid.UUID("11111111-1111-1111-1111-111111111111"))
SIGNATURE = DocumentKey("signature", uuid.UUID("22222222-2222-2222-2222-222222222222"))
PROGRAM = DocumentKey("program", uuid.UUID("33333333-3333-3333-3333-333333333333"))


def _dataset(features: int = 3, description: str = "CSF lipidomics of ALS patients.") -> Document:
    return Document(
        key=DATASET,
        name="ALS CSF lipids",
        fields={
            "omics_type": "lipidomics",
            "organism": ["Homo sapiens"],
            "disease": ["ALS"],
            "description": description,
            "summary": None,
        },
        related={"programs": (Related(PROGRAM, "Neuro program"),)},
        features=tuple(
            FeatureLine(
                name=f"Cer 18:1;O2/{16 + i}:0",
                feature_type="lipid",
                log2_fold_change=1.5 - i * 0.1,
                p_value=0.001 * (i + 1),
            )
            for i in range(features)
        ),
        feature_count=features + 10,
        signature_matches=(
            SignatureMatch(
                other=SIGNATURE,
                other_name="ALS-CSF-Core-6Ceramides",
                score=0.8125,
                overlap_fraction=0.6667,
                matched_components=4,
                total_components=6,
                match_level="exact",
            ),
        ),
    )


def test_dataset_text_has_name_omics_type_programs_features_and_matches() -> None:
    text = document_text(_dataset())
    lines = text.splitlines()
    assert lines[0] == "Dataset: ALS CSF lipids"
    assert "Omics type: lipidomics" in lines
    assert "Organism: Homo sapiens" in lines
    assert "Disease: ALS" in lines
    assert "Programs: Neuro program" in lines
    assert "Top features (3 of 13):" in lines
    assert "- Cer 18:1;O2/16:0 (lipid): log2FC +1.5, p 0.001" in lines
    assert "- ALS-CSF-Core-6Ceramides: score 0.812, overlap 0.67 (4/6 components, exact)" in lines
    assert "None" not in text  # null fields are left out


def test_signature_text_lists_components_with_directions_and_weights() -> None:
    signature = Document(
        key=SIGNATURE,
        name="ALS-CSF-Core-6Ceramides",
        fields={"modalities": ["lipidomics"], "description": "Six ceramides"},
        features=(
            FeatureLine(name="Cer 18:1;O2/16:0", feature_type="lipid", direction="up", weight=1.0),
            FeatureLine(name="SM 18:1;O2/24:1", feature_type="lipid", direction="down", weight=0.8),
        ),
    )
    lines = document_text(signature).splitlines()
    assert lines[0] == "Signature: ALS-CSF-Core-6Ceramides"
    assert "Modalities: lipidomics" in lines
    assert "- Cer 18:1;O2/16:0 (lipid) up ↑, weight 1" in lines
    assert "- SM 18:1;O2/24:1 (lipid) down ↓, weight 0.8" in lines


def test_a_short_document_is_one_chunk() -> None:
    document = _dataset()
    assert chunk_document(document) == [document_text(document)]


def test_a_long_document_is_cut_on_line_boundaries_with_overlap_and_a_title() -> None:
    document = _dataset(features=60)
    policy = ChunkPolicy(size=400, overlap=80)
    chunks = chunk_document(document, policy)
    assert len(chunks) > 3
    assert all(len(c) <= 400 for c in chunks)
    for previous, chunk in itertools.pairwise(chunks):
        assert chunk.startswith("Dataset: ALS CSF lipids (continued)\n")
        body = chunk.split("\n", 1)[1]
        first_line = body.split("\n", 1)[0]
        assert previous.endswith("\n" + first_line)  # the overlap repeats the previous chunk's last line
    every_line = set(document_text(document).splitlines())
    chunk_lines = {line for c in chunks for line in c.splitlines()}
    assert every_line <= chunk_lines  # nothing lost, and lines were never split (all short here)


def test_chunking_is_deterministic() -> None:
    document = _dataset(features=40, description="Long. " * 300)
    assert chunk_document(document, ChunkPolicy(300, 50)) == chunk_document(document, ChunkPolicy(300, 50))


def test_a_line_longer_than_a_chunk_is_split_at_sentence_ends() -> None:
    sentences = [f"Sentence number {i} says something about ceramides." for i in range(40)]
    chunks = chunk_text(" ".join(sentences), ChunkPolicy(size=300, overlap=60))
    assert all(len(c) <= 300 for c in chunks)
    assert all(c.rstrip().endswith(".") for c in chunks)
    joined = "\n".join(chunks)
    assert all(s in joined for s in sentences)


def test_invalid_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        ChunkPolicy(size=200, overlap=150)


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("abc def.\n"), min_size=0, max_size=3000),
    size=st.integers(min_value=100, max_value=600),
    overlap=st.integers(min_value=0, max_value=49),
)
def test_every_chunk_fits_and_every_word_survives(text: str, size: int, overlap: int) -> None:
    chunks = chunk_text(text, ChunkPolicy(size=size, overlap=overlap), header="Dataset: X")
    assert all(len(c) <= size for c in chunks)
    words = set(text.replace(".", " ").split())
    assert words <= set(" ".join(chunks).replace(".", " ").split())
