"""replicator.sink_health: each sink's last known health, written by the daemon's sink gates (#11)

Revision ID: 0003_sink_health
Revises: 0002_match_level_molecular
Create Date: 2026-12-02 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_sink_health"
down_revision: str | None = "0002_match_level_molecular"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sink_health",
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("up", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        # The command that fixes a configuration an operator must fix (NULL: the sink is up or merely unreachable).
        sa.Column("fix", sa.Text(), nullable=True),
        sa.Column("down_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("process", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("sink", name=op.f("pk_sink_health")),
        schema="replicator",
    )


def downgrade() -> None:
    op.drop_table("sink_health", schema="replicator")
