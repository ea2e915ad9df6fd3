"""A campaign issues coupons: each customer it sends to gets exactly one code of the attached batch through
the one pool (not the hold-out), the personal accounts' task lists carry each customer's {券码}, and a pool
too small is a clear refusal before anything is created — the dry run shows it, nothing is half-issued."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.campaigns import rewards, service
from siyu.campaigns.models import Campaign, CampaignRecipient, CampaignTask, RecipientGroup, RecipientStatus
from siyu.campaigns.schemas import CampaignEdit, CampaignIn
from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from siyu.coupons import service as coupons_service
from siyu.coupons.models import CouponBatchCode
from siyu.coupons.schemas import BatchIn
from siyu.customers.models import Touch
from siyu.maintenance.models import Task, TaskKind, TaskStatus
from siyu.orders import service as orders_service
from siyu.sends import service as sends
from siyu.sends.models import QuotaMode, SendLedgerEntry, SendSource
from siyu.team.models import AuditEntry
from siyu.wecom.client import RetryPolicy, client_for
from tests.conftest import viewer_of
from tests.test_campaigns import segment_of, wecom_customers
from tests.test_pages import Console
from tests.test_wecom_connector import MEMBER, Simulator, sim  # noqa: F401  (the simulator fixture)


def batch(db: Session, codes: int, name: str = "春茶 20 元券") -> Any:
    made = coupons_service.create_batch(db, viewer=SYSTEM, data=BatchIn(
        name=name, amount=Decimal("20"), valid_from=local_today() - timedelta(days=1),
        valid_until=local_today() + timedelta(days=30), generate=codes))
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


# ---------------------------------------------------------------- codes of customers the message never reached


def released_touches(db: Session, customer_id: int) -> list[str]:
    return [str((t.details or {}).get("code")) for t in db.scalars(select(Touch).where(
        Touch.customer_id == customer_id).order_by(Touch.id)) if (t.details or {}).get("event") == "coupon_released"]


def test_cancelling_a_scheduled_campaign_gives_its_codes_back_to_the_pool_once(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    people = [make.customer(account) for _n in range(4)]
    coupon = batch(db, codes=5)
    earlier = coupons_service.issue(db, coupon.id, [people[0].id], via="manual").codes  # held before the send
    db.commit()
    made = client.post("/api/v1/campaigns", headers=admin_headers, json={
        "name": "周末券", "segment_id": segment_of(db, admin, account), "text": "周末见 {券码}",
        "coupon_batch_id": coupon.id, "scheduled_at": (utcnow() + timedelta(hours=5)).isoformat()})
    assert made.status_code == 200, made.text
    campaign_id = int(made.json()["id"])
    drawn = held(db, coupon.id)
    assert len(drawn) == 4 and drawn[people[0].id] == earlier[people[0].id]
    assert client.get(f"/api/v1/coupons/{coupon.id}", headers=admin_headers).json()["drawn"] == 4

    stopped = client.post(f"/api/v1/campaigns/{campaign_id}/cancel", headers=admin_headers)
    assert stopped.status_code == 200 and stopped.json() == {"stopped": 4}
    db.expire_all()
    # The three codes the campaign drew are back in the pool; the one held before it stays with its customer.
    assert held(db, coupon.id) == {people[0].id: earlier[people[0].id]}
    assert client.get(f"/api/v1/coupons/{coupon.id}", headers=admin_headers).json()["drawn"] == 1
    for person in people[1:]:
        assert released_touches(db, person.id) == [drawn[person.id]]
    assert released_touches(db, people[0].id) == []
    page = Console(client).login(admin).get(f"/customers/{people[1].id}")
    assert "优惠券已收回" in page.text and drawn[people[1].id] in page.text and "周末券" in page.text
    audits = db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "coupon_batch",
                                               AuditEntry.action == "release")).all()
    assert [(a.summary, (a.after or {}).get("released")) for a in audits] == [(f"campaign:{campaign_id}", 3)]

    # A retried job (or a second cancel) takes nothing back twice.
    assert rewards.release_undelivered(db, campaign_id=campaign_id, viewer=SYSTEM) == 0
    assert service.cancel(db, campaign_id=campaign_id, viewer=viewer_of(admin)) == 0
    db.commit()
    assert sum(len(released_touches(db, p.id)) for p in people) == 3
    # The pool hands the codes out again.
    again = coupons_service.issue(db, coupon.id, [p.id for p in people[1:]], via="manual")
    assert again.issued == 3 and again.short == []


def two_members_send(db: Session, make: Any, admin: Any,
                     sim: Simulator) -> tuple[Any, Any, list[Any], list[Any], Any]:  # noqa: F811
    """A coupon campaign through two members' WeCom mass sends that nobody confirms by itself: the campaign,
    the first member's account, its customers, the second member's customers, and the coupon batch."""
    sent_first = make.account(wecom_userid=MEMBER)
    waited = make.account(wecom_userid="shanye.xiaoye02")
    got_it = wecom_customers(db, make, sent_first, [sim.new_contact() for _n in range(2)])
    never = wecom_customers(db, make, waited, [sim.new_contact("shanye.xiaoye02") for _n in range(2)])
    coupon = batch(db, codes=10)
    sim.corp.auto_confirm_mass_send = False
    campaign, _plan = service.create_campaign(db, data=CampaignIn(
        name="冬茶券", segment_id=segment_of(db, admin, sent_first, waited), text="冬茶券已放入您的账户",
        coupon_batch_id=coupon.id), viewer=viewer_of(admin))
    return campaign, sent_first, got_it, never, coupon


def test_stopping_a_wecom_send_keeps_the_codes_of_customers_the_member_already_sent_to(
        client: TestClient, db: Session, make: Any, admin: Any, sim: Simulator) -> None:  # noqa: F811
    campaign, sent_first, got_it, never, coupon = two_members_send(db, make, admin, sim)
    db.commit()  # the send job creates the WeCom tasks on commit
    assert campaign is not None
    drawn = held(db, coupon.id)
    assert set(drawn) == {c.id for c in got_it + never}
    task = next(t for t in service.tasks_of(db, campaign.id) if t.account_id == sent_first.id)
    sim.control("POST", "confirm_mass_send", {"msgid": task.msgid, "userid": MEMBER})  # sent before the stop

    console = Console(client).login(admin)
    stopped = console.post(f"/campaigns/{campaign.id}/cancel", {})
    assert stopped.status_code == 303, stopped.text
    db.expire_all()
    statuses = dict(db.execute(select(CampaignRecipient.customer_id, CampaignRecipient.status).where(
        CampaignRecipient.campaign_id == campaign.id)).tuples().all())
    assert {statuses[c.id] for c in got_it} == {RecipientStatus.delivered.value}
    assert {statuses[c.id] for c in never} == {RecipientStatus.cancelled.value}
    assert held(db, coupon.id) == {c.id: drawn[c.id] for c in got_it}  # delivered: kept
    assert all(sim.received(c.wecom_external_userid) == [] for c in never)
    assert "2" in html.unescape(console.get(stopped.headers["location"]).text)


def test_codes_of_customers_the_member_never_sent_to_go_back_once_the_wait_is_over(
        db: Session, make: Any, admin: Any, sim: Simulator) -> None:  # noqa: F811
    campaign, sent_first, got_it, never, coupon = two_members_send(db, make, admin, sim)
    db.commit()  # the send job creates the WeCom tasks on commit, in its own session
    assert campaign is not None
    db.refresh(campaign)
    assert campaign.sent_at is not None
    drawn = held(db, coupon.id)
    task = next(t for t in service.tasks_of(db, campaign.id) if t.account_id == sent_first.id)
    sim.control("POST", "confirm_mass_send", {"msgid": task.msgid, "userid": MEMBER})
    api = client_for(db, policy=RetryPolicy(attempts=1))
    service.read_results(db, campaign.id, api=api)  # within the wait: the other member may still send
    db.commit()
    assert held(db, coupon.id) == drawn

    over = campaign.sent_at + timedelta(days=3, minutes=1)
    assert service.results_due(db, now=over) == [campaign.id]  # one more read after the wait
    service.read_results(db, campaign.id, api=api, now=over)
    db.commit()
    recipients = {r.customer_id: r for r in db.scalars(select(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign.id))}
    assert {recipients[c.id].status for c in got_it} == {RecipientStatus.delivered.value}
    assert {recipients[c.id].status for c in never} == {RecipientStatus.failed.value}
    assert all("3 天内未" in recipients[c.id].reason for c in never)
    assert held(db, coupon.id) == {c.id: drawn[c.id] for c in got_it}  # delivered: kept
    assert all(released_touches(db, c.id) == [drawn[c.id]] for c in never)
    assert service.results_due(db, now=over) == []
    service.read_results(db, campaign.id, api=api, now=over + timedelta(minutes=1))  # by hand: nothing twice
    db.commit()
    assert all(released_touches(db, c.id) == [drawn[c.id]] for c in never)


def _unconfirmed_coupon_campaign(db: Session, admin: Any, simulator: Simulator, account: Any, *, codes: int,
                                 name: str) -> tuple[Any, Any]:
    """A coupon batch of ``codes`` and a campaign to the account's customers issuing it, sent as a WeCom
    mass-send task the member has not confirmed yet."""
    coupon = batch(db, codes=codes)
    simulator.corp.auto_confirm_mass_send = False
    campaign, _plan = service.create_campaign(db, data=CampaignIn(
        name=name, segment_id=segment_of(db, admin, account), text="券已到账", coupon_batch_id=coupon.id),
        viewer=viewer_of(admin))
    db.commit()
    assert campaign is not None
    return coupon, campaign


def test_a_failed_delivery_gives_the_code_back_a_delivered_or_redeemed_one_is_kept(
        db: Session, make: Any, admin: Any, sim: Simulator) -> None:  # noqa: F811
    account = make.account(wecom_userid=MEMBER)
    people = wecom_customers(db, make, account, [sim.new_contact() for _n in range(4)])
    stranger = wecom_customers(db, make, account, ["wmNOTACONTACT"])[0]  # WeCom's fail_list: never sent to
    coupon, campaign = _unconfirmed_coupon_campaign(db, admin, sim, account, codes=10, name="龙井券")
    issued = {int(t.customer_id): str((t.details or {}).get("code")) for t in db.scalars(select(Touch))
              if (t.details or {}).get("event") == "coupon_issued"}
    assert set(issued) == {c.id for c in [*people, stranger]}  # drawn when the send was recorded
    drawn = held(db, coupon.id)
    assert drawn == {c.id: issued[c.id] for c in people}  # refused by WeCom when the task was created: back
    assert released_touches(db, stranger.id) == [issued[stranger.id]]
    # Two customers delete the member before the member sends: WeCom answers status 2 for them.
    gone, redeemed = people[0], people[1]
    for person in (gone, redeemed):
        sim.corp.remove_contact(MEMBER, person.wecom_external_userid)
    orders_service.upsert_orders(db, viewer=SYSTEM, via="test", orders=[orders_service.OrderData(
        source="shop", order_no="R-1", paid_at=utcnow(), amount=Decimal("79"), coupon_code=drawn[redeemed.id],
        buyer=orders_service.Buyer(customer_id=redeemed.id))])
    db.commit()
    task = service.tasks_of(db, campaign.id)[0]
    sim.control("POST", "confirm_mass_send", {"msgid": task.msgid, "userid": MEMBER})
    api = client_for(db, policy=RetryPolicy(attempts=1))
    service.read_results(db, campaign.id, api=api)
    db.commit()
    statuses = dict(db.execute(select(CampaignRecipient.customer_id, CampaignRecipient.status).where(
        CampaignRecipient.campaign_id == campaign.id)).tuples().all())
    assert statuses[gone.id] == statuses[redeemed.id] == RecipientStatus.not_friend.value
    assert held(db, coupon.id) == {c.id: drawn[c.id] for c in people[1:]}  # delivered and redeemed: kept
    assert released_touches(db, gone.id) == [drawn[gone.id]]
    service.read_results(db, campaign.id, api=api)  # the results job every minute: nothing taken back twice
    db.commit()
    assert released_touches(db, gone.id) == [drawn[gone.id]] and len(held(db, coupon.id)) == 3


def test_a_task_list_that_carried_the_code_keeps_it_on_cancel_and_another_campaigns_delivery_keeps_it(
        db: Session, make: Any, admin: Any) -> None:
    phone = make.account(kind="personal", wecom_userid=None)
    for _n in range(2):
        make.customer(phone)
    coupon = batch(db, codes=10)
    named, _plan = service.create_campaign(db, data=CampaignIn(
        name="券码群发", segment_id=segment_of(db, admin, phone), text="您的券码 {券码}", coupon_batch_id=coupon.id),
        viewer=viewer_of(admin))
    db.commit()  # the operator's task list names each code
    assert named is not None
    drawn = held(db, coupon.id)
    assert len(drawn) == 2
    service.cancel(db, campaign_id=named.id, viewer=viewer_of(admin))
    db.commit()
    assert held(db, coupon.id) == drawn  # the operator had the code in hand: it may have been sent by hand

    account = make.account(kind="personal", wecom_userid=None)
    people = [make.customer(account) for _n in range(3)]
    segment_id = segment_of(db, admin, account)

    other = batch(db, codes=10, name="秋茶券")
    first, _plan = service.create_campaign(db, data=CampaignIn(
        name="秋茶", segment_id=segment_id, text="秋茶券已放入您的账户", coupon_batch_id=other.id),
        viewer=viewer_of(admin))
    db.commit()
    assert first is not None
    codes = held(db, other.id)
    done = db.scalars(select(Task).where(Task.kind == TaskKind.campaign.value, Task.ref_id == first.id,
                                         Task.customer_id == people[0].id)).one()
    done.status, done.finished_at = TaskStatus.done.value, utcnow()  # the operator sent it and ticked it off
    db.commit()
    second, _plan = service.create_campaign(db, data=CampaignIn(
        name="秋茶二", segment_id=segment_id, text="别忘了秋茶券", coupon_batch_id=other.id,
        scheduled_at=utcnow() + timedelta(hours=4)), viewer=viewer_of(admin))
    db.commit()
    assert second is not None
    service.cancel(db, campaign_id=first.id, viewer=viewer_of(admin))  # ticked off: delivered; the rest stopped
    db.commit()
    statuses = dict(db.execute(select(CampaignRecipient.customer_id, CampaignRecipient.status).where(
        CampaignRecipient.campaign_id == first.id)).tuples().all())
    assert statuses == {people[0].id: RecipientStatus.delivered.value, people[1].id: RecipientStatus.cancelled.value,
                        people[2].id: RecipientStatus.cancelled.value}
    # Still to go out in the second campaign (its customers will read about the coupon): nobody's goes back yet.
    assert held(db, other.id) == codes
    service.cancel(db, campaign_id=second.id, viewer=viewer_of(admin))
    db.commit()
    # Neither campaign reached the other two: theirs go back; the one the first delivered stays.
    assert held(db, other.id) == {people[0].id: codes[people[0].id]}


def test_the_code_of_a_customer_whose_campaign_task_the_operator_skipped_goes_back_to_the_pool_once(
        db: Session, make: Any, admin: Any) -> None:
    from siyu.maintenance import service as maintenance_service

    account = make.account(kind="personal", wecom_userid=None)
    skipped, waiting = make.customer(account), make.customer(account)
    operator = make.user("operator", accounts=[account])
    coupon = batch(db, codes=5)
    campaign, _plan = service.create_campaign(db, data=CampaignIn(
        name="券码群发", segment_id=segment_of(db, admin, account), text="您的券码 {券码}", coupon_batch_id=coupon.id),
        viewer=viewer_of(admin))
    db.commit()
    assert campaign is not None
    drawn = held(db, coupon.id)
    task = db.scalars(select(Task).where(Task.kind == TaskKind.campaign.value, Task.ref_id == campaign.id,
                                         Task.customer_id == skipped.id)).one()
    maintenance_service.skip_task(db, task_id=task.id, reason="客户已删除好友", viewer=viewer_of(operator))
    db.commit()
    for _run in range(2):  # the results job every minute: taken back once
        service.read_results(db, campaign.id)
        db.commit()
    assert held(db, coupon.id) == {waiting.id: drawn[waiting.id]}  # the operator said it was not sent
    assert released_touches(db, skipped.id) == [drawn[skipped.id]] and released_touches(db, waiting.id) == []


def test_a_task_list_not_ticked_off_within_three_days_keeps_a_code_it_carried_and_releases_one_it_did_not(
        db: Session, make: Any, admin: Any) -> None:
    from siyu.wecom.send_results import GIVE_UP_AFTER

    account = make.account(kind="personal", wecom_userid=None)
    person = make.customer(account)
    carried, silent = batch(db, codes=3, name="春茶券"), batch(db, codes=3, name="秋茶券")
    campaigns = []
    for name, text, coupon in (("券码在文案里", "您的券码 {券码}", carried), ("券码不在文案里", "新茶上市", silent)):
        made, _plan = service.create_campaign(db, data=CampaignIn(
            name=name, segment_id=segment_of(db, admin, account), text=text, coupon_batch_id=coupon.id),
            viewer=viewer_of(admin))
        db.commit()
        assert made is not None
        db.refresh(made)
        campaigns.append(made)
    codes = {carried.id: held(db, carried.id), silent.id: held(db, silent.id)}
    for made in campaigns:
        assert made.sent_at is not None
        service.read_results(db, made.id, now=made.sent_at + GIVE_UP_AFTER + timedelta(hours=1))
        db.commit()
        assert set(db.scalars(select(CampaignRecipient.status).where(CampaignRecipient.campaign_id == made.id))) \
            == {RecipientStatus.failed.value}
    # The operator had the code in hand and may have sent it without ticking it off: it stays.
    assert held(db, carried.id) == codes[carried.id]
    assert held(db, silent.id) == {} and released_touches(db, person.id) == [codes[silent.id][person.id]]


def test_a_stop_wecom_refuses_leaves_the_customers_unknown_and_their_codes_kept(
        db: Session, make: Any, admin: Any, sim: Simulator) -> None:  # noqa: F811
    account = make.account(wecom_userid=MEMBER)
    people = wecom_customers(db, make, account, [sim.new_contact() for _n in range(2)])
    coupon, campaign = _unconfirmed_coupon_campaign(db, admin, sim, account, codes=5, name="停不下")
    drawn = held(db, coupon.id)
    sim.fault(path="externalcontact/cancel_groupmsg_send", errcode=48002, times=1)
    api = client_for(db, policy=RetryPolicy(attempts=1))
    assert service.cancel(db, campaign_id=campaign.id, viewer=viewer_of(admin), api=api) == 0
    db.commit()
    statuses = set(db.scalars(select(CampaignRecipient.status).where(CampaignRecipient.campaign_id == campaign.id)))
    assert statuses == {RecipientStatus.unknown.value}  # the member may still send it
    assert held(db, coupon.id) == drawn and all(released_touches(db, p.id) == [] for p in people)


def test_a_code_taken_back_skips_its_open_expiry_reminder(db: Session, make: Any, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    customer = make.customer(account)
    coupon = coupons_service.create_batch(db, viewer=SYSTEM, data=BatchIn(
        name="临期券", amount=Decimal("5"), valid_from=local_today() - timedelta(days=1),
        valid_until=local_today() + timedelta(days=2), remind_days=3, generate=2))
    db.commit()
    campaign, _plan = service.create_campaign(db, data=CampaignIn(
        name="临期提醒", segment_id=segment_of(db, admin, account), text="临期券已到账", coupon_batch_id=coupon.id,
        scheduled_at=utcnow() + timedelta(hours=6)), viewer=viewer_of(admin))
    db.commit()
    assert campaign is not None and coupons_service.remind_expiring(db) == 1
    db.commit()
    service.cancel(db, campaign_id=campaign.id, viewer=viewer_of(admin))
    db.commit()
    reminder = db.scalars(select(Task).where(Task.kind == TaskKind.coupon_expiry.value,
                                             Task.customer_id == customer.id)).one()
    assert reminder.status == TaskStatus.skipped.value and held(db, coupon.id) == {}
    code = db.scalars(select(CouponBatchCode).where(CouponBatchCode.batch_id == coupon.id,
                                                    CouponBatchCode.code == released_touches(db, customer.id)[0])).one()
    assert code.reminded_on is None and code.issued_via == "" and code.claimed_at is None  # drawn afresh later
