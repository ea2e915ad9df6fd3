"""Offline events (线下活动): events, sign-ups with a waiting list and check-in, invitations

Revision ID: 0044
Revises: 0038
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0044'
down_revision: str | None = '0038'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('offline_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('place', sa.String(length=255), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('seats_taken', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('invite_text', sa.String(length=255), nullable=False),
    sa.Column('attended_text', sa.String(length=255), nullable=False),
    sa.Column('no_show_text', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('account_ids', sa.JSON(), nullable=False),
    sa.Column('public_nonce', sa.String(length=16), nullable=False),
    sa.Column('followed_up_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_offline_event_created_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offline_event'))
    )
    with op.batch_alter_table('offline_event', schema=None) as batch_op:
        batch_op.create_index('ix_offline_event_starts', ['starts_at'], unique=False)

    op.create_table('offline_invitation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('invited_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_offline_invitation_account_id_account'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_offline_invitation_customer_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['event_id'], ['offline_event.id'], name=op.f('fk_offline_invitation_event_id_offline_event'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['invited_by_id'], ['user.id'], name=op.f('fk_offline_invitation_invited_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offline_invitation')),
    sa.UniqueConstraint('event_id', 'customer_id', name='uq_offline_invitation')
    )
    with op.batch_alter_table('offline_invitation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_offline_invitation_customer_id'), ['customer_id'], unique=False)

    op.create_table('offline_signup',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('ticket', sa.String(length=32), nullable=False),
    sa.Column('checked_in_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('checked_in_by_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_offline_signup_account_id_account'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['checked_in_by_id'], ['user.id'], name=op.f('fk_offline_signup_checked_in_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_offline_signup_created_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_offline_signup_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['event_id'], ['offline_event.id'], name=op.f('fk_offline_signup_event_id_offline_event'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offline_signup')),
    sa.UniqueConstraint('event_id', 'customer_id', name='uq_offline_signup_customer'),
    sa.UniqueConstraint('event_id', 'phone', name='uq_offline_signup_phone'),
    sa.UniqueConstraint('ticket', name=op.f('uq_offline_signup_ticket'))
    )
    with op.batch_alter_table('offline_signup', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_offline_signup_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index('ix_offline_signup_event_status', ['event_id', 'status', 'id'], unique=False)


def downgrade() -> None:

    with op.batch_alter_table('offline_signup', schema=None) as batch_op:
        batch_op.drop_index('ix_offline_signup_event_status')
        batch_op.drop_index(batch_op.f('ix_offline_signup_customer_id'))

    op.drop_table('offline_signup')
    with op.batch_alter_table('offline_invitation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offline_invitation_customer_id'))

    op.drop_table('offline_invitation')
    with op.batch_alter_table('offline_event', schema=None) as batch_op:
        batch_op.drop_index('ix_offline_event_starts')

    op.drop_table('offline_event')

