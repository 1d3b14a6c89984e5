"""Past Notion's 10,000-result query cap (#12 item 4): 12,000 datasets in Postgres, their 12,000 pages in the
Notion emulator and one orphan page created after all of them (so beyond the first 10,000 any single query
returns) → ``replicator verify`` (the CLI, in its own process) sees all 12,000 pages and reports the orphan.

The emulator is seeded directly (``NotionEmulator.create_pages``: the same validation as ``POST /v1/pages``, no
HTTP), with the content hashes ``verify`` expects: writing 12,000 pages through the sink at Notion's pace would
take over an hour and prove nothing more here (the sink's writes are tested elsewhere). Prints the seconds spent
seeding and verifying.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest

from replicator.sinks.notion import create_databases, notion_client
from replicator.verify import expected_hashes
from tests.e2e.test_pinecone_e2e import replicator_cli, verify
from tests.emulators.notion import QUERY_RESULT_CAP, NotionEmulator

Conn = psycopg.Connection[tuple[Any, ...]]
DATASETS = 12_000


def text(content: str) -> dict[str, Any]:
    return {"rich_text": [{"type": "text", "text": {"content": content}}]}


@pytest.mark.slow
def test_verify_sees_12000_pages_and_the_orphan_beyond_the_first_10000(
    db_url: str, conn: Conn, notion_emulator: NotionEmulator
) -> None:
    started = time.perf_counter()
    conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type) "
        "SELECT 'scale-' || i, 'Dataset ' || i, 'lipidomics' FROM generate_series(1, %s) AS i",
        (DATASETS,),
    )
    client = notion_client(notion_emulator.token, notion_emulator.url)
    try:
        ids = create_databases(client, notion_emulator.root_page_id)
    finally:
        client.close()
    data_source = notion_emulator.state()["databases"][ids["NOTION_EXP_DATA_DB_ID"]]["data_source_ids"][0]
    expected = expected_hashes(conn)
    assert len(expected) == DATASETS
    rows = [
        {
            "Experiment Name": {"title": text(f"Dataset {key.id}")["rich_text"]},
            "Postgres ID": text(str(key.id)),
            "Content Hash": text(f"doc:{digest} props:seeded body:seeded"),
        }
        for key, digest in expected.items()
    ]
    orphan = uuid.uuid4()
    rows.append(
        {
            "Experiment Name": {"title": text("a row deleted long ago")["rich_text"]},
            "Postgres ID": text(str(orphan)),
            "Content Hash": text("doc:gone props:x body:x"),
        }
    )
    created = notion_emulator.create_pages(data_source, rows)
    seeded = time.perf_counter() - started
    assert len(created) - 1 >= QUERY_RESULT_CAP  # the orphan comes after what one query can return

    env = {
        "POSTGRES_URL": db_url,
        "REPLICATOR_SINKS": "notion",
        "NOTION_API_KEY": notion_emulator.token,
        "NOTION_BASE_URL": notion_emulator.url,
        "NOTION_RATE_PER_S": "1000",
        "NOTION_READ_LAG_S": "0",
        **ids,
    }
    started = time.perf_counter()
    payload = verify(env)
    verified = time.perf_counter() - started
    print(f"\nseeded {DATASETS} datasets + 1 orphan in {seeded:.1f}s; verify took {verified:.1f}s")

    (notion,) = payload["sinks"]
    assert notion["documents"] == DATASETS
    assert notion["remote"] == DATASETS + 1
    assert [o["postgres_id"] for o in notion["orphaned"]] == [str(orphan)]
    assert notion["missing"] == []
    assert notion["stale"] == []
    assert notion["duplicated"] == []
    assert payload["in_sync"] is False
    assert replicator_cli(env, "notion", "check").returncode == 0
