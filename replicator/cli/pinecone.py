"""CLI commands for Pinecone and for checking the sinks: ``replicator pinecone init``, ``replicator query`` and
``replicator verify``. Thin: parse options, build settings and clients, call ``replicator.sinks.pinecone``,
``replicator.query`` and ``replicator.verify``, print (Rich for people, ``--json`` for machines).

Exit codes (STYLE.md §4, the same scale as ``health``): 0 ok / in sync; 1 failed, or drift found by ``verify``;
2 bad input or configuration; 3 a sink could not be reached (unhealthy).

Registered in ``replicator/cli/__init__.py`` with ``register(app, pinecone_app)``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from replicator.config import Settings
from replicator.sinks.base import SinkConfigError, SinkError
from replicator.status import not_migrated, redact

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNHEALTHY = 0, 1, 2, 3


def register(app: typer.Typer, pinecone_app: typer.Typer) -> None:
    """Add ``query`` and ``verify`` to the ``replicator`` app and ``init`` to its ``pinecone`` group."""
    pinecone_app.command("init")(init_command)
    app.command("query")(query_command)
    app.command("verify")(verify_command)


def _settings() -> Settings:
    try:
        return Settings()  # type: ignore[call-arg]  # pydantic-settings reads the environment
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        _fail(f"configuration: {problems}", EXIT_USAGE)


def _fail(message: str, code: int) -> NoReturn:
    # Redacted: an SDK's error text may quote a key or echo a request's headers.
    Console(stderr=True).print(f"[red]error:[/red] {escape(redact(message))}", highlight=False)
    raise typer.Exit(code)


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


# ---- pinecone init -----------------------------------------------------------------------------------------------


def init_command(
    cloud: Annotated[str, typer.Option(help="Serverless cloud of a new index.")] = "aws",
    region: Annotated[str, typer.Option(help="Serverless region of a new index.")] = "us-east-1",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create the serverless index (the embedding provider's dimension, cosine) when it is missing."""
    from replicator.sinks.pinecone import build_provider, connect, ensure_index

    settings = _settings()
    api_key = settings.pinecone_api_key
    if api_key is None:
        _fail("PINECONE_API_KEY is not set", EXIT_USAGE)
    try:
        provider = build_provider(settings)
        dimension = provider.dimension
        provider.close()
        pc = connect(api_key.get_secret_value(), settings.pinecone_controller_host)
        try:
            result = ensure_index(
                pc,
                settings.pinecone_index,
                dimension,
                cloud=cloud,
                region=region,
                ready_timeout_s=settings.pinecone_index_ready_timeout_s,
                on_wait=lambda message: typer.echo(message, err=True),
            )
        finally:
            pc.close()
    except SinkConfigError as error:
        _fail(str(error), EXIT_USAGE)
    except SinkError as error:
        _fail(str(error), EXIT_FAILED)
    if as_json:
        _print_json(
            {
                "index": result.index,
                "created": result.created,
                "dimension": result.dimension,
                "metric": "cosine",
                "host": result.host,
            }
        )
        return
    if result.created:
        typer.echo(f"created index {result.index!r}: dimension {result.dimension}, cosine, {cloud}/{region}")
    else:
        typer.echo(f"index {result.index!r} already exists with dimension {result.dimension}; nothing to do")
    if result.host:
        typer.echo(f"host: {result.host} (optionally set PINECONE_INDEX_HOST to skip the lookup)")


# ---- query -------------------------------------------------------------------------------------------------------


