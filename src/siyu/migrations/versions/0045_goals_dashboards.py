"""Goals (SMART goals and sub-goals) and the admin dashboard's precomputed figures

Revision ID: 0045
Revises: 0047
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0045'
down_revision: str | None = '0047'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'goal',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('metric', sa.String(length=32), nullable=False),
        sa.Column('scope_kind', sa.String(length=16), nullable=False),
        sa.Column('scope_id', sa.Integer(), nullable=True),
        sa.Column('scope_text', sa.String(length=24), nullable=False),
        sa.Column('target', sa.Float(), nullable=False),
        sa.Column('start', sa.Date(), nullable=False),
        sa.Column('deadline', sa.Date(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('parent_id', sa.Integer(), nullable=True),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['owner_id'], ['user.id'], name=op.f('fk_goal_owner_id_user'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['parent_id'], ['goal.id'], name=op.f('fk_goal_parent_id_goal'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['created_by'], ['user.id'], name=op.f('fk_goal_created_by_user'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_goal')),
    )
    op.create_index('ix_goal_owner', 'goal', ['owner_id'], unique=False)
    op.create_index('ix_goal_parent', 'goal', ['parent_id'], unique=False)
    op.create_table(
        'dashboard_figure',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('value', sa.Float(), nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_figure')),
        sa.UniqueConstraint('name', 'day', name=op.f('uq_dashboard_figure_name_day')),
    )


def downgrade() -> None:
    op.drop_table('dashboard_figure')
    op.drop_index('ix_goal_parent', table_name='goal')
    op.drop_index('ix_goal_owner', table_name='goal')
    op.drop_table('goal')
