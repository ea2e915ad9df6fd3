"""Acquisition channels (渠道活码): where customers come from, what they were promised, what it cost.

Every channel has a key that travels as the WeCom contact way's ``state``; when a friend
is added with that state the customer is attributed to the channel (the first channel is
kept for good, later ones are recorded too), tagged, welcomed with the channel's incentive
and — for coupons — given one code from the channel's pool, exactly once.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class ChannelKind(enum.StrEnum):
    store_staff = "store_staff"  # 门店导购
    online_ad = "online_ad"  # 线上广告
    parcel_card = "parcel_card"  # 包裹卡
    app = "app"  # App / 小程序 / 视频号
    offline_event = "offline_event"  # 线下活动
    promoter = "promoter"  # 推手
    circle = "circle"  # 借/混/换/建圈子


class ChannelStatus(enum.StrEnum):
    active = "active"
    paused = "paused"
    archived = "archived"


class CostModel(enum.StrEnum):
    fixed = "fixed"  # a fixed budget for the whole channel
    per_add = "per_add"  # a price per added friend (ads, incentives)
    per_promoter_reward = "per_promoter_reward"  # a reward to the promoter per added friend


class AccountStrategy(enum.StrEnum):
    single = "single"
    round_robin = "round_robin"
    least_utilised = "least_utilised"


class IncentiveKind(enum.StrEnum):
    none = "none"
    coupon = "coupon"
    gift = "gift"
    qualification = "qualification"  # 购买资格
    knowledge = "knowledge"  # 知识包


class Channel(Base):
    __tablename__ = "channel"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(30), unique=True)  # the contact way `state`
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24), default=ChannelKind.store_staff.value)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=ChannelStatus.active.value)
    starts_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    ends_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    cost_model: Mapped[str] = mapped_column(String(24), default=CostModel.per_add.value)
    cost_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    account_strategy: Mapped[str] = mapped_column(String(24), default=AccountStrategy.single.value)
    account_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    tag_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    incentive_kind: Mapped[str] = mapped_column(String(16), default=IncentiveKind.none.value)
    incentive_text: Mapped[str] = mapped_column(String(200), default="")  # what the poster promises
    welcome_text: Mapped[str] = mapped_column(Text, default="")  # {称呼} {账号} {券码} (customers.variables)
    fallback_text: Mapped[str] = mapped_column(Text, default="")  # when the coupon pool is empty
    # From the library (话术库 / 素材库): the script sent when welcome_text is empty, and link attachments.
    welcome_script_id: Mapped[int | None] = mapped_column(ForeignKey("library_item.id", ondelete="SET NULL"),
                                                          nullable=True)
    welcome_material_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    promoter_id: Mapped[int | None] = mapped_column(ForeignKey("promoter.id", ondelete="SET NULL"), nullable=True)
    # The WeCom contact way created for this channel (config id and QR image URL), when connected.
    wecom_config_id: Mapped[str] = mapped_column(String(64), default="")
    qr_url: Mapped[str] = mapped_column(String(512), default="")
    # That QR image, fetched once from ``qr_url`` and kept in the shared storage (core.storage key).
    qr_image_key: Mapped[str] = mapped_column(String(200), default="", server_default="")
    rotation: Mapped[int] = mapped_column(Integer, default=0)  # round-robin position
    alert: Mapped[str] = mapped_column(String(255), default="")  # e.g. "coupon pool empty"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CouponCode(Base):
    """One code of a channel's pool; claimed by at most one customer, ever."""

    __tablename__ = "coupon_code"
    __table_args__ = (
        UniqueConstraint("channel_id", "code"),
        # One code per customer per channel: a re-add gets the same code back, never a second one.
        UniqueConstraint("channel_id", "customer_id"),
        Index("ix_coupon_code_free", "channel_id", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ChannelAdd(Base):
    """A customer added through a channel (one row per add; the first one per customer is kept as first touch)."""

    __tablename__ = "channel_add"
    __table_args__ = (
        # Covers the report's columns, so a year of adds is read from the index alone.
        Index("ix_channel_add_report", "channel_id", "added_on", "added_at", "removed_at", "first_touch"),
        UniqueConstraint("channel_id", "customer_id", "account_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    first_touch: Mapped[bool] = mapped_column(Boolean, default=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    added_on: Mapped[date] = mapped_column(Date)  # local day, for the per-day report
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    promoter_id: Mapped[int | None] = mapped_column(ForeignKey("promoter.id", ondelete="SET NULL"), nullable=True)


class Promoter(Base):
    """A person who brings customers with their own channel code (staff, agent or fan)."""

    __tablename__ = "promoter"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True)
    reward_per_add: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PromoterReward(Base):
    """The reward ledger: one credit per customer a promoter brought in."""

    __tablename__ = "promoter_reward"
    __table_args__ = (UniqueConstraint("promoter_id", "customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    promoter_id: Mapped[int] = mapped_column(ForeignKey("promoter.id", ondelete="CASCADE"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["Channel", "ChannelAdd", "CouponCode", "Promoter", "PromoterReward"]
