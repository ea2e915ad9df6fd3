"""群规 through the service, the API and the console: archive messages stored as the archive stores them
(``wecom.archive.store_page``), the minutely job (``service.run_new``), findings with evidence, the owner's
tasks, the blacklist at other groups' intake, pardons, false-positive feedback, dry runs, personal groups'
chat exports, and role scoping. The seed's rules are the fixtures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Touch
from siyu.groups import service as groups_service
from siyu.groups.models import GroupChat, GroupMessage
from siyu.groups.moderation import service
from siyu.groups.moderation.models import BlacklistEntry, ModerationFinding, ModerationRule
from siyu.groups.moderation.schemas import RuleIn
from siyu.maintenance.models import Task
from siyu.team.models import AuditEntry
from siyu.wecom import archive
from tests.conftest import Factory, viewer_of
from tests.test_demo import session  # noqa: F401  (reads the demo database, built once per process)
from tests.test_pages import Console

NOW = datetime.now(UTC).replace(microsecond=0)
AD = {"name": "广告须发红包", "kind": "ad", "params": {"minutes": 3, "min_yuan": 50, "min_people": 20},
      "ladder": [["owner_task", "blacklist"]], "status": "live"}
STICKERS = {"name": "禁止连续发表情", "kind": "stickers", "params": {"count": 3},
            "ladder": [["warn"], ["owner_task"], ["owner_task", "blacklist", "notify_admin"]], "status": "live",
            "warn_text": "@{称呼} 请不要连续发表情（{账号}）"}


class Room:
    """A mirrored WeCom group of one account, and a way to post into it through the archive's storing."""

    def __init__(self, db: Session, account: Any, chat_id: str, *, members: list[tuple[str, str]],
                 admins: tuple[str, ...] = ()) -> None:
        self.db = db
        self.chat_id = chat_id
        self.owner = account.wecom_userid
        self.group = groups_service.apply_group_chat(db, {
            "chat_id": chat_id, "name": f"金万家郑州中心创富孵化群{chat_id[-2:]}", "owner": self.owner,
            "admin_list": [{"userid": a} for a in admins],
            "member_list": [{"userid": self.owner, "type": 1}] + [{"userid": a, "type": 1} for a in admins] + [
                {"userid": u, "type": 2, "group_nickname": nick, "join_time": int(NOW.timestamp()) - 86400}
                for u, nick in members]}, at=NOW - timedelta(days=1))
        for userid, _nick in members:
            archive.record_consent(db, userid=self.owner, external_userid=userid, status="Agree")
        db.commit()
        self.n = 0

    def post(self, sender: str, at: datetime, msgtype: str = "text", body: dict[str, Any] | None = None,
             msgid: str | None = None) -> str:
        self.n += 1
        msgid = msgid or f"{self.chat_id}-{self.n}"
        message = {"msgid": msgid, "action": "send", "from": sender, "tolist": [self.owner], "roomid": self.chat_id,
                   "msgtime": int(at.timestamp() * 1000), "msgtype": msgtype,
                   msgtype: body if body is not None else {"content": f"消息{self.n}"}}
        archive.store_page(self.db, [archive.Opened(seq=self.n, message=message)])
        self.db.commit()
        return msgid


def rule(db: Session, data: dict[str, Any]) -> ModerationRule:
    created = service.save_rule(db, data=RuleIn(**data), viewer=SYSTEM)
    db.commit()
    return created


def run(db: Session, now: datetime = NOW) -> service.Outcome:
    outcome = service.run_new(db, now=now)
    db.commit()
    return outcome


def link(title: str = "高收益理财项目，稳赚不赔") -> dict[str, Any]:
    return {"title": title, "description": "", "link_url": "https://example.com/x"}


def packet(yuan: int = 50, people: int = 20) -> dict[str, Any]:
    return {"type": 2, "wish": "恭喜发财", "totalcnt": people, "totalamount": yuan * 100}


@pytest.fixture
def owner(make: Factory) -> Any:
    return make.account(display_name="郑州中心", wecom_userid="zz.owner")


@pytest.fixture
def room(db: Session, owner: Any) -> Room:
    return Room(db, owner, "wrROOM01", members=[("wmspammer", "小李+郑州+销售"), ("wmquiet", "老王+郑州+教师")],
                admins=("zz.admin",))


def findings(db: Session) -> list[ModerationFinding]:
    return list(db.scalars(select(ModerationFinding).order_by(ModerationFinding.id)))


