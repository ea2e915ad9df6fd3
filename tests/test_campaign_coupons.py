"""A campaign issues coupons: each customer it sends to gets exactly one code of the attached batch through
the one pool (not the hold-out), the personal accounts' task lists carry each customer's {券码}, and a pool
too small is a clear refusal before anything is created — the dry run shows it, nothing is half-issued."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.campaigns import rewards, service
from siyu.campaigns.models import Campaign, CampaignRecipient, CampaignTask, RecipientGroup
from siyu.campaigns.schemas import CampaignEdit, CampaignIn
from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.core.viewer import SYSTEM
from siyu.coupons import service as coupons_service
from siyu.coupons.models import CouponBatchCode
from siyu.coupons.schemas import BatchIn
from siyu.customers.models import Touch
from siyu.maintenance.models import Task, TaskKind
from siyu.sends import service as sends
from siyu.sends.models import QuotaMode, SendLedgerEntry, SendSource
from tests.conftest import viewer_of
from tests.test_campaigns import segment_of
from tests.test_pages import Console


def batch(db: Session, codes: int, name: str = "春茶 20 元券") -> Any:
    made = coupons_service.create_batch(db, viewer=SYSTEM, data=BatchIn(
        name=name, amount=Decimal("20"), valid_from=date.today() - timedelta(days=1),
        valid_until=date.today() + timedelta(days=30), generate=codes))
    db.commit()
    return made


def held(db: Session, batch_id: int) -> dict[int, str]:
    return {int(c): str(code) for c, code in db.execute(select(CouponBatchCode.customer_id, CouponBatchCode.code)
                                                        .where(CouponBatchCode.batch_id == batch_id,
                                                               CouponBatchCode.customer_id.is_not(None)))}


def nothing_created(db: Session) -> bool:
    return not any(db.scalar(select(func.count()).select_from(m)) for m in (
        Campaign, CampaignTask, CampaignRecipient, SendLedgerEntry))


def test_each_customer_sent_to_gets_one_code_the_holdout_none_and_the_task_list_names_each_code(
        db: Session, make: Any, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    people = [make.customer(account) for _n in range(20)]
    segment_id = segment_of(db, admin, account)
    coupon = batch(db, codes=30)
    campaign, plan = service.create_campaign(db, data=CampaignIn(
        name="春茶回馈", segment_id=segment_id, text="{账号}送您春茶券 {券码}，到店出示即可", holdout_percent=10,
        coupon_batch_id=coupon.id), viewer=viewer_of(admin))
    db.commit()  # the send job makes the task lists on commit
    assert campaign is not None and plan.targeted == 18 and len(plan.holdout) == 2
    codes = held(db, coupon.id)
    sent_to = set(db.scalars(select(CampaignRecipient.customer_id).where(
        CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.grp == RecipientGroup.send.value)))
    assert set(codes) == sent_to and len(set(codes.values())) == 18  # one distinct code each
    assert not set(plan.holdout) & set(codes)  # the hold-out gets none
    tasks = {t.customer_id: t.detail for t in db.scalars(select(Task).where(Task.kind == TaskKind.campaign.value))}
    assert len(tasks) == 18
    for customer_id in sent_to:
        assert codes[customer_id] in tasks[customer_id] and "{券码}" not in tasks[customer_id]
    someone = next(p for p in people if p.id in codes)
    issued = db.scalars(select(Touch).where(Touch.customer_id == someone.id)).all()
    assert [(t.details or {}).get("code") for t in issued if (t.details or {}).get("event") == "coupon_issued"] \
        == [codes[someone.id]]  # on the customer's timeline, once
    # A second campaign with the same batch gives the same customers their same code, not a second one.
    _again, _plan = service.create_campaign(db, data=CampaignIn(
        name="春茶回馈二", segment_id=segment_id, text="别忘了您的券 {券码}", coupon_batch_id=coupon.id),
        viewer=viewer_of(admin))
    db.commit()
    after = held(db, coupon.id)
    assert {c: after[c] for c in codes} == codes and len(after) == 20
    assert rewards.figures(db, campaign_id=campaign.id, batch_id=coupon.id) == (18, 0)


def test_a_pool_too_small_is_refused_before_anything_is_created_and_the_dry_run_shows_it(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    for _n in range(10):
        make.customer(account)
    segment_id = segment_of(db, admin, account)
    coupon = batch(db, codes=6)
    body = {"name": "券不够", "segment_id": segment_id, "text": "送券 {券码}", "coupon_batch_id": coupon.id}
    dry = client.post("/api/v1/campaigns", headers=admin_headers, json=body | {"dry_run": True})
    assert dry.status_code == 200, dry.text
    coupons = dry.json()["coupons"]
    assert (coupons["needed"], coupons["free"]) == (10, 6) and "10" in coupons["error"] and "6" in coupons["error"]
    refused = client.post("/api/v1/campaigns", headers=admin_headers, json=body)
    assert refused.status_code == 422 and "券码不够" in refused.json()["detail"]
    db.expire_all()
    assert nothing_created(db) and held(db, coupon.id) == {}
    # Enough codes: the same send goes.
    coupons_service.add_codes(db, batch_id=coupon.id, codes=[], generate=4, viewer=SYSTEM)
    db.commit()
    sent = client.post("/api/v1/campaigns", headers=admin_headers, json=body)
    assert sent.status_code == 200 and sent.json()["coupons"]["error"] == ""
    assert len(held(db, coupon.id)) == 10


def test_a_pool_drained_between_the_check_and_the_draw_rolls_the_whole_send_back(
        db: Session, make: Any, admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    for _n in range(5):
        make.customer(account)
    segment_id = segment_of(db, admin, account)
    coupon = batch(db, codes=3)
    real = rewards.check

    def stale_check(*args: Any, **kwargs: Any) -> rewards.CouponCheck:
        found = real(*args, **kwargs)
        found.problem, found.params = "", {}  # the pool looked big enough when it was read
        return found

    monkeypatch.setattr(rewards, "check", stale_check)
    with pytest.raises(Invalid) as refused:
        service.create_campaign(db, data=CampaignIn(name="抢券", segment_id=segment_id, text="送券",
                                                    coupon_batch_id=coupon.id), viewer=viewer_of(admin))
    assert "券码不够" in refused.value.message
    db.rollback()
    assert nothing_created(db) and held(db, coupon.id) == {}


def test_the_coupon_variable_is_refused_for_customers_sent_through_wecom_and_without_a_batch(
        db: Session, make: Any, admin: Any) -> None:
    member = make.account(wecom_userid="shanye.xiaoye01")
    for n in range(3):
        customer = make.customer(member)
        customer.wecom_external_userid = f"wmCOUPON{n}"
    db.commit()
    segment_id = segment_of(db, admin, member)
    coupon = batch(db, codes=10)
    with pytest.raises(Invalid):  # {券码} with no batch to fill it
        service.create_campaign(db, data=CampaignIn(name="x", segment_id=segment_id, text="券 {券码}"),
                                viewer=viewer_of(admin))
    _none, plan = service.create_campaign(db, data=CampaignIn(
        name="x", segment_id=segment_id, text="券 {券码}", coupon_batch_id=coupon.id, dry_run=True),
        viewer=viewer_of(admin))
    assert plan.coupons is not None and "3" in plan.coupons.error and "W:92135" in plan.coupons.error
    with pytest.raises(Invalid):
        service.create_campaign(db, data=CampaignIn(name="x", segment_id=segment_id, text="券 {券码}",
                                                    coupon_batch_id=coupon.id), viewer=viewer_of(admin))
    db.rollback()
    # Without the variable the WeCom send goes and each customer still gets their code.
    campaign, plan = service.create_campaign(db, data=CampaignIn(
        name="春茶券", segment_id=segment_id, text="春茶券已放入您的账户", coupon_batch_id=coupon.id),
        viewer=viewer_of(admin))
    assert campaign is not None and plan.coupons is not None and plan.coupons.error == ""
    assert len(held(db, coupon.id)) == 3
    db.rollback()


def test_the_console_offers_the_batch_shows_the_check_and_the_campaign_page_counts_the_codes(
        client: TestClient, db: Session, make: Any, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    for _n in range(4):
        make.customer(account)
    segment_id = segment_of(db, admin, account)
    coupon = batch(db, codes=2, name="试吃券")
    console = Console(client).login(admin)
    page = console.get("/campaigns/new")
    assert 'data-testid="campaign-coupon"' in page.text and "试吃券" in page.text
    form = {"name": "试吃邀请", "segment_id": str(segment_id), "text": "凭券 {券码} 到店试吃", "text_b": "",
            "material_ids": "", "holdout_percent": "0", "window_days": "7", "scheduled_at": "",
            "coupon_batch_id": str(coupon.id)}
    checked = console.post("/campaigns/new", form | {"action": "dry_run"})
    assert checked.status_code == 200 and 'data-testid="plan-coupons-error"' in checked.text
    assert "券码不够" in checked.text
    refused = console.post("/campaigns/new", form | {"action": "send"})
    assert refused.status_code == 422 and "券码不够" in refused.text
    coupons_service.add_codes(db, batch_id=coupon.id, codes=[], generate=2, viewer=SYSTEM)
    db.commit()
    sent = console.post("/campaigns/new", form | {"action": "send"})
    assert sent.status_code == 303, sent.text
    detail = console.get(sent.headers["location"])
    assert 'data-testid="campaign-coupons"' in detail.text and "4" in detail.text and "试吃券" in detail.text


def test_editing_a_scheduled_campaign_to_name_the_code_is_refused_for_wecom_and_allowed_for_task_lists(
        db: Session, make: Any, admin: Any) -> None:
    member = make.account(wecom_userid="shanye.xiaoye02")
    customer = make.customer(member)
    customer.wecom_external_userid = "wmCOUPONEDIT"
    phone = make.account(kind="personal", wecom_userid=None)
    make.customer(phone)
    db.commit()
    coupon = batch(db, codes=5)
    later = datetime.now(UTC) + timedelta(hours=3)
    wecom, _plan = service.create_campaign(db, data=CampaignIn(
        name="企微券", segment_id=segment_of(db, admin, member), text="券已到账", coupon_batch_id=coupon.id,
        scheduled_at=later), viewer=viewer_of(admin))
    personal, _plan = service.create_campaign(db, data=CampaignIn(
        name="个人号券", segment_id=segment_of(db, admin, phone), text="券已到账", coupon_batch_id=coupon.id,
        scheduled_at=later), viewer=viewer_of(admin))
    db.commit()
    assert wecom is not None and personal is not None
    with pytest.raises(Invalid) as refused:
        service.update_campaign(db, campaign_id=wecom.id, data=CampaignEdit(text="券码 {券码}"),
                                viewer=viewer_of(admin))
    assert "W:92135" in refused.value.message
    db.rollback()
    edited = service.update_campaign(db, campaign_id=personal.id, data=CampaignEdit(text="券码 {券码}"),
                                     viewer=viewer_of(admin))
    db.commit()
    assert edited.text == "券码 {券码}"


def test_over_quota_customers_are_not_counted_against_the_pool_and_get_no_code(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    ids = make.bulk_customers(account, 10)
    segment_id = segment_of(db, admin, account)
    sends.set_quota_mode(db, mode=QuotaMode.day, viewer=viewer_of(admin))  # 1 a day: one earlier send fills it
    sends.reserve(db, ids[:4], utcnow(), source=SendSource.sop, ref="sop_run:earlier")
    db.commit()
    coupon = batch(db, codes=6)  # enough for the 6 within quota, not for all 10
    body = {"name": "会员日券", "segment_id": segment_id, "text": "会员日券 {券码}", "coupon_batch_id": coupon.id}
    dry = client.post("/api/v1/campaigns", headers=admin_headers, json=body | {"dry_run": True}).json()
    assert dry["over_quota"] == 4 and dry["coupons"] == {"batch_id": coupon.id, "batch_name": coupon.name,
                                                          "needed": 6, "free": 6, "error": ""}
    sent = client.post("/api/v1/campaigns", headers=admin_headers, json=body)
    assert sent.status_code == 200, sent.text
    assert set(held(db, coupon.id)) == set(ids[4:])
