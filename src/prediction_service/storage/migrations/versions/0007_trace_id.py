"""Tracing: a prediction row holds the trace id of the request that made it (found from a
trace, and a trace from it: ``GET /predictions/history?trace_id=``).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(32), nullable=True))
        batch.create_index("ix_predictions_trace_id", ["trace_id"])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_index("ix_predictions_trace_id")
        batch.drop_column("trace_id")