@pytest.mark.parametrize(("after", "found"), [(179, False), (181, True)])
def test_a_red_packet_2_59_after_an_ad_means_no_action_and_3_01_means_the_owners_task(
        db: Session, room: Room, after: int, found: bool) -> None:
    rule(db, AD)
    t = NOW - timedelta(minutes=30)
    ad = room.post("wmspammer", t, "link", link())
    room.post("wmspammer", t + timedelta(seconds=after), "redpacket", packet())
    room.post("wmquiet", t + timedelta(minutes=10), "text", {"content": "谢谢老板"})
    run(db)
    got = findings(db)
    assert bool(got) is found
    tasks = list(db.scalars(select(Task)))
    if not found:
        assert tasks == []
        return
    finding = got[0]
    assert [e["msgid"] for e in finding.evidence] == [ad] and finding.evidence[0]["text"] == "高收益理财项目，稳赚不赔"
    assert finding.actions == ["owner_task", "blacklist"]
    task = db.get(Task, finding.task_id)
    assert task is not None and task.kind == "group_removal" and task.account_id == room.group.owner_account_id
    assert "金万家郑州中心创富孵化群01" in task.detail and "高收益理财项目" in task.detail
    customer = db.get(Customer, task.customer_id)
    assert customer is not None and customer.wecom_external_userid == "wmspammer"


def test_an_ad_that_has_not_reached_its_deadline_waits_and_is_decided_by_a_later_run(db: Session, room: Room) -> None:
    rule(db, AD)
    room.post("wmspammer", NOW - timedelta(seconds=60), "weapp", {"title": "领取优惠券", "displayname": "某商城"})
    assert run(db).created == [] and service.cursor_row(db).pending
    assert len(run(db, NOW + timedelta(minutes=5)).created) == 1  # no new message: the pending group is re-read


@pytest.mark.parametrize("sender", ["zz.owner", "zz.admin", "zz.colleague"])
def test_an_ad_by_the_owner_an_admin_or_a_whitelisted_colleague_is_no_finding(
        db: Session, room: Room, sender: str) -> None:
    rule(db, AD)
    service.add_whitelisted(db, userid="zz.colleague", note="群客服", viewer=SYSTEM)
    db.commit()
    room.post(sender, NOW - timedelta(minutes=30), "link", link())
    run(db)
    assert findings(db) == []


def test_the_same_archive_message_pulled_twice_makes_one_finding_and_one_task(db: Session, room: Room) -> None:
    rule(db, AD)
    t = NOW - timedelta(minutes=30)
    room.post("wmspammer", t, "card", {"corpname": "某公司", "userid": "wmspammer"}, msgid="dup-1")
    run(db)
    room.post("wmspammer", t, "card", {"corpname": "某公司", "userid": "wmspammer"}, msgid="dup-1")  # pulled again
    service.cursor_row(db).message_id = 0  # and read again from the start
    run(db)
    assert len(findings(db)) == 1
    assert db.scalar(select(func.count()).select_from(GroupMessage)) == 1
    assert db.scalar(select(func.count()).select_from(Task)) == 1
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "moderate")) == 1


def test_actions_are_graduated_warn_then_removal_task_then_blacklist_and_the_admin(db: Session, room: Room) -> None:
    rule(db, STICKERS)
    t = NOW - timedelta(hours=3)
    for burst in range(3):
        for n in range(3):
            room.post("wmspammer", t + timedelta(minutes=burst * 30, seconds=n), "emotion", {"type": 1})
        room.post("wmquiet", t + timedelta(minutes=burst * 30 + 1), "text", {"content": "哈哈"})
    run(db)
    got = findings(db)
    assert [(f.offence, f.actions) for f in got] == [(1, ["warn"]), (2, ["owner_task"]),
                                                     (3, ["owner_task", "blacklist", "notify_admin"])]
    kinds = sorted(t.kind for t in db.scalars(select(Task)))
    assert kinds == ["group_removal", "group_warn"]  # one removal task a day: the third finding reuses it
    warn = next(t for t in db.scalars(select(Task)) if t.kind == "group_warn")
    # the member's group nickname and the account's name, never a remark name
    assert "@小李+郑州+销售 请不要连续发表情（郑州中心）" in warn.detail
    assert got[2].admin_notified
    entry = db.scalars(select(BlacklistEntry)).one()
    assert entry.userid == "wmspammer" and entry.status == "active"


