"""API shapes of 客户SOP: a SOP as written (trigger, audience, steps, exits) and as read back."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from siyu.core.errors import Invalid
from siyu.customers.models import Stage
from siyu.segments.schemas import ConditionGroup
from siyu.sops.models import ExitKind, StepKind, TriggerKind

MAX_STEPS = 20
MAX_DAY = 365
MAX_REPEAT = 52  # "every Monday": at most a year of Mondays
MAX_TEXT = 1000  # characters; a WeCom text is at most 4000 bytes (W:92135), checked in bytes at save
MAX_MATERIALS = 9  # W:92135 add_msg_template: at most 9 attachments
WEEKDAYS = {
    "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5, "sunday": 6,
    "mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6,
    "一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6,
}
_DAY = re.compile(r"^(?:day\s*|第\s*)(\d{1,3})\s*天?(?:\s+(\d{1,2}):(\d{2}))?$", re.IGNORECASE)
_WEEKLY = re.compile(r"^(?:every\s+|每)\s*(?:周|星期)?\s*([a-z]+|[一二三四五六日天])(?:\s+(\d{1,2}):(\d{2}))?$",
                     re.IGNORECASE)
DEFAULT_TIME = (9, 0)


def parse_when(text: str) -> dict[str, int | None]:
    """"day 3 10:00" / "第3天 10:00" → day 3 at 10:00; "every Monday 09:00" / "每周一 09:00" → Mondays.

    The time defaults to 09:00. Raises ``Invalid`` with the accepted forms."""
    value = " ".join(text.strip().split())
    found = _DAY.match(value)
    weekday: int | None = None
    day: int | None = None
    if found:
        day = int(found.group(1))
        hour, minute = found.group(2), found.group(3)
    else:
        found = _WEEKLY.match(value)
        if not found or found.group(1).lower() not in WEEKDAYS:
            raise Invalid("Write the step's time like day 0 09:00, day 3 10:00 or every Monday 09:00",
                          field="steps", value=text)
        weekday = WEEKDAYS[found.group(1).lower()]
        hour, minute = found.group(2), found.group(3)
    h, m = (int(hour), int(minute)) if hour is not None else DEFAULT_TIME
    if day is not None and day > MAX_DAY:
        raise Invalid("A step is at most day {max}", field="steps", max=MAX_DAY)
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise Invalid("Write the step's time like day 0 09:00, day 3 10:00 or every Monday 09:00",
                      field="steps", value=text)
    return {"day": day, "weekday": weekday, "hour": h, "minute": m}


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: TriggerKind
    channel_ids: list[int] = Field(default_factory=list, max_length=50)
    tag_ids: list[int] = Field(default_factory=list, max_length=50)
    stages: list[Stage] = Field(default_factory=list, max_length=4)
    days: int | None = Field(None, ge=1, le=MAX_DAY)  # no_touch: this many days without a touch


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: str = Field(min_length=1, max_length=32)  # "day 0 09:00", "every Monday 09:00"
    kind: StepKind
    text: str = Field("", max_length=MAX_TEXT)  # the script (task) or the message (send)
    # From the library (话术库 / 素材库): a script used when ``text`` is empty, and materials the operator
    # sends (task) or that go as attachments (send: links, images and mini-program cards).
    script_id: int | None = Field(None, ge=1)
    material_ids: list[int] = Field(default_factory=list, max_length=MAX_MATERIALS)
    tag_id: int | None = Field(None, ge=1)  # the tag step's corp tag
    coupon_batch_id: int | None = Field(None, ge=1)  # the coupon step's batch
    times: int = Field(4, ge=1, le=MAX_REPEAT)  # how many times an "every …" step repeats

    @field_validator("text")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class SopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    trigger: TriggerIn
    conditions: ConditionGroup | None = None
    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS)
    exits: list[ExitKind] = Field(default_factory=list, max_length=3)


class SopOut(BaseModel):
    id: int
    name: str
    status: str
    version: int
    trigger: dict[str, Any]
    conditions: dict[str, Any] | None
    steps: list[dict[str, Any]]
    exits: list[str]
    enrolled: int  # active enrolments the viewer may see
    completed: int
    exited: int
    created_at: datetime


class SopList(BaseModel):
    items: list[SopOut]


class EnrolmentOut(BaseModel):
    id: int
    sop_id: int
    version: int
    customer_id: int
    account_id: int
    status: str
    exit_reason: str
    anchor_at: datetime
    created_at: datetime
    steps: list[dict[str, Any]] = Field(default_factory=list)


class EnrolmentPage(BaseModel):
    items: list[EnrolmentOut]
    next_cursor: str | None = None


class DryRunStep(BaseModel):
    step: int
    kind: str
    due_at: datetime
    text: str
    outcome: str  # what would happen: task / send / over_quota / no_wecom / tag
    reason: str = ""


class DryRunCustomer(BaseModel):
    customer_id: int
    name: str
    account_id: int
    steps: list[DryRunStep]


class DryRunOut(BaseModel):
    entering: int
    items: list[DryRunCustomer]
    message: str = ""
