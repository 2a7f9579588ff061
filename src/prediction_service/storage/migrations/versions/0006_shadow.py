"""Shadow rollouts: a prediction row says which arm made it (``shadow`` for a shadow's, none
for the answers clients got) and, for a shadow's, the id of the champion row it pairs with;
a model's traffic row holds the share of requests copied to its shadow.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("arm", sa.String(16), nullable=True))
        batch.add_column(sa.Column("pair_id", sa.String(32), nullable=True))
        batch.create_index("ix_predictions_pair_id", ["pair_id"])
    with op.batch_alter_table("traffic_splits") as batch:
        batch.add_column(
            sa.Column("shadow_percent", sa.Float(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("traffic_splits") as batch:
        batch.drop_column("shadow_percent")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_index("ix_predictions_pair_id")
        batch.drop_column("pair_id")
        batch.drop_column("arm")
