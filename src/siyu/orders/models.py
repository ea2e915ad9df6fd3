"""Orders, products and the purchase facts they give each customer (用户转化).

Why it is shaped this way: orders arrive from several places (a file import, the API, a shop
system's webhook, the console) and the same order may arrive more than once, so an order is
identified by its ``source`` and that source's ``order_no`` (unique together) and a repeat
updates it. An order may arrive before Siyu knows the buyer: ``customer_id`` is then empty and
``match_state`` is ``unmatched`` — the review queue an operator resolves.

What segments, RFM and the lifecycle ladder ask about a customer's purchases is kept in
``customer_purchase_facts`` (one row per customer who has ever had an order), written in the same
transaction as the order that changed them (``orders.service.refresh_facts``), so a list over a
million customers reads indexed columns instead of aggregating orders. ``order_line`` repeats
the order's ``customer_id`` and ``paid_at`` so "bought category X in the last N days" is one
index range scan.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from siyu.core.db import Base, UTCDateTime, utcnow


class OrderStatus(enum.StrEnum):
    paid = "paid"  # 已付款
    shipped = "shipped"  # 已发货
    completed = "completed"  # 已完成
    refunded = "refunded"  # 已退款 (whole order)
    partly_refunded = "partly_refunded"  # 部分退款


# Orders that count as a purchase: a wholly refunded order does not.
COUNTED_STATUSES = (OrderStatus.paid, OrderStatus.shipped, OrderStatus.completed, OrderStatus.partly_refunded)


class MatchState(enum.StrEnum):
    matched = "matched"  # customer_id set
    unmatched = "unmatched"  # in the review queue
    ignored = "ignored"  # an operator decided it belongs to nobody Siyu follows


class MatchedBy(enum.StrEnum):
    customer_id = "customer_id"  # the sender named Siyu's customer id
    unionid = "unionid"
    external_userid = "external_userid"  # WeCom external user id
    phone = "phone"
    name_phone = "name_phone"  # the order's own buyer name + phone (an address's recipient)
    manual = "manual"  # an operator matched it in the review queue
    created = "created"  # an operator created a customer from it
    touch = "touch"  # written from a purchase touch (console, or the 0027 migration)


class SourceKind(enum.StrEnum):
    generic = "generic"  # Siyu's documented JSON shape (docs: orders.webhook)
    youzan = "youzan"  # 有赞 trade push (orders.adapters.youzan)


# Sources every installation has: these never take webhooks (no secret), they name where an order came from.
IMPORT_SOURCE = "import"  # a CSV/XLSX file
CONSOLE_SOURCE = "console"  # typed in the console / a purchase touch


class Product(Base):
    """A product or SKU (商品): ``sku`` is the shop's own code, unique."""

    __tablename__ = "product"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(64), default="", index=True)
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    # When it went on sale: "bought a new launch within N days" (the 粉丝 rule) compares to this.
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OrderSource(Base):
    """Where orders come from. A webhook source has its own HMAC-SHA256 secret."""

    __tablename__ = "order_source"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(32), unique=True)  # the {source} in the webhook URL and order.source
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default=SourceKind.generic.value)
    secret: Mapped[str] = mapped_column(String(128), default="")  # empty: no webhook
    # The shop platform's own app id where its push names one (有赞: client_id), checked with the secret.
    app_id: Mapped[str] = mapped_column(String(64), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookReceipt(Base):
    """A signed webhook body already accepted: the same signature again is a replay, refused.

    Kept for the signature tolerance window and a margin (``orders.webhook.REPLAY_KEEP``).
    """

    __tablename__ = "order_webhook_receipt"
    __table_args__ = (UniqueConstraint("source_id", "signature"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("order_source.id", ondelete="CASCADE"))
    signature: Mapped[str] = mapped_column(String(64))  # hex HMAC-SHA256
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class Order(Base):
    __tablename__ = "customer_order"  # "order" is an SQL keyword
    __table_args__ = (
        UniqueConstraint("source", "order_no"),
        Index("ix_customer_order_customer_paid", "customer_id", "paid_at"),
        Index("ix_customer_order_paid", "paid_at"),
        Index("ix_customer_order_account_paid", "account_id", "paid_at"),
        Index("ix_customer_order_channel_paid", "channel_id", "paid_at"),
        # The review queue: only the few unmatched orders are in this index.
        Index("ix_customer_order_unmatched", "created_at", postgresql_where=text("match_state = 'unmatched'"),
              sqlite_where=text("match_state = 'unmatched'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32))  # order_source.key, or "import" / "console"
    order_no: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True)
    match_state: Mapped[str] = mapped_column(String(16), default=MatchState.matched.value)
    matched_by: Mapped[str] = mapped_column(String(16), default="")
    # The account (载体) that served the sale, if known: repurchase metrics per account; scoping.
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    # The acquisition channel (渠道活码) the customer came through, set when matched: the channel report.
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channel.id", ondelete="SET NULL"), nullable=True)
    store: Mapped[str] = mapped_column(String(64), default="")  # 门店/渠道 of sale as the sender names it
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.paid.value)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))  # amount paid (实付), after discount
    discount: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    coupon_code: Mapped[str] = mapped_column(String(64), default="")
    refunded_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    # The buyer as the order gives them (kept for matching and the review queue).
    buyer_name: Mapped[str] = mapped_column(String(64), default="")
    buyer_phone: Mapped[str] = mapped_column(String(32), default="")
    buyer_unionid: Mapped[str] = mapped_column(String(64), default="")
    buyer_external_userid: Mapped[str] = mapped_column(String(64), default="")
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime())
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    note: Mapped[str] = mapped_column(String(255), default="")
    # The purchase touch this order was written from (console or the 0027 migration), if any.
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touch.id", ondelete="SET NULL"), nullable=True,
                                                 unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="OrderLine.id"
    )

    @property
    def net_amount(self) -> Decimal:
        return Decimal(self.amount) - Decimal(self.refunded_amount or 0)


