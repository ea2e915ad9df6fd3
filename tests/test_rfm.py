"""RFM: scores from orders, the eight segments, rescoring after an order, thresholds, where they show."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.segments import rfm
from siyu.segments.models import CustomerRfm, RfmSegment
from tests.test_pages import Console
from tests.test_segments import NOW, order


def segment_of(db: Session, customer: Any) -> str | None:
    return db.scalar(select(CustomerRfm.segment).where(CustomerRfm.customer_id == customer.id))


def buyers(db: Session, make: Any, count: int) -> list[Any]:
    account = make.account()
    return [make.customer(account) for _ in range(count)]


def test_quintiles_put_the_best_buyer_in_important_value_and_the_lapsed_one_in_general_retain(
        db: Session, make: Any) -> None:
    people = buyers(db, make, 10)
    # Customer i: i + 1 orders of 100 × (i + 1) yuan, the last one 10 × (10 − i) days ago.
    for i, person in enumerate(people):
        for k in range(i + 1):
            order(db, person.id, days_ago=10 * (10 - i) + k * 400, amount=str(100 * (i + 1)))
    result = rfm.refresh_all(db, now=NOW)
    db.commit()
    assert result.customers == 10 and sum(result.counts.values()) == 10
    assert segment_of(db, people[-1]) == RfmSegment.important_value.value
    assert segment_of(db, people[0]) == RfmSegment.general_retain.value
    best = db.get(CustomerRfm, people[-1].id)
    assert best is not None and (best.r_score, best.f_score, best.m_score) == (5, 5, 5)
    assert best.frequency == 10 and best.monetary == Decimal("10000.00")


def test_high_spend_but_long_gone_single_buyer_is_important_to_win_back(db: Session, make: Any) -> None:
    people = buyers(db, make, 5)
    for i, person in enumerate(people[:4]):
        order(db, person.id, days_ago=5 + i, amount="50")
        order(db, person.id, days_ago=6 + i, amount="50")
    order(db, people[4].id, days_ago=300, amount="5000")
    rfm.refresh_all(db, now=NOW)
    db.commit()
    assert segment_of(db, people[4]) == RfmSegment.important_retain.value


def test_wholly_refunded_orders_do_not_count_and_partial_refunds_are_subtracted(db: Session, make: Any) -> None:
    gone, partly = buyers(db, make, 2)
    order(db, gone.id, days_ago=3, amount="900", status="refunded", refunded="900")
    order(db, partly.id, days_ago=3, amount="900", status="partly_refunded", refunded="600")
    rfm.refresh_all(db, now=NOW)
    db.commit()
    assert segment_of(db, gone) is None
    row = db.get(CustomerRfm, partly.id)
    assert row is not None and row.monetary == Decimal("300.00") and row.frequency == 1


def test_refresh_rfm_for_rescores_a_customer_after_a_new_order(db: Session, make: Any) -> None:
    people = buyers(db, make, 6)
    for i, person in enumerate(people):
        order(db, person.id, days_ago=20 * (i + 1), amount=str(100 * (6 - i)))
    rfm.refresh_all(db, now=NOW)
    db.commit()
    last = people[-1]
    before = db.get(CustomerRfm, last.id)
    assert before is not None and before.r_score == 1 and before.frequency == 1
    for _ in range(3):
        order(db, last.id, days_ago=0, amount="2000")
    rfm.refresh_rfm_for(db, [last.id], now=NOW)
    db.commit()
    db.expire_all()
    after = db.get(CustomerRfm, last.id)
    assert after is not None and after.frequency == 4 and after.r_score == 5 and after.m_score == 5
    assert after.segment == RfmSegment.important_value.value
    # Others were not touched, and a customer with no order left loses the row.
    assert db.get(CustomerRfm, people[0].id) is not None
    rfm.refresh_rfm_for(db, [make.customer(make.account()).id], now=NOW)
    assert db.scalar(select(CustomerRfm).where(CustomerRfm.customer_id == people[0].id)) is not None


def test_admin_thresholds_replace_quintiles(client: TestClient, db: Session, make: Any,
                                            admin_headers: dict[str, str]) -> None:
    (person,) = buyers(db, make, 1)
    order(db, person.id, days_ago=45, amount="600")
    order(db, person.id, days_ago=50, amount="600")
    settings = {"mode": "thresholds", "recency_days": [30, 60, 120, 240], "frequency": [2, 3, 5, 8],
                "monetary": ["200", "500", "1000", "3000"], "high_from": 3}
    response = client.put("/api/v1/rfm/settings", json=settings, headers=admin_headers)
    assert response.status_code == 200, response.text
    rfm.refresh_all(db, now=NOW)
    db.commit()
    row = db.get(CustomerRfm, person.id)
    # Within 60 days: 4; 2 orders: 2; 1,200 yuan: 4.
    assert row is not None and (row.r_score, row.f_score, row.m_score) == (4, 2, 4)
    assert row.segment == RfmSegment.important_develop.value
    bad = client.put("/api/v1/rfm/settings", json={**settings, "frequency": [5, 3, 2, 1]}, headers=admin_headers)
    assert bad.status_code == 422


def test_customer_detail_list_filter_and_dashboard_show_rfm(client: TestClient, db: Session, make: Any,
                                                            admin: Any, admin_headers: dict[str, str]) -> None:
    buyer, idle = buyers(db, make, 2)
    order(db, buyer.id, days_ago=1, amount="100")
    rfm.refresh_all(db, now=NOW - timedelta(seconds=1))
    db.commit()
    segment = segment_of(db, buyer)
    detail = client.get(f"/api/v1/customers/{buyer.id}", headers=admin_headers).json()
    assert detail["rfm_segment"] == segment is not None
    assert client.get(f"/api/v1/customers/{idle.id}", headers=admin_headers).json()["rfm_segment"] is None
    listed = client.get(f"/api/v1/customers?rfm={segment}", headers=admin_headers).json()
    assert [c["id"] for c in listed["items"]] == [buyer.id]
    distribution = client.get("/api/v1/rfm/distribution", headers=admin_headers).json()
    assert distribution["counts"][segment] == 1 and len(distribution["counts"]) == 8
    console = Console(client).login(admin)
    page = console.get("/")
    assert 'data-testid="rfm-chart"' in page.text and "重要价值客户" in page.text
    assert console.get(f"/customers?rfm={segment}").status_code == 200
    portrait = console.get(f"/customers/{buyer.id}")
    assert 'data-testid="rfm-segment"' in portrait.text and f"/customers?rfm={segment}" in portrait.text


def test_before_any_nightly_refresh_a_new_order_is_scored_against_the_thresholds(db: Session, make: Any) -> None:
    (person,) = buyers(db, make, 1)
    order(db, person.id, days_ago=2, amount="1500")
    rfm.refresh_rfm_for(db, {person.id}, now=NOW)
    db.commit()
    row = db.get(CustomerRfm, person.id)
    # Default thresholds: within 30 days 5; one order 1; 1,500 yuan 4 → recent, big, not yet frequent.
    assert row is not None and (row.r_score, row.f_score, row.m_score) == (5, 1, 4)
    assert row.segment == RfmSegment.important_develop.value


def test_an_order_and_its_full_refund_move_the_rfm_segment_in_the_same_transaction(db: Session, make: Any) -> None:
    from siyu.core.viewer import SYSTEM
    from siyu.orders import service as orders_service

    customer = make.customer(make.account(), phones=["13800000009"])
    result = orders_service.upsert_orders(db, orders=[orders_service.OrderData(
        source="shop", order_no="RFM1", paid_at=NOW - timedelta(days=1), amount=Decimal("1500"),
        buyer=orders_service.Buyer(phone="13800000009"))], viewer=SYSTEM, via="test")
    db.commit()
    assert segment_of(db, customer) == RfmSegment.important_develop.value  # default thresholds: 5, 1, 4
    (order_id,) = result.order_ids
    orders_service.refund(db, order_id=order_id, amount=Decimal("1500"), viewer=SYSTEM)
    db.commit()
    db.expire_all()
    assert segment_of(db, customer) is None
