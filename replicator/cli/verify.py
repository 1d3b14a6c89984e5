"""``replicator verify``: Postgres against each sink (missing, orphaned, stale, duplicated, outside the scope),
``--repair`` to enqueue what drifted (``replicator.verify``), and people's overwritten edits (shown by ``status``
too). Registered in ``replicator/cli/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from replicator.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, echo_json, fail, failures, load_settings
from replicator.status import OverwriteView


def verify_command(
    sink_name: Annotated[
        str | None, typer.Option("--sink", help="Only this sink (default: every enabled one).")
    ] = None,
    repair_: Annotated[bool, typer.Option("--repair", help="Enqueue what drifted for the worker to fix.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare Postgres with each sink: missing, orphaned, stale and duplicated documents. Exit 0 only when
    everything is in sync (1: drift found or a read refused, 2: bad configuration, 3: a sink or Postgres could
    not be reached)."""
    from replicator.budget import sink_limiter
    from replicator.sinks.factory import build_sink
    from replicator.store import narrative
    from replicator.verify import record_report, repair, verify_sink

    settings = load_settings()
    names = (sink_name,) if sink_name else settings.enabled_sinks
    if not names:
        fail("no sink to verify: set REPLICATOR_SINKS or pass --sink", EXIT_USAGE)
    reports = []
    repairs = []
    with failures(settings), psycopg.connect(settings.dsn, autocommit=True) as conn:
        for name in names:
            # Notion's budget is shared with the running daemons: a verify during a backfill causes no 429 storm.
            sink = build_sink(name, settings, limiter=sink_limiter(name, settings))
            try:
                # Each sink's own hash (Notion leaves the narrative out: it is where the narrative comes from).
                report = verify_sink(
                    conn, sink, recheck_s=settings.verify_recheck_s, scope=settings.scope_of(sink.name)
                )
            finally:
                sink.close()
            reports.append(report)
            record_report(conn, report)
            if repair_ and not report.in_sync:
                repairs.append(repair(conn, report))
        overwritten = narrative.overwrites(conn, limit=20)
        overwrite_total = narrative.overwrite_count(conn)
    in_sync = all(r.in_sync for r in reports)
    if as_json:
        echo_json(
            {
                "in_sync": in_sync,
                "sinks": [r.as_json() for r in reports],
                "repair": [vars(r) for r in repairs],
                "edited_in_notion_overwritten": {
                    "total": overwrite_total,
                    "recent": [asdict(OverwriteView.of(o)) for o in overwritten],
                },
            }
        )
    else:
        _print_reports(reports, repairs)
        if overwrite_total:
            views = [OverwriteView.of(o) for o in overwritten]
            Console().print(overwrites_table(f"edited in Notion, overwritten ({overwrite_total})", views))
    raise typer.Exit(EXIT_OK if in_sync else EXIT_FAILED)


def _print_reports(reports: list[Any], repairs: list[Any]) -> None:
    console = Console()
    table = Table(title="replicator verify")
    # "outside scope" only where a scoped sink keeps documents there: the usual table stays narrow.
    outside = any(r.outside_scope for r in reports)
    columns = ("sink", "documents", "remote", "missing", "orphaned", "stale", "duplicated")
    for column in (*columns, *(("outside scope",) if outside else ()), "state"):
        table.add_column(column)
    for r in reports:
        state = "[green]in sync[/green]" if r.in_sync else "[red]drift[/red]"
        table.add_row(
            r.sink,
            str(r.documents),
            str(r.remote),
            str(len(r.missing)),
            str(len(r.orphaned)),
            str(len(r.stale)),
            str(len(r.duplicated)),
            *((str(len(r.outside_scope)),) if outside else ()),
            state,
        )
    console.print(table)
    for r in reports:
        for kind in ("missing", "orphaned", "stale", "duplicated", "outside_scope"):
            for key in getattr(r, kind)[:20]:
                console.print(f"  {r.sink}: {kind.replace('_', ' ')} {key}", highlight=False)
    for result in repairs:
        console.print(
            f"repair {result.sink}: enqueued {result.enqueued} document(s) for the worker "
            f"({result.invalidated} to rewrite, {result.forgotten} duplicated); run verify again once it has drained"
        )


# ---- property overwrites (shown by verify and status) -------------------------------------------------------------


def overwrites_table(title: str, items: Sequence[OverwriteView]) -> Table:
    """People's edits of replicator-owned properties, which Postgres overwrote (newest first): ``verify`` and
    ``status`` show them in this one table."""
    table = Table(title=title, title_justify="left")
    for column in ("document", "property", "edited by", "edited at", "Notion value", "Postgres value"):
        table.add_column(column, overflow="fold")
    for o in items:
        table.add_row(
            f"{o.entity} {o.postgres_id}",
            escape(o.property),
            escape(o.edited_by or "-"),
            f"{o.edited_at:%Y-%m-%d %H:%M}",
            escape(o.notion_value[:120]),
            escape(o.postgres_value[:120]),
        )
    return table
