"""replicator.sink_status counts duplicate pages a sink found and names a schema problem it waits on (#12)

Revision ID: 0004_sink_findings
Revises: 0003_sink_health
Create Date: 2026-12-02 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_sink_findings"
down_revision: str | None = "0003_sink_health"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sink_status",
        sa.Column("duplicates_found", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        schema="replicator",
    )
    op.add_column(
        "sink_status", sa.Column("last_duplicate_at", sa.DateTime(timezone=True), nullable=True), schema="replicator"
    )
    op.add_column("sink_status", sa.Column("schema_problem", sa.Text(), nullable=True), schema="replicator")
    op.add_column("sink_status", sa.Column("schema_problem_entity", sa.Text(), nullable=True), schema="replicator")
    op.add_column(
        "sink_status", sa.Column("schema_problem_at", sa.DateTime(timezone=True), nullable=True), schema="replicator"
    )


def downgrade() -> None:
    for column in (
        "schema_problem_at",
        "schema_problem_entity",
        "schema_problem",
        "last_duplicate_at",
        "duplicates_found",
    ):
        op.drop_column("sink_status", column, schema="replicator")
