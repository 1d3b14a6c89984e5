"""``replicator notion …``: set up the Notion side. ``init --parent-page ID`` creates the four databases with
every property the sink writes and prints their ids as ``NAME=value`` lines (nothing else on stdout), so a shell
can ``eval "$(replicator notion init --parent-page …)"``; it needs no database (without ``POSTGRES_URL`` its four
requests are paced by this process alone, with it by the integration's shared budget). ``check`` runs the sink's
start-up check; ``check --repair`` first adds back the properties the replicator writes that a person renamed or
deleted. Registered in ``replicator/cli/__init__.py``.
"""

from __future__ import annotations

import typer

from replicator.cli.common import EXIT_USAGE, fail, failures, load_settings


def init(
    parent_page: str = typer.Option(..., "--parent-page", help="Id of the Notion page to create the databases in."),
) -> None:
    """Create the Programs, Experiments, Signatures and Experimental Data Assets databases; print their ids."""
    from replicator.budget import notion_limiter
    from replicator.sinks.notion import create_databases, notion_client

    settings = load_settings(postgres=False)
    if settings.notion_api_key is None:
        fail("NOTION_API_KEY is not set", EXIT_USAGE)
    client = notion_client(settings.notion_api_key.get_secret_value(), settings.notion_base_url)
    try:
        with failures(settings):
            limiter = notion_limiter(settings) if settings.postgres_configured else None
            ids = create_databases(client, parent_page, limiter=limiter)
    finally:
        client.close()
    for name, value in ids.items():
        typer.echo(f"{name}={value}")


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
    from replicator.sinks.notion import build_notion_sink

    settings = load_settings()
    with failures(settings):
        # The integration's budget, shared with running daemons: a check during a backfill causes no 429 storm.
        sink = build_notion_sink(settings, limiter=notion_limiter(settings))
        try:
            if repair:
                for line in sink.repair_schema():
                    typer.echo(f"repaired {line}")
            sink.check()
        finally:
            sink.close()
    typer.echo("notion databases: ok")