def test_every_finding_is_on_the_members_timeline_and_in_the_audit_log(db: Session, room: Room) -> None:
    rule(db, AD)
    room.post("wmspammer", NOW - timedelta(minutes=30), "link", link())
    run(db)
    finding = findings(db)[0]
    touch = db.scalars(select(Touch).where(Touch.customer_id == finding.customer_id,
                                           Touch.kind == "system")).all()
    moderation = [t for t in touch if (t.details or {}).get("event") == "group_moderation"]
    assert len(moderation) == 1 and "高收益理财项目" in moderation[0].content
    actions = {a for (a,) in db.execute(select(AuditEntry.action).where(AuditEntry.entity_type.in_(
        ["group_finding", "group_blacklist"])))}
    assert {"moderate", "blacklist"} <= actions


def test_a_blacklisted_customer_joining_another_group_is_refused_at_intake_and_flagged_to_its_owner(
        db: Session, make: Factory, room: Room, client: TestClient, admin_headers: dict[str, str]) -> None:
    rule(db, AD)
    room.post("wmspammer", NOW - timedelta(minutes=30), "link", link())
    run(db)
    check = client.post("/api/v1/group-blacklist/check", json={"userids": ["wmspammer", "wmquiet"]},
                        headers=admin_headers)
    assert check.status_code == 200 and check.json() == {"refused": ["wmspammer"]}
    entry = db.scalars(select(BlacklistEntry).where(BlacklistEntry.userid == "wmspammer")).one()
    entry.created_at = datetime(2026, 12, 4, 17, 30, tzinfo=UTC)  # 5 December, 01:30 in Asia/Shanghai
    db.commit()
    other_owner = make.account(display_name="洛阳中心", wecom_userid="ly.owner")
    other = Room(db, other_owner, "wrROOM02", members=[("wmquiet", "老王+郑州+教师")])
    detail = {"chat_id": "wrROOM02", "name": other.group.name, "owner": "ly.owner",
              "member_list": [{"userid": "ly.owner", "type": 1}, {"userid": "wmquiet", "type": 2},
                              {"userid": "wmspammer", "type": 2, "group_nickname": "小李"}]}
    groups_service.apply_group_chat(db, detail, at=datetime.now(UTC) + timedelta(seconds=1))
    db.commit()
    run(db)
    flagged = [f for f in findings(db) if f.rule_kind == "blacklist_join"]
    assert len(flagged) == 1 and flagged[0].group_chat_id == other.group.id
    said = " ".join(str(e.get("text", "")) for e in flagged[0].evidence)
    assert "2026-12-05" in said and "2026-12-04" not in said  # the local day it was blacklisted
    task = db.get(Task, flagged[0].task_id)
    assert task is not None and task.kind == "group_flag" and task.account_id == other_owner.id
    run(db)  # the job again: no second flag
    assert len([f for f in findings(db) if f.rule_kind == "blacklist_join"]) == 1


def test_a_pardon_takes_the_member_off_the_blacklist_closes_the_task_and_is_on_the_timeline(
        db: Session, room: Room, client: TestClient, admin_headers: dict[str, str], make: Factory,
        token_for: Any) -> None:
    rule(db, AD)
    room.post("wmspammer", NOW - timedelta(minutes=30), "link", link())
    run(db)
    finding = findings(db)[0]
    entry = db.scalars(select(BlacklistEntry)).one()
    appeal = client.post(f"/api/v1/group-blacklist/{entry.id}/appeal", json={"text": "我是来分享公众号文章的"},
                         headers=admin_headers)
    assert appeal.status_code == 200 and appeal.json()["status"] == "appealed"
    planner = make.user("planner")
    refused = client.post(f"/api/v1/group-findings/{finding.id}/pardon", json={"reason": "误会"},
                          headers=token_for(planner))
    assert refused.status_code == 403 and refused.json()["detail"] == "只有管理员可以赦免"
    answer = client.post(f"/api/v1/group-findings/{finding.id}/pardon", json={"reason": "初犯，已道歉"},
                         headers=admin_headers)
    assert answer.status_code == 200 and answer.json()["status"] == "pardoned"
    db.expire_all()
    assert db.get(BlacklistEntry, entry.id).status == "pardoned"  # type: ignore[union-attr]
    assert db.get(Task, finding.task_id).status == "skipped"  # type: ignore[union-attr]
    assert service.refused(db, ["wmspammer"]) == set()
    events = [(t.details or {}).get("event") for t in db.scalars(select(Touch).where(
        Touch.customer_id == finding.customer_id))]
    assert "group_pardon" in events
    again = client.post(f"/api/v1/group-findings/{finding.id}/pardon", json={"reason": "x"}, headers=admin_headers)
    assert again.status_code == 422 and again.json()["detail"] == "这条违规记录已经处理过了"


