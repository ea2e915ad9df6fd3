"""公众号 (WeChat Official Account): followers, parametric QR codes, the follower sync's cursor, pushes as stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
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


class MpInbound(Base):
    """A 公众号 push as it arrived: stored in one cheap write before the callback answers, ingested later.

    The callback's ``success`` (or its passive reply) means "this row is committed"; the inbox
    (customer, conversation, message, touches, assignment, SLA) is built from it by the
    ``mp.ingest_inbound`` job, which sets ``ingested_at`` in the same transaction — exactly once,
    and a sweep ingests rows whose job was lost. The unique ``(account_id, dedup_key)`` keeps a
    retried push once (``MsgId`` for messages, ``FromUserName`` + ``CreateTime`` + ``Event`` for
    events, as the platform's docs recommend); the unique ``nonce`` refuses a replayed request.
    The passive reply decided in the callback is kept here, so a retry gets the same answer and
    the job records it as the conversation's reply once.
    """

    __tablename__ = "mp_inbound"
    __table_args__ = (
        UniqueConstraint("account_id", "dedup_key"),
        # The replies decided but not ingested yet (a rule's hourly cap counts them): a few rows, not all.
        Index("ix_mp_inbound_pending_reply", "rule_version_id",
              sqlite_where=text("ingested_at IS NULL AND rule_version_id IS NOT NULL"),
              postgresql_where=text("ingested_at IS NULL AND rule_version_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    dedup_key: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)  # the push's XML fields (decrypted in safe mode)
    # The automatic reply decided in the callback: "passive" (in the callback's answer), "api" (too late
    # for that: message/custom/send), or "" (none). ``reply`` empty with a version: filled in at ingestion.
    reply_mode: Mapped[str] = mapped_column(String(8), default="")
    reply: Mapped[str] = mapped_column(Text, default="")
    rule_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # no FK: one cheap write
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ingested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed ingestions (the sweep gives up after 5)
    error: Mapped[str] = mapped_column(String(500), default="")


__all__ = ["MpFollower", "MpInbound", "MpQrCode", "MpSyncState"]
