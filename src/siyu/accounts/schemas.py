from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from siyu.accounts.models import RAISED_CAPACITY, AccountKind, AccountStatus
from siyu.core.ids import Id
from siyu.core.text import Name


class AccountIn(BaseModel):
    kind: AccountKind = AccountKind.personal
    display_name: Name = Field(min_length=1, max_length=64)
    wechat_id: str = Field("", max_length=64)
    wecom_userid: str | None = Field(None, max_length=64)
    # A 微信客服 account (kind wecom_kf): its id in WeCom, e.g. wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw.
    open_kfid: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")
    store: str = Field("", max_length=64)
    brand: str = Field("", max_length=64)
    tier_served: str = Field("", max_length=32)
    owner_user_id: Id | None = None
    friend_capacity: int = Field(5000, ge=1, le=RAISED_CAPACITY)
    positioning: str = Field("", max_length=255)
    avatar_url: str = Field("", max_length=512)
    signature: str = Field("", max_length=255)
    greeting: str = Field("", max_length=2000)
    moments_cover_url: str = Field("", max_length=512)
    qr_image_url: str = Field("", max_length=512)
    qr_expires_on: date | None = None

    @field_validator("wecom_userid")
    @classmethod
    def no_empty_wecom_userid(cls, value: str | None) -> str | None:
        """Blank means "not a WeCom member yet": stored as none, so any number of accounts may lack one."""
        return (value or "").strip() or None


class AccountUpdate(BaseModel):
    display_name: Name | None = Field(None, min_length=1, max_length=64)
    wechat_id: str | None = Field(None, max_length=64)
    store: str | None = Field(None, max_length=64)
    brand: str | None = Field(None, max_length=64)
    tier_served: str | None = Field(None, max_length=32)
    owner_user_id: Id | None = None
    friend_capacity: int | None = Field(None, ge=1, le=RAISED_CAPACITY)
    status: AccountStatus | None = None
    positioning: str | None = Field(None, max_length=255)
    avatar_url: str | None = Field(None, max_length=512)
    signature: str | None = Field(None, max_length=255)
    greeting: str | None = Field(None, max_length=2000)
    moments_cover_url: str | None = Field(None, max_length=512)
    qr_image_url: str | None = Field(None, max_length=512)
    qr_expires_on: date | None = None


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    display_name: str
    wechat_id: str
    wecom_userid: str | None
    open_kfid: str | None
    store: str
    brand: str
    tier_served: str
    owner_user_id: int | None
    friend_capacity: int
    status: str
    positioning: str
    avatar_url: str
    signature: str
    greeting: str
    moments_cover_url: str
    qr_image_url: str = ""
    qr_expires_on: date | None = None
    created_at: datetime
    friend_count: int = 0
    utilisation: float = 0.0
    near_capacity: bool = False


class AccountList(BaseModel):
    items: list[AccountOut]
