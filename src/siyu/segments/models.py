"""Saved segments (客户分群) and the RFM facts every segment, list and chart reads.

A *segment* is a saved condition tree (``schemas.ConditionTree``) compiled by
``segments.compiler`` — the one compiler behind the customer list, its exports and bulk
actions. A dynamic segment is compiled again on every read; a static one keeps the members
it had when its snapshot was taken (``SegmentMember``). A segment whose conditions name a
tag or custom field that was deleted is marked broken with the reason, never read as empty.

``CustomerRfm`` holds each buyer's recency / frequency / monetary scores and the classic
RFM segment, refreshed nightly and after orders (``segments.rfm``), so "重要价值客户" is an
index lookup at a million customers.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_
from siyu.customers.models import Customer


class SegmentMode(enum.StrEnum):
    dynamic = "dynamic"  # compiled again on every read
    static = "static"  # the members of its last snapshot


class RfmSegment(enum.StrEnum):
    """The eight classic RFM segments: high/low recency, frequency and monetary value."""

    important_value = "important_value"  # R高 F高 M高
    important_develop = "important_develop"  # R高 F低 M高
    important_keep = "important_keep"  # R低 F高 M高
    important_retain = "important_retain"  # R低 F低 M高
    general_value = "general_value"  # R高 F高 M低
    general_develop = "general_develop"  # R高 F低 M低
    general_keep = "general_keep"  # R低 F高 M低
    general_retain = "general_retain"  # R低 F低 M低


RFM_LABELS = {
    RfmSegment.important_value: N_("Important value"),
    RfmSegment.important_develop: N_("Important to develop"),
    RfmSegment.important_keep: N_("Important to keep"),
    RfmSegment.important_retain: N_("Important to win back"),
    RfmSegment.general_value: N_("General value"),
    RfmSegment.general_develop: N_("General to develop"),
    RfmSegment.general_keep: N_("General to keep"),
    RfmSegment.general_retain: N_("General to win back"),
}


class Segment(Base):
    __tablename__ = "segment"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON)
    mode: Mapped[str] = mapped_column(String(16), default=SegmentMode.dynamic.value)
    broken: Mapped[bool] = mapped_column(Boolean, default=False)
    broken_reason: Mapped[str] = mapped_column(String(255), default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True,
                                                 index=True)
    snapshot_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    snapshot_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class SegmentMember(Base):
    """A static segment's members as of its snapshot."""

    __tablename__ = "segment_member"
    __table_args__ = (Index("ix_segment_member_customer", "customer_id"),)

    segment_id: Mapped[int] = mapped_column(ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True)


class CustomerRfm(Base):
    """One buyer's RFM facts (customers without a counted order have no row)."""

    __tablename__ = "customer_rfm"
    __table_args__ = (Index("ix_customer_rfm_segment", "segment", "customer_id"),)

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True)
    last_order_at: Mapped[datetime] = mapped_column(UTCDateTime())
    frequency: Mapped[int] = mapped_column(Integer)
    monetary: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    r_score: Mapped[int] = mapped_column(Integer)
    f_score: Mapped[int] = mapped_column(Integer)
    m_score: Mapped[int] = mapped_column(Integer)
    segment: Mapped[str] = mapped_column(String(24))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# Every segment leaf is tested per candidate customer, and every read keeps only customers not merged
# away: this partial index answers that check without reading the customer's row (an index-only probe
# on PostgreSQL once the table is vacuumed). Declared here, beside the reads it serves (migration 0051).
Index("ix_customer_live", Customer.id, postgresql_where=Customer.merged_into_id.is_(None),
      sqlite_where=Customer.merged_into_id.is_(None))


__all__ = ["CustomerRfm", "RfmSegment", "Segment", "SegmentMember", "SegmentMode"]
