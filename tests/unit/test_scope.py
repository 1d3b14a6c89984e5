"""Per-sink scope expressions (#14): parsed once at start-up into a canonical form, errors naming the clause, and
the settings that carry them (REPLICATOR_SCOPE_*, a plugin's "scope" option) rejected when wrong."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from replicator.cli import describe_validation_error
from replicator.config import Settings
from replicator.documents import Document, DocumentKey, Related
from replicator.scope import EVERYTHING, ScopeError, parse, restrict


@pytest.fixture(autouse=True)
def _no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, info in Settings.model_fields.items():
        monkeypatch.delenv(info.alias or name, raising=False)


def _settings(**values: Any) -> Settings:
    return Settings.model_validate({"POSTGRES_URL": "postgresql://u:pw@h/db", **values})


@pytest.mark.parametrize("text", [None, "", "  ", "all", "ALL", ";", "entities=dataset,program,experiment,signature"])
def test_everything(text: str | None) -> None:
    assert parse(text) is EVERYTHING
    assert parse(text).text() == "all"


def test_a_pilot_scope_reads_back_in_canonical_form() -> None:
    scope = parse(" dataset.omics_type = lipidomics ")
    assert not scope.everything
    assert scope.text() == "dataset.omics_type=lipidomics"
    assert parse("dataset.organism=mouse,human; dataset.omics_type=lipidomics").text() == (
        "dataset.omics_type=lipidomics;dataset.organism=human,mouse"
    )
    assert parse("entities=signature,dataset").text() == "entities=dataset,signature"
    assert parse("dataset.omics_type!=lipidomics").conditions[0].negate


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("omics_type", "'omics_type': expected NAME=VALUES"),
        ("dataset.omics_type=", "'dataset.omics_type=': no value after ="),
        ("dataset.colour=red", "'dataset.colour=red': unknown filter 'dataset.colour'"),
        ("program.name=x", "'program.name=x': unknown filter 'program.name'"),
        ("dataset.omics_type=lipidomic", "'dataset.omics_type=lipidomic': unknown omics_type 'lipidomic'"),
        ("entities=dataset,notes", "'entities=dataset,notes': unknown entity 'notes'"),
        ("entities!=dataset", "'entities!=dataset': give entities once"),
        (
            "dataset.organism=mouse;dataset.organism=human",
            "'dataset.organism=human': dataset.organism is given twice",
        ),
    ],
)
def test_a_bad_clause_is_named(text: str, says: str) -> None:
    with pytest.raises(ScopeError) as caught:
        parse(text)
    assert says in str(caught.value)


def test_settings_keep_the_canonical_form_and_name_the_variable() -> None:
    settings = _settings(REPLICATOR_SCOPE_NOTION="dataset.omics_type = lipidomics")
    assert settings.scope_notion == "dataset.omics_type=lipidomics"
    assert settings.scope_of("notion").text() == "dataset.omics_type=lipidomics"
    assert settings.scope_of("pinecone") is EVERYTHING
    assert settings.scope_narrow == "remove"
    with pytest.raises(ValidationError) as caught:
        _settings(REPLICATOR_SCOPE_PINECONE="dataset.omics=x")
    message = describe_validation_error(caught.value)
    assert "REPLICATOR_SCOPE_PINECONE" in message
    assert "'dataset.omics=x': unknown filter" in message
    with pytest.raises(ValidationError) as caught:
        _settings(REPLICATOR_SCOPE_NARROW="trash")
    assert "REPLICATOR_SCOPE_NARROW" in describe_validation_error(caught.value)


def test_a_plugin_sink_takes_its_scope_option() -> None:
    plugins = '{"recording": {"factory": "tests.support.recording_sink:recording_plugin", "scope": "entities=program"}}'
    settings = _settings(REPLICATOR_SINK_PLUGINS=plugins)
    assert settings.scope_of("recording").text() == "entities=program"
    bad = '{"recording": {"factory": "tests.support.recording_sink:recording_plugin", "scope": "x=y"}}'
    with pytest.raises(ValidationError) as caught:
        _settings(REPLICATOR_SINK_PLUGINS=bad)
    assert "sink plugin 'recording': bad scope: 'x=y': unknown filter" in describe_validation_error(caught.value)


def test_restrict_leaves_out_relations_outside_the_scope() -> None:
    dataset = DocumentKey("dataset", uuid.uuid4())
    inside, outside = DocumentKey("program", uuid.uuid4()), DocumentKey("program", uuid.uuid4())
    doc = Document(
        key=dataset,
        name="d",
        related={"programs": (Related(inside, "in"), Related(outside, "out"))},
    )
    scoped = restrict(doc, {dataset, inside})
    assert scoped.keys_of("programs") == (inside,)
    assert scoped.names_of("programs") == ("in",)
    assert restrict(doc, {dataset, inside, outside}) is doc
