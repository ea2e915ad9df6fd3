"""Referral and fission (老带新, 任务宝): programmes, personal invite codes, the credit ledger, rewards.

Every customer in a programme gets a personal invite code whose ``state`` (≤ 30 characters, the
contact way's limit, W:92228) names them: a WeCom 「联系我」 code, a 公众号 parametric QR with the
state as its scene, or a tracked link for personal accounts. A friend added through it credits
the referrer — in an append-only ledger: a *credit* (+1) when a genuinely new customer arrives,
a *reversal* (−1) when that referee deletes us within the programme's window. One referee credits
one referrer once and is reversed at most once (unique keys), so a referrer's count is the sum of
their entries and can never go below zero.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_

STATE_PREFIX = "rf"  # a referral state; channel keys start "ch"
STATE_MAX_CHARS = 30  # W:92228 配置客户联系「联系我」方式: state 不超过30个字符


class ProgrammeStatus(enum.StrEnum):
    active = "active"
    ended = "ended"


STATUS_LABELS = {ProgrammeStatus.active: N_("Running"), ProgrammeStatus.ended: N_("Ended")}


class EntryKind(enum.StrEnum):
    credit = "credit"
    reversal = "reversal"


class ReferralProgramme(Base):
    __tablename__ = "referral_programme"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ProgrammeStatus.active.value)
    # The accounts a referee adds (WeCom members on the contact ways; a personal account's link page).
    account_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    # A referee who deletes us within this many days takes the credit back.
    reversal_days: Mapped[int] = mapped_column(Integer, default=7)
    # The 任务宝 tiers: [{"invites": 3, "coupon_batch_id": 1, "gift": ""}, {"invites": 10, "gift": "茶具一套"}]
    tiers: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    # The referee's first order rewards the referrer with this (a coupon batch and/or a gift).
    first_order_batch_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_batch.id", ondelete="SET NULL"),
                                                             nullable=True)
    first_order_gift: Mapped[str] = mapped_column(String(100), default="")
    poster_text: Mapped[str] = mapped_column(String(200), default="")  # what the poster promises
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InviteCode(Base):
    """A customer's personal invite code in a programme."""

    __tablename__ = "referral_invite"
    __table_args__ = (UniqueConstraint("programme_id", "customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("referral_programme.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(STATE_MAX_CHARS), unique=True)
    wecom_config_id: Mapped[str] = mapped_column(String(64), default="")
    qr_url: Mapped[str] = mapped_column(String(512), default="")
    alert: Mapped[str] = mapped_column(String(255), default="")
    # The invite as a 公众号 parametric QR code (qrcode/create, scene_str = ``state``): a follow or a scan
    # of it credits the referrer through the same ledger as a WeCom add.
    mp_account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    mp_ticket: Mapped[str] = mapped_column(String(255), default="")
    mp_qr_url: Mapped[str] = mapped_column(String(512), default="")  # what the QR image encodes
    mp_permanent: Mapped[bool] = mapped_column(Boolean, default=False)
    mp_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LedgerEntry(Base):
    """One credit (+1) or reversal (−1) for a referrer; never edited, never deleted."""

    __tablename__ = "referral_ledger"
    __table_args__ = (
        # One referee credits one referrer once per programme, and is reversed at most once.
        UniqueConstraint("programme_id", "referee_id", "kind"),
        CheckConstraint("delta IN (1, -1)", name="delta"),
        Index("ix_referral_ledger_referrer", "programme_id", "referrer_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("referral_programme.id", ondelete="CASCADE"))
    referrer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    referee_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    delta: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Standing(Base):
    """A referrer's current count in a programme: kept equal to the sum of their ledger entries."""

    __tablename__ = "referral_standing"
    __table_args__ = (CheckConstraint("invites >= 0", name="invites"),
                      Index("ix_referral_standing_board", "programme_id", "invites"))

    programme_id: Mapped[int] = mapped_column(ForeignKey("referral_programme.id", ondelete="CASCADE"),
                                              primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True)
    invites: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Reward(Base):
    """A reward given to a referrer: a tier reached or a referee's first order (once each)."""

    __tablename__ = "referral_reward"
    __table_args__ = (UniqueConstraint("programme_id", "customer_id", "reason"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("referral_programme.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(32))  # "tier:3" or "first_order:<referee id>"
    coupon_batch_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_batch.id", ondelete="SET NULL"),
                                                        nullable=True)
    code: Mapped[str] = mapped_column(String(64), default="")
    gift: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
