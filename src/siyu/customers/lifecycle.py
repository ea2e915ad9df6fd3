"""The ladder's rules — 流量 → 用户 → 客户 → 粉丝 — and the tags they set: contact-count and
purchase-count buckets and the level by total spent.

One admin-edited document (``customers.service.get_rules`` / ``save_rules``), read by the
computed facts of every customer (``customers.service.refresh_computed_ids``); the rules
themselves are pure: given a customer's counts they say the stage, the buckets and the level.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from siyu.customers.models import Stage


class LevelRule(BaseModel):
    min_total: Decimal = Field(ge=0)
    label: str = Field(min_length=1, max_length=32)


class BucketRule(BaseModel):
    min: int = Field(ge=0)
    label: str = Field(min_length=1, max_length=32)


class LifecycleRules(BaseModel):
    """When a customer climbs the ladder 流量 → 用户 → 客户 → 粉丝; editable by admins."""

    user_min_contacts: int = Field(1, ge=0)
    customer_min_purchases: int = Field(1, ge=1)
    fan_min_purchases: int = Field(3, ge=1)
    fan_min_contacts: int = Field(10, ge=0)
    # 粉丝 also: bought a product within this many days of its launch (0: this rule is off).
    fan_new_launch_days: int = Field(30, ge=0, le=3650)
    contact_buckets: list[BucketRule]
    purchase_buckets: list[BucketRule]
    levels: list[LevelRule]

    def stage_for(self, *, contacts: int, purchases: int, new_launch: int = 0) -> Stage:
        if purchases >= self.fan_min_purchases and contacts >= self.fan_min_contacts:
            return Stage.fan
        if new_launch > 0 and self.fan_new_launch_days > 0 and purchases >= self.customer_min_purchases:
            return Stage.fan  # "buys whatever you launch" (004)
        if purchases >= self.customer_min_purchases:
            return Stage.customer
        if contacts >= self.user_min_contacts and contacts > 0:
            return Stage.user
        return Stage.traffic

    @staticmethod
    def _bucket(buckets: list[BucketRule], value: int) -> str:
        chosen = ""
        for bucket in sorted(buckets, key=lambda b: b.min):
            if value >= bucket.min:
                chosen = bucket.label
        return chosen

    def contact_bucket(self, contacts: int) -> str:
        return self._bucket(self.contact_buckets, contacts)

    def purchase_bucket(self, purchases: int) -> str:
        return self._bucket(self.purchase_buckets, purchases)

    def level_for(self, total: Decimal) -> str:
        chosen = ""
        for level in sorted(self.levels, key=lambda lv: lv.min_total):
            if total >= level.min_total:
                chosen = level.label
        return chosen
