"""narrative: what people write on the Notion pages, captured into Postgres (#14)

Revision ID: 0005_narrative
Revises: 0004_sink_findings
Create Date: 2026-12-02 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_narrative"
down_revision: str | None = "0004_sink_findings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "narrative",
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.UUID(), nullable=False),
        sa.Column("notion_page_id", sa.Text(), nullable=False),
        sa.Column("notion_url", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("last_edited_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_edited_by", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "entity IN ('program', 'experiment', 'dataset', 'signature')", name=op.f("ck_narrative_entity")
        ),
        sa.PrimaryKeyConstraint("entity", "entity_id", name=op.f("pk_narrative")),
        sa.UniqueConstraint("notion_page_id", name=op.f("uq_narrative_notion_page_id")),
    )
    op.execute(
        "CREATE TRIGGER narrative_set_updated_at BEFORE UPDATE ON narrative "
        "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
    )
    op.create_table(
        "narrative_page",
        sa.Column("page_id", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.UUID(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("seen_edit", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_by", sa.Text(), nullable=True),
        sa.Column("pending", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("captured_edit", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("page_id", name=op.f("pk_narrative_page")),
        schema="replicator",
    )
    op.create_index(
        "ix_narrative_page_pending", "narrative_page", ["pending", "seen_edit"], unique=False, schema="replicator"
    )
    op.create_table(
        "property_overwrite",
        sa.Column("page_id", sa.Text(), nullable=False),
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notion_value", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.UUID(), nullable=False),
        sa.Column("edited_by", sa.Text(), nullable=True),
        sa.Column("postgres_value", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("page_id", "property", "edited_at", "notion_value", name=op.f("pk_property_overwrite")),
        schema="replicator",
    )
    op.create_table(
        "verify_result",
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("in_sync", sa.Boolean(), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.Column("remote", sa.Integer(), nullable=False),
        sa.Column("missing", sa.Integer(), nullable=False),
        sa.Column("orphaned", sa.Integer(), nullable=False),
        sa.Column("stale", sa.Integer(), nullable=False),
        sa.Column("duplicated", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sink", name=op.f("pk_verify_result")),
        schema="replicator",
    )


def downgrade() -> None:
    op.drop_table("verify_result", schema="replicator")
    op.drop_table("property_overwrite", schema="replicator")
    op.drop_index("ix_narrative_page_pending", table_name="narrative_page", schema="replicator")
    op.drop_table("narrative_page", schema="replicator")
    op.execute("DROP TRIGGER IF EXISTS narrative_set_updated_at ON narrative")
    op.drop_table("narrative")
