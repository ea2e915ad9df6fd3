"""Analytics: stage transitions (the ladder over time, backfilled: one initial row per customer at their add date)
and WeCom member behaviour data

Revision ID: 0039
Revises: 0036
Create Date: 2026-12-05 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0039'
down_revision: str | None = '0036'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'stage_transition',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('from_rank', sa.SmallInteger(), nullable=True),
        sa.Column('to_rank', sa.SmallInteger(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('until', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_stage_transition_customer_id_customer'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_transition')),
    )
    op.create_index('ix_stage_transition_customer_at', 'stage_transition', ['customer_id', 'at'], unique=False)
    op.create_index('ix_stage_transition_at', 'stage_transition', ['at', 'until', 'to_rank'], unique=False)
    # Backfill: every existing customer's current stage, from their add date (set-based, one statement).
    op.execute(
        "INSERT INTO stage_transition (customer_id, from_rank, to_rank, at) "
        "SELECT id, NULL, CASE stage WHEN 'user' THEN 1 WHEN 'customer' THEN 2 WHEN 'fan' THEN 3 ELSE 0 END, "
        "created_at FROM customer WHERE merged_into_id IS NULL")
    op.create_table(
        'member_behaviour',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('errcode', sa.Integer(), nullable=False),
        sa.Column('chat_cnt', sa.Integer(), nullable=False),
        sa.Column('message_cnt', sa.Integer(), nullable=False),
        sa.Column('reply_percentage', sa.Float(), nullable=True),
        sa.Column('avg_reply_time', sa.Integer(), nullable=True),
        sa.Column('negative_feedback_cnt', sa.Integer(), nullable=False),
        sa.Column('new_apply_cnt', sa.Integer(), nullable=False),
        sa.Column('new_contact_cnt', sa.Integer(), nullable=False),
        sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_member_behaviour_account_id_account'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_member_behaviour')),
        sa.UniqueConstraint('account_id', 'day', name=op.f('uq_member_behaviour_account_id_day')),
    )
    op.create_index('ix_member_behaviour_day', 'member_behaviour', ['day'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_member_behaviour_day', table_name='member_behaviour')
    op.drop_table('member_behaviour')
    op.drop_index('ix_stage_transition_at', table_name='stage_transition')
    op.drop_index('ix_stage_transition_customer_at', table_name='stage_transition')
    op.drop_table('stage_transition')
