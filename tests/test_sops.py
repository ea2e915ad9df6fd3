"""客户SOP (issue 20, deliverable 3): triggers enrol, steps run at their relative times exactly once,
a WeCom message over the customer's quota becomes a task (said so), edits are new versions, merges
keep one enrolment, purchases end it early, the dry run writes nothing, operators see their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.settings import local_zone
from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service
from siyu.customers.merge import service as merge
from siyu.customers.models import Touch
from siyu.maintenance.models import Task
from siyu.sends import service as sends
from siyu.sends.models import SendLedgerEntry, SendSource
from siyu.sops import service
from siyu.sops.models import SopEnrolment, SopStepRun
from siyu.sops.schemas import SopIn
from tests.conftest import viewer_of
from tests.test_pages import Console
from tests.test_wecom_connector import MEMBER, Simulator, sim, wecom_customer  # noqa: F401  (the sim fixture)


class RecordingApi:
    """Stands in for the WeCom API where a test is about Siyu's own rules, not the platform."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def create_mass_send(self, **body: Any) -> dict[str, Any]:
        self.calls.append(body)
        return {"msgid": f"msg-{len(self.calls)}", "fail_list": []}


def crm_tag(db: Session, name: str = "人群:新客") -> Any:
    tag = customers_service.resolve_tags(db, names=[name])[0]
    db.commit()
    return tag


def tag_customer(db: Session, customer: Any, tag: Any) -> None:
    """An operator adds the tag: the touch hook enrols the customer into tag-triggered SOPs."""
    customers_service.set_customer_tags(db, customer_id=customer.id, add=[tag], remove=[], viewer=SYSTEM)
    db.commit()


def sop_data(tag: Any, steps: list[dict[str, Any]], *, exits: list[str] | None = None,
             name: str = "新客7天培育") -> SopIn:
    return SopIn.model_validate({"name": name, "trigger": {"kind": "tag", "tag_ids": [tag.id]}, "steps": steps,
                                 "exits": exits or []})


def new_sop(db: Session, admin: Any, data: SopIn, **kwargs: Any) -> Any:
    sop = service.create_sop(db, data=data, viewer=viewer_of(admin), **kwargs)
    db.commit()
    return sop


def enrolment_of(db: Session, customer: Any) -> SopEnrolment:
    db.expire_all()
    return db.scalars(select(SopEnrolment).where(SopEnrolment.customer_id == customer.id)).one()


def runs_of(db: Session, enrolment: SopEnrolment) -> list[SopStepRun]:
    db.expire_all()
    return list(db.scalars(select(SopStepRun).where(SopStepRun.enrolment_id == enrolment.id)
                           .order_by(SopStepRun.step_index, SopStepRun.seq)))


def sop_tasks(db: Session, customer: Any) -> list[Task]:
    return list(db.scalars(select(Task).where(Task.customer_id == customer.id, Task.kind == "sop").order_by(Task.id)))


def later(days: float) -> datetime:
    """The fake clock: this long after now."""
    return utcnow() + timedelta(days=days)


# ---------------------------------------------------------------- quota


def test_sop_message_over_the_monthly_quota_becomes_a_task_and_says_so(db: Session, make: Any, admin: Any) -> None:
    account = make.account()
    full = wecom_customer(make, db, account, "wmFULL01", salutation="王姐")
    room = wecom_customer(make, db, account, "wmROOM01")
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 0 09:00", "kind": "send", "text": "{称呼}您好，新品到了"}]))
    run_at = later(1)
    limit = sends.period_of("month", sends.local_day(run_at)).limit  # the month's days (W:92135)
    for n in range(limit):  # this month's corp mass messages already reached the first customer
        sends.reserve(db, [full.id], run_at, source=SendSource.campaign, ref=f"campaign:{n}")
    db.commit()
    tag_customer(db, full, tag)
    tag_customer(db, room, tag)
    api = RecordingApi()

    service.run_all(db, now=run_at, api=api)

    over = runs_of(db, enrolment_of(db, full))[0]
    assert over.outcome == "over_quota" and over.status == "done"
    assert f"{limit} of {limit}" in over.detail or f"{limit} 条中的 {limit}" in over.detail or str(limit) in over.detail
    task = db.get(Task, over.task_id)
    assert task is not None and task.kind == "sop" and task.detail == "王姐您好，新品到了"
    assert task.operator_id == account.owner_user_id
    # Nothing was created on WeCom for her; the other customer's message went out and took one message.
    assert [c["external_userids"] for c in api.calls] == [["wmROOM01"]]
    sent = runs_of(db, enrolment_of(db, room))[0]
    assert sent.outcome == "sent" and sent.msgid == "msg-1"
    assert sends.used_counts(db, [full.id, room.id], at=run_at) == {full.id: limit, room.id: 1}
    # The customer page says so: the step on the timeline with the reason.
    step = db.scalars(select(Touch).where(Touch.customer_id == full.id, Touch.kind == "system")
                      .order_by(Touch.id.desc())).first()
    assert step is not None and step.details is not None and step.details["outcome"] == "over_quota"


