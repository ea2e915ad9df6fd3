"""用户维系: cadence policies, next-due days kept with the touches, today's tasks (service and API)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.settings import local_today, local_zone
from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service
from siyu.customers.models import Friendship, FriendshipStatus, Touch, TouchKind
from siyu.customers.schemas import TouchIn
from siyu.maintenance import jobs as maintenance_jobs
from siyu.maintenance import service
from siyu.maintenance.models import CadenceDue, FollowUp, Task, TaskKind, TaskStatus
from siyu.maintenance.schemas import PolicyIn, TaskDoneIn
from siyu.segments.schemas import parse_tree
from tests.conftest import viewer_of


def _policy(db: Session, *, every: int = 7, quiet: int = 0, conditions: dict[str, Any] | None = None,
            name: str = "核心客户每周一聊") -> service.ApplyResult:
    data = PolicyIn(name=name, every_days=every, quiet_days=quiet,
                    conditions=parse_tree(conditions) if conditions else None)
    result = service.create_policy(db, data=data, viewer=SYSTEM)
    db.commit()
    return result


def _at_days_ago(days: int) -> datetime:
    return utcnow() - timedelta(days=days)


def _due(db: Session, customer_id: int) -> date:
    due = db.scalar(select(CadenceDue.next_due_on).where(CadenceDue.customer_id == customer_id))
    assert due is not None
    return due


def _tasks(db: Session, **where: Any) -> list[Task]:
    query = select(Task)
    for key, value in where.items():
        query = query.where(getattr(Task, key) == value)
    return list(db.scalars(query.order_by(Task.id)))


@pytest.fixture
def shop(make: Any, db: Session) -> dict[str, Any]:
    """Two accounts, each run by its own operator (the account's owner)."""
    from siyu.accounts.models import Account

    found: dict[str, Any] = {}
    for key, name in (("", "xiaoman"), ("other_", "xiaoya")):
        account = make.account()
        operator = make.user("operator", username=name, accounts=[account])
        db.get(Account, account.id).owner_user_id = operator.id  # type: ignore[union-attr]
        db.commit()
        found[f"{key}account"], found[f"{key}operator"] = account, operator
    return found


# ---------------------------------------------------------------- cadence


def test_next_due_day_is_every_n_days_after_the_last_private_touch_and_never_inside_the_quiet_period() -> None:
    today = date(2026, 12, 5)
    chatted = datetime(2026, 12, 1, 3, tzinfo=local_zone())
    assert service.next_due_day(today=today, every_days=7, quiet_days=0, last_private=chatted,
                                last_other=None) == date(2026, 12, 8)
    assert service.next_due_day(today=today, every_days=7, quiet_days=0, last_private=None,
                                last_other=None) == today
    bought = datetime(2026, 12, 6, 3, tzinfo=local_zone())
    assert service.next_due_day(today=today, every_days=7, quiet_days=5, last_private=chatted,
                                last_other=bought) == date(2026, 12, 11)


def test_a_policy_puts_matching_customers_on_cadence_with_their_due_day_from_the_timeline(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    chatted = make.customer(shop["account"])
    never = make.customer(shop["account"])
    make.touch(chatted, "chat", account_id=shop["account"].id, occurred_at=_at_days_ago(2))
    result = _policy(db, every=7)
    assert result.matched == 2 and result.message == ""
    assert _due(db, chatted.id) == local_today() + timedelta(days=5)
    assert _due(db, never.id) == local_today()


def test_a_policy_whose_condition_matches_nobody_creates_nothing_and_says_so(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    make.customer(shop["account"])
    result = _policy(db, conditions={"kind": "stage", "stages": ["fan"]})
    assert result.matched == 0
    assert "没有客户" in result.message or "No customer" in result.message
    assert db.scalar(select(func.count()).select_from(CadenceDue)) == 0
    assert service.generate_tasks(db).by_kind.get("cadence", 0) == 0


def test_a_private_touch_moves_the_due_day_in_the_same_transaction(make: Any, db: Session,
                                                                    shop: dict[str, Any]) -> None:
    customer = make.customer(shop["account"])
    _policy(db, every=10)
    assert _due(db, customer.id) == local_today()
    customers_service.add_touch(db, customer_id=customer.id, viewer=SYSTEM,
                                data=TouchIn(kind=TouchKind.chat, content="聊了新茶", account_id=shop["account"].id))
    # Not committed yet: the same transaction already sees the moved day.
    assert _due(db, customer.id) == local_today() + timedelta(days=10)
    db.rollback()
    assert _due(db, customer.id) == local_today()


def test_a_touch_of_another_kind_starts_the_quiet_period(make: Any, db: Session, shop: dict[str, Any]) -> None:
    customer = make.customer(shop["account"])
    _policy(db, every=7, quiet=4)
    make.touch(customer, "moments_like", account_id=shop["account"].id)
    assert _due(db, customer.id) == local_today() + timedelta(days=4)


def test_the_inbox_flood_path_moves_due_days_set_based(make: Any, db: Session, shop: dict[str, Any]) -> None:
    customers = [make.customer(shop["account"]) for _ in range(3)]
    _policy(db, every=7)
    now = utcnow()
    for c in customers:
        db.add(Touch(customer_id=c.id, account_id=shop["account"].id, kind=TouchKind.chat.value, content="在吗",
                     occurred_at=now))
    db.flush()
    customers_service.count_new_contacts(db, contacts={c.id: 1 for c in customers},
                                         last_at={c.id: now for c in customers})
    assert {_due(db, c.id) for c in customers} == {local_today() + timedelta(days=7)}


# ---------------------------------------------------------------- the daily job


def test_running_the_task_job_twice_in_one_day_creates_no_duplicates(make: Any, db: Session,
                                                                      shop: dict[str, Any]) -> None:
    for _ in range(3):
        make.customer(shop["account"])
    _policy(db, every=7)
    first = service.generate_tasks(db)
    db.commit()
    second = service.generate_tasks(db)
    db.commit()
    assert first.created == 3 and second.created == 0
    assert len(_tasks(db, kind="cadence")) == 3


def test_the_daily_job_waits_for_the_configured_local_time_and_runs_once() -> None:
    morning = datetime(2026, 12, 5, 7, 0, tzinfo=local_zone())
    assert not maintenance_jobs.is_due(now=morning, hour=7, minute=30, last_generated_on=None)
    later = morning + timedelta(minutes=45)
    assert maintenance_jobs.is_due(now=later, hour=7, minute=30, last_generated_on=date(2026, 12, 4))
    assert not maintenance_jobs.is_due(now=later, hour=7, minute=30, last_generated_on=date(2026, 12, 5))


def test_tasks_are_capped_per_operator_most_important_first(make: Any, db: Session, shop: dict[str, Any]) -> None:
    row = service.get_settings_row(db)
    row.cap_per_operator = 2
    db.commit()
    plain = [make.customer(shop["account"]) for _ in range(3)]
    overdue = make.customer(shop["account"])
    _policy(db, every=7)
    db.execute(CadenceDue.__table__.update().where(CadenceDue.customer_id == overdue.id)
               .values(next_due_on=local_today() - timedelta(days=9)))
    result = service.generate_tasks(db)
    db.commit()
    tasks = _tasks(db, account_id=shop["account"].id)
    assert result.created == 2 and len(tasks) == 2
    assert overdue.id in {t.customer_id for t in tasks}
    assert next(t for t in tasks if t.customer_id == overdue.id).overdue_days == 9
    assert len({t.customer_id for t in tasks} & {c.id for c in plain}) == 1


def test_sop_tasks_never_use_up_the_cap_of_the_daily_list(make: Any, db: Session, shop: dict[str, Any]) -> None:
    """Other domains' tasks (here SOP steps, many of them) do not crowd the daily kinds out of the list."""
    from siyu.maintenance.models import TaskKind

    row = service.get_settings_row(db)
    row.cap_per_operator = 2
    db.commit()
    customers = [make.customer(shop["account"]) for _ in range(4)]
    service.add_tasks(db, [{"customer_id": c.id, "account_id": shop["account"].id, "detail": "SOP 回访"}
                           for c in customers], kind=TaskKind.sop, day=local_today())
    _policy(db, every=7)
    result = service.generate_tasks(db)
    db.commit()
    assert result.created == 2  # the cap's two, beside the four SOP tasks already there
    assert len(_tasks(db, account_id=shop["account"].id)) >= 2


def test_a_purchase_inside_the_quiet_period_keeps_the_customer_off_the_list(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    from decimal import Decimal

    from siyu.orders.models import CustomerPurchaseFacts

    bought = make.customer(shop["account"])
    other = make.customer(shop["account"])
    _policy(db, every=7, quiet=5)
    db.add(CustomerPurchaseFacts(customer_id=bought.id, purchase_count=1, total_spent=Decimal("300"),
                                 avg_order_value=Decimal("300"), refunded_total=Decimal("0"),
                                 first_purchase_at=_at_days_ago(1), last_purchase_at=_at_days_ago(1)))
    db.commit()
    service.generate_tasks(db)
    assert {t.customer_id for t in _tasks(db, kind="cadence")} == {other.id}


def test_other_task_kinds_follow_ups_birthdays_new_friends_and_deleted(make: Any, db: Session,
                                                                         shop: dict[str, Any]) -> None:
    from siyu.customers.models import CustomField, CustomFieldValue

    account = shop["account"]
    no_remark = make.customer(account, remark_name="")
    birthday = make.customer(account)
    field = CustomField(key="birthday", label="生日", field_type="date", choices=[])
    db.add(field)
    db.flush()
    db.add(CustomFieldValue(customer_id=birthday.id, field_id=field.id,
                            value=f"1990-{local_today():%m-%d}"))
    gone = make.customer(account)
    db.execute(Friendship.__table__.update().where(Friendship.customer_id == gone.id)
               .values(status=FriendshipStatus.deleted.value, removed_at=utcnow()))
    follow = make.customer(account)
    service.schedule_follow_up(db, customer_id=follow.id, account_id=account.id, days=3, note="问问新茶喝得怎样",
                               viewer=SYSTEM, today=local_today() - timedelta(days=3))
    db.commit()
    service.generate_tasks(db)
    kinds = {(t.kind, t.customer_id) for t in _tasks(db)}
    assert (TaskKind.new_friend.value, no_remark.id) in kinds
    assert (TaskKind.birthday.value, birthday.id) in kinds
    assert (TaskKind.deleted.value, gone.id) in kinds
    assert (TaskKind.follow_up.value, follow.id) in kinds
    assert next(t for t in _tasks(db, kind="follow_up")).detail == "问问新茶喝得怎样"


def test_a_chat_during_the_day_closes_the_customers_open_chat_task(make: Any, db: Session,
                                                                    shop: dict[str, Any]) -> None:
    customer = make.customer(shop["account"])
    _policy(db, every=7)
    service.generate_tasks(db)
    db.commit()
    make.touch(customer, "chat", account_id=shop["account"].id)
    assert _tasks(db, customer_id=customer.id)[0].status == TaskStatus.closed.value


# ---------------------------------------------------------------- actions


def test_done_records_the_touch_with_the_operator_and_can_schedule_a_follow_up(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    customer = make.customer(shop["account"])
    _policy(db, every=7)
    service.generate_tasks(db)
    db.commit()
    task = _tasks(db, customer_id=customer.id)[0]
    operator = viewer_of(shop["operator"])
    service.complete_task(db, task_id=task.id, viewer=operator,
                          data=TaskDoneIn(note="聊了秋季新茶", follow_up_days=3, follow_up_note="寄样后回访"))
    db.commit()
    db.refresh(task)
    assert task.status == TaskStatus.done.value and task.finished_by_id == shop["operator"].id
    touch = db.get(Touch, task.touch_id)
    assert touch is not None and touch.user_id == shop["operator"].id and touch.content == "聊了秋季新茶"
    follow = db.scalar(select(FollowUp).where(FollowUp.customer_id == customer.id))
    assert follow is not None and follow.due_on == local_today() + timedelta(days=3)
    assert _due(db, customer.id) == local_today() + timedelta(days=7)


def test_skip_needs_a_reason_and_snooze_brings_the_task_back_later(make: Any, db: Session,
                                                                    shop: dict[str, Any]) -> None:
    from siyu.core.errors import Invalid

    a, b = make.customer(shop["account"]), make.customer(shop["account"])
    _policy(db, every=7)
    service.generate_tasks(db)
    db.commit()
    operator = viewer_of(shop["operator"])
    task_a = _tasks(db, customer_id=a.id)[0]
    with pytest.raises(Invalid):
        service.skip_task(db, task_id=task_a.id, reason="  ", viewer=operator)
    service.skip_task(db, task_id=task_a.id, reason="客户在出差", viewer=operator)
    task_b = _tasks(db, customer_id=b.id)[0]
    service.snooze_task(db, task_id=task_b.id, days=1, viewer=operator)
    db.commit()
    assert service.list_today(db, viewer=operator) == []
    assert [t.id for t in service.list_today(db, viewer=operator, day=local_today() + timedelta(days=1))] == \
        [task_b.id]
    rates = service.completion_rates(db, since=local_today(), until=local_today(), viewer=SYSTEM)
    assert [(r.operator_id, r.total, r.skipped) for r in rates] == [(shop["operator"].id, 2, 1)]


def test_operator_cannot_see_or_finish_another_accounts_tasks(make: Any, db: Session,
                                                               shop: dict[str, Any]) -> None:
    from siyu.core.errors import NotFound

    make.customer(shop["other_account"])
    _policy(db, every=7)
    service.generate_tasks(db)
    db.commit()
    operator = viewer_of(shop["operator"])
    other_task = _tasks(db, account_id=shop["other_account"].id)[0]
    assert service.list_today(db, viewer=operator) == []
    with pytest.raises(NotFound):
        service.list_today(db, viewer=operator, account_id=shop["other_account"].id)
    with pytest.raises(NotFound):
        service.complete_task(db, task_id=other_task.id, data=TaskDoneIn(), viewer=operator)


# ---------------------------------------------------------------- API and pages


def test_api_lists_today_and_done_records_the_touch(client: Any, make: Any, db: Session, shop: dict[str, Any],
                                                    token_for: Any) -> None:
    customer = make.customer(shop["account"])
    _policy(db, every=7)
    service.generate_tasks(db)
    db.commit()
    headers = token_for(shop["operator"])
    answer = client.get("/api/v1/tasks?due=today", headers=headers)
    assert answer.status_code == 200
    body = answer.json()
    assert body["next_cursor"] is None
    [item] = body["items"]
    assert set(item) >= {"id", "kind", "customer_id", "account_id", "due_at", "status", "title"}
    assert item["customer_id"] == customer.id and item["kind"] == "cadence" and item["status"] == "open"
    assert "该私聊了" in item["title"]
    done = client.post(f"/api/v1/tasks/{item['id']}/done", json={"note": "问候了一下"}, headers=headers)
    assert done.status_code == 200 and done.json()["status"] == "done"
    timeline = client.get(f"/api/v1/customers/{customer.id}/touches", headers=headers).json()
    assert any(t["content"] == "问候了一下" for t in timeline["items"])
    again = client.post(f"/api/v1/tasks/{item['id']}/done", json={}, headers=headers)
    assert again.status_code == 422 and "已经处理过" in again.json()["detail"]


def test_api_operator_opening_another_accounts_tasks_gets_404(client: Any, make: Any, db: Session,
                                                                shop: dict[str, Any], token_for: Any) -> None:
    make.customer(shop["other_account"])
    _policy(db, every=7)
    service.generate_tasks(db)
    db.commit()
    other_task = _tasks(db, account_id=shop["other_account"].id)[0]
    headers = token_for(shop["operator"])
    assert client.get(f"/api/v1/tasks?due=today&account_id={shop['other_account'].id}",
                      headers=headers).status_code == 404
    assert client.post(f"/api/v1/tasks/{other_task.id}/done", json={}, headers=headers).status_code == 404
    assert client.get("/api/v1/tasks?due=tomorrow", headers=headers).status_code == 422


def test_api_policy_matching_nobody_says_so(client: Any, make: Any, admin_headers: dict[str, str],
                                            shop: dict[str, Any]) -> None:
    make.customer(shop["account"])
    answer = client.post("/api/v1/cadence-policies", headers=admin_headers, json={
        "name": "粉丝每三天", "every_days": 3,
        "conditions": {"kind": "and", "conditions": [{"kind": "stage", "stages": ["fan"]}]}})
    assert answer.status_code == 201
    assert answer.json()["matched"] == 0 and "没有客户" in answer.json()["message"]


def test_today_page_shows_the_operators_tasks_and_the_sidebar_list(client: Any, make: Any, db: Session,
                                                                  shop: dict[str, Any]) -> None:
    from tests.test_pages import Console

    make.customer(shop["account"], name="林晓", remark_name="林晓-爱喝普洱")
    _policy(db, every=7)
    service.generate_tasks(db)
    db.commit()
    console = Console(client).login(shop["operator"])
    page = console.get("/today")
    assert page.status_code == 200 and "今日任务" in page.text and "林晓-爱喝普洱" in page.text
    assert "林晓-爱喝普洱" in console.get("/today?view=sidebar").text
    assert console.get(f"/today?account={shop['other_account'].id}").status_code == 404
    task = _tasks(db)[0]
    done = console.post(f"/today/{task.id}/done", {"note": "页面上完成", "view": "sidebar"})
    assert done.status_code == 303 and done.headers["location"] == "/today?view=sidebar"
    db.expire_all()
    assert _tasks(db)[0].status == TaskStatus.done.value


def test_a_policy_on_one_account_takes_only_that_accounts_friends(make: Any, db: Session,
                                                                   shop: dict[str, Any]) -> None:
    mine = make.customer(shop["account"])
    make.customer(shop["other_account"])
    result = _policy(db, conditions={"kind": "account", "account_ids": [shop["account"].id]})
    assert result.matched == 1
    assert list(db.scalars(select(CadenceDue.customer_id))) == [mine.id]


def test_a_friend_who_deleted_us_leaves_the_cadence_at_the_daily_run(make: Any, db: Session,
                                                                     shop: dict[str, Any]) -> None:
    gone = make.customer(shop["account"])
    stays = make.customer(shop["account"])
    _policy(db, every=7)
    db.execute(Friendship.__table__.update().where(Friendship.customer_id == gone.id)
               .values(status=FriendshipStatus.deleted.value, removed_at=utcnow()))
    summary = maintenance_jobs.run_daily(db, service=service)
    db.commit()
    assert list(db.scalars(select(CadenceDue.customer_id))) == [stays.id]
    assert {(t.kind, t.customer_id) for t in _tasks(db)} == {("cadence", stays.id), ("deleted", gone.id)}
    assert summary["created"] == 2


def test_api_follow_up_in_three_days_becomes_a_task_on_that_day(client: Any, make: Any, db: Session,
                                                                 shop: dict[str, Any], token_for: Any) -> None:
    customer = make.customer(shop["account"])
    headers = token_for(shop["operator"])
    answer = client.post(f"/api/v1/customers/{customer.id}/follow-ups", headers=headers,
                         json={"account_id": shop["account"].id, "days": 3, "note": "3 天后回访：样品喝了吗"})
    assert answer.status_code == 201 and answer.json()["due_on"] == (local_today() + timedelta(days=3)).isoformat()
    assert client.post(f"/api/v1/customers/{customer.id}/follow-ups", headers=headers,
                       json={"account_id": shop["other_account"].id, "days": 3}).status_code == 404
    service.generate_tasks(db, now=utcnow() + timedelta(days=3))
    [task] = _tasks(db, kind="follow_up")
    assert task.customer_id == customer.id and task.detail == "3 天后回访：样品喝了吗"


def test_api_task_settings_are_admin_only_and_the_cap_applies(client: Any, make: Any, db: Session,
                                                              shop: dict[str, Any], token_for: Any,
                                                              admin_headers: dict[str, str]) -> None:
    body = {"generate_hour": 8, "generate_minute": 0, "cap_per_operator": 1}
    assert client.put("/api/v1/tasks/settings", json=body, headers=token_for(shop["operator"])).status_code == 403
    answer = client.put("/api/v1/tasks/settings", json=body, headers=admin_headers)
    assert answer.status_code == 200 and answer.json()["cap_per_operator"] == 1
    assert client.put("/api/v1/tasks/settings", json=body | {"generate_hour": 24},
                      headers=admin_headers).status_code == 422
    for _ in range(3):
        make.customer(shop["account"])
    _policy(db, every=7)
    db.expire_all()
    assert service.generate_tasks(db).created == 1


def test_admin_creates_a_policy_on_the_console_and_is_told_when_it_matches_nobody(
        client: Any, make: Any, admin: Any, shop: dict[str, Any]) -> None:
    from tests.test_pages import Console

    make.customer(shop["account"])
    console = Console(client).login(admin)
    page = console.post("/maintenance/policies", {
        "name": "粉丝每三天", "every_days": "3", "quiet_days": "1",
        "conditions": '{"kind": "and", "conditions": [{"kind": "stage", "stages": ["fan"]}]}'})
    assert page.status_code == 200 and "当前没有客户符合此节奏的条件" in page.text and "粉丝每三天" in page.text
    broken = console.post("/maintenance/policies", {"name": "坏条件", "every_days": "3", "conditions": "{not json"})
    assert broken.status_code == 422 and "请检查名称、天数和条件" in broken.text
    assert console.get("/maintenance/policies").status_code == 200
    operator = Console(client).login(shop["operator"])
    assert operator.get("/maintenance/policies").status_code == 403


def test_editing_a_policy_moves_due_days_and_a_new_condition_changes_who_is_on_it(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    from siyu.maintenance.schemas import PolicyUpdate
    from siyu.team.models import AuditEntry

    mine = make.customer(shop["account"])
    theirs = make.customer(shop["other_account"])
    make.touch(mine, "chat", account_id=shop["account"].id, occurred_at=_at_days_ago(2))
    policy = _policy(db, every=7).policy
    assert _due(db, mine.id) == local_today() + timedelta(days=5)
    service.update_policy(db, policy_id=policy.id, data=PolicyUpdate(every_days=3), viewer=SYSTEM)
    db.commit()
    assert _due(db, mine.id) == local_today() + timedelta(days=1)
    result = service.update_policy(db, policy_id=policy.id, viewer=SYSTEM, data=PolicyUpdate(
        conditions=parse_tree({"kind": "account", "account_ids": [shop["other_account"].id]})))
    db.commit()
    assert result.matched == 1
    assert list(db.scalars(select(CadenceDue.customer_id))) == [theirs.id]
    off = service.update_policy(db, policy_id=policy.id, data=PolicyUpdate(active=False), viewer=SYSTEM)
    db.commit()
    assert off.matched == 0 and db.scalar(select(func.count()).select_from(CadenceDue)) == 0
    assert service.apply_all_policies(db) == {}  # an inactive policy stays off at the daily run
    actions = list(db.scalars(select(AuditEntry.action).where(AuditEntry.entity_type == "cadence_policy")
                              .order_by(AuditEntry.id)))
    assert actions == ["create", "update", "update", "disable"]


def test_admin_edits_switches_off_and_deletes_a_policy_on_the_console(
        client: Any, make: Any, db: Session, admin: Any, shop: dict[str, Any]) -> None:
    from tests.test_pages import Console

    make.customer(shop["account"])
    policy = _policy(db, every=7, name="每周一聊").policy
    console = Console(client).login(admin)
    page = console.get("/maintenance/policies")
    assert f'data-testid="policy-edit-{policy.id}"' in page.text and "删除节奏“每周一聊”" in page.text
    saved = console.post(f"/maintenance/policies/{policy.id}", {
        "name": "每五天一聊", "every_days": "5", "quiet_days": "2", "conditions": ""})
    assert saved.status_code == 200 and "节奏“每五天一聊”已保存" in saved.text
    bad = console.post(f"/maintenance/policies/{policy.id}", {"name": "x", "every_days": "0", "conditions": ""})
    assert bad.status_code == 422 and "请检查名称、天数和条件" in bad.text
    off = console.post(f"/maintenance/policies/{policy.id}", {"active": "0"})
    assert off.status_code == 200 and "已关闭" in off.text
    db.expire_all()
    assert service.get_policy(db, policy_id=policy.id).every_days == 5
    assert db.scalar(select(func.count()).select_from(CadenceDue)) == 0
    gone = console.post(f"/maintenance/policies/{policy.id}/delete", {})
    assert gone.status_code == 200 and "已删除" in gone.text
    assert console.post(f"/maintenance/policies/{policy.id}", {"active": "1"}).status_code == 404
    operator = Console(client).login(shop["operator"])
    assert operator.post(f"/maintenance/policies/{policy.id}/delete", {}).status_code in (403, 404)


def test_api_patch_policy_is_admin_only_and_validated(client: Any, make: Any, db: Session, shop: dict[str, Any],
                                                      token_for: Any, admin_headers: dict[str, str]) -> None:
    make.customer(shop["account"])
    policy = _policy(db, every=7).policy
    url = f"/api/v1/cadence-policies/{policy.id}"
    assert client.patch(url, json={"every_days": 3}, headers=token_for(shop["operator"])).status_code == 403
    assert client.patch(url, json={"every_days": 0}, headers=admin_headers).status_code == 422
    answer = client.patch(url, json={"quiet_days": 2, "name": "改名了"}, headers=admin_headers)
    assert answer.status_code == 200 and answer.json()["name"] == "改名了" and answer.json()["quiet_days"] == 2
    assert client.patch("/api/v1/cadence-policies/99999", json={"active": False},
                        headers=admin_headers).status_code == 404


def test_operator_schedules_a_follow_up_from_the_customer_page_and_it_is_on_that_days_list(
        client: Any, make: Any, db: Session, shop: dict[str, Any]) -> None:
    from tests.test_pages import Console

    customer = make.customer(shop["account"], name="林晓")
    console = Console(client).login(shop["operator"])
    page = console.get(f"/customers/{customer.id}")
    assert 'data-testid="follow-up-form"' in page.text
    done = console.post(f"/customers/{customer.id}/follow-ups",
                        {"account_id": str(shop["account"].id), "days": "3", "note": "问问样品喝得怎么样"})
    assert done.status_code == 303 and "done=follow-up" in done.headers["location"]
    assert "已安排回访" in console.get(done.headers["location"]).text
    bad = console.post(f"/customers/{customer.id}/follow-ups", {"account_id": str(shop["account"].id), "days": "0"})
    assert "follow-up-invalid" in bad.headers["location"]
    assert "天数在 1 到 365 之间" in console.get(bad.headers["location"]).text
    other = console.post(f"/customers/{customer.id}/follow-ups",
                         {"account_id": str(shop["other_account"].id), "days": "3"})
    assert other.status_code == 404
    service.generate_tasks(db, now=utcnow() + timedelta(days=3))
    [task] = _tasks(db, kind="follow_up")
    assert task.customer_id == customer.id and task.detail == "问问样品喝得怎么样"


def test_today_page_shows_last_weeks_completion_per_operator_scoped_to_the_viewer(
        client: Any, make: Any, db: Session, admin: Any, shop: dict[str, Any]) -> None:
    from tests.test_pages import Console

    make.customer(shop["account"])
    make.customer(shop["other_account"])
    _policy(db, every=7)
    service.generate_tasks(db)
    db.commit()
    mine = _tasks(db, account_id=shop["account"].id)[0]
    service.complete_task(db, task_id=mine.id, data=TaskDoneIn(), viewer=viewer_of(shop["operator"]))
    db.commit()
    lead = Console(client).login(admin).get("/today")
    assert 'data-testid="completion"' in lead.text and "完成率" in lead.text
    assert "100%" in lead.text and "0%" in lead.text  # one operator did theirs, the other not yet
    own = Console(client).login(shop["operator"]).get("/today")
    table = own.text.split('data-testid="completion"')[1]
    assert "100%" in table and "0%" not in table.replace("100%", "")


def test_an_unanswered_conversation_task_leaves_the_list_once_somebody_answered(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    from siyu.inbox import service as inbox_service
    from siyu.inbox.models import Conversation
    from siyu.inbox.service import InboundMessage

    customer = make.customer(shop["account"])
    inbox_service.ingest(db, [InboundMessage(source="simulator", platform_msgid="w1", account_id=shop["account"].id,
                                             customer_id=customer.id, sent_at=utcnow(), text="在吗？想问下发货",
                                             channel="personal")],
                         auto_reply=False)
    db.commit()
    service.generate_tasks(db)
    db.commit()
    viewer = viewer_of(shop["operator"])
    assert [t.kind for t in service.list_today(db, viewer=viewer)] == ["unanswered"]
    conversation = db.scalar(select(Conversation).where(Conversation.customer_id == customer.id))
    assert conversation is not None
    sent = inbox_service.reply(db, conversation_id=conversation.id, text="您好，今天发货", viewer=viewer)
    db.commit()
    assert len(service.list_today(db, viewer=viewer)) == 1  # on its way: the customer still waits
    inbox_service.reply_accepted(db, message=sent)  # what the delivery job does when the platform took it
    db.commit()
    assert service.list_today(db, viewer=viewer) == []