def test_false_positive_feedback_is_counted_per_rule(db: Session, room: Room, client: TestClient,
                                                     admin_headers: dict[str, str]) -> None:
    ad = rule(db, AD)
    room.post("wmspammer", NOW - timedelta(minutes=30), "link", link("我们公司的官方公众号文章"))
    run(db)
    finding = findings(db)[0]
    answer = client.post(f"/api/v1/group-findings/{finding.id}/false-positive", json={"note": "自家公众号"},
                         headers=admin_headers)
    assert answer.status_code == 200 and answer.json()["status"] == "false_positive"
    rules = client.get("/api/v1/group-rules", headers=admin_headers).json()
    assert [(r["id"], r["findings"], r["false_positives"]) for r in rules] == [(ad.id, 1, 1)]


def test_a_dry_run_reports_what_a_draft_rule_would_find_and_stores_no_finding(
        db: Session, room: Room, client: TestClient, admin_headers: dict[str, str]) -> None:
    data = {**AD, "status": "draft"}
    created = client.post("/api/v1/group-rules", json=data, headers=admin_headers)
    assert created.status_code == 201, created.text
    for day in range(3):
        room.post("wmspammer", datetime.now(UTC) - timedelta(days=day, hours=1), "link", link())
    run(db)
    assert findings(db) == []  # a draft rule does not act
    answer = client.post(f"/api/v1/group-rules/{created.json()['id']}/dry-run", json={"days": 7},
                         headers=admin_headers)
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert (summary["findings"], summary["members"], summary["groups"]) == (3, 1, 1)
    assert summary["samples"][0]["text"] == "高收益理财项目，稳赚不赔"
    assert findings(db) == []
    bad = client.post(f"/api/v1/group-rules/{created.json()['id']}/dry-run", json={"days": 90},
                      headers=admin_headers)
    assert bad.status_code == 422


def test_rules_with_bad_input_are_refused_with_a_clear_message(client: TestClient,
                                                               admin_headers: dict[str, str]) -> None:
    cases = [({**AD, "kind": "kick"}, "未知的群规类型 kick"),
             ({**AD, "params": {"minutes": "abc"}}, "minutes 必须是数字"),
             ({**AD, "params": {"min_people": 500}}, "min_people 必须在 1 到 100 之间"),
             ({**AD, "ladder": [["kick_out"]]}, "未知的处理 kick_out"),
             ({**AD, "group_kind": "vip"}, "未知的群类型 vip"),
             ({**STICKERS, "warn_text": "{备注名} 请注意"}, "{备注名}"),
             ({"name": "昵称", "kind": "nickname", "params": {"pattern": "(a+)+$"}}, "这个格式不能使用"),
             ({"name": "违禁", "kind": "banned_words", "params": {"words": []}}, "请至少填写一个词")]
    for body, message in cases:
        answer = client.post("/api/v1/group-rules", json=body, headers=admin_headers)
        assert answer.status_code == 422, body
        assert message in answer.json()["detail"], answer.json()


def test_a_banned_word_list_of_5000_words_is_saved_and_matches(db: Session, room: Room, client: TestClient,
                                                               admin_headers: dict[str, str]) -> None:
    words = [f"敏感话题{n:04d}" for n in range(5000)]
    answer = client.post("/api/v1/group-rules", json={"name": "违禁话题", "kind": "banned_words", "status": "live",
                                                      "params": {"words": words}, "ladder": [["warn"]]},
                         headers=admin_headers)
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["params"]["words"]) == 5000
    room.post("wmquiet", NOW - timedelta(minutes=5), "text", {"content": "大家聊聊敏感话题4321吧"})
    room.post("wmquiet", NOW - timedelta(minutes=4), "text", {"content": "正常聊天"})
    run(db)
    got = findings(db)
    assert len(got) == 1 and got[0].detail["words"] == ["敏感话题4321"]
    audit = db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "group_rule")).one()
    assert audit.after is not None and audit.after["params"]["words"] == 5000  # the count, not the list