def test_sop_message_goes_out_through_the_wecom_simulator_once(db: Session, make: Any, admin: Any,
                                                               sim: Simulator) -> None:  # noqa: F811
    account = make.account(wecom_userid=MEMBER)
    external = sim.new_contact()
    customer = wecom_customer(make, db, account, external, salutation="李先生")
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 1 10:00", "kind": "send", "text": "{称呼}，试饮装已寄出"}]))
    tag_customer(db, customer, tag)

    service.run_all(db, now=later(3))
    service.run_all(db, now=later(3))

    assert [(r["text"], r["sender"]) for r in sim.received(external)] == [("李先生，试饮装已寄出", MEMBER)]
    run = runs_of(db, enrolment_of(db, customer))[0]
    assert run.outcome == "sent" and run.msgid == sim.received(external)[0]["msgid"]
    assert db.scalar(select(func.count()).select_from(SendLedgerEntry).where(
        SendLedgerEntry.target_id == customer.id, SendLedgerEntry.released_at.is_(None))) == 1


# ---------------------------------------------------------------- versions, merges, the job


def test_sop_edited_while_customers_are_enrolled_they_finish_on_their_version(db: Session, make: Any,
                                                                               admin: Any) -> None:
    account = make.account()
    early, late = make.customer(account), make.customer(account)
    tag = crm_tag(db)
    sop = new_sop(db, admin, sop_data(tag, [{"at": "day 0 09:00", "kind": "task", "text": "打招呼"},
                                            {"at": "day 1 09:00", "kind": "task", "text": "问试饮感受"}]))
    tag_customer(db, early, tag)

    service.update_sop(db, sop_id=sop.id, viewer=viewer_of(admin),
                       data=sop_data(tag, [{"at": "day 0 09:00", "kind": "task", "text": "新版：发券"}]))
    db.commit()
    tag_customer(db, late, tag)
    service.run_all(db, now=later(3), api=RecordingApi())

    assert enrolment_of(db, early).version_id != enrolment_of(db, late).version_id
    assert [r.outcome for r in runs_of(db, enrolment_of(db, early))] == ["task", "task"]
    # Both of the first version's steps came due on this run: one task of the day holds both scripts.
    assert [t.detail for t in sop_tasks(db, early)] == ["打招呼；问试饮感受"]
    assert [t.detail for t in sop_tasks(db, late)] == ["新版：发券"]
    assert enrolment_of(db, early).status == "completed"


