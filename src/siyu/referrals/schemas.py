"""API shapes of referral programmes (老带新, 任务宝)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from siyu.core.ids import Id
from siyu.core.text import Name

MAX_TIERS = 10


class TierIn(BaseModel):
    """A 任务宝 tier: at ``invites`` friends the referrer gets a coupon of the batch and/or the gift."""

    invites: Annotated[int, Field(ge=1, le=10_000)]
    coupon_batch_id: Id | None = None
    gift: Annotated[Name, Field(max_length=100)] = ""


class ProgrammeIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "name": "老带新·邀请好友得好礼", "account_ids": [1], "reversal_days": 7,
        "tiers": [{"invites": 3, "coupon_batch_id": 1}, {"invites": 10, "gift": "紫砂茶具一套"}],
        "first_order_gift": "", "poster_text": "邀 3 位好友得 20 元券，邀 10 位得茶具"}})

    name: Annotated[Name, Field(min_length=1, max_length=64)]
    account_ids: Annotated[list[Id], Field(min_length=1, max_length=50)]
    reversal_days: Annotated[int, Field(ge=0, le=90)] = 7
    tiers: Annotated[list[TierIn], Field(max_length=MAX_TIERS)] = []
    first_order_batch_id: Id | None = None
    first_order_gift: Annotated[Name, Field(max_length=100)] = ""
    poster_text: Annotated[Name, Field(max_length=200)] = ""


class ProgrammeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: str
    account_ids: list[int]
    reversal_days: int
    tiers: list[TierIn]
    first_order_batch_id: int | None
    first_order_gift: str
    poster_text: str
    referrers: int = 0
    credited: int = 0  # credits minus reversals: the sum of every referrer's count


class InviteIn(BaseModel):
    customer_id: Id


class InviteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    programme_id: int
    customer_id: int
    state: str
    qr_url: str
    link: str = ""
    mp_account_id: int | None = None
    mp_ticket: str = ""
    mp_qr_url: str = ""  # the 公众号 parametric QR's content (weixin.qq.com/q/…); the poster encodes it
    mp_permanent: bool = False
    mp_expires_at: datetime | None = None


class MpQrIn(BaseModel):
    """The invite as a 公众号 parametric QR: temporary (at most 30 days) or permanent (100,000 per 公众号)."""

    account_id: Id | None = None  # empty: the programme's first 公众号
    permanent: bool = False
    expire_seconds: Annotated[int, Field(ge=60, le=2_592_000)] | None = None  # empty: 30 days


class ManualCreditIn(BaseModel):
    """A personal account's referral, recorded by the operator: the new friend and the invite code they named."""

    referee_id: Id
    state: Annotated[str, Field(min_length=1, max_length=30)]


class StandingOut(BaseModel):
    rank: int
    customer_id: int
    name: str
    invites: int


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    referrer_id: int
    referee_id: int
    kind: str
    delta: int
    reason: str
    at: datetime
