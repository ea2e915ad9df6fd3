"""公众号: MP accounts (appid), followers, parametric QR codes of channels, the follower sync, callback nonces

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-05 04:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0022'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mp_appid', sa.String(length=32), nullable=True))
        batch_op.create_unique_constraint('uq_account_mp_appid', ['mp_appid'])
    op.create_table(
        'mp_follower',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('openid', sa.String(length=64), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('unionid', sa.String(length=64), nullable=True),
        sa.Column('subscribed', sa.Boolean(), nullable=False),
        sa.Column('subscribed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('unsubscribed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('scene', sa.String(length=64), nullable=False),
        sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('synced_run', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('openid'),
    )
    op.create_index('ix_mp_follower_account_subscribed', 'mp_follower', ['account_id', 'subscribed'])
    op.create_index('ix_mp_follower_customer_id', 'mp_follower', ['customer_id'])
    op.create_index('ix_mp_follower_unionid', 'mp_follower', ['unionid'])
    op.create_table(
        'mp_qrcode',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('channel_id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('scene', sa.String(length=64), nullable=False),
        sa.Column('permanent', sa.Boolean(), nullable=False),
        sa.Column('ticket', sa.String(length=255), nullable=False),
        sa.Column('url', sa.String(length=512), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_mp_qrcode_channel_id', 'mp_qrcode', ['channel_id'])
    op.create_table(
        'mp_sync_state',
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('run', sa.Integer(), nullable=False),
        sa.Column('next_openid', sa.String(length=64), nullable=False),
        sa.Column('running', sa.Boolean(), nullable=False),
        sa.Column('seen', sa.Integer(), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('account_id'),
    )
    op.create_table(
        'mp_nonce',
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('dedup_key', sa.String(length=160), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('nonce'),
    )
    op.create_index('ix_mp_nonce_seen_at', 'mp_nonce', ['seen_at'])


def downgrade() -> None:
    op.drop_index('ix_mp_nonce_seen_at', table_name='mp_nonce')
    op.drop_table('mp_nonce')
    op.drop_table('mp_sync_state')
    op.drop_index('ix_mp_qrcode_channel_id', table_name='mp_qrcode')
    op.drop_table('mp_qrcode')
    op.drop_index('ix_mp_follower_unionid', table_name='mp_follower')
    op.drop_index('ix_mp_follower_customer_id', table_name='mp_follower')
    op.drop_index('ix_mp_follower_account_subscribed', table_name='mp_follower')
    op.drop_table('mp_follower')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_constraint('uq_account_mp_appid', type_='unique')
        batch_op.drop_column('mp_appid')
