"""Group operations (issue 22, items 3 and 5): 入群欢迎语 per group kind, the intake plan in the seed's three
batches, the posts calendar (群SOP) sent as WeCom group mass sends through the one send ledger, personal groups'
posts as tasks, and the groups' work in 今日任务.

The simulator end-to-end test runs the simulated WeCom in-process over HTTP: a calendar line is scheduled, the
post goes out through ``add_msg_template`` (chat_type group), the owner confirms it on the phone
(``confirm_mass_send``) and Siyu reads the result from ``get_groupmsg_send_result``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.errors import Invalid
from siyu.core.settings import get_settings, local_zone
from siyu.core.viewer import SYSTEM
from siyu.groups import onboarding, posts, registry, service
from siyu.groups.models import GroupChat, GroupPost, GroupTask, GroupWelcomeTemplate
from siyu.groups.moderation.models import BlacklistEntry
from siyu.sends import service as ledger
from siyu.sends.models import QuotaMode, SendSource, TargetKind
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom.client import client_for
from tests.conftest import Factory, viewer_of
from tests.test_pages import Console
from tests.test_wecom_callback import AES_KEY, CORP_ID, TOKEN

SECRET = "group-ops-secret-0123456789"
ZONE = local_zone()
DAY = datetime(2026, 12, 7, tzinfo=ZONE).date()  # a Monday
SEVEN = datetime(2026, 12, 7, 7, 0, tzinfo=ZONE)
EIGHT = datetime(2026, 12, 7, 8, 1, tzinfo=ZONE)


def chat(db: Session, chat_id: str, *, owner: str, members: list[str], kind: str = "marketing",
         name: str = "") -> GroupChat:
    detail = {"chat_id": chat_id, "name": name or chat_id, "owner": owner, "create_time": 1_760_000_000,
              "member_list": [{"userid": u, "type": 1 if u == owner else 2, "join_time": 1_760_000_000,
                               "join_scene": 1, "name": u} for u in [owner, *members]]}
    group = service.apply_group_chat(db, detail)
    registry.update_registry(db, group=group, data=registry.RegistryIn(kind=kind, tier="孵化群"), viewer=SYSTEM)
    db.commit()
    return group


def morning_plan(db: Session, kind: str = "marketing", text: str = "【早报】今日茶事：明前龙井到货") -> Any:
    plan = posts.save_plan(db, data=posts.PlanIn(kind=kind, slot="morning", at_time="08:00", text=text),
                           viewer=SYSTEM)
    db.commit()
    return plan


class FakeApi:
    """The calls groups.posts makes, recorded."""

    def __init__(self) -> None:
        self.sends: list[dict[str, Any]] = []
        self.results: dict[str, list[dict[str, Any]]] = {}

    def create_mass_send(self, **body: Any) -> dict[str, Any]:
        self.sends.append(body)
        return {"msgid": f"msg{len(self.sends)}", "fail_list": []}

    def mass_send_results(self, msgid: str, userid: str) -> list[dict[str, Any]]:
        return self.results.get(msgid, [])


# ---------------------------------------------------------------- the posts calendar


def test_a_calendar_line_schedules_one_post_per_group_of_its_kind_once_and_skips_past_times(
        db: Session, make: Factory) -> None:
    make.account(wecom_userid="owner.a")
    groups = [chat(db, f"wrK{i}", owner="owner.a", members=[f"wmK{i}"]) for i in range(3)]
    chat(db, "wrOTHER", owner="owner.a", members=["wmO"], kind="interest")
    morning_plan(db)
    assert posts.schedule_day(db, day=DAY, now=SEVEN) == 3
    assert posts.schedule_day(db, day=DAY, now=SEVEN) == 0  # again: nothing new
    assert posts.schedule_day(db, day=DAY + timedelta(days=1), now=EIGHT + timedelta(days=1)) == 0  # 08:00 passed
    found = db.scalars(select(GroupPost)).all()
    assert {p.group_chat_id for p in found} == {g.id for g in groups}
    assert {p.due_at.astimezone(ZONE).strftime("%H:%M") for p in found} == {"08:00"}


def test_due_posts_reserve_each_groups_quota_first_and_go_out_in_tasks_of_at_most_2000_groups(
        db: Session, make: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    make.account(wecom_userid="owner.b")
    groups = [chat(db, f"wrB{i}", owner="owner.b", members=[f"wmB{i}"]) for i in range(5)]
    morning_plan(db)
    posts.schedule_day(db, day=DAY, now=SEVEN)
    monkeypatch.setattr(posts, "GROUPS_PER_TASK", 2)  # the platform's 2,000, scaled down
    api = FakeApi()
    outcome = posts.send_due(db, api=api, now=EIGHT)
    db.commit()
    assert outcome.sent == 5 and outcome.calls == 3
    assert [len(s["chat_ids"]) for s in api.sends] == [2, 2, 1]
    assert {s["chat_type"] for s in api.sends} == {"group"} and {s["sender"] for s in api.sends} == {"owner.b"}
    used = ledger.used_counts(db, [g.id for g in groups], at=EIGHT, target=TargetKind.group)
    assert used == {g.id: 1 for g in groups}
    assert posts.GROUPS_PER_TASK == 2 and posts.client_limits.GROUP_MASS_SEND_CHATS == 2000


def test_a_group_over_its_quota_is_refused_before_any_wecom_task_is_created(db: Session, make: Factory,
                                                                            admin: Any) -> None:
    make.account(wecom_userid="owner.q")
    full = chat(db, "wrFULL", owner="owner.q", members=["wmF"])
    room = chat(db, "wrROOM", owner="owner.q", members=["wmR"])
    ledger.set_quota_mode(db, mode=QuotaMode.day, viewer=viewer_of(admin))  # the corp's admin chose 1 a day
    ledger.record(db, [full.id], EIGHT, source=SendSource.campaign, ref="earlier", target=TargetKind.group)
    morning_plan(db)
    posts.schedule_day(db, day=DAY, now=SEVEN)
    api = FakeApi()
    outcome = posts.send_due(db, api=api, now=EIGHT)
    db.commit()
    assert outcome.refused == 1 and outcome.sent == 1
    assert api.sends[0]["chat_ids"] == ["wrROOM"]  # the full group never reached WeCom
    refused = db.scalar(select(GroupPost).where(GroupPost.group_chat_id == full.id))
    assert refused is not None and refused.status == "refused" and "1" in refused.reason and not refused.msgid

    # everyone full: no task at all
    db.execute(GroupPost.__table__.delete())
    ledger.record(db, [room.id], EIGHT, source=SendSource.campaign, ref="earlier2", target=TargetKind.group)
    posts.schedule_day(db, day=DAY, now=SEVEN)
    api2 = FakeApi()
    assert posts.send_due(db, api=api2, now=EIGHT).refused == 2 and api2.sends == []


def test_a_refused_send_gives_its_reservations_back(db: Session, make: Factory) -> None:
    from siyu.wecom.client import WecomApiError

    make.account(wecom_userid="owner.f")
    group = chat(db, "wrFAIL", owner="owner.f", members=["wmX"])
    morning_plan(db)
    posts.schedule_day(db, day=DAY, now=SEVEN)

    class Refusing(FakeApi):
        def create_mass_send(self, **body: Any) -> dict[str, Any]:
            raise WecomApiError(41048, "no customer to send to", api="add_msg_template")

    class Busy(FakeApi):
        def create_mass_send(self, **body: Any) -> dict[str, Any]:
            raise WecomApiError(-1, "system busy", api="add_msg_template", retryable=True)

    assert posts.send_due(db, api=Busy(), now=EIGHT).retry == 1  # tried again on the next run
    assert db.scalar(select(GroupPost.status)) == "scheduled"
    assert ledger.used_counts(db, [group.id], at=EIGHT, target=TargetKind.group) == {}
    outcome = posts.send_due(db, api=Refusing(), now=EIGHT)
    db.commit()
    assert outcome.failed == 1
    assert ledger.used_counts(db, [group.id], at=EIGHT, target=TargetKind.group) == {}
    post = db.scalar(select(GroupPost))
    assert post is not None and post.status == "failed" and "41048" in post.reason


def test_a_group_dismissed_while_its_post_waits_has_the_post_cancelled_and_says_so(
        db: Session, make: Factory, client: TestClient, admin: Any) -> None:
    make.account(wecom_userid="owner.d")
    group = chat(db, "wrDISM", owner="owner.d", members=["wmD"], name="要解散的群")
    morning_plan(db)
    posts.schedule_day(db, day=DAY, now=SEVEN)
    service.dismiss_group_chat(db, "wrDISM")
    db.commit()
    post = db.scalar(select(GroupPost).where(GroupPost.group_chat_id == group.id))
    assert post is not None and post.status == "cancelled" and post.reason == "group_dismissed"
    api = FakeApi()
    assert posts.send_due(db, api=api, now=EIGHT).sent == 0 and api.sends == []
    console = Console(client).login(admin)
    page = console.get(f"/groups/posts?kind=marketing&day={DAY.isoformat()}")
    assert page.status_code == 200 and "已取消：发送前群已解散" in page.text
    assert posts.schedule_day(db, day=DAY + timedelta(days=1), now=SEVEN) == 0  # a dismissed group gets no more


def test_a_personal_groups_post_becomes_the_owners_task_in_todays_tasks_and_is_marked_posted(
        db: Session, make: Factory, client: TestClient) -> None:
    mine = make.account(kind="personal", wecom_userid=None, display_name="我的个人号")
    operator = make.user("operator", accounts=[mine])
    group = registry.register_personal(db, data=registry.PersonalGroupIn(
        name="老茶客群", owner_account_id=mine.id, kind="marketing"), viewer=SYSTEM)
    db.commit()
    morning_plan(db)
    posts.schedule_day(db, day=DAY, now=SEVEN)
    outcome = posts.send_due(db, api=FakeApi(), now=EIGHT)
    db.commit()
    assert outcome.tasks == 1
    task = db.scalar(select(GroupTask).where(GroupTask.group_chat_id == group.id))
    assert task is not None and task.kind == "post" and "早报" in task.detail
    console = Console(client).login(operator)
    today = console.get("/today")
    assert 'data-testid="group-work-item"' in today.text and "手动在群里发送内容" in today.text
    post = db.scalar(select(GroupPost))
    assert post is not None
    assert console.post(f"/groups/posts/{post.id}/done", {"next": "/today"}).status_code == 303
    db.expire_all()
    assert db.get(GroupPost, post.id).status == "done"  # type: ignore[union-attr]
    assert db.get(GroupTask, task.id).status == "done"  # type: ignore[union-attr]


def test_group_tasks_and_missed_or_unconfirmed_posts_show_in_the_owners_todays_tasks_only(
        db: Session, make: Factory, client: TestClient) -> None:
    mine = make.account(wecom_userid="owner.t", display_name="我的企微")
    theirs = make.account(wecom_userid="owner.u", display_name="别人的企微")
    operator = make.user("operator", accounts=[mine])
    group = chat(db, "wrMINE", owner="owner.t", members=["wmM"], name="我的孵化群")
    other = chat(db, "wrTHEIRS", owner="owner.u", members=["wmT"], name="别人的孵化群")
    assert group.owner_account_id == mine.id and other.owner_account_id == theirs.id
    registry.raise_task(db, kind=registry.GroupTaskKind.rename, key=str(group.id), detail="山野茶舍杭州中心品茶孵化群5",
                        group=group)
    registry.raise_task(db, kind=registry.GroupTaskKind.rename, key=str(other.id), detail="别人的", group=other)
    morning_plan(db)
    posts.schedule_day(db, day=DAY, now=SEVEN)
    db.commit()
    items = posts.today_items(db, viewer=viewer_of(operator), now=EIGHT + timedelta(hours=2))
    assert {(i["type"], i["group"]) for i in items} == {("task", "我的孵化群"), ("post", "我的孵化群")}
    assert next(i for i in items if i["type"] == "post")["label"] == "群发内容漏发"
    posts.send_due(db, api=FakeApi(), now=EIGHT)
    db.commit()
    assert posts.today_items(db, viewer=viewer_of(operator), now=EIGHT + timedelta(minutes=30))[0]["type"] == "task"
    late = posts.today_items(db, viewer=viewer_of(operator), now=EIGHT + timedelta(hours=3))
    assert any(i["label"] == "群发内容群主未确认" for i in late)
    console = Console(client).login(operator)
    page = console.get("/today")
    assert "我的孵化群" in page.text and "别人的孵化群" not in page.text
    group_page = console.get(f"/groups/{group.id}")
    assert group_page.text.count('data-testid="group-post"') == 1 and "待群主确认" in group_page.text
    task = db.scalar(select(GroupTask).where(GroupTask.group_chat_id == group.id))
    assert task is not None
    done = console.post(f"/groups/tasks/{task.id}/done", {"next": "/today"})
    assert done.status_code == 303 and done.headers["location"] == "/today"


def test_bad_calendar_lines_are_refused_in_chinese_and_nothing_is_saved(
        db: Session, client: TestClient, admin: Any, admin_headers: dict[str, str]) -> None:
    bad = [({"kind": "marketing", "slot": "morning", "at_time": "25:00", "text": "早报"}, "时间格式"),
           ({"kind": "marketing", "slot": "morning", "at_time": "08:00", "weekdays": [], "text": "早报"},
            "至少选择一天"),
           ({"kind": "marketing", "slot": "morning", "at_time": "08:00", "text": ""}, "请填写内容"),
           ({"kind": "marketing", "slot": "morning", "at_time": "08:00", "text": "{称呼}早上好"}, "客户变量"),
           ({"kind": "nope", "slot": "morning", "at_time": "08:00", "text": "早报"}, "未知的群类型"),
           ({"kind": "marketing", "slot": "rules", "at_time": "08:00", "text": "早报"}, "未知的内容类型"),
           ({"kind": "marketing", "slot": "morning", "at_time": "08:00", "text": "长" * 1500}, "4000")]
    for body, words in bad:
        answer = client.post("/api/v1/group-post-plans", json=body, headers=admin_headers)
        assert answer.status_code == 422 and words in answer.text, (body, answer.text)
    console = Console(client).login(admin)
    page = console.post("/groups/posts/plans", {"kind": "marketing", "slot": "morning", "at_time": "8点",
                                                "text": "早报", "weekdays": ["0", "1"]})
    assert page.status_code == 422 and "时间格式为" in page.text and 'value="8点"' in page.text
    assert db.scalar(select(func.count()).select_from(posts.GroupPostPlan)) == 0
    good = client.post("/api/v1/group-post-plans", json={"kind": "marketing", "slot": "task", "at_time": "08:00",
                                                         "weekdays": [0, 1, 2, 3, 4], "text": "【今日任务】打卡"},
                       headers=admin_headers)
    assert good.status_code == 201 and good.json()["weekdays"] == [0, 1, 2, 3, 4]
    calendar = console.get("/groups/posts?kind=marketing")
    assert calendar.status_code == 200 and 'data-testid="plan-row"' in calendar.text


# ---------------------------------------------------------------- welcome templates and intake


def test_welcome_templates_are_chosen_per_group_kind_and_refused_past_wecoms_100(db: Session) -> None:
    general = onboarding.save_welcome_template(db, data=onboarding.WelcomeTemplateIn(
        name="通用", text="欢迎 %NICKNAME% 入群！"), viewer=SYSTEM)
    study = onboarding.save_welcome_template(db, data=onboarding.WelcomeTemplateIn(
        name="学习群", kind="knowledge", text="%NICKNAME%，欢迎来到茶艺课"), viewer=SYSTEM)
    db.commit()
    assert onboarding.template_for_kind(db, "knowledge") is study
    assert onboarding.template_for_kind(db, "marketing") is general
    assert onboarding.render_welcome(study.text, "小雨") == "小雨，欢迎来到茶艺课"
    with pytest.raises(Invalid, match="Another welcome template"):
        onboarding.save_welcome_template(db, data=onboarding.WelcomeTemplateIn(name="通用", text="x"), viewer=SYSTEM)
    db.rollback()
    db.add_all(GroupWelcomeTemplate(name=f"t{i}", kind="", text="欢迎") for i in range(98))
    db.commit()
    with pytest.raises(Invalid, match=r"at most \{n\} group welcome"):
        onboarding.save_welcome_template(db, data=onboarding.WelcomeTemplateIn(name="第101条", text="欢迎"),
                                         viewer=SYSTEM)
    assert onboarding.WELCOME_TEMPLATES_MAX == 100


def test_the_intake_plan_keeps_three_batches_refuses_the_blacklisted_and_needs_a_screening_note(
        db: Session, make: Factory, client: TestClient, admin: Any) -> None:
    account = make.account(wecom_userid="owner.i")
    old, banned, prospect = (make.customer(account, name=n) for n in ("老顾客王姐", "发广告的", "潜在客户"))
    for customer, userid in ((old, "wmOLD"), (banned, "wmBAN"), (prospect, "wmNEW")):
        customer.wecom_external_userid = userid
    db.add(BlacklistEntry(userid="wmBAN", customer_id=banned.id, name="发广告的", reason="广告"))
    group = chat(db, "wrINTAKE", owner="owner.i", members=[])
    made = onboarding.add_invitees(db, group=group, data=onboarding.InviteesIn(
        batch=1, customer_ids=[old.id, banned.id], names=["销售骨干小李"]), viewer=SYSTEM)
    db.commit()
    assert {(i.name, i.status) for i in made} == {("老顾客王姐", "invited"), ("发广告的", "refused"),
                                                  ("销售骨干小李", "invited")}
    with pytest.raises(Invalid, match="screening note"):
        onboarding.add_invitees(db, group=group, data=onboarding.InviteesIn(batch=3, customer_ids=[prospect.id]),
                                viewer=SYSTEM)
    refused = next(i for i in made if i.status == "refused")
    with pytest.raises(Invalid, match="blacklisted"):
        onboarding.set_invitee_status(db, group=group, invitee_id=refused.id, status="joined", viewer=SYSTEM)
    # the old customer joins: the sync marks them joined
    chat(db, "wrINTAKE", owner="owner.i", members=["wmOLD"])
    db.expire_all()
    plan = onboarding.intake_plan(db, group=group)
    assert {i.name: i.status for i in plan[1]}["老顾客王姐"] == "joined"
    # batch 1 is in: the rules announcement and the self-introduction prompt are scheduled, once
    now = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
    made_posts = onboarding.finish_batch(db, group=group, batch=1, viewer=SYSTEM, now=now)
    db.commit()
    assert [p.slot for p in made_posts] == ["rules", "intro"] and "名称+地区+职业" in made_posts[0].text
    with pytest.raises(Invalid, match="already scheduled"):
        onboarding.finish_batch(db, group=group, batch=1, viewer=SYSTEM, now=now)
    db.rollback()

    console = Console(client).login(admin)
    page = console.get(f"/groups/{group.id}/intake")
    assert page.status_code == 200 and page.text.count('data-testid="intake-batch"') == 3
    assert "拒绝（黑名单）" in page.text and "群规公告" in page.text
    bad = console.post(f"/groups/{group.id}/intake", {"batch": "3", "customer_ids": str(prospect.id), "note": ""})
    assert bad.status_code == 422 and "筛选说明" in bad.text
    bad_ids = console.post(f"/groups/{group.id}/intake", {"batch": "2", "customer_ids": "12a"})
    assert bad_ids.status_code == 422 and "逗号分隔的整数" in bad_ids.text
    good = console.post(f"/groups/{group.id}/intake", {"batch": "3", "customer_ids": str(prospect.id),
                                                        "note": "茶艺老师推荐，做茶馆的"})
    assert good.status_code == 303
    db.expire_all()
    batch3 = onboarding.intake_plan(db, group=group)[3]
    assert [(i.name, i.note) for i in batch3] == [("潜在客户", "茶艺老师推荐，做茶馆的")]


# ---------------------------------------------------------------- the simulator end to end


class Sim:
    def __init__(self, server: RunningServer, corp: VirtualCorp) -> None:
        self.server, self.corp = server, corp

    def control(self, operation: str, **body: Any) -> Any:
        answer = httpx.post(f"{self.server.url}/_simulator/{operation}", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def received(self, chat_id: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.server.url}/_simulator/received", params={"chat_id": chat_id})
        assert answer.status_code == 200, answer.text
        return list(answer.json()["messages"])


@pytest.fixture
def sim(database_url: str, db: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sim]:
    corp = VirtualCorp.seeded(11, corp_id=CORP_ID, contacts_per_member=8, groups_per_member=2, salt=0)
    corp.auto_confirm_mass_send = False  # the owner confirms on the phone, later
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    for name, value in {"SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET, "SIYU_WECOM_TOKEN": TOKEN,
                        "SIYU_WECOM_AES_KEY": AES_KEY, "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    from siyu.accounts.models import Account

    for member in corp.state.members:
        db.add(Account(kind="wecom", wecom_userid=member.userid, display_name=member.name))
    db.commit()
    try:
        yield Sim(server, corp)
    finally:
        server.stop()
        get_settings.cache_clear()


def test_simulator_a_scheduled_post_goes_out_the_owner_confirms_and_siyu_reads_the_result(
        sim: Sim, db: Session, client: TestClient, admin_headers: dict[str, str]) -> None:
    api = client_for(db)
    owner = sim.corp.state.members[0].userid
    mine = [c for c in sim.corp.state.group_chats if c.owner == owner]
    for c in mine:
        group = service.apply_group_chat(db, api.group_chat(c.chat_id))
        registry.update_registry(db, group=group, data=registry.RegistryIn(kind="marketing"), viewer=SYSTEM)
    db.commit()
    made = client.post("/api/v1/group-post-plans", json={"kind": "marketing", "slot": "morning", "at_time": "08:00",
                                                         "text": "【早报】今日茶事"}, headers=admin_headers)
    assert made.status_code == 201
    assert posts.schedule_day(db, day=DAY, now=SEVEN) == len(mine)
    outcome = posts.send_due(db, api=api, now=EIGHT)
    db.commit()
    assert outcome.sent == len(mine) and outcome.calls == 1
    task = sim.corp.state.mass_sends[-1]
    assert task.chat_type == "group" and task.sender == owner and {r.chat_id for r in task.results} == \
        {c.chat_id for c in mine}
    assert posts.check_results(db, api=api, now=EIGHT) == 0  # not confirmed yet
    assert sim.received(mine[0].chat_id) == []

    sim.control("confirm_mass_send", msgid=task.msgid, userid=owner)  # the owner taps send on the phone
    assert posts.check_results(db, api=api, now=EIGHT) == len(mine)
    db.commit()
    statuses = set(db.scalars(select(GroupPost.status)))
    assert statuses == {"confirmed"}
    assert [r["text"] for r in sim.received(mine[0].chat_id)] == ["【早报】今日茶事"]
    listed = client.get(f"/api/v1/group-posts?since={DAY.isoformat()}", headers=admin_headers)
    assert listed.status_code == 200 and {p["status"] for p in listed.json()} == {"confirmed"}

    # a dismissed group on WeCom (its callback applied): the next post is cancelled, never sent
    posts.schedule_day(db, day=DAY + timedelta(days=1), now=SEVEN)
    sim.control("dismiss_group", chat_id=mine[0].chat_id)
    service.dismiss_group_chat(db, mine[0].chat_id)
    db.commit()
    sends_before = len(sim.corp.state.mass_sends)
    outcome = posts.send_due(db, api=api, now=EIGHT + timedelta(days=1))
    db.commit()
    assert outcome.sent == len(mine) - 1 and len(sim.corp.state.mass_sends) == sends_before + 1
    gone = db.scalar(select(GroupPost).where(GroupPost.status == "cancelled"))
    assert gone is not None and posts.reason_text(gone.reason).startswith("已取消")


def test_simulator_welcome_templates_are_added_edited_and_deleted_on_wecom(
        sim: Sim, db: Session, client: TestClient, admin_headers: dict[str, str]) -> None:
    made = client.post("/api/v1/group-welcome-templates", json={"name": "营销群欢迎语", "kind": "marketing",
                                                                "text": "欢迎 %NICKNAME% ！请先看群公告"},
                       headers=admin_headers)
    assert made.status_code == 201
    db.expire_all()
    template = db.get(GroupWelcomeTemplate, made.json()["id"])
    assert template is not None and template.wecom_template_id  # the job ran after the commit
    on_wecom = sim.corp.api_group_welcome_template_get({"template_id": template.wecom_template_id})
    assert on_wecom["text"]["content"] == "欢迎 %NICKNAME% ！请先看群公告"
    edited = client.put(f"/api/v1/group-welcome-templates/{template.id}",
                        json={"name": "营销群欢迎语", "kind": "marketing", "text": "%NICKNAME% 你好"},
                        headers=admin_headers)
    assert edited.status_code == 200
    assert sim.corp.state.group_welcome_templates[0].text == "%NICKNAME% 你好"
    empty = client.post("/api/v1/group-welcome-templates", json={"name": "空的", "text": "   "},
                        headers=admin_headers)
    assert empty.status_code == 422
    assert client.delete(f"/api/v1/group-welcome-templates/{template.id}",
                         headers=admin_headers).status_code == 204
    assert sim.corp.state.group_welcome_templates == []


def test_a_post_wecom_could_not_take_in_time_is_missed_not_sent_late_and_the_job_runs_the_calendar(
        db: Session, make: Factory) -> None:
    from siyu.groups import jobs

    make.account(wecom_userid="owner.l")
    chat(db, "wrLATE", owner="owner.l", members=["wmL"])
    morning_plan(db)
    result = jobs.run_posts(db, api=None, now=SEVEN)  # WeCom not connected: scheduled, nothing sent
    assert result["scheduled"] == 2 and result["sent"] == 0  # today's and tomorrow's 08:00
    api = FakeApi()
    outcome = posts.send_due(db, api=api, now=EIGHT + timedelta(hours=4))  # connected again at noon
    db.commit()
    assert outcome.missed == 1 and api.sends == []
    post = db.scalar(select(GroupPost).where(GroupPost.status == "missed"))
    assert post is not None and posts.reason_text(post.reason) == "未发送：未能及时连上企业微信"
    later = jobs.run_posts(db, api=api, now=EIGHT + timedelta(days=1))
    assert later["sent"] == 1 and later["scheduled"] == 1  # the day after's


def test_the_intake_api_sets_statuses_finishes_a_batch_and_hides_other_accounts_groups(
        db: Session, make: Factory, client: TestClient, token_for: Any) -> None:
    mine = make.account(wecom_userid="owner.m")
    theirs = make.account(wecom_userid="owner.n")
    operator = make.user("operator", accounts=[mine])
    group = chat(db, "wrAPI", owner="owner.m", members=[])
    other = chat(db, "wrAPI2", owner="owner.n", members=[])
    assert other.owner_account_id == theirs.id
    headers = token_for(operator)
    made = client.post(f"/api/v1/groups/{group.id}/invitees", json={"batch": 2, "names": ["张姐", "李哥"]},
                       headers=headers)
    assert made.status_code == 201 and [i["status"] for i in made.json()] == ["invited", "invited"]
    first = made.json()[0]["id"]
    assert client.patch(f"/api/v1/groups/{group.id}/invitees/{first}", json={"status": "declined"},
                        headers=headers).json()["status"] == "declined"
    assert client.patch(f"/api/v1/groups/{group.id}/invitees/{first}", json={"status": "refused"},
                        headers=headers).status_code == 422  # only the blacklist refuses
    assert client.post(f"/api/v1/groups/{group.id}/invitees", json={"batch": 4, "names": ["x"]},
                       headers=headers).status_code == 422
    assert client.post(f"/api/v1/groups/{group.id}/invitees", json={"batch": 1}, headers=headers).status_code == 422
    finished = client.post(f"/api/v1/groups/{group.id}/intake/finish", json={"batch": 2}, headers=headers)
    assert finished.status_code == 201 and [p["slot"] for p in finished.json()] == ["rules", "intro"]
    again = client.post(f"/api/v1/groups/{group.id}/intake/finish", json={"batch": 2}, headers=headers)
    assert again.status_code == 422
    assert client.get(f"/api/v1/groups/{other.id}/invitees", headers=headers).status_code == 404
    assert client.post(f"/api/v1/groups/{other.id}/invitees", json={"batch": 1, "names": ["x"]},
                       headers=headers).status_code == 404
    console = Console(client).login(operator)
    assert console.get(f"/groups/{other.id}/intake").status_code == 404
    bad = console.post("/groups/welcome", {"name": "", "kind": "marketing", "text": "欢迎"})
    assert bad.status_code == 422 and 'data-testid="error-message"' in bad.text
    assert db.scalar(select(func.count()).select_from(GroupWelcomeTemplate)) == 0
