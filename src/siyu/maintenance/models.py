"""用户维系: touch cadence and the operator's daily task list (今日任务).

A *cadence policy* says: customers matching a condition (compiled by the one segment compiler,
``segments.compiler``) get a private touch every N days, not within a quiet period after a
purchase or a touch of another kind. Each customer × account under a policy has one
``CadenceDue`` row with the next due day, moved in the same transaction as the touches that move
it (``service.touches_written``, called by ``customers.service`` after every touch write), so
"due today" is an indexed range read, never a scan of the timeline.

A ``Task`` is one thing an operator should do today for one customer on one account. The daily
job writes them with a unique key (customer, account, kind, day, ref_key): running it twice creates
nothing twice. ``ref_key`` is 0 except for the kinds in ``APART_KINDS``, whose tasks stay apart per
reference: two 群发 campaigns on one day are two copies to send, each ticked off on its own (each
campaign reads its recipients' delivery from its own task), where a second SOP step of the day
joins the day's task. Done / snoozed / skipped tasks stay, so completion rates per operator are a
query over this table.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_


class TaskKind(enum.StrEnum):
    cadence = "cadence"  # 私聊到期 (cadence policy)
    follow_up = "follow_up"  # 约定回访
    birthday = "birthday"  # 生日 / 纪念日
    new_friend = "new_friend"  # 新好友：补全备注与画像
    deleted = "deleted"  # 删除了我们：复盘
    unanswered = "unanswered"  # 未回复的会话
    moment = "moment"  # 发朋友圈 (personal account: the operator posts a planned moment by hand; no customer)
    sop = "sop"  # 客户SOP 的一步（sops.service: the script to use, or a send that became a task）
    # 群规 (groups.moderation): a finding becomes the group owner's task, with the evidence
    group_removal = "group_removal"  # 移出违规成员（企业微信没有移出群成员的接口，由群主在客户端操作）
    group_warn = "group_warn"  # 在群里提醒违规成员
    group_flag = "group_flag"  # 黑名单成员加入了本群
    # 线下活动 (offline): invite a customer (the detail holds the invitation and its link), and follow up after
    event_invite = "event_invite"
    event_follow = "event_follow"
    account_qr = "account_qr"  # 个人号二维码快到期 (accounts.qr_renewal; no customer, ref_id the expiry)
    campaign = "campaign"  # 群发 from a personal account: the operator sends the copy by hand (campaigns)
    # 用户转化 (coupons/, referrals/, draws/): the operator tells the customer
    coupon_expiry = "coupon_expiry"  # 优惠券即将过期：提醒客户使用
    reward = "reward"  # 老带新奖励：把奖品交给邀请人
    draw_win = "draw_win"  # 抽奖中奖：通知中奖客户


TASK_KIND_LABELS = {
    TaskKind.cadence: N_("Private chat due"),
    TaskKind.follow_up: N_("Follow-up"),
    TaskKind.birthday: N_("Birthday or anniversary"),
    TaskKind.new_friend: N_("New friend: complete the remark"),
    TaskKind.deleted: N_("Deleted us: review"),
    TaskKind.unanswered: N_("Unanswered conversation"),
    TaskKind.moment: N_("Post a moment"),
    TaskKind.sop: N_("SOP step"),
    TaskKind.group_removal: N_("Group rule broken: remove the member"),
    TaskKind.group_warn: N_("Group rule broken: warn the member"),
    TaskKind.group_flag: N_("A blacklisted member joined the group"),
    TaskKind.event_invite: N_("Invite to an offline event"),
    TaskKind.event_follow: N_("Offline event follow-up"),
    TaskKind.account_qr: N_("Renew the account's WeChat QR code"),
    TaskKind.campaign: N_("Mass send"),
    TaskKind.coupon_expiry: N_("Coupon about to expire: remind the customer"),
    TaskKind.reward: N_("Referral reward: hand it to the customer"),
    TaskKind.draw_win: N_("Lucky draw: tell the winner"),
}


# Kinds whose tasks stay apart per ``ref_id`` within a day (``Task.ref_key``): a campaign's task answers that
# campaign's recipient only, so a second campaign of the day gets its own task instead of none.
APART_KINDS = frozenset({TaskKind.campaign.value})
# The unique key, as every insert's ON CONFLICT names it.
TASK_KEY = ("customer_id", "account_id", "kind", "day", "ref_key")


def ref_key_of(kind: str, ref_id: int | None) -> int:
    """The task's ``ref_key``: its ``ref_id`` for the kinds kept apart per reference, else 0."""
    return int(ref_id or 0) if kind in APART_KINDS else 0


