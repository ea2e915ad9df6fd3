"""用户维系: the 公海 (claims, the daily limit, hold-time returns, the sweep) and the churn review and list."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.errors import Conflict, Invalid, NotFound
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.maintenance import churn, pool, service
from siyu.maintenance.models import PoolClaim, Task, TaskKind
from siyu.team.models import AuditEntry, User
from tests.conftest import viewer_of

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai: fixed, in the past


@pytest.fixture
def shop(make: Any, db: Session) -> dict[str, Any]:
    """Two accounts, each with its own operator."""
    found: dict[str, Any] = {}
    for key in ("", "other_"):
        account = make.account()
        found[f"{key}account"] = account
        found[f"{key}operator"] = make.user("operator", accounts=[account])
    found["colleague"] = make.user("operator", accounts=[found["account"]])
    return found


def _in_pool(db: Session, customer: Any, *, at: datetime = T0) -> Customer:
    row = db.get(Customer, customer.id)
    assert row is not None
    row.owner_id, row.pool_since, row.claimed_at = None, at, None
    db.commit()
    return row


def _pool_touches(db: Session, customer_id: int) -> list[str]:
    return [str((t.details or {}).get("action")) for t in db.scalars(
        select(Touch).where(Touch.customer_id == customer_id, Touch.kind == TouchKind.system.value).order_by(Touch.id))
        if (t.details or {}).get("event") == "pool"]


# ---------------------------------------------------------------- claims


def test_claiming_makes_the_operator_owner_and_writes_the_timeline_and_the_audit_log(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    customer = _in_pool(db, make.customer(shop["account"]))
    pool.claim(db, customer_id=customer.id, viewer=viewer_of(shop["operator"]), now=T0 + timedelta(hours=1))
    db.commit()
    db.expire_all()
    row = db.get(Customer, customer.id)
    assert row is not None and row.owner_id == shop["operator"].id and row.pool_since is None
    assert row.claimed_at == T0 + timedelta(hours=1)
    assert _pool_touches(db, customer.id) == ["claim"]
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "pool_claim", AuditEntry.entity_id == str(customer.id))) == 1


def test_claiming_past_the_daily_limit_is_refused_with_the_limit_named(make: Any, db: Session,
                                                                       shop: dict[str, Any]) -> None:
    service.get_settings_row(db).pool_claim_limit = 2
    db.commit()
    customers = [_in_pool(db, make.customer(shop["account"])) for _ in range(3)]
    viewer = viewer_of(shop["operator"])
    for c in customers[:2]:
        pool.claim(db, customer_id=c.id, viewer=viewer, now=T0)
    with pytest.raises(Invalid) as refused:
        pool.claim(db, customer_id=customers[2].id, viewer=viewer, now=T0 + timedelta(hours=2))
    assert "2" in refused.value.message and "上限" in refused.value.message
    # The next local day the quota is fresh.
    pool.claim(db, customer_id=customers[2].id, viewer=viewer, now=T0 + timedelta(days=1))


def test_claiming_a_customer_someone_else_claimed_is_a_conflict_naming_them(make: Any, db: Session,
                                                                            shop: dict[str, Any]) -> None:
    customer = _in_pool(db, make.customer(shop["account"]))
    pool.claim(db, customer_id=customer.id, viewer=viewer_of(shop["colleague"]), now=T0)
    db.commit()
    with pytest.raises(Conflict) as taken:
        pool.claim(db, customer_id=customer.id, viewer=viewer_of(shop["operator"]), now=T0)
    assert shop["colleague"].username in taken.value.message


def test_an_operator_cannot_claim_or_see_another_accounts_pool_customer(make: Any, db: Session,
                                                                       shop: dict[str, Any]) -> None:
    theirs = _in_pool(db, make.customer(shop["other_account"]))
    mine = _in_pool(db, make.customer(shop["account"]))
    viewer = viewer_of(shop["operator"])
    with pytest.raises(NotFound):
        pool.claim(db, customer_id=theirs.id, viewer=viewer, now=T0)
    assert [c.id for c in pool.list_pool(db, viewer=viewer)] == [mine.id]
    with pytest.raises(NotFound):
        pool.list_pool(db, viewer=viewer, account_id=shop["other_account"].id)


# ---------------------------------------------------------------- the sweep


def test_an_unworked_claim_returns_after_the_hold_time_once_and_a_worked_one_stays(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    service.get_settings_row(db).pool_hold_days = 3
    db.commit()
    idle = _in_pool(db, make.customer(shop["account"]))
    worked = _in_pool(db, make.customer(shop["account"]))
    viewer = viewer_of(shop["operator"])
    for c in (idle, worked):
        pool.claim(db, customer_id=c.id, viewer=viewer, now=T0)
    db.commit()
    make.touch(worked, "chat", account_id=shop["account"].id, occurred_at=T0 + timedelta(days=1))
    early = pool.sweep(db, now=T0 + timedelta(days=2))
    assert early.returned == 0
    first = pool.sweep(db, now=T0 + timedelta(days=3, hours=1))
    second = pool.sweep(db, now=T0 + timedelta(days=3, hours=2))
    db.commit()
    assert (first.returned, second.returned) == (1, 0)
    db.expire_all()
    assert db.get(Customer, idle.id).owner_id is None  # type: ignore[union-attr]
    assert db.get(Customer, worked.id).owner_id == shop["operator"].id  # type: ignore[union-attr]
    assert _pool_touches(db, idle.id) == ["claim", "return"]
    assert db.scalar(select(PoolClaim.returned_at).where(PoolClaim.customer_id == idle.id)) is not None
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "pool_return")) == 1


def test_the_sweep_puts_departed_owners_and_untouched_customers_in_the_pool_and_twice_moves_nobody_twice(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    service.get_settings_row(db).pool_untouched_days = 30
    left = make.user("operator", accounts=[shop["account"]])
    orphan, quiet, busy = (make.customer(shop["account"]) for _ in range(3))
    db.get(Customer, orphan.id).owner_id = left.id  # type: ignore[union-attr]
    db.get(Customer, orphan.id).last_touch_at = T0  # type: ignore[union-attr]
    db.get(User, left.id).is_active = False  # type: ignore[union-attr]
    db.get(Customer, quiet.id).last_touch_at = T0 - timedelta(days=31)  # type: ignore[union-attr]
    db.get(Customer, busy.id).last_touch_at = T0 - timedelta(days=5)  # type: ignore[union-attr]
    db.commit()
    first = pool.sweep(db, now=T0)
    second = pool.sweep(db, now=T0 + timedelta(minutes=5))
    db.commit()
    assert (first.owner_left, first.untouched) == (1, 1)
    assert (second.owner_left, second.untouched, second.returned) == (0, 0, 0)
    db.expire_all()
    assert db.get(Customer, orphan.id).pool_since == T0  # type: ignore[union-attr]
    assert db.get(Customer, quiet.id).pool_since == T0  # type: ignore[union-attr]
    assert db.get(Customer, busy.id).pool_since is None  # type: ignore[union-attr]
    assert _pool_touches(db, orphan.id) == ["enter"] and _pool_touches(db, quiet.id) == ["enter"]


def test_the_daily_job_runs_the_pool_sweep(make: Any, db: Session, shop: dict[str, Any]) -> None:
    from siyu.maintenance import jobs as maintenance_jobs

    service.get_settings_row(db).pool_untouched_days = 10
    customer = make.customer(shop["account"])
    db.get(Customer, customer.id).last_touch_at = T0 - timedelta(days=20)  # type: ignore[union-attr]
    db.commit()
    result = maintenance_jobs.run_daily(db, service=service, now=T0)
    assert result["pool"] == {"returned": 0, "owner_left": 0, "untouched": 1}


# ---------------------------------------------------------------- API and console (pool)


def test_api_pool_lists_own_accounts_claims_and_answers_404_409_and_the_limit(
        client: Any, make: Any, db: Session, shop: dict[str, Any], token_for: Any) -> None:
    service.get_settings_row(db).pool_claim_limit = 1
    mine = [_in_pool(db, make.customer(shop["account"], name=f"公海客户{i}")) for i in range(2)]
    theirs = _in_pool(db, make.customer(shop["other_account"]))
    headers = token_for(shop["operator"])
    listed = client.get("/api/v1/pool?limit=1", headers=headers).json()
    assert [i["customer_id"] for i in listed["items"]] == [mine[0].id] and listed["claim_limit"] == 1
    rest = client.get(f"/api/v1/pool?limit=1&cursor={listed['next_cursor']}", headers=headers).json()
    assert [i["customer_id"] for i in rest["items"]] == [mine[1].id] and rest["next_cursor"] is None
    assert client.post(f"/api/v1/pool/{theirs.id}/claim", headers=headers).status_code == 404
    claimed = client.post(f"/api/v1/pool/{mine[0].id}/claim", headers=headers)
    assert claimed.status_code == 200 and claimed.json()["owner_id"] == shop["operator"].id
    over = client.post(f"/api/v1/pool/{mine[1].id}/claim", headers=headers)
    assert over.status_code == 422 and "1" in over.json()["detail"]
    again = client.post(f"/api/v1/pool/{mine[0].id}/claim", headers=token_for(shop["colleague"]))
    assert again.status_code == 409 and shop["operator"].username in again.json()["detail"]
    assert client.get("/api/v1/pool?cursor=bad", headers=headers).status_code == 422
    assert client.put("/api/v1/pool/settings", headers=headers, json={
        "pool_untouched_days": 1, "pool_claim_limit": 1, "pool_hold_days": 1}).status_code == 403


def test_pool_page_lists_and_claims(client: Any, make: Any, db: Session, shop: dict[str, Any]) -> None:
    from tests.test_pages import Console

    customer = _in_pool(db, make.customer(shop["account"], name="公海里的王姐"))
    _in_pool(db, make.customer(shop["other_account"], name="别家的李哥"))
    console = Console(client).login(shop["operator"])
    page = console.get("/pool")
    assert page.status_code == 200 and "公海" in page.text and "公海里的王姐" in page.text
    assert "别家的李哥" not in page.text
    claimed = console.post(f"/pool/{customer.id}/claim", {})
    assert claimed.status_code == 303 and claimed.headers["location"] == f"/pool?claimed={customer.id}"
    after = console.get(claimed.headers["location"])
    assert "认领成功" in after.text and "公海里的王姐" not in after.text.split("data-testid=\"pool-quota\"")[1]


# ---------------------------------------------------------------- churn


def _lost(db: Session, customer: Any, account: Any, *, at: datetime, side: str) -> Friendship:
    friendship = db.scalar(select(Friendship).where(Friendship.customer_id == customer.id,
                                                    Friendship.account_id == account.id))
    assert friendship is not None
    friendship.status, friendship.removed_at, friendship.ended_by = FriendshipStatus.deleted.value, at, side
    db.commit()
    return friendship


def test_the_churn_list_filters_by_account_dates_and_side_and_pages_by_cursor(make: Any, db: Session,
                                                                             shop: dict[str, Any]) -> None:
    a = [make.customer(shop["account"]) for _ in range(3)]
    other = make.customer(shop["other_account"])
    _lost(db, a[0], shop["account"], at=T0, side="customer")
    _lost(db, a[1], shop["account"], at=T0 + timedelta(days=2), side="member")
    _lost(db, a[2], shop["account"], at=T0 + timedelta(days=5), side="customer")
    _lost(db, other, shop["other_account"], at=T0, side="customer")
    viewer = viewer_of(shop["operator"])
    newest = churn.list_churn(db, viewer=viewer)
    assert [r.customer.id for r in newest] == [a[2].id, a[1].id, a[0].id]  # never another account's
    assert [r.customer.id for r in churn.list_churn(db, viewer=viewer, side="customer")] == [a[2].id, a[0].id]
    assert [r.customer.id for r in churn.list_churn(db, viewer=viewer, since=date(2026, 11, 3),
                                                    until=date(2026, 11, 5))] == [a[1].id]
    first = churn.list_churn(db, viewer=viewer, limit=2)
    last = first[-1].friendship
    assert last.removed_at is not None
    rest = churn.list_churn(db, viewer=viewer, after=(last.removed_at, last.id))
    assert [r.customer.id for r in rest] == [a[0].id]
    with pytest.raises(NotFound):
        churn.list_churn(db, viewer=viewer, account_id=shop["other_account"].id)
    with pytest.raises(Invalid):
        churn.list_churn(db, viewer=viewer, side="nobody")
    with pytest.raises(Invalid):
        churn.list_churn(db, viewer=viewer, since=date(2026, 11, 5), until=date(2026, 11, 3))


def test_the_deleted_task_stores_the_reason_and_shows_the_other_account_to_win_back_through(
        client: Any, make: Any, db: Session, shop: dict[str, Any]) -> None:
    from siyu.accounts.models import Account
    from tests.test_pages import Console

    second = make.account(display_name="茶小满备用号")
    operator = make.user("operator", accounts=[shop["account"], second])
    db.get(Account, shop["account"].id).owner_user_id = operator.id  # type: ignore[union-attr]
    customer = make.customer(shop["account"], name="离开的赵姐")
    db.add(Friendship(customer_id=customer.id, account_id=second.id, status=FriendshipStatus.active.value))
    db.commit()
    _lost(db, customer, shop["account"], at=datetime.now(UTC) - timedelta(hours=1), side="customer")
    service.generate_tasks(db)
    db.commit()
    task = db.scalar(select(Task).where(Task.kind == TaskKind.deleted.value, Task.customer_id == customer.id))
    assert task is not None
    console = Console(client).login(operator)
    page = console.get("/today")
    assert "通过 茶小满备用号 挽回" in page.text and "流失原因" in page.text
    bad = console.post(f"/today/{task.id}/churn-reason", {"reason": "whatever"})
    assert bad.status_code == 422 and "请从列表中选择流失原因" in bad.text
    saved = console.post(f"/today/{task.id}/churn-reason", {"reason": "too_many_messages", "note": "群发太频繁"})
    assert saved.status_code == 303
    db.expire_all()
    friendship = db.scalar(select(Friendship).where(Friendship.customer_id == customer.id,
                                                    Friendship.account_id == shop["account"].id))
    assert friendship is not None and (friendship.churn_reason, friendship.churn_note) == ("too_many_messages",
                                                                                            "群发太频繁")
    assert db.get(Task, task.id).status == "done"  # type: ignore[union-attr]
    churn_page = console.get(f"/customers/churn?account={shop['account'].id}&side=customer")
    assert churn_page.status_code == 200 and "离开的赵姐" in churn_page.text and "消息打扰太多" in churn_page.text
    assert "离开的赵姐" not in console.get("/customers/churn?side=member").text
    assert console.get("/customers/churn?since=yesterday").status_code == 422
    assert console.get(f"/customers/churn?account={shop['other_account'].id}").status_code == 404
    moved = console.get("/wecom/churn")  # the old address leads to the one churn list
    assert moved.status_code == 200 and "离开的赵姐" in moved.text and "流失好友" in moved.text


def test_api_churn_review_and_list(client: Any, make: Any, db: Session, shop: dict[str, Any],
                                   token_for: Any) -> None:
    customer = make.customer(shop["account"])
    _lost(db, customer, shop["account"], at=T0, side="member")
    headers = token_for(shop["operator"])
    url = f"/api/v1/customers/{customer.id}/churn/{shop['account'].id}"
    assert client.put(url, headers=headers, json={"reason": "nope"}).status_code == 422
    saved = client.put(url, headers=headers, json={"reason": "price", "note": "嫌贵"})
    assert saved.status_code == 200 and saved.json()["churn_reason"] == "price"
    other = token_for(shop["other_operator"])
    assert client.put(url, headers=other, json={"reason": "price"}).status_code == 404
    listed = client.get("/api/v1/churn?side=member", headers=headers).json()
    assert [(i["customer_id"], i["ended_by"], i["churn_note"]) for i in listed["items"]] == [
        (customer.id, "member", "嫌贵")]
    assert client.get("/api/v1/churn", headers=other).json()["items"] == []
