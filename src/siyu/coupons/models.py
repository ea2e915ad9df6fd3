"""Coupons and vouchers (优惠券): batches, and each batch's pool of codes.

A batch says what a code is worth (an amount off, or a discount such as 8.5 折) and when it can
be used; its codes are a pool drawn by ``core.codepool.draw`` — the same mechanism as a channel's
welcome coupons — so a customer holds at most one code of a batch and a code is given once. An
order naming the code redeems it (``orders.service`` calls ``coupons.service.redeem_orders``).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_


class CouponKind(enum.StrEnum):
    amount = "amount"  # 满减 / 立减: an amount off
    discount = "discount"  # 折扣: e.g. 8.5 折


KIND_LABELS = {CouponKind.amount: N_("Amount off"), CouponKind.discount: N_("Discount")}


class IssuedVia(enum.StrEnum):
    manual = "manual"
    segment = "segment"
    campaign = "campaign"
    sop = "sop"
    referral = "referral"
    draw = "draw"


class CouponBatch(Base):
    __tablename__ = "coupon_batch"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default=CouponKind.amount.value)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))  # yuan off (kind amount)
    discount: Mapped[Decimal] = mapped_column(Numeric(4, 2), default=Decimal("0"))  # 8.5 = 8.5 折 (kind discount)
    min_spend: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))  # 满 X 可用; 0: none
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date] = mapped_column(Date)
    remind_days: Mapped[int] = mapped_column(Integer, default=3)  # expiry reminder this many days before
    note: Mapped[str] = mapped_column(String(255), default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CouponBatchCode(Base):
    """One code of a batch's pool: drawn by at most one customer, redeemed by at most one order."""

    __tablename__ = "coupon_batch_code"
    __table_args__ = (
        UniqueConstraint("batch_id", "code"),
        UniqueConstraint("batch_id", "customer_id"),  # one code per customer per batch
        Index("ix_coupon_batch_code_free", "batch_id", "customer_id", "id"),
        Index("ix_coupon_batch_code_code", "code"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("coupon_batch.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True,
                                                    index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    issued_via: Mapped[str] = mapped_column(String(16), default="")
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("customer_order.id", ondelete="SET NULL"), nullable=True)
    reminded_on: Mapped[date | None] = mapped_column(Date, nullable=True)
