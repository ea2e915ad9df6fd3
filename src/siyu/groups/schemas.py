from __future__ import annotations

from datetime import datetime

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
