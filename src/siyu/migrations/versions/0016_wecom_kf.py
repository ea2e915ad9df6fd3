"""微信客服: kf accounts (open_kfid), customers' unionid, conversations' channel and session state, cursors

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('open_kfid', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_account_open_kfid', ['open_kfid'])
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unionid', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_customer_unionid', ['unionid'], unique=False)
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=16), nullable=False, server_default='personal'))
        batch_op.add_column(sa.Column('service_state', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('servicer_userid', sa.String(length=64), nullable=False, server_default=''))
        batch_op.create_index('ix_conversation_channel_status', ['channel', 'status'], unique=False)
    # Conversations so far: a WeCom member's chats are what the chat archive will carry (issue 18);
    # a personal account's are captured by a person.
    op.execute("UPDATE conversation SET channel = 'wecom_archive' WHERE account_id IN "
               "(SELECT id FROM account WHERE kind = 'wecom')")
    with op.batch_alter_table('autoreply_rule_version', schema=None) as batch_op:
        batch_op.add_column(sa.Column('menu', sa.JSON(), nullable=True))
    op.create_table(
        'wecom_kf_cursor',
        sa.Column('open_kfid', sa.String(length=64), nullable=False),
        sa.Column('cursor', sa.String(length=64), nullable=False, server_default=''),
        sa.Column('token', sa.String(length=128), nullable=False, server_default=''),
        sa.Column('token_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('tokenless_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('pulled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('servicers', sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint('open_kfid'),
    )


def downgrade() -> None:
    op.drop_table('wecom_kf_cursor')
    with op.batch_alter_table('autoreply_rule_version', schema=None) as batch_op:
        batch_op.drop_column('menu')
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.drop_index('ix_conversation_channel_status')
        batch_op.drop_column('servicer_userid')
        batch_op.drop_column('service_state')
        batch_op.drop_column('channel')
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_unionid')
        batch_op.drop_column('unionid')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_constraint('uq_account_open_kfid', type_='unique')
        batch_op.drop_column('open_kfid')
