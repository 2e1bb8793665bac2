"""numbers: indexes in the allocation order (least used first)

pool._candidates takes the first free number ordered by (active_bindings, total_bindings, id).
Without an index in that order PostgreSQL read and sorted the whole pool on every bind
(docs/benchmarks.md); with one it walks the index and stops at the first free number, with a
city (ix_numbers_allocation) or without one (ix_numbers_least_used).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 08:45:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ORDER = ["active_bindings", "total_bindings", "id"]


def upgrade() -> None:
    with op.batch_alter_table("numbers", schema=None) as batch_op:
        batch_op.drop_index("ix_numbers_allocation")
        batch_op.create_index(
            "ix_numbers_allocation", ["customer_id", "state", "city", *ORDER], unique=False
        )
        batch_op.create_index(
            "ix_numbers_least_used", ["customer_id", "state", *ORDER], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("numbers", schema=None) as batch_op:
        batch_op.drop_index("ix_numbers_least_used")
        batch_op.drop_index("ix_numbers_allocation")
        batch_op.create_index(
            "ix_numbers_allocation",
            ["customer_id", "state", "city", "active_bindings"],
            unique=False,
        )
