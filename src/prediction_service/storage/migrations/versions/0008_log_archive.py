"""The prediction log's archive: the catalog of Parquet files rows were moved to, and the
ranges of archived prediction ids (a late feedback for one gets 410, not 404).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Retention's batches: the oldest rows of a model. On a large PostgreSQL table, create it
    # beforehand with CREATE INDEX CONCURRENTLY under this name; this then finds it there.
    if not _has_index("predictions", "ix_predictions_model_created_at"):
        op.create_index("ix_predictions_model_created_at", "predictions", ["model", "created_at"])
    op.create_table(
        "log_archive_files",
        sa.Column("file", sa.String(512), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_log_archive_files_model_day", "log_archive_files", ["model", "day"])
    op.create_table(
        "archived_id_ranges",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("prefix", sa.String(16), primary_key=True),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
    )


def _has_index(table: str, name: str) -> bool:
    return any(i["name"] == name for i in sa.inspect(op.get_bind()).get_indexes(table))


def downgrade() -> None:
    op.drop_index("ix_predictions_model_created_at", "predictions")
    op.drop_table("archived_id_ranges")
    op.drop_index("ix_log_archive_files_model_day", "log_archive_files")
    op.drop_table("log_archive_files")
