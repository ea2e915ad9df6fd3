"""Bulk actions on every customer that matches a filter: count, confirm, job, timeline, audit, scope."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import db as core_db
from siyu.core.errors import Forbidden, Invalid
from siyu.core.viewer import SYSTEM
from siyu.customers import bulk, service
from siyu.customers.models import Customer, CustomerTag, Touch
from siyu.team.models import AuditEntry
from tests.conftest import viewer_of
from tests.test_pages import Console, tag_id


@pytest.fixture
def console(client: TestClient) -> Console:
    return Console(client)


def tags_of(db: Session, customer_id: int) -> set[str]:
    return {f"{t.group.name}:{t.name}" for t in service.customer_tags(db, customer_ids=[customer_id])
            .get(customer_id, [])}


def run(flt: service.CustomerFilter, action: bulk.BulkAction, viewer: Any = SYSTEM, **kwargs: Any) -> bulk.BulkResult:
    return bulk.run(core_db.transaction, flt=flt, action=action, viewer=viewer, **kwargs)


def test_every_matching_customer_is_changed_not_just_one_page(db: Session, make: Any) -> None:
    account = make.account()
    ids = make.bulk_customers(account, 130)
    other = make.customer(make.account(), name="别的账号")
    flt = service.CustomerFilter(account_id=account.id)
    white_collar = tag_id(db, "人群", "白领")
    action = bulk.BulkAction(kind=bulk.BulkKind.add_tags, tag_ids=(white_collar,))
    shown = bulk.preview(db, flt=flt, action=action, viewer=SYSTEM)
    assert shown.count == 130 and len(shown.sample) == 5 and shown.description == "添加标签 人群:白领"
    progress: list[tuple[int, int]] = []
    result = run(flt, action, batch_size=50, progress=lambda d, t: progress.append((d, t)))
    assert (result.matched, result.changed) == (130, 130)
    assert progress[0] == (0, 130) and progress[-1] == (130, 130) and len(progress) == 4
    db.expire_all()
    linked = db.scalar(select(func.count()).select_from(CustomerTag).where(CustomerTag.tag_id == white_collar))
    assert linked == 130 and "人群:白领" not in tags_of(db, other.id)
    touches = db.scalar(select(func.count()).select_from(Touch).where(Touch.kind == "tag_change",
                                                                       Touch.customer_id.in_(ids)))
    assert touches == 130
    # Running it again changes nothing and writes no new timeline entries.
    assert run(flt, action).changed == 0
    assert db.scalar(select(func.count()).select_from(Touch).where(Touch.kind == "tag_change")) == 130


def test_remove_tags_only_touches_customers_that_had_them(db: Session, make: Any) -> None:
    account = make.account()
    mum = make.customer(account, tags=["人群:宝妈", "人群:白领"])
    plain = make.customer(account)
    action = bulk.BulkAction(kind=bulk.BulkKind.remove_tags, tag_ids=(tag_id(db, "人群", "宝妈"),))
    result = run(service.CustomerFilter(), action)
    assert (result.matched, result.changed) == (2, 1)
    db.expire_all()
    assert tags_of(db, mum.id) >= {"人群:白领"} and "人群:宝妈" not in tags_of(db, mum.id)
    assert db.scalar(select(func.count()).select_from(Touch).where(Touch.customer_id == plain.id,
                                                                   Touch.kind == "tag_change")) == 0


def test_the_filter_decides_who_is_changed(db: Session, make: Any) -> None:
    account = make.account()
    mum = make.customer(account, tags=["人群:宝妈"])
    student = make.customer(account, tags=["人群:学生"])
    flt = service.CustomerFilter(tag_names=["人群:宝妈"])
    run(flt, bulk.BulkAction(kind=bulk.BulkKind.add_tags, tag_ids=(tag_id(db, "来源", "门店"),)))
    db.expire_all()
    assert "来源:门店" in tags_of(db, mum.id) and "来源:门店" not in tags_of(db, student.id)


def test_assign_owner_and_take_it_away(db: Session, make: Any) -> None:
    account = make.account()
    operator = make.user("operator", accounts=[account])
    first, second = make.customer(account), make.customer(account)
    result = run(service.CustomerFilter(), bulk.BulkAction(kind=bulk.BulkKind.assign_owner, owner_id=operator.id))
    assert result.changed == 2
    db.expire_all()
    assert {db.get(Customer, c.id).owner_id for c in (first, second)} == {operator.id}  # type: ignore[union-attr]
    assert run(service.CustomerFilter(), bulk.BulkAction(kind=bulk.BulkKind.assign_owner)).changed == 2
    db.expire_all()
    assert db.get(Customer, first.id).owner_id is None  # type: ignore[union-attr]
    fields = [t.details["fields"] for t in db.scalars(select(Touch).where(Touch.customer_id == first.id,
                                                                         Touch.kind == "field_change"))]
    assert fields == [["owner_id"], ["owner_id"]]


def test_stage_set_by_hand_survives_recompute_until_handed_back(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    assert customer.stage == "traffic"
    run(service.CustomerFilter(), bulk.BulkAction(kind=bulk.BulkKind.set_stage, stage="fan"))
    db.expire_all()
    assert db.get(Customer, customer.id).stage == "fan"  # type: ignore[union-attr]
    make.touch(db.get(Customer, customer.id), "chat", content="问价")  # a recompute of this customer
    db.expire_all()
    assert db.get(Customer, customer.id).stage == "fan"  # type: ignore[union-attr]
    run(service.CustomerFilter(), bulk.BulkAction(kind=bulk.BulkKind.set_stage, stage=None))
    db.expire_all()
    assert db.get(Customer, customer.id).stage == "user"  # type: ignore[union-attr]  # one chat: a user again


def test_operator_only_changes_their_own_accounts_customers(db: Session, make: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    own, foreign = make.customer(mine), make.customer(theirs)
    action = bulk.BulkAction(kind=bulk.BulkKind.add_tags, tag_ids=(tag_id(db, "人群", "宝妈"),))
    assert bulk.preview(db, flt=service.CustomerFilter(), action=action, viewer=viewer_of(operator)).count == 1
    run(service.CustomerFilter(), action, viewer=viewer_of(operator))
    db.expire_all()
    assert "人群:宝妈" in tags_of(db, own.id) and "人群:宝妈" not in tags_of(db, foreign.id)
    with pytest.raises(Invalid):
        bulk.preview(db, flt=service.CustomerFilter(account_id=theirs.id), action=action, viewer=viewer_of(operator))


def test_bad_actions_are_refused_before_anything_runs(db: Session, make: Any) -> None:
    account = make.account()
    make.customer(account)
    staff = make.user("service", accounts=[account])
    deactivated = make.user("operator")
    deactivated.is_active = False
    db.commit()
    computed = next(t.id for g in service.list_tag_groups(db) if g.is_computed for t in g.tags)
    bad = [bulk.BulkAction(kind=bulk.BulkKind.add_tags),
           bulk.BulkAction(kind=bulk.BulkKind.add_tags, tag_ids=(computed,)),
           bulk.BulkAction(kind=bulk.BulkKind.add_tags, tag_ids=(999_999,)),
           bulk.BulkAction(kind=bulk.BulkKind.assign_owner, owner_id=deactivated.id),
           bulk.BulkAction(kind=bulk.BulkKind.assign_owner, owner_id=staff.id),
           bulk.BulkAction(kind=bulk.BulkKind.set_stage, stage="vip")]
    for action in bad:
        with pytest.raises(Invalid):
            bulk.check_action(db, action=action, viewer=SYSTEM)
    with pytest.raises(Forbidden):
        bulk.check_action(db, action=bulk.BulkAction(kind=bulk.BulkKind.set_stage, stage="fan"),
                          viewer=viewer_of(staff))


def test_one_audit_entry_with_filter_action_and_counts(db: Session, make: Any) -> None:
    account = make.account()
    make.bulk_customers(account, 3)
    run(service.CustomerFilter(account_id=account.id), bulk.BulkAction(kind=bulk.BulkKind.set_stage, stage="customer"))
    entries = list(db.scalars(select(AuditEntry).where(AuditEntry.action == "bulk_update")))
    assert len(entries) == 1
    assert entries[0].after["matched"] == 3 and entries[0].after["filter"]["account_id"] == account.id
    assert entries[0].after["action"]["stage"] == "customer"


def test_a_bulk_action_stopped_after_a_batch_resumes_with_its_counts_and_one_audit(
        db: Session, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    account = make.account()
    make.bulk_customers(account, 120)
    flt = service.CustomerFilter(account_id=account.id)
    action = bulk.BulkAction(kind=bulk.BulkKind.add_tags, tag_ids=(tag_id(db, "人群", "白领"),))
    saved: dict[str, Any] = {}
    original, batches = bulk.apply_batch, []

    def dies_in_the_second_batch(session: Session, **kwargs: Any) -> Any:
        batches.append(1)
        changed = original(session, **kwargs)
        if len(batches) == 2:
            raise RuntimeError("worker killed")  # this batch rolls back with its position
        return changed

    monkeypatch.setattr(bulk, "apply_batch", dies_in_the_second_batch)
    with pytest.raises(RuntimeError):
        run(flt, action, batch_size=50, checkpoint=lambda _session, state: saved.update(state))
    assert (saved["matched"], saved["changed"]) == (50, 50)
    monkeypatch.setattr(bulk, "apply_batch", original)
    result = run(flt, action, batch_size=50, resume=dict(saved),
                 checkpoint=lambda _session, state: saved.update(state))
    assert (result.matched, result.changed) == (120, 120) and saved["recorded"] is True
    entries = list(db.scalars(select(AuditEntry).where(AuditEntry.action == "bulk_update")))
    assert len(entries) == 1 and entries[0].after["changed"] == 120


# ---------------------------------------------------------------- API


def test_api_dry_run_then_job(client: TestClient, make: Any, admin_headers: dict[str, str], db: Session) -> None:
    account = make.account()
    make.bulk_customers(account, 12)
    body = {"filter": {"account_id": account.id}, "action": "add_tags", "tags": ["人群:学生"]}
    response = client.post("/api/v1/customers/bulk", headers=admin_headers, json={**body, "dry_run": True})
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 12 and response.json()["description"] == "添加标签 人群:学生"
    assert db.scalar(select(func.count()).select_from(CustomerTag)) == 0
    response = client.post("/api/v1/customers/bulk", headers=admin_headers, json=body)
    assert response.status_code == 202, response.text
    job = client.get(response.json()["job_url"], headers=admin_headers).json()
    assert job["status"] == "succeeded" and job["result"]["changed"] == 12 and job["done"] == 12


def test_api_refuses_unknown_tags_and_service_staff(client: TestClient, make: Any, admin_headers: dict[str, str],
                                                    token_for: Any) -> None:
    account = make.account()
    response = client.post("/api/v1/customers/bulk", headers=admin_headers,
                           json={"action": "add_tags", "tags": ["人群:不存在"]})
    assert response.status_code == 422
    staff = make.user("service", accounts=[account])
    response = client.post("/api/v1/customers/bulk", headers=token_for(staff),
                           json={"action": "set_stage", "stage": "fan"})
    assert response.status_code == 403


# ---------------------------------------------------------------- console


def test_console_count_preview_confirm_and_job(console: Console, make: Any, admin: Any, db: Session) -> None:
    account = make.account(display_name="西湖店小满")
    make.bulk_customers(account, 60)
    console.login(admin)
    listing = console.get(f"/customers?account_id={account.id}")
    assert 'data-testid="bulk-open"' in listing.text
    page = console.get(f"/customers/bulk?account_id={account.id}")
    assert page.status_code == 200 and "60 位客户" in page.text and "西湖店小满" in page.text
    mum = tag_id(db, "人群", "宝妈")
    preview = console.get(f"/customers/bulk?account_id={account.id}&action=add_tags&bulk_tag={mum}")
    assert "添加标签 人群:宝妈" in preview.text and 'data-testid="bulk-confirm"' in preview.text
    done = console.post("/customers/bulk", {"account_id": str(account.id), "action": "add_tags",
                                            "bulk_tag": str(mum)})
    assert done.status_code == 303 and done.headers["location"].startswith("/jobs/")
    job_page = console.get(done.headers["location"])
    assert "批量：添加标签 人群:宝妈" in job_page.text
    assert db.scalar(select(func.count()).select_from(CustomerTag).where(CustomerTag.tag_id == mum)) == 60


def test_console_explains_a_missing_choice_and_refuses_without_csrf(console: Console, make: Any, admin: Any) -> None:
    account = make.account()
    make.customer(account)
    console.login(admin)
    page = console.get("/customers/bulk?action=add_tags")
    assert page.status_code == 422 and "请至少选择一个标签" in page.text
    page = console.post("/customers/bulk", {"action": "assign_owner"})
    assert page.status_code == 422 and "请选择负责人" in page.text
    page = console.post("/customers/bulk", {"action": "set_stage", "stage_to": "fan"}, csrf=False)
    assert page.status_code == 403
