"""群规 (group moderation): rules per group kind, findings with evidence, the blacklist and whitelist

Revision ID: 0037
Revises: 0034
Create Date: 2026-12-05 09:12:38.050880
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0037'
down_revision: str | None = '0034'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('moderation_cursor',
    sa.Column('name', sa.String(length=16), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('change_id', sa.Integer(), nullable=False),
    sa.Column('pending', sa.JSON(), nullable=False),
    sa.Column('ran_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_moderation_cursor'))
    )
    op.create_table('moderation_whitelist',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('userid', sa.String(length=64), nullable=False),
    sa.Column('note', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moderation_whitelist')),
    sa.UniqueConstraint('userid', name=op.f('uq_moderation_whitelist_userid'))
    )
    op.create_table('moderation_rule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('group_kind', sa.String(length=32), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('ladder', sa.JSON(), nullable=False),
    sa.Column('warn_text', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('dry_run', sa.JSON(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_moderation_rule_created_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moderation_rule'))
    )
    with op.batch_alter_table('moderation_rule', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_moderation_rule_status'), ['status'], unique=False)

    op.create_table('moderation_finding',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.Integer(), nullable=True),
    sa.Column('rule_key', sa.String(length=32), nullable=False),
    sa.Column('rule_kind', sa.String(length=16), nullable=False),
    sa.Column('group_chat_id', sa.Integer(), nullable=False),
    sa.Column('member_userid', sa.String(length=64), nullable=False),
    sa.Column('member_name', sa.String(length=128), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('trigger', sa.String(length=160), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('offence', sa.Integer(), nullable=False),
    sa.Column('actions', sa.JSON(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('admin_notified', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('feedback_note', sa.String(length=255), nullable=False),
    sa.Column('feedback_by_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_moderation_finding_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['feedback_by_id'], ['user.id'], name=op.f('fk_moderation_finding_feedback_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['group_chat_id'], ['group_chat.id'], name=op.f('fk_moderation_finding_group_chat_id_group_chat'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rule_id'], ['moderation_rule.id'], name=op.f('fk_moderation_finding_rule_id_moderation_rule'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['maintenance_task.id'], name=op.f('fk_moderation_finding_task_id_maintenance_task'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moderation_finding')),
    sa.UniqueConstraint('rule_key', 'trigger', name='uq_moderation_finding_trigger')
    )
    with op.batch_alter_table('moderation_finding', schema=None) as batch_op:
        batch_op.create_index('ix_moderation_finding_at', ['occurred_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_moderation_finding_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index('ix_moderation_finding_group_at', ['group_chat_id', 'occurred_at', 'id'], unique=False)
        batch_op.create_index('ix_moderation_finding_member', ['member_userid', 'rule_id', 'status'], unique=False)

    op.create_table('moderation_blacklist',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('userid', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('appeal', sa.String(length=500), nullable=False),
    sa.Column('appealed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pardon_reason', sa.String(length=255), nullable=False),
    sa.Column('pardoned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pardoned_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_moderation_blacklist_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['finding_id'], ['moderation_finding.id'], name=op.f('fk_moderation_blacklist_finding_id_moderation_finding'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['pardoned_by_id'], ['user.id'], name=op.f('fk_moderation_blacklist_pardoned_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moderation_blacklist')),
    sa.UniqueConstraint('userid', name=op.f('uq_moderation_blacklist_userid'))
    )
    with op.batch_alter_table('moderation_blacklist', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_moderation_blacklist_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_moderation_blacklist_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('moderation_blacklist', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_moderation_blacklist_status'))
        batch_op.drop_index(batch_op.f('ix_moderation_blacklist_customer_id'))

    op.drop_table('moderation_blacklist')
    with op.batch_alter_table('moderation_finding', schema=None) as batch_op:
        batch_op.drop_index('ix_moderation_finding_member')
        batch_op.drop_index('ix_moderation_finding_group_at')
        batch_op.drop_index(batch_op.f('ix_moderation_finding_customer_id'))
        batch_op.drop_index('ix_moderation_finding_at')

    op.drop_table('moderation_finding')
    with op.batch_alter_table('moderation_rule', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_moderation_rule_status'))

    op.drop_table('moderation_rule')
    op.drop_table('moderation_whitelist')
    op.drop_table('moderation_cursor')
