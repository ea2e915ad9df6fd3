"""Orders, products, order sources and customers' purchase facts; purchase touches become orders

Revision ID: 0027
Revises: 0023
Create Date: 2026-12-05 06:41:01.037685
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0027'
down_revision: str | None = '0023'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('order_source',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('app_id', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_received_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_source')),
    sa.UniqueConstraint('key', name=op.f('uq_order_source_key'))
    )
    op.create_table('product',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('price', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('launched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_product')),
    sa.UniqueConstraint('sku', name=op.f('uq_product_sku'))
    )
    with op.batch_alter_table('product', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_product_category'), ['category'], unique=False)

    op.create_table('order_webhook_receipt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('signature', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['source_id'], ['order_source.id'], name=op.f('fk_order_webhook_receipt_source_id_order_source'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_webhook_receipt')),
    sa.UniqueConstraint('source_id', 'signature', name=op.f('uq_order_webhook_receipt_source_id_signature'))
    )
    with op.batch_alter_table('order_webhook_receipt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_webhook_receipt_received_at'), ['received_at'], unique=False)

    op.create_table('customer_purchase_facts',
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('purchase_count', sa.Integer(), nullable=False),
    sa.Column('total_spent', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('avg_order_value', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('refunded_total', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('first_purchase_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_purchase_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('favourite_category', sa.String(length=64), nullable=False),
    sa.Column('new_launch_purchases', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_customer_purchase_facts_customer_id_customer'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_customer_purchase_facts'))
    )
    with op.batch_alter_table('customer_purchase_facts', schema=None) as batch_op:
        batch_op.create_index('ix_customer_purchase_facts_count', ['purchase_count'], unique=False)
        batch_op.create_index('ix_customer_purchase_facts_last', ['last_purchase_at'], unique=False)
        batch_op.create_index('ix_customer_purchase_facts_total', ['total_spent'], unique=False)

    op.create_table('customer_order',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('order_no', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('match_state', sa.String(length=16), nullable=False),
    sa.Column('matched_by', sa.String(length=16), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('channel_id', sa.Integer(), nullable=True),
    sa.Column('store', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('discount', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('coupon_code', sa.String(length=64), nullable=False),
    sa.Column('refunded_amount', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('buyer_name', sa.String(length=64), nullable=False),
    sa.Column('buyer_phone', sa.String(length=32), nullable=False),
    sa.Column('buyer_unionid', sa.String(length=64), nullable=False),
    sa.Column('buyer_external_userid', sa.String(length=64), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('shipped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refunded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('note', sa.String(length=255), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_customer_order_account_id_account'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], name=op.f('fk_customer_order_channel_id_channel'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_customer_order_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['touch_id'], ['touch.id'], name=op.f('fk_customer_order_touch_id_touch'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_order')),
    sa.UniqueConstraint('source', 'order_no', name=op.f('uq_customer_order_source_order_no')),
    sa.UniqueConstraint('touch_id', name=op.f('uq_customer_order_touch_id'))
    )
    with op.batch_alter_table('customer_order', schema=None) as batch_op:
        batch_op.create_index('ix_customer_order_account_paid', ['account_id', 'paid_at'], unique=False)
        batch_op.create_index('ix_customer_order_channel_paid', ['channel_id', 'paid_at'], unique=False)
        batch_op.create_index('ix_customer_order_customer_paid', ['customer_id', 'paid_at'], unique=False)
        batch_op.create_index('ix_customer_order_paid', ['paid_at'], unique=False)
        batch_op.create_index('ix_customer_order_unmatched', ['created_at'], unique=False, postgresql_where=sa.text("match_state = 'unmatched'"), sqlite_where=sa.text("match_state = 'unmatched'"))

    op.create_table('order_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=True),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('price', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_order_line_customer_id_customer'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['order_id'], ['customer_order.id'], name=op.f('fk_order_line_order_id_customer_order'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['product_id'], ['product.id'], name=op.f('fk_order_line_product_id_product'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_line'))
    )
    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.create_index('ix_order_line_category_paid', ['category', 'paid_at', 'customer_id'], unique=False)
        batch_op.create_index('ix_order_line_customer', ['customer_id', 'paid_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_order_line_order_id'), ['order_id'], unique=False)
        batch_op.create_index('ix_order_line_product_paid', ['product_id', 'paid_at', 'customer_id'], unique=False)

    migrate_purchase_touches(op.get_bind())


# Purchase touches typed before orders existed become orders of the source "console", numbered
# "touch-<touch id>" and linked by touch_id, so running this again finds them and adds nothing.
TOUCH_ORDERS = sa.text("""
    INSERT INTO customer_order (source, order_no, customer_id, match_state, matched_by, account_id, store,
        status, amount, discount, coupon_code, refunded_amount, buyer_name, buyer_phone, buyer_unionid,
        buyer_external_userid, paid_at, note, touch_id, created_at, updated_at)
    SELECT 'console', 'touch-' || CAST(t.id AS VARCHAR(20)), t.customer_id, 'matched', 'touch', t.account_id, '',
        'paid', t.amount, 0, '', 0, '', '', '', '', t.occurred_at, SUBSTR(COALESCE(t.content, ''), 1, 255), t.id,
        t.created_at, t.created_at
    FROM touch t
    WHERE t.kind = 'purchase' AND t.amount IS NOT NULL AND t.amount >= 0
      AND NOT EXISTS (SELECT 1 FROM customer_order o WHERE o.touch_id = t.id)
      AND NOT EXISTS (SELECT 1 FROM customer_order o WHERE o.source = 'console'
                      AND o.order_no = 'touch-' || CAST(t.id AS VARCHAR(20)))
