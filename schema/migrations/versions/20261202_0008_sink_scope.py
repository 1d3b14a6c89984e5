"""replicator.sink_scope: the scope each sink applied last, so a changed scope is noticed at start-up (#14)

A widened scope enqueues the documents that newly fall inside it; a narrowed one those the sink holds that fall
outside (the worker removes them, or keeps them with ``REPLICATOR_SCOPE_NARROW=keep``). ``applied_at`` is when
that was enqueued: outbox rows of the sink enqueued no later are the re-scope still in progress.

Revision ID: 0008_sink_scope
Revises: 0007_notion_budget
Create Date: 2026-12-02 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_sink_scope"
down_revision = "0007_notion_budget"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sink_scope",
        sa.Column("sink", sa.Text(), nullable=False),
        # The canonical scope expression (replicator/scope.py), "all" for every document.
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("narrow", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("previous_scope", sa.Text(), nullable=True),
        sa.Column("widened", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("narrowed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("narrow IN ('remove', 'keep')", name=op.f("ck_sink_scope_narrow")),
        sa.PrimaryKeyConstraint("sink", name=op.f("pk_sink_scope")),
        schema="replicator",
    )


def downgrade() -> None:
    op.drop_table("sink_scope", schema="replicator")