def test_a_nickname_with_emoji_and_spaces_passes_and_one_without_the_parts_is_found(
        db: Session, owner: Any) -> None:
    rule(db, {"name": "群昵称：名称+地区+职业", "kind": "nickname", "params": {"parts": 3}, "status": "live",
              "ladder": [["warn"]], "warn_text": "@{称呼} 请把群昵称改成 名称+地区+职业"})
    room = Room(db, owner, "wrNICK01", members=[("wmgood", "🌸 小美 杭州 宝妈 🌸"), ("wmbad", "🌸🌸小美🌸")])
    room.post("wmgood", NOW - timedelta(minutes=5))
    room.post("wmbad", NOW - timedelta(minutes=4))
    room.post("wmbad", NOW - timedelta(minutes=3))
    run(db)
    got = findings(db)
    assert [(f.member_userid, f.detail["nickname"]) for f in got] == [("wmbad", "🌸🌸小美🌸")]


def test_a_personal_groups_chat_export_is_moderated_and_importing_it_twice_adds_nothing(
        db: Session, owner: Any, client: TestClient, admin_headers: dict[str, str]) -> None:
    rule(db, AD)
    group = groups_service.apply_group_chat(db, {"chat_id": "personal:001", "name": "宝妈交流群（个人号）",
                                                 "owner": owner.wecom_userid}, at=NOW)
    db.commit()
    export = ("2026-12-04 10:00:00 小李\n[链接] 免费领取理财课程\n"
              "2026-12-04 10:02:00 老王\n大家好\n"
              "2026-12-04 10:30:00 小张\n[链接] 我们店的新品\n"
              "2026-12-04 10:31:00 小张\n[红包]\n"
              "2026-12-04 11:00:00 老王\n今天的课很好\n").encode()
    first = client.post(f"/api/v1/groups/{group.id}/chat-export", files={"file": ("群聊.txt", export)},
                        headers=admin_headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"messages": 5, "new_messages": 5, "findings": 1}  # 小张 sent a red packet (no amount)
    again = client.post(f"/api/v1/groups/{group.id}/chat-export", files={"file": ("群聊.txt", export)},
                        headers=admin_headers)
    assert again.json() == {"messages": 5, "new_messages": 0, "findings": 0}
    finding = findings(db)[0]
    assert finding.member_userid == "小李" and finding.evidence[0]["text"] == "[链接] 免费领取理财课程"
    empty = client.post(f"/api/v1/groups/{group.id}/chat-export", files={"file": ("x.txt", b"  ")},
                        headers=admin_headers)
    assert empty.status_code == 422 and empty.json()["detail"] == "文件是空的"


def test_operators_see_only_the_findings_of_their_groups_and_cannot_edit_rules(
        db: Session, make: Factory, room: Room, client: TestClient, token_for: Any) -> None:
    rule(db, AD)
    room.post("wmspammer", NOW - timedelta(minutes=30), "link", link())
    run(db)
    mine = make.account(display_name="别的中心", wecom_userid="other.owner")
    other = Room(db, mine, "wrROOM09", members=[("wmx", "甲+乙+丙")])
    operator = make.user("operator", accounts=[mine])
    headers = token_for(operator)
    hidden = client.get(f"/api/v1/groups/{room.group.id}/findings", headers=headers)
    assert hidden.status_code == 404
    own = client.get(f"/api/v1/groups/{other.group.id}/findings", headers=headers)
    assert own.status_code == 200 and own.json()["items"] == []
    assert service.list_findings(db, flt=service.FindingFilter(), viewer=viewer_of(operator)).items == []
    finding = findings(db)[0]
    assert client.post(f"/api/v1/group-findings/{finding.id}/false-positive", json={},
                       headers=headers).status_code == 404
    assert client.get("/api/v1/group-blacklist", headers=headers).json() == []  # another account's member
    entry = db.scalars(select(BlacklistEntry)).one()
    assert client.post(f"/api/v1/group-blacklist/{entry.id}/appeal", json={"text": "x"},
                       headers=headers).status_code == 404
    refused = client.post("/api/v1/group-rules", json=AD, headers=headers)
    assert refused.status_code == 403 and refused.json()["detail"] == "只有管理员和策划可以管理群规"
    console = Console(client).login(operator)
    page = console.get("/groups/findings")
    assert page.status_code == 200 and 'data-testid="finding"' not in page.text
    rules_page = console.get("/groups/rules")
    assert rules_page.status_code == 200 and 'data-testid="rule-form"' not in rules_page.text  # read-only
    assert console.post("/groups/rules", {"name": "x", "kind": "ad"}).status_code == 403
    assert console.get(f"/groups/findings?group_id={room.group.id}").status_code == 404


