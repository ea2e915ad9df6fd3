"""Campaigns (群发): a mass send to a segment is planned within the send quota (over-quota customers left out
and listed before anything is created), split into WeCom tasks of at most 10,000 (one per chunk, never two
for one customer, even when WeCom answers 45009 half the time), personal accounts get task lists, results
are read back per customer, and the numbers — 送达率, 互动率, buyers and revenue beside the hold-out — come
out per copy. A sent campaign cannot be edited: it is copied."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import AccountStatus
from siyu.campaigns import service
from siyu.campaigns.models import (
    CampaignRecipient,
    CampaignStatus,
    CampaignTask,
    RecipientGroup,
    RecipientStatus,
    TaskState,
)
from siyu.campaigns.schemas import CampaignEdit, CampaignIn
from siyu.core.db import utcnow
from siyu.core.errors import Conflict, Invalid
from siyu.customers.models import Customer, Friendship, FriendshipStatus
from siyu.inbox import service as inbox
from siyu.inbox.service import InboundMessage
from siyu.maintenance import service as maintenance_service
from siyu.maintenance.models import Task, TaskKind, TaskStatus
from siyu.maintenance.schemas import TaskDoneIn
from siyu.orders.models import Order
from siyu.segments import service as segments_service
from siyu.segments.schemas import SegmentIn, parse_tree
from siyu.sends import service as sends
from siyu.sends.models import QuotaMode, SendLedgerEntry, SendSource
from siyu.wecom.client import RetryPolicy, client_for
from tests.conftest import viewer_of
from tests.test_pages import Console
from tests.test_wecom_connector import MEMBER, SEND, Simulator, sim  # noqa: F401  (the simulator fixture)


def segment_of(db: Session, admin: Any, *accounts: Any) -> int:
    tree = parse_tree({"kind": "and", "conditions": [{"kind": "account", "account_ids": [a.id for a in accounts]}]})
    segment = segments_service.create_segment(db, data=SegmentIn(name="测试分群", conditions=tree),
                                              viewer=viewer_of(admin))
    db.commit()
    return segment.id


def wecom_customers(db: Session, make: Any, account: Any, externals: list[str]) -> list[Any]:
    people = []
    for external in externals:
        customer = make.customer(account)
        customer.wecom_external_userid = external
        people.append(customer)
    db.commit()
    return people


def later(hours: int = 1) -> Any:
    return utcnow() + timedelta(hours=hours)


# ---------------------------------------------------------------- planning (unit)


def test_planning_holds_out_splits_the_copy_and_cuts_tasks_of_at_most_the_limit(
        db: Session, make: Any, admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "TASK_MAX_CUSTOMERS", 7)
    wecom = make.account()
    personal = make.account(kind="personal", wecom_userid=None)
    wecom_customers(db, make, wecom, [f"wm{n}" for n in range(30)])
    for _n in range(10):
        make.customer(personal)
    segment_id = segment_of(db, admin, wecom, personal)
    data = CampaignIn(name="春茶上新", segment_id=segment_id, text="{账号}：春茶到了", text_b="春茶第二杯半价",
                      holdout_percent=10)

    plan = service.plan(db, data=data, viewer=viewer_of(admin), at=utcnow(), seed=42)

    assert plan.segment_size == 40 and len(plan.holdout) == 4
    assert plan.targeted == 36 and not plan.over_quota and not plan.unreachable
    assert set(plan.variant_counts()) == {"A", "B"}
    assert plan.channels == {wecom.id: "wecom", personal.id: "personal"}
    chunks = plan.chunks()
    assert all(len(ids) <= 7 for *_rest, ids in chunks)
    everyone = [c for *_rest, ids in chunks for c in ids]
    assert len(everyone) == len(set(everyone)) == 36  # each customer in exactly one chunk
    again = service.plan(db, data=data, viewer=viewer_of(admin), at=utcnow(), seed=42)
    assert again.holdout == plan.holdout and again.sending == plan.sending  # the seed reproduces the split


def test_each_customer_is_sent_from_a_wecom_member_first_then_a_personal_account_else_listed_unreachable(
        db: Session, make: Any, admin: Any) -> None:
    wecom = make.account()
    personal = make.account(kind="personal", wecom_userid=None)
    retired = make.account(kind="personal", wecom_userid=None)
    both = wecom_customers(db, make, personal, ["wmBOTH"])[0]
    db.add(Friendship(customer_id=both.id, account_id=wecom.id, status=FriendshipStatus.active.value))
    unknown_to_wecom = make.customer(wecom)  # no external id: WeCom cannot send to it
    db.add(Friendship(customer_id=unknown_to_wecom.id, account_id=personal.id, status=FriendshipStatus.active.value))
    gone = make.customer(personal)
    db.execute(update(Friendship).where(Friendship.customer_id == gone.id)
               .values(status=FriendshipStatus.deleted.value))
    on_retired = make.customer(retired)
    db.commit()
    segment_id = segment_of(db, admin, wecom, personal, retired)
    retired.status = AccountStatus.retired.value
    db.commit()

    plan = service.plan(db, data=CampaignIn(name="秋茶", segment_id=segment_id, text="秋茶到了"),
                        viewer=viewer_of(admin), at=utcnow(), seed=7)

    assert plan.accounts == {both.id: wecom.id, unknown_to_wecom.id: personal.id}
    assert plan.channels == {wecom.id: "wecom", personal.id: "personal"}
    assert plan.segment_size == 4 and sorted(plan.unreachable) == sorted([gone.id, on_retired.id])
    assert plan.sending == {(wecom.id, "A"): [both.id], (personal.id, "A"): [unknown_to_wecom.id]}


def test_the_copy_may_only_use_variables_the_same_for_a_whole_task(db: Session, make: Any, admin: Any) -> None:
    account = make.account()
    segment_id = segment_of(db, admin, account)
    for text in ("{称呼}您好", "{备注名}您好", "{未知}"):
        with pytest.raises(Invalid):
            service.create_campaign(db, data=CampaignIn(name="x", segment_id=segment_id, text=text),
                                    viewer=viewer_of(admin))
    with pytest.raises(Invalid):
        service.create_campaign(db, data=CampaignIn(name="x", segment_id=segment_id, text="hi", holdout_percent=3),
                                viewer=viewer_of(admin))
    assert service.text_for("{账号}：春茶到了", "茶小满") == "茶小满：春茶到了"


# ---------------------------------------------------------------- bad input: 30 % over quota


def test_a_send_where_thirty_percent_are_over_quota_leaves_them_out_and_lists_them(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    ids = make.bulk_customers(account, 100)
    segment_id = segment_of(db, admin, account)
    sends.set_quota_mode(db, mode=QuotaMode.day, viewer=viewer_of(admin))  # 1 a day: one earlier send fills it
    sends.reserve(db, ids[:30], utcnow(), source=SendSource.sop, ref="sop_run:earlier")
    db.commit()
    body = {"name": "会员日", "segment_id": segment_id, "text": "会员日全场九折", "dry_run": True}

    dry = client.post("/api/v1/campaigns", json=body, headers=admin_headers)
    assert dry.status_code == 200, dry.text
    assert dry.json()["over_quota"] == 30 and dry.json()["targeted"] == 70 and dry.json()["id"] is None
    assert sorted(o["customer_id"] for o in dry.json()["over_quota_customers"]) == ids[:30]
    assert "超出群发额度" in dry.json()["over_quota_customers"][0]["reason"]
    assert db.scalar(select(func.count()).select_from(CampaignRecipient)) == 0  # a dry run creates nothing

    sent = client.post("/api/v1/campaigns", json=body | {"dry_run": False}, headers=admin_headers)
    assert sent.status_code == 200, sent.text
    campaign_id = sent.json()["id"]
    left_out = set(db.scalars(select(CampaignRecipient.customer_id).where(
        CampaignRecipient.grp == RecipientGroup.over_quota.value)))
    assert left_out == set(ids[:30])
    in_tasks = set(db.scalars(select(CampaignRecipient.customer_id).where(CampaignRecipient.task_id.is_not(None))))
    assert in_tasks == set(ids[30:])
    reserved = set(db.scalars(select(SendLedgerEntry.target_id).where(
        SendLedgerEntry.ref == service.ref_of(campaign_id))))
    assert reserved == set(ids[30:])  # reserved before any task was created; nothing for the left out
    listing = client.get("/api/v1/campaigns", headers=admin_headers).json()["items"]
    assert listing[0]["id"] == campaign_id and listing[0]["over_quota"] == 30 and listing[0]["targeted"] == 70
    page = Console(client).login(admin).get(f"/campaigns/{campaign_id}?step=over_quota")
    assert page.status_code == 200 and "超出群发额度" in page.text


# ---------------------------------------------------------------- bad input: edit after sending


def test_a_campaign_edited_after_sending_is_refused_and_can_be_copied(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    make.bulk_customers(account, 5)
    segment_id = segment_of(db, admin, account)
    scheduled = client.post("/api/v1/campaigns", headers=admin_headers, json={
        "name": "周末", "segment_id": segment_id, "text": "周末见", "scheduled_at": later(5).isoformat()}).json()
    assert scheduled["status"] == "scheduled"
    edited = client.patch(f"/api/v1/campaigns/{scheduled['id']}", json={"text": "周末到店见"}, headers=admin_headers)
    assert edited.status_code == 200, edited.text

    now_sent = client.post("/api/v1/campaigns", headers=admin_headers, json={
        "name": "今天", "segment_id": segment_id, "text": "今天见"}).json()
    assert now_sent["status"] in ("sending", "sent")
    refused = client.patch(f"/api/v1/campaigns/{now_sent['id']}", json={"text": "改一下"}, headers=admin_headers)
    assert refused.status_code == 409 and "复制" in refused.text, refused.text
    with pytest.raises(Conflict):
        service.update_campaign(db, campaign_id=now_sent["id"], data=CampaignEdit(name="x"), viewer=viewer_of(admin))
    copy = Console(client).login(admin).get(f"/campaigns/new?copy={now_sent['id']}")
    assert copy.status_code == 200 and "今天见" in copy.text


# ---------------------------------------------------------------- personal accounts: the operator's task list


def test_a_personal_account_gets_a_task_list_ticked_off_as_delivered(db: Session, make: Any, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    people = [make.customer(account) for _n in range(3)]
    segment_id = segment_of(db, admin, account)
    campaign, _plan = service.create_campaign(db, data=CampaignIn(name="新品", segment_id=segment_id,
                                                                  text="{账号}上新了"), viewer=viewer_of(admin))
    db.commit()  # the send job runs on commit (immediate in tests)
    assert campaign is not None
    tasks = list(db.scalars(select(Task).where(Task.kind == TaskKind.campaign.value)))
    assert len(tasks) == 3 and all("上新了" in t.detail and account.display_name in t.detail for t in tasks)
    done = next(t for t in tasks if t.customer_id == people[0].id)
    done.status, done.finished_at = TaskStatus.done.value, utcnow()
    db.commit()

    service.read_results(db, campaign.id)
    db.commit()
    figures = service.numbers(db, service.get_campaign(db, campaign_id=campaign.id))["all"]
    assert figures.targeted == 3 and figures.delivered == 1


def test_a_second_same_day_campaign_reaches_personal_account_customers(db: Session, make: Any, admin: Any) -> None:
    """Two campaigns on one day to a personal account's customer: two tasks, each with its own copy, and
    ticking one off delivers that campaign's message only — once, however often the results are read."""
    account = make.account(kind="personal", wecom_userid=None)
    customer = make.customer(account)
    segment_id = segment_of(db, admin, account)
    first, _plan = service.create_campaign(db, data=CampaignIn(name="新品", segment_id=segment_id, text="新品上市"),
                                           viewer=viewer_of(admin))
    db.commit()
    second, _plan = service.create_campaign(db, data=CampaignIn(name="周末", segment_id=segment_id,
                                                                text="周末特惠"), viewer=viewer_of(admin))
    db.commit()
    assert first is not None and second is not None
    tasks = list(db.scalars(select(Task).where(Task.kind == TaskKind.campaign.value,
                                               Task.customer_id == customer.id).order_by(Task.id)))
    assert [t.ref_id for t in tasks] == [first.id, second.id]
    assert "新品上市" in tasks[0].detail and "周末特惠" in tasks[1].detail

    def delivered() -> dict[int, int]:
        for campaign in (first, second):
            service.read_results(db, campaign.id)
        db.commit()
        return {c.id: service.numbers(db, service.get_campaign(db, campaign_id=c.id))["all"].delivered
                for c in (first, second)}

    maintenance_service.complete_task(db, task_id=tasks[1].id, data=TaskDoneIn(), viewer=viewer_of(admin))
    db.commit()
    assert delivered() == {first.id: 0, second.id: 1}
    maintenance_service.complete_task(db, task_id=tasks[0].id, data=TaskDoneIn(), viewer=viewer_of(admin))
    db.commit()
    assert delivered() == {first.id: 1, second.id: 1}
    assert delivered() == {first.id: 1, second.id: 1}
    assert list(db.scalars(select(CampaignRecipient.status).where(CampaignRecipient.customer_id == customer.id))) \
        == [RecipientStatus.delivered.value] * 2


