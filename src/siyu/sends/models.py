"""The one send-quota ledger: every corp mass message a customer (or a customer group) is sent.

WeCom caps how many corp mass messages (企业群发, ``add_msg_template``) one customer or one group
receives: at most as many a calendar month as the month has days, or — when the corp's admin
chose so — 7 a week or 1 a day (W:92135; PLATFORM.md "Sending to many"). Going over is only
reported afterwards (``get_groupmsg_send_result`` status 3), so Siyu counts *before* it creates
anything: SOP steps, mass sends (campaigns) and group posts all reserve their recipients here,
in the transaction that records the send, and release them when the send is cancelled or fails
before WeCom created it. One row per recipient per send; the count of a period is an indexed
range read on (target kind, target, day), from the index of open reservations alone.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Date, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_


class QuotaMode(enum.StrEnum):
    """The corp's rule, as its admin set it in WeCom's admin console (W:92135)."""

    month = "month"  # at most as many a calendar month as the month has days (WeCom's default)
    week = "week"  # at most 7 a week (Monday to Sunday)
    day = "day"  # at most 1 a day


QUOTA_MODE_LABELS = {
    QuotaMode.month: N_("As many a month as the month has days (WeCom's default)"),
    QuotaMode.week: N_("7 a week"),
    QuotaMode.day: N_("1 a day"),
}
WEEK_LIMIT = 7  # W:92135: the admin's alternative, 7 a week
DAY_LIMIT = 1  # W:92135: or 1 a day


class TargetKind(enum.StrEnum):
    customer = "customer"
    group = "group"  # a customer group chat (groups.models.GroupChat id)


class SendSource(enum.StrEnum):
    sop = "sop"
    campaign = "campaign"
    group_post = "group_post"
    inbox = "inbox"


class SendSettings(Base):
    """The one row of send settings. Its update is also the ledger's lock: ``reserve`` bumps
    ``lock_seq`` first, so two reservations never count the same period at once."""

    __tablename__ = "send_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    quota_mode: Mapped[str] = mapped_column(String(8), default=QuotaMode.month.value)
    lock_seq: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class SendLedgerEntry(Base):
    """One recipient of one corp mass message, on the local day it goes out."""

    __tablename__ = "send_ledger"
    __table_args__ = (
        Index("ix_send_ledger_target_day", "target_kind", "target_id", "day"),
        # The open reservations only (what a quota counts): the count of a period is read from the index alone.
        Index("ix_send_ledger_open", "target_kind", "target_id", "day", postgresql_where=text("released_at IS NULL"),
              sqlite_where=text("released_at IS NULL")),
        Index("ix_send_ledger_source_ref", "source", "ref"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(8))
    target_id: Mapped[int] = mapped_column(Integer)
    day: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(64), default="")  # the send's own id, e.g. "step_run:12"
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["SendLedgerEntry", "SendSettings"]
