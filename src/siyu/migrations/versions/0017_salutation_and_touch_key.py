"""friendship.salutation (称呼: how we address the customer in messages); touch.dedupe_key (one
timeline entry per customer × account × day of the customer's own messages, kept by an upsert)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('friendship', schema=None) as batch_op:
        batch_op.add_column(sa.Column('salutation', sa.String(length=64), nullable=False, server_default=''))
    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedupe_key', sa.String(length=128), nullable=True))
        batch_op.create_index('ix_touch_dedupe_key', ['dedupe_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('touch', schema=None) as batch_op:
        batch_op.drop_index('ix_touch_dedupe_key')
        batch_op.drop_column('dedupe_key')
    with op.batch_alter_table('friendship', schema=None) as batch_op:
        batch_op.drop_column('salutation')
