"""客户SOP: sequences that run — a trigger, an audience, steps at times relative to the trigger.

A ``Sop`` is the thing operators name and switch (running, paused, stopped). What it does lives
in a ``SopVersion``: the trigger, the audience condition (a segment condition tree, compiled by
the one segment compiler), the steps and the early-exit rules. Editing a SOP writes a new version;
an enrolment keeps the version it entered with, so customers in the middle of a sequence finish
the one they started.

An ``SopEnrolment`` is one customer on one account going through one version; the unique key
(SOP, customer, occurrence) is what makes enrolling idempotent — a trigger seen twice (by the hook
and by the periodic job) enrols once. Its steps are written as ``SopStepRun`` rows when it enters
(due time computed from the trigger's moment), unique per (enrolment, step, repetition): the job
runs a due row by moving it out of ``pending`` with a conditional UPDATE, so a second run — or a
second worker — finds nothing to do.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_


class SopStatus(enum.StrEnum):
    running = "running"
    paused = "paused"  # nobody enters, no step runs; resumes where it stood
    stopped = "stopped"  # for good: running enrolments end, their pending steps are cancelled


SOP_STATUS_LABELS = {SopStatus.running: N_("Running"), SopStatus.paused: N_("Paused"),
                     SopStatus.stopped: N_("Stopped")}


class TriggerKind(enum.StrEnum):
    channel = "channel"  # added through one of these channels (channels.ChannelAdd)
    tag = "tag"  # got one of these tags
    stage = "stage"  # is at one of these lifecycle stages
    purchase = "purchase"  # bought (orders' purchase facts)
    no_touch = "no_touch"  # N days without a touch
    birthday = "birthday"  # the birthday custom field is today


TRIGGER_LABELS = {
    TriggerKind.channel: N_("Added through a channel"),
    TriggerKind.tag: N_("A tag was added"),
    TriggerKind.stage: N_("Reached a lifecycle stage"),
    TriggerKind.purchase: N_("Made a purchase"),
    TriggerKind.no_touch: N_("Days without a touch"),
    TriggerKind.birthday: N_("Birthday"),
}


class StepKind(enum.StrEnum):
    task = "task"  # a task for the account's operator, with the script to use
    send = "send"  # a WeCom corp mass message to this one customer (add_msg_template), within quota
    tag = "tag"  # a corp tag on the customer (moments visibility)
    coupon = "coupon"  # one code of a coupon batch (coupons.service.issue), on the customer's timeline


STEP_KIND_LABELS = {StepKind.task: N_("Task for the operator"), StepKind.send: N_("WeCom message"),
                    StepKind.tag: N_("Moments visibility tag"), StepKind.coupon: N_("Issue a coupon")}


class ExitKind(enum.StrEnum):
    purchase = "purchase"  # the customer bought after entering
    reply = "reply"  # the customer wrote to us after entering
    deleted = "deleted"  # the friendship on the enrolment's account ended


EXIT_LABELS = {ExitKind.purchase: N_("Exit when the customer buys"),
               ExitKind.reply: N_("Exit when the customer replies"),
               ExitKind.deleted: N_("Exit when the customer deletes us")}


class EnrolmentStatus(enum.StrEnum):
    active = "active"
    completed = "completed"
    exited = "exited"
    stopped = "stopped"


class RunStatus(enum.StrEnum):
    pending = "pending"
    sending = "sending"  # claimed, the WeCom call under way (committed first: never sent twice)
    done = "done"
    cancelled = "cancelled"


class RunOutcome(enum.StrEnum):
    task = "task"
    sent = "sent"
    tagged = "tagged"
    coupon = "coupon"  # a code of the batch issued (or the one the customer held already)
    no_coupon = "no_coupon"  # the batch's pool was empty or the batch expired: nothing issued
    over_quota = "over_quota"  # a send over the customer's quota: a task for the operator instead
    no_wecom = "no_wecom"  # a send that cannot go through WeCom (personal account, not connected): a task
    send_failed = "send_failed"  # WeCom refused: a task for the operator instead
    maybe_sent = "maybe_sent"  # the answer was lost after WeCom may have acted: not sent again
    exited = "exited"
    stopped = "stopped"


OUTCOME_LABELS = {
    RunOutcome.task: N_("Task created"),
    RunOutcome.sent: N_("WeCom message created"),
    RunOutcome.tagged: N_("Tag added"),
    RunOutcome.coupon: N_("Coupon issued"),
    RunOutcome.no_coupon: N_("No coupon issued: the batch is used up or expired"),
    RunOutcome.over_quota: N_("Over the send quota: became a task for the operator"),
    RunOutcome.no_wecom: N_("Cannot be sent through WeCom: became a task for the operator"),
    RunOutcome.send_failed: N_("WeCom refused the message: became a task for the operator"),
    RunOutcome.maybe_sent: N_("WeCom's answer was lost: not sent again"),
    RunOutcome.exited: N_("Not run: the customer left the SOP"),
    RunOutcome.stopped: N_("Not run: the SOP was stopped"),
}


class Sop(Base):
    __tablename__ = "sop"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=SopStatus.running.value)
    version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the current version
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)  # triggers before it are not seen
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class SopVersion(Base):
    __tablename__ = "sop_version"
    __table_args__ = (UniqueConstraint("sop_id", "number", name="uq_sop_version_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_id: Mapped[int] = mapped_column(ForeignKey("sop.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON)  # schemas.TriggerIn as JSON
    conditions: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # segment condition tree
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # schemas.StepIn as JSON, with the parsed time
    exits: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SopEnrolment(Base):
    __tablename__ = "sop_enrolment"
    __table_args__ = (
        UniqueConstraint("sop_id", "customer_id", "occurrence", name="uq_sop_enrolment_key"),
        Index("ix_sop_enrolment_sop_status", "sop_id", "status"),
        Index("ix_sop_enrolment_account_sop", "account_id", "sop_id"),
        Index("ix_sop_enrolment_customer_status", "customer_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_id: Mapped[int] = mapped_column(ForeignKey("sop.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("sop_version.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    # Which firing of the trigger: "" for once-only triggers, the day or year for repeating ones.
    occurrence: Mapped[str] = mapped_column(String(32), default="")
    anchor_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the trigger's moment: "day 0"
    status: Mapped[str] = mapped_column(String(16), default=EnrolmentStatus.active.value)
    exit_reason: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SopStepRun(Base):
    __tablename__ = "sop_step_run"
    __table_args__ = (
        UniqueConstraint("enrolment_id", "step_index", "seq", name="uq_sop_step_run_key"),
        Index("ix_sop_step_run_status_due", "status", "due_at"),
        # A task deleted (the day's list made again, a merge) sets its runs' task_id NULL: found by index,
        # not by a scan of every run per task.
        Index("ix_sop_step_run_task", "task_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("sop_enrolment.id", ondelete="CASCADE"))
    sop_id: Mapped[int] = mapped_column(ForeignKey("sop.id", ondelete="CASCADE"), index=True)
    step_index: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer, default=0)  # the repetition of an "every Monday" step
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.pending.value)
    outcome: Mapped[str] = mapped_column(String(16), default="")
    detail: Mapped[str] = mapped_column(String(255), default="")  # why (over quota: the ledger's reason)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("maintenance_task.id", ondelete="SET NULL"), nullable=True)
    msgid: Mapped[str] = mapped_column(String(64), default="")
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ran_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


__all__ = ["Sop", "SopEnrolment", "SopStepRun", "SopVersion"]
