"""Console editing: a personal account's own QR image and its expiry; retired custom fields

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-05 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0038'
down_revision: str | None = '0037'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('qr_image_url', sa.String(length=512), server_default='', nullable=False))
        batch_op.add_column(sa.Column('qr_expires_on', sa.Date(), nullable=True))
    with op.batch_alter_table('custom_field', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('custom_field', schema=None) as batch_op:
        batch_op.drop_column('retired_at')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_column('qr_expires_on')
        batch_op.drop_column('qr_image_url')
