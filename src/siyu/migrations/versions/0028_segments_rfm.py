"""Segments (客户分群) with static snapshots, and customers' RFM facts

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-05 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0028'
down_revision: str | None = '0027'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'segment',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('conditions', sa.JSON(), nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('broken', sa.Boolean(), nullable=False),
        sa.Column('broken_reason', sa.String(length=255), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('snapshot_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('snapshot_count', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['owner_id'], ['user.id'], name=op.f('fk_segment_owner_id_user'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_segment')),
    )
    op.create_index(op.f('ix_segment_owner_id'), 'segment', ['owner_id'], unique=False)
    op.create_table(
        'segment_member',
        sa.Column('segment_id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_segment_member_customer_id_customer'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['segment_id'], ['segment.id'], name=op.f('fk_segment_member_segment_id_segment'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('segment_id', 'customer_id', name=op.f('pk_segment_member')),
    )
    op.create_index('ix_segment_member_customer', 'segment_member', ['customer_id'], unique=False)
    op.create_table(
        'customer_rfm',
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('last_order_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('frequency', sa.Integer(), nullable=False),
        sa.Column('monetary', sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column('r_score', sa.Integer(), nullable=False),
        sa.Column('f_score', sa.Integer(), nullable=False),
        sa.Column('m_score', sa.Integer(), nullable=False),
        sa.Column('segment', sa.String(length=24), nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_customer_rfm_customer_id_customer'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_customer_rfm')),
    )
    op.create_index('ix_customer_rfm_segment', 'customer_rfm', ['segment', 'customer_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_customer_rfm_segment', table_name='customer_rfm')
    op.drop_table('customer_rfm')
    op.drop_index('ix_segment_member_customer', table_name='segment_member')
    op.drop_table('segment_member')
    op.drop_index(op.f('ix_segment_owner_id'), table_name='segment')
    op.drop_table('segment')
