"""Automation: model events, leases, per-model automation state; one active job per model,
and who watches each job (owner, heartbeat).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "model_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
    )
    op.create_index("ix_model_events_model_seq", "model_events", ["model", "seq"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "automation_state",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("retrain_jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.Float(), nullable=True))
    # A database written by an older service may hold several unfinished jobs of one model
    # (two workers racing); keep the newest active, so the unique index can be built.
    op.execute(
        "UPDATE retrain_jobs SET status = 'failed', error = 'superseded by a newer job' "
        "WHERE status IN ('queued', 'running') AND created_at < "
        "(SELECT MAX(created_at) FROM retrain_jobs AS newer WHERE newer.model = retrain_jobs.model "
        "AND newer.status IN ('queued', 'running'))"
    )
    op.create_index(
        "ux_retrain_jobs_active_model",
        "retrain_jobs",
        ["model"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ux_retrain_jobs_active_model", table_name="retrain_jobs")
    with op.batch_alter_table("retrain_jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("owner")
    op.drop_table("automation_state")
    op.drop_table("leases")
    op.drop_index("ix_model_events_model_seq", table_name="model_events")
    op.drop_table("model_events")