class OrderLine(Base):
    __tablename__ = "order_line"
    __table_args__ = (
        # "bought category X in the last N days" / "bought product P": one range scan each.
        Index("ix_order_line_category_paid", "category", "paid_at", "customer_id"),
        Index("ix_order_line_product_paid", "product_id", "paid_at", "customer_id"),
        # A customer's lines by time, with what "bought category X in N days" tests and the order it
        # checks for refunds: that probe is answered from the index alone (migration 0051).
        Index("ix_order_line_customer_category", "customer_id", "paid_at", "category", "order_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("customer_order.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("product.id", ondelete="SET NULL"), nullable=True)
    sku: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(128), default="")
    category: Mapped[str] = mapped_column(String(64), default="")
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))  # unit price
    # Copies of the order's, kept in step by orders.service (segment conditions need no join).
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True)
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime())

    order: Mapped[Order] = relationship(back_populates="lines")


class CustomerPurchaseFacts(Base):
    """A customer's purchase facts, computed from their orders (refunds subtracted).

    One row per customer who has had at least one matched order; no row reads as zero / never.
    ``customer.purchase_count`` and ``customer.purchase_total`` mirror ``purchase_count`` and
    ``total_spent`` (the ladder, 购买 tags and level read them as before).
    """

    __tablename__ = "customer_purchase_facts"
    __table_args__ = (
        Index("ix_customer_purchase_facts_last", "last_purchase_at"),
        Index("ix_customer_purchase_facts_total", "total_spent"),
        Index("ix_customer_purchase_facts_count", "purchase_count"),
    )

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True)
    purchase_count: Mapped[int] = mapped_column(Integer, default=0)  # orders not wholly refunded
    total_spent: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))  # paid − refunded
    avg_order_value: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    refunded_total: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    first_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    favourite_category: Mapped[str] = mapped_column(String(64), default="")  # most units bought
    # Orders with a product bought within the rules' new-launch window of its launch (粉丝 rule).
    new_launch_purchases: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


__all__ = ["CustomerPurchaseFacts", "Order", "OrderLine", "OrderSource", "Product", "WebhookReceipt"]
