"""The send-quota ledger's open reservations indexed on their own (target kind, target, day): a quota check
counts a period from the index alone, without reading each row for ``released_at``

Revision ID: 0052
Revises: 0053
Create Date: 2026-12-05 15:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0052'
down_revision: str | None = '0053'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_send_ledger_open', 'send_ledger', ['target_kind', 'target_id', 'day'], unique=False,
                    postgresql_where=sa.text('released_at IS NULL'), sqlite_where=sa.text('released_at IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_send_ledger_open', table_name='send_ledger')
