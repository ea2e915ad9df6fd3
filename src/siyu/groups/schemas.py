from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict


class GroupChatOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    chat_id: str
    name: str
    owner_userid: str
    owner_account_id: int | None
    notice: str
    status: str
    member_count: int
    customer_count: int
    platform_created_at: datetime | None
    dismissed_at: datetime | None
    updated_at: datetime
    # the registry (groups.registry) and health (groups.health)
    platform: str = "wecom"
    kind: str = ""
    tier: str = ""
    store: str = ""
    region: str = ""
    fan_owned: bool = False
    capacity: int = 0
    utilisation: int = 0  # percent of capacity
    expected_name: str = ""  # "" without a naming template
    health: str = "active"  # active / silent / dead


class GroupPage(BaseModel):
    items: list[GroupChatOut]
    next_cursor: str | None


class GroupMemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    userid: str
    member_type: int
    customer_id: int | None
    name: str
    group_nickname: str
    join_time: datetime | None
    join_scene: int | None
    state: str
    left_at: datetime | None
    quit_scene: int | None
    role: str = "member"


class GroupDetailOut(GroupChatOut):
    admin_userids: list[str]
    members: list[GroupMemberOut]


class GroupMessageOut(BaseModel):
    """An archived group message (会话存档), read-only."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    msgid: str
    chat_id: str
    sender: str
    member_type: int
    customer_id: int | None
    action: str
    msg_type: str
    text: str
    sent_at: datetime


class GroupMessagePage(BaseModel):
    items: list[GroupMessageOut]
    next_cursor: str | None


class GroupRegistryIn(BaseModel):
    kind: str = ""
    tier: str = ""
    store: str = ""
    region: str = ""
    service_userids: list[str] = []
    fan_owned: bool = False
    naming_template_id: int | None = None


class GroupTemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    pattern: str
    brand: str
    kind: str
    tier: str
    next_number: int


class GroupCodeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    state: str
    channel_id: int | None
    group_ids: list[int]
    chat_ids: list[str]
    auto_create: bool
    room_base_name: str
    room_base_id: int
    rotate_percent: int
    wecom_config_id: str
    qr_url: str
    alert: str


class GroupSnapshotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    day: date
    member_count: int
    joins: int
    leaves: int
    messages: int
    speakers_7d: int
    health: str


class GroupMembershipOut(BaseModel):
    """One of a customer's groups (the customer page and its API)."""

    group_id: int
    name: str
    kind: str
    role: str
    joined_at: datetime | None
    left_at: datetime | None


class WelcomeTemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    text: str
    wecom_template_id: str
    sync_error: str


class InviteeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    group_chat_id: int
    batch: int
    customer_id: int | None
    name: str
    note: str
    status: str
    reason: str


class InviteeStatusIn(BaseModel):
    status: str


class BatchIn(BaseModel):
    batch: int


class PostPlanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    slot: str
    at_time: str
    weekdays: list[int]
    text: str
    script_id: int | None


class GroupPostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    plan_id: int | None
    group_chat_id: int
    slot: str
    batch: int | None
    text: str
    due_at: datetime
    status: str
    reason: str
    msgid: str
    sent_at: datetime | None
    confirmed_at: datetime | None
