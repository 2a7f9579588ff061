"""A token of each model's last champion change made through the service, beside its
traffic split: every worker reads both each traffic interval, so a promotion or rollback on
one worker reaches the others within about a second.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traffic_splits") as batch:
        batch.add_column(sa.Column("champion_change", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("traffic_splits") as batch:
        batch.drop_column("champion_change")
