from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow

STANDARD_CAPACITY = 5000
RAISED_CAPACITY = 20000
UTILISATION_WARNING = 0.9


class AccountKind(enum.StrEnum):
    wecom = "wecom"  # 企业微信成员
    personal = "personal"  # 个人微信号


class AccountStatus(enum.StrEnum):
    active = "active"
    retired = "retired"


class Account(Base):
    """A carrier (载体): one WeCom member or personal WeChat account and its persona."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default=AccountKind.personal.value)
    display_name: Mapped[str] = mapped_column(String(64))
    wechat_id: Mapped[str] = mapped_column(String(64), default="")
    wecom_userid: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
