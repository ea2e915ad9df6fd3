"""Staff hand-over (离职/在职继承): WeCom transfers through the simulator, personal accounts by new owner."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts import handover
from siyu.accounts import jobs as accounts_jobs
from siyu.accounts.models import Account, Handover
from siyu.core.errors import Forbidden, Invalid
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Friendship, Phone, Touch
from siyu.team.models import AuditEntry
from tests.conftest import viewer_of
from tests.test_pages import Console
from tests.test_wecom_client import Simulator, sim, wecom_settings

__all__ = ["sim", "wecom_settings"]


@pytest.fixture
def wecom(wecom_settings: Simulator) -> Simulator:
    return wecom_settings


def friends_of(db: Session, account_id: int) -> set[int]:
    return set(db.scalars(select(Friendship.customer_id).where(Friendship.account_id == account_id,
                                                               Friendship.status == "active")))


def run(db: Session, account: Any, **choice: Any) -> Handover:
    planned = handover.plan(db, from_account_id=account.id, viewer=SYSTEM, **choice)
    record = handover.start(db, handover_plan=planned, viewer=SYSTEM, message="之后由阿禾为您服务")
    db.commit()
    accounts_jobs.advance(record.id)
    db.expire_all()
    return record


def test_wecom_customers_move_to_the_other_member_and_failures_are_listed(db: Session, make: Any,
                                                                        wecom: Simulator) -> None:
    leaving = make.account(display_name="小叶", wecom_userid="shanye.xiaoye01")
    taking = make.account(display_name="阿禾", wecom_userid="shanye.ahe01")
    externals = sorted(c.external_userid for c in wecom.corp.state.contacts
                       if c.follow("shanye.xiaoye01") is not None)[:3]
    moving = []
    for n, external in enumerate(externals):
        customer = make.customer(leaving, name=f"老客{n}", remark_name=f"老客{n}-送礼", phones=[f"1380000000{n}"])
        customer.wecom_external_userid = external
        moving.append(customer)
    stranger = make.customer(leaving, name="平台不认识")
    stranger.wecom_external_userid = "wmNOBODY"
    offline = make.customer(leaving, name="没有企微ID")
    db.commit()
    planned = handover.plan(db, from_account_id=leaving.id, viewer=SYSTEM, to_account_id=taking.id)
    assert (planned.customers, planned.without_wecom_id, planned.mode) == (5, 1, "wecom")

    record = run(db, leaving, to_account_id=taking.id)
    assert handover.counts(db, handover_id=record.id) == {"pending": 0, "sent": 0, "moved": 3, "failed": 2}
    assert db.get(Handover, record.id).status == "done"  # type: ignore[union-attr]
    assert friends_of(db, taking.id) == {c.id for c in moving}
    assert friends_of(db, leaving.id) == {stranger.id, offline.id}  # never silently dropped
    moved = db.scalar(select(Friendship).where(Friendship.customer_id == moving[0].id,
                                               Friendship.account_id == taking.id))
    assert moved is not None and moved.remark_name == "老客0-送礼"
    assert db.scalar(select(Phone.number).where(Phone.friendship_id == moved.id)) == "13800000000"
    old = db.scalar(select(Friendship).where(Friendship.customer_id == moving[0].id,
                                             Friendship.account_id == leaving.id))
    assert old is not None and old.status == "transferred"
    reasons = {name: item.error for item, name in handover.failures(db, handover_id=record.id)}
    assert "40096" in reasons["平台不认识"] and "外部联系人 ID" in reasons["没有企微ID"]
    timeline = [t.details for t in db.scalars(select(Touch).where(Touch.customer_id == moving[0].id))]
    assert any(d and d.get("event") == "handover" and d.get("to") == "阿禾" for d in timeline)
    # On the platform too: the customers now follow 阿禾.
    assert {c.external_userid for c in wecom.corp.state.contacts
            if c.follow("shanye.ahe01") is not None} >= set(externals)


def test_a_platform_refusal_of_the_whole_batch_fails_those_customers_with_its_words(
        db: Session, make: Any, wecom: Simulator) -> None:
    leaving = make.account(wecom_userid="shanye.xiaoye02")
    taking = make.account(wecom_userid="shanye.ahe02")
    external = next(c.external_userid for c in wecom.corp.state.contacts if c.follow("shanye.xiaoye02"))
    customer = make.customer(leaving)
    customer.wecom_external_userid = external
    db.commit()
    record = run(db, leaving, to_account_id=taking.id, resigned=True)  # but the member has not left
    assert handover.counts(db, handover_id=record.id)["failed"] == 1
    ((item, _name),) = handover.failures(db, handover_id=record.id)
    assert item.errcode == 40097 and "40097" in item.error
    # Once the member has really left, trying again moves the customer.
    wecom.control("POST", "resign_member", {"userid": "shanye.xiaoye02"})
    assert handover.retry_failed(db, handover_id=record.id, viewer=SYSTEM) == 1
    db.commit()
    accounts_jobs.advance(record.id)
    db.expire_all()
    assert handover.counts(db, handover_id=record.id)["moved"] == 1
    assert friends_of(db, taking.id) == {customer.id}


def test_personal_account_gets_a_new_owner_with_its_customers(db: Session, make: Any) -> None:
    phone = make.account(kind="personal", wecom_userid=None, display_name="店长手机")
    first, second = make.customer(phone), make.customer(phone)
    operator = make.user("operator", accounts=[phone])
    record = run(db, phone, to_owner_id=operator.id)
    assert handover.counts(db, handover_id=record.id)["moved"] == 2
    assert {db.get(Customer, c.id).owner_id for c in (first, second)} == {operator.id}  # type: ignore[union-attr]
    assert db.get(Account, phone.id).owner_user_id == operator.id  # type: ignore[union-attr]
    assert friends_of(db, phone.id) == {first.id, second.id}  # friends stay on the phone
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "handover")) is not None


def test_bad_hand_overs_are_refused(db: Session, make: Any) -> None:
    member = make.account(wecom_userid="m1")
    phone = make.account(kind="personal", wecom_userid=None)
    operator = make.user("operator")
    service_staff = make.user("service")
    with pytest.raises(Invalid):
        handover.plan(db, from_account_id=member.id, viewer=SYSTEM)  # no receiver
    with pytest.raises(Invalid):
        handover.plan(db, from_account_id=member.id, viewer=SYSTEM, to_account_id=member.id)
    with pytest.raises(Invalid):
        handover.plan(db, from_account_id=member.id, viewer=SYSTEM, to_account_id=phone.id)
    with pytest.raises(Invalid):
        handover.plan(db, from_account_id=phone.id, viewer=SYSTEM, to_owner_id=service_staff.id)
    with pytest.raises(Forbidden):
        handover.plan(db, from_account_id=phone.id, viewer=viewer_of(operator), to_owner_id=operator.id)


def test_console_preview_confirm_and_detail(client: TestClient, make: Any, admin: Any, db: Session) -> None:
    phone = make.account(kind="personal", wecom_userid=None, display_name="<b>店长手机</b>")
    make.customer(phone, name="王芳")
    operator = make.user("operator", username="xiaoman")
    console = Console(client).login(admin)
    assert f'/accounts/{phone.id}/handover' in console.get("/accounts").text
    page = console.get(f"/accounts/{phone.id}/handover", params={"to_owner_id": operator.id})
    assert page.status_code == 200 and "&lt;b&gt;店长手机&lt;/b&gt;" in page.text
    assert 'data-testid="handover-confirm"' in page.text and "1 位客户将交给" in page.text
    done = console.post(f"/accounts/{phone.id}/handover", {"to_owner_id": str(operator.id)})
    assert done.status_code == 303 and done.headers["location"].startswith("/jobs/")
    record = db.scalar(select(Handover))
    assert record is not None
    detail = console.get(f"/handovers/{record.id}")
    assert detail.status_code == 200 and 'data-testid="count-moved">1<' in detail.text
    refused = console.post(f"/accounts/{phone.id}/handover", {"to_owner_id": "999999"})
    assert refused.status_code == 422 and "不能做客户负责人" in refused.text
    staff = Console(client)
    client.cookies.clear()
    staff.login(operator)
    assert staff.get(f"/handovers/{record.id}").status_code == 403
