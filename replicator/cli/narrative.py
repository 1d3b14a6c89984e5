"""CLI commands of the narrative round trip and the rollout: ``replicator narrative capture`` (one capture round,
or rounds until interrupted) and ``replicator rollout status`` (the stage the deployment is in, ``--json`` for CI).

Registered in ``replicator/cli/__init__.py``.
"""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from replicator.cli.common import echo_json, failures, load_settings


def capture_command(
    loop: Annotated[
        bool, typer.Option("--loop", help="Keep polling every NARRATIVE_POLL_S until interrupted.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Run one narrative capture round now (the daemon's leader runs them when NARRATIVE_CAPTURE=true): poll the
    managed databases for edited pages, record people's edits of owned properties, store what they wrote."""
    import threading

    from replicator.narrative.stage import build_capture

    settings = load_settings()
    with failures(settings):
        capture = build_capture(settings)
    if loop:
        stop = threading.Event()
        try:
            capture.run(stop)
        except KeyboardInterrupt:
            stop.set()
        return
    try:
        with failures(settings):
            stats = capture.run_once()
    finally:
        capture.close()
    if as_json:
        echo_json(dict(vars(stats)))
        return
    typer.echo(
        f"seen {stats.pages_seen} page(s), read {stats.captured}: {stats.changed} changed, {stats.deleted} deleted, "
        f"{stats.unchanged} unchanged; {stats.overwrites} property overwrite(s) recorded; {stats.calls} Notion call(s)"
    )


def rollout_status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Scope, dual write, capture on/off, counts per entity in Postgres and in each sink, the last verify."""
    from replicator.rollout import collect

    settings = load_settings()
    with failures(settings), psycopg.connect(settings.dsn, autocommit=True) as conn:
        status = collect(conn, settings)
    if as_json:
        echo_json(status.to_dict())
        return
    console = Console(width=160, highlight=False)
    console.print(f"[bold]stage[/bold]: {status.stage}")
    console.print(f"[bold]scope[/bold]: {status.scope}")
    for sink, view in status.scopes.items():
        line = f"  {sink}: {view['scope']} (narrowing: {view['narrow']})"
        if view["applied"] is not None:
            line += f"; applied {str(view['applied_at'])[:19]}: +{view['widened']} -{view['narrowed']}"
            line += f", {view['rescope_pending']} pending"
        if view["restart_needed"]:
            line += " [yellow]changed: applied at the daemon's next start[/yellow]"
        console.print(line)
    console.print(f"[bold]dual write[/bold] (ENABLE_DUAL_WRITE): {'on' if status.dual_write else 'off'}")
    console.print(f"[bold]narrative capture[/bold] (NARRATIVE_CAPTURE): {'on' if status.capture else 'off'}")
    console.print(f"[bold]enabled sinks[/bold]: {', '.join(status.sinks) or '-'}")
    columns = list(dict.fromkeys(c for counts in status.counts.values() for c in counts))
    table = Table(title="documents per entity (sinks: as their workers recorded them)", title_justify="left")
    table.add_column("entity")
    for column in columns:
        table.add_column(column, justify="right")
    for entity, counts in status.counts.items():
        table.add_row(entity, *(str(counts.get(c, 0)) for c in columns))
    console.print(table)
    verify = Table(title="last verify", title_justify="left")
    for column in ("sink", "checked at", "result", "documents", "remote", "missing", "orphaned", "stale", "dup"):
        verify.add_column(column)
    for sink, result in status.verify.items():
        verify.add_row(
            sink,
            str(result["checked_at"])[:19],
            "[green]in sync[/green]" if result["in_sync"] else "[red]drift[/red]",
            *(str(result[k]) for k in ("documents", "remote", "missing", "orphaned", "stale", "duplicated")),
        )
    if status.verify:
        console.print(verify)
    else:
        console.print("last verify: never run (`replicator verify`)")
    console.print(f"edited in Notion, overwritten: {status.overwrites}")
