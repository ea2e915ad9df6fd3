"""What the API and the console forms send and answer for offline events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator

from siyu.core.ids import Id
from siyu.core.settings import local_zone
from siyu.core.text import Name, NoNul
from siyu.offline.models import EventKind, EventStatus

MAX_CAPACITY = 10_000  # one event's seats; a larger gathering is not a 品鉴会
CustomerText = Annotated[str, NoNul, StringConstraints(strip_whitespace=True, max_length=120)]


class EventIn(BaseModel):
    name: Name = Field(min_length=1, max_length=64)
    kind: EventKind = EventKind.tasting
    starts_at: datetime
    ends_at: datetime
    place: Annotated[str, NoNul, StringConstraints(strip_whitespace=True, max_length=255)] = ""
    capacity: int = Field(ge=1, le=MAX_CAPACITY)
    description: Annotated[str, NoNul, StringConstraints(max_length=2000)] = ""
    # Customer-facing texts (customer-safe variables only): the invitation (the sign-up link is added after
    # it), and the follow-ups after the event for those who came and those who did not.
    invite_text: CustomerText = ""
    attended_text: CustomerText = ""
    no_show_text: CustomerText = ""
    account_ids: list[Id] = Field(default_factory=list, max_length=200)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def local_when_naive(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=local_zone()) if value.tzinfo is None else value


class EventOut(BaseModel):
    id: int
    name: str
    kind: EventKind
    status: EventStatus
    starts_at: datetime
    ends_at: datetime
    place: str
    capacity: int
    registered: int
    waitlisted: int
    checked_in: int
    invited: int
    public_url: str


class EventList(BaseModel):
    items: list[EventOut]


class SignupIn(BaseModel):
    """An operator signs a customer up (``customer_id``), or a person by name and phone."""

    customer_id: Id | None = None
    name: Annotated[str, NoNul, StringConstraints(strip_whitespace=True, max_length=32)] = ""
    phone: Annotated[str, NoNul, StringConstraints(strip_whitespace=True, max_length=32)] = ""


class SignupOut(BaseModel):
    id: int
    event_id: int
    customer_id: int | None
    name: str
    phone: str
    status: str
    source: str
    checked_in_at: datetime | None
    created: bool = False  # False: the person was already signed up (this is their sign-up)


class SignupList(BaseModel):
    items: list[SignupOut]


class InviteIn(BaseModel):
    segment_id: Id


class InviteOut(BaseModel):
    invited: int
    already: int
    no_account: int
    tasks: int
