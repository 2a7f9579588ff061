"""Retrain jobs and A/B traffic splits.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retrain_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("candidates", sa.JSON(), nullable=True),
        sa.Column("data_path", sa.String(512), nullable=True),
        sa.Column("version", sa.String(32), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=True),
        sa.Column("gate_reason", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_retrain_jobs_model", "retrain_jobs", ["model"])
    op.create_table(
        "traffic_splits",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("challenger_percent", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("traffic_splits")
    op.drop_index("ix_retrain_jobs_model", table_name="retrain_jobs")
    op.drop_table("retrain_jobs")
