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
