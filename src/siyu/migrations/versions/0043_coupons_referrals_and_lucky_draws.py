"""用户转化: coupon batches and their code pools, referral programmes and their ledger, lucky draws

Revision ID: 0043
Revises: 0042
Create Date: 2026-12-05 11:53:21.399544
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0043'
down_revision: str | None = '0042'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('coupon_batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('discount', sa.Numeric(precision=4, scale=2), nullable=False),
    sa.Column('min_spend', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=False),
    sa.Column('remind_days', sa.Integer(), nullable=False),
    sa.Column('note', sa.String(length=255), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_coupon_batch_created_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_coupon_batch'))
    )
    op.create_table('lucky_draw',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('segment_id', sa.Integer(), nullable=True),
    sa.Column('exclude_blacklisted', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('seed', sa.String(length=64), nullable=False),
    sa.Column('eligible_count', sa.Integer(), nullable=False),
    sa.Column('eligible_digest', sa.String(length=64), nullable=False),
    sa.Column('eligible_ids', sa.Text(), nullable=False),
    sa.Column('drawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('drawn_by_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_lucky_draw_created_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['drawn_by_id'], ['user.id'], name=op.f('fk_lucky_draw_drawn_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['segment_id'], ['segment.id'], name=op.f('fk_lucky_draw_segment_id_segment'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lucky_draw'))
    )
    op.create_table('referral_programme',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('account_ids', sa.JSON(), nullable=False),
    sa.Column('reversal_days', sa.Integer(), nullable=False),
    sa.Column('tiers', sa.JSON(), nullable=False),
    sa.Column('first_order_batch_id', sa.Integer(), nullable=True),
    sa.Column('first_order_gift', sa.String(length=100), nullable=False),
    sa.Column('poster_text', sa.String(length=200), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_referral_programme_created_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['first_order_batch_id'], ['coupon_batch.id'], name=op.f('fk_referral_programme_first_order_batch_id_coupon_batch'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referral_programme'))
    )
    op.create_table('lucky_draw_prize',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('draw_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('coupon_batch_id', sa.Integer(), nullable=True),
    sa.Column('stock', sa.Integer(), nullable=False),
    sa.Column('odds', sa.Numeric(precision=6, scale=3), nullable=False),
    sa.ForeignKeyConstraint(['coupon_batch_id'], ['coupon_batch.id'], name=op.f('fk_lucky_draw_prize_coupon_batch_id_coupon_batch'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['draw_id'], ['lucky_draw.id'], name=op.f('fk_lucky_draw_prize_draw_id_lucky_draw'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lucky_draw_prize'))
    )
    with op.batch_alter_table('lucky_draw_prize', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lucky_draw_prize_draw_id'), ['draw_id'], unique=False)

    op.create_table('referral_invite',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('programme_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=30), nullable=False),
    sa.Column('wecom_config_id', sa.String(length=64), nullable=False),
    sa.Column('qr_url', sa.String(length=512), nullable=False),
    sa.Column('alert', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_referral_invite_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['programme_id'], ['referral_programme.id'], name=op.f('fk_referral_invite_programme_id_referral_programme'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referral_invite')),
    sa.UniqueConstraint('programme_id', 'customer_id', name=op.f('uq_referral_invite_programme_id_customer_id')),
    sa.UniqueConstraint('state', name=op.f('uq_referral_invite_state'))
    )
    with op.batch_alter_table('referral_invite', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_invite_customer_id'), ['customer_id'], unique=False)

    op.create_table('referral_ledger',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('programme_id', sa.Integer(), nullable=False),
    sa.Column('referrer_id', sa.Integer(), nullable=False),
    sa.Column('referee_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('delta', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('delta IN (1, -1)', name=op.f('ck_referral_ledger_delta')),
    sa.ForeignKeyConstraint(['programme_id'], ['referral_programme.id'], name=op.f('fk_referral_ledger_programme_id_referral_programme'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['referee_id'], ['customer.id'], name=op.f('fk_referral_ledger_referee_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['referrer_id'], ['customer.id'], name=op.f('fk_referral_ledger_referrer_id_customer'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referral_ledger')),
    sa.UniqueConstraint('programme_id', 'referee_id', 'kind', name=op.f('uq_referral_ledger_programme_id_referee_id_kind'))
    )
    with op.batch_alter_table('referral_ledger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_ledger_referee_id'), ['referee_id'], unique=False)
        batch_op.create_index('ix_referral_ledger_referrer', ['programme_id', 'referrer_id'], unique=False)

    op.create_table('referral_reward',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('programme_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('coupon_batch_id', sa.Integer(), nullable=True),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('gift', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['coupon_batch_id'], ['coupon_batch.id'], name=op.f('fk_referral_reward_coupon_batch_id_coupon_batch'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_referral_reward_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['programme_id'], ['referral_programme.id'], name=op.f('fk_referral_reward_programme_id_referral_programme'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referral_reward')),
    sa.UniqueConstraint('programme_id', 'customer_id', 'reason', name=op.f('uq_referral_reward_programme_id_customer_id_reason'))
    )
    with op.batch_alter_table('referral_reward', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referral_reward_customer_id'), ['customer_id'], unique=False)

    op.create_table('referral_standing',
    sa.Column('programme_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('invites', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('invites >= 0', name=op.f('ck_referral_standing_invites')),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_referral_standing_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['programme_id'], ['referral_programme.id'], name=op.f('fk_referral_standing_programme_id_referral_programme'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('programme_id', 'customer_id', name=op.f('pk_referral_standing'))
    )
    with op.batch_alter_table('referral_standing', schema=None) as batch_op:
        batch_op.create_index('ix_referral_standing_board', ['programme_id', 'invites'], unique=False)

    op.create_table('lucky_draw_winner',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('draw_id', sa.Integer(), nullable=False),
    sa.Column('prize_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('notified', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_lucky_draw_winner_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['draw_id'], ['lucky_draw.id'], name=op.f('fk_lucky_draw_winner_draw_id_lucky_draw'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prize_id'], ['lucky_draw_prize.id'], name=op.f('fk_lucky_draw_winner_prize_id_lucky_draw_prize'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lucky_draw_winner')),
    sa.UniqueConstraint('draw_id', 'customer_id', name=op.f('uq_lucky_draw_winner_draw_id_customer_id'))
    )
    with op.batch_alter_table('lucky_draw_winner', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lucky_draw_winner_customer_id'), ['customer_id'], unique=False)

    op.create_table('coupon_batch_code',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('issued_via', sa.String(length=16), nullable=False),
    sa.Column('redeemed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('order_id', sa.Integer(), nullable=True),
    sa.Column('reminded_on', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['coupon_batch.id'], name=op.f('fk_coupon_batch_code_batch_id_coupon_batch'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_coupon_batch_code_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['order_id'], ['customer_order.id'], name=op.f('fk_coupon_batch_code_order_id_customer_order'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_coupon_batch_code')),
    sa.UniqueConstraint('batch_id', 'code', name=op.f('uq_coupon_batch_code_batch_id_code')),
    sa.UniqueConstraint('batch_id', 'customer_id', name=op.f('uq_coupon_batch_code_batch_id_customer_id'))
    )
    with op.batch_alter_table('coupon_batch_code', schema=None) as batch_op:
        batch_op.create_index('ix_coupon_batch_code_code', ['code'], unique=False)
        batch_op.create_index(batch_op.f('ix_coupon_batch_code_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index('ix_coupon_batch_code_free', ['batch_id', 'customer_id', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('coupon_batch_code', schema=None) as batch_op:
        batch_op.drop_index('ix_coupon_batch_code_free')
        batch_op.drop_index(batch_op.f('ix_coupon_batch_code_customer_id'))
        batch_op.drop_index('ix_coupon_batch_code_code')

    op.drop_table('coupon_batch_code')
    with op.batch_alter_table('lucky_draw_winner', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lucky_draw_winner_customer_id'))

    op.drop_table('lucky_draw_winner')
    with op.batch_alter_table('referral_standing', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_standing_board')

    op.drop_table('referral_standing')
    with op.batch_alter_table('referral_reward', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_reward_customer_id'))

    op.drop_table('referral_reward')
    with op.batch_alter_table('referral_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_ledger_referrer')
        batch_op.drop_index(batch_op.f('ix_referral_ledger_referee_id'))

    op.drop_table('referral_ledger')
    with op.batch_alter_table('referral_invite', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_invite_customer_id'))

    op.drop_table('referral_invite')
    with op.batch_alter_table('lucky_draw_prize', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lucky_draw_prize_draw_id'))

    op.drop_table('lucky_draw_prize')
    op.drop_table('referral_programme')
    op.drop_table('lucky_draw')
    op.drop_table('coupon_batch')
