"""WeCom callbacks as received: stored first, processed after (durable and idempotent)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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


class ArchiveCursor(Base):
    """Where Siyu is in the corp's chat archive (会话存档): the last ``seq`` stored.

    One row (``name`` "corp"). ``seq`` moves in the transaction that stores the page it covers, under
    a compare-and-set on the old value, so a crash pulls the page again and two pullers never both
    store one; ``notified_at`` is the last msgaudit_notify, ``pulled_at`` the last pull.
    """

    __tablename__ = "wecom_archive_cursor"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pulled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stored: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    skipped: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    withheld: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ArchiveConsent(Base):
    """Whether a customer agreed that their chats with a member are archived (会话存档同意情况).

    From ``change_external_contact``/``msg_audit_approved`` and ``msgaudit/check_single_agree``
    (W:91782). No content of a chat with a customer who has not agreed is stored.
    """

    __tablename__ = "wecom_archive_consent"
    __table_args__ = (UniqueConstraint("userid", "external_userid"),
                      Index("ix_wecom_archive_consent_external", "external_userid"))

    id: Mapped[int] = mapped_column(primary_key=True)
    userid: Mapped[str] = mapped_column(String(64))  # the member
    external_userid: Mapped[str] = mapped_column(String(64))
    agreed: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(32), default="")  # Agree / Disagree / Default_Agree / approved
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ArchiveSkip(Base):
    """An archive item that could not be opened (unknown key version, a key that does not fit, a body
    that does not decrypt): reported here and in the log, skipped; the rest of the page goes on."""

    __tablename__ = "wecom_archive_skip"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    msgid: Mapped[str] = mapped_column(String(128), default="")
    publickey_ver: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WecomMedia(Base):
    """A stored file uploaded to WeCom as temporary material (media/upload, W:90253): its media_id, kept
    until shortly before the platform forgets it (3 days), so each file is uploaded once in that time."""

    __tablename__ = "wecom_media"
    __table_args__ = (UniqueConstraint("corp_id", "file_key", "media_type", name="uq_wecom_media_file"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    corp_id: Mapped[str] = mapped_column(String(64), default="")
    file_key: Mapped[str] = mapped_column(String(200))  # core.storage key of the bytes
    media_type: Mapped[str] = mapped_column(String(16))  # image / file
    media_id: Mapped[str] = mapped_column(String(128))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # WeCom's: uploaded + 3 days


__all__ = ["ArchiveConsent", "ArchiveCursor", "ArchiveSkip", "CallbackNonce", "EventStatus", "KfCursor",
           "SendCheck", "WecomEvent", "WecomMedia"]
