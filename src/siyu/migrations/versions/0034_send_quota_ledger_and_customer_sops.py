"""The send-quota ledger (per customer and group, per period) and customer SOPs (versions, enrolments, step runs)

Revision ID: 0034
Revises: 0035
Create Date: 2026-12-05 09:11:04.305058
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0034'
down_revision: str | None = '0035'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

def upgrade() -> None:
    op.create_table('send_ledger',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_kind', sa.String(length=8), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.String(length=64), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_send_ledger'))
    )
    with op.batch_alter_table('send_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_send_ledger_source_ref', ['source', 'ref'], unique=False)
        batch_op.create_index('ix_send_ledger_target_day', ['target_kind', 'target_id', 'day'], unique=False)

    op.create_table('send_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('quota_mode', sa.String(length=8), nullable=False),
    sa.Column('lock_seq', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_send_settings'))
    )
    op.create_table('sop',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_sop_created_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sop'))
    )
    op.create_table('sop_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sop_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.JSON(), nullable=False),
    sa.Column('conditions', sa.JSON(), nullable=True),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('exits', sa.JSON(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_sop_version_created_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sop_id'], ['sop.id'], name=op.f('fk_sop_version_sop_id_sop'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sop_version')),
    sa.UniqueConstraint('sop_id', 'number', name='uq_sop_version_number')
    )
    with op.batch_alter_table('sop_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sop_version_sop_id'), ['sop_id'], unique=False)

    op.create_table('sop_enrolment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sop_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('occurrence', sa.String(length=32), nullable=False),
    sa.Column('anchor_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('exit_reason', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_sop_enrolment_account_id_account'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_sop_enrolment_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sop_id'], ['sop.id'], name=op.f('fk_sop_enrolment_sop_id_sop'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['sop_version.id'], name=op.f('fk_sop_enrolment_version_id_sop_version'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sop_enrolment')),
    sa.UniqueConstraint('sop_id', 'customer_id', 'occurrence', name='uq_sop_enrolment_key')
    )
    with op.batch_alter_table('sop_enrolment', schema=None) as batch_op:
        batch_op.create_index('ix_sop_enrolment_account_sop', ['account_id', 'sop_id'], unique=False)
        batch_op.create_index('ix_sop_enrolment_customer_status', ['customer_id', 'status'], unique=False)
        batch_op.create_index('ix_sop_enrolment_sop_status', ['sop_id', 'status'], unique=False)

    op.create_table('sop_step_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrolment_id', sa.Integer(), nullable=False),
    sa.Column('sop_id', sa.Integer(), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.String(length=255), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('msgid', sa.String(length=64), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ran_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['enrolment_id'], ['sop_enrolment.id'], name=op.f('fk_sop_step_run_enrolment_id_sop_enrolment'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sop_id'], ['sop.id'], name=op.f('fk_sop_step_run_sop_id_sop'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['maintenance_task.id'], name=op.f('fk_sop_step_run_task_id_maintenance_task'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sop_step_run')),
    sa.UniqueConstraint('enrolment_id', 'step_index', 'seq', name='uq_sop_step_run_key')
    )
    with op.batch_alter_table('sop_step_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sop_step_run_sop_id'), ['sop_id'], unique=False)
        batch_op.create_index('ix_sop_step_run_status_due', ['status', 'due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sop_step_run', schema=None) as batch_op:
        batch_op.drop_index('ix_sop_step_run_status_due')
        batch_op.drop_index(batch_op.f('ix_sop_step_run_sop_id'))

    op.drop_table('sop_step_run')
    with op.batch_alter_table('sop_enrolment', schema=None) as batch_op:
        batch_op.drop_index('ix_sop_enrolment_sop_status')
        batch_op.drop_index('ix_sop_enrolment_customer_status')
        batch_op.drop_index('ix_sop_enrolment_account_sop')

    op.drop_table('sop_enrolment')
    with op.batch_alter_table('sop_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sop_version_sop_id'))

    op.drop_table('sop_version')
    op.drop_table('sop')
    op.drop_table('send_settings')
    with op.batch_alter_table('send_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_send_ledger_target_day')
        batch_op.drop_index('ix_send_ledger_source_ref')

    op.drop_table('send_ledger')
