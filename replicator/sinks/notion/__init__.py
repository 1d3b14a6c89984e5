"""The Notion sink package, each module importing only those below it: ``sink`` (the ``Sink``: find, create and
update pages, sweep duplicates, inventory, the wiring from settings) over ``section`` (the managed section planned
in place) over ``render`` (document → properties and the managed page section) over ``schema`` (the databases and
properties); ``client`` (the SDK's edge: the client, the error mapping, the paced call, ``notion init``) sits
beside ``render``, over ``schema``."""

from replicator.sinks.notion.client import create_databases, map_notion_error, notion_client
from replicator.sinks.notion.sink import NotionSink, build_notion_sink

__all__ = ["NotionSink", "build_notion_sink", "create_databases", "map_notion_error", "notion_client"]
