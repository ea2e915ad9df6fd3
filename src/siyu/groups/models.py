"""WeCom customer groups (客户群) mirrored from the platform.

A WeCom callback only says *which* group changed; the detail (name, owner, notice, the
member list) comes from ``externalcontact/groupchat/get`` and is reconciled into these
tables by ``groups.service``. A member who leaves keeps their row (``left_at`` set), and
a re-join reactivates it; every join and quit is also one ``GroupMemberChange`` row, so
the history of a member who came and went several times is never lost.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class GroupChatStatus(enum.StrEnum):
    active = "active"
    dismissed = "dismissed"  # 解散: final on WeCom, a dismissed chat id never comes back


class GroupPlatform(enum.StrEnum):
    wecom = "wecom"  # a WeCom customer group (客户群), mirrored from the API
    personal = "personal"  # a personal-WeChat group, registered by hand or imported


class GroupKind(enum.StrEnum):
    """The seed manual's five kinds of groups (微信社群种类)."""

    product = "product"  # 产品型
    interest = "interest"  # 兴趣型
    knowledge = "knowledge"  # 知识型
    network = "network"  # 资源人脉型
    marketing = "marketing"  # 营销型


class GroupHealth(enum.StrEnum):
    active = "active"
    silent = "silent"  # no message for SILENT_DAYS
    dead = "dead"  # no message for DEAD_DAYS, or members leaving faster than joining


class MemberRole(enum.StrEnum):
    owner = "owner"  # 群主
    admin = "admin"  # 群管理员
    service = "service"  # 群客服
    colleague = "colleague"  # 公司同事 (warms the room)
    partner = "partner"  # 合作会员
    member = "member"


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
        # The list filtered by kind and health (groups.registry), newest change first.
        Index("ix_group_chat_kind_health", "kind", "health", "updated_at", "id"),
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
    # -- the registry (groups.registry): what the group is for, who runs it, how it should be named
    platform: Mapped[str] = mapped_column(String(16), default=GroupPlatform.wecom.value)
    kind: Mapped[str] = mapped_column(String(24), default="")  # GroupKind, "" = not classified yet
    tier: Mapped[str] = mapped_column(String(32), default="")  # e.g. 金粉群 / 孵化群
    store: Mapped[str] = mapped_column(String(64), default="")
    region: Mapped[str] = mapped_column(String(64), default="")  # the city of {城市}
    service_userids: Mapped[list[str]] = mapped_column(JSON, default=list)  # 群客服 (WeCom UserIDs or names)
    fan_owned: Mapped[bool] = mapped_column(Boolean, default=False)  # built by a core fan (金粉自建群)
    naming_template_id: Mapped[int | None] = mapped_column(
        ForeignKey("group_naming_template.id", ondelete="SET NULL"), nullable=True)
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)  # its {编号} under the template
    # -- health (groups.health): from the last daily snapshot
    health: Mapped[str] = mapped_column(String(8), default=GroupHealth.active.value)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

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
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.member.value)  # MemberRole

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


