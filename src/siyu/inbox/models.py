"""The service inbox (客服工作台): messages, conversations, agents' presence, canned replies.

A *message* is stored once per platform id (a retried delivery is the same message); a
*conversation* is one customer × one account (or one group chat) and carries what the
queue sorts and filters on — status, assignee, since when the customer has been waiting,
the last message — so the unanswered queue is one index scan at 50,000 open conversations.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class ConversationStatus(enum.StrEnum):
    open = "open"  # waiting for us, or being worked
    pending = "pending"  # waiting for the customer
    snoozed = "snoozed"  # back at snoozed_until
    resolved = "resolved"


class Direction(enum.StrEnum):
    inbound = "in"
    outbound = "out"


class Channel(enum.StrEnum):
    """Where a conversation takes place (what the platform lets Siyu read and answer there)."""

    wecom_kf = "wecom_kf"  # 微信客服: pulled with kf/sync_msg, answered with kf/send_msg
    mp = "mp"  # 公众号
    wecom_archive = "wecom_archive"  # a WeCom member's own chats (会话存档)
    personal = "personal"  # a personal WeChat account, captured by a person


class MessageType(enum.StrEnum):
    text = "text"
    image = "image"
    voice = "voice"
    video = "video"
    file = "file"
    link = "link"
    miniprogram = "miniprogram"
    red_packet = "red_packet"
    sticker = "sticker"
    location = "location"
    business_card = "business_card"
    msgmenu = "msgmenu"  # a menu of choices (微信客服)
    channels = "channels"  # a 视频号 item
    system = "system"  # an event shown as a line: entered the session, recalled, handed over …
    unknown = "unknown"


class DeliveryStatus(enum.StrEnum):
    received = "received"  # inbound
    queued = "queued"  # outbound, not yet accepted by the platform
    sent = "sent"  # accepted by the platform
    delivered = "delivered"  # the platform confirmed the customer got it (WeCom mass-send results)
    failed = "failed"


class ServiceState:
    """A 微信客服 session's state on the platform, kf/service_state (W:94669)."""

    untouched = 0  # 未处理
    assistant = 1  # 由智能助手接待 — Siyu's API answers here
    queued = 2  # 待接入池排队中
    person = 3  # 由人工接待 (in WeCom's client: the API answers 95018)
    ended = 4  # 已结束/未开始


class Conversation(Base):
    __tablename__ = "conversation"
    __table_args__ = (
        # The unanswered queue: open, waiting, longest first.
        Index("ix_conversation_queue", "status", "waiting_since", "id"),
        Index("ix_conversation_assignee_status", "assignee_id", "status"),
        # Not on last_message_at: that changes with every message, and a flood rewrites it constantly.
        Index("ix_conversation_account_status", "account_id", "status"),
        Index("ix_conversation_channel_status", "channel", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # "c:<account>:<customer>" for a private chat, "g:<account>:<chat id>" for a group: one row each.
    key: Mapped[str] = mapped_column(String(100), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    # A private chat has a customer; a group chat has the platform's chat id as group_key.
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), nullable=True,
                                                    index=True)
    group_key: Mapped[str] = mapped_column(String(64), default="")
    channel: Mapped[str] = mapped_column(String(16), default=Channel.personal.value, server_default="personal")
    # 微信客服 only: the platform's session state (0 未处理, 1 智能助手, 2 待接入池, 3 人工接待, 4 已结束)
    # and the WeCom member serving it in WeCom's own client, as last seen.
    service_state: Mapped[int | None] = mapped_column(Integer, nullable=True)
    servicer_userid: Mapped[str] = mapped_column(String(64), default="", server_default="")
    status: Mapped[str] = mapped_column(String(16), default=ConversationStatus.open.value)
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The oldest inbound message not yet answered; None when nothing is waiting.
    waiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    unanswered: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_message_preview: Mapped[str] = mapped_column(String(200), default="")
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sla_alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("source", "platform_msgid"),
        # Platform order within a conversation, whatever order the messages arrived in.
        Index("ix_message_conversation_order", "conversation_id", "sent_at", "id"),
        Index("ix_message_rule_version_sent", "rule_version_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))  # wecom / simulator / personal / import / console
    platform_msgid: Mapped[str] = mapped_column(String(128))
    direction: Mapped[str] = mapped_column(String(4))
    msg_type: Mapped[str] = mapped_column(String(16), default=MessageType.text.value)
    sender: Mapped[str] = mapped_column(String(128), default="")  # platform id of who wrote it
    text: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.received.value)
    error: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)  # sent by a rule, not a person
    # An automatic reply names the rule version that sent it and the message it answers (once:
    # the unique index makes "never twice to one message" a database fact).
    rule_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reply_to_id: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    internal: Mapped[bool] = mapped_column(Boolean, default=False)  # an agents' note, never sent


class AgentState(Base):
    """Whether a service agent takes new conversations, and how many at once."""

    __tablename__ = "agent_state"

    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    capacity: Mapped[int] = mapped_column(Integer, default=20)
    last_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CannedReply(Base):
    """A quick reply (快捷回复) with customer-safe variables ({称呼}: customers.variables); no account: all."""

    __tablename__ = "canned_reply"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), nullable=True)
    shortcut: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ServiceLevel(Base):
    """First-response and resolution targets of one account (minutes)."""

    __tablename__ = "service_level"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    first_response_minutes: Mapped[int] = mapped_column(Integer, default=5)
    resolution_minutes: Mapped[int] = mapped_column(Integer, default=240)


__all__ = ["AgentState", "CannedReply", "Channel", "Conversation", "Message", "ServiceLevel"]
