"""A campaign's coupon batch; a referral invite's 公众号 parametric QR code

Revision ID: 0053
Revises: 0054
Create Date: 2026-12-05 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0053'
down_revision: str | None = '0054'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('campaign') as batch:
        batch.add_column(sa.Column('coupon_batch_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f('fk_campaign_coupon_batch_id_coupon_batch'), 'coupon_batch',
                                 ['coupon_batch_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('referral_invite') as batch:
        batch.add_column(sa.Column('mp_account_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('mp_ticket', sa.String(length=255), nullable=False, server_default=''))
        batch.add_column(sa.Column('mp_qr_url', sa.String(length=512), nullable=False, server_default=''))
        batch.add_column(sa.Column('mp_permanent', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('mp_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(op.f('fk_referral_invite_mp_account_id_account'), 'account',
                                 ['mp_account_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('referral_invite') as batch:
        batch.drop_constraint(op.f('fk_referral_invite_mp_account_id_account'), type_='foreignkey')
        for column in ('mp_expires_at', 'mp_permanent', 'mp_qr_url', 'mp_ticket', 'mp_account_id'):
            batch.drop_column(column)
    with op.batch_alter_table('campaign') as batch:
        batch.drop_constraint(op.f('fk_campaign_coupon_batch_id_coupon_batch'), type_='foreignkey')
        batch.drop_column('coupon_batch_id')
