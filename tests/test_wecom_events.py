"""Processing stored WeCom events: a failing handler is retried with a growing delay, then shown as failed."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.customers import variables
from siyu.customers.models import Customer, Friendship
from siyu.wecom import jobs as wecom_jobs
from siyu.wecom.models import WecomEvent


def stored_add(db: Session, userid: str, external_userid: str) -> int:
    event = WecomEvent(dedup_key=f"add|{userid}|{external_userid}",
                       event_type="change_external_contact/add_external_contact", raw_xml="<xml/>",
                       fields={"MsgType": "event", "UserID": userid, "ExternalUserID": external_userid,
                               "State": "door", "CreateTime": "1700000000"})
    db.add(event)
    db.commit()
    return event.id


@pytest.fixture
def retries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The delays of the retries the task schedules (not run: the test plays the scheduler)."""
    delays: list[int] = []
    monkeypatch.setattr(wecom_jobs.process_event, "schedule",
                        lambda args, kwargs, delay: delays.append(delay))
    return delays


def test_a_failing_event_is_retried_with_growing_delays_then_shown_failed(
        db: Session, make: Any, retries: list[int], client: Any) -> None:
    from tests.test_pages import Console

    event_id = stored_add(db, "nobody-yet", "wmRETRY")  # no account has that UserID: the handler fails
    wecom_jobs.process_event.call_local(event_id)
    for _ in range(wecom_jobs.MAX_ATTEMPTS - 1):
        wecom_jobs.process_event.call_local(event_id, retry=True)  # the scheduled retries
    db.expire_all()
    event = db.get(WecomEvent, event_id)
    assert event is not None and event.status == "failed" and event.attempts == wecom_jobs.MAX_ATTEMPTS
    assert "nobody-yet" in event.error
    assert retries == sorted(retries) and len(set(retries)) == wecom_jobs.MAX_ATTEMPTS - 1  # growing, then stop
    assert db.scalar(select(func.count()).select_from(Customer)) == 0

    console = Console(client).login(make.user("admin"))
    assert f"/wecom/events/{event_id}" in console.get("/wecom/events", params={"status": "failed"}).text
    detail = console.get(f"/wecom/events/{event_id}").text
    assert "nobody-yet" in detail and f"data-testid=\"attempts\">尝试次数: {wecom_jobs.MAX_ATTEMPTS}<" in detail


def test_a_retry_after_the_cause_is_fixed_applies_the_event_once(db: Session, make: Any, retries: list[int]) -> None:
    event_id = stored_add(db, "late-member", "wmLATE")
    wecom_jobs.process_event.call_local(event_id)
    assert len(retries) == 1
    account = make.account(wecom_userid="late-member")  # the member's account is set up in the meantime
    db.commit()
    wecom_jobs.process_event.call_local(event_id, retry=True)  # the scheduled retry
    wecom_jobs.process_event.call_local(event_id, retry=True)  # a duplicate retry: no second application
    wecom_jobs.process_event.call_local(event_id)  # and a late first task: nothing either
    db.expire_all()
    event = db.get(WecomEvent, event_id)
    assert event is not None and event.status == "processed" and event.attempts == 2 and event.error == ""
    friendship = db.scalar(select(Friendship).join(Customer).where(Customer.wecom_external_userid == "wmLATE"))
    assert friendship is not None and friendship.account_id == account.id and friendship.channel_state == "door"
    assert db.scalar(select(func.count()).select_from(Friendship)) == 1


def test_a_worker_takes_waiting_events_along_and_one_bad_event_spoils_nothing(
        db: Session, make: Any, retries: list[int]) -> None:
    make.account(wecom_userid="counter")
    good = [stored_add(db, "counter", f"wmBATCH{n}") for n in range(5)]
    bad = stored_add(db, "nobody", "wmORPHAN")
    wecom_jobs.process_event.call_local(good[0])  # one task: the others were waiting and come along
    db.expire_all()
    statuses = {e.id: (e.status, e.attempts) for e in db.scalars(select(WecomEvent))}
    assert all(statuses[i] == ("processed", 1) for i in good)
    assert statuses[bad] == ("received", 1) and len(retries) == 1
    assert db.scalar(select(func.count()).select_from(Friendship)) == 5
    # The computed facts of the batch's customers were refreshed (the 未沟通 contact-count tag).
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == "wmBATCH3"))
    from siyu.customers import service

    assert customer is not None
    assert "未沟通" in {t.name for t in service.customer_tags(db, customer_ids=[customer.id])[customer.id]}
    # Their own tasks find them done and change nothing.
    for event_id in good[1:]:
        wecom_jobs.process_event.call_local(event_id)
    db.expire_all()
    assert {e.attempts for e in db.scalars(select(WecomEvent).where(WecomEvent.id.in_(good)))} == {1}