def test_customer_merged_while_enrolled_keeps_one_enrolment(db: Session, make: Any, admin: Any) -> None:
    account, other = make.account(), make.account()
    kept, duplicate = make.customer(account), make.customer(other)
    only_source = make.customer(other)
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 2 09:00", "kind": "task", "text": "回访"}]))
    for customer in (kept, duplicate, only_source):
        tag_customer(db, customer, tag)
    sends.reserve(db, [duplicate.id], utcnow(), source=SendSource.campaign, ref="campaign:1")
    db.commit()

    merge.merge_customers(db, target_id=kept.id, source_ids=[duplicate.id], choices={}, viewer=viewer_of(admin))
    db.commit()

    db.expire_all()
    active = list(db.scalars(select(SopEnrolment).where(SopEnrolment.status == "active",
                                                        SopEnrolment.customer_id.in_([kept.id, duplicate.id]))))
    assert [e.customer_id for e in active] == [kept.id]
    ended = db.scalars(select(SopEnrolment).where(SopEnrolment.customer_id == duplicate.id)).one()
    assert ended.status == "stopped" and ended.exit_reason == "merged"
    assert [r.status for r in runs_of(db, ended)] == ["cancelled"]
    assert sends.used_counts(db, [kept.id], at=utcnow()) == {kept.id: 1}  # her messages count for the kept one

    fresh = make.customer(account)  # never tagged: not in the SOP
    record = merge.merge_customers(db, target_id=fresh.id, source_ids=[only_source.id], choices={},
                                   viewer=viewer_of(admin))
    db.commit()
    # Only the source was in the SOP: its enrolment moved to the kept customer, still running …
    db.expire_all()
    assert [(e.customer_id, e.status) for e in db.scalars(select(SopEnrolment).where(
        SopEnrolment.customer_id.in_([fresh.id, only_source.id])))] == [(fresh.id, "active")]
    merge.undo_merge(db, merge_id=record.id, viewer=viewer_of(admin))
    db.commit()
    # … and an undo gives it back.
    assert enrolment_of(db, only_source).status == "active"


def test_the_job_run_twice_does_nothing_twice(db: Session, make: Any, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    customers = [make.customer(account) for _ in range(3)]
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 0 09:00", "kind": "task", "text": "欢迎"},
                                      {"at": "day 1 09:00", "kind": "send", "text": "{称呼}早上好"},
                                      {"at": "day 1 09:00", "kind": "tag", "tag_id": crm_tag(db, "人群:培育中").id}]))
    for customer in customers:
        tag_customer(db, customer, tag)
    now = later(2)

    first = service.run_all(db, now=now, api=RecordingApi())
    counts = (db.scalar(select(func.count()).select_from(Task)), db.scalar(select(func.count()).select_from(Touch)),
              db.scalar(select(func.count()).select_from(SopEnrolment)))
    second = service.run_all(db, now=now, api=RecordingApi())
    service.enrol(db, sop=service.list_sops(db)[0], now=now)  # a hook seeing the same trigger again

    assert first.ran == 9 and dict(first.by_outcome) == {"task": 3, "no_wecom": 3, "tagged": 3}
    assert second.ran == 0 and second.entered == 0
    assert (db.scalar(select(func.count()).select_from(Task)), db.scalar(select(func.count()).select_from(Touch)),
            db.scalar(select(func.count()).select_from(SopEnrolment))) == counts
    # A message a personal account cannot send went to the operator, and said why.
    run = runs_of(db, enrolment_of(db, customers[0]))[1]
    assert run.outcome == "no_wecom" and run.task_id is not None and run.detail


def test_a_send_claimed_by_a_worker_that_died_is_never_sent_again(db: Session, make: Any, admin: Any) -> None:
    account = make.account()
    customer = wecom_customer(make, db, account, "wmCRASH1")
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 0 09:00", "kind": "send", "text": "您好"}]))
    tag_customer(db, customer, tag)
    run = runs_of(db, enrolment_of(db, customer))[0]
    run.status, run.claimed_at = "sending", utcnow()  # claimed and committed, then the worker died mid-call
    db.commit()
    api = RecordingApi()

    service.run_all(db, now=utcnow() + service.SENDING_LEASE + timedelta(minutes=1), api=api)

    assert api.calls == []
    assert runs_of(db, enrolment_of(db, customer))[0].outcome == "maybe_sent"


# ---------------------------------------------------------------- early exit, relative times


def test_a_purchase_ends_the_enrolment_early(db: Session, make: Any, admin: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 0 09:00", "kind": "task", "text": "欢迎"},
                                      {"at": "day 3 10:00", "kind": "task", "text": "推荐首单"}], exits=["purchase"]))
    tag_customer(db, customer, tag)
    service.run_all(db, now=later(0.5))

    make.touch(customer, kind="purchase", amount="128.00", content="明前龙井")  # orders' facts hook

    enrolment = enrolment_of(db, customer)
    db.refresh(enrolment)
    assert enrolment.status == "exited" and enrolment.exit_reason == "purchase"
    assert [r.status for r in runs_of(db, enrolment)][1] == "cancelled"
    service.run_all(db, now=later(5))
    assert [t.detail for t in sop_tasks(db, customer)] in ([], ["欢迎"])  # day 0 may have run; day 3 never
    assert "推荐首单" not in [t.detail for t in sop_tasks(db, customer)]
    left = db.scalars(select(Touch).where(Touch.customer_id == customer.id, Touch.kind == "system")
                      .order_by(Touch.id.desc())).first()
    assert left is not None and left.details is not None and left.details["event"] == "sop_exited"


