"""Sinks kept outside the package are registered with REPLICATOR_SINK_PLUGINS (the test suite's recording sink is
one): named in REPLICATOR_SINKS, built by the factory with their options, refused clearly when misconfigured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from replicator.config import KNOWN_SINKS, Settings
from replicator.sinks.base import SinkConfigError
from replicator.sinks.factory import build_sink
from tests.support.recording_sink import RecordingSink, recording_plugin


def not_a_sink(settings: Settings, options: dict[str, Any], metrics: object) -> dict[str, Any]:
    return options


def _settings(**values: Any) -> Settings:
    return Settings.model_validate({"POSTGRES_URL": "postgresql://u:pw@h/db", **values})


def _plugins(**entries: dict[str, Any]) -> str:
    return orjson.dumps(entries).decode()


def test_production_settings_know_only_the_packaged_sinks() -> None:
    assert KNOWN_SINKS == ("notion", "pinecone")
    assert not [name for name in Settings.model_fields if "recording" in name]


def test_a_registered_plugin_is_a_known_sink_and_is_built_with_its_options(tmp_path: Path) -> None:
    settings = _settings(REPLICATOR_SINKS="recording", **recording_plugin(tmp_path / "r.jsonl", delay_ms=5))
    assert settings.known_sinks == ("notion", "pinecone", "recording")
    sink = build_sink("recording", settings)
    inner = sink.inner  # type: ignore[attr-defined]
    assert isinstance(inner, RecordingSink)
    assert inner.path == tmp_path / "r.jsonl"
    assert inner.delay_s == pytest.approx(0.005)


def test_an_unregistered_sink_name_is_refused_naming_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATOR_SINK_PLUGINS", raising=False)
    with pytest.raises(ValueError, match=r"unknown sink\(s\) \['recording'\]; known: notion, pinecone"):
        _settings(REPLICATOR_SINKS="recording")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("tests.support.no_such_module:build", "cannot load tests.support.no_such_module:build"),
        ("tests.support.recording_sink:no_such_factory", "cannot load"),
        ("tests.unit.test_sink_plugins:not_a_sink", "returned dict, not a Sink"),
    ],
)
def test_a_plugin_that_cannot_be_built_is_a_configuration_error(factory: str, message: str) -> None:
    settings = _settings(REPLICATOR_SINKS="mine", REPLICATOR_SINK_PLUGINS=_plugins(mine={"factory": factory}))
    with pytest.raises(SinkConfigError, match=message):
        build_sink("mine", settings)


def test_a_plugin_option_the_factory_refuses_is_a_configuration_error() -> None:
    plugins = _plugins(recording={"factory": "tests.support.recording_sink:build", "fail": "sometimes"})
    settings = _settings(REPLICATOR_SINKS="recording", REPLICATOR_SINK_PLUGINS=plugins)
    with pytest.raises(SinkConfigError, match="sink plugin 'recording': recording sink: fail must be"):
        build_sink("recording", settings)
