"""Audit entries keep the actor's display name and the object's name as they were when written

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-05 07:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0030'
down_revision: str | None = '0029'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actor_name', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('entity_name', sa.String(length=200), server_default='', nullable=False))
        batch_op.create_index('ix_audit_entry_user_at', ['user_id', 'at'], unique=False)
    # Entries written before: for these kinds the summary was the object's name (a channel alert's
    # summary, "name: alert", keeps only its name); the actor's name is the login name it stored.
    op.execute(sa.text(
        "UPDATE audit_entry SET entity_name = substr(summary, 1, 200) WHERE entity_type IN "
        "('user', 'account', 'customer', 'customer_tags', 'tag_group', 'tag', 'custom_field', 'channel', "
        "'autoreply_rule', 'incident', 'address', 'attachment', 'touch') AND action NOT IN ('alert', 'pause', 'merge', "
        "'unmerge') AND summary NOT LIKE '%: +%'"))
    op.execute(sa.text("UPDATE audit_entry SET actor_name = actor"))


def downgrade() -> None:
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_user_at')
        batch_op.drop_column('entity_name')
        batch_op.drop_column('actor_name')
