"""Analytics: the ladder over time (transitions, funnel, cohorts, flows, churn), team performance,
WeCom behaviour data and the metrics API — against hand-computed fixtures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from siyu.analytics import service, transitions
from siyu.analytics.models import StageTransition
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Friendship
from tests.conftest import Factory, viewer_of
from tests.test_wecom_client import api, sim, sleeps  # noqa: F401  (fixtures)

SH = timedelta(hours=8)  # Asia/Shanghai, no daylight saving


def local(y: int, m: int, d: int, hh: int = 12, mm: int = 0) -> datetime:
    """A Shanghai wall-clock time as a UTC instant."""
    return datetime(y, m, d, hh, mm, tzinfo=UTC) - SH


def _added(db: Session, customer: Any, at: datetime) -> None:
    db.execute(update(Customer).where(Customer.id == customer.id).values(created_at=at))
    db.execute(update(Friendship).where(Friendship.customer_id == customer.id).values(added_at=at))
    db.execute(StageTransition.__table__.delete().where(StageTransition.customer_id == customer.id))
    db.commit()


def test_a_touch_records_the_stage_change_in_the_same_transaction(db: Session, make: Factory) -> None:
    account = make.account()
    customer = make.customer(account)
    assert db.scalars(select(StageTransition).where(StageTransition.customer_id == customer.id)).all() == []
    make.touch(customer, "chat")
    rows = db.scalars(select(StageTransition).where(StageTransition.customer_id == customer.id)).all()
    assert [(r.from_rank, r.to_rank, r.until) for r in rows] == [(0, 1, None)]


def test_funnel_on_a_day_counts_each_customer_on_the_stage_valid_at_the_end_of_that_day(
        db: Session, make: Factory) -> None:
    account = make.account()
    a, b, c = make.customer(account), make.customer(account), make.customer(account)
    for customer in (a, b, c):
        _added(db, customer, local(2026, 3, 1))
    _added(db, c, local(2026, 3, 10))  # c is added later
    transitions.record(db, [(a.id, "traffic", "user")], at=local(2026, 3, 5, 23, 59))
    transitions.record(db, [(a.id, "user", "customer")], at=local(2026, 3, 6, 0, 1))
    transitions.record(db, [(b.id, "traffic", "user")], at=local(2026, 3, 20))
    db.commit()
    day = lambda d: service.funnel(db, viewer=SYSTEM, day=d).current  # noqa: E731
    assert day(date(2026, 2, 28)) == {"traffic": 0, "user": 0, "customer": 0, "fan": 0}
    assert day(date(2026, 3, 4)) == {"traffic": 2, "user": 0, "customer": 0, "fan": 0}
    # 23:59 local counts on the 5th, 00:01 on the 6th
    assert day(date(2026, 3, 5)) == {"traffic": 1, "user": 1, "customer": 0, "fan": 0}
    assert day(date(2026, 3, 6)) == {"traffic": 1, "user": 0, "customer": 1, "fan": 0}
    assert day(date(2026, 3, 10)) == {"traffic": 2, "user": 0, "customer": 1, "fan": 0}
    funnel = service.funnel(db, viewer=SYSTEM, day=date(2026, 3, 25))
    assert funnel.current == {"traffic": 1, "user": 1, "customer": 1, "fan": 0}
    assert funnel.reached == {"traffic": 3, "user": 2, "customer": 1, "fan": 0}


# ---------------------------------------------------------------- WeCom behaviour data (W:96358)


def test_behaviour_data_is_fetched_per_member_and_an_unknown_member_is_recorded_not_a_crash(
        db: Session, make: Factory, sim: Any, api: Any) -> None:
    from siyu.analytics import behaviour
    from siyu.analytics.models import BehaviourState, MemberBehaviour

    members = [m.userid for m in sim.corp.state.members[:2]]
    known = [make.account(wecom_userid=userid) for userid in members]
    stranger = make.account(wecom_userid="nobody-here")
    today = datetime.now(UTC).astimezone(service.local_zone()).date()
    result = behaviour.fetch(db, api=api, since=today - timedelta(days=3), until=today - timedelta(days=1))
    db.commit()
    assert result.members == 3 and result.unknown == ["nobody-here"]
    assert sim.calls("externalcontact/get_user_behavior_data") == 3  # one call per member: never summed
    rows = db.scalars(select(MemberBehaviour).order_by(MemberBehaviour.account_id, MemberBehaviour.day)).all()
    assert len(rows) == 9
    mine = [r for r in rows if r.account_id == known[0].id]
    single = api.member_behaviour(members[0], start_time=int(service.day_start(today - timedelta(days=3)).timestamp()),
                                  end_time=int(service.day_start(today - timedelta(days=1)).timestamp()))
    assert [r.chat_cnt for r in mine] == [row["chat_cnt"] for row in single]
    assert {r.state for r in rows if r.account_id == stranger.id} == {BehaviourState.unknown_member}
    assert {r.errcode for r in rows if r.account_id == stranger.id} == {60111}
    # a second run replaces the days, never duplicates them
    behaviour.fetch(db, api=api, since=today - timedelta(days=3), until=today - timedelta(days=1))
    db.commit()
    assert len(db.scalars(select(MemberBehaviour)).all()) == 9


def test_the_simulator_refuses_a_span_over_30_days_and_an_unknown_member_as_wecom_does(sim: Any, api: Any) -> None:
    from siyu.wecom.client import WecomApiError

    userid = sim.corp.state.members[0].userid
    now = int(datetime.now(UTC).timestamp())
    with pytest.raises(WecomApiError) as span:
        api.more.get_user_behavior_data([userid], now - 40 * 86400, now)
    assert span.value.errcode == 600018
    with pytest.raises(WecomApiError) as old:
        api.more.get_user_behavior_data([userid], now - 200 * 86400, now - 190 * 86400)
    assert old.value.errcode == 600018
    with pytest.raises(WecomApiError) as unknown:
        api.member_behaviour("ghost", start_time=now - 86400, end_time=now)
    assert unknown.value.errcode == 60111
    both = api.more.get_user_behavior_data([m.userid for m in sim.corp.state.members[:2]], now - 86400, now)
    one = [api.member_behaviour(m.userid, start_time=now - 86400, end_time=now) for m in sim.corp.state.members[:2]]
    assert both["behavior_data"][0]["chat_cnt"] == one[0][0]["chat_cnt"] + one[1][0]["chat_cnt"]  # summed
