from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from siyu.core.ids import Id
from siyu.core.text import Name
from siyu.team.models import Role


class UserIn(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    display_name: Name = Field("", max_length=64)
    password: str = Field(min_length=8, max_length=256)
    role: Role = Role.operator
    account_ids: list[Id] = Field(default_factory=list)


class UserUpdate(BaseModel):
    display_name: Name | None = Field(None, max_length=64)
    role: Role | None = None
    is_active: bool | None = None
    account_ids: list[Id] | None = None
    password: str | None = Field(None, min_length=8, max_length=256)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    role: str
    is_active: bool
    account_ids: list[int]
    created_at: datetime
    last_login_at: datetime | None


class SessionOut(BaseModel):
    """A live console session, as an admin sees it (never its id)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    user_agent: str
    ip: str


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105
    expires_at: datetime


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    actor_name: str
    action: str
    entity_type: str
    entity_id: str
    entity_name: str
    summary: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
