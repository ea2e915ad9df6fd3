"""Demo data for 客户SOP: one running SOP, "新客7天培育", with customers at each of its steps.

New friends from the store counter channel (the demo's WeCom morning) enter through the trigger; a
dozen earlier new friends entered one to three days ago, so the SOP page shows enrolments at day 0,
day 1 and day 3, and 今日任务 shows the SOP's tasks. The demo has no WeCom connection, so the day-1
WeCom message becomes a task for the operator, and its run says why.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.channels.models import Channel
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer, Friendship, FriendshipStatus
from siyu.sops import service
from siyu.sops.models import SopEnrolment
from siyu.sops.schemas import SopIn

NAME = "新客7天培育"
STEPS = [
    {"at": "day 0 09:00", "kind": "task",
     "text": "{称呼}您好，我是{账号}，欢迎加入！有任何茶饮问题随时问我～"},
    {"at": "day 1 10:00", "kind": "send",
     "text": "{称呼}，新客专享：本周到店出示此消息，第二杯半价。"},
    {"at": "day 3 15:00", "kind": "task",
     "text": "{称呼}，上次推荐的明前龙井喝着怎么样？有想了解的口味可以告诉我。"},
]
BACKDATED = 12  # earlier new friends already on their way through the SOP


def seed(session: Session, *, admin: Viewer, now: datetime) -> None:
    channel = session.scalar(select(Channel).order_by(Channel.id).limit(1))
    trigger = {"kind": "channel", "channel_ids": [channel.id]} if channel is not None else \
        {"kind": "stage", "stages": ["traffic"]}
    sop = service.create_sop(session, viewer=admin, now=now - timedelta(days=7), data=SopIn.model_validate(
        {"name": NAME, "trigger": trigger, "steps": STEPS, "exits": ["purchase", "deleted"]}))
    service.enrol(session, sop=sop, now=now)  # this morning's channel adds
    version = service.current_version(session, sop)
    taken = set(session.scalars(select(SopEnrolment.customer_id)))
    earlier = session.execute(
        select(Friendship.customer_id, Friendship.account_id)
        .join(Customer, Customer.id == Friendship.customer_id)
        .join(Account, Account.id == Friendship.account_id)
        .where(Friendship.status == FriendshipStatus.active.value, Customer.stage == "traffic",
               Customer.merged_into_id.is_(None))
        .order_by(Friendship.customer_id).limit(BACKDATED * 3)).all()
    entries: list[service.Entry] = []
    for customer_id, account_id in earlier:
        if customer_id in taken or len(entries) >= BACKDATED:
            continue
        taken.add(customer_id)
        entries.append(service.Entry(customer_id, account_id, now - timedelta(days=1 + len(entries) % 3, hours=1),
                                     ""))
    service.insert_enrolments(session, sop=sop, version=version, entries=entries, now=now - timedelta(days=3))
    service.run_due(session, now=now, commit=False)
