"""公众号 (WeChat Official Account): followers, parametric QR codes, the follower sync's cursor, nonces."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class MpFollower(Base):
    """A WeChat user who follows (or followed) a 公众号: their openid there and the Siyu customer.

    The friendship-like link itself is a ``Friendship`` (customer × the MP account); this row
    keeps what only the 公众号 knows — the openid, whether they follow now, how they came (the
    QR scene) and when they last wrote or acted, which opens the customer-service window.
    """

    __tablename__ = "mp_follower"
    __table_args__ = (Index("ix_mp_follower_account_subscribed", "account_id", "subscribed"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    openid: Mapped[str] = mapped_column(String(64), unique=True)  # an openid belongs to one 公众号
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    unionid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    subscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    scene: Mapped[str] = mapped_column(String(64), default="")  # the qrscene_ of the follow, if any
    # The last menu click, follow or QR scan: opens a 1-minute, 3-message customer-service window.
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    synced_run: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the user/get run that last saw them
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MpQrCode(Base):
    """A parametric QR code (qrcode/create) of a channel: a follow through it is attributed to the channel."""

    __tablename__ = "mp_qrcode"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    scene: Mapped[str] = mapped_column(String(64))  # scene_str: the channel's key
    permanent: Mapped[bool] = mapped_column(Boolean, default=False)
    ticket: Mapped[str] = mapped_column(String(255), default="")
    url: Mapped[str] = mapped_column(String(512), default="")  # the content the QR image encodes
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MpSyncState(Base):
    """The follower sync of one 公众号: where user/get stopped (resumable) and the run's number."""

    __tablename__ = "mp_sync_state"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    run: Mapped[int] = mapped_column(Integer, default=0)
    next_openid: Mapped[str] = mapped_column(String(64), default="")
    running: Mapped[bool] = mapped_column(Boolean, default=False)
    seen: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class MpNonce(Base):
    """Nonces of the last minutes and the callback each came with: a replay is refused, a retry answered."""

    __tablename__ = "mp_nonce"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(160), default="")
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


__all__ = ["MpFollower", "MpNonce", "MpQrCode", "MpSyncState"]
