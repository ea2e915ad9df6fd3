from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from siyu.core.ids import Id
from siyu.core.text import Name, NoNul
from siyu.customers.models import FieldType, TagGroupKind, TouchKind

MAX_TEXT = 20000  # characters in a description or note; a WeChat remark description is far shorter
PhoneStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=32,
                                            pattern=r"^\+?[0-9 \-()]{3,32}$")]
TagName = Annotated[str, NoNul, StringConstraints(strip_whitespace=True, min_length=1, max_length=130)]


class ObjectiveFacts(BaseModel):
    gender: str | None = Field(None, max_length=8)
    age_band: str | None = Field(None, max_length=16)
    city: str | None = Field(None, max_length=64)
    job: str | None = Field(None, max_length=64)
    income_band: str | None = Field(None, max_length=32)
    family: str | None = Field(None, max_length=128)
    objective_notes: str | None = Field(None, max_length=MAX_TEXT)
    emotional_notes: str | None = Field(None, max_length=MAX_TEXT)
    source: str | None = Field(None, max_length=64)
    wechat_id: str | None = Field(None, max_length=64)


class CustomerIn(ObjectiveFacts):
    name: Name = Field(min_length=1, max_length=128)
    account_id: Id
    remark_name: Name = Field("", max_length=128)
    salutation: Name = Field("", max_length=64)  # 称呼 in messages to the customer; empty: the nickname
    tags: list[TagName] = Field(default_factory=list, max_length=200)
    phones: list[PhoneStr] = Field(default_factory=list, max_length=20)
    description: str = Field("", max_length=MAX_TEXT)
    custom_fields: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class CustomerUpdate(ObjectiveFacts):
    name: Name | None = Field(None, min_length=1, max_length=128)
    # Remark fields belong to one friendship: which account's card to edit.
    account_id: Id | None = None
    remark_name: Name | None = Field(None, max_length=128)
    salutation: Name | None = Field(None, max_length=64)
    phones: list[PhoneStr] | None = Field(None, max_length=20)
    description: str | None = Field(None, max_length=MAX_TEXT)
    tags: list[TagName] | None = Field(None, max_length=200)
    custom_fields: dict[str, Any] | None = None


class TagOut(BaseModel):
    id: int
    name: str
    group_id: int
    group: str


class AttachmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    title: str
    url: str


class FriendshipOut(BaseModel):
    id: int
    account_id: int
    account_name: str
    remark_name: str
    salutation: str
    description: str
    phones: list[str]
    status: str
    channel_state: str
    added_at: datetime
    attachments: list[AttachmentOut]


class AddressIn(BaseModel):
    label: str = Field("", max_length=32)
    recipient: str = Field("", max_length=64)
    phone: str = Field("", max_length=32)
    region: str = Field("", max_length=128)
    detail: str = Field("", max_length=255)


class AddressOut(AddressIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class AttachmentIn(BaseModel):
    account_id: Id
    kind: str = Field("picture", pattern="^(picture|card)$")
    title: str = Field("", max_length=128)
    url: str = Field(min_length=1, max_length=1024)


class CustomerSummary(BaseModel):
    id: int
    name: str
    remark_name: str
    wechat_id: str
    stage: str
    level: str
    contact_count: int
    purchase_count: int
    last_touch_at: datetime | None
    completeness: int
    account_ids: list[int]
    tags: list[TagOut]
    created_at: datetime


class CustomerOut(CustomerSummary):
    gender: str
    age_band: str
    city: str
    job: str
    income_band: str
    family: str
    objective_notes: str
    emotional_notes: str
    source: str
    purchase_total: Decimal
    # Paid less refunded over the customer's orders (orders.facts); purchase_total mirrors it.
    total_spent: Decimal
    friendships: list[FriendshipOut]
    addresses: list[AddressOut]
    custom_fields: dict[str, str]
    updated_at: datetime
    # The classic RFM segment (segments.models.RfmSegment; null: no counted order yet).
    rfm_segment: str | None = None


class CustomerPage(BaseModel):
    items: list[CustomerSummary]
    next_cursor: str | None


class TouchIn(BaseModel):
    kind: TouchKind
    content: str = Field("", max_length=MAX_TEXT)
    account_id: Id | None = None
    occurred_at: datetime | None = None
    amount: Decimal | None = Field(None, ge=0, le=Decimal("10000000"))


class TouchOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    content: str
    account_id: int | None
    user_id: int | None
    amount: Decimal | None
    details: dict[str, Any] | None
    occurred_at: datetime


class TouchPage(BaseModel):
    items: list[TouchOut]
    next_cursor: str | None


class TagGroupIn(BaseModel):
    name: Name = Field(min_length=1, max_length=64)
    multi_select: bool = True


class TagIn(BaseModel):
    name: Name = Field(min_length=1, max_length=64)


class TagGroupOut(BaseModel):
    id: int
    name: str
    kind: TagGroupKind
    multi_select: bool
    computed: bool
    tags: list[TagOut]


class CustomFieldIn(BaseModel):
    key: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    label: Name = Field(min_length=1, max_length=64)
    field_type: FieldType = FieldType.text
    choices: list[str] = Field(default_factory=list, max_length=100)


class CustomFieldUpdate(BaseModel):
    """What an admin may change on a field: its label and (a choice field's) choices; key and type stay."""

    label: Name | None = Field(None, min_length=1, max_length=64)
    choices: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(None, max_length=100)


class CustomFieldOut(CustomFieldIn):
    model_config = ConfigDict(from_attributes=True)

    id: int