def query_command(
    question: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    top_k: Annotated[int, typer.Option("--top-k", help="How many documents to return.")] = 5,
    entity: Annotated[
        str | None, typer.Option(help="Only this entity: dataset, signature, program, experiment.")
    ] = None,
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", help="Metadata filter KEY=VALUE (repeatable), e.g. omics_type=lipidomics."),
    ] = None,
    source: Annotated[
        str,
        typer.Option(
            "--source", help="postgres (structured documents), notion (the notes people wrote) or all (default)."
        ),
    ] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Semantic search in Pinecone, each hit hydrated from Postgres (Postgres data first, the matching chunk
    second, then the matching notes from Notion, each with a link to its page)."""
    from replicator.query import QueryInputError, hit_json, search
    from replicator.sinks.pinecone import build_pinecone_sink

    settings = _settings()
    try:
        sink = build_pinecone_sink(settings)
    except SinkConfigError as error:
        _fail(str(error), EXIT_USAGE)
    except SinkError as error:
        _fail(str(error), EXIT_UNHEALTHY)
    try:
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            hits = search(conn, sink, question, top_k=top_k, entity=entity, filters=filter_ or (), source=source)
    except QueryInputError as error:
        _fail(str(error), EXIT_USAGE)
    except SinkError as error:
        _fail(str(error), EXIT_UNHEALTHY if error.retryable else EXIT_FAILED)
    except psycopg.OperationalError as error:
        _fail(f"cannot reach Postgres: {error}", EXIT_UNHEALTHY)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as error:
        _fail(not_migrated(error), EXIT_FAILED)
    finally:
        sink.close()
    if as_json:
        _print_json({"question": question, "hits": [hit_json(h) for h in hits]})
        return
    _print_hits(question, [hit_json(h) for h in hits])


def _print_hits(question: str, hits: list[dict[str, Any]]) -> None:
    console = Console()
    if not console.is_terminal:
        # Piped or captured output has no width to fit; 80 columns would fold every cell into slivers.
        console = Console(width=160)
    if not hits:
        console.print(f"No match for {question!r}.")
        return
    table = Table(title=f"{question}", show_lines=True)
    for column in (
        "#",
        "score",
        "document (Postgres)",
        "omics type",
        "programs",
        "top features",
        "signature matches",
        "matching chunk",
    ):
        table.add_column(column, overflow="fold")
    for rank, hit in enumerate(hits, start=1):
        if hit["stale"]:
            stale = "[red]stale: row deleted[/red]"
            name = f"[yellow]{escape(hit['name'])}[/yellow]\n{hit['entity']} {hit['postgres_id']}\n{stale}"
            table.add_row(str(rank), f"{hit['score']:.3f}", name, "", "", "", "", _snippet(hit["chunk_text"]))
            continue
        features = "\n".join(
            escape(f"{f['name']} ({f['log2_fold_change']:+.2f})" if f["log2_fold_change"] is not None else f["name"])
            for f in hit["top_features"][:3]
        )
        matches = "\n".join(escape(f"{m['name']} ({m['score']:.2f})") for m in hit["signature_matches"][:3])
        table.add_row(
            str(rank),
            f"{hit['score']:.3f}",
            f"[bold]{escape(hit['name'])}[/bold]\n{hit['entity']} {hit['postgres_id']}",
            hit.get("omics_type") or "",
            escape(", ".join(hit["programs"])),
            features,
            matches,
            f"#{hit['chunk']}: {_snippet(hit['chunk_text'], limit=160)}" if hit["chunk"] >= 0 else "",
        )
    console.print(table)
    for rank, hit in enumerate(hits, start=1):
        for note in hit.get("notes", []):
            link = note["notion_url"] or note["notion_page_id"] or ""
            console.print(
                f"  #{rank} [bold]evidence[/bold] (source: notion, score {note['score']:.3f}) {escape(link)}\n"
                f"    {_snippet(note['text'], limit=300)}",
                highlight=False,
            )


def _snippet(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return escape(flat if len(flat) <= limit else flat[: limit - 1] + "…")


# ---- verify ------------------------------------------------------------------------------------------------------


def verify_command(
    sink_name: Annotated[
        str | None, typer.Option("--sink", help="Only this sink (default: every enabled one).")
    ] = None,
    repair_: Annotated[bool, typer.Option("--repair", help="Enqueue what drifted for the worker to fix.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare Postgres with each sink: missing, orphaned, stale and duplicated documents. Exit 0 only when
    everything is in sync (1: drift found, 2: bad configuration, 3: a sink could not be reached)."""
    from replicator.budget import sink_limiter
    from replicator.sinks.factory import build_sink
    from replicator.store import narrative
    from replicator.verify import record_report, repair, verify_sink

    settings = _settings()
    names = (sink_name,) if sink_name else settings.enabled_sinks
    if not names:
        _fail("no sink to verify: set REPLICATOR_SINKS or pass --sink", EXIT_USAGE)
    reports = []
    repairs = []
    try:
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
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
    except SinkConfigError as error:
        _fail(str(error), EXIT_USAGE)
    except NotImplementedError as error:
        _fail(str(error), EXIT_USAGE)
    except SinkError as error:
        _fail(str(error), EXIT_UNHEALTHY)
    except psycopg.OperationalError as error:
        _fail(f"cannot reach Postgres: {error}", EXIT_UNHEALTHY)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as error:
        _fail(not_migrated(error), EXIT_FAILED)
    in_sync = all(r.in_sync for r in reports)
    if as_json:
        _print_json(
            {
                "in_sync": in_sync,
                "sinks": [r.as_json() for r in reports],
                "repair": [vars(r) for r in repairs],
                "edited_in_notion_overwritten": {
                    "total": overwrite_total,
                    "recent": [overwrite_json(o) for o in overwritten],
                },
            }
        )
    else:
        _print_reports(reports, repairs)
        print_overwrites(Console(), overwrite_total, overwritten)
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


def overwrite_json(item: Any) -> dict[str, Any]:
    return {
        "entity": item.key.entity,
        "postgres_id": str(item.key.id),
        "notion_page_id": item.page_id,
        "property": item.property,
        "edited_by": item.edited_by,
        "edited_at": item.edited_at.isoformat(),
        "notion_value": item.notion_value,
        "postgres_value": item.postgres_value,
        "state": "edited in Notion, overwritten",
    }


def print_overwrites(console: Console, total: int, items: list[Any]) -> None:
    """People's edits of replicator-owned properties, which Postgres overwrote (newest first)."""
    if not total:
        return
    table = Table(title=f"edited in Notion, overwritten ({total})", title_justify="left")
    for column in ("document", "property", "edited by", "edited at", "Notion value", "Postgres value"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(
            f"{item.key.entity} {item.key.id}",
            escape(item.property),
            escape(item.edited_by or ""),
            item.edited_at.isoformat()[:16],
            escape(item.notion_value[:120]),
            escape(item.postgres_value[:120]),
        )
    console.print(table)
