"""公众号: pushes stored in one write (mp_inbound) and ingested by a job; the nonce table folded into it

Revision ID: 0025
Revises: 0023
Create Date: 2026-12-05 06:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0025'
down_revision: str | None = '0023'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'mp_inbound',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('dedup_key', sa.String(length=128), nullable=False),
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('openid', sa.String(length=64), nullable=False),
        sa.Column('fields', sa.JSON(), nullable=False),
        sa.Column('reply_mode', sa.String(length=8), nullable=False),
        sa.Column('reply', sa.Text(), nullable=False),
        sa.Column('rule_version_id', sa.Integer(), nullable=True),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('error', sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_mp_inbound_account_id_account'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_mp_inbound')),
        sa.UniqueConstraint('account_id', 'dedup_key', name=op.f('uq_mp_inbound_account_id_dedup_key')),
        sa.UniqueConstraint('nonce', name=op.f('uq_mp_inbound_nonce')),
    )
    op.create_index(op.f('ix_mp_inbound_openid'), 'mp_inbound', ['openid'])
    op.create_index(op.f('ix_mp_inbound_ingested_at'), 'mp_inbound', ['ingested_at'])
    op.create_index('ix_mp_inbound_pending_reply', 'mp_inbound', ['rule_version_id'],
                    sqlite_where=sa.text('ingested_at IS NULL AND rule_version_id IS NOT NULL'),
                    postgresql_where=sa.text('ingested_at IS NULL AND rule_version_id IS NOT NULL'))
    # Nonces live on the stored pushes now (a replay is refused by mp_inbound's unique nonce).
    op.drop_index('ix_mp_nonce_seen_at', table_name='mp_nonce')
    op.drop_table('mp_nonce')


def downgrade() -> None:
    op.create_table(
        'mp_nonce',
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('dedup_key', sa.String(length=160), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('nonce'),
    )
    op.create_index('ix_mp_nonce_seen_at', 'mp_nonce', ['seen_at'])
    op.drop_index('ix_mp_inbound_pending_reply', table_name='mp_inbound')
    op.drop_index(op.f('ix_mp_inbound_ingested_at'), table_name='mp_inbound')
    op.drop_index(op.f('ix_mp_inbound_openid'), table_name='mp_inbound')
    op.drop_table('mp_inbound')
