"""API shapes of goals: a goal as written, and as read back with its progress, forecast and state."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field


class GoalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    metric: str = Field(min_length=1, max_length=32)
    scope: str = Field(default="company", max_length=40)
    target: float
    start: date
    deadline: date
    owner_id: int | None = None
    parent_id: int | None = None


class GoalEdit(BaseModel):
    """A goal's changes: only the fields sent change. ``metric`` and ``scope`` only while it has no sub-goals;
    ``owner_id`` by an admin or a planner (anyone may keep themselves)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=80)
    metric: str | None = Field(default=None, min_length=1, max_length=32)
    scope: str | None = Field(default=None, max_length=40)
    target: float | None = None
    start: date | None = None
    deadline: date | None = None
    owner_id: int | None = None


class PointOut(BaseModel):
    at: date
    value: float | None


class ForecastOut(BaseModel):
    linear: float | None
    seasonal: float | None
    linear_points: list[PointOut]
    seasonal_points: list[PointOut]


class GoalOut(BaseModel):
    id: int
    name: str
    metric: str
    metric_label: str
    unit: str
    scope: str
    target: float
    start: date
    deadline: date
    owner_id: int | None
    parent_id: int | None
    progress: float | None
    forecast: ForecastOut
    state: str
    has_data: bool
    points: list[PointOut]
    subgoals_total: float | None
    subgoals_add_up: bool | None
