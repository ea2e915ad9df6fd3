"""Segment reads answered from indexes: order lines by customer carry category and order (the "bought a
category in N days" probe reads no line row), and live customers' ids (the segment's per-candidate check
that a customer was not merged away reads no customer row)

Revision ID: 0051
Revises: 0048
Create Date: 2026-12-05 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0051'
down_revision: str | None = '0048'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index('ix_order_line_customer', table_name='order_line')
    op.create_index('ix_order_line_customer_category', 'order_line',
                    ['customer_id', 'paid_at', 'category', 'order_id'], unique=False)
    op.create_index('ix_customer_live', 'customer', ['id'], unique=False,
                    postgresql_where=sa.text('merged_into_id IS NULL'),
                    sqlite_where=sa.text('merged_into_id IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_customer_live', table_name='customer')
    op.drop_index('ix_order_line_customer_category', table_name='order_line')
    op.create_index('ix_order_line_customer', 'order_line', ['customer_id', 'paid_at'], unique=False)