def test_only_events_that_need_the_api_make_a_batch_fetch_a_token() -> None:
    from siyu.wecom import events

    assert not events.needs_api(["message/text", "message/image", "change_external_contact/del_follow_user"])
    assert events.needs_api(["message/text", "change_external_contact/add_external_contact"])
    assert events.needs_api(["change_external_chat/update"]) and events.needs_api(["change_external_tag/create"])


def test_adds_applied_together_give_what_one_at_a_time_gives(db: Session, make: Any, retries: list[int]) -> None:
    """A batch's friend-adds are one set-based run: coupons, first touches, tags and re-adds as if one by one."""
    from siyu.channels import service as channels_service
    from siyu.channels.models import ChannelAdd
    from siyu.core.viewer import SYSTEM
    from siyu.customers import service
    from siyu.customers.models import Touch
    from siyu.wecom import events

    make.account(wecom_userid="counter")
    make.account(wecom_userid="kiosk")
    ch = channels_service.save_channel(db, viewer=SYSTEM, data=channels_service.ChannelIn(
        name="门店收银台", account_ids=[1, 2], tag_names=["来源:门店"], incentive_kind="coupon",
        welcome_text="{称呼}您好 {券码}", fallback_text="{称呼}您好，券已领完"))
    channels_service.add_codes(db, channel_id=ch.id, codes=["C1", "C2", "C3"], viewer=SYSTEM)
    db.commit()
    order = [("counter", "wmA"), ("counter", "wmB"), ("nobody", "wmX"), ("kiosk", "wmA"), ("counter", "wmC"),
             ("counter", "wmD"), ("counter", "wmB")]
    ids = []
    for n, (userid, external) in enumerate(order):
        event = WecomEvent(dedup_key=f"add|{userid}|{external}|{n}", raw_xml="<xml/>",
                           event_type="change_external_contact/add_external_contact",
                           fields={"MsgType": "event", "UserID": userid, "ExternalUserID": external,
                                   "State": ch.key, "CreateTime": str(1700000000 + n)})
        db.add(event)
        db.flush()
        ids.append(event.id)
    db.commit()
    stored = list(db.scalars(select(WecomEvent).order_by(WecomEvent.id)))
    assert [len(run) for run in events.runs(stored, api=None)] == [6, 1]  # the second wmB add starts a run
    assert [len(run) for run in events.runs(stored, api=object())] == [1] * 7  # API calls: one at a time

    wecom_jobs.process_event.call_local(ids[0])
    db.expire_all()
    statuses = [db.get_one(WecomEvent, i).status for i in ids]
    assert statuses == ["processed", "processed", "received", "processed", "processed", "processed", "processed"]
    assert len(retries) == 1  # only the event of the member Siyu does not know is retried
    customers = {c.wecom_external_userid: c for c in db.scalars(select(Customer))}
    assert set(customers) == {"wmA", "wmB", "wmC", "wmD"}
    adds = {(a.customer_id, a.account_id): a.first_touch for a in db.scalars(select(ChannelAdd))}
    assert adds == {(customers["wmA"].id, 1): True, (customers["wmB"].id, 1): True, (customers["wmA"].id, 2): False,
                    (customers["wmC"].id, 1): True, (customers["wmD"].id, 1): True}
    welcomes = [t.details["welcome"] for t in db.scalars(select(Touch).order_by(Touch.id))
                if t.details and t.details.get("event") == "wecom_friend_added"]
    # Known only by id (no API to name them): the salutation stays empty, never a made-up placeholder name.
    assert all(variables.is_unnamed(c.name) for c in customers.values())
    assert welcomes == ["您好 C1", "您好 C2", "您好 C1", "您好 C3", "您好，券已领完", "您好 C2"]
    db.refresh(ch)
    assert ch.alert == channels_service.POOL_EMPTY
    tags = service.customer_tags(db, customer_ids=[c.id for c in customers.values()])
    assert all("门店" in {t.name for t in tags[c.id]} for c in customers.values())
    assert db.scalar(select(func.count()).select_from(Friendship)) == 5
