"""The CLI's shared pieces (replicator/cli/common.py): one settings loader, one mapping of failures to exit codes,
every message redacted."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
import typer

from replicator.cli.common import EXIT_FAILED, EXIT_UNHEALTHY, EXIT_USAGE, failures, load_settings
from replicator.config import Settings
from replicator.sinks.base import SinkConfigError, SinkError

REPO = Path(__file__).resolve().parents[2]
TOKEN = "secret_cli_common_token_7f3a"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, info in Settings.model_fields.items():
        monkeypatch.delenv(info.alias or name, raising=False)
        monkeypatch.delenv((info.alias or name).lower(), raising=False)


def test_without_postgres_url_only_a_command_that_needs_no_database_gets_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOTION_API_KEY", TOKEN)
    settings = load_settings(postgres=False)
    assert not settings.postgres_configured
    assert settings.notion_api_key is not None
    assert settings.notion_api_key.get_secret_value() == TOKEN
    with pytest.raises(typer.Exit) as exited:
        load_settings()
    assert exited.value.exit_code == EXIT_USAGE
    assert "POSTGRES_URL: is required but not set" in capsys.readouterr().err


def test_without_postgres_url_another_bad_variable_is_still_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REPLICATOR_SLOT", "Not A Slot Name")
    with pytest.raises(typer.Exit) as exited:
        load_settings(postgres=False)
    assert exited.value.exit_code == EXIT_USAGE
    assert "REPLICATOR_SLOT" in capsys.readouterr().err


def test_configured_postgres_is_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_URL", "postgresql://u@h/db")
    assert load_settings(postgres=False).postgres_configured


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SinkConfigError(f"bad key {TOKEN}"), EXIT_USAGE),
        (NotImplementedError(f"cannot list {TOKEN}"), EXIT_USAGE),
        (SinkError(f"429 for {TOKEN}", retryable=True), EXIT_UNHEALTHY),
        (SinkError(f"400 validation for {TOKEN}", retryable=False), EXIT_FAILED),
        (psycopg.OperationalError(f"connection refused {TOKEN}"), EXIT_UNHEALTHY),
        (psycopg.errors.UndefinedTable(f'relation "replicator.outbox" does not exist {TOKEN}'), EXIT_FAILED),
    ],
    ids=["config", "unsupported", "retryable", "refused", "postgres-down", "not-migrated"],
)
def test_every_failure_of_a_sink_command_has_one_exit_code_and_a_redacted_message(
    error: Exception, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.model_validate({"POSTGRES_URL": "postgresql://u@h/db", "NOTION_API_KEY": TOKEN})

    with pytest.raises(typer.Exit) as exited, failures(settings):
        raise error
    assert exited.value.exit_code == code
    message = capsys.readouterr().err
    assert message.startswith("error: ")
    assert TOKEN not in message
    assert "[REDACTED]" in message


def test_only_the_cli_reads_the_environment_into_settings() -> None:
    """``Settings()`` (pydantic-settings reading the environment) is built in replicator/cli/common.py alone;
    everything else receives its settings."""
    built = re.compile(r"(?<!class )\bSettings\(")  # a call, not the class statement (RetrySettings( is no match)
    readers = sorted(
        str(path.relative_to(REPO)) for path in (REPO / "replicator").rglob("*.py") if built.search(path.read_text())
    )
    assert readers == ["replicator/cli/common.py"]
