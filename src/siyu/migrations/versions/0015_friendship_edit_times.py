"""friendship: when Siyu last edited its remark fields, and when they last reached WeCom

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-25 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('friendship', schema=None) as batch_op:
        batch_op.add_column(sa.Column('siyu_edited_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('wecom_written_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('friendship', schema=None) as batch_op:
        batch_op.drop_column('wecom_written_at')
        batch_op.drop_column('siyu_edited_at')
