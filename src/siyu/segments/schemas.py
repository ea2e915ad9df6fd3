"""The segment builder's condition tree: AND/OR groups over leaves, as JSON.

``{"kind": "and", "conditions": [{"kind": "tag", "tag_ids": [3]},
{"kind": "or", "conditions": [{"kind": "rfm", "segments": ["important_value"]},
{"kind": "spent", "min_amount": "500"}]}]}``

Leaves name tags, custom fields, products, channels, groups and accounts by id, so a rename
never changes a segment and a deletion is found (the segment is marked broken) instead of
matching nobody. ``segments.compiler`` turns a tree into one SQL condition.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from siyu.core.errors import validation_message
from siyu.core.ids import Id
from siyu.customers.models import Stage
from siyu.segments.models import RfmSegment, SegmentMode

MAX_DEPTH = 4  # groups inside groups
MAX_LEAVES = 50
MAX_DAYS = 3650
IdList = Annotated[list[Id], Field(min_length=1, max_length=200)]
Days = Annotated[int, Field(ge=1, le=MAX_DAYS)]
# The customer columns a field condition may read (the portrait's objective facts).
FIELD_NAMES = ("name", "wechat_id", "source", "gender", "age_band", "city", "job", "income_band", "family")


class _Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TagCondition(_Leaf):
    kind: Literal["tag"]
    tag_ids: IdList
    match: Literal["any", "all", "none"] = "any"


class FieldCondition(_Leaf):
    kind: Literal["field"]
    field: Literal["name", "wechat_id", "source", "gender", "age_band", "city", "job", "income_band", "family"]
    op: Literal["eq", "contains", "empty", "not_empty"] = "eq"
    value: str = Field("", max_length=200)


class CustomFieldCondition(_Leaf):
    kind: Literal["custom_field"]
    field_id: Id
    op: Literal["eq", "contains", "gte", "lte", "empty", "not_empty"] = "eq"
    value: str = Field("", max_length=200)


class StageCondition(_Leaf):
    kind: Literal["stage"]
    stages: Annotated[list[Stage], Field(min_length=1, max_length=4)]


class LevelCondition(_Leaf):
    kind: Literal["level"]
    levels: Annotated[list[Annotated[str, Field(min_length=1, max_length=16)]], Field(min_length=1, max_length=20)]


class RfmCondition(_Leaf):
    kind: Literal["rfm"]
    segments: Annotated[list[RfmSegment], Field(min_length=1, max_length=8)]


class BoughtCondition(_Leaf):
    """Bought one of these products, or anything in this category, within the last N days."""

    kind: Literal["bought"]
    days: Days
    product_ids: Annotated[list[Id], Field(max_length=200)] = Field(default_factory=list)
    category: str = Field("", max_length=64)

    @model_validator(mode="after")
    def _something_bought(self) -> BoughtCondition:
        if not self.product_ids and not self.category.strip():
            raise ValueError("Choose products or a category")
        return self


class SpentCondition(_Leaf):
    """Spent at least this much: in all (the customer's total) or within the last N days."""

    kind: Literal["spent"]
    min_amount: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]
    days: Days | None = None


class NoPurchaseCondition(_Leaf):
    kind: Literal["no_purchase"]
    days: Days


class NoTouchCondition(_Leaf):
    """No private chat (私聊) with the customer within the last N days."""

    kind: Literal["no_touch"]
    days: Days


class ChannelCondition(_Leaf):
    kind: Literal["channel"]
    channel_ids: IdList


class GroupChatCondition(_Leaf):
    """Currently a member of one of these groups (社群)."""

    kind: Literal["group_chat"]
    group_ids: IdList


class GroupKindCondition(_Leaf):
    """Currently in a group of one of these kinds (groups.models.GroupKind), optionally in one of these roles."""

    kind: Literal["group_kind"]
    group_kinds: Annotated[list[Literal["product", "interest", "knowledge", "network", "marketing"]],
                           Field(min_length=1, max_length=5)]
    roles: Annotated[list[Literal["owner", "admin", "service", "colleague", "partner", "member"]],
                     Field(default_factory=list, max_length=6)]


class AccountCondition(_Leaf):
    kind: Literal["account"]
    account_ids: IdList


class ConditionGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["and", "or"]
    conditions: Annotated[list[Condition], Field(min_length=1, max_length=MAX_LEAVES)]

    @model_validator(mode="after")
    def _bounded(self) -> ConditionGroup:
        if _depth(self) > MAX_DEPTH:
            raise ValueError(f"Groups nest at most {MAX_DEPTH} deep")
        if _leaves(self) > MAX_LEAVES:
            raise ValueError(f"At most {MAX_LEAVES} conditions")
        return self


Leaf = (TagCondition | FieldCondition | CustomFieldCondition | StageCondition | LevelCondition | RfmCondition
        | BoughtCondition | SpentCondition | NoPurchaseCondition | NoTouchCondition | ChannelCondition
        | GroupChatCondition | AccountCondition | GroupKindCondition)
Condition = Annotated[Leaf | ConditionGroup, Field(discriminator="kind")]
ConditionGroup.model_rebuild()


def _depth(node: Any) -> int:
    if isinstance(node, ConditionGroup):
        return 1 + max((_depth(c) for c in node.conditions), default=0)
    return 0


def _leaves(node: Any) -> int:
    if isinstance(node, ConditionGroup):
        return sum(_leaves(c) for c in node.conditions)
    return 1


def describe_error(exc: ValidationError) -> str:
    """The first problem of a tree, with where it is ("conditions.1.days: …")."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()) if not isinstance(part, str) or part not in
                     _KIND_NAMES)
    message = validation_message(dict(error))
    return f"{where}: {message}" if where else message


_KIND_NAMES = {"and", "or", "tag", "field", "custom_field", "stage", "level", "rfm", "bought", "spent",
               "no_purchase", "no_touch", "channel", "group_chat", "account", "group_kind"}


def parse_tree(data: Any) -> ConditionGroup:
    """A stored or posted tree; a single leaf is read as a group of one."""
    if isinstance(data, dict) and data.get("kind") not in ("and", "or"):
        data = {"kind": "and", "conditions": [data]}
    return ConditionGroup.model_validate(data)


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    conditions: ConditionGroup
    mode: SegmentMode = SegmentMode.dynamic


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=64)
    conditions: ConditionGroup | None = None
    mode: SegmentMode | None = None


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conditions: ConditionGroup


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    conditions: dict[str, Any]
    mode: str
    broken: bool
    broken_reason: str
    owner_id: int | None
    snapshot_at: datetime | None
    snapshot_count: int
    created_at: datetime
    updated_at: datetime


class PreviewOut(BaseModel):
    count: int
    exact: bool
    estimate: int | None = None
    sample: list[dict[str, Any]]
