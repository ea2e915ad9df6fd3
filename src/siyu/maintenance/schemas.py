"""API shapes of 用户维系: cadence policies and today's tasks."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from siyu.segments.schemas import ConditionGroup

MAX_EVERY_DAYS = 365
MAX_SNOOZE_DAYS = 30
MAX_FOLLOW_UP_DAYS = 365


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    conditions: ConditionGroup | None = None
    every_days: int = Field(ge=1, le=MAX_EVERY_DAYS)
    quiet_days: int = Field(0, ge=0, le=MAX_EVERY_DAYS)
    position: int = Field(100, ge=0, le=10000)


class PolicyUpdate(BaseModel):
    """A change to a policy: only the fields given change (``conditions`` null: every customer)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=64)
    conditions: ConditionGroup | None = None
    every_days: int | None = Field(None, ge=1, le=MAX_EVERY_DAYS)
    quiet_days: int | None = Field(None, ge=0, le=MAX_EVERY_DAYS)
    position: int | None = Field(None, ge=0, le=10000)
    active: bool | None = None


class PolicyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    conditions: dict[str, object] | None
    every_days: int
    quiet_days: int
    position: int
    active: bool
    matched: int


class PolicyCreated(PolicyOut):
    message: str = ""


class TaskOut(BaseModel):
    id: int
    kind: str
    customer_id: int | None  # None for a task about no one customer (kind moment)
    account_id: int
    due_at: date
    status: str
    title: str
    priority: int
    overdue_days: int
    detail: str


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class TaskDoneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000)
    follow_up_days: int | None = Field(None, ge=1, le=MAX_FOLLOW_UP_DAYS)
    follow_up_note: str = Field("", max_length=255)


class SnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(1, ge=1, le=MAX_SNOOZE_DAYS)


class SkipIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=255)


class TaskActionOut(BaseModel):
    id: int
    status: str
    touch_id: int | None
    finished_at: datetime | None


class CompletionOut(BaseModel):
    operator_id: int | None
    total: int
    done: int
    skipped: int
    closed: int
    rate: float


class FollowUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: int = Field(ge=1)
    days: int = Field(ge=1, le=MAX_FOLLOW_UP_DAYS)
    note: str = Field("", max_length=255)


class FollowUpOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: int
    account_id: int
    due_on: date
    note: str
    done: bool


class TaskSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generate_hour: int = Field(ge=0, le=23)
    generate_minute: int = Field(ge=0, le=59)
    cap_per_operator: int = Field(ge=1, le=500)


class TaskSettingsOut(TaskSettingsIn):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


# ---------------------------------------------------------------- 公海 and churn


class PoolSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool_untouched_days: int = Field(ge=0, le=3650)  # 0: nobody enters the pool for being untouched
    pool_claim_limit: int = Field(ge=1, le=1000)
    pool_hold_days: int = Field(ge=1, le=365)


class PoolSettingsOut(PoolSettingsIn):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


class PoolCustomerOut(BaseModel):
    customer_id: int
    name: str
    pool_since: datetime
    last_touch_at: datetime | None
    account_ids: list[int]


class PoolPage(BaseModel):
    items: list[PoolCustomerOut]
    next_cursor: str | None
    claimed_today: int
    claim_limit: int


class ClaimOut(BaseModel):
    customer_id: int
    owner_id: int
    claimed_at: datetime
    claimed_today: int
    claim_limit: int


class ChurnReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=32)
    note: str = Field("", max_length=255)


class ChurnOut(BaseModel):
    customer_id: int
    account_id: int
    name: str
    removed_at: datetime
    ended_by: str
    churn_reason: str
    churn_note: str
    other_accounts: list[int]


class ChurnPage(BaseModel):
    items: list[ChurnOut]
    next_cursor: str | None
