"""Settings: validated once, wrong variables named as the environment spells them, secrets masked, the Notion
switch, and every variable documented in the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from replicator.cli import describe_validation_error
from replicator.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _settings(**values: Any) -> Settings:
    return Settings.model_validate({"POSTGRES_URL": "postgresql://u:pw@h/db", **values})


@pytest.fixture(autouse=True)
def _no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment too: these tests must not depend on the caller's (a Makefile, a shell)."""
    for name, info in Settings.model_fields.items():
        monkeypatch.delenv(info.alias or name, raising=False)
        monkeypatch.delenv((info.alias or name).lower(), raising=False)


def _error(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(values)
    return describe_validation_error(caught.value)


def test_a_missing_url_is_named() -> None:
    assert "POSTGRES_URL: is required but not set" in _error()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REPLICATOR_SINKS", "notion,elastic"),
        ("REPLICATOR_HTTP_ADDR", "9187"),
        ("REPLICATOR_SLOT", "Bad-Name"),
        ("REPLICATOR_MAX_ATTEMPTS", "0"),
        ("ENABLE_DUAL_WRITE", "perhaps"),
        ("REPLICATOR_SINK_PLUGINS", '{"notion": {"factory": "x:y"}}'),
        ("REPLICATOR_SINK_PLUGINS", '{"mine": {}}'),
    ],
)
def test_a_wrong_value_is_named_by_its_variable(variable: str, value: str) -> None:
    message = _error(POSTGRES_URL="postgresql://h/db", **{variable: value})
    assert f"  {variable}: " in message


def test_enable_dual_write_false_removes_only_notion() -> None:
    on = _settings(REPLICATOR_SINKS="notion, pinecone")
    off = _settings(REPLICATOR_SINKS="notion,pinecone", ENABLE_DUAL_WRITE="false")
    assert on.enabled_sinks == ("notion", "pinecone")
    assert off.configured_sinks == ("notion", "pinecone")
    assert off.enabled_sinks == ("pinecone",)
    assert _settings().enabled_sinks == ()


def test_masked_hides_keys_and_url_passwords() -> None:
    settings = _settings(NOTION_API_KEY="ntn_abcdefabcdefabcdef", PINECONE_API_KEY="pcsk_xyz")
    masked = settings.masked()
    text = repr(masked)
    assert "ntn_abcdefabcdefabcdef" not in text
    assert "pcsk_xyz" not in text
    assert ":pw@" not in text
    assert masked["POSTGRES_URL"] == "postgresql://u:********@h/db"
    assert masked["REPLICATOR_SLOT"] == "omics_cdc"
