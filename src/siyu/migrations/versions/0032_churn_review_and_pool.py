"""Churn review (who ended a friendship, the reason) and the 公海 (public pool) of customers without an owner

Revision ID: 0032
Revises: 0030
Create Date: 2026-12-05 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0032'
down_revision: str | None = '0030'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('friendship', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ended_by', sa.String(length=16), server_default='', nullable=False))
        batch_op.add_column(sa.Column('churn_reason', sa.String(length=32), server_default='', nullable=False))
        batch_op.add_column(sa.Column('churn_note', sa.String(length=255), server_default='', nullable=False))
        batch_op.create_index('ix_friendship_status_removed', ['status', 'removed_at', 'id'], unique=False)
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pool_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_customer_pool', ['pool_since', 'id'], unique=False)
        batch_op.create_index('ix_customer_claimed', ['claimed_at'], unique=False)
    with op.batch_alter_table('maintenance_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pool_untouched_days', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('pool_claim_limit', sa.Integer(), server_default='20', nullable=False))
        batch_op.add_column(sa.Column('pool_hold_days', sa.Integer(), server_default='7', nullable=False))
    op.create_table(
        'pool_claim',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('returned_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_pool_claim_customer_id_customer'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_pool_claim_user_id_user'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pool_claim')),
    )
    op.create_index('ix_pool_claim_customer_id', 'pool_claim', ['customer_id'], unique=False)
    op.create_index('ix_pool_claim_user_at', 'pool_claim', ['user_id', 'claimed_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_pool_claim_user_at', table_name='pool_claim')
    op.drop_index('ix_pool_claim_customer_id', table_name='pool_claim')
    op.drop_table('pool_claim')
    with op.batch_alter_table('maintenance_settings', schema=None) as batch_op:
        batch_op.drop_column('pool_hold_days')
        batch_op.drop_column('pool_claim_limit')
        batch_op.drop_column('pool_untouched_days')
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_claimed')
        batch_op.drop_index('ix_customer_pool')
        batch_op.drop_column('claimed_at')
        batch_op.drop_column('pool_since')
    with op.batch_alter_table('friendship', schema=None) as batch_op:
        batch_op.drop_index('ix_friendship_status_removed')
        batch_op.drop_column('churn_note')
        batch_op.drop_column('churn_reason')
        batch_op.drop_column('ended_by')
