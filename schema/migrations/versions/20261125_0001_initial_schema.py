"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 21:17:18.820726
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TIMESTAMPED_TABLES = (
    "program",
    "experiment",
    "dataset",
    "feature",
    "dataset_feature",
    "signature",
    "signature_component",
    "dataset_signature",
)

# updated_at is the database's job, so no writer can forget it. The trigger only stamps rows whose values
# really changed: ingest never issues an UPDATE that rewrites equal values, and this keeps it that way.
SET_UPDATED_AT = """
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF ROW(NEW.*) IS DISTINCT FROM ROW(OLD.*) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS replicator")
    op.create_table(
        "dataset",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("natural_key", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("omics_type", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("organism", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column("sample_type", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column("disease", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column("matrix", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column(
            "model_systems",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("methods", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("results", sa.Text(), nullable=True),
        sa.Column("conclusions", sa.Text(), nullable=True),
        sa.Column("data_origin", sa.Text(), nullable=True),
        sa.Column("dataset_source_type", sa.Text(), nullable=True),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column("file_paths", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column(
            "external_ids",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("source_sha256", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "omics_type IN ('lipidomics', 'metabolomics', 'proteomics', 'transcriptomics')",
            name=op.f("ck_dataset_omics_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset")),
        sa.UniqueConstraint("natural_key", name=op.f("uq_dataset_natural_key")),
    )
    op.create_index(op.f("ix_dataset_omics_type"), "dataset", ["omics_type"], unique=False)
    op.create_table(
        "experiment",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("disease", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column("matrix", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column(
            "model_systems",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("targets", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column("modality", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column(
            "biomarker_role",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "phenotype_axes",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "treatment_arms",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("stage", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("type IN ('in_vivo', 'in_vitro', 'patient')", name=op.f("ck_experiment_type")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment")),
        sa.UniqueConstraint("name", name=op.f("uq_experiment_name")),
    )
    op.create_table(
        "feature",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("feature_type", sa.Text(), nullable=False),
        sa.Column("normalized_name", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("species_name", sa.Text(), nullable=True),
        sa.Column("lipid_class", sa.Text(), nullable=True),
        sa.Column("parsed", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("aliases", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column(
            "external_ids",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "feature_type IN ('gene', 'protein', 'metabolite', 'lipid')", name=op.f("ck_feature_feature_type")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature")),
        sa.UniqueConstraint("feature_type", "normalized_name", name=op.f("uq_feature_feature_type_normalized_name")),
    )
    op.create_index(op.f("ix_feature_species_name"), "feature", ["species_name"], unique=False)
    op.create_table(
        "program",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("disease", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column(
            "external_ids",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program")),
        sa.UniqueConstraint("name", name=op.f("uq_program_name")),
    )
    op.create_table(
        "dead_letter",
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("lsn", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("permanent", sa.Boolean(), nullable=False),
        sa.Column("first_enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("sink", "entity", "entity_id", name=op.f("pk_dead_letter")),
        schema="replicator",
    )
    op.create_table(
        "heartbeat",
        sa.Column("slot_name", sa.Text(), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("slot_name", name=op.f("pk_heartbeat")),
        schema="replicator",
    )
    op.create_table(
        "outbox",
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("lsn", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("first_enqueued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_enqueued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("sink", "entity", "entity_id", name=op.f("pk_outbox")),
        schema="replicator",
    )
    op.create_index(
        "ix_outbox_sink_next_attempt_at",
        "outbox",
        ["sink", "next_attempt_at"],
        unique=False,
        schema="replicator",
    )
    op.create_table(
        "sink_state",
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.UUID(), nullable=False),
        sa.Column("remote_id", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("sink", "entity", "entity_id", name=op.f("pk_sink_state")),
        schema="replicator",
    )
    op.create_table(
        "sink_status",
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("needs_resync", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("sink", name=op.f("pk_sink_status")),
        schema="replicator",
    )
    op.create_table(
        "source_checkpoint",
        sa.Column("slot_name", sa.Text(), nullable=False),
        sa.Column("confirmed_lsn", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("backfill_done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("leader", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("slot_name", name=op.f("pk_source_checkpoint")),
        schema="replicator",
    )
    op.create_table(
        "signature",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("short_id", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("modalities", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column(
            "biomarker_role",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "phenotype_axes",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("data_ownership", sa.Text(), nullable=True),
        sa.Column("source_sha256", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signature")),
        sa.UniqueConstraint("name", name=op.f("uq_signature_name")),
    )
    op.create_index(op.f("ix_signature_short_id"), "signature", ["short_id"], unique=False)
    op.create_table(
        "dataset_feature",
        sa.Column("dataset_id", sa.UUID(), nullable=False),
        sa.Column("feature_id", sa.UUID(), nullable=False),
        sa.Column("raw_name", sa.Text(), nullable=False),
        sa.Column("log2_fold_change", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("intensity", sa.Double(), nullable=True),
        sa.Column(
            "extra",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_dataset_feature_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["feature_id"],
            ["feature.id"],
            name=op.f("fk_dataset_feature_feature_id_feature"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "feature_id", name=op.f("pk_dataset_feature")),
    )
    op.create_index(op.f("ix_dataset_feature_feature_id"), "dataset_feature", ["feature_id"], unique=False)
    op.create_table(
        "dataset_signature",
        sa.Column("dataset_id", sa.UUID(), nullable=False),
        sa.Column("signature_id", sa.UUID(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("overlap_fraction", sa.Double(), nullable=False),
        sa.Column("matched_components", sa.Integer(), nullable=False),
        sa.Column("total_components", sa.Integer(), nullable=False),
        sa.Column("match_level", sa.Text(), nullable=False),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "match_level IN ('exact', 'species', 'mixed')", name=op.f("ck_dataset_signature_match_level")
        ),
        sa.CheckConstraint(
            "matched_components > 0 AND matched_components <= total_components",
            name=op.f("ck_dataset_signature_matched_le_total"),
        ),
        sa.CheckConstraint(
            "overlap_fraction > 0 AND overlap_fraction <= 1", name=op.f("ck_dataset_signature_overlap_range")
        ),
        sa.CheckConstraint("score >= 0 AND score <= 1", name=op.f("ck_dataset_signature_score_range")),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_dataset_signature_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signature.id"],
            name=op.f("fk_dataset_signature_signature_id_signature"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "signature_id", name=op.f("pk_dataset_signature")),
    )
    op.create_index(op.f("ix_dataset_signature_signature_id"), "dataset_signature", ["signature_id"], unique=False)
    op.create_table(
        "experiment_dataset",
        sa.Column("experiment_id", sa.UUID(), nullable=False),
        sa.Column("dataset_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_experiment_dataset_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiment.id"],
            name=op.f("fk_experiment_dataset_experiment_id_experiment"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("experiment_id", "dataset_id", name=op.f("pk_experiment_dataset")),
    )
    op.create_index(op.f("ix_experiment_dataset_dataset_id"), "experiment_dataset", ["dataset_id"], unique=False)
    op.create_table(
        "program_dataset",
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("dataset_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_program_dataset_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["program.id"],
            name=op.f("fk_program_dataset_program_id_program"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("program_id", "dataset_id", name=op.f("pk_program_dataset")),
    )
    op.create_index(op.f("ix_program_dataset_dataset_id"), "program_dataset", ["dataset_id"], unique=False)
    op.create_table(
        "program_experiment",
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("experiment_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiment.id"],
            name=op.f("fk_program_experiment_experiment_id_experiment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["program.id"],
            name=op.f("fk_program_experiment_program_id_program"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("program_id", "experiment_id", name=op.f("pk_program_experiment")),
    )
    op.create_index(op.f("ix_program_experiment_experiment_id"), "program_experiment", ["experiment_id"], unique=False)
    op.create_table(
        "program_signature",
        sa.Column("program_id", sa.UUID(), nullable=False),
        sa.Column("signature_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["program.id"],
            name=op.f("fk_program_signature_program_id_program"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signature.id"],
            name=op.f("fk_program_signature_signature_id_signature"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("program_id", "signature_id", name=op.f("pk_program_signature")),
    )
    op.create_index(op.f("ix_program_signature_signature_id"), "program_signature", ["signature_id"], unique=False)
    op.create_table(
        "signature_component",
        sa.Column("signature_id", sa.UUID(), nullable=False),
        sa.Column("feature_id", sa.UUID(), nullable=False),
        sa.Column("raw_name", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("weight", sa.Double(), server_default=sa.text("1.0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "direction IN ('up', 'down', 'neutral', 'complex')", name=op.f("ck_signature_component_direction")
        ),
        sa.CheckConstraint("weight > 0", name=op.f("ck_signature_component_weight_positive")),
        sa.ForeignKeyConstraint(
            ["feature_id"],
            ["feature.id"],
            name=op.f("fk_signature_component_feature_id_feature"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signature.id"],
            name=op.f("fk_signature_component_signature_id_signature"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("signature_id", "feature_id", name=op.f("pk_signature_component")),
    )
    op.create_index(op.f("ix_signature_component_feature_id"), "signature_component", ["feature_id"], unique=False)

    op.execute(SET_UPDATED_AT)
    for table in TIMESTAMPED_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_set_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )


def downgrade() -> None:
    for table in TIMESTAMPED_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_set_updated_at ON {table}")
    op.execute("DROP FUNCTION IF EXISTS set_updated_at()")
    op.drop_index(op.f("ix_signature_component_feature_id"), table_name="signature_component")
    op.drop_table("signature_component")
    op.drop_index(op.f("ix_program_signature_signature_id"), table_name="program_signature")
    op.drop_table("program_signature")
    op.drop_index(op.f("ix_program_experiment_experiment_id"), table_name="program_experiment")
    op.drop_table("program_experiment")
    op.drop_index(op.f("ix_program_dataset_dataset_id"), table_name="program_dataset")
    op.drop_table("program_dataset")
    op.drop_index(op.f("ix_experiment_dataset_dataset_id"), table_name="experiment_dataset")
    op.drop_table("experiment_dataset")
    op.drop_index(op.f("ix_dataset_signature_signature_id"), table_name="dataset_signature")
    op.drop_table("dataset_signature")
    op.drop_index(op.f("ix_dataset_feature_feature_id"), table_name="dataset_feature")
    op.drop_table("dataset_feature")
    op.drop_index(op.f("ix_signature_short_id"), table_name="signature")
    op.drop_table("signature")
    op.drop_table("source_checkpoint", schema="replicator")
    op.drop_table("sink_status", schema="replicator")
    op.drop_table("sink_state", schema="replicator")
    op.drop_index("ix_outbox_sink_next_attempt_at", table_name="outbox", schema="replicator")
    op.drop_table("outbox", schema="replicator")
    op.drop_table("heartbeat", schema="replicator")
    op.drop_table("dead_letter", schema="replicator")
    op.drop_table("program")
    op.drop_index(op.f("ix_feature_species_name"), table_name="feature")
    op.drop_table("feature")
    op.drop_table("experiment")
    op.drop_index(op.f("ix_dataset_omics_type"), table_name="dataset")
    op.drop_table("dataset")
    op.execute("DROP SCHEMA IF EXISTS replicator")