def test_steps_run_at_their_relative_times_on_a_fake_clock(db: Session, make: Any, admin: Any) -> None:
    zone = local_zone()
    monday_morning = datetime(2026, 11, 30, 8, 0, tzinfo=zone)  # a Monday, 08:00 local
    steps = [{"at": "day 0 09:00", "kind": "task", "text": "第0天"},
             {"at": "第3天 10:00", "kind": "task", "text": "第3天"},
             {"at": "every Monday 09:00", "kind": "task", "text": "周一", "times": 2}]
    data = SopIn.model_validate({"name": "x", "trigger": {"kind": "stage", "stages": ["traffic"]}, "steps": steps})
    stored = [{**s, **service.parse_when(str(s["at"]))} for s in data.model_dump(mode="json")["steps"]]

    due = service.step_times(stored, monday_morning)

    assert [(i, seq, d.astimezone(zone).strftime("%m-%d %H:%M")) for i, seq, d in due] == [
        (0, 0, "11-30 09:00"), (1, 0, "12-03 10:00"), (2, 0, "11-30 09:00"), (2, 1, "12-07 09:00")]
    # Entering after the time of day 0 runs it at once; a Monday already past waits for the next one.
    noon = datetime(2026, 11, 30, 12, 0, tzinfo=zone)
    assert [d.astimezone(zone).strftime("%m-%d %H:%M") for _i, _s, d in service.step_times(stored, noon)] == [
        "11-30 12:00", "12-03 10:00", "12-07 09:00", "12-14 09:00"]

    account = make.account()
    customer = make.customer(account)
    sop = new_sop(db, admin, SopIn.model_validate(
        {"name": "首周", "trigger": {"kind": "stage", "stages": ["traffic"]}, "steps": steps}), now=monday_morning)
    assert service.enrol(db, sop=sop, now=monday_morning) == 1
    db.commit()
    ran = []
    for clock in ("11-30 08:59", "11-30 09:00", "12-03 09:59", "12-03 10:00", "12-07 09:00"):
        month, rest = clock.split("-")
        day, hm = rest.split(" ")
        now = datetime(2026, int(month), int(day), int(hm[:2]), int(hm[3:]), tzinfo=zone)
        ran.append(service.run_all(db, now=now, api=RecordingApi()).ran)
    assert ran == [0, 2, 0, 1, 1]
    assert enrolment_of(db, customer).status == "completed"


# ---------------------------------------------------------------- the API and the console


