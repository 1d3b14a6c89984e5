"""replicator.rate_budget: one token bucket per API credential, shared by every process that uses it (#12)

Notion limits requests per integration token, not per process: daemon replicas, ``verify`` and ``notion check``
with one token draw on one budget. The row's ``key`` is a fingerprint of the token (the first 16 hex digits of
its sha256), never the token. ``tokens`` are what is saved up as of ``refilled_at`` (refilled at ``rate`` per
second up to ``burst`` by the take itself, on the server's clock); ``blocked_until`` is set when any process got a
429 with ``Retry-After``, so every process waits it out.

Revision ID: 0007_notion_budget
Revises: 0006_outbox_claim_index
Create Date: 2026-12-02 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_notion_budget"
down_revision: str | None = "0006_outbox_claim_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_budget",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("rate", postgresql.DOUBLE_PRECISION(), nullable=False),
        sa.Column("burst", postgresql.DOUBLE_PRECISION(), nullable=False),
        sa.Column("tokens", postgresql.DOUBLE_PRECISION(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_budget")),
        schema="replicator",
    )


def downgrade() -> None:
    op.drop_table("rate_budget", schema="replicator")