class TaskStatus(enum.StrEnum):
    open = "open"
    done = "done"  # the operator did it (a touch recorded)
    snoozed = "snoozed"  # back on snoozed_until
    skipped = "skipped"  # not done, with a reason
    closed = "closed"  # the customer was touched otherwise during the day


class CadencePolicy(Base):
    __tablename__ = "cadence_policy"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    # A condition tree (segments.schemas.ConditionGroup as JSON); None: every customer.
    conditions: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    every_days: Mapped[int] = mapped_column(Integer)
    quiet_days: Mapped[int] = mapped_column(Integer, default=0)
    # Lower first: a customer matched by two policies follows the first.
    position: Mapped[int] = mapped_column(Integer, default=100)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    matched: Mapped[int] = mapped_column(Integer, default=0)  # customer × account pairs at the last apply
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class CadenceDue(Base):
    """One customer on one account under a cadence policy, with the day the next private touch is due."""

    __tablename__ = "cadence_due"
    __table_args__ = (Index("ix_cadence_due_account_due", "account_id", "next_due_on"),
                      Index("ix_cadence_due_due", "next_due_on"))

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("cadence_policy.id", ondelete="CASCADE"), index=True)
    next_due_on: Mapped[date] = mapped_column(Date)
    last_private_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class FollowUp(Base):
    """A follow-up an operator scheduled when recording a touch ("3 天后回访")."""

    __tablename__ = "follow_up"
    __table_args__ = (Index("ix_follow_up_due", "due_on", "done"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    due_on: Mapped[date] = mapped_column(Date)
    note: Mapped[str] = mapped_column(String(255), default="")
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touch.id", ondelete="SET NULL"), nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Task(Base):
    __tablename__ = "maintenance_task"
    __table_args__ = (
        UniqueConstraint(*TASK_KEY, name="uq_maintenance_task_key"),
        Index("ix_maintenance_task_account_day", "account_id", "day", "status", "priority"),
        Index("ix_maintenance_task_operator_day", "operator_id", "day", "status"),
        Index("ix_maintenance_task_customer_status", "customer_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # None for a task about no one customer (kind moment: ref_id is the moments post)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), nullable=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    day: Mapped[date] = mapped_column(Date)  # the local day it was generated for
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher first
    overdue_days: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.open.value)
    detail: Mapped[str] = mapped_column(String(255), default="")  # e.g. the follow-up's note
    ref_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # follow-up or conversation id
    ref_key: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # ref_key_of(kind, ref_id)
    snoozed_until: Mapped[date | None] = mapped_column(Date, nullable=True)
    skip_reason: Mapped[str] = mapped_column(String(255), default="")
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touch.id", ondelete="SET NULL"), nullable=True)
    finished_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TaskSettings(Base):
    """The one row of task-list settings (admin-defined)."""

    __tablename__ = "maintenance_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    generate_hour: Mapped[int] = mapped_column(Integer, default=7)  # local time the daily job runs
    generate_minute: Mapped[int] = mapped_column(Integer, default=30)
    cap_per_operator: Mapped[int] = mapped_column(Integer, default=50)
    last_generated_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    # 公海 policy (maintenance.pool): customers nobody touched for this many days go to the pool (0: never);
    # each operator claims at most pool_claim_limit a day; a claim not worked within pool_hold_days returns.
    pool_untouched_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pool_claim_limit: Mapped[int] = mapped_column(Integer, default=20, server_default="20")
    pool_hold_days: Mapped[int] = mapped_column(Integer, default=7, server_default="7")


class PoolClaim(Base):
    """One claim from the 公海: who took which customer when, and whether it went back unworked."""

    __tablename__ = "pool_claim"
    __table_args__ = (Index("ix_pool_claim_user_at", "user_id", "claimed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


__all__ = ["CadenceDue", "CadencePolicy", "FollowUp", "PoolClaim", "Task", "TaskSettings"]
