"""Coupon batches: one code per customer from a pool drawn exactly once (shared with channels), issued to a
segment, redeemed by an order naming the code, reminded before expiry."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.errors import Invalid
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from siyu.coupons import service
from siyu.coupons.models import CouponBatchCode
from siyu.coupons.schemas import BatchIn
from siyu.customers.models import Touch
from siyu.maintenance.models import Task


def batch(db: Session, *, codes: list[str] | None = None, generate: int = 0, until: date | None = None,
          **overrides: Any) -> Any:
    data = {"name": "双十二 20 元券", "amount": Decimal("20"), "valid_from": local_today() - timedelta(days=1),
            "valid_until": until or local_today() + timedelta(days=30), "codes": codes or [], "generate": generate}
    made = service.create_batch(db, viewer=SYSTEM, data=BatchIn(**(data | overrides)))
    db.commit()
    return made


def segment_of(db: Session, account: Any) -> Any:
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn, parse_tree

    made = segments_service.create_segment(db, viewer=SYSTEM, data=SegmentIn(name="西湖店的客户", conditions=parse_tree(
        {"kind": "and", "conditions": [{"kind": "account", "account_ids": [account.id]}]})))
    db.commit()
    return made


def test_a_batch_issues_one_code_per_customer_and_never_a_code_twice(db: Session, make: Any) -> None:
    account = make.account()
    coupons = batch(db, codes=["A1", "A2", "A3"])
    people = [make.customer(account) for _ in range(4)]
    first = service.issue(db, coupons.id, [p.id for p in people[:2]])
    again = service.issue(db, coupons.id, [p.id for p in people])
    db.commit()
    assert first.issued == 2 and (again.issued, again.already, again.short) == (1, 2, [people[3].id])
    assert again.codes[people[0].id] == first.codes[people[0].id]  # the same code back, not a second
    assert sorted(again.codes.values()) == ["A1", "A2", "A3"]
    events = [t.details for t in db.scalars(select(Touch).where(Touch.customer_id == people[0].id))
              if (t.details or {}).get("event") == "coupon_issued"]
    assert len(events) == 1 and events[0]["code"] == first.codes[people[0].id]  # type: ignore[index]


def test_channels_and_batches_draw_through_the_one_pool_function(db: Session, make: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.channels import service as channels_service
    from siyu.core import codepool

    calls: list[Any] = []
    real = codepool.draw

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1].__name__)
        return real(*args, **kwargs)

    monkeypatch.setattr(codepool, "draw", spy)
    account = make.account()
    channel = channels_service.save_channel(db, viewer=SYSTEM, data=channels_service.ChannelIn(
        name="收银台", account_ids=[account.id], incentive_kind="coupon"))
    channels_service.add_codes(db, channel_id=channel.id, codes=["C1"], viewer=SYSTEM)
    customer = make.customer(account)
    assert channels_service.claim_coupon(db, channel_id=channel.id, customer_id=customer.id) == "C1"
    service.issue(db, batch(db, generate=1).id, [customer.id])
    assert calls == ["CouponCode", "CouponBatchCode"]


def test_issuing_to_a_segment_walks_everyone_in_it(db: Session, make: Any) -> None:
    account = make.account()
    ids = make.bulk_customers(account, 30)
    coupons = batch(db, generate=25)
    result = service.issue_to_segment(db, batch_id=coupons.id, segment_id=segment_of(db, account).id, viewer=SYSTEM)
    db.commit()
    assert (result.issued, len(result.short)) == (25, 5)
    assert set(result.short) <= set(ids)
    drawn, total, redeemed = service.figures(db, [coupons.id])[coupons.id]
    assert (drawn, total, redeemed) == (25, 25, 0)


def test_an_order_naming_the_code_redeems_it_once(db: Session, make: Any) -> None:
    from siyu.core.db import utcnow
    from siyu.orders import service as orders_service

    account = make.account()
    customer = make.customer(account)
    coupons = batch(db, codes=["TEA20"])
    service.issue(db, coupons.id, [customer.id])
    db.commit()
    for number in ("N1", "N2"):
        orders_service.upsert_orders(db, viewer=SYSTEM, via="test", orders=[orders_service.OrderData(
            source="shop", order_no=number, paid_at=utcnow(), amount=Decimal("79"), coupon_code="TEA20",
            buyer=orders_service.Buyer(customer_id=customer.id))])
        db.commit()
    code = db.scalar(select(CouponBatchCode).where(CouponBatchCode.code == "TEA20"))
    assert code is not None and code.redeemed_at is not None and code.order_id is not None
    first_order = code.order_id
    assert service.figures(db, [coupons.id])[coupons.id] == (1, 1, 1)
    db.refresh(code)
    assert code.order_id == first_order


def test_codes_about_to_expire_unused_become_a_task_once(db: Session, make: Any) -> None:
    account = make.account()
    customer, other = make.customer(account), make.customer(account)
    coupons = batch(db, generate=2, until=local_today() + timedelta(days=2), remind_days=3)
    service.issue(db, coupons.id, [customer.id, other.id])
    db.commit()
    assert service.remind_expiring(db) == 2
    assert service.remind_expiring(db) == 0
    db.commit()
    task = db.scalar(select(Task).where(Task.customer_id == customer.id, Task.kind == "coupon_expiry"))
    assert task is not None and coupons.name in task.detail


def test_bad_batches_and_expired_batches_are_refused_clearly(client: Any, db: Session, make: Any,
                                                              admin_headers: dict[str, str]) -> None:
    today = local_today().isoformat()
    cases = [
        {"name": "x", "valid_from": today, "valid_until": "2020-01-01", "amount": "10"},
        {"name": "x", "valid_from": today, "valid_until": today, "amount": "0"},
        {"name": "x", "valid_from": today, "valid_until": today, "kind": "discount", "discount": "12"},
        {"name": "x", "valid_from": today, "valid_until": today, "amount": "10", "generate": 20_000},
    ]
    for body in cases:
        answer = client.post("/api/v1/coupons", headers=admin_headers, json=body)
        assert answer.status_code == 422, body
    created = client.post("/api/v1/coupons", headers=admin_headers, json={
        "name": "八五折", "kind": "discount", "discount": "8.5", "valid_from": today, "valid_until": today,
        "generate": 3})
    assert created.status_code == 201 and created.json()["total"] == 3
    old = batch(db, generate=1, valid_from=local_today() - timedelta(days=9), until=local_today() - timedelta(days=1))
    with pytest.raises(Invalid):
        service.issue(db, old.id, [make.customer(make.account()).id])
    neither = client.post(f"/api/v1/coupons/{old.id}/issue", headers=admin_headers, json={})
    assert neither.status_code == 422
    assert db.scalar(select(func.count()).select_from(CouponBatchCode).where(
        CouponBatchCode.customer_id.is_not(None))) == 0


def test_the_coupon_pages_create_a_batch_and_issue_it_to_a_segment(client: Any, db: Session, make: Any,
                                                                   admin: Any) -> None:
    from tests.test_pages import Console

    console = Console(client).login(admin)
    account = make.account()
    make.customer(account)
    segment = segment_of(db, account)
    today = local_today().isoformat()
    bad = console.post("/coupons", {"name": "坏批次", "kind": "amount", "amount": "abc", "valid_from": today,
                                    "valid_until": today})
    assert bad.status_code == 422 and "坏批次" in bad.text and "数字" in bad.text
    made = console.post("/coupons", {"name": "新客券", "kind": "amount", "amount": "10", "valid_from": today,
                                     "valid_until": today, "generate": "5"})
    assert made.status_code == 303
    page = console.post(made.headers["location"] + "/issue", {"segment_id": str(segment.id)})
    assert page.status_code == 200 and "新发 1 张" in page.text
    assert console.get("/coupons").status_code == 200
    assert "新客券" in console.get(made.headers["location"]).text
