"""`make demo`, last step: a scientist writes a note on the lipidomics dataset's Notion page, through the Notion
emulator with its person token (the emulator's stand-in for someone typing in the Notion UI), with the real
notion-client SDK. Prints the page id. Reads the page id from the replicator's state in Postgres.

    python examples/demo_note.py "the note's text"
"""

from __future__ import annotations

import os
import sys

import psycopg

from replicator.sinks.notion import notion_client

PERSON_TOKEN = "ntn_person_token"


def main() -> int:
    text = sys.argv[1]
    with psycopg.connect(os.environ["POSTGRES_URL"]) as conn:
        row = conn.execute(
            "SELECT d.name, s.remote_id FROM dataset d JOIN replicator.sink_state s "
            "ON s.sink = 'notion' AND s.entity = 'dataset' AND s.entity_id = d.id "
            "WHERE d.omics_type = 'lipidomics' ORDER BY d.name LIMIT 1"
        ).fetchone()
    if row is None:
        print("demo: no lipidomics dataset has a Notion page yet", file=sys.stderr)
        return 1
    name, page_id = row
    client = notion_client(PERSON_TOKEN, os.environ["NOTION_BASE_URL"])
    try:
        client.blocks.children.append(
            page_id,
            children=[
                {"type": "heading_3", "heading_3": {"rich_text": [{"type": "text", "text": {"content": "Notes"}}]}},
                {"type": "paragraph", "paragraph": {"rich_text": [{"type": "text", "text": {"content": text}}]}},
            ],
        )
    finally:
        client.close()
    print(f"a person wrote on the Notion page of {name!r} ({page_id}): {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
