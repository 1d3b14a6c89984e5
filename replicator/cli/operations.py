"""The operator's commands: ``run`` (the daemon), ``status``, ``health``, ``resync``, ``dlq list|retry|purge``,
``slot drop`` and ``config``. Thin: options in, library calls (``replicator.status``, ``replicator.store``,
``replicator.daemon``) that the tests call directly, Rich or JSON out. Registered in ``replicator/cli/__init__.py``.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from replicator.cli.common import (
    EXIT_FAILED,
    EXIT_UNHEALTHY,
    EXIT_USAGE,
    connect,
    echo_json,
    err,
    load_settings,
    out,
    postgres_error,
)
from replicator.cli.verify import overwrites_table
from replicator.config import Settings
from replicator.graph import ENTITIES
from replicator.status import (
    NOT_MIGRATED_ERRORS,
    Health,
    NarrativeView,
    Status,
    collect_status,
    configured_secrets,
    evaluate_health,
    not_migrated,
    redact,
    unreachable,
)
from replicator.store import outbox


def _check_sink(settings: Settings, sink: str | None) -> None:
    if sink is not None and sink not in settings.configured_sinks:
        configured = ", ".join(settings.configured_sinks) or "none"
        err().print(f"sink {sink!r} is not in REPLICATOR_SINKS (configured: {configured})", markup=False)
        raise typer.Exit(EXIT_USAGE)


def _check_entity(entity: str | None) -> None:
    if entity is not None and entity not in ENTITIES:
        err().print(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}", markup=False)
        raise typer.Exit(EXIT_USAGE)


# ---- run ---------------------------------------------------------------------------------------------------------


def run() -> None:
    """Stream changes into the outbox and apply them to the enabled sinks until SIGTERM/SIGINT."""
    settings = load_settings()
    from replicator.daemon import run as run_daemon

    raise typer.Exit(run_daemon(settings))


# ---- status and health -------------------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _status_view(status: Status, health: Health) -> Group:
    slot = status.slot
    slot_table = Table(title=f"slot {slot.name}", show_header=False, title_justify="left")
    slot_table.add_column("field", style="bold")
    slot_table.add_column("value")
    state = "LOST" if slot.lost else ("active" if slot.active else ("inactive" if slot.exists else "missing"))
    rows = [
        ("state", state),
        ("active pid", str(slot.active_pid or "-")),
        ("leader", slot.leader or "-"),
        ("confirmed LSN", slot.confirmed_flush_lsn or "-"),
        ("lag bytes", f"{slot.lag_bytes:,}" if slot.lag_bytes is not None else "-"),
        ("lag seconds", _age(slot.lag_seconds)),
        ("wal_status", slot.wal_status or "-"),
        ("safe_wal_size", f"{slot.safe_wal_size:,}" if slot.safe_wal_size is not None else "-"),
    ]
    for name, value in rows:
        slot_table.add_row(name, value)
    sinks = Table(title="sinks", title_justify="left")
    longest = max((len(s.name) for s in status.sinks), default=4)
    sinks.add_column("sink", min_width=longest, no_wrap=True)
    for column in ("enabled", "scope", "pending", "oldest", "dead", "dup", "last success", "last error"):
        sinks.add_column(column)
    down: list[str] = []
    for sink in status.sinks:
        enabled = "yes" if sink.enabled else ("configured, off" if sink.configured else "no")
        if sink.needs_resync:
            enabled += " (needs resync)"
        error = f"{sink.last_error_at:%Y-%m-%d %H:%M:%S} {sink.last_error}" if sink.last_error_at else "-"
        if sink.schema_problem:
            error = f"WAITING FOR A SCHEMA FIX: {sink.schema_problem}"
        success = f"{sink.last_success_at:%Y-%m-%d %H:%M:%S}" if sink.last_success_at else "-"
        if sink.up is False:
            enabled += ", DOWN"
            line = f"sink {sink.name} DOWN for {_age(sink.down_for_s)}: {sink.down_reason}"
            down.append(line + (f"\n  fix: {sink.fix}" if sink.fix else " (re-checked with backoff)"))
        scope = sink.scope
        if sink.scope_applied is not None and sink.scope_applied != sink.scope:
            scope += f" (applied: {sink.scope_applied}; restart to apply)"
        elif sink.rescope_pending:
            scope += f" (re-scope: {sink.rescope_pending} pending)"
        sinks.add_row(
            sink.name,
            enabled,
            scope,
            str(sink.pending),
            _age(sink.oldest_pending_age_s),
            str(sink.dead_letters),
            str(sink.duplicates_found),
            success,
            error,
        )
    parts: list[Any] = [slot_table, sinks]
    if status.narrative is not None:
        parts.extend(_narrative_view(status.narrative))
    verdict = "[green]healthy[/green]" if health.ok else "[red]unhealthy[/red]: " + "; ".join(health.reasons)
    if health.warnings:
        verdict += "\n[yellow]warning[/yellow]: " + "; ".join(health.warnings)
    return Group(*parts, Text("\n".join(down)), verdict)


def _narrative_view(view: NarrativeView) -> list[Any]:
    table = Table(title="narrative capture (Notion -> Postgres)", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    oldest = "-"
    if view.oldest_pending_edit is not None:
        oldest = f"{view.oldest_pending_edit:%Y-%m-%d %H:%M} ({_age(view.oldest_pending_age_s)} ago)"
    for name, value in (
        ("capture", "on" if view.capture else "off (NARRATIVE_CAPTURE=false)"),
        ("pages pending", str(view.pages_pending)),
        ("oldest edit not captured", oldest),
        ("pages tracked", str(view.pages_tracked)),
        ("narratives in Postgres", str(view.narratives)),
        ("last read", f"{view.last_checked_at:%Y-%m-%d %H:%M:%S}" if view.last_checked_at else "-"),
        ("edited in Notion, overwritten", str(view.overwrites)),
    ):
        table.add_row(name, value)
    out: list[Any] = [table]
    if view.recent_overwrites:
        out.append(overwrites_table("edited in Notion, overwritten (newest first)", view.recent_overwrites))
    return out


def _status_dict(status: Status, health: Health) -> dict[str, Any]:
    return {**status.to_dict(), "health": health.to_dict()}


def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one document; one line per refresh with --watch)."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until interrupted."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes with --watch."),
) -> None:
    """The slot (active, confirmed LSN, lag, WAL retention) and each sink (pending, dead letters, errors)."""
    settings = load_settings()
    with connect(settings) as conn:

        def collect() -> tuple[Status, Health]:
            current = collect_status(conn, settings)
            return current, evaluate_health(current, settings)

        if not watch:
            current, health = collect()
            if as_json:
                echo_json(_status_dict(current, health))
            else:
                out().print(_status_view(current, health))
            return
        try:
            if as_json:
                while True:
                    current, health = collect()
                    echo_json(_status_dict(current, health), one_line=True)
                    time.sleep(interval)
            with Live(_status_view(*collect()), console=out(), auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(_status_view(*collect()), refresh=True)
        except KeyboardInterrupt:
            return


def health(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Exit 0 when healthy, 3 when not, saying why (lost or missing slot, lag, dead letters)."""
    settings = load_settings()
    try:
        with psycopg.connect(settings.dsn, autocommit=True, connect_timeout=10) as conn:
            verdict = evaluate_health(collect_status(conn, settings), settings)
    except psycopg.OperationalError as error:  # Postgres down is a verdict (rule postgres_unreachable), not a crash
        verdict = unreachable(error, settings)
    except NOT_MIGRATED_ERRORS as error:
        reason = redact(not_migrated(error), configured_secrets(settings))
        verdict = Health(ok=False, reasons=[f"not_migrated: {reason}"], rules=["not_migrated"])
    except psycopg.Error as error:  # e.g. a URL psycopg cannot parse
        err().print(postgres_error(settings, error), markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        echo_json(verdict.to_dict())
    else:
        console = out()
        console.print("healthy" if verdict.ok else f"unhealthy ({', '.join(verdict.rules)})", markup=False)
        for reason in verdict.reasons:
            console.print(f"  - {reason}", markup=False)
        for warning in verdict.warnings:
            console.print(f"  warning: {warning}", markup=False)
    raise typer.Exit(0 if verdict.ok else EXIT_UNHEALTHY)


# ---- resync ------------------------------------------------------------------------------------------------------


def resync(
    sink: str | None = typer.Option(None, "--sink", help="Only this sink (default: every enabled sink)."),
    entity: str | None = typer.Option(None, "--entity", help=f"Only this entity ({', '.join(ENTITIES)})."),
    force: bool = typer.Option(
        False, "--force", help="Rewrite every document, even those sink_state says are in sync (a sink restored empty)."
    ),
) -> None:
    """Enqueue every existing document again (unchanged ones cost no API call, unless --force).

    A full resync of a sink clears its "needs resync" flag. With --force every document is written again
    whatever replicator.sink_state says: use it after a sink lost data (restored empty or from an old backup).
    """
    settings = load_settings()
    _check_sink(settings, sink)
    _check_entity(entity)
    sinks = [sink] if sink else list(settings.enabled_sinks)
    if not sinks:
        err().print("no sink is enabled (REPLICATOR_SINKS is empty)", markup=False)
        raise typer.Exit(EXIT_USAGE)
    from replicator.store.outbox import backfill

    with connect(settings) as conn:
        count = backfill(conn, sinks, [entity] if entity else None, force=force)
    forced = " (forced: each is rewritten, whatever sink_state says)" if force else ""
    out().print(f"enqueued {count} document(s) for {', '.join(sinks)}{forced}", markup=False)


# ---- dead letters ------------------------------------------------------------------------------------------------

_SinkOption = typer.Option(None, "--sink", help="Only this sink.")
_EntityOption = typer.Option(None, "--entity", help="Only this entity.")


def dlq_list(
    sink: str | None = _SinkOption,
    entity: str | None = _EntityOption,
    limit: int = typer.Option(200, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show dead letters, oldest first, with their (redacted) errors."""
    settings = load_settings()
    _check_entity(entity)
    secrets = configured_secrets(settings)
    with connect(settings) as conn:
        letters = outbox.dlq_list(conn, sink=sink, entity=entity, limit=limit)
    items = [
        {
            "sink": d.sink,
            "entity": d.entity,
            "id": str(d.entity_id),
            "version": d.version,
            "attempts": d.attempts,
            "permanent": d.permanent,
            "error": redact(d.error, secrets),
            "first_enqueued_at": d.first_enqueued_at.isoformat(),
            "failed_at": d.failed_at.isoformat(),
        }
        for d in letters
    ]
    if as_json:
        echo_json(items)
        return
    table = Table(title=f"dead letters ({len(items)})", title_justify="left")
    for column in ("sink", "entity", "id", "attempts", "kind", "failed at", "error"):
        table.add_column(column)
    for item in items:
        kind = "permanent" if item["permanent"] else "retries spent"
        error = str(item["error"])
        table.add_row(
            str(item["sink"]),
            str(item["entity"]),
            str(item["id"]),
            str(item["attempts"]),
            kind,
            str(item["failed_at"])[:19],
            error if len(error) <= 160 else error[:157] + "...",
        )
    out().print(table)


def dlq_retry(sink: str | None = _SinkOption, entity: str | None = _EntityOption) -> None:
    """Move dead letters back into the outbox; the workers try them again at once."""
    settings = load_settings()
    _check_entity(entity)
    with connect(settings) as conn:
        moved = outbox.dlq_retry(conn, sink=sink, entity=entity)
    out().print(f"moved {moved} dead letter(s) back to the outbox", markup=False)


def dlq_purge(
    sink: str | None = _SinkOption,
    entity: str | None = _EntityOption,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete dead letters for good (their documents stay out of sync until they change or are resynced)."""
    settings = load_settings()
    _check_entity(entity)
    with connect(settings) as conn:
        count = outbox.dlq_count(conn, sink=sink, entity=entity)
        if count == 0:
            out().print("no dead letters to purge", markup=False)
            return
        if not yes and not typer.confirm(f"Delete {count} dead letter(s)?"):
            raise typer.Exit(EXIT_FAILED)
        deleted = outbox.dlq_purge(conn, sink=sink, entity=entity)
    out().print(f"purged {deleted} dead letter(s)", markup=False)


# ---- slot --------------------------------------------------------------------------------------------------------


def slot_drop(yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Drop the replication slot and the replicator's checkpoint for it. The next ``replicator run`` recreates the
    slot and re-enqueues every document; sink_state is kept, so existing pages and vectors are updated in place,
    not duplicated, and unchanged ones cost no API call."""
    settings = load_settings()
    from replicator.source import drop_slot

    with connect(settings) as conn:
        current = collect_status(conn, settings).slot
        if not current.exists and not current.checkpoint_exists:
            out().print(f"slot {current.name} does not exist; nothing to drop", markup=False)
            return
        if not yes:
            in_use = f" It is in use by pid {current.active_pid}, whose stream will end." if current.active else ""
            prompt = (
                f"Drop slot {current.name}?{in_use} Changes not yet read from it are lost; the next `replicator run` "
                "recreates it and resyncs every sink."
            )
            if not typer.confirm(prompt):
                raise typer.Exit(EXIT_FAILED)
        existed = drop_slot(conn, settings.replicator_slot)
    what = "dropped" if existed else "was already gone;"
    out().print(f"slot {settings.replicator_slot} {what} checkpoint cleared", markup=False)


# ---- config ------------------------------------------------------------------------------------------------------


def config(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the configuration, secrets and passwords masked."""
    settings = load_settings()
    masked = settings.masked()
    if as_json:
        echo_json(masked)
        return
    table = Table(title="configuration", title_justify="left")
    table.add_column("variable", style="bold")
    table.add_column("value")
    for name, value in masked.items():
        table.add_row(name, "" if value is None else str(value))
    out().print(table)
