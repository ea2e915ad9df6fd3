"""朋友圈 calendar: columns (栏目), posts and interactions read back; maintenance tasks without a customer
(kind moment: a personal account's post to publish by hand)

Revision ID: 0035
Revises: 0033
Create Date: 2026-12-05 09:11:37.887393
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0035'
down_revision: str | None = '0033'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('moment_column',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('module', sa.String(length=16), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moment_column')),
    sa.UniqueConstraint('name', name=op.f('uq_moment_column_name'))
    )
    op.create_table('moment_post',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('module', sa.String(length=16), nullable=False),
    sa.Column('column_id', sa.Integer(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('images', sa.JSON(), nullable=False),
    sa.Column('tag_ids', sa.JSON(), nullable=False),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('jobid', sa.String(length=64), nullable=False),
    sa.Column('moment_id', sa.String(length=64), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.String(length=255), nullable=False),
    sa.Column('audience', sa.Integer(), nullable=False),
    sa.Column('reach', sa.Integer(), nullable=False),
    sa.Column('likes', sa.Integer(), nullable=False),
    sa.Column('comments', sa.Integer(), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('posted_by_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_moment_post_account_id_account'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['column_id'], ['moment_column.id'], name=op.f('fk_moment_post_column_id_moment_column'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_moment_post_created_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['posted_by_id'], ['user.id'], name=op.f('fk_moment_post_posted_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['maintenance_task.id'], name=op.f('fk_moment_post_task_id_maintenance_task'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moment_post'))
    )
    with op.batch_alter_table('moment_post', schema=None) as batch_op:
        batch_op.create_index('ix_moment_post_account_at', ['account_id', 'scheduled_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_moment_post_moment_id'), ['moment_id'], unique=False)
        batch_op.create_index('ix_moment_post_status_at', ['status', 'scheduled_at'], unique=False)

    op.create_table('moment_interaction',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('external_userid', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_moment_interaction_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['post_id'], ['moment_post.id'], name=op.f('fk_moment_interaction_post_id_moment_post'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['touch_id'], ['touch.id'], name=op.f('fk_moment_interaction_touch_id_touch'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moment_interaction')),
    sa.UniqueConstraint('post_id', 'kind', 'external_userid', 'occurred_at', name='uq_moment_interaction_key')
    )
    with op.batch_alter_table('moment_interaction', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_moment_interaction_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_moment_interaction_post_id'), ['post_id'], unique=False)

    with op.batch_alter_table('maintenance_task', schema=None) as batch_op:
        batch_op.alter_column('customer_id',
               existing_type=sa.INTEGER(),
               nullable=True)



def downgrade() -> None:
    with op.batch_alter_table('maintenance_task', schema=None) as batch_op:
        batch_op.alter_column('customer_id',
               existing_type=sa.INTEGER(),
               nullable=False)

    with op.batch_alter_table('moment_interaction', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_moment_interaction_post_id'))
        batch_op.drop_index(batch_op.f('ix_moment_interaction_customer_id'))

    op.drop_table('moment_interaction')
    with op.batch_alter_table('moment_post', schema=None) as batch_op:
        batch_op.drop_index('ix_moment_post_status_at')
        batch_op.drop_index(batch_op.f('ix_moment_post_moment_id'))
        batch_op.drop_index('ix_moment_post_account_at')

    op.drop_table('moment_post')
    op.drop_table('moment_column')
