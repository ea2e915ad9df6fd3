"""The metrics API over the whole catalogue: every metric answers for every interval and every scope
kind it takes, a scope the user may not see is 404, a period without data has no points, and the
local-day edges (23:59 and 00:01 Asia/Shanghai) fall on their own days, weeks and months."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from siyu.analytics import metrics
from siyu.analytics.metrics import CATALOGUE, INTERVALS
from siyu.core.viewer import SYSTEM
from tests.conftest import Factory

SH = timedelta(hours=8)


def local(y: int, m: int, d: int, hh: int = 12, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC) - SH


@pytest.fixture
def scopes(db: Session, make: Factory) -> dict[str, str]:
    """One scope of each kind, each holding a customer with a touch, an order and a task-free day."""
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn

    account = make.account()
    operator = make.user("operator", accounts=[account])
    customer = make.customer(account)
    make.touch(customer, "chat", occurred_at=local(2026, 10, 14), account_id=account.id)
    segment = segments_service.create_segment(db, data=SegmentIn.model_validate(
        {"name": "全部流量", "conditions": {"kind": "and", "conditions": [
            {"kind": "stage", "stages": ["traffic", "user", "customer", "fan"]}]}}), viewer=SYSTEM)
    db.commit()
    return {"company": "company", "account": f"account:{account.id}", "operator": f"operator:{operator.id}",
            "segment": f"segment:{segment.id}"}


@pytest.mark.parametrize("interval", INTERVALS)
def test_every_catalogue_metric_answers_for_every_interval_and_scope_kind(
        client: Any, admin_headers: dict[str, str], scopes: dict[str, str], interval: str) -> None:
    listed = {m["name"]: m for m in client.get("/api/v1/metrics", headers=admin_headers).json()}
    assert set(listed) == set(CATALOGUE)
    span = {"from": "2026-09-01", "to": "2026-10-31", "interval": interval}
    expected = len(metrics.buckets(date(2026, 9, 1), date(2026, 10, 31), interval))
    for name, metric in CATALOGUE.items():
        assert listed[name]["intervals"] == list(INTERVALS)
        for kind, scope in scopes.items():
            answer = client.get(f"/api/v1/metrics/{name}", headers=admin_headers, params=span | {"scope": scope})
            if kind not in metric.scopes:
                assert answer.status_code == 422, (name, kind, answer.text)  # a clear error, not a 500
                continue
            assert answer.status_code == 200, (name, kind, answer.text)
            body = answer.json()
            assert (body["metric"], body["scope"], body["interval"]) == (name, scope, interval)
            assert len(body["points"]) in (0, expected), (name, kind)
            assert all(set(p) == {"at", "value"} for p in body["points"])


def test_a_scope_the_user_may_not_see_is_404_for_every_kind(
        db: Session, make: Factory, client: Any, token_for: Any) -> None:
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn

    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    colleague = make.user("operator", accounts=[theirs])
    segment = segments_service.create_segment(db, data=SegmentIn.model_validate(
        {"name": "他们的客户", "conditions": {"kind": "and", "conditions": [
            {"kind": "account", "account_ids": [theirs.id]}]}}), viewer=SYSTEM)
    db.commit()
    headers = token_for(operator)
    hidden = [f"account:{theirs.id}", f"operator:{colleague.id}", "account:424242", "operator:424242",
              "segment:424242"]
    for name in ("touches", "ladder_fan", "revenue", "tasks_done", "wecom_chat_cnt"):
        for scope in hidden:
            if scope.split(":")[0] not in CATALOGUE[name].scopes:
                continue  # that metric takes no such scope: 422 whoever asks (the test above)
            answer = client.get(f"/api/v1/metrics/{name}", headers=headers, params={"scope": scope})
            assert answer.status_code == 404, (name, scope, answer.text)
    # a segment whose conditions name an account not theirs is not theirs either
    hidden_segment = client.get("/api/v1/metrics/ladder_traffic", headers=headers,
                                params={"scope": f"segment:{segment.id}"})
    assert hidden_segment.status_code == 404, hidden_segment.text


def test_a_period_without_data_answers_no_points(client: Any, admin_headers: dict[str, str],
                                                 scopes: dict[str, str]) -> None:
    for name in CATALOGUE:
        answer = client.get(f"/api/v1/metrics/{name}", headers=admin_headers,
                            params={"from": "2021-01-01", "to": "2021-03-31", "interval": "week"})
        assert answer.status_code == 200 and answer.json()["points"] == [], name


def test_2359_and_0001_local_fall_on_their_own_days_weeks_and_months(
        db: Session, make: Factory, client: Any, admin_headers: dict[str, str]) -> None:
    from siyu.orders.models import Order

    account = make.account()
    customer = make.customer(account)
    # Sunday 2026-11-29 23:59 and Monday 2026-11-30 00:01; Monday 11-30 23:59 and Tuesday 12-01 00:01.
    for at in (local(2026, 11, 29, 23, 59), local(2026, 11, 30, 0, 1), local(2026, 11, 30, 23, 59),
               local(2026, 12, 1, 0, 1)):
        make.touch(customer, "chat", occurred_at=at, account_id=account.id)
        db.add(Order(source="console", order_no=f"T{at:%d%H%M}", customer_id=customer.id, account_id=account.id,
                     amount=Decimal("10.50"), paid_at=at))
    db.commit()

    def points(name: str, interval: str, since: str, until: str) -> list[Any]:
        answer = client.get(f"/api/v1/metrics/{name}", headers=admin_headers,
                            params={"from": since, "to": until, "interval": interval})
        assert answer.status_code == 200, answer.text
        return [(p["at"], p["value"]) for p in answer.json()["points"]]

    assert points("private_chats", "day", "2026-11-29", "2026-12-01") == [
        ("2026-11-29", 1), ("2026-11-30", 2), ("2026-12-01", 1)]
    assert points("revenue", "day", "2026-11-29", "2026-12-01") == [
        ("2026-11-29", 10.5), ("2026-11-30", 21.0), ("2026-12-01", 10.5)]
    assert points("touches", "week", "2026-11-23", "2026-12-06") == [("2026-11-23", 1), ("2026-11-30", 3)]
    assert points("revenue", "month", "2026-11-01", "2026-12-31") == [("2026-11-01", 31.5), ("2026-12-01", 10.5)]
