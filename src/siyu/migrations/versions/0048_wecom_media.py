"""WeCom temporary material: media_ids of stored files, kept until shortly before they expire; SOP step runs
indexed by their task

Revision ID: 0048
Revises: 0043
Create Date: 2026-12-05 12:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0048'
down_revision: str | None = '0043'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'wecom_media',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('corp_id', sa.String(length=64), nullable=False),
        sa.Column('file_key', sa.String(length=200), nullable=False),
        sa.Column('media_type', sa.String(length=16), nullable=False),
        sa.Column('media_id', sa.String(length=128), nullable=False),
        sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wecom_media')),
        sa.UniqueConstraint('corp_id', 'file_key', 'media_type', name='uq_wecom_media_file'),
    )
    op.create_index('ix_sop_step_run_task', 'sop_step_run', ['task_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_sop_step_run_task', table_name='sop_step_run')
    op.drop_table('wecom_media')
