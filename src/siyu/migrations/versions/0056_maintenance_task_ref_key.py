"""Maintenance tasks: a campaign's task stays apart from another campaign's of the same day (ref_key)

The unique key (customer, account, kind, day) kept one 群发 task per customer and day, so a second campaign
of the day to a personal account's customer made no task and its recipient waited forever. ``ref_key`` joins
the key: the campaign id for campaign tasks (``maintenance.models.APART_KINDS``), 0 for every other kind, so
those keep one task per customer, account and day as before.

Downgrade: the old key allows one campaign task per customer and day; the later ones are deleted.

Revision ID: 0056
Revises: 0055
Create Date: 2026-12-05 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0056'
down_revision: str | None = '0055'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KEY = ['customer_id', 'account_id', 'kind', 'day']


def upgrade() -> None:
    with op.batch_alter_table('maintenance_task') as batch:
        batch.add_column(sa.Column('ref_key', sa.Integer(), nullable=False, server_default='0'))
    op.execute("UPDATE maintenance_task SET ref_key = ref_id WHERE kind = 'campaign' AND ref_id IS NOT NULL")
    with op.batch_alter_table('maintenance_task') as batch:
        batch.drop_constraint('uq_maintenance_task_key', type_='unique')
        batch.create_unique_constraint('uq_maintenance_task_key', [*OLD_KEY, 'ref_key'])


def downgrade() -> None:
    op.execute("DELETE FROM maintenance_task WHERE kind = 'campaign' AND id NOT IN ("
               "SELECT min(id) FROM maintenance_task WHERE kind = 'campaign' "
               "GROUP BY customer_id, account_id, day)")
    with op.batch_alter_table('maintenance_task') as batch:
        batch.drop_constraint('uq_maintenance_task_key', type_='unique')
        batch.create_unique_constraint('uq_maintenance_task_key', OLD_KEY)
        batch.drop_column('ref_key')
