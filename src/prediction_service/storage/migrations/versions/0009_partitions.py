"""PostgreSQL: the predictions table range-partitioned by day, every existing row kept
(storage/partitions.py). SQLite keeps one table.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

from prediction_service.storage import partitions

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        partitions.convert(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        partitions.unconvert(op.get_bind())
