"""A document's content hash is what every sink's ``sink_state`` stores to skip unchanged writes: a change to how
it is computed would rewrite every page and vector after an upgrade, so it is pinned here."""

from __future__ import annotations

import uuid

from replicator.documents import Document, DocumentKey, FeatureLine, Related

PROGRAM = DocumentKey("program", uuid.UUID(int=1))
SIGNATURE = DocumentKey("signature", uuid.UUID(int=2))


def _document(**changes: object) -> Document:
    values: dict[str, object] = {
        "key": DocumentKey("dataset", uuid.UUID(int=3)),
        "name": "x",
        "fields": {"omics_type": "lipidomics", "disease": ["ALS"]},
        "related": {
            "programs": (Related(PROGRAM, "Neuro"),),
            "experiments": (),
            "signatures": (Related(SIGNATURE, "Core"),),
        },
        "features": (FeatureLine(name="Cer", feature_type="lipid", log2_fold_change=1.0, p_value=0.1),),
        "feature_count": 1,
    }
    values.update(changes)
    return Document(**values)  # type: ignore[arg-type]


def test_the_hash_of_a_document_is_the_one_earlier_releases_stored() -> None:
    # Recorded with the release whose Document held relations and relation_names as two parallel dicts.
    assert _document().content_hash() == "773b3ba8c232c8532bc0518c9c5006357facaf4a1aeca85e8e96dc7a7a417eb4"


def test_a_related_name_or_key_changes_the_hash() -> None:
    renamed = _document(related={"programs": (Related(PROGRAM, "Neuro 2"),), "experiments": (), "signatures": ()})
    other = _document(
        related={"programs": (Related(DocumentKey("program", uuid.UUID(int=9)), "Neuro"),), "experiments": ()}
    )
    hashes = {_document().content_hash(), renamed.content_hash(), other.content_hash()}
    assert len(hashes) == 3
