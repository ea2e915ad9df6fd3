"""customer merge records and the full-text search index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 03:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('customer_merge',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('source_ids', sa.JSON(), nullable=False),
    sa.Column('choices', sa.JSON(), nullable=False),
    sa.Column('moves', sa.JSON(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('undone_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_customer_merge_created_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['target_id'], ['customer.id'], name=op.f('fk_customer_merge_target_id_customer'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['undone_by_id'], ['user.id'], name=op.f('fk_customer_merge_undone_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_merge'))
    )
    op.create_index(op.f('ix_customer_merge_created_at'), 'customer_merge', ['created_at'], unique=False)
    op.create_index(op.f('ix_customer_merge_target_id'), 'customer_merge', ['target_id'], unique=False)

    # The search index (see siyu/customers/search.py): FTS5 on SQLite, text[] + GIN on
    # PostgreSQL. Not an ORM table: `siyu init` fills it for customers that predate it.
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("CREATE VIRTUAL TABLE customer_search USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0', detail = none)")
    else:
        op.execute("CREATE TABLE customer_search (customer_id integer PRIMARY KEY REFERENCES customer (id) ON DELETE CASCADE, terms text[] NOT NULL)")
        op.execute("CREATE INDEX ix_customer_search_terms ON customer_search USING gin (terms)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS customer_search")
    op.drop_index(op.f('ix_customer_merge_target_id'), table_name='customer_merge')
    op.drop_index(op.f('ix_customer_merge_created_at'), table_name='customer_merge')
    op.drop_table('customer_merge')
