"""用户维系: cadence policies, next-due days, follow-ups, today's tasks

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-05 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0029'
down_revision: str | None = '0028'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'cadence_policy',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('conditions', sa.JSON(), nullable=True),
        sa.Column('every_days', sa.Integer(), nullable=False),
        sa.Column('quiet_days', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('matched', sa.Integer(), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_cadence_policy_created_by_id_user'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_cadence_policy')),
    )
    op.create_table(
        'cadence_due',
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('policy_id', sa.Integer(), nullable=False),
        sa.Column('next_due_on', sa.Date(), nullable=False),
        sa.Column('last_private_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_cadence_due_account_id_account'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_cadence_due_customer_id_customer'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['policy_id'], ['cadence_policy.id'],
                                name=op.f('fk_cadence_due_policy_id_cadence_policy'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('customer_id', 'account_id', name=op.f('pk_cadence_due')),
    )
    op.create_index('ix_cadence_due_account_due', 'cadence_due', ['account_id', 'next_due_on'], unique=False)
    op.create_index('ix_cadence_due_due', 'cadence_due', ['next_due_on'], unique=False)
    op.create_index(op.f('ix_cadence_due_policy_id'), 'cadence_due', ['policy_id'], unique=False)
    op.create_table(
        'follow_up',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('due_on', sa.Date(), nullable=False),
        sa.Column('note', sa.String(length=255), nullable=False),
        sa.Column('done', sa.Boolean(), nullable=False),
        sa.Column('touch_id', sa.Integer(), nullable=True),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_follow_up_account_id_account'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_follow_up_created_by_id_user'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_follow_up_customer_id_customer'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['touch_id'], ['touch.id'], name=op.f('fk_follow_up_touch_id_touch'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_follow_up')),
    )
    op.create_index('ix_follow_up_due', 'follow_up', ['due_on', 'done'], unique=False)
    op.create_index(op.f('ix_follow_up_customer_id'), 'follow_up', ['customer_id'], unique=False)
    op.create_table(
        'maintenance_task',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('operator_id', sa.Integer(), nullable=True),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('overdue_days', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('detail', sa.String(length=255), nullable=False),
        sa.Column('ref_id', sa.Integer(), nullable=True),
        sa.Column('snoozed_until', sa.Date(), nullable=True),
        sa.Column('skip_reason', sa.String(length=255), nullable=False),
        sa.Column('touch_id', sa.Integer(), nullable=True),
        sa.Column('finished_by_id', sa.Integer(), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_maintenance_task_account_id_account'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'],
                                name=op.f('fk_maintenance_task_customer_id_customer'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['finished_by_id'], ['user.id'], name=op.f('fk_maintenance_task_finished_by_id_user'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['operator_id'], ['user.id'], name=op.f('fk_maintenance_task_operator_id_user'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['touch_id'], ['touch.id'], name=op.f('fk_maintenance_task_touch_id_touch'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_maintenance_task')),
        sa.UniqueConstraint('customer_id', 'account_id', 'kind', 'day', name='uq_maintenance_task_key'),
    )
    op.create_index('ix_maintenance_task_account_day', 'maintenance_task', ['account_id', 'day', 'status', 'priority'],
                    unique=False)
    op.create_index('ix_maintenance_task_operator_day', 'maintenance_task', ['operator_id', 'day', 'status'],
                    unique=False)
    op.create_index('ix_maintenance_task_customer_status', 'maintenance_task', ['customer_id', 'status'],
                    unique=False)
    op.create_table(
        'maintenance_settings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('generate_hour', sa.Integer(), nullable=False),
        sa.Column('generate_minute', sa.Integer(), nullable=False),
        sa.Column('cap_per_operator', sa.Integer(), nullable=False),
        sa.Column('last_generated_on', sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_maintenance_settings')),
    )


def downgrade() -> None:
    op.drop_table('maintenance_settings')
    op.drop_index('ix_maintenance_task_customer_status', table_name='maintenance_task')
    op.drop_index('ix_maintenance_task_operator_day', table_name='maintenance_task')
    op.drop_index('ix_maintenance_task_account_day', table_name='maintenance_task')
    op.drop_table('maintenance_task')
    op.drop_index(op.f('ix_follow_up_customer_id'), table_name='follow_up')
    op.drop_index('ix_follow_up_due', table_name='follow_up')
    op.drop_table('follow_up')
    op.drop_index(op.f('ix_cadence_due_policy_id'), table_name='cadence_due')
    op.drop_index('ix_cadence_due_due', table_name='cadence_due')
    op.drop_index('ix_cadence_due_account_due', table_name='cadence_due')
    op.drop_table('cadence_due')
    op.drop_table('cadence_policy')
