"""dataset_signature.match_level may be 'molecular' (#13: same chains, positions set aside)

Revision ID: 0002_match_level_molecular
Revises: 0001
Create Date: 2026-12-02 07:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_match_level_molecular"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_dataset_signature_match_level"


def upgrade() -> None:
    op.drop_constraint(op.f(_NAME), "dataset_signature", type_="check")
    op.create_check_constraint(
        op.f(_NAME), "dataset_signature", "match_level IN ('exact', 'molecular', 'species', 'mixed')"
    )


def downgrade() -> None:
    op.execute("UPDATE dataset_signature SET match_level = 'species' WHERE match_level = 'molecular'")
    op.drop_constraint(op.f(_NAME), "dataset_signature", type_="check")
    op.create_check_constraint(op.f(_NAME), "dataset_signature", "match_level IN ('exact', 'species', 'mixed')")
