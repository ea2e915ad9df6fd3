"""WeCom customer groups (客户群) mirrored from the platform.

A WeCom callback only says *which* group changed; the detail (name, owner, notice, the
member list) comes from ``externalcontact/groupchat/get`` and is reconciled into these
tables by ``groups.service``. A member who leaves keeps their row (``left_at`` set), and
a re-join reactivates it; every join and quit is also one ``GroupMemberChange`` row, so
the history of a member who came and went several times is never lost.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class GroupChatStatus(enum.StrEnum):
    active = "active"
    dismissed = "dismissed"  # 解散: final on WeCom, a dismissed chat id never comes back


class MemberType(enum.IntEnum):
    staff = 1  # 企业成员 (a WeCom member of the corp)
    external = 2  # 外部联系人 (a customer)


class ChangeKind(enum.StrEnum):
    joined = "join"
    quit = "quit"


class GroupChat(Base):
    __tablename__ = "group_chat"
    __table_args__ = (
        # The list: newest change first, optionally for one owner account or status.
        Index("ix_group_chat_updated", "updated_at", "id"),
        Index("ix_group_chat_owner_updated", "owner_account_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(64), unique=True)  # WeCom's 客户群ID
    name: Mapped[str] = mapped_column(String(255), default="")
    owner_userid: Mapped[str] = mapped_column(String(64), default="")  # WeCom UserID of the 群主
    # The account whose ``wecom_userid`` is the owner's; operators see the groups of their accounts.
    owner_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    notice: Mapped[str] = mapped_column(Text, default="")
    admin_userids: Mapped[list[str]] = mapped_column(JSON, default=list)
    platform_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=GroupChatStatus.active.value, index=True)
    member_count: Mapped[int] = mapped_column(Integer, default=0)  # current members, staff included
    customer_count: Mapped[int] = mapped_column(Integer, default=0)  # current members known as customers
    member_version: Mapped[str] = mapped_column(String(64), default="")
    dismissed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The last time anything about the group changed in Siyu (not every unchanged re-sync).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def is_active(self) -> bool:
        return self.status == GroupChatStatus.active.value


class GroupMember(Base):
    """One person in one group: their current membership, or the last one when they left."""

    __tablename__ = "group_member"
    __table_args__ = (
        UniqueConstraint("group_chat_id", "userid"),
        Index("ix_group_member_chat_left", "group_chat_id", "left_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    group_chat_id: Mapped[int] = mapped_column(ForeignKey("group_chat.id", ondelete="CASCADE"))
    userid: Mapped[str] = mapped_column(String(64))  # a member's UserID or a customer's external_userid
    member_type: Mapped[int] = mapped_column(Integer, default=MemberType.external.value)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customer.id", ondelete="SET NULL"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    group_nickname: Mapped[str] = mapped_column(String(128), default="")
    unionid: Mapped[str] = mapped_column(String(64), default="")
    invitor_userid: Mapped[str] = mapped_column(String(64), default="")
    join_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    join_scene: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1 invited, 2 link, 3 group QR code
    state: Mapped[str] = mapped_column(String(64), default="")  # the 加入群聊 contact way's state (channel key)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    quit_scene: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 0 left by themselves, 1 removed

    @property
    def is_current(self) -> bool:
        return self.left_at is None


class GroupMemberChange(Base):
    """A join or a quit, as it happened: the detail page's recent changes and the full history."""

    __tablename__ = "group_member_change"
    __table_args__ = (Index("ix_group_member_change_chat_at", "group_chat_id", "at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_chat_id: Mapped[int] = mapped_column(ForeignKey("group_chat.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("group_member.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    scene: Mapped[int | None] = mapped_column(Integer, nullable=True)  # join_scene or quit_scene


class GroupMessage(Base):
    """A message of a customer group as the chat archive (会话存档) carries it, for the group-operations work.

    Stored once per platform ``msgid``; linked to the mirrored group when Siyu knows its ``chat_id``
    (a group met first in the archive is linked when it is synced). Read-only: nothing is sent from here.
    """

    __tablename__ = "group_message"
    __table_args__ = (Index("ix_group_message_group_order", "group_chat_id", "sent_at", "id"),
                      Index("ix_group_message_chat_id", "chat_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    msgid: Mapped[str] = mapped_column(String(128), unique=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    chat_id: Mapped[str] = mapped_column(String(64))  # the archive's roomid
    group_chat_id: Mapped[int | None] = mapped_column(ForeignKey("group_chat.id", ondelete="SET NULL"),
                                                      nullable=True)
    sender: Mapped[str] = mapped_column(String(64), default="")  # a member's UserID or a customer's external_userid
    member_type: Mapped[int] = mapped_column(Integer, default=MemberType.external.value)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True)
    action: Mapped[str] = mapped_column(String(16), default="send")  # send / recall / switch
    msg_type: Mapped[str] = mapped_column(String(32), default="text")
    text: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["ChangeKind", "GroupChat", "GroupChatStatus", "GroupMember", "GroupMemberChange", "GroupMessage",
           "MemberType"]
