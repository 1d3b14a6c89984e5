"""replicator.outbox: an index that serves the claim's ORDER BY; room on each page for HOT updates (#15)

``claim_batch`` orders a sink's due rows by ``first_enqueued_at, entity, entity_id`` and takes the first few; with
only the primary key and ``(sink, next_attempt_at)`` it read and sorted every pending row of the sink (176 ms at
100,000 rows). ``ix_outbox_claim`` holds the rows of a sink in exactly that order, so the claim reads the index
from its start and stops after ``limit`` due rows. It replaces ``ix_outbox_sink_next_attempt_at``, which no query
used (``next_due`` reads every row of the sink anyway) and which made each ``retry_later`` a non-HOT update.

``fillfactor = 70``: the coalescing upsert and the claim change only unindexed columns, so with free room on the
page their new row versions are HOT (no index entries, pruned in place) instead of bloating the table and its
indexes.

Revision ID: 0006_outbox_claim_index
Revises: 0005_narrative
Create Date: 2026-12-02 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_outbox_claim_index"
down_revision: str | None = "0005_narrative"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_claim",
        "outbox",
        ["sink", "first_enqueued_at", "entity", "entity_id"],
        unique=False,
        schema="replicator",
    )
    op.drop_index("ix_outbox_sink_next_attempt_at", table_name="outbox", schema="replicator")
    op.execute("ALTER TABLE replicator.outbox SET (fillfactor = 70)")


def downgrade() -> None:
    op.execute("ALTER TABLE replicator.outbox RESET (fillfactor)")
    op.create_index(
        "ix_outbox_sink_next_attempt_at",
        "outbox",
        ["sink", "next_attempt_at"],
        unique=False,
        schema="replicator",
    )
    op.drop_index("ix_outbox_claim", table_name="outbox", schema="replicator")
