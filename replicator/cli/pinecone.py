"""``replicator pinecone init``: create the serverless index at the embedding provider's dimension (cosine) when
it is missing. Registered in ``replicator/cli/__init__.py``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from replicator.cli.common import EXIT_USAGE, echo_json, fail, failures, load_settings


def init_command(
    cloud: Annotated[str, typer.Option(help="Serverless cloud of a new index.")] = "aws",
    region: Annotated[str, typer.Option(help="Serverless region of a new index.")] = "us-east-1",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create the serverless index (the embedding provider's dimension, cosine) when it is missing."""
    from replicator.sinks.pinecone import build_provider, connect, ensure_index

    settings = load_settings()
    api_key = settings.pinecone_api_key
    if api_key is None:
        fail("PINECONE_API_KEY is not set", EXIT_USAGE)
    with failures(settings):
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
    if as_json:
        echo_json(
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
