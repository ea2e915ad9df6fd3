"""Tables of the goals domain.

``Goal``: a metric from the goals catalogue (``goals.catalogue``) over a scope, a target, a start and a
deadline (local days, both included), owned by a user (the goal shows on their 工作台). A goal with a
``parent_id`` is a sub-goal: one account's or one operator's share of its parent's target.

``DashboardFigure``: the admin dashboard's company numbers, precomputed by a periodic job
(``goals.jobs``) into one small row per (figure, local day), so the dashboard reads a handful of rows.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class Goal(Base):
    __tablename__ = "goal"
    __table_args__ = (Index("ix_goal_owner", "owner_id"), Index("ix_goal_parent", "parent_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    metric: Mapped[str] = mapped_column(String(32))
    scope_kind: Mapped[str] = mapped_column(String(16), default="company")
    scope_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    scope_text: Mapped[str] = mapped_column(String(24), default="")  # group kind (GroupKind value)
    target: Mapped[float] = mapped_column(Float)
    start: Mapped[date] = mapped_column(Date)
    deadline: Mapped[date] = mapped_column(Date)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("goal.id", ondelete="CASCADE"), nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def scope_key(self) -> str:
        if self.scope_kind == "company":
            return "company"
        if self.scope_kind == "group_kind":
            return f"group_kind:{self.scope_text}"
        return f"{self.scope_kind}:{self.scope_id}"


class DashboardFigure(Base):
    """One precomputed company figure for one local day (the admin dashboard's numbers)."""

    __tablename__ = "dashboard_figure"
    __table_args__ = (UniqueConstraint("name", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    day: Mapped[date] = mapped_column(Date)
    value: Mapped[float] = mapped_column(Float, default=0)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["DashboardFigure", "Goal"]
