"""API shapes of coupon batches."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from siyu.core.ids import Id
from siyu.core.text import Name
from siyu.coupons.models import CouponKind

MAX_GENERATED = 100_000  # codes in one upload
MAX_GENERATE = 10_000  # codes Siyu makes up in one request


class BatchIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "name": "双十二 20 元券", "kind": "amount", "amount": "20", "min_spend": "99", "valid_from": "2026-12-05",
        "valid_until": "2026-12-31", "generate": 500}})

    name: Annotated[Name, Field(min_length=1, max_length=64)]
    kind: CouponKind = CouponKind.amount
    amount: Annotated[Decimal, Field(ge=0, le=100000, decimal_places=2)] = Decimal("0")
    discount: Annotated[Decimal, Field(ge=0, lt=10, decimal_places=2)] = Decimal("0")
    min_spend: Annotated[Decimal, Field(ge=0, le=100000, decimal_places=2)] = Decimal("0")
    valid_from: date
    valid_until: date
    remind_days: Annotated[int, Field(ge=0, le=60)] = 3
    note: Annotated[str, Field(max_length=255)] = ""
    generate: Annotated[int, Field(ge=0, le=MAX_GENERATE)] = 0  # codes Siyu makes up now
    codes: Annotated[list[str], Field(max_length=MAX_GENERATED)] = []  # or the shop's own codes



class BatchOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    amount: Decimal
    discount: Decimal
    min_spend: Decimal
    valid_from: date
    valid_until: date
    remind_days: int
    drawn: int = 0
    total: int = 0
    redeemed: int = 0


class IssueIn(BaseModel):
    """Issue the batch to these customers, or to everyone in a segment (one of the two)."""

    customer_ids: Annotated[list[Id], Field(max_length=10_000)] = []
    segment_id: Id | None = None


class IssueOut(BaseModel):
    issued: int
    already: int
    short: int  # customers left without a code: the pool ran dry
    codes: dict[str, str] = {}  # customer id → code (for up to 1,000 customers)


class CodesIn(BaseModel):
    codes: Annotated[list[str], Field(max_length=MAX_GENERATED)] = []
    generate: Annotated[int, Field(ge=0, le=MAX_GENERATE)] = 0


def as_out(batch: Any, figures: tuple[int, int, int]) -> BatchOut:
    out = BatchOut.model_validate(batch)
    out.drawn, out.total, out.redeemed = figures
    return out
