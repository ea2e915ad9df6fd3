"""Demo data for 优惠券: a running batch, issued to a few customers, one code redeemed, one about to expire."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.coupons import service
from siyu.coupons.models import CouponBatch, CouponBatchCode, IssuedVia
from siyu.coupons.schemas import BatchIn
from siyu.customers.models import Customer, Friendship, FriendshipStatus


def build(session: Session, *, admin: Viewer, now: datetime) -> CouponBatch:
    today = now.astimezone(local_zone()).date()
    batch = service.create_batch(session, viewer=admin, data=BatchIn(
        name="双十二 20 元茶饮券", amount=Decimal("20"), min_spend=Decimal("99"), valid_from=today - timedelta(days=5),
        valid_until=today + timedelta(days=2), remind_days=3, generate=300,
        note="老带新奖励、抽奖奖品和双十二活动共用"))
    customers = list(session.scalars(
        select(Customer.id).join(Friendship, Friendship.customer_id == Customer.id)
        .where(Friendship.status == FriendshipStatus.active.value, Customer.stage.in_(["customer", "fan"]),
               Customer.merged_into_id.is_(None)).order_by(Customer.id).distinct().limit(12)))
    issued = service.issue(session, batch.id, customers, via=IssuedVia.manual.value, viewer=admin,
                           at=now - timedelta(days=4))
    first = next(iter(issued.codes.values()), None)
    if first is not None:  # one redeemed in the shop already (an order naming the code marks it so)
        code = session.scalar(select(CouponBatchCode).where(CouponBatchCode.code == first))
        if code is not None:
            code.redeemed_at = now - timedelta(days=1)
    service.remind_expiring(session, today=today, now=now)  # expires in 2 days: 今日任务 remind the holders
    return batch
