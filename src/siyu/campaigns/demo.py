"""Demo data for campaigns (群发): a finished A/B campaign with its numbers, and a scheduled send that left
over-quota customers out.

「春茶上新·老客专享」 went to the demo's 客户 and 粉丝 twelve days ago with two copies and a 10 % hold-out,
planned and reserved through the service like any send. The demo has no WeCom connection, so what WeCom
and the customers did afterwards is written here, as the results job and the inbox would have written it:
most recipients delivered (some no longer contacts), a share engaged with our moments within 48 h, some
bought within the 7-day window — more than the hold-out did, so the page shows a lift. 「会员日提醒」
goes out tomorrow; forty of its customers had already received as many corp mass messages this month as
the month has days, so they were left out and listed before anything was created.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from siyu.campaigns import service
from siyu.campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    CampaignTask,
    RecipientGroup,
    RecipientStatus,
    TaskState,
)
from siyu.campaigns.schemas import CampaignIn
from siyu.core.viewer import Viewer
from siyu.customers.models import Friendship, FriendshipStatus, Touch, TouchKind
from siyu.sends import service as sends
from siyu.sends.models import SendLedgerEntry, SendSource

FINISHED = "春茶上新·老客专享"
OVER_QUOTA = "会员日提醒"
OVER_QUOTA_CUSTOMERS = 40


def _segment(session: Session, admin: Viewer) -> int:
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn, parse_tree

    tree = parse_tree({"kind": "and", "conditions": [{"kind": "stage", "stages": ["customer", "fan"]}]})
    return segments_service.create_segment(session, data=SegmentIn(name="老客与粉丝", conditions=tree),
                                           viewer=admin).id


def build(session: Session, *, admin: Viewer, now: datetime, seed: int = 7) -> None:
    rng = random.Random(seed)  # noqa: S311 - demo data
    segment_id = _segment(session, admin)
    session.flush()
    campaign, _plan = service.create_campaign(session, data=CampaignIn(
        name=FINISHED, segment_id=segment_id, text="{账号}：明前龙井到店了，老客到店第二杯半价～",
        text_b="春茶限量 200 份，回复「春茶」给您留一份", holdout_percent=10, window_days=7), viewer=admin, now=now)
    if campaign is None:
        return
    _finish(session, campaign, rng=rng, sent_at=now - timedelta(days=12))
    _over_quota_send(session, admin=admin, segment_id=segment_id, now=now)


def _finish(session: Session, campaign: Campaign, *, rng: random.Random, sent_at: datetime) -> None:
    """What WeCom, the members and the customers did after the send, twelve days ago."""
    from siyu.accounts.models import Account
    from siyu.customers import service as customers_service
    from siyu.customers.models import Customer
    from siyu.orders import service as orders_service
    from siyu.team.models import User
    from siyu.team.service import viewer_for

    campaign.status, campaign.scheduled_at, campaign.sent_at = CampaignStatus.sent.value, sent_at, sent_at
    campaign.results_read_at = sent_at + timedelta(days=3)
    session.execute(update(CampaignTask).where(CampaignTask.campaign_id == campaign.id).values(
        state=TaskState.created.value, msgid="", member_sent_at=sent_at + timedelta(minutes=20)))
    session.execute(update(SendLedgerEntry).where(SendLedgerEntry.ref == service.ref_of(campaign.id))
                    .values(day=sends.local_day(sent_at)))
    owners: dict[int | None, int | None] = dict(session.execute(select(Account.id, Account.owner_user_id)).all())
    recipients = list(session.scalars(select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign.id)))
    orders: dict[int | None, list[orders_service.OrderData]] = {}
    touched: set[int] = set()
    held = 0
    for r in recipients:
        if r.grp == RecipientGroup.holdout.value:
            held += 1
            if held % 12 == 5:  # the hold-out buys too, less often: the lift is what the send added
                account = session.scalar(select(Friendship.account_id).where(
                    Friendship.customer_id == r.customer_id, Friendship.status == FriendshipStatus.active.value))
                orders.setdefault(account, []).append(
                    _order(r, account, sent_at + timedelta(days=rng.uniform(0.5, 6.5)), rng))
            continue
        if r.grp != RecipientGroup.send.value:
            continue
        roll = rng.random()
        if roll < 0.05:
            r.status = RecipientStatus.not_friend.value
            continue
        if roll < 0.07:
            r.status = RecipientStatus.limit.value
            continue
        r.status = RecipientStatus.delivered.value
        r.delivered_at = sent_at + timedelta(minutes=rng.randrange(20, 360))
        if rng.random() < (0.26 if r.variant == "B" else 0.18):  # recorded by the account's operator
            session.add(Touch(customer_id=r.customer_id, account_id=r.account_id, user_id=owners.get(r.account_id),
                              kind=TouchKind.moments_engaged.value, content="赞了「春茶上新」",
                              occurred_at=r.delivered_at + timedelta(hours=rng.uniform(1, 40)),
                              details={"campaign_id": campaign.id}))
            touched.add(r.customer_id)
        if rng.random() < 0.11:
            orders.setdefault(r.account_id, []).append(
                _order(r, r.account_id, r.delivered_at + timedelta(days=rng.uniform(0.2, 6.5)), rng))
    session.flush()
    for account_id, batch in orders.items():  # the one order writer: touches on the timeline, buyers' facts
        owner = session.get(User, owners.get(account_id)) if owners.get(account_id) else None
        if owner is None:
            continue
        orders_service.upsert_orders(session, orders=batch, viewer=viewer_for(owner), via="demo", audit=False)
        touched.update(o.buyer.customer_id for o in batch if o.buyer.customer_id)
    people = list(session.scalars(select(Customer).where(Customer.id.in_(sorted(touched)))))
    customers_service.refresh_computed_many(session, customers=people, rules=customers_service.get_rules(session))
    session.flush()


def _order(recipient: CampaignRecipient, account_id: int | None, paid_at: datetime,
           rng: random.Random) -> Any:
    from siyu.orders import service as orders_service

    price = Decimal(rng.choice((88, 128, 168, 268)))
    return orders_service.OrderData(
        source="shop", order_no=f"CAMP{recipient.campaign_id}-{recipient.customer_id:06d}", paid_at=paid_at,
        amount=price, status="completed", account_id=account_id, note="春茶上新",
        buyer=orders_service.Buyer(customer_id=recipient.customer_id),
        lines=[orders_service.LineData(sku="SY-LJ-100", name="明前龙井 100g", quantity=1, price=price,
                                       category="绿茶")])


def _over_quota_send(session: Session, *, admin: Viewer, segment_id: int, now: datetime) -> None:
    """Forty customers already at this month's limit: left out and listed when tomorrow's send was planned."""
    at = now + timedelta(days=1)
    ids = service.segment_ids(session, segment_id, admin)
    full = ids[:OVER_QUOTA_CUSTOMERS]
    limit = sends.period_of(sends.get_settings_row(session).quota_mode, sends.local_day(at)).limit
    for n in range(limit):
        sends.record(session, full, at, source=SendSource.sop, ref=f"demo:earlier:{n}")
    service.create_campaign(session, data=CampaignIn(
        name=OVER_QUOTA, segment_id=segment_id, text="{账号}：明天会员日，全场九折，记得来喝茶～",
        scheduled_at=at), viewer=admin, now=now)
    session.flush()