class GroupNamingTemplate(Base):
    """A naming rule such as "{品牌}{城市}中心创富孵化群{编号}" with the next number to hand out."""

    __tablename__ = "group_naming_template"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    pattern: Mapped[str] = mapped_column(String(100))
    brand: Mapped[str] = mapped_column(String(32), default="")  # {品牌}
    kind: Mapped[str] = mapped_column(String(24), default="")
    tier: Mapped[str] = mapped_column(String(32), default="")
    next_number: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GroupCode(Base):
    """A 群活码: one QR that fills groups in turn (``groupchat/add_join_way``, W:92229).

    ``group_ids`` is the whole rotation in order; ``chat_ids`` what the platform's config holds now
    (at most five), moved on to the next groups before one is full. ``state`` attributes joiners.
    """

    __tablename__ = "group_code"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(30), unique=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channel.id", ondelete="SET NULL"), nullable=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    group_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    chat_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    auto_create: Mapped[bool] = mapped_column(Boolean, default=False)
    room_base_name: Mapped[str] = mapped_column(String(40), default="")
    room_base_id: Mapped[int] = mapped_column(Integer, default=1)
    rotate_percent: Mapped[int] = mapped_column(Integer, default=90)
    wecom_config_id: Mapped[str] = mapped_column(String(64), default="")
    qr_url: Mapped[str] = mapped_column(String(512), default="")
    alert: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GroupQrImage(Base):
    """A personal-WeChat group's QR image (微信群二维码), valid for 7 days after it was made."""

    __tablename__ = "group_qr_image"
    __table_args__ = (Index("ix_group_qr_image_expiry", "expires_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_chat_id: Mapped[int] = mapped_column(ForeignKey("group_chat.id", ondelete="CASCADE"), index=True)
    storage_key: Mapped[str] = mapped_column(String(255))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)


class GroupDaySnapshot(Base):
    """Siyu's own daily figures of one group, kept beyond WeCom's 180 days."""

    __tablename__ = "group_day_snapshot"
    __table_args__ = (UniqueConstraint("group_chat_id", "day"), Index("ix_group_day_snapshot_day", "day"))

    id: Mapped[int] = mapped_column(primary_key=True)
    group_chat_id: Mapped[int] = mapped_column(ForeignKey("group_chat.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    joins: Mapped[int] = mapped_column(Integer, default=0)
    leaves: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[int] = mapped_column(Integer, default=0)  # archived messages that day
    speakers_7d: Mapped[int] = mapped_column(Integer, default=0)  # members who spoke in the 7 days to this one
    health: Mapped[str] = mapped_column(String(8), default=GroupHealth.active.value)


class GroupOwnerDayStat(Base):
    """One group owner's day as ``groupchat/statistic_group_by_day`` reports it (W:96359)."""

    __tablename__ = "group_owner_day_stat"
    __table_args__ = (UniqueConstraint("owner_userid", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_userid: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    new_chat_cnt: Mapped[int] = mapped_column(Integer, default=0)
    chat_total: Mapped[int] = mapped_column(Integer, default=0)
    chat_has_msg: Mapped[int] = mapped_column(Integer, default=0)
    new_member_cnt: Mapped[int] = mapped_column(Integer, default=0)
    member_total: Mapped[int] = mapped_column(Integer, default=0)
    member_has_msg: Mapped[int] = mapped_column(Integer, default=0)
    msg_total: Mapped[int] = mapped_column(Integer, default=0)


class GroupTask(Base):
    """Work for a group's owner that no API can do: renew a QR image, apply for the centre's resources,
    add groups to a full group code, rename a group to its template."""

    __tablename__ = "group_task"
    __table_args__ = (Index("ix_group_task_status", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))  # GroupTaskKind
    key: Mapped[str] = mapped_column(String(64), unique=True)  # one open task per thing
    group_chat_id: Mapped[int | None] = mapped_column(ForeignKey("group_chat.id", ondelete="CASCADE"),
                                                      nullable=True, index=True)
    group_code_id: Mapped[int | None] = mapped_column(ForeignKey("group_code.id", ondelete="CASCADE"),
                                                      nullable=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    detail: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(8), default="open")  # open / done
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class GroupTaskKind(enum.StrEnum):
    renew_qr = "renew_qr"  # 续期群二维码
    apply_resources = "apply_resources"  # 申请运营中心资源
    codes_full = "codes_full"  # 群活码的群都满了
    rename = "rename"  # 按命名规则改群名
    post = "post"  # 个人微信群：群主手动发一条群SOP内容


class PostSlot(enum.StrEnum):
    """What a scheduled group post (群SOP) is, as the seed's daily rhythm names it."""

    morning = "morning"  # 早报
    evening = "evening"  # 晚报
    task = "task"  # 8:00 的任务公告
    topic = "topic"  # 话题讨论
    event = "event"  # 活动通知
    rules = "rules"  # 群规公告 (after a join batch)
    intro = "intro"  # 自我介绍引导 (after a join batch)


class PostStatus(enum.StrEnum):
    scheduled = "scheduled"
    sent = "sent"  # the WeCom task exists; the owner has not confirmed it in their app yet
    confirmed = "confirmed"  # the owner sent it (get_groupmsg_send_result status 1)
    task = "task"  # a personal group: the owner's task to post it by hand
    done = "done"  # posted by hand
    cancelled = "cancelled"  # the group was dismissed while the post waited
    refused = "refused"  # over the group's monthly quota: nothing created on WeCom
    failed = "failed"  # WeCom refused the send
    missed = "missed"  # not sent within posts.SEND_LATE_LIMIT of its time (WeCom unreachable): not sent late


class InviteeStatus(enum.StrEnum):
    invited = "invited"
    joined = "joined"
    declined = "declined"
    refused = "refused"  # on the blacklist: every group's intake refuses them


class GroupWelcomeTemplate(Base):
    """A 入群欢迎语素材 (``group_welcome_template``, W:92366) chosen for a group kind ("" = any kind)."""

    __tablename__ = "group_welcome_template"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(24), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    wecom_template_id: Mapped[str] = mapped_column(String(64), default="")
    sync_error: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GroupInvitee(Base):
    """One person in a group's intake plan (the seed's three batches), with where they stand."""

    __tablename__ = "group_invitee"
    __table_args__ = (Index("ix_group_invitee_group_batch", "group_chat_id", "batch", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_chat_id: Mapped[int] = mapped_column(ForeignKey("group_chat.id", ondelete="CASCADE"))
    batch: Mapped[int] = mapped_column(Integer)  # 1 old customers + sales core, 2 invited prospects, 3 applicants
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True)
    userid: Mapped[str] = mapped_column(String(64), default="")  # the customer's external_userid when known
    name: Mapped[str] = mapped_column(String(128), default="")
    note: Mapped[str] = mapped_column(String(255), default="")  # the screening note (batch 3)
    status: Mapped[str] = mapped_column(String(16), default=InviteeStatus.invited.value)
    reason: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GroupPostPlan(Base):
    """One line of a group kind's calendar (群SOP): what goes out at which local time on which weekdays."""

    __tablename__ = "group_post_plan"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))  # GroupKind
    slot: Mapped[str] = mapped_column(String(16))  # PostSlot
    at_time: Mapped[str] = mapped_column(String(5))  # "HH:MM", local
    weekdays: Mapped[list[int]] = mapped_column(JSON, default=list)  # 0 Monday … 6 Sunday
    text: Mapped[str] = mapped_column(Text, default="")
    script_id: Mapped[int | None] = mapped_column(ForeignKey("library_item.id", ondelete="SET NULL"), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GroupPost(Base):
    """One post for one group at one time: a WeCom group mass send, or a personal group's owner task."""

    __tablename__ = "group_post"
    __table_args__ = (UniqueConstraint("plan_id", "group_chat_id", "due_at"),
                      Index("ix_group_post_status_due", "status", "due_at"),
                      Index("ix_group_post_group_due", "group_chat_id", "due_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("group_post_plan.id", ondelete="SET NULL"), nullable=True)
    group_chat_id: Mapped[int] = mapped_column(ForeignKey("group_chat.id", ondelete="CASCADE"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    slot: Mapped[str] = mapped_column(String(16))
    batch: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the intake batch it follows (rules, intro)
    text: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=PostStatus.scheduled.value)
    reason: Mapped[str] = mapped_column(String(255), default="")
    sender: Mapped[str] = mapped_column(String(64), default="")
    msgid: Mapped[str] = mapped_column(String(64), default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["ChangeKind", "GroupChat", "GroupChatStatus", "GroupCode", "GroupDaySnapshot", "GroupHealth",
           "GroupInvitee", "GroupKind", "GroupMember", "GroupMemberChange", "GroupMessage", "GroupNamingTemplate",
           "GroupOwnerDayStat", "GroupPlatform", "GroupPost", "GroupPostPlan", "GroupQrImage", "GroupTask",
           "GroupTaskKind", "GroupWelcomeTemplate", "InviteeStatus", "MemberRole", "MemberType", "PostSlot",
           "PostStatus"]
