"""The ``replicator`` command line (Typer)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Replicate Postgres changes to Notion and Pinecone.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Replicate Postgres changes to Notion and Pinecone."""


def main() -> None:
    app()
