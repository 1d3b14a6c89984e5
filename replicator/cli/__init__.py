"""The ``replicator`` command line (Typer + Rich): one app, assembled here from thin command modules.

- ``common``: exit codes, consoles, the JSON writer, the settings loader (the only reader of the environment),
  the Postgres connection, failures → messages and exit codes. Every command uses them.
- ``operations``: ``run``, ``status``, ``health``, ``resync``, ``dlq``, ``slot drop``, ``config``.
- ``verify`` and ``query``: Postgres against the sinks; semantic search.
- ``notion`` and ``pinecone``: setting a sink up (``notion init|check``, ``pinecone init``).
- ``narrative``: ``narrative capture`` and ``rollout status``.

Exit codes (``common``, STYLE.md §4): 0 ok, 1 failed, 2 bad configuration or usage, 3 unhealthy.

A command imports a sink's modules inside its body, so ``replicator status`` never loads an SDK. A new command is
a function in one of the modules, added to the table below.
"""

from __future__ import annotations

from typing import Any

import typer

from replicator.cli import narrative, notion, operations, pinecone, query, verify
from replicator.cli.common import EXIT_USAGE, describe_validation_error, err, load_settings, out

__all__ = ["app", "describe_validation_error", "load_settings", "main"]

app = typer.Typer(help="Replicate Postgres changes to Notion and Pinecone.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: outbox rows a sink rejected for good or after its retries.")
slot_app = typer.Typer(help="The wal2json replication slot.")
notion_app = typer.Typer(help="Notion sink commands.")
pinecone_app = typer.Typer(help="Pinecone sink commands.")
narrative_app = typer.Typer(help="Narrative capture: the notes people write in Notion, read back into Postgres.")
rollout_app = typer.Typer(help="The staged rollout: pilot, all pipelines, Notion read-only, final validation.")

app.command("run")(operations.run)
app.command("status")(operations.status)
app.command("health")(operations.health)
app.command("resync")(operations.resync)
app.command("config")(operations.config)
app.command("verify")(verify.verify_command)
app.command("query")(query.query_command)
app.add_typer(dlq_app, name="dlq", no_args_is_help=True)
dlq_app.command("list")(operations.dlq_list)
dlq_app.command("retry")(operations.dlq_retry)
dlq_app.command("purge")(operations.dlq_purge)
app.add_typer(slot_app, name="slot", no_args_is_help=True)
slot_app.command("drop")(operations.slot_drop)
app.add_typer(notion_app, name="notion")
notion_app.command("init")(notion.init)
notion_app.command("check")(notion.check)
app.add_typer(pinecone_app, name="pinecone")
pinecone_app.command("init")(pinecone.init_command)
app.add_typer(narrative_app, name="narrative", no_args_is_help=True)
narrative_app.command("capture")(narrative.capture_command)
app.add_typer(rollout_app, name="rollout", no_args_is_help=True)
rollout_app.command("status")(narrative.rollout_status_command)


def _group_help(group: typer.Typer) -> Any:
    """``replicator notion`` / ``replicator pinecone`` without a command: the group's help, exit 2."""

    def callback(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            if not group.registered_commands:
                err().print(f"no {ctx.info_name} commands are available in this build yet", markup=False)
            else:
                out().print(ctx.get_help(), markup=False)
            raise typer.Exit(EXIT_USAGE)

    return callback


notion_app.callback(invoke_without_command=True)(_group_help(notion_app))
pinecone_app.callback(invoke_without_command=True)(_group_help(pinecone_app))


def main() -> None:
    app()
