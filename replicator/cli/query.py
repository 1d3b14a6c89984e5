"""``replicator query``: semantic search in Pinecone, each hit hydrated from Postgres (``replicator.query``).
Registered in ``replicator/cli/__init__.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from replicator.cli.common import EXIT_USAGE, echo_json, fail, failures, load_settings


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

    settings = load_settings()
    with failures(settings):
        sink = build_pinecone_sink(settings)
        try:
            with psycopg.connect(settings.dsn, autocommit=True) as conn:
                hits = search(conn, sink, question, top_k=top_k, entity=entity, filters=filter_ or (), source=source)
        except QueryInputError as error:
            fail(str(error), EXIT_USAGE, settings)
        finally:
            sink.close()
    if as_json:
        echo_json({"question": question, "hits": [hit_json(h) for h in hits]})
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
