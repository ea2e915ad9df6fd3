"""Audit entries keep the actor's display name and the object's name as they were when written

Revision ID: 0030
Revises: 0023
Create Date: 2026-12-05 07:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0030'
down_revision: str | None = '0023'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actor_name', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('entity_name', sa.String(length=200), server_default='', nullable=False))
        batch_op.create_index('ix_audit_entry_user_at', ['user_id', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_user_at')
        batch_op.drop_column('entity_name')
        batch_op.drop_column('actor_name')
