"""The Notion sink package: ``schema`` (the databases and properties), ``render`` (document → properties and
the managed page section) and ``sink`` (the SDK edge and the ``Sink``)."""

from replicator.sinks.notion.sink import (
    NotionSink,
    build_notion_sink,
    create_databases,
    map_notion_error,
    notion_client,
)

__all__ = ["NotionSink", "build_notion_sink", "create_databases", "map_notion_error", "notion_client"]
