"""Rendering documents from the current rows: fields, relations, top features, components, matches, deletions,
deterministic hashes, and a bounded number of queries per batch."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from replicator.documents import TOP_FEATURES, DocumentKey, UnknownEntityError, render

Conn = psycopg.Connection[tuple[Any, ...]]


def _one(conn: Conn, query: str, params: tuple[Any, ...]) -> uuid.UUID:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _feature(conn: Conn, name: str, feature_type: str = "lipid") -> uuid.UUID:
    return _one(
        conn,
        "INSERT INTO feature (feature_type, normalized_name, name) VALUES (%s, %s, %s) RETURNING id",
        (feature_type, name.lower(), name),
    )


def _world(conn: Conn) -> dict[str, uuid.UUID]:
    """A program with an experiment, a dataset of 25 features and a signature matching it."""
    ids: dict[str, uuid.UUID] = {}
    ids["program"] = _one(
        conn,
        "INSERT INTO program (name, description, disease, external_ids) VALUES (%s, %s, %s, %s) RETURNING id",
        ("ALS program", "Motor neuron disease", ["ALS"], Jsonb({"b": 2, "a": 1})),
    )
    ids["experiment"] = _one(
        conn,
        "INSERT INTO experiment (name, type, disease, matrix) VALUES (%s, %s, %s, %s) RETURNING id",
        ("CSF study", "patient", ["ALS"], ["CSF"]),
    )
    ids["dataset"] = _one(
        conn,
        "INSERT INTO dataset (natural_key, name, omics_type, disease, summary) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING id",
        ("file:csf", "CSF lipids", "lipidomics", ["ALS"], "Ceramides up"),
    )
    ids["signature"] = _one(
        conn,
        "INSERT INTO signature (name, short_id, modalities) VALUES (%s, %s, %s) RETURNING id",
        ("ALS-CSF-Core", "ALS1", ["Lipid"]),
    )
    conn.execute("INSERT INTO program_experiment VALUES (%s, %s)", (ids["program"], ids["experiment"]))
    conn.execute("INSERT INTO program_dataset VALUES (%s, %s)", (ids["program"], ids["dataset"]))
    conn.execute("INSERT INTO program_signature VALUES (%s, %s)", (ids["program"], ids["signature"]))
    conn.execute("INSERT INTO experiment_dataset VALUES (%s, %s)", (ids["experiment"], ids["dataset"]))
    for i in range(25):
        fid = _feature(conn, f"Cer(d18:1/{i}:0)")
        # |log2FC| grows with i, except two ties at the top broken by p-value.
        lfc = float(i) if i < 23 else 30.0 * (-1 if i == 23 else 1)
        p = 0.5 if i == 24 else 0.01
        conn.execute(
            "INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change, p_value) "
            "VALUES (%s, %s, %s, %s, %s)",
            (ids["dataset"], fid, f"raw{i}", lfc, p),
        )
        if i in (3, 7):
            conn.execute(
                "INSERT INTO signature_component (signature_id, feature_id, raw_name, direction, weight) "
                "VALUES (%s, %s, %s, %s, %s)",
                (ids["signature"], fid, f"raw{i}", "up" if i == 3 else "down", 0.8),
            )
    conn.execute(
        "INSERT INTO dataset_signature (dataset_id, signature_id, score, overlap_fraction, matched_components, "
        "total_components, match_level) VALUES (%s, %s, 0.75, 1.0, 2, 2, 'exact')",
        (ids["dataset"], ids["signature"]),
    )
    return ids


def test_a_dataset_renders_fields_relations_top_features_and_matches(conn: Conn) -> None:
    ids = _world(conn)
    key = DocumentKey("dataset", ids["dataset"])
    doc = render(conn, [key])[key]
    assert doc is not None
    assert doc.name == "CSF lipids"
    assert doc.fields["omics_type"] == "lipidomics"
    assert doc.fields["summary"] == "Ceramides up"
    assert doc.fields["disease"] == ["ALS"]
    assert doc.keys_of("programs") == (DocumentKey("program", ids["program"]),)
    assert doc.keys_of("experiments") == (DocumentKey("experiment", ids["experiment"]),)
    assert doc.keys_of("signatures") == (DocumentKey("signature", ids["signature"]),)
    assert doc.names_of("programs") == ("ALS program",)
    assert doc.feature_count == 25
    assert len(doc.features) == TOP_FEATURES
    # |log2FC| 30 twice: the smaller p-value first; then 22, 21, …
    assert [f.name for f in doc.features[:3]] == ["Cer(d18:1/23:0)", "Cer(d18:1/24:0)", "Cer(d18:1/22:0)"]
    assert doc.features[0].log2_fold_change == -30.0
    (match,) = doc.signature_matches
    assert match.other == DocumentKey("signature", ids["signature"])
    assert (match.other_name, match.score, match.matched_components, match.match_level) == (
        "ALS-CSF-Core",
        0.75,
        2,
        "exact",
    )


def test_a_signature_renders_every_component_and_its_matches(conn: Conn) -> None:
    ids = _world(conn)
    key = DocumentKey("signature", ids["signature"])
    doc = render(conn, [key])[key]
    assert doc is not None
    assert [(f.name, f.direction, f.weight) for f in doc.features] == [
        ("Cer(d18:1/3:0)", "up", 0.8),
        ("Cer(d18:1/7:0)", "down", 0.8),
    ]
    assert doc.feature_count == 2
    assert doc.fields["short_id"] == "ALS1"
    assert doc.keys_of("datasets") == (DocumentKey("dataset", ids["dataset"]),)
    assert doc.keys_of("programs") == (DocumentKey("program", ids["program"]),)
    assert doc.signature_matches[0].other == DocumentKey("dataset", ids["dataset"])


def test_program_and_experiment_render_their_relations(conn: Conn) -> None:
    ids = _world(conn)
    program = DocumentKey("program", ids["program"])
    experiment = DocumentKey("experiment", ids["experiment"])
    docs = render(conn, [program, experiment])
    p, e = docs[program], docs[experiment]
    assert p is not None
    assert e is not None
    assert p.fields["external_ids"] == {"a": 1, "b": 2}
    assert set(p.related) == {"experiments", "datasets", "signatures"}
    assert p.keys_of("experiments") == (experiment,)
    assert e.fields["type"] == "patient"
    assert e.fields["matrix"] == ["CSF"]
    assert e.keys_of("programs") == (program,)
    assert e.keys_of("datasets") == (DocumentKey("dataset", ids["dataset"]),)


def test_a_missing_row_renders_as_none(conn: Conn) -> None:
    key = DocumentKey("dataset", uuid.uuid4())
    assert render(conn, [key]) == {key: None}


def test_the_hash_is_stable_and_changes_with_the_content(conn: Conn) -> None:
    ids = _world(conn)
    key = DocumentKey("dataset", ids["dataset"])
    first = render(conn, [key])[key]
    again = render(conn, [key])[key]
    assert first is not None
    assert again is not None
    assert first.content_hash() == again.content_hash()
    conn.execute("UPDATE signature SET name = 'renamed' WHERE id = %s", (ids["signature"],))
    renamed = render(conn, [key])[key]
    assert renamed is not None
    assert renamed.content_hash() != first.content_hash()


def test_a_batch_costs_a_bounded_number_of_queries(conn: Conn) -> None:
    ids = [_world_copy(conn, n) for n in range(6)]
    keys = [DocumentKey("dataset", i) for i in ids]
    statements: list[str] = []

    class Counting(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            statements.append(str(query))
            return super().execute(query, params, **kwargs)

    conn.cursor_factory = Counting
    docs = render(conn, keys)
    assert all(docs[k] is not None for k in keys)
    # dataset rows, relations, features, matches, narratives: independent of the number of documents.
    assert 1 <= len(statements) <= 5


def _world_copy(conn: Conn, n: int) -> uuid.UUID:
    return _one(
        conn,
        "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'proteomics') RETURNING id",
        (f"k{n}", f"d{n}"),
    )


def test_an_unknown_entity_is_refused(conn: Conn) -> None:
    with pytest.raises(UnknownEntityError, match="feature"):
        render(conn, [DocumentKey("feature", uuid.uuid4())])
