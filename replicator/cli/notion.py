"""``replicator notion …``: set up the Notion side. ``init --parent-page ID`` creates the four databases with
every property the sink writes and prints their ids as ``NAME=value`` lines (nothing else on stdout), so a shell
can ``eval "$(replicator notion init --parent-page …)"``. ``check`` runs the sink's start-up check; ``check
--repair`` first adds back the properties the replicator writes that a person renamed or deleted.
``replicator/cli/__init__.py`` registers these on its ``notion`` group through ``register``.
"""

from __future__ import annotations

import sys

import typer
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from replicator.retry import RateLimiter
from replicator.sinks.base import SinkConfigError, SinkError
from replicator.status import configured_secrets, redact


class _NotionAccess(BaseSettings):
    """The two settings ``init`` needs (it needs no Postgres, so it does not build the full ``Settings``)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True)

    notion_api_key: SecretStr = Field(alias="NOTION_API_KEY")
    notion_base_url: str = Field("https://api.notion.com", alias="NOTION_BASE_URL")


def _fail(message: str, code: int, secrets: tuple[str, ...] = ()) -> typer.Exit:
    """Print the (redacted: a server's error body may echo the token) message; the exit to raise."""
    print(f"error: {redact(message, secrets)}", file=sys.stderr)
    return typer.Exit(code)


def init(
    parent_page: str = typer.Option(..., "--parent-page", help="Id of the Notion page to create the databases in."),
) -> None:
    """Create the Programs, Experiments, Signatures and Experimental Data Assets databases; print their ids."""
    from replicator.sinks.notion import create_databases, notion_client

    try:
        access = _NotionAccess()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError:
        raise _fail("NOTION_API_KEY is not set", 2) from None
    token = access.notion_api_key.get_secret_value()
    client = notion_client(token, access.notion_base_url)
    try:
        ids = create_databases(client, parent_page, limiter=_budget())
    except (SinkError, SinkConfigError) as error:
        raise _fail(str(error), 1, (token,)) from None
    finally:
        client.close()
    for name, value in ids.items():
        print(f"{name}={value}")


def _budget() -> RateLimiter | None:
    """The integration's shared Notion budget when the replicator's settings are there (``init`` needs no
    Postgres, so without ``POSTGRES_URL`` it runs unpaced: four requests)."""
    from replicator.budget import notion_limiter
    from replicator.config import Settings

    try:
        settings = Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError:
        return None
    return notion_limiter(settings)


def check(
    repair: bool = typer.Option(
        False,
        "--repair",
        help="First add back every property the replicator writes that a database lacks (renamed or deleted in "
        "the Notion UI); a property of the wrong type is only reported.",
    ),
) -> None:
    """Check that the configured databases hold every property the sink writes (exit 2 when not)."""
    from replicator.budget import notion_limiter
    from replicator.config import Settings
    from replicator.sinks.notion import build_notion_sink

    try:
        settings = Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        raise _fail(f"bad configuration: {error}", 2) from None
    try:
        # The integration's budget, shared with running daemons: a check during a backfill causes no 429 storm.
        sink = build_notion_sink(settings, limiter=notion_limiter(settings))
        try:
            if repair:
                for line in sink.repair_schema():
                    print(f"repaired {line}")
            sink.check()
        finally:
            sink.close()
    except SinkConfigError as error:
        raise _fail(str(error), 2, configured_secrets(settings)) from None
    except SinkError as error:
        raise _fail(str(error), 1, configured_secrets(settings)) from None
    print("notion databases: ok")


def register(notion_app: typer.Typer) -> None:
    """Add ``init`` and ``check`` to the ``replicator notion`` group."""
    notion_app.command("init")(init)
    notion_app.command("check")(check)
