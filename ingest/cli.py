"""The ``ingest`` command line (Typer)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Ingest omics files into Postgres (and nowhere else).", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Ingest omics files into Postgres."""


def main() -> None:
    app()
