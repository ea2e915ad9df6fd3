"""Demo data for 线下活动: a tasting last week with attendance, no-shows and their follow-up tasks, and a
sampling next week with sign-ups (one on the waiting list, one from the public page still to review).

Everything goes through the service (sign-ups take seats with the guarded update, check-ins write the
offline-event touches), so the demo can never disagree with the product.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.errors import Invalid
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Phone
from siyu.offline import service
from siyu.offline.models import EventKind, SignupSource
from siyu.offline.schemas import EventIn

STORE = "杭州西湖店"
PAST = EventIn(name="明前龙井品鉴会", kind=EventKind.tasting, starts_at=datetime(2000, 1, 1),
               ends_at=datetime(2000, 1, 1, 2), place="杭州西湖店二楼茶室", capacity=12,
               description="老周带大家品三款明前龙井：狮峰、梅家坞、翁家山。现场冲泡，茶点管够。",
               invite_text="{称呼}您好，周六下午老周在西湖店开明前龙井品鉴会，给您留了位置～",
               attended_text="{称呼}，谢谢来品鉴会！喜欢哪一款？需要的话我给您留一份。",
               no_show_text="{称呼}，这次品鉴会没见到您，下次活动我提前提醒您～")
UPCOMING = EventIn(name="桂花乌龙试吃会", kind=EventKind.sampling, starts_at=datetime(2000, 1, 1),
                   ends_at=datetime(2000, 1, 1, 2), place="杭州西湖店一楼", capacity=8,
                   description="新品桂花乌龙配三款茶点试吃，名额有限，先到先得。",
                   invite_text="{称呼}，新品桂花乌龙试吃会，周末在西湖店，欢迎来尝尝！")
ATTENDED = 7  # of the past event's registered sign-ups, the rest were no-shows


def _store_customers(session: Session, limit: int) -> list[tuple[int, str, str]]:
    """(customer, name, mobile) of the store's customers who left a mobile number."""
    rows = session.execute(
        select(Customer.id, Customer.name, Phone.number)
        .join(Phone, Phone.customer_id == Customer.id)
        .join(Friendship, Friendship.id == Phone.friendship_id)
        .join(Account, Account.id == Friendship.account_id)
        .where(Account.store == STORE, Friendship.status == FriendshipStatus.active.value,
               Customer.merged_into_id.is_(None))
        .order_by(Customer.id).limit(limit * 4)).all()
    found: list[tuple[int, str, str]] = []
    seen: set[int] = set()
    for customer_id, name, number in rows:
        try:
            mobile = service.normalise_mobile(number)
        except Invalid:
            continue
        if customer_id not in seen and service.match_phone(session, mobile)[0] == customer_id:
            seen.add(customer_id)
            found.append((int(customer_id), str(name), mobile))
        if len(found) >= limit:
            break
    return found


def _accounts(session: Session) -> list[int]:
    return list(session.scalars(select(Account.id).where(Account.store == STORE).order_by(Account.id)))


def _door_staff(session: Session, admin: Viewer) -> Viewer:
    """The store's operator, who signs customers up and checks them in at the door."""
    from siyu.team import service as team_service
    from siyu.team.models import User

    owner = session.scalar(select(User).join(Account, Account.owner_user_id == User.id)
                           .where(Account.store == STORE).order_by(Account.id).limit(1))
    return team_service.viewer_for(owner) if owner is not None else admin


def build(session: Session, *, admin: Viewer, now: datetime) -> None:
    staff = _door_staff(session, admin)
    people = _store_customers(session, 24)
    hosts = _accounts(session)
    past_start = (now - timedelta(days=6)).replace(minute=0, second=0, microsecond=0)
    past = service.create_event(session, viewer=admin, data=PAST.model_copy(update={
        "starts_at": now + timedelta(days=1), "ends_at": now + timedelta(days=1, hours=2), "account_ids": hosts}))
    for customer_id, _name, _mobile in people[:10]:
        service.sign_up_customer(session, event_id=past.id, customer_id=customer_id, viewer=staff)
    service.sign_up_person(session, event=past, name="沈女士", phone="13757000001", source=SignupSource.public)
    # It took place six days ago: staff checked seven people in at the door.
    past.starts_at, past.ends_at = past_start, past_start + timedelta(hours=2)
    session.flush()
    signups = service.list_signups(session, event_id=past.id, viewer=staff, status="registered")
    for n, signup in enumerate(signups[:ATTENDED]):
        service.check_in(session, ticket=signup.ticket, viewer=staff, now=past_start + timedelta(minutes=5 + 3 * n))
    service.follow_up(session, event_id=past.id, viewer=admin, now=now)

    start = (now + timedelta(days=5)).replace(hour=6, minute=0, second=0, microsecond=0)  # 14:00 in Shanghai
    upcoming = service.create_event(session, viewer=admin, data=UPCOMING.model_copy(update={
        "starts_at": start, "ends_at": start + timedelta(hours=2), "account_ids": hosts}))
    for customer_id, _name, _mobile in people[10:18]:
        service.sign_up_customer(session, event_id=upcoming.id, customer_id=customer_id, viewer=staff)
    # Two more through the public page: the event is full, so one waits; a new face waits for review.
    if len(people) > 18:
        _cid, name, mobile = people[18]
        service.sign_up_person(session, event=upcoming, name=name, phone=mobile, source=SignupSource.public)
    service.sign_up_person(session, event=upcoming, name="许先生", phone="13757000002", source=SignupSource.public)
    session.flush()