def _campaign_tasks(db: Session, campaign_id: int) -> dict[int, Task]:
    """customer id → their task of this campaign on the operator's list."""
    return {int(t.customer_id or 0): t for t in db.scalars(select(Task).where(
        Task.kind == TaskKind.campaign.value, Task.ref_id == campaign_id))}


def _recipients(db: Session, campaign_id: int) -> dict[int, tuple[str, str]]:
    return {int(c): (str(s), str(r)) for c, s, r in db.execute(select(
        CampaignRecipient.customer_id, CampaignRecipient.status, CampaignRecipient.reason)
        .where(CampaignRecipient.campaign_id == campaign_id))}


def test_a_campaign_task_the_operator_skips_ends_not_sent_with_their_reason_and_never_turns_delivered(
        db: Session, make: Any, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    skipped, ticked = make.customer(account), make.customer(account)
    operator = make.user("operator", accounts=[account])
    campaign, _plan = service.create_campaign(db, data=CampaignIn(
        name="新品", segment_id=segment_of(db, admin, account), text="新品上市"), viewer=viewer_of(admin))
    db.commit()
    assert campaign is not None
    tasks = _campaign_tasks(db, campaign.id)
    maintenance_service.skip_task(db, task_id=tasks[skipped.id].id, reason="客户说最近不要打扰",
                                  viewer=viewer_of(operator))
    maintenance_service.complete_task(db, task_id=tasks[ticked.id].id, data=TaskDoneIn(), viewer=viewer_of(operator))
    db.commit()

    service.read_results(db, campaign.id)
    db.commit()
    status, reason = _recipients(db, campaign.id)[skipped.id]
    assert status == RecipientStatus.failed.value
    assert reason == "运营跳过了这条群发任务，消息没有发出（跳过原因：客户说最近不要打扰）"
    exported = "".join(service.export_rows(db, service.get_campaign(db, campaign_id=campaign.id), "targeted",
                                           viewer_of(admin)))
    assert "失败" in exported and "客户说最近不要打扰" in exported

    # Read again, and after the three days: counted once, not sent — even if the task were later marked done.
    db.execute(update(Task).where(Task.id == tasks[skipped.id].id).values(status=TaskStatus.done.value))
    db.commit()
    for now in (utcnow(), utcnow() + timedelta(days=4)):
        service.read_results(db, campaign.id, now=now)
        db.commit()
    assert _recipients(db, campaign.id)[skipped.id][0] == RecipientStatus.failed.value
    figures = service.numbers(db, service.get_campaign(db, campaign_id=campaign.id))["all"]
    assert (figures.targeted, figures.delivered) == (2, 1)


def test_a_campaign_task_still_open_or_snoozed_after_three_days_leaves_the_list_and_its_customer_is_not_sent(
        db: Session, make: Any, admin: Any) -> None:
    from siyu.wecom.send_results import GIVE_UP_AFTER

    account = make.account(kind="personal", wecom_userid=None)
    ticked, snoozed, forgotten = (make.customer(account) for _n in range(3))
    operator = make.user("operator", accounts=[account])
    campaign, _plan = service.create_campaign(db, data=CampaignIn(
        name="周末", segment_id=segment_of(db, admin, account), text="周末特惠"), viewer=viewer_of(admin))
    db.commit()  # the send job runs on commit: the task list is created and the campaign is sent
    assert campaign is not None
    db.refresh(campaign)
    assert campaign.sent_at is not None
    tasks = _campaign_tasks(db, campaign.id)
    maintenance_service.complete_task(db, task_id=tasks[ticked.id].id, data=TaskDoneIn(), viewer=viewer_of(operator))
    maintenance_service.snooze_task(db, task_id=tasks[snoozed.id].id, days=7, viewer=viewer_of(operator))
    db.commit()
    service.read_results(db, campaign.id, now=campaign.sent_at + timedelta(days=2))
    db.commit()
    assert {c: s for c, (s, _r) in _recipients(db, campaign.id).items()} == {
        ticked.id: RecipientStatus.delivered.value, snoozed.id: RecipientStatus.waiting.value,
        forgotten.id: RecipientStatus.waiting.value}

    after = campaign.sent_at + GIVE_UP_AFTER + timedelta(hours=1)
    assert campaign.id in service.results_due(db, now=after)  # the one read after the window
    service.read_results(db, campaign.id, now=after)
    db.commit()
    recipients = _recipients(db, campaign.id)
    for person in (snoozed, forgotten):
        assert recipients[person.id] == (RecipientStatus.failed.value,
                                         "运营 3 天内未勾选完成这条群发任务，按未发出处理")
        db.refresh(tasks[person.id])
        assert tasks[person.id].status == TaskStatus.skipped.value  # off the operator's list: no late tick
        assert tasks[person.id].skip_reason == "群发已超过 3 天，不再等待勾选"
        with pytest.raises(Invalid):
            maintenance_service.complete_task(db, task_id=tasks[person.id].id, data=TaskDoneIn(),
                                              viewer=viewer_of(operator))
    assert campaign.id not in service.results_due(db, now=after + timedelta(hours=1))
    figures = service.numbers(db, service.get_campaign(db, campaign_id=campaign.id))["all"]
    assert (figures.targeted, figures.delivered) == (3, 1)


# ---------------------------------------------------------------- end to end through the simulator


def test_mass_send_member_confirms_results_replies_orders_campaign_numbers(
        client: TestClient, db: Session, make: Any, admin: Any, sim: Simulator) -> None:  # noqa: F811
    account = make.account(wecom_userid=MEMBER)
    people = wecom_customers(db, make, account, [sim.new_contact() for _n in range(20)])
    segment_id = segment_of(db, admin, account)
    sim.corp.auto_confirm_mass_send = False  # the member confirms in their app, later
    campaign, plan = service.create_campaign(db, data=CampaignIn(
        name="龙井上新", segment_id=segment_id, text="{账号}：明前龙井到店", text_b="明前龙井限量",
        holdout_percent=10), viewer=viewer_of(admin))
    db.commit()  # the send job creates the WeCom tasks on commit
    assert campaign is not None and plan.targeted == 18
    tasks = service.tasks_of(db, campaign.id)
    db.refresh(campaign)
    assert all(t.state == TaskState.created.value and t.msgid for t in tasks)
    assert campaign.status == CampaignStatus.sent.value
    assert {m["text"] for m in [sim.corp.state.mass_sends[-1].model_dump()]} <= {
        f"{account.display_name}：明前龙井到店", "明前龙井限量"}
    assert sim.received(people[0].wecom_external_userid) == []  # not confirmed yet

    api = client_for(db, policy=RetryPolicy(attempts=1))
    assert service.remind(db, campaign_id=campaign.id, viewer=viewer_of(admin), api=api) == len(tasks)
    for task in tasks:
        sim.control("POST", "confirm_mass_send", {"msgid": task.msgid, "userid": MEMBER})
    run = service.read_results(db, campaign.id, api=api)
    db.commit()
    assert run.delivered == 18

    sent_to = [c for c in db.scalars(select(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.grp == RecipientGroup.send.value))]
    held = [c for c in db.scalars(select(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.grp == RecipientGroup.holdout.value))]
    assert len(held) == 2
    replier, buyer, deleter = sent_to[0], sent_to[1], sent_to[2]
    soon = utcnow() + timedelta(hours=1)
    inbox.ingest(db, [InboundMessage(source="wecom", platform_msgid="reply-1", account_id=account.id,
                                     customer_id=replier.customer_id, sent_at=soon, text="还有货吗？")])
    db.add(Order(source="console", order_no="A-1", customer_id=buyer.customer_id, amount=Decimal("268.00"),
                 paid_at=utcnow() + timedelta(days=2)))
    db.add(Order(source="console", order_no="A-2", customer_id=buyer.customer_id, amount=Decimal("99.00"),
                 paid_at=utcnow() + timedelta(days=30)))  # outside the 7-day window
    db.add(Order(source="console", order_no="H-1", customer_id=held[0].customer_id, amount=Decimal("50.00"),
                 paid_at=utcnow() + timedelta(days=1)))  # the hold-out bought too (counted for the lift only)
    friendship = db.scalars(select(Friendship).where(Friendship.customer_id == deleter.customer_id)).one()
    friendship.status, friendship.removed_at = FriendshipStatus.deleted.value, soon
    db.commit()

    figures = service.numbers(db, service.get_campaign(db, campaign_id=campaign.id))
    total = figures["all"]
    assert (total.targeted, total.delivered, total.engaged, total.buyers) == (18, 18, 1, 1)
    assert total.revenue == Decimal("268.00") and total.deleted == 1
    assert total.delivery_rate == 100.0 and total.holdout == 2 and total.holdout_rate == 50.0
    assert total.lift == round(100 * 1 / 18 - 50.0, 1)
    assert set(figures) == {"all", "A", "B"}
    assert figures["A"].targeted + figures["B"].targeted == 18

    console = Console(client).login(admin)
    page = console.get(f"/campaigns/{campaign.id}?step=buyers")
    assert page.status_code == 200 and "100.0%" in page.text and 'data-testid="campaign-funnel"' in page.text
    csv = console.get(f"/campaigns/{campaign.id}/export.csv?step=delivered")
    assert csv.status_code == 200 and csv.text.count("\n") == 19


def test_wecom_busy_half_the_time_is_retried_and_no_customer_is_in_two_tasks(
        db: Session, make: Any, admin: Any, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(service, "TASK_MAX_CUSTOMERS", 2)
    account = make.account(wecom_userid=MEMBER)
    externals = [sim.new_contact() for _n in range(12)]
    wecom_customers(db, make, account, externals)
    segment_id = segment_of(db, admin, account)
    campaign, _plan = service.create_campaign(db, data=CampaignIn(
        name="忙", segment_id=segment_id, text="双十二", scheduled_at=later(1)), viewer=viewer_of(admin))
    db.commit()
    assert campaign is not None
    sim.fault(path=SEND, errcode=45009, percent=50, forever=True, times=1)
    api = client_for(db, policy=RetryPolicy(attempts=2, sleep=lambda _s: None))

    runs = 0
    while db.scalar(select(func.count()).select_from(CampaignTask).where(
            CampaignTask.state == TaskState.pending.value)) and runs < 40:
        service.send_campaign(db, campaign.id, api=api, now=later(2))
        db.commit()
        runs += 1

    tasks = service.tasks_of(db, campaign.id)
    assert len(tasks) == 6 and all(t.state == TaskState.created.value for t in tasks), [t.error for t in tasks]
    assert sim.calls(SEND) > 6  # WeCom was busy and asked again
    in_tasks = Counter(r.external_userid for t in sim.corp.state.mass_sends for r in t.results)
    assert sorted(in_tasks) == sorted(externals) and set(in_tasks.values()) == {1}
    assert len({t.msgid for t in tasks}) == 6
    service.send_campaign(db, campaign.id, api=api, now=later(3))  # a run too many creates nothing more
    assert len(sim.corp.state.mass_sends) == 6


def test_cancel_stops_the_tasks_and_gives_the_quota_back(db: Session, make: Any, admin: Any,
                                                          sim: Simulator) -> None:  # noqa: F811
    account = make.account(wecom_userid=MEMBER)
    wecom_customers(db, make, account, [sim.new_contact() for _n in range(3)])
    segment_id = segment_of(db, admin, account)
    sim.corp.auto_confirm_mass_send = False
    campaign, _plan = service.create_campaign(db, data=CampaignIn(name="停", segment_id=segment_id, text="停"),
                                              viewer=viewer_of(admin))
    db.commit()
    assert campaign is not None
    api = client_for(db, policy=RetryPolicy(attempts=1))
    for _n in range(3):
        service.remind(db, campaign_id=campaign.id, viewer=viewer_of(admin), api=api)
    with pytest.raises(Invalid):  # a 4th reminder within 24 h is refused (W:97610)
        service.remind(db, campaign_id=campaign.id, viewer=viewer_of(admin), api=api)

    assert service.cancel(db, campaign_id=campaign.id, viewer=viewer_of(admin), api=api) == 3
    db.commit()
    assert all(t.cancelled_at for t in sim.corp.state.mass_sends)
    assert db.scalar(select(func.count()).select_from(SendLedgerEntry).where(
        SendLedgerEntry.ref == service.ref_of(campaign.id), SendLedgerEntry.released_at.is_(None))) == 0
    assert set(db.scalars(select(CampaignRecipient.status))) == {RecipientStatus.cancelled.value}


def test_operators_may_not_send_campaigns_and_pages_render(client: TestClient, db: Session, make: Any,
                                                           admin: Any, token_for: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    make.customer(account)
    segment_id = segment_of(db, admin, account)
    operator = make.user("operator", accounts=[account])
    answer = client.post("/api/v1/campaigns", json={"name": "x", "segment_id": segment_id, "text": "hi"},
                         headers=token_for(operator))
    assert answer.status_code == 403
    console = Console(client).login(operator)
    assert console.get("/campaigns").status_code == 200
    assert 'href="/campaigns"' in console.get("/").text  # the nav entry under 增长
    assert db.scalar(select(func.count()).select_from(Customer)) == 1


def test_a_scheduled_campaign_shows_as_running_on_the_admins_dashboard_with_its_reach(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    make.bulk_customers(account, 4)
    segment_id = segment_of(db, admin, account)
    home = Console(client).login(admin).get("/")
    assert 'data-testid="running-campaign"' not in home.text and "暂无进行中的活动" in home.text
    made = client.post("/api/v1/campaigns", headers=admin_headers, json={
        "name": "中秋<预热>", "segment_id": segment_id, "text": "中秋见", "scheduled_at": later(5).isoformat()})
    assert made.status_code in (200, 201), made.text
    home = Console(client).login(admin).get("/")
    assert 'data-testid="running-campaign"' in home.text and f'href="/campaigns/{made.json()["id"]}"' in home.text
    assert "中秋&lt;预热&gt;" in home.text and "共 4 位客户" in home.text
