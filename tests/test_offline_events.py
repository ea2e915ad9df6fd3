"""线下活动: capacity and the waiting list, the public sign-up page (signed key, CSRF, rate limit), check-in at
the door, invitations to a segment and follow-ups — through the service, the API and the console."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from siyu.core import db as core_db
from siyu.core.db import utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Touch, TouchKind
from siyu.maintenance.models import Task, TaskKind
from siyu.offline import routes as offline_routes
from siyu.offline import service
from siyu.offline.models import EventStatus, OfflineEvent, OfflineSignup, SignupSource, SignupStatus
from siyu.offline.schemas import EventIn
from tests.conftest import viewer_of
from tests.test_pages import HTML, Console, csrf_from


@pytest.fixture(autouse=True)
def fresh_rate_limit() -> Iterator[None]:
    offline_routes.PUBLIC_RATE.reset()
    yield
    offline_routes.PUBLIC_RATE.reset()


def make_event(db: Any, *, capacity: int = 3, starts_in: timedelta = timedelta(days=3),
               hours: int = 2, account_ids: list[int] | None = None, **texts: str) -> OfflineEvent:
    start = utcnow() + starts_in
    event = service.create_event(db, viewer=SYSTEM, data=EventIn(
        name="明前龙井品鉴会", kind="tasting", starts_at=start, ends_at=start + timedelta(hours=hours),  # type: ignore[arg-type]
        place="杭州西湖店二楼", capacity=capacity, account_ids=account_ids or [], **texts))
    db.commit()
    return event


def end_event(db: Any, event: OfflineEvent) -> None:
    """Move an event into the past (sign-ups and check-ins were made while it was on)."""
    event.starts_at = utcnow() - timedelta(hours=3)
    event.ends_at = utcnow() - timedelta(hours=1)
    db.commit()


def person(db: Any, event: OfflineEvent, phone: str, name: str = "王姐") -> service.SignupResult:
    result = service.sign_up_person(db, event=event, name=name, phone=phone, source=SignupSource.public)
    db.commit()
    return result


def public_path(event: OfflineEvent) -> str:
    return f"/e/{service.public_key(event)}"


def public_post(client: TestClient, event: OfflineEvent, name: str, phone: str, **kwargs: Any) -> Any:
    page = client.get(public_path(event), headers=HTML)
    assert page.status_code == 200, page.text
    return client.post(public_path(event), data={"name": name, "phone": phone, "csrf_token": csrf_from(page.text)},
                       headers=HTML, follow_redirects=False, **kwargs)


# ---------------------------------------------------------------- capacity and the waiting list


def test_event_full_puts_the_next_sign_up_on_the_waiting_list(db: Any) -> None:
    event = make_event(db, capacity=2)
    statuses = [person(db, event, f"1380000000{i}", f"客人{i}").signup.status for i in range(4)]
    assert statuses == ["registered", "registered", "waitlisted", "waitlisted"]
    db.refresh(event)
    assert event.seats_taken == 2


def test_cancelling_a_seat_moves_the_first_on_the_waiting_list_up(db: Any) -> None:
    event = make_event(db, capacity=1)
    first = person(db, event, "13800000001").signup
    second = person(db, event, "13800000002").signup
    third = person(db, event, "13800000003").signup
    service.cancel_signup(db, signup_id=first.id, viewer=SYSTEM)
    db.commit()
    db.refresh(second)
    db.refresh(third)
    assert (second.status, third.status) == ("registered", "waitlisted")
    db.refresh(event)
    assert event.seats_taken == 1


def test_more_capacity_moves_people_up_and_less_than_taken_is_refused(db: Any) -> None:
    event = make_event(db, capacity=1)
    person(db, event, "13800000001")
    waiting = person(db, event, "13800000002").signup
    data = EventIn(name=event.name, kind="tasting", starts_at=event.starts_at, ends_at=event.ends_at,  # type: ignore[arg-type]
                   capacity=2)
    service.update_event(db, event_id=event.id, data=data, viewer=SYSTEM)
    db.commit()
    db.refresh(waiting)
    assert waiting.status == "registered"
    with pytest.raises(Invalid):
        service.update_event(db, event_id=event.id, data=data.model_copy(update={"capacity": 1}), viewer=SYSTEM)


def test_concurrent_sign_ups_beyond_capacity_go_to_the_waiting_list_never_over(db: Any) -> None:
    event = make_event(db, capacity=5)
    event_id = event.id
    errors: list[BaseException] = []
    barrier = threading.Barrier(24)

    def sign(n: int) -> None:
        session = core_db.get_sessionmaker()()
        try:
            barrier.wait()
            target = session.get(OfflineEvent, event_id)
            assert target is not None
            service.sign_up_person(session, event=target, name=f"客人{n}", phone=f"139{n:08d}",
                                   source=SignupSource.public)
            session.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)
            session.rollback()
        finally:
            session.close()

    threads = [threading.Thread(target=sign, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    db.expire_all()
    counted = dict(db.execute(select(OfflineSignup.status, func.count()).where(OfflineSignup.event_id == event_id)
                              .group_by(OfflineSignup.status)).all())
    assert counted == {"registered": 5, "waitlisted": 19}
    assert db.get(OfflineEvent, event_id).seats_taken == 5


# ---------------------------------------------------------------- the public page


def test_public_sign_up_at_the_link_gives_a_ticket_with_a_check_in_qr(client: TestClient, db: Any) -> None:
    event = make_event(db, capacity=5)
    page = client.get(public_path(event), headers=HTML)
    assert page.status_code == 200
    assert "明前龙井品鉴会" in page.text and "剩余 5 个名额" in page.text and 'name="csrf_token"' in page.text
    done = public_post(client, event, "李女士", "138 0013 8000")
    assert done.status_code == 303
    ticket = client.get(done.headers["location"], headers=HTML)
    assert "李女士，报名成功！" in ticket.text
    qr = re.search(r'src="(/e/[^"]+/qr\.png)"', ticket.text)
    assert qr is not None
    image = client.get(qr.group(1))
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    signup = db.scalar(select(OfflineSignup).where(OfflineSignup.event_id == event.id))
    assert (signup.phone, signup.source, signup.status) == ("13800138000", "public", "registered")


def test_public_sign_up_with_a_bad_phone_is_answered_in_chinese(client: TestClient, db: Any) -> None:
    event = make_event(db)
    for bad in ("12345", "2380013800", "138001380001234", "abc"):
        answer = public_post(client, event, "王姐", bad)
        assert answer.status_code == 422
        assert "请输入 11 位手机号码" in answer.text
        assert 'value="王姐"' in answer.text  # nothing typed is lost
    no_name = public_post(client, event, "  ", "13800138000")
    assert no_name.status_code == 422 and "请填写姓名" in no_name.text
    assert db.scalar(select(func.count()).select_from(OfflineSignup)) == 0


def test_double_sign_up_with_the_same_phone_is_one_sign_up(client: TestClient, db: Any) -> None:
    event = make_event(db, capacity=5)
    first = public_post(client, event, "王姐", "13800138000")
    again = public_post(client, event, "王姐姐", "+86 138-0013-8000")
    assert first.status_code == again.status_code == 303
    assert again.headers["location"] == first.headers["location"] + "?again=1"
    assert "该手机号已报过名" in client.get(again.headers["location"], headers=HTML).text
    assert db.scalar(select(func.count()).select_from(OfflineSignup)) == 1
    db.refresh(event)
    assert event.seats_taken == 1


def test_public_page_flooded_from_one_address_is_rate_limited_and_never_over_booked(client: TestClient,
                                                                                     db: Any) -> None:
    event = make_event(db, capacity=3)
    page = client.get(public_path(event), headers=HTML)
    token = csrf_from(page.text)
    answers = [client.post(public_path(event), data={"name": f"刷{n}", "phone": f"137{n:08d}", "csrf_token": token},
                           headers=HTML, follow_redirects=False).status_code for n in range(1000)]
    assert answers.count(303) == offline_routes.PUBLIC_SIGNUPS_PER_MINUTE
    assert answers.count(429) == 1000 - offline_routes.PUBLIC_SIGNUPS_PER_MINUTE
    limited = client.post(public_path(event), data={"name": "x", "phone": "13700000000", "csrf_token": token},
                          headers=HTML)
    assert limited.status_code == 429 and "请求过于频繁" in limited.text
    db.refresh(event)
    assert event.seats_taken == 3
    assert db.scalar(select(func.count()).select_from(OfflineSignup).where(
        OfflineSignup.status == SignupStatus.registered.value)) == 3
    views = [client.get(public_path(event), headers=HTML).status_code for _n in range(150)]
    assert 429 in views  # looking is limited too


def test_forged_renewed_or_expired_public_keys_answer_404(client: TestClient, db: Any) -> None:
    event = make_event(db)
    key = service.public_key(event)
    event_id, nonce, signature = key.split(".")
    forged = [f"{event_id}.{nonce}.{'A' * len(signature)}", f"{int(event_id) + 1}.{nonce}.{signature}",
              "not-a-key", f"{event_id}.{nonce}"]
    for bad in forged:
        assert client.get(f"/e/{bad}", headers=HTML).status_code == 404
    other = make_event(db)
    assert client.get(f"/e/{other.id}.{nonce}.{signature}", headers=HTML).status_code == 404
    assert client.get(f"/e/{key}", headers=HTML).status_code == 200
    service.renew_public_key(db, event_id=event.id, viewer=SYSTEM)
    db.commit()
    assert client.get(f"/e/{key}", headers=HTML).status_code == 404  # the old link ended with the renewal
    fresh = public_path(event)
    assert client.get(fresh, headers=HTML).status_code == 200
    service.set_status(db, event_id=event.id, status=EventStatus.closed, viewer=SYSTEM)
    db.commit()
    assert client.get(fresh, headers=HTML).status_code == 404
    service.set_status(db, event_id=event.id, status=EventStatus.open, viewer=SYSTEM)
    end_event(db, event)
    gone = client.get(fresh, headers=HTML)
    assert gone.status_code == 404 and "报名链接无效或已过期" in gone.text


def test_public_sign_up_without_the_csrf_token_is_refused(client: TestClient, db: Any) -> None:
    event = make_event(db)
    client.get(public_path(event), headers=HTML)
    refused = client.post(public_path(event), data={"name": "王姐", "phone": "13800138000"}, headers=HTML)
    assert refused.status_code == 403
    forged = client.post(public_path(event), data={"name": "王姐", "phone": "13800138000", "csrf_token": "x"},
                         headers=HTML)
    assert forged.status_code == 403
    assert db.scalar(select(func.count()).select_from(OfflineSignup)) == 0


def test_public_sign_up_is_matched_by_phone_or_kept_for_review(client: TestClient, db: Any, make: Any,
                                                               admin: Any) -> None:
    account = make.account()
    known = make.customer(account, name="陈先生", phones=["+86 139 0000 1111"])
    event = make_event(db, capacity=5)
    public_post(client, event, "老陈", "13900001111")
    public_post(client, event, "新朋友", "13600002222")
    rows = {s.name: s for s in db.scalars(select(OfflineSignup).where(OfflineSignup.event_id == event.id))}
    assert rows["老陈"].customer_id == known.id and rows["老陈"].account_id == account.id
    assert rows["新朋友"].customer_id is None
    assert [s.name for s in service.list_signups(db, event_id=event.id, viewer=SYSTEM, status="review")] == ["新朋友"]
    timeline = db.scalars(select(Touch).where(Touch.customer_id == known.id, Touch.kind == "system")).all()
    assert any((t.details or {}).get("event") == "offline_signup" for t in timeline)
    console = Console(client).login(admin)
    created = console.post(f"/offline-events/{event.id}/signups/{rows['新朋友'].id}",
                           {"action": "create", "account_id": str(account.id)})
    assert created.status_code == 303
    db.expire_all()
    fresh = db.get(OfflineSignup, rows["新朋友"].id)
    assert fresh.customer_id is not None
    assert service.match_phone(db, "13600002222")[0] == fresh.customer_id


# ---------------------------------------------------------------- check-in at the door


def test_staff_check_in_from_the_qr_records_attendance_on_the_timeline(client: TestClient, db: Any, make: Any) -> None:
    account = make.account()
    staff = make.user("operator", accounts=[account])
    customer = make.customer(account, phones=["13900001111"])
    event = make_event(db, account_ids=[account.id])
    signup = person(db, event, "13900001111").signup
    anonymous = client.get(f"/offline-events/checkin/{signup.ticket}", headers=HTML, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    console = Console(client).login(staff)
    page = console.get(f"/offline-events/checkin/{signup.ticket}")
    assert page.status_code == 200 and "王姐" in page.text and "1390000****" not in page.text
    token = csrf_from(page.text)
    done = console.client.post(f"/offline-events/checkin/{signup.ticket}", data={"csrf_token": token}, headers=HTML)
    assert done.status_code == 200 and "签到成功" in done.text
    again = console.client.post(f"/offline-events/checkin/{signup.ticket}", data={"csrf_token": token}, headers=HTML)
    assert "已于" in again.text
    touches = db.scalars(select(Touch).where(Touch.customer_id == customer.id,
                                             Touch.kind == TouchKind.offline_event.value)).all()
    assert len(touches) == 1 and touches[0].details["event_id"] == event.id and touches[0].user_id == staff.id
    timeline = console.get(f"/customers/{customer.id}")
    assert 'data-testid="offline-entry"' in timeline.text and "已签到" in timeline.text


def test_check_in_is_scoped_to_the_events_accounts(client: TestClient, db: Any, make: Any) -> None:
    ours, theirs = make.account(), make.account()
    outsider = make.user("operator", accounts=[theirs])
    event = make_event(db, account_ids=[ours.id])
    signup = person(db, event, "13900001111").signup
    console = Console(client).login(outsider)
    assert console.get(f"/offline-events/checkin/{signup.ticket}").status_code == 404
    assert console.get(f"/offline-events/{event.id}").status_code == 404
    assert console.get("/offline-events/checkin/not-a-ticket").status_code == 404
    with pytest.raises(NotFound):
        service.check_in(db, ticket=signup.ticket, viewer=viewer_of(outsider))


def test_a_waitlisted_person_is_let_in_only_while_a_seat_is_free(db: Any) -> None:
    event = make_event(db, capacity=1)
    seated = person(db, event, "13800000001").signup
    waiting = person(db, event, "13800000002").signup
    with pytest.raises(Invalid):
        service.check_in(db, ticket=waiting.ticket, viewer=SYSTEM)
    db.rollback()
    service.cancel_signup(db, signup_id=seated.id, viewer=SYSTEM)  # the waiting one moves up
    db.commit()
    assert service.check_in(db, ticket=waiting.ticket, viewer=SYSTEM).already is False


# ---------------------------------------------------------------- invitations and follow-ups


def _segment(db: Any, account: Any) -> Any:
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn, parse_tree

    segment = segments_service.create_segment(db, viewer=SYSTEM, data=SegmentIn(
        name="西湖店的客户", conditions=parse_tree({"kind": "account", "account_ids": [account.id]})))
    db.commit()
    return segment


def test_inviting_a_segment_gives_each_operator_a_task_with_a_customer_safe_invitation(
        client: TestClient, db: Any, make: Any, admin: Any) -> None:
    account = make.account()
    customers = [make.customer(account, name=f"顾客{n}", remark_name=f"秘密备注{n}") for n in range(3)]
    event = make_event(db, account_ids=[account.id], invite_text="{称呼}您好，周六{账号}请您来品茶～")
    segment = _segment(db, account)
    console = Console(client).login(admin)
    answer = console.post(f"/offline-events/{event.id}/invite", {"segment_id": str(segment.id)})
    assert answer.status_code == 303
    tasks = db.scalars(select(Task).where(Task.kind == TaskKind.event_invite.value)).all()
    assert sorted(t.customer_id for t in tasks) == sorted(c.id for c in customers)
    assert all(t.operator_id == account.owner_user_id for t in tasks)
    detail = next(t.detail for t in tasks if t.customer_id == customers[0].id)
    assert detail.startswith(f"顾客0您好，周六{account.display_name}请您来品茶～ http://testserver/e/")
    assert "秘密备注" not in detail
    again = service.invite_segment(db, event_id=event.id, segment_id=segment.id, link="x", viewer=SYSTEM)
    assert (again.invited, again.already) == (0, 3)
    with pytest.raises(Invalid):
        service.create_event(db, viewer=SYSTEM, data=EventIn(
            name="x", starts_at=event.starts_at, ends_at=event.ends_at, capacity=1, invite_text="{备注名}来吧"))


def test_after_the_event_attendees_and_no_shows_get_different_follow_ups_once(db: Any, make: Any) -> None:
    account = make.account()
    came = make.customer(account, name="到了", phones=["13900000001"])
    missed = make.customer(account, name="没来", phones=["13900000002"])
    event = make_event(db, capacity=5, attended_text="{称呼}，谢谢来品茶！", no_show_text="{称呼}，下次见～")
    arrived = person(db, event, "13900000001").signup
    person(db, event, "13900000002")
    person(db, event, "13600000003", "路人")  # nobody to follow up through
    service.check_in(db, ticket=arrived.ticket, viewer=SYSTEM)
    db.commit()
    with pytest.raises(Invalid):
        service.follow_up(db, event_id=event.id)
    end_event(db, event)
    assert [s.customer_id for s in service.no_shows(db, event_id=event.id, viewer=SYSTEM)] == [missed.id, None]
    result = service.follow_up(db, event_id=event.id)
    db.commit()
    assert (result.attended, result.no_shows, result.unmatched) == (1, 1, 1)
    tasks = {t.customer_id: t.detail for t in db.scalars(select(Task).where(Task.kind == TaskKind.event_follow.value))}
    assert tasks[came.id] == "[已到场] 到了，谢谢来品茶！"
    assert tasks[missed.id] == "[未到场] 没来，下次见～"
    with pytest.raises(Invalid):
        service.follow_up(db, event_id=event.id)
    assert service.follow_up_ended(db) == 0


def test_planning_events_is_for_admins_and_planners(db: Any, make: Any) -> None:
    operator = make.user("operator", accounts=[make.account()])
    start = utcnow() + timedelta(days=1)
    with pytest.raises(Forbidden):
        service.create_event(db, viewer=viewer_of(operator), data=EventIn(
            name="x", starts_at=start, ends_at=start + timedelta(hours=1), capacity=1))
    with pytest.raises(Invalid):
        service.create_event(db, viewer=SYSTEM, data=EventIn(name="x", starts_at=start, ends_at=start, capacity=1))


# ---------------------------------------------------------------- API and console pages


def test_api_creates_lists_signs_up_and_checks_in(client: TestClient, admin_headers: dict[str, str],
                                                  db: Any) -> None:
    start = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    created = client.post("/api/v1/offline-events", headers=admin_headers, json={
        "name": "新手冲泡训练营", "kind": "camp", "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=3)).isoformat(), "place": "上海店", "capacity": 1})
    assert created.status_code == 201, created.text
    event_id = created.json()["id"]
    assert created.json()["public_url"].startswith("http://testserver/e/")
    first = client.post(f"/api/v1/offline-events/{event_id}/signups", headers=admin_headers,
                        json={"name": "甲", "phone": "13800000001"})
    second = client.post(f"/api/v1/offline-events/{event_id}/signups", headers=admin_headers,
                         json={"name": "乙", "phone": "13800000002"})
    bad = client.post(f"/api/v1/offline-events/{event_id}/signups", headers=admin_headers,
                      json={"name": "丙", "phone": "110"})
    assert (first.json()["status"], second.json()["status"]) == ("registered", "waitlisted")
    assert bad.status_code == 422 and "11 位手机号" in bad.json()["detail"]
    listed = client.get("/api/v1/offline-events", headers=admin_headers).json()["items"]
    assert [(e["name"], e["registered"], e["waitlisted"]) for e in listed] == [("新手冲泡训练营", 1, 1)]
    ticket = db.scalar(select(OfflineSignup.ticket).where(OfflineSignup.name == "甲"))
    checked = client.post(f"/api/v1/offline-events/checkin/{ticket}", headers=admin_headers)
    assert checked.status_code == 200 and checked.json()["checked_in_at"]
    attended = client.get(f"/api/v1/offline-events/{event_id}/signups?status=attended", headers=admin_headers)
    assert [s["name"] for s in attended.json()["items"]] == ["甲"]
    assert client.get("/api/v1/offline-events").status_code == 401


def test_console_plans_an_event_and_shows_sign_ups_attendance_and_export(client: TestClient, db: Any,
                                                                         admin: Any) -> None:
    console = Console(client).login(admin)
    assert "线下活动" in console.get("/").text  # the nav entry under 增长
    form = console.get("/offline-events/new")
    assert form.status_code == 200
    refused = console.post("/offline-events/new", {"name": "品鉴会", "kind": "tasting", "capacity": "10",
                                                   "starts_at": "2030-01-02T14:00", "ends_at": "2030-01-02T12:00"})
    assert refused.status_code == 422 and "结束时间必须晚于开始时间" in refused.text
    saved = console.post("/offline-events/new", {"name": "春茶品鉴会", "kind": "tasting", "capacity": "10",
                                                 "place": "苏州店", "starts_at": "2030-01-02T14:00",
                                                 "ends_at": "2030-01-02T16:00"})
    assert saved.status_code == 303
    event_url = saved.headers["location"]
    signed = console.post(f"{event_url}/signups", {"name": "张三", "phone": "13800001234"})
    assert signed.status_code == 303
    detail = console.get(event_url)
    assert "春茶品鉴会" in detail.text and "张三" in detail.text and "2030-01-02 14:00" in detail.text
    assert 'data-testid="public-link"' in detail.text
    bad = console.post(f"{event_url}/signups", {"name": "李四", "phone": "12"})
    assert bad.status_code == 422 and "请输入 11 位手机号码" in bad.text
    listing = console.get("/offline-events")
    assert "春茶品鉴会" in listing.text
    export = console.get(f"{event_url}/export.csv")
    assert export.status_code == 200 and "张三" in export.text and "13800001234" in export.text
    qr = console.get(f"{event_url}/qr.png")
    assert qr.content.startswith(b"\x89PNG")


def test_service_agents_see_masked_numbers_on_the_event_its_export_and_the_door(client: TestClient, db: Any,
                                                                                make: Any) -> None:
    account = make.account()
    agent = make.user("service", accounts=[account])
    event = make_event(db, account_ids=[account.id])
    signup = person(db, event, "13912345678").signup
    console = Console(client).login(agent)
    for url in (f"/offline-events/{event.id}", f"/offline-events/{event.id}/export.csv",
                f"/offline-events/checkin/{signup.ticket}"):
        shown = console.get(url).text
        assert "139****5678" in shown and "13912345678" not in shown, url


def test_after_the_event_the_console_lists_no_shows_and_creates_follow_ups(client: TestClient, db: Any,
                                                                           make: Any, admin: Any) -> None:
    account = make.account(owner_user_id=admin.id)
    make.customer(account, name="到了", phones=["13900000001"])
    make.customer(account, name="没来", phones=["13900000002"])
    event = make_event(db)
    came = person(db, event, "13900000001", "到了").signup
    person(db, event, "13900000002", "没来")
    service.check_in(db, ticket=came.ticket, viewer=SYSTEM)
    db.commit()
    end_event(db, event)
    console = Console(client).login(admin)
    missing = console.get(f"/offline-events/{event.id}?status=no_show")
    assert "没来" in missing.text and 'data-testid="no-show"' in missing.text
    assert "到了" not in re.sub(r'<h2[^>]*>.*?</h2>', "", missing.text.split('data-testid="signup-list"')[1])
    done = console.post(f"/offline-events/{event.id}/follow-up", {})
    assert done.status_code == 303 and "到场" in console.get(done.headers["location"]).text
    again = console.post(f"/offline-events/{event.id}/follow-up", {})
    assert again.status_code == 422 and "已经生成过了" in again.text
    today = console.get("/today")
    assert "线下活动回访" in today.text
