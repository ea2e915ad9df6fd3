"""线下活动 (offline events): 品鉴会, 试吃, 训练营 with capacity, sign-ups, a waiting list and attendance.

Why the seat count is a column: "no over-booking" must hold when a hundred people press 报名 at once.
``OfflineEvent.seats_taken`` is moved only by a guarded ``UPDATE … SET seats_taken = seats_taken + 1
WHERE seats_taken < capacity`` in the same transaction as the sign-up row (``service.sign_up``): the
database serialises the updates (SQLite's write lock, PostgreSQL's row lock with the WHERE checked
again after the wait), so a seat is given at most ``capacity`` times; whoever finds none is written
to the waiting list. A sign-up is unique per event and phone (and per event and customer), so the
same person pressing twice is one sign-up.

Each sign-up carries a random ``ticket``: the QR the customer shows at the door opens the staff
check-in page for it (login required). Attendance is an ``offline_event`` touch on the customer's
timeline; after the event, attendees and no-shows get follow-up tasks (今日任务) with different texts.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_


class EventKind(enum.StrEnum):
    tasting = "tasting"  # 品鉴会
    sampling = "sampling"  # 试吃
    camp = "camp"  # 训练营
    other = "other"


EVENT_KIND_LABELS = {EventKind.tasting: N_("Tasting (品鉴会)"), EventKind.sampling: N_("Sampling (试吃)"),
                     EventKind.camp: N_("Training camp (训练营)"), EventKind.other: N_("Other event")}


class EventStatus(enum.StrEnum):
    open = "open"  # sign-ups taken
    closed = "closed"  # no new sign-ups (the public link answers 404)
    cancelled = "cancelled"


EVENT_STATUS_LABELS = {EventStatus.open: N_("Open for sign-up"), EventStatus.closed: N_("Sign-up closed"),
                       EventStatus.cancelled: N_("offline.status.cancelled")}


class SignupStatus(enum.StrEnum):
    registered = "registered"  # holds a seat
    waitlisted = "waitlisted"  # 候补: gets a seat when one frees, in order
    cancelled = "cancelled"


SIGNUP_STATUS_LABELS = {SignupStatus.registered: N_("Registered"), SignupStatus.waitlisted: N_("Waiting list"),
                        SignupStatus.cancelled: N_("offline.status.cancelled")}


class SignupSource(enum.StrEnum):
    console = "console"  # an operator signed the customer up
    public = "public"  # the customer, through the public page


class OfflineEvent(Base):
    __tablename__ = "offline_event"
    __table_args__ = (Index("ix_offline_event_starts", "starts_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default=EventKind.tasting.value)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    place: Mapped[str] = mapped_column(String(255), default="")
    capacity: Mapped[int] = mapped_column(Integer)
    seats_taken: Mapped[int] = mapped_column(Integer, default=0)  # registered sign-ups; see the module doc
    # Customer-facing: shown on the public page and in invitations (customer-safe variables only).
    description: Mapped[str] = mapped_column(Text, default="")
    invite_text: Mapped[str] = mapped_column(String(255), default="")
    attended_text: Mapped[str] = mapped_column(String(255), default="")  # follow-up for attendees
    no_show_text: Mapped[str] = mapped_column(String(255), default="")  # follow-up for no-shows
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.open.value)
    # The accounts hosting it: their operators invite, sign up and check in; empty: every account.
    account_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    # Part of the signed public key: a new nonce ends every link and QR given out before.
    public_nonce: Mapped[str] = mapped_column(String(16))
    followed_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class OfflineSignup(Base):
    __tablename__ = "offline_signup"
    __table_args__ = (
        UniqueConstraint("event_id", "phone", name="uq_offline_signup_phone"),
        UniqueConstraint("event_id", "customer_id", name="uq_offline_signup_customer"),
        Index("ix_offline_signup_event_status", "event_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("offline_event.id", ondelete="CASCADE"))
    # None: a public sign-up no customer's phone matched (to review: link or create a customer).
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True,
                                                    index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)  # normalised 11-digit mobile
    status: Mapped[str] = mapped_column(String(16), default=SignupStatus.registered.value)
    source: Mapped[str] = mapped_column(String(16), default=SignupSource.console.value)
    ticket: Mapped[str] = mapped_column(String(32), unique=True)  # the check-in QR's secret
    checked_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    checked_in_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OfflineInvitation(Base):
    """One customer invited to an event (through a task for the account's operator)."""

    __tablename__ = "offline_invitation"
    __table_args__ = (UniqueConstraint("event_id", "customer_id", name="uq_offline_invitation"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("offline_event.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["OfflineEvent", "OfflineInvitation", "OfflineSignup"]