def test_the_findings_api_lists_rule_evidence_message_ids_and_action(
        db: Session, room: Room, client: TestClient, admin_headers: dict[str, str]) -> None:
    ad = rule(db, AD)
    msgid = room.post("wmspammer", NOW - timedelta(minutes=30), "link", link())
    run(db)
    answer = client.get(f"/api/v1/groups/{room.group.id}/findings", headers=admin_headers)
    assert answer.status_code == 200
    item = answer.json()["items"][0]
    assert (item["rule_id"], item["rule_name"], item["evidence_message_ids"], item["actions"]) == (
        ad.id, "广告须发红包", [msgid], ["owner_task", "blacklist"])
    assert item["task_id"] is not None and item["member_userid"] == "wmspammer"
    assert client.get(f"/api/v1/groups/{room.group.id}/findings", params={"cursor": "!!"},
                      headers=admin_headers).status_code == 422
    assert client.get("/api/v1/groups/999999/findings", headers=admin_headers).status_code == 404


def test_the_console_pages_edit_a_rule_dry_run_it_and_show_findings_blacklist_and_wecom_settings(
        db: Session, room: Room, client: TestClient, admin: Any) -> None:
    console = Console(client).login(admin)
    saved = console.post("/groups/rules", {"name": "广告须发红包", "kind": "ad", "status": "draft", "minutes": "3",
                                           "min_yuan": "50", "min_people": "20",
                                           "ladder": "owner_task,blacklist\n"})
    assert saved.status_code == 303, saved.text
    rule_id = int(saved.headers["location"].rsplit("/", 1)[1])
    bad = console.post("/groups/rules", {"name": "坏", "kind": "ad", "minutes": "999"})
    assert bad.status_code == 422 and "minutes 必须在 0.5 到 60 之间" in bad.text
    room.post("wmspammer", datetime.now(UTC) - timedelta(hours=2), "link", link())
    assert console.post(f"/groups/rules/{rule_id}/dry-run", {"days": "7"}).status_code == 303
    page = console.get(f"/groups/rules/{rule_id}")
    assert 'data-testid="dry-run"' in page.text and "高收益理财项目" in page.text
    assert console.post(f"/groups/rules/{rule_id}/status", {"status": "live"}).status_code == 303
    run(db, datetime.now(UTC))
    listed = console.get("/groups/findings")
    assert listed.status_code == 200 and listed.text.count('data-testid="finding"') == 1
    assert "高收益理财项目" in listed.text and "/groups/rules" in listed.text
    assert 'data-testid="blacklist-row"' in console.get("/groups/blacklist").text
    wecom = console.get("/groups/rules/wecom")
    assert wecom.status_code == 200 and "防骚扰" in wecom.text and "广告须发红包" in wecom.text
    home = console.get("/groups")
    assert 'href="/groups/rules"' in home.text and 'href="/groups/blacklist"' in home.text


def test_the_demo_has_the_seeds_rules_and_catches_an_ad_without_a_red_packet_with_the_owners_task(
        demo: Any, session: Session) -> None:  # noqa: F811
    from siyu.groups.moderation.demo import GROUP_NAME, SEED_RULES

    assert sorted(r.name for r in session.scalars(select(ModerationRule))) == sorted(r["name"] for r in SEED_RULES)
    group = session.scalars(select(GroupChat).where(GroupChat.name == GROUP_NAME)).one()
    found = list(session.scalars(select(ModerationFinding).where(ModerationFinding.group_chat_id == group.id)))
    ads = [f for f in found if f.rule_kind == "ad"]
    assert len(ads) == 1 and ads[0].evidence[0]["text"] == "日赚300元，宝妈在家就能做"  # the paid-for ad passed
    task = session.get(Task, ads[0].task_id)
    assert task is not None and task.kind == "group_removal" and "日赚300元" in task.detail
    assert [f.detail["nickname"] for f in found if f.rule_kind == "nickname"] == ["陈先生"]
