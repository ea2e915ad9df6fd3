"""Lucky draws (抽奖): who may win (a segment), the prizes (stock and odds), the seeded draw, the winners.

The draw is auditable: its seed is drawn at random when the draw is run, recorded with the
sorted eligible ids' fingerprint, and shown afterwards with the algorithm
(``draws.service.ALGORITHM``), so anyone can recompute the winners from the seed and the ids.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_


class DrawStatus(enum.StrEnum):
    draft = "draft"
    drawn = "drawn"


STATUS_LABELS = {DrawStatus.draft: N_("Not drawn yet"), DrawStatus.drawn: N_("Drawn")}


class LuckyDraw(Base):
    __tablename__ = "lucky_draw"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segment.id", ondelete="SET NULL"), nullable=True)
    exclude_blacklisted: Mapped[bool] = mapped_column(Boolean, default=True)  # 群黑名单 members cannot win
    status: Mapped[str] = mapped_column(String(16), default=DrawStatus.draft.value)
    seed: Mapped[str] = mapped_column(String(64), default="")  # hex; recorded when drawn, shown after
    eligible_count: Mapped[int] = mapped_column(Integer, default=0)
    eligible_digest: Mapped[str] = mapped_column(String(64), default="")  # sha256 of the sorted ids, comma-joined
    eligible_ids: Mapped[str] = mapped_column(Text, default="")  # the sorted ids, comma-joined (the audit)
    drawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    drawn_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DrawPrize(Base):
    __tablename__ = "lucky_draw_prize"

    id: Mapped[int] = mapped_column(primary_key=True)
    draw_id: Mapped[int] = mapped_column(ForeignKey("lucky_draw.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)  # the order prizes are tried in
    name: Mapped[str] = mapped_column(String(64))
    coupon_batch_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_batch.id", ondelete="SET NULL"),
                                                        nullable=True)  # else a gift
    stock: Mapped[int] = mapped_column(Integer)
    odds: Mapped[Decimal] = mapped_column(Numeric(6, 3))  # percent chance per eligible customer (0 < odds ≤ 100)


class DrawWinner(Base):
    """A winner and their prize: the gift ledger (a coupon prize carries its code)."""

    __tablename__ = "lucky_draw_winner"
    __table_args__ = (UniqueConstraint("draw_id", "customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    draw_id: Mapped[int] = mapped_column(ForeignKey("lucky_draw.id", ondelete="CASCADE"))
    prize_id: Mapped[int] = mapped_column(ForeignKey("lucky_draw_prize.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # the winner's place in the seeded order
    code: Mapped[str] = mapped_column(String(64), default="")
    notified: Mapped[bool] = mapped_column(Boolean, default=False)