""")
# The channel a migrated order's customer first came through (the channel report's revenue).
TOUCH_ORDER_CHANNELS = sa.text("""
    UPDATE customer_order SET channel_id = (
        SELECT a.channel_id FROM channel_add a WHERE a.customer_id = customer_order.customer_id
        ORDER BY a.first_touch DESC, a.added_at, a.id LIMIT 1)
    WHERE touch_id IS NOT NULL AND channel_id IS NULL AND customer_id IS NOT NULL
""")
# Facts of every customer with an order, from scratch (no lines: favourite category stays empty).
CLEAR_FACTS = sa.text("""
    DELETE FROM customer_purchase_facts
    WHERE customer_id IN (SELECT customer_id FROM customer_order WHERE customer_id IS NOT NULL)
""")
WRITE_FACTS = sa.text("""
    INSERT INTO customer_purchase_facts (customer_id, purchase_count, total_spent, avg_order_value, refunded_total,
        first_purchase_at, last_purchase_at, favourite_category, new_launch_purchases, updated_at)
    SELECT customer_id, COUNT(*) FILTER (WHERE status <> 'refunded'), SUM(amount - refunded_amount),
        CASE WHEN COUNT(*) FILTER (WHERE status <> 'refunded') > 0
             THEN ROUND(SUM(amount - refunded_amount) / COUNT(*) FILTER (WHERE status <> 'refunded'), 2)
             ELSE 0 END,
        SUM(refunded_amount), MIN(paid_at), MAX(paid_at), '', 0, CURRENT_TIMESTAMP
    FROM customer_order WHERE customer_id IS NOT NULL AND match_state = 'matched'
    GROUP BY customer_id
""")


def migrate_purchase_touches(bind: sa.Connection) -> dict[str, int]:
    """Purchase touches into orders, once; prints a report (Alembic's log) and returns it."""
    purchase_touches = bind.execute(sa.text("SELECT COUNT(*) FROM touch WHERE kind = 'purchase'")).scalar_one()
    before = bind.execute(sa.text("SELECT COUNT(*) FROM customer_order WHERE touch_id IS NOT NULL")).scalar_one()
    created = bind.execute(TOUCH_ORDERS).rowcount or 0
    bind.execute(TOUCH_ORDER_CHANNELS)
    bind.execute(CLEAR_FACTS)
    bind.execute(WRITE_FACTS)
    skipped = bind.execute(sa.text(
        "SELECT COUNT(*) FROM touch WHERE kind = 'purchase' AND (amount IS NULL OR amount < 0)")).scalar_one()
    report = {"purchase_touches": int(purchase_touches), "orders_created": int(created),
              "already_orders": int(before), "skipped_without_amount": int(skipped)}
    logging.getLogger("alembic.runtime.migration").info("0027 purchase touches → orders: %s", report)
    return report


def downgrade() -> None:
    with op.batch_alter_table('order_line', schema=None) as batch_op:
        batch_op.drop_index('ix_order_line_product_paid')
        batch_op.drop_index(batch_op.f('ix_order_line_order_id'))
        batch_op.drop_index('ix_order_line_customer')
        batch_op.drop_index('ix_order_line_category_paid')

    op.drop_table('order_line')
    with op.batch_alter_table('customer_order', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_order_unmatched', postgresql_where=sa.text("match_state = 'unmatched'"), sqlite_where=sa.text("match_state = 'unmatched'"))
        batch_op.drop_index('ix_customer_order_paid')
        batch_op.drop_index('ix_customer_order_customer_paid')
        batch_op.drop_index('ix_customer_order_channel_paid')
        batch_op.drop_index('ix_customer_order_account_paid')

    op.drop_table('customer_order')
    with op.batch_alter_table('customer_purchase_facts', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_purchase_facts_total')
        batch_op.drop_index('ix_customer_purchase_facts_last')
        batch_op.drop_index('ix_customer_purchase_facts_count')

    op.drop_table('customer_purchase_facts')
    with op.batch_alter_table('order_webhook_receipt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_order_webhook_receipt_received_at'))

    op.drop_table('order_webhook_receipt')
    with op.batch_alter_table('product', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_product_category'))

    op.drop_table('product')
    op.drop_table('order_source')
