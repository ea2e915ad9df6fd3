"""Campaign API shapes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from siyu.campaigns.models import DEFAULT_WINDOW_DAYS, HOLDOUT_MAX
from siyu.library.service import MAX_ATTACHMENTS


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    segment_id: int
    text: str = Field("", max_length=4000)
    text_b: str = Field("", max_length=4000)  # an optional B copy: the segment is split at random
    material_ids: list[int] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    coupon_batch_id: int | None = None  # each customer sent to gets one code of it; the copy may say {券码}
    holdout_percent: int = Field(0, ge=0, le=HOLDOUT_MAX)  # 0, or 5 to 10
    scheduled_at: datetime | None = None  # empty: now
    window_days: int = Field(DEFAULT_WINDOW_DAYS, ge=1, le=90)
    dry_run: bool = False


class CampaignEdit(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=128)
    text: str | None = Field(None, max_length=4000)
    text_b: str | None = Field(None, max_length=4000)


class CampaignItem(BaseModel):
    id: int
    name: str
    status: str
    targeted: int
    over_quota: int
    delivered: int
    engaged: int
    buyers: int
    revenue: Decimal


class CampaignList(BaseModel):
    items: list[CampaignItem]


class OverQuotaOut(BaseModel):
    customer_id: int
    reason: str


class CouponsOut(BaseModel):
    """The coupon batch's pool against the customers sent to; ``error`` says why the send cannot go."""

    batch_id: int
    batch_name: str
    needed: int
    free: int
    error: str = ""


class PlanOut(BaseModel):
    """What a send would do (``dry_run``) or did: the split, the quota check and the tasks."""

    id: int | None = None
    status: str = "dry_run"
    segment_size: int
    holdout: int
    over_quota: int
    unreachable: int
    targeted: int
    variants: dict[str, int]
    wecom_tasks: int
    personal_tasks: int
    over_quota_customers: list[OverQuotaOut]
    coupons: CouponsOut | None = None

