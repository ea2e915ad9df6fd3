"""Groups run: registry, naming templates, group codes, QR images, daily snapshots, owner stats, group tasks

Revision ID: 0036
Revises: 0040
Create Date: 2026-12-05 09:07:39.168125
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0036'
down_revision: str | None = '0040'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('group_naming_template',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('pattern', sa.String(length=100), nullable=False),
    sa.Column('brand', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('tier', sa.String(length=32), nullable=False),
    sa.Column('next_number', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_naming_template')),
    sa.UniqueConstraint('name', name=op.f('uq_group_naming_template_name'))
    )
    op.create_table('group_owner_day_stat',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_userid', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('new_chat_cnt', sa.Integer(), nullable=False),
    sa.Column('chat_total', sa.Integer(), nullable=False),
    sa.Column('chat_has_msg', sa.Integer(), nullable=False),
    sa.Column('new_member_cnt', sa.Integer(), nullable=False),
    sa.Column('member_total', sa.Integer(), nullable=False),
    sa.Column('member_has_msg', sa.Integer(), nullable=False),
    sa.Column('msg_total', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_owner_day_stat')),
    sa.UniqueConstraint('owner_userid', 'day', name=op.f('uq_group_owner_day_stat_owner_userid_day'))
    )
    op.create_table('group_day_snapshot',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_chat_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('member_count', sa.Integer(), nullable=False),
    sa.Column('joins', sa.Integer(), nullable=False),
    sa.Column('leaves', sa.Integer(), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.Column('speakers_7d', sa.Integer(), nullable=False),
    sa.Column('health', sa.String(length=8), nullable=False),
    sa.ForeignKeyConstraint(['group_chat_id'], ['group_chat.id'], name=op.f('fk_group_day_snapshot_group_chat_id_group_chat'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_day_snapshot')),
    sa.UniqueConstraint('group_chat_id', 'day', name=op.f('uq_group_day_snapshot_group_chat_id_day'))
    )
    with op.batch_alter_table('group_day_snapshot', schema=None) as batch_op:
        batch_op.create_index('ix_group_day_snapshot_day', ['day'], unique=False)

    op.create_table('group_qr_image',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_chat_id', sa.Integer(), nullable=False),
    sa.Column('storage_key', sa.String(length=255), nullable=False),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('uploaded_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['group_chat_id'], ['group_chat.id'], name=op.f('fk_group_qr_image_group_chat_id_group_chat'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uploaded_by_id'], ['user.id'], name=op.f('fk_group_qr_image_uploaded_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_qr_image'))
    )
    with op.batch_alter_table('group_qr_image', schema=None) as batch_op:
        batch_op.create_index('ix_group_qr_image_expiry', ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_group_qr_image_group_chat_id'), ['group_chat_id'], unique=False)

    op.create_table('group_code',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=30), nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=True),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('group_ids', sa.JSON(), nullable=False),
    sa.Column('chat_ids', sa.JSON(), nullable=False),
    sa.Column('auto_create', sa.Boolean(), nullable=False),
    sa.Column('room_base_name', sa.String(length=40), nullable=False),
    sa.Column('room_base_id', sa.Integer(), nullable=False),
    sa.Column('rotate_percent', sa.Integer(), nullable=False),
    sa.Column('wecom_config_id', sa.String(length=64), nullable=False),
    sa.Column('qr_url', sa.String(length=512), nullable=False),
    sa.Column('alert', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_group_code_account_id_account'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], name=op.f('fk_group_code_channel_id_channel'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_code')),
    sa.UniqueConstraint('state', name=op.f('uq_group_code_state'))
    )
    op.create_table('group_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('group_chat_id', sa.Integer(), nullable=True),
    sa.Column('group_code_id', sa.Integer(), nullable=True),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('detail', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_group_task_account_id_account'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['group_chat_id'], ['group_chat.id'], name=op.f('fk_group_task_group_chat_id_group_chat'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['group_code_id'], ['group_code.id'], name=op.f('fk_group_task_group_code_id_group_code'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_group_task')),
    sa.UniqueConstraint('key', name=op.f('uq_group_task_key'))
    )
    with op.batch_alter_table('group_task', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_group_task_group_chat_id'), ['group_chat_id'], unique=False)
        batch_op.create_index('ix_group_task_status', ['status', 'id'], unique=False)

    with op.batch_alter_table('group_chat', schema=None) as batch_op:
        batch_op.add_column(sa.Column('platform', sa.String(length=16), server_default='wecom', nullable=False))
        batch_op.add_column(sa.Column('kind', sa.String(length=24), server_default='', nullable=False))
        batch_op.add_column(sa.Column('tier', sa.String(length=32), server_default='', nullable=False))
        batch_op.add_column(sa.Column('store', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('region', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('service_userids', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('fan_owned', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('naming_template_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('number', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('health', sa.String(length=8), server_default='active', nullable=False))
        batch_op.add_column(sa.Column('last_message_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_group_chat_kind_health', ['kind', 'health', 'updated_at', 'id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_group_chat_naming_template_id_group_naming_template'), 'group_naming_template', ['naming_template_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('group_member', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), server_default='member', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('group_member', schema=None) as batch_op:
        batch_op.drop_column('role')

    with op.batch_alter_table('group_chat', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_group_chat_naming_template_id_group_naming_template'), type_='foreignkey')
        batch_op.drop_index('ix_group_chat_kind_health')
        batch_op.drop_column('last_message_at')
        batch_op.drop_column('health')
        batch_op.drop_column('number')
        batch_op.drop_column('naming_template_id')
        batch_op.drop_column('fan_owned')
        batch_op.drop_column('service_userids')
        batch_op.drop_column('region')
        batch_op.drop_column('store')
        batch_op.drop_column('tier')
        batch_op.drop_column('kind')
        batch_op.drop_column('platform')

    with op.batch_alter_table('group_task', schema=None) as batch_op:
        batch_op.drop_index('ix_group_task_status')
        batch_op.drop_index(batch_op.f('ix_group_task_group_chat_id'))

    op.drop_table('group_task')
    op.drop_table('group_code')
    with op.batch_alter_table('group_qr_image', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_group_qr_image_group_chat_id'))
        batch_op.drop_index('ix_group_qr_image_expiry')

    op.drop_table('group_qr_image')
    with op.batch_alter_table('group_day_snapshot', schema=None) as batch_op:
        batch_op.drop_index('ix_group_day_snapshot_day')

    op.drop_table('group_day_snapshot')
    op.drop_table('group_owner_day_stat')
    op.drop_table('group_naming_template')
