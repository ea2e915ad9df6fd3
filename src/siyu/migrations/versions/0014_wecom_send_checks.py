"""WeCom mass-send results still to read back for accepted replies

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'wecom_send_check',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('message_id', sa.Integer(), nullable=False),
        sa.Column('msgid', sa.String(length=128), nullable=False),
        sa.Column('sender', sa.String(length=64), nullable=False),
        sa.Column('target', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('checks', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['message.id'], name=op.f('fk_wecom_send_check_message_id_message'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wecom_send_check')),
        sa.UniqueConstraint('message_id', name=op.f('uq_wecom_send_check_message_id')),
    )
    with op.batch_alter_table('wecom_send_check', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wecom_send_check_next_check_at'), ['next_check_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wecom_send_check', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wecom_send_check_next_check_at'))
    op.drop_table('wecom_send_check')
