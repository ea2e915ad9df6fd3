"""API shapes of lucky draws."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from siyu.core.ids import Id
from siyu.core.text import Name

MAX_PRIZES = 10


class PrizeIn(BaseModel):
    name: Annotated[Name, Field(min_length=1, max_length=64)]
    coupon_batch_id: Id | None = None  # a coupon of this batch; None: a gift (recorded on the winners' ledger)
    stock: Annotated[int, Field(ge=1, le=10_000)]
    odds: Annotated[Decimal, Field(gt=0, le=100, decimal_places=3)]  # percent chance per eligible customer


class DrawIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "name": "粉丝节转发抽奖", "segment_id": 1, "exclude_blacklisted": True,
        "prizes": [{"name": "一等奖·紫砂壶", "stock": 1, "odds": "2"},
                   {"name": "二等奖·20 元券", "coupon_batch_id": 1, "stock": 20, "odds": "30"}]}})

    name: Annotated[Name, Field(min_length=1, max_length=64)]
    segment_id: Id
    exclude_blacklisted: bool = True
    prizes: Annotated[list[PrizeIn], Field(min_length=1, max_length=MAX_PRIZES)]


class PrizeOut(PrizeIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class WinnerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    position: int
    customer_id: int
    prize_id: int
    code: str


class DrawOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    segment_id: int | None
    exclude_blacklisted: bool
    status: str
    seed: str  # empty until drawn
    eligible_count: int
    eligible_digest: str
    drawn_at: datetime | None
    prizes: list[PrizeOut] = []
    winners: list[WinnerOut] = []
    algorithm: str = ""
