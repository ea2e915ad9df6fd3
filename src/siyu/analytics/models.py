"""Tables of the analytics domain.

``StageTransition`` keeps the ladder over time compactly: one row per change of a customer's stage
(not a daily copy of every customer). Each row is valid from ``at`` until the next change
(``until``, NULL while current), so "the stage of every customer on day D" is one range filter —
``at <= D < until`` — answered from ``ix_stage_transition_at``. A customer with no row valid on D but
added before D is on the first rung (流量), the stage every customer starts with.

``MemberBehaviour`` stores WeCom's per-member daily statistics (``get_user_behavior_data``, W:96358),
fetched one member per call because several userids come back summed.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Float, ForeignKey, Index, Integer, SmallInteger, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.customers.models import Customer

# The ladder as small integers: compact rows, and "reached 客户 or higher" is ``to_rank >= 2``.
STAGE_RANKS: dict[str, int] = {"traffic": 0, "user": 1, "customer": 2, "fan": 3}
RANK_STAGES: dict[int, str] = {rank: stage for stage, rank in STAGE_RANKS.items()}


class StageTransition(Base):
    __tablename__ = "stage_transition"
    __table_args__ = (
        Index("ix_stage_transition_customer_at", "customer_id", "at"),
        Index("ix_stage_transition_at", "at", "until", "to_rank"),
        # Covering: a scope's customers' rows valid at an instant, read from the index alone.
        Index("ix_stage_transition_customer_valid", "customer_id", "at", "until", "to_rank"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    # NULL: the customer's first row (the backfill's initial stage at the add date).
    from_rank: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    to_rank: Mapped[int] = mapped_column(SmallInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# "Customers added before D" for the whole company: a range count over the live customers' add dates, read
# from the index alone (SQLite covers the count only when the index holds ``merged_into_id`` too).
Index("ix_customer_live_added", Customer.created_at, Customer.merged_into_id,
      postgresql_where=text("merged_into_id IS NULL"), sqlite_where=text("merged_into_id IS NULL"))


class StageCountDelta(Base):
    """How the number of live customers on a rung (``rank`` ≥ 1) changes, per UTC hour (``hour`` = epoch
    seconds // 3600). The rung's count at an hour-aligned instant E is ``sum(n) WHERE hour < E // 3600``:
    a transition row counts +1 from the hour its validity starts (``max(at, customer added)``) and −1 from
    the hour it ends (``until``), exactly the range the funnel's ``at < E <= until`` reads. Rows are only
    appended (no hot row to lock); the nightly rebuild folds them into one row per (hour, rank)."""

    __tablename__ = "stage_count_delta"
    __table_args__ = (Index("ix_stage_count_delta_hour", "hour", "rank", "n"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(SmallInteger)
    n: Mapped[int] = mapped_column(Integer)


class CustomerLadder(Base):
    """How long after being added each customer first stood on 用户, 客户, 粉丝 or higher: the least
    ``at - customer.created_at`` of their rows with ``to_rank`` ≥ the rung, in whole microseconds (exact, so
    "within 7 days" is an integer comparison). What the weekly cohorts read instead of every transition."""

    __tablename__ = "customer_ladder"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True)
    user_lag_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    customer_lag_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fan_lag_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class CohortLadderCount(Base):
    """How many live customers added in a UTC hour (``hour`` = epoch seconds // 3600 of ``created_at``) first
    stood on ``rung`` (1–3) or higher within ``within_days`` (7, 30 or 90: the smallest window holding their
    lag, from ``CustomerLadder``; later or never: no row). A weekly cohort's "reached 客户 within 30 days" is
    ``sum(n)`` over its 168 hours, rung 2 and ``within_days <= 30`` — a 52-week table sums a few tens of
    thousands of rows instead of joining every customer. Appended where the ladder changes, folded nightly."""

    __tablename__ = "cohort_ladder_count"
    __table_args__ = (Index("ix_cohort_ladder_count_hour", "hour", "rung", "within_days", "n"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger)
    rung: Mapped[int] = mapped_column(SmallInteger)
    within_days: Mapped[int] = mapped_column(SmallInteger)
    n: Mapped[int] = mapped_column(Integer)


class SegmentRollup(Base):
    """A saved segment's funnel counts as of ``computed_at`` (``SegmentStageDelta``), refreshed every hour by
    a job. NULL ``computed_at``: out of date (a merge or its undo since). ``customer_watermark``: the highest
    customer id then — a customer added since (an import may backdate them) sends the funnel to the live read."""

    __tablename__ = "segment_rollup"

    segment_id: Mapped[int] = mapped_column(ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    members: Mapped[int] = mapped_column(Integer, default=0)
    customer_watermark: Mapped[int] = mapped_column(Integer, default=0)


class SegmentStageDelta(Base):
    """``StageCountDelta`` for one saved segment's members as of ``SegmentRollup.computed_at``, plus
    ``rank`` 0: +1 in the hour each member was added (the funnel's "added before the date")."""

    __tablename__ = "segment_stage_delta"
    __table_args__ = (Index("ix_segment_stage_delta_hour", "segment_id", "hour", "rank", "n"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segment.id", ondelete="CASCADE"))
    hour: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(SmallInteger)
    n: Mapped[int] = mapped_column(Integer)


class ReportState:
    sending = "sending"  # claimed; WeCom being called (or the run was interrupted: the next run sends again)
    sent = "sent"
    failed = "failed"
    no_owner = "no_owner"  # nobody with a WeCom userid to send it to


class WeeklyReport(Base):
    """One weekly report per (scope, week) delivered to its owner as a WeCom app message (W:90236)."""

    __tablename__ = "weekly_report"
    __table_args__ = (UniqueConstraint("scope", "week"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(40))
    week: Mapped[date] = mapped_column(Date)  # the Monday the reported week starts (local)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    touser: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default=ReportState.sent)
    msgid: Mapped[str] = mapped_column(String(128), default="")
    error: Mapped[str] = mapped_column(String(500), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BehaviourState:
    ok = "ok"
    unknown_member = "unknown_member"  # WeCom does not know this userid (errcode 60111)
    failed = "failed"


class MemberBehaviour(Base):
    """One member's (WeCom userid's) figures for one day, as WeCom reported them."""

    __tablename__ = "member_behaviour"
    __table_args__ = (UniqueConstraint("account_id", "day"), Index("ix_member_behaviour_day", "day"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16), default=BehaviourState.ok)
    errcode: Mapped[int] = mapped_column(Integer, default=0)
    chat_cnt: Mapped[int] = mapped_column(Integer, default=0)
    message_cnt: Mapped[int] = mapped_column(Integer, default=0)
    reply_percentage: Mapped[float | None] = mapped_column(Float, nullable=True)
    avg_reply_time: Mapped[int | None] = mapped_column(Integer, nullable=True)  # minutes
    negative_feedback_cnt: Mapped[int] = mapped_column(Integer, default=0)
    new_apply_cnt: Mapped[int] = mapped_column(Integer, default=0)
    new_contact_cnt: Mapped[int] = mapped_column(Integer, default=0)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
