"""WeCom callbacks as received: stored first, processed after (durable and idempotent)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class EventStatus(enum.StrEnum):
    received = "received"  # stored and acknowledged, waiting for its job
    processed = "processed"
    ignored = "ignored"  # a kind Siyu does not act on (yet): kept, logged, acknowledged
    failed = "failed"  # retries used up; shown in the event log


class WecomEvent(Base):
    __tablename__ = "wecom_event"
    __table_args__ = (
        Index("ix_wecom_event_status_received", "status", "received_at"),
        Index("ix_wecom_event_type_received", "event_type", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # MsgId when the platform gives one, else type + keys + CreateTime: a retry is the same key.
    dedup_key: Mapped[str] = mapped_column(String(255), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))  # e.g. change_external_contact/add_external_contact
    create_time: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.received.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    raw_xml: Mapped[str] = mapped_column(Text)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CallbackNonce(Base):
    """Nonces seen in the last minutes: a replayed request is refused, in every app process."""

    __tablename__ = "wecom_nonce"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class SendCheck(Base):
    """A reply WeCom accepted as a mass-send task, whose fate is not known yet.

    The member still has to confirm the send in their app, and WeCom may then refuse it for
    this customer (no longer a contact, receive limit). Until ``get_groupmsg_send_result``
    says which, the reply stays "sent, waiting for the member"; the row goes once it is known.
    """

    __tablename__ = "wecom_send_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"), unique=True)
    msgid: Mapped[str] = mapped_column(String(128))
    sender: Mapped[str] = mapped_column(String(64))  # the member's userid
    target: Mapped[str] = mapped_column(String(128))  # the customer's external_userid, or the group's chat_id
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_check_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    checks: Mapped[int] = mapped_column(Integer, default=0)


class KfCursor(Base):
    """Where Siyu is in one 微信客服 account's message stream (kf/sync_msg), and the freshest token.

    The cursor moves in the same transaction that stores the messages it covers, so a crash
    between pull and commit pulls the same page again (and the message table's unique key
    drops what was stored), never skips one.
    """

    __tablename__ = "wecom_kf_cursor"

    open_kfid: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str] = mapped_column(String(64), default="", server_default="")
    token: Mapped[str] = mapped_column(String(128), default="", server_default="")  # from the last callback
    token_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    tokenless_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # last pull without one
    pulled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # servicer_status_change: {servicer_userid: {"status": 1|2, "at": iso}} (1 接待中, 2 停止接待)
    servicers: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


__all__ = ["CallbackNonce", "EventStatus", "KfCursor", "SendCheck", "WecomEvent"]
