"""WeCom chat archive (会话存档): the seq cursor, customers' consent, skipped items, group messages

Revision ID: 0023
Revises: 0020
Create Date: 2026-12-05 04:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0023'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'wecom_archive_cursor',
        sa.Column('name', sa.String(length=16), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False, server_default='0'),
        sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('pulled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('stored', sa.BigInteger(), nullable=False, server_default='0'),
        sa.Column('skipped', sa.BigInteger(), nullable=False, server_default='0'),
        sa.Column('withheld', sa.BigInteger(), nullable=False, server_default='0'),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_wecom_archive_cursor')),
    )
    op.create_table(
        'wecom_archive_consent',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('userid', sa.String(length=64), nullable=False),
        sa.Column('external_userid', sa.String(length=64), nullable=False),
        sa.Column('agreed', sa.Boolean(), nullable=False),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('changed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wecom_archive_consent')),
        sa.UniqueConstraint('userid', 'external_userid', name=op.f('uq_wecom_archive_consent_userid_external_userid')),
    )
    op.create_index('ix_wecom_archive_consent_external', 'wecom_archive_consent', ['external_userid'], unique=False)
    op.create_table(
        'wecom_archive_skip',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('msgid', sa.String(length=128), nullable=False),
        sa.Column('publickey_ver', sa.Integer(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wecom_archive_skip')),
        sa.UniqueConstraint('seq', name=op.f('uq_wecom_archive_skip_seq')),
    )
    op.create_table(
        'group_message',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('msgid', sa.String(length=128), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('chat_id', sa.String(length=64), nullable=False),
        sa.Column('group_chat_id', sa.Integer(), nullable=True),
        sa.Column('sender', sa.String(length=64), nullable=False),
        sa.Column('member_type', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('msg_type', sa.String(length=32), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_group_message_customer_id_customer'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['group_chat_id'], ['group_chat.id'],
                                name=op.f('fk_group_message_group_chat_id_group_chat'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_group_message')),
        sa.UniqueConstraint('msgid', name=op.f('uq_group_message_msgid')),
    )
    op.create_index('ix_group_message_group_order', 'group_message', ['group_chat_id', 'sent_at', 'id'], unique=False)
    op.create_index('ix_group_message_chat_id', 'group_message', ['chat_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_group_message_chat_id', table_name='group_message')
    op.drop_index('ix_group_message_group_order', table_name='group_message')
    op.drop_table('group_message')
    op.drop_table('wecom_archive_skip')
    op.drop_index('ix_wecom_archive_consent_external', table_name='wecom_archive_consent')
    op.drop_table('wecom_archive_consent')
    op.drop_table('wecom_archive_cursor')
