"""Campaigns (群发): a mass send to a segment, planned within the send quota, and what it earned.

A ``Campaign`` is the copy (text, up to 9 library materials, an optional B copy), the segment it
goes to and when. Sending plans it once: every customer of the segment becomes one
``CampaignRecipient`` — held out (the random 5–10 % not sent to, for the lift), over quota (left
out before anything is created, with the reason), unreachable (no friendship to send from) or sent
— and each sending account's recipients are cut into ``CampaignTask`` chunks of at most 10,000
(W:92135). A chunk is the idempotency key of one WeCom task: it is claimed (pending → creating)
and committed before WeCom hears of it, so a busy WeCom (45009) is asked again for the same chunk
and a customer is never in two tasks. A personal account's chunk is the operator's task list
(maintenance tasks of kind ``campaign``), ticked off in the sidebar.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_

# W:92135 add_msg_template: "每次最多发送1万个客户" (chat_type single) — one task per chunk of this many.
TASK_MAX_CUSTOMERS = 10_000
# W:97610 remind_groupmsg_send: "每个群发任务，24小时内最多只能提醒3次".
REMINDERS_PER_DAY = 3
HOLDOUT_MIN, HOLDOUT_MAX = 5, 10  # per cent of the segment held out, when a hold-out is chosen
ENGAGED_WITHIN_HOURS = 48  # 互动率 and deletions: within 48 h of delivery
DEFAULT_WINDOW_DAYS = 7  # buyers and revenue: orders within N days of the send (last touch)


class CampaignStatus(enum.StrEnum):
    scheduled = "scheduled"  # planned and reserved; the tasks are created at scheduled_at
    sending = "sending"  # some tasks are still to be created
    sent = "sent"  # every task created (members confirm them in WeCom)
    cancelled = "cancelled"


CAMPAIGN_STATUS_LABELS = {
    CampaignStatus.scheduled: N_("Scheduled"),
    CampaignStatus.sending: N_("Sending"),
    CampaignStatus.sent: N_("Sent"),
    CampaignStatus.cancelled: N_("campaign.status.cancelled"),
}


class RecipientGroup(enum.StrEnum):
    send = "send"
    holdout = "holdout"  # held out at random: not sent to, measured for the lift
    over_quota = "over_quota"  # left out before any task was created
    unreachable = "unreachable"  # no active friendship to send from


class RecipientStatus(enum.StrEnum):
    planned = "planned"  # in a task not created yet
    waiting = "waiting"  # in a task WeCom created; the member has not sent it yet
    delivered = "delivered"
    not_friend = "not_friend"  # W:93338 status 2
    limit = "limit"  # W:93338 status 3: the platform's receive limit
    failed = "failed"
    cancelled = "cancelled"
    unknown = "unknown"  # WeCom's answer was lost after it may have created the task; not sent again
    left_out = "left_out"  # hold-out, over quota, unreachable


RECIPIENT_STATUS_LABELS = {
    RecipientStatus.planned: N_("campaign.status.planned"),
    RecipientStatus.waiting: N_("Waiting for the member"),
    RecipientStatus.delivered: N_("Delivered"),
    RecipientStatus.not_friend: N_("Not a contact any more"),
    RecipientStatus.limit: N_("Receive limit reached"),
    RecipientStatus.failed: N_("Failed"),
    RecipientStatus.cancelled: N_("campaign.status.cancelled"),
    RecipientStatus.unknown: N_("Unknown (answer lost)"),
    RecipientStatus.left_out: N_("Left out"),
}


class TaskState(enum.StrEnum):
    pending = "pending"
    creating = "creating"  # claimed and committed; WeCom is being asked
    created = "created"
    maybe_created = "maybe_created"  # the answer was lost after WeCom may have acted: never repeated
    failed = "failed"
    cancelled = "cancelled"


TASK_STATE_LABELS = {
    TaskState.pending: N_("campaign.status.planned"),
    TaskState.creating: N_("Being created"),
    TaskState.created: N_("campaign.task.created"),
    TaskState.maybe_created: N_("Unknown (answer lost)"),
    TaskState.failed: N_("Failed"),
    TaskState.cancelled: N_("campaign.status.cancelled"),
}


class TaskChannel(enum.StrEnum):
    wecom = "wecom"  # one add_msg_template task the member confirms
    personal = "personal"  # the operator's task list (maintenance tasks)


class Campaign(Base):
    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segment.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.scheduled.value)
    text: Mapped[str] = mapped_column(Text, default="")
    text_b: Mapped[str] = mapped_column(Text, default="")  # the B copy; empty: no A/B
    material_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # A coupon batch: each customer the campaign sends to gets one code of it when the send is planned
    # (``campaigns.rewards``); the copy may name it as {券码} where a message goes to one customer.
    coupon_batch_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_batch.id", ondelete="SET NULL"),
                                                        nullable=True)
    holdout_percent: Mapped[int] = mapped_column(Integer, default=0)
    window_days: Mapped[int] = mapped_column(Integer, default=DEFAULT_WINDOW_DAYS)
    seed: Mapped[int] = mapped_column(Integer, default=0)  # the split's random seed
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    results_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CampaignTask(Base):
    """One chunk of one sending account's recipients: the idempotency key of one WeCom task."""

    __tablename__ = "campaign_task"
    __table_args__ = (UniqueConstraint("campaign_id", "account_id", "variant", "chunk",
                                       name="uq_campaign_task_chunk"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(1), default="A")
    chunk: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str] = mapped_column(String(16), default=TaskChannel.wecom.value)
    state: Mapped[str] = mapped_column(String(16), default=TaskState.pending.value)
    size: Mapped[int] = mapped_column(Integer, default=0)
    msgid: Mapped[str] = mapped_column(String(64), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    reminders: Mapped[list[Any]] = mapped_column(JSON, default=list)  # epoch seconds of each reminder
    member_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class CampaignRecipient(Base):
    __tablename__ = "campaign_recipient"
    __table_args__ = (
        UniqueConstraint("campaign_id", "customer_id", name="uq_campaign_recipient"),
        Index("ix_campaign_recipient_task", "task_id"),
        Index("ix_campaign_recipient_customer", "customer_id", "delivered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_task.id", ondelete="SET NULL"),
                                                nullable=True)
    grp: Mapped[str] = mapped_column(String(16), default=RecipientGroup.send.value)
    variant: Mapped[str] = mapped_column(String(1), default="A")
    status: Mapped[str] = mapped_column(String(16), default=RecipientStatus.planned.value)
    reason: Mapped[str] = mapped_column(String(255), default="")
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


__all__ = ["Campaign", "CampaignRecipient", "CampaignTask"]
