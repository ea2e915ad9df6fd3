"""话术库 and 素材库: library items (scripts and materials), their tags and uses; a channel's welcome script and materials

Revision ID: 0033
Revises: 0039
Create Date: 2026-12-05 09:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0033'
down_revision: str | None = '0039'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('library_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=128), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('appid', sa.String(length=64), nullable=False),
    sa.Column('pagepath', sa.String(length=255), nullable=False),
    sa.Column('file_key', sa.String(length=200), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('cover_key', sa.String(length=200), nullable=False),
    sa.Column('cover_type', sa.String(length=100), nullable=False),
    sa.Column('use_count', sa.Integer(), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['user.id'], name=op.f('fk_library_item_created_by_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_library_item'))
    )
    with op.batch_alter_table('library_item', schema=None) as batch_op:
        batch_op.create_index('ix_library_item_list', ['kind', 'status', 'id'], unique=False)
        batch_op.create_index('ix_library_item_status', ['status', 'id'], unique=False)

    op.create_table('library_item_tag',
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['library_item.id'], name=op.f('fk_library_item_tag_item_id_library_item'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', 'tag', name=op.f('pk_library_item_tag'))
    )
    with op.batch_alter_table('library_item_tag', schema=None) as batch_op:
        batch_op.create_index('ix_library_item_tag_tag', ['tag', 'item_id'], unique=False)

    op.create_table('library_use',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('place', sa.String(length=16), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_library_use_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['item_id'], ['library_item.id'], name=op.f('fk_library_use_item_id_library_item'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_library_use_user_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_library_use'))
    )
    with op.batch_alter_table('library_use', schema=None) as batch_op:
        batch_op.create_index('ix_library_use_item', ['item_id', 'used_at'], unique=False)

    with op.batch_alter_table('channel', schema=None) as batch_op:
        batch_op.add_column(sa.Column('welcome_script_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('welcome_material_ids', sa.JSON(), server_default='[]', nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_channel_welcome_script_id_library_item'), 'library_item', ['welcome_script_id'], ['id'], ondelete='SET NULL')



def downgrade() -> None:
    with op.batch_alter_table('channel', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_channel_welcome_script_id_library_item'), type_='foreignkey')
        batch_op.drop_column('welcome_material_ids')
        batch_op.drop_column('welcome_script_id')

    with op.batch_alter_table('library_use', schema=None) as batch_op:
        batch_op.drop_index('ix_library_use_item')

    op.drop_table('library_use')
    with op.batch_alter_table('library_item_tag', schema=None) as batch_op:
        batch_op.drop_index('ix_library_item_tag_tag')

    op.drop_table('library_item_tag')
    with op.batch_alter_table('library_item', schema=None) as batch_op:
        batch_op.drop_index('ix_library_item_status')
        batch_op.drop_index('ix_library_item_list')

    op.drop_table('library_item')
