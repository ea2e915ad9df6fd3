"""Group operations: welcome templates per group kind, intake plans, the posts calendar (群SOP) and its posts

Revision ID: 0047
Revises: 0044
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision: str = '0047'
down_revision: str | None = '0044'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'group_welcome_template',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('wecom_template_id', sa.String(length=64), nullable=False),
        sa.Column('sync_error', sa.String(length=255), nullable=False),
        sa.Column('created_at', siyu.core.db.UTCDateTime(), nullable=False),
        sa.Column('updated_at', siyu.core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_group_welcome_template')),
        sa.UniqueConstraint('name', name=op.f('uq_group_welcome_template_name')),
    )
    op.create_table(
        'group_invitee',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('group_chat_id', sa.Integer(), nullable=False),
        sa.Column('batch', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=True),
        sa.Column('userid', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('note', sa.String(length=255), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.String(length=255), nullable=False),
        sa.Column('created_at', siyu.core.db.UTCDateTime(), nullable=False),
        sa.Column('updated_at', siyu.core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['group_chat_id'], ['group_chat.id'], name=op.f('fk_group_invitee_group_chat_id_group_chat'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_group_invitee_customer_id_customer'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_group_invitee')),
    )
    op.create_index('ix_group_invitee_group_batch', 'group_invitee', ['group_chat_id', 'batch', 'id'])
    op.create_table(
        'group_post_plan',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('slot', sa.String(length=16), nullable=False),
        sa.Column('at_time', sa.String(length=5), nullable=False),
        sa.Column('weekdays', sa.JSON(), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('script_id', sa.Integer(), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', siyu.core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['script_id'], ['library_item.id'], name=op.f('fk_group_post_plan_script_id_library_item'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_group_post_plan')),
    )
    op.create_table(
        'group_post',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('plan_id', sa.Integer(), nullable=True),
        sa.Column('group_chat_id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=True),
        sa.Column('slot', sa.String(length=16), nullable=False),
        sa.Column('batch', sa.Integer(), nullable=True),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('due_at', siyu.core.db.UTCDateTime(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.String(length=255), nullable=False),
        sa.Column('sender', sa.String(length=64), nullable=False),
        sa.Column('msgid', sa.String(length=64), nullable=False),
        sa.Column('sent_at', siyu.core.db.UTCDateTime(), nullable=True),
        sa.Column('confirmed_at', siyu.core.db.UTCDateTime(), nullable=True),
        sa.Column('created_at', siyu.core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['plan_id'], ['group_post_plan.id'], name=op.f('fk_group_post_plan_id_group_post_plan'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['group_chat_id'], ['group_chat.id'], name=op.f('fk_group_post_group_chat_id_group_chat'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_group_post_account_id_account'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_group_post')),
        sa.UniqueConstraint('plan_id', 'group_chat_id', 'due_at', name=op.f('uq_group_post_plan_id_group_chat_id_due_at')),
    )
    op.create_index('ix_group_post_status_due', 'group_post', ['status', 'due_at'])
    op.create_index('ix_group_post_group_due', 'group_post', ['group_chat_id', 'due_at'])


def downgrade() -> None:
    op.drop_index('ix_group_post_group_due', table_name='group_post')
    op.drop_index('ix_group_post_status_due', table_name='group_post')
    op.drop_table('group_post')
    op.drop_table('group_post_plan')
    op.drop_index('ix_group_invitee_group_batch', table_name='group_invitee')
    op.drop_table('group_invitee')
    op.drop_table('group_welcome_template')