def test_dry_run_shows_who_would_enter_today_and_what_each_gets(client: TestClient, db: Session, make: Any,
                                                                 admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    customer = make.customer(account, salutation="王姐")
    make.customer(account)
    body = {"name": "新客7天培育", "trigger": {"kind": "stage", "stages": ["traffic"]},
            "steps": [{"at": "day 0 09:00", "kind": "task", "text": "{称呼}您好，我是{账号}"},
                      {"at": "day 1 09:00", "kind": "send", "text": "{称呼}，送您一张券"}]}

    answer = client.post("/api/v1/sops/dry-run", json=body, headers=admin_headers)

    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["entering"] == 2
    mine = next(i for i in result["items"] if i["customer_id"] == customer.id)
    assert [s["text"] for s in mine["steps"]] == [f"王姐您好，我是{account.display_name}", "王姐，送您一张券"]
    assert [s["outcome"] for s in mine["steps"]] == ["task", "no_wecom"]  # a personal account: a task, said so
    assert db.scalar(select(func.count()).select_from(SopEnrolment)) == 0  # nothing written


def test_a_remark_name_in_a_step_is_refused_when_saved(client: TestClient, make: Any,
                                                       admin_headers: dict[str, str]) -> None:
    body = {"name": "坏模板", "trigger": {"kind": "stage", "stages": ["user"]},
            "steps": [{"at": "day 0 09:00", "kind": "send", "text": "{备注名}您好"}]}

    answer = client.post("/api/v1/sops", json=body, headers=admin_headers)

    assert answer.status_code == 422
    assert "{备注名}" in answer.text and "内部" in answer.text
    assert client.get("/api/v1/sops", headers=admin_headers).json()["items"] == []


def test_bad_step_times_and_triggers_are_refused_in_chinese(client: TestClient, make: Any,
                                                            admin_headers: dict[str, str]) -> None:
    bad_time = {"name": "x", "trigger": {"kind": "stage", "stages": ["user"]},
                "steps": [{"at": "next week sometime", "kind": "task", "text": "hi"}]}
    no_tags = {"name": "x", "trigger": {"kind": "tag"}, "steps": [{"at": "day 0", "kind": "task", "text": "hi"}]}

    for body in (bad_time, no_tags):
        answer = client.post("/api/v1/sops", json=body, headers=admin_headers)
        assert answer.status_code == 422, answer.text
        assert any("\u4e00" <= ch <= "\u9fff" for ch in answer.json()["detail"]), answer.text


def test_operator_cannot_see_another_accounts_sop_enrolments(client: TestClient, db: Session, make: Any, admin: Any,
                                                             token_for: Callable[[Any], dict[str, str]]) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    own, foreign = make.customer(mine), make.customer(theirs)
    tag = crm_tag(db)
    sop = new_sop(db, admin, sop_data(tag, [{"at": "day 1 09:00", "kind": "task", "text": "回访"}]))
    tag_customer(db, own, tag)
    tag_customer(db, foreign, tag)
    headers = token_for(operator)
    foreign_enrolment = enrolment_of(db, foreign)

    assert client.get(f"/api/v1/sops/{sop.id}/enrolments/{foreign_enrolment.id}", headers=headers).status_code == 404
    listed = client.get(f"/api/v1/sops/{sop.id}/enrolments", headers=headers).json()["items"]
    assert [e["customer_id"] for e in listed] == [own.id]
    assert client.get("/api/v1/sops", headers=headers).json()["items"][0]["enrolled"] == 1
    own_enrolment = client.get(f"/api/v1/sops/{sop.id}/enrolments/{enrolment_of(db, own).id}", headers=headers)
    assert own_enrolment.status_code == 200 and own_enrolment.json()["steps"][0]["status"] == "pending"
    assert client.post(f"/api/v1/sops/{sop.id}/pause", headers=headers).status_code == 403  # operators read only
    console = Console(client).login(operator)
    page = console.get(f"/sops/{sop.id}")
    assert page.status_code == 200 and f"/customers/{own.id}" in page.text
    assert f"/customers/{foreign.id}" not in page.text and 'data-testid="sop-builder"' not in page.text
    assert 'data-testid="sop-builder"' not in console.get("/sops").text


def test_sop_api_create_pause_stop_and_the_console_pages(client: TestClient, db: Session, make: Any, admin: Any,
                                                         admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = make.customer(account)
    tag = crm_tag(db)
    body = {"name": "新客7天培育", "trigger": {"kind": "tag", "tag_ids": [tag.id]}, "exits": ["purchase"],
            "steps": [{"at": "day 0 09:00", "kind": "task", "text": "欢迎"}]}

    created = client.post("/api/v1/sops", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    sop_id = created.json()["id"]
    assert client.post(f"/api/v1/sops/{sop_id}/pause", headers=admin_headers).json()["status"] == "paused"
    tag_customer(db, customer, tag)  # paused: nobody enters
    assert client.get(f"/api/v1/sops/{sop_id}", headers=admin_headers).json()["enrolled"] == 0
    assert client.post(f"/api/v1/sops/{sop_id}/resume", headers=admin_headers).json()["status"] == "running"
    edited = client.put(f"/api/v1/sops/{sop_id}", json={**body, "name": "新客培育 v2"}, headers=admin_headers)
    assert edited.json()["version"] == 2
    assert client.post(f"/api/v1/sops/{sop_id}/stop", headers=admin_headers).json()["status"] == "stopped"
    assert client.put(f"/api/v1/sops/{sop_id}", json=body, headers=admin_headers).status_code == 422

    console = Console(client).login(admin)
    page = console.get("/sops")
    assert page.status_code == 200 and "新客培育 v2" in page.text and 'data-testid="sop-builder"' in page.text
    detail = console.get(f"/sops/{sop_id}")
    assert detail.status_code == 200 and "v2" in detail.text
    assert console.get("/sops/999999").status_code == 404


def test_the_builder_form_dry_runs_and_saves_a_sop(client: TestClient, db: Session, make: Any, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    make.customer(account, salutation="王姐")
    console = Console(client).login(admin)
    form = {"name": "新客7天培育", "trigger_kind": "stage", "trigger_stages": "traffic", "exits": "purchase",
            "step_at_0": "day 0 09:00", "step_kind_0": "task", "step_text_0": "{称呼}您好",
            "step_at_1": "每周一 09:00", "step_kind_1": "send", "step_text_1": "本周新品", "step_times_1": "2"}

    dry = console.post("/sops", {**form, "action": "dry_run"})
    assert dry.status_code == 200 and 'data-testid="sop-dry-run"' in dry.text and "王姐您好" in dry.text
    assert service.list_sops(db) == []
    bad = console.post("/sops", {**form, "step_text_0": "{备注名}您好", "action": "save"})
    assert bad.status_code == 422 and "{备注名}" in bad.text and service.list_sops(db) == []
    saved = console.post("/sops", {**form, "action": "save"})
    assert saved.status_code == 303
    db.expire_all()
    [sop] = service.list_sops(db)
    assert [s["weekday"] for s in service.current_version(db, sop).steps] == [None, 0]
    paused = console.post(f"/sops/{sop.id}/status", {"status": "paused"})
    assert paused.status_code == 303
    db.expire_all()
    assert service.get_sop(db, sop_id=sop.id).status == "paused"
    quota = console.post("/sops/quota", {"quota_mode": "week"})
    assert quota.status_code == 303 and sends.get_settings_row(db).quota_mode == "week"


# ---------------------------------------------------------------- every trigger, the audience, every exit


def test_each_trigger_enrols_whom_it_should(db: Session, make: Any, admin: Any) -> None:
    from siyu.channels import service as channels_service
    from siyu.customers.models import Friendship
    from siyu.customers.schemas import CustomFieldIn

    account = make.account()
    steps = [{"at": "day 0 09:00", "kind": "task", "text": "跟进"}]

    def sop(trigger: dict[str, Any], **extra: Any) -> Any:
        return new_sop(db, admin, SopIn.model_validate({"name": trigger["kind"], "trigger": trigger, "steps": steps,
                                                        **extra}))

    def entered(sop: Any) -> list[int]:
        return sorted(db.scalars(select(SopEnrolment.customer_id).where(SopEnrolment.sop_id == sop.id)))

    # Added through a channel: the add's hook enrols at once, through the channel's account.
    channel = channels_service.save_channel(db, viewer=SYSTEM, data=channels_service.ChannelIn(
        name="门店扫码", account_ids=[account.id]))
    db.commit()
    by_channel = sop({"kind": "channel", "channel_ids": [channel.id]})
    scanned, walked_in = make.customer(account), make.customer(account)
    channels_service.on_friend_added(db, customer_id=scanned.id, account_id=account.id, state=channel.key)
    db.commit()
    assert entered(by_channel) == [scanned.id]
    # Made a purchase: the orders' facts hook.
    by_purchase = sop({"kind": "purchase"})
    make.touch(walked_in, kind="purchase", amount="66.00")
    assert entered(by_purchase) == [walked_in.id]
    # Days without a touch and birthdays: the job; an audience leaves out who it does not match.
    quiet = make.customer(account, city="杭州")
    elsewhere = make.customer(account, city="上海")
    for customer in (quiet, elsewhere):
        make.touch(customer, kind="chat", occurred_at=utcnow() - timedelta(days=40))
    by_silence = sop({"kind": "no_touch", "days": 30},
                     conditions={"kind": "and", "conditions": [{"kind": "field", "field": "city", "op": "eq",
                                                                "value": "杭州"}]})
    customers_service.create_custom_field(db, data=CustomFieldIn(key="birthday", label="生日", field_type="date"),
                                          actor=SYSTEM)
    today = utcnow().astimezone(local_zone()).date()
    born = make.customer(account, custom_fields={"birthday": f"1990-{today:%m-%d}"})
    by_birthday = sop({"kind": "birthday"})
    service.run_all(db, now=utcnow(), api=RecordingApi())
    assert entered(by_silence) == [quiet.id]
    assert entered(by_birthday) == [born.id]
    # A customer who is no longer anyone's friend has no account to go through: nobody to enter.
    gone = make.customer(account)
    db.execute(Friendship.__table__.update().where(Friendship.customer_id == gone.id).values(status="deleted"))
    db.commit()
    by_stage = sop({"kind": "stage", "stages": ["traffic"]})
    service.run_all(db, now=utcnow(), api=RecordingApi())
    assert gone.id not in entered(by_stage) and scanned.id in entered(by_stage)


def test_replying_or_deleting_us_ends_the_enrolment_early(db: Session, make: Any, admin: Any) -> None:
    from siyu.customers.models import Friendship
    from siyu.inbox import service as inbox
    from siyu.inbox.service import InboundMessage

    account = make.account()
    talker, leaver = make.customer(account), make.customer(account)
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 2 09:00", "kind": "task", "text": "回访"}],
                                exits=["reply", "deleted"]))
    for customer in (talker, leaver):
        tag_customer(db, customer, tag)

    inbox.ingest(db, [InboundMessage(source="wecom", platform_msgid="in-1", account_id=account.id,
                                     customer_id=talker.id, sent_at=utcnow(), text="收到啦")])
    db.commit()
    db.execute(Friendship.__table__.update().where(Friendship.customer_id == leaver.id).values(status="deleted"))
    db.commit()
    service.run_all(db, now=later(3), api=RecordingApi())

    assert (enrolment_of(db, talker).status, enrolment_of(db, talker).exit_reason) == ("exited", "reply")
    assert (enrolment_of(db, leaver).status, enrolment_of(db, leaver).exit_reason) == ("exited", "deleted")
    assert sop_tasks(db, talker) == [] and sop_tasks(db, leaver) == []


def test_the_periodic_job_runs_the_engine_and_the_timeline_shows_it(client: TestClient, db: Session, make: Any,
                                                                    admin: Any) -> None:
    from siyu.sops import jobs as sop_jobs

    account = make.account()
    customer = make.customer(account)
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 0 00:00", "kind": "task", "text": "欢迎加入"}]))
    tag_customer(db, customer, tag)

    assert sop_jobs.run_once()["by_outcome"] == {"task": 1}
    assert sop_jobs.run_once()["ran"] == 0

    console = Console(client).login(admin)
    page = console.get(f"/customers/{customer.id}")
    assert page.status_code == 200 and page.text.count('data-testid="sop-entry"') == 2  # entered; step 1
    assert "新客7天培育" in page.text
    # The task is on the account's 今日任务 with the script to use.
    today = console.get(f"/today?account={account.id}")
    assert 'data-testid="sop-script"' in today.text and "欢迎加入" in today.text


def test_out_of_range_ids_and_bad_cursors_are_refused_never_a_500(client: TestClient, make: Any,
                                                                  admin_headers: dict[str, str]) -> None:
    for trigger in ({"kind": "channel", "channel_ids": [99999999999999999999]}, {"kind": "tag", "tag_ids": [2**70]}):
        body = {"name": "x", "trigger": trigger, "steps": [{"at": "day 0", "kind": "task", "text": "hi"}]}
        assert client.post("/api/v1/sops", json=body, headers=admin_headers).status_code == 422
    body = {"name": "x", "trigger": {"kind": "stage", "stages": ["user"]},
            "steps": [{"at": "day 0", "kind": "tag", "tag_id": 2**70}]}
    assert client.post("/api/v1/sops", json=body, headers=admin_headers).status_code == 422
    assert client.get("/api/v1/sops/99999999999999999999", headers=admin_headers).status_code in (404, 422)
    assert client.get("/api/v1/sops/1/enrolments?cursor=abc", headers=admin_headers).status_code in (404, 422)


def test_a_chunk_of_messages_each_gets_its_own_outcome(db: Session, make: Any, admin: Any) -> None:
    """Messages run in chunks: one WeCom refuses becomes a task (quota given back), a personal account's
    becomes a task, the rest are sent — each once, each on its timeline."""
    account = make.account()
    personal = make.account(kind="personal", wecom_userid=None)
    sent = [wecom_customer(make, db, account, f"wmOK{n:04d}") for n in range(3)]
    refused = wecom_customer(make, db, account, "wmGONE01", salutation="赵姐")
    by_hand = make.customer(personal, salutation="钱姐")
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 0 09:00", "kind": "send", "text": "{称呼}您好，新品到了"}]))
    for customer in [*sent, refused, by_hand]:
        tag_customer(db, customer, tag)

    class Api(RecordingApi):
        def create_mass_send(self, **body: Any) -> dict[str, Any]:
            answer = super().create_mass_send(**body)
            return {**answer, "fail_list": [x for x in body["external_userids"] if x == "wmGONE01"]}

    api = Api()
    run_at = later(1)
    service.run_all(db, now=run_at, api=api)
    service.run_all(db, now=run_at, api=api)

    assert len(api.calls) == 4  # three sent and the one WeCom refused — each called once
    outcomes = {c.id: runs_of(db, enrolment_of(db, c))[0].outcome for c in [*sent, refused, by_hand]}
    assert [outcomes[c.id] for c in sent] == ["sent"] * 3
    assert (outcomes[refused.id], outcomes[by_hand.id]) == ("send_failed", "no_wecom")
    assert [t.detail for t in sop_tasks(db, refused)] == ["赵姐您好，新品到了"]
    assert [t.detail for t in sop_tasks(db, by_hand)] == ["钱姐您好，新品到了"]
    assert sends.used_counts(db, [c.id for c in [*sent, refused]], at=run_at) == {c.id: 1 for c in sent}
    steps = db.scalars(select(Touch).where(Touch.customer_id == refused.id, Touch.kind == "system")).all()
    assert any(t.details and t.details.get("outcome") == "send_failed" for t in steps)


# ------------------------------------------------ coupon steps (issue 23: coupons issued by an SOP step)


def test_a_coupon_step_issues_one_code_per_customer_once_and_says_when_the_pool_is_empty(
        db: Session, make: Any, admin: Any) -> None:
    from siyu.coupons.models import CouponBatchCode
    from tests.test_coupons import batch

    account = make.account(kind="personal", wecom_userid=None)
    customers = [make.customer(account) for _ in range(3)]
    tag = crm_tag(db)
    pool = batch(db, codes=["SOP-1", "SOP-2"])
    new_sop(db, admin, sop_data(tag, [{"at": "day 1 09:00", "kind": "coupon", "coupon_batch_id": pool.id}]))
    for customer in customers:
        tag_customer(db, customer, tag)

    first = service.run_all(db, now=later(2), api=RecordingApi())
    second = service.run_all(db, now=later(2), api=RecordingApi())

    assert dict(first.by_outcome) == {"coupon": 2, "no_coupon": 1} and second.ran == 0
    held = dict(db.execute(select(CouponBatchCode.customer_id, CouponBatchCode.code)
                           .where(CouponBatchCode.customer_id.is_not(None))).tuples().all())
    assert sorted(held.values()) == ["SOP-1", "SOP-2"] and len(held) == 2
    runs = [runs_of(db, enrolment_of(db, c))[0] for c in customers]
    assert sorted(r.outcome for r in runs) == ["coupon", "coupon", "no_coupon"]
    empty = next(r for r in runs if r.outcome == "no_coupon")
    assert empty.detail == "券码已发完"


def test_a_coupon_step_without_a_batch_that_exists_is_refused_when_saved(client: TestClient,
                                                                          admin_headers: Any) -> None:
    body = {"name": "送券", "trigger": {"kind": "stage", "stages": ["user"]},
            "steps": [{"at": "day 0 09:00", "kind": "coupon", "coupon_batch_id": 999}], "exits": []}
    answer = client.post("/api/v1/sops", json=body, headers=admin_headers)
    assert answer.status_code == 422 and "优惠券批次" in answer.text, answer.text
