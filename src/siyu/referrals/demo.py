"""Demo data for 老带新 / 任务宝: a running programme with invite codes, a leaderboard, a reversal and rewards.

Referrers are customers of the first WeCom account; their friends arrive as new customers through
their invite codes over the past days (through ``service.credit``, the same ledger a WeCom add
uses), one of them deletes us the next day (the credit is reversed), and the top referrer
reached the first tier (a coupon of the demo batch, with a task to hand it over).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.viewer import Viewer
from siyu.coupons.models import CouponBatch
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, Friendship, FriendshipStatus
from siyu.customers.schemas import CustomerIn
from siyu.referrals import service
from siyu.referrals.models import ReferralProgramme
from siyu.referrals.schemas import ProgrammeIn, TierIn

# How many friends each referrer brings (the leaderboard), and which of them deletes us next day.
INVITES = (4, 3, 2, 2, 1)
FRIEND_NAMES = ("小林", "阿杰", "木子", "晓雯", "大鹏", "Coco", "一一", "阿宁", "小满", "陈陈", "安安", "圆圆")


def build(session: Session, *, admin: Viewer, now: datetime, batch: CouponBatch | None,
          friends: int = sum(INVITES)) -> ReferralProgramme:
    """The programme, its invite codes and ``friends`` new customers who came through them."""
    account = session.scalar(select(Account).where(Account.kind == "wecom").order_by(Account.id).limit(1)) or \
        session.scalars(select(Account).order_by(Account.id)).first()
    assert account is not None
    tiers = [TierIn(invites=3, coupon_batch_id=batch.id if batch else None, gift="" if batch else "冷泡茶一瓶"),
             TierIn(invites=10, gift="紫砂茶具一套")]
    programme = service.create_programme(session, viewer=admin, data=ProgrammeIn(
        name="老带新·邀好友得好礼", account_ids=[account.id], reversal_days=7, tiers=tiers,
        first_order_gift="明前龙井试饮装", poster_text="邀 3 位好友得 20 元券，邀 10 位得紫砂茶具"))
    referrers = list(session.scalars(
        select(Customer.id).join(Friendship, Friendship.customer_id == Customer.id)
        .where(Friendship.account_id == account.id, Friendship.status == FriendshipStatus.active.value,
               Customer.stage.in_(["customer", "fan"]), Customer.merged_into_id.is_(None))
        .order_by(Customer.id).limit(len(INVITES))))
    names = iter(FRIEND_NAMES * 3)
    first_friend = None
    for position, (referrer_id, count) in enumerate(zip(referrers, INVITES, strict=False)):
        invite = service.invite_for(session, programme_id=programme.id, customer_id=referrer_id, viewer=admin)
        for n in range(count):
            if friends <= 0:
                break
            friends -= 1
            at = now - timedelta(days=6 - n, hours=position)
            friend = customers_service.create_customer(session, viewer=admin, data=CustomerIn(
                name=next(names), account_id=account.id))
            friend.created_at = at
            for friendship in session.scalars(select(Friendship).where(Friendship.customer_id == friend.id)):
                friendship.added_at = at
            service.credit(session, invite=invite, referee_id=friend.id, at=at, via="demo")
            first_friend = first_friend or (friend.id, at)
    if first_friend is not None:  # the first friend deleted us the next day: the credit is taken back
        friend_id, at = first_friend
        for friendship in session.scalars(select(Friendship).where(Friendship.customer_id == friend_id)):
            friendship.status, friendship.removed_at = FriendshipStatus.deleted.value, at + timedelta(days=1)
        session.flush()
        service.on_friend_removed(session, customer_id=friend_id, at=at + timedelta(days=1))
    return programme
