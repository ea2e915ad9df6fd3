from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow

STANDARD_CAPACITY = 5000
RAISED_CAPACITY = 20000
UTILISATION_WARNING = 0.9


class AccountKind(enum.StrEnum):
    wecom = "wecom"  # 企业微信成员
    personal = "personal"  # 个人微信号
    wecom_kf = "wecom_kf"  # 微信客服账号 (open_kfid): customers write to it from WeChat, Siyu pulls and answers
    mp = "mp"  # 公众号 (appid): followers' messages are pushed to Siyu's callback, answered passively or by API


class AccountStatus(enum.StrEnum):
    active = "active"
    retired = "retired"


class Account(Base):
    """A carrier (载体): one WeCom member, 微信客服 account or personal WeChat account and its persona."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default=AccountKind.personal.value)
    display_name: Mapped[str] = mapped_column(String(64))
    wechat_id: Mapped[str] = mapped_column(String(64), default="")
    wecom_userid: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    # A 微信客服 account's id in WeCom (kf/account/list); None for members and personal accounts.
    open_kfid: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    # A 公众号's appid; None for every other kind.
    mp_appid: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    store: Mapped[str] = mapped_column(String(64), default="")
    brand: Mapped[str] = mapped_column(String(64), default="")
    tier_served: Mapped[str] = mapped_column(String(32), default="")
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    friend_capacity: Mapped[int] = mapped_column(Integer, default=STANDARD_CAPACITY)
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.active.value)
    # Persona (人设)
    positioning: Mapped[str] = mapped_column(String(255), default="")
    avatar_url: Mapped[str] = mapped_column(String(512), default="")
    signature: Mapped[str] = mapped_column(String(255), default="")
    greeting: Mapped[str] = mapped_column(Text, default="")
    moments_cover_url: Mapped[str] = mapped_column(String(512), default="")
    # A personal account's own WeChat QR image (uploaded by the operator: WeChat has no API for it)
    # and the day it stops working (WeChat's personal QR codes lapse; the operator renews them).
    qr_image_url: Mapped[str] = mapped_column(String(512), default="", server_default="")
    qr_expires_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class HandoverMode(enum.StrEnum):
    wecom = "wecom"  # 在职继承: the platform moves each customer to the other member
    wecom_resigned = "wecom_resigned"  # 离职继承: the member has left the corp
    owner = "owner"  # a personal account changes hands: the account and its customers get a new owner


class HandoverStatus(enum.StrEnum):
    running = "running"
    waiting = "waiting"  # handed to the platform; customers not yet taken over (up to 24 hours)
    done = "done"
    failed = "failed"  # the job itself could not finish; items say how far it got


class HandoverItemStatus(enum.StrEnum):
    pending = "pending"
    sent = "sent"  # accepted by the platform, waiting for the takeover
    moved = "moved"
    failed = "failed"


class Handover(Base):
    """Customers of one account handed to another account or operator (离职/在职继承), item by item."""

    __tablename__ = "handover"

    id: Mapped[int] = mapped_column(primary_key=True)
    from_account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    to_account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    to_owner_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=HandoverStatus.running.value)
    message: Mapped[str] = mapped_column(String(200), default="")  # shown to customers by WeCom on takeover
    error: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class HandoverItem(Base):
    __tablename__ = "handover_item"
    __table_args__ = (UniqueConstraint("handover_id", "customer_id"),
                      Index("ix_handover_item_status", "handover_id", "status"))

    id: Mapped[int] = mapped_column(primary_key=True)
    handover_id: Mapped[int] = mapped_column(ForeignKey("handover.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    external_userid: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default=HandoverItemStatus.pending.value)
    errcode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(String(255), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
