"""Groups that are run, not just listed (issue 22): the registry and naming templates, capacity, member roles,
personal-WeChat groups (by hand and CSV import), 群活码 rotation and its full-groups alert, the daily health
snapshot, the customer's groups in the portrait and as a segment condition, and role scoping.

The simulator end-to-end test runs the simulated WeCom in-process over HTTP: the group code is created
through ``groupchat/add_join_way``, customers scan it, the change_external_chat callbacks reach
/wecom/callback, Siyu reads ``groupchat/get`` (whose member_list carries the code's ``state``) and
attributes the joiners to the code and its channel."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.errors import Invalid
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from siyu.groups import codes, health, registry, service
from siyu.groups.models import (
    GroupChat,
    GroupDaySnapshot,
    GroupMember,
    GroupMessage,
    GroupOwnerDayStat,
    GroupTask,
)
from siyu.segments import compiler
from siyu.segments import schemas as seg
from siyu.simulator.callbacks import chat_created, chat_members_changed
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.errors import ApiError
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom.client import client_for
from tests.conftest import Factory, viewer_of
from tests.test_pages import Console
from tests.test_wecom_callback import AES_KEY, CORP_ID, TOKEN, post

SECRET = "groups-run-secret-0123456789"
NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)  # noon in China


def chat(db: Session, chat_id: str, *, owner: str, members: list[tuple[str, int]], name: str = "",
         admins: tuple[str, ...] = (), at: datetime | None = None) -> GroupChat:
    """A WeCom group as groupchat/get would describe it, applied through the sync."""
    detail = {"chat_id": chat_id, "name": name or chat_id, "owner": owner, "create_time": 1_760_000_000,
              "admin_list": [{"userid": a} for a in admins],
              "member_list": [{"userid": u, "type": t, "join_time": 1_760_000_000, "join_scene": 1,
                               "name": u, "group_nickname": ""} for u, t in [(owner, 1), *members]]}
    group = service.apply_group_chat(db, detail, at=at)
    db.commit()
    return group


def externals(n: int, prefix: str = "wm") -> list[tuple[str, int]]:
    return [(f"{prefix}{i:05d}", 2) for i in range(n)]


# ---------------------------------------------------------------- registry, naming, capacity, roles


def test_a_naming_template_numbers_groups_and_lists_the_misnamed_with_their_expected_name(
        db: Session, make: Factory) -> None:
    owner = make.account(wecom_userid="owner.zz")
    template = registry.save_template(db, data=registry.TemplateIn(
        name="孵化群", pattern="{品牌}{城市}中心创富孵化群{编号}", brand="金万家", kind="marketing", tier="孵化群"),
        viewer=SYSTEM)
    good = chat(db, "wrGOOD", owner="owner.zz", members=externals(3), name="金万家郑州中心创富孵化群7")
    bad = chat(db, "wrBAD", owner="owner.zz", members=externals(3, "wo"), name=" 😀 郑州 孵化 群 ")
    for group in (good, bad):
        registry.update_registry(db, group=group, data=registry.RegistryIn(
            kind="marketing", tier="孵化群", region="郑州", naming_template_id=template.id), viewer=SYSTEM)
    db.commit()
    assert good.number == 7  # the number its name already carries
    assert bad.number == 8 and template.next_number == 9  # the next one
    figures = registry.figures(db, [good, bad])
    assert figures[good.id].expected_name == good.name
    assert figures[bad.id].expected_name == "金万家郑州中心创富孵化群8"
    assert [(g.id, want) for g, want in registry.misnamed(db, viewer=SYSTEM)] == [(bad.id, "金万家郑州中心创富孵化群8")]
    assert owner.id == good.owner_account_id

    with pytest.raises(Invalid):
        registry.check_pattern("{品牌}{城市}群")  # no {编号}: two groups would share a name
    with pytest.raises(Invalid):
        registry.check_pattern("{品牌}{区县}群{编号}")  # an unknown variable


def test_capacity_is_200_with_wechat_members_500_for_wecom_only_and_warns_at_90_percent(
        db: Session, make: Factory) -> None:
    make.account(wecom_userid="owner.cap")
    staff_only = chat(db, "wrSTAFF", owner="owner.cap", members=[("colleague.a", 1), ("colleague.b", 1)])
    nearly = chat(db, "wrNEARLY", owner="owner.cap", members=externals(179))
    figures = registry.figures(db, [staff_only, nearly])
    assert figures[staff_only.id].capacity == registry.WECOM_CAPACITY_WECOM_ONLY == 500
    assert figures[nearly.id].capacity == registry.WECOM_CAPACITY_WITH_WECHAT == 200
    assert nearly.member_count == 180 and figures[nearly.id].utilisation == 90 and figures[nearly.id].warn
    assert not figures[staff_only.id].warn


def test_roles_follow_owner_admins_and_group_service_and_a_hand_given_partner_stays_through_a_sync(
        db: Session, make: Factory) -> None:
    make.account(wecom_userid="owner.r")
    group = chat(db, "wrROLES", owner="owner.r", members=[("admin.r", 1), ("staff.r", 1), ("cs.r", 1),
                                                           *externals(2)], admins=("admin.r",))
    registry.update_registry(db, group=group, data=registry.RegistryIn(service_userids=["cs.r"]), viewer=SYSTEM)
    partner = db.scalar(select(GroupMember).where(GroupMember.userid == "wm00000"))
    assert partner is not None
    registry.set_member_role(db, group=group, member_id=partner.id, role="partner", viewer=SYSTEM)
    db.commit()
    chat(db, "wrROLES", owner="owner.r", members=[("admin.r", 1), ("staff.r", 1), ("cs.r", 1), *externals(3)],
         admins=("admin.r",))
    roles = dict(db.execute(select(GroupMember.userid, GroupMember.role).where(
        GroupMember.group_chat_id == group.id)).all())
    assert roles == {"owner.r": "owner", "admin.r": "admin", "staff.r": "colleague", "cs.r": "service",
                     "wm00000": "partner", "wm00001": "member", "wm00002": "member"}
    with pytest.raises(Invalid):
        registry.set_member_role(db, group=group, member_id=partner.id, role="owner", viewer=SYSTEM)


def test_a_member_nickname_with_emoji_and_spaces_is_kept_and_shown_escaped(db: Session, make: Factory,
                                                                          client: TestClient, admin: Any) -> None:
    make.account(wecom_userid="owner.e")
    detail = {"chat_id": "wrEMOJI", "name": "🌸 茶友 <b>群</b>", "owner": "owner.e", "member_list": [
        {"userid": "owner.e", "type": 1, "join_time": 1_760_000_000},
        {"userid": "wmEMOJI", "type": 2, "join_time": 1_760_000_000, "name": "  小 🍵 雨  ",
         "group_nickname": "🍵 小雨 郑州 会计 "}]}
    group = service.apply_group_chat(db, detail)
    db.commit()
    member = db.scalar(select(GroupMember).where(GroupMember.userid == "wmEMOJI"))
    assert member is not None and member.group_nickname == "🍵 小雨 郑州 会计" and member.name == "小 🍵 雨"
    page = Console(client).login(admin).get(f"/groups/{group.id}")
    assert page.status_code == 200 and "🍵 小雨 郑州 会计" in page.text
    assert "<b>群</b>" not in page.text and "&lt;b&gt;群&lt;/b&gt;" in page.text


# ---------------------------------------------------------------- personal WeChat groups


def test_a_personal_group_is_registered_by_hand_and_a_bad_csv_imports_nothing_with_row_and_column(
        db: Session, make: Factory, client: TestClient, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None, display_name="小野个人号")
    console = Console(client).login(admin)
    answer = console.post("/groups/personal", {"name": "金万家郑州中心金粉群", "owner_account_id": str(account.id),
                                               "kind": "marketing", "tier": "金粉群", "member_count": "480"})
    assert answer.status_code == 303
    group = db.scalar(select(GroupChat).where(GroupChat.name == "金万家郑州中心金粉群"))
    assert group is not None and group.platform == "personal" and group.member_count == 480
    assert registry.figures(db, [group])[group.id].capacity == registry.WECHAT_GROUP_CAPACITY
    assert console.post("/groups/personal", {"name": "", "owner_account_id": str(account.id)}).status_code == 422

    bad = "群名称,群主账号,类型,人数\n金万家郑州中心创富孵化群1,小野个人号,营销型,120\n坏群,没有这个号,营销型,abc\n"
    answer = console.post("/groups/personal/import", {}, files={"file": ("groups.csv", bad.encode(), "text/csv")})
    assert answer.status_code == 422
    assert "第 3 行" in answer.text or "3" in answer.text
    assert "群主账号" in answer.text and "人数" in answer.text
    assert db.scalar(select(func.count()).select_from(GroupChat).where(GroupChat.platform == "personal")) == 1

    good = "群名称,群主账号,类型,层级,城市\n金万家郑州中心创富孵化群1,小野个人号,营销型,孵化群,郑州\n"
    answer = console.post("/groups/personal/import", {}, files={"file": ("groups.csv", good.encode(), "text/csv")})
    assert answer.status_code == 303
    imported = db.scalar(select(GroupChat).where(GroupChat.name == "金万家郑州中心创富孵化群1"))
    assert imported is not None and imported.kind == "marketing" and imported.region == "郑州"


def test_a_personal_groups_qr_image_expires_after_7_days_and_raises_one_renewal_task(
        db: Session, make: Factory) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    group = registry.register_personal(db, data=registry.PersonalGroupIn(name="茶友群", owner_account_id=account.id),
                                       viewer=SYSTEM)
    db.commit()
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    image = codes.upload_qr(db, group=group, stream=io.BytesIO(png), viewer=SYSTEM, made_at=NOW)
    db.commit()
    assert image.expires_at == NOW + timedelta(days=codes.QR_VALID_DAYS)
    assert codes.renewal_tasks(db, now=NOW + timedelta(days=5)) == 0
    assert codes.renewal_tasks(db, now=NOW + timedelta(days=6, hours=1)) == 1
    assert codes.renewal_tasks(db, now=NOW + timedelta(days=6, hours=2)) == 0  # raised once
    task = db.scalar(select(GroupTask).where(GroupTask.kind == "renew_qr"))
    assert task is not None and task.group_chat_id == group.id and task.account_id == account.id
    with pytest.raises(Invalid):
        codes.upload_qr(db, group=group, stream=io.BytesIO(b"GIF89a"), viewer=SYSTEM)


# ---------------------------------------------------------------- 群活码


def test_a_group_code_moves_on_before_a_group_is_full_and_alerts_when_all_are_full_without_auto_create(
        db: Session, make: Factory) -> None:
    make.account(wecom_userid="owner.gc")
    first = chat(db, "wrFIRST", owner="owner.gc", members=externals(170))
    second = chat(db, "wrSECOND", owner="owner.gc", members=externals(10, "wo"))
    code = codes.save_code(db, data=codes.GroupCodeIn(name="郑州门店码", group_ids=[first.id, second.id]),
                           viewer=SYSTEM)
    db.commit()
    assert code.chat_ids == ["wrFIRST", "wrSECOND"] and code.state.startswith("gc") and code.alert == ""

    chat(db, "wrFIRST", owner="owner.gc", members=externals(180))  # 181 of 200: past 90 %
    db.refresh(code)
    assert code.chat_ids == ["wrSECOND"]
    chat(db, "wrSECOND", owner="owner.gc", members=externals(185, "wo"))
    db.refresh(code)
    assert code.alert == "all_full" and code.chat_ids == ["wrSECOND"]  # the platform keeps its last config
    tasks = db.scalars(select(GroupTask).where(GroupTask.kind == "codes_full")).all()
    assert len(tasks) == 1 and tasks[0].group_code_id == code.id

    auto = codes.save_code(db, data=codes.GroupCodeIn(name="自动建群码", group_ids=[first.id, second.id],
                                                      auto_create=True, room_base_name="金万家郑州中心创富孵化群",
                                                      room_base_id=3), viewer=SYSTEM)
    db.commit()
    assert auto.alert == ""  # WeCom creates the next group itself
    with pytest.raises(Invalid):
        codes.save_code(db, data=codes.GroupCodeIn(name="缺前缀", group_ids=[first.id], auto_create=True),
                        viewer=SYSTEM)


def test_a_dismissed_group_leaves_its_codes_rotation_and_cannot_be_put_in_a_code(db: Session, make: Factory,
                                                                                  client: TestClient,
                                                                                  admin: Any) -> None:
    make.account(wecom_userid="owner.d")
    one = chat(db, "wrONE", owner="owner.d", members=externals(5))
    two = chat(db, "wrTWO", owner="owner.d", members=externals(5, "wo"))
    code = codes.save_code(db, data=codes.GroupCodeIn(name="码", group_ids=[one.id, two.id]), viewer=SYSTEM)
    db.commit()
    service.dismiss_group_chat(db, "wrONE")
    db.commit()
    db.refresh(code)
    assert code.chat_ids == ["wrTWO"]
    with pytest.raises(Invalid):
        codes.save_code(db, data=codes.GroupCodeIn(name="码2", group_ids=[one.id]), viewer=SYSTEM)
    page = Console(client).login(admin).get(f"/groups/{one.id}")
    assert page.status_code == 200 and 'data-testid="registry-form"' not in page.text


def test_the_client_refuses_more_than_five_groups_and_the_simulator_a_state_over_30(db: Session) -> None:
    corp = VirtualCorp.seeded(3, corp_id=CORP_ID, contacts_per_member=3, groups_per_member=2, salt=0)
    chats = [c.chat_id for c in corp.state.group_chats]
    from siyu.wecom.client import _join_way_fields

    with pytest.raises(ValueError):
        _join_way_fields(chat_ids=chats[:6], state="s", remark="", auto_create=False, room_base_name="",
                         room_base_id=None)
    with pytest.raises(ApiError) as refused:
        corp.api_groupchat_add_join_way({"scene": 2, "chat_id_list": chats[:1], "state": "x" * 31})
    assert refused.value.errcode == 40058
    with pytest.raises(ApiError):
        corp.api_groupchat_add_join_way({"scene": 2, "chat_id_list": chats[:6], "state": "s"})


# ---------------------------------------------------------------- the simulator end to end


class Sim:
    def __init__(self, server: RunningServer, corp: VirtualCorp) -> None:
        self.server, self.corp = server, corp

    def control(self, operation: str, **body: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.server.url}/_simulator/{operation}", json=body)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture
def sim(database_url: str, db: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sim]:
    corp = VirtualCorp.seeded(7, corp_id=CORP_ID, contacts_per_member=12, groups_per_member=1, salt=0)
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


def deliver(client: TestClient, change: dict[str, Any]) -> None:
    xml = chat_members_changed(CORP_ID, chat_id=change["chat_id"], create_time=change["create_time"], joined=True,
                               members=change["members"], scene=change["scene"],
                               last_version=change["last_version"], member_version=change["member_version"])
    assert post(client, xml).text == "success"


def test_simulator_group_code_join_adds_the_member_with_its_state_attributed_to_the_channel(
        sim: Sim, db: Session, client: TestClient, make: Factory) -> None:
    from siyu.channels.service import ChannelIn, save_channel

    owner = sim.corp.state.members[0].userid
    seeded = next(c for c in sim.corp.state.group_chats if c.owner == owner)
    for c in sim.corp.state.group_chats:  # Siyu knows the corp's groups
        service.apply_group_chat(db, client_for(db).group_chat(c.chat_id))
    db.commit()
    group = service.get_by_chat_id(db, seeded.chat_id)
    assert group is not None
    assert group.owner_account_id is not None
    channel = save_channel(db, data=ChannelIn(name="郑州地推", kind="offline_event",
                                              account_ids=[group.owner_account_id]), viewer=SYSTEM)
    db.commit()
    code = codes.save_code(db, data=codes.GroupCodeIn(name="郑州地推群码", group_ids=[group.id], channel_id=channel.id,
                                                      auto_create=True, room_base_name="金万家郑州中心创富孵化群",
                                                      room_base_id=2), viewer=SYSTEM)
    db.commit()  # the WeCom config is made after the commit (jobs run at once in tests)
    db.refresh(code)
    assert code.state == channel.key and code.wecom_config_id and code.qr_url
    way = sim.corp.api_groupchat_get_join_way({"config_id": code.wecom_config_id})["join_way"]
    assert way["chat_id_list"] == [seeded.chat_id] and way["state"] == channel.key and way["scene"] == 2

    outside = [c.external_userid for c in sim.corp.state.contacts
               if c.external_userid not in {m.userid for m in seeded.members}]
    scanned = sim.control("scan_join_way", config_id=code.wecom_config_id, external_userids=outside[:2])
    assert not scanned["full"] and [c["scene"] for c in scanned["changes"]] == [3, 3]
    for change in scanned["changes"]:
        deliver(client, change)
    db.expire_all()
    joined = db.scalars(select(GroupMember).where(GroupMember.userid.in_(outside[:2]))).all()
    assert len(joined) == 2 and {m.state for m in joined} == {channel.key} and {m.join_scene for m in joined} == {3}
    assert codes.joins_by_group(db, code=code) == {group.id: 2}

    # The simulated group fills (the test lowers the platform's 200): WeCom auto-creates the next group, which
    # joins the code's rotation in Siyu once its callback arrives.
    sim.corp.chat_capacity_with_wechat = len(seeded.members)
    more = sim.control("scan_join_way", config_id=code.wecom_config_id, external_userids=outside[2:3])
    assert len(more["created"]) == 1 and more["changes"][0]["chat_id"] == more["created"][0]
    assert post(client, chat_created(CORP_ID, chat_id=more["created"][0], create_time=int(time.time()))).text \
        == "success"
    deliver(client, more["changes"][0])
    db.expire_all()
    new_group = service.get_by_chat_id(db, more["created"][0])
    assert new_group is not None and new_group.name == "金万家郑州中心创富孵化群2"
    db.refresh(code)
    assert new_group.id in code.group_ids
    assert codes.joins_by_group(db, code=code)[new_group.id] == 1

    # auto-create off and everyone full: the customer is turned away, as on the platform
    sim.corp.api_groupchat_update_join_way({"config_id": code.wecom_config_id, "scene": 2,
                                            "chat_id_list": [seeded.chat_id], "auto_create_room": 0,
                                            "state": code.state})
    refused = sim.control("scan_join_way", config_id=code.wecom_config_id, external_userids=outside[3:4])
    assert refused["full"] and refused["refused"] == outside[3:4]


def test_simulator_group_statistics_answer_by_day_and_refuse_today(sim: Sim, db: Session) -> None:
    api = client_for(db)
    owner = sim.corp.state.members[0].userid
    today = datetime.now(UTC).astimezone(get_settings_zone()).date()
    for c in sim.corp.state.group_chats:
        service.apply_group_chat(db, api.group_chat(c.chat_id))
    db.commit()
    written = health.pull_owner_stats(db, api=api, days=35)  # two calls: 30 days at most per call
    db.commit()
    assert written == 35 * len(sim.corp.state.members)
    row = db.scalar(select(GroupOwnerDayStat).where(GroupOwnerDayStat.owner_userid == owner,
                                                    GroupOwnerDayStat.day == today - timedelta(days=1)))
    assert row is not None and row.chat_total >= 1 and row.member_total >= 2
    midnight = int(datetime.combine(today, datetime.min.time(), tzinfo=get_settings_zone()).timestamp())
    with pytest.raises(ApiError) as refused:
        sim.corp.api_groupchat_statistic_group_by_day({"day_begin_time": midnight, "day_end_time": midnight,
                                                       "owner_filter": {"userid_list": [owner]}})
    assert refused.value.errcode == 600018


def get_settings_zone() -> Any:
    from siyu.core.settings import local_zone

    return local_zone()


# ---------------------------------------------------------------- health


def test_the_health_snapshot_flags_silent_and_dead_groups_and_raises_the_fans_resource_task(
        db: Session, make: Factory, client: TestClient, admin: Any) -> None:
    make.account(wecom_userid="owner.h")
    lively = chat(db, "wrLIVELY", owner="owner.h", members=externals(5), at=NOW - timedelta(days=30))
    quiet = chat(db, "wrQUIET", owner="owner.h", members=externals(5, "wo"), at=NOW - timedelta(days=30))
    gone = chat(db, "wrGONE", owner="owner.h", members=externals(5, "wx"), at=NOW - timedelta(days=30))
    leaking = chat(db, "wrLEAK", owner="owner.h", members=externals(5, "wy"), at=NOW - timedelta(days=30))
    fans = chat(db, "wrFANS", owner="owner.h", members=externals(120, "wf"), at=NOW - timedelta(days=30))
    for group in (lively, quiet, gone, leaking, fans):
        group.platform_created_at = NOW - timedelta(days=60)
    fans.fan_owned = True
    for n, (group, days) in enumerate([(lively, 1), (quiet, 8), (gone, 15), (leaking, 1), (fans, 2)]):
        db.add(GroupMessage(msgid=f"m{n}", chat_id=group.chat_id, group_chat_id=group.id, sender="wm00000",
                            sent_at=NOW - timedelta(days=days), text="早上好"))
    db.commit()
    chat(db, "wrLEAK", owner="owner.h", members=externals(2, "wy"), at=NOW - timedelta(days=2))  # 3 left, none joined

    result = health.snapshot(db, now=NOW)
    db.commit()
    states = dict(db.execute(select(GroupChat.chat_id, GroupChat.health)).all())
    assert states == {"wrLIVELY": "active", "wrQUIET": "silent", "wrGONE": "dead", "wrLEAK": "dead",
                      "wrFANS": "active"}
    assert (result.groups, result.silent, result.dead, result.tasks) == (5, 1, 2, 1)
    task = db.scalar(select(GroupTask).where(GroupTask.kind == "apply_resources"))
    assert task is not None and task.group_chat_id == fans.id

    again = health.snapshot(db, now=NOW)  # the same day again: replaced, not doubled; the task is not raised twice
    db.commit()
    assert again.tasks == 0
    assert db.scalar(select(func.count()).select_from(GroupDaySnapshot)) == 5
    snap = db.scalar(select(GroupDaySnapshot).where(GroupDaySnapshot.group_chat_id == leaking.id))
    assert snap is not None and snap.member_count == 3 and snap.health == "dead"

    console = Console(client).login(admin)
    page = console.get("/groups/health")
    assert page.status_code == 200
    assert page.text.count('data-testid="unhealthy-row"') == 3 and "盘点" in page.text and "唤醒" in page.text
    detail = console.get(f"/groups/{lively.id}")
    assert 'data-testid="health-chart"' in detail.text and "/static/vendor/echarts/echarts.min.js" in detail.text


def test_without_any_archived_message_only_the_leaving_rule_applies(db: Session, make: Factory) -> None:
    make.account(wecom_userid="owner.n")
    group = chat(db, "wrNOARCHIVE", owner="owner.n", members=externals(3), at=NOW - timedelta(days=40))
    group.platform_created_at = NOW - timedelta(days=40)
    db.commit()
    health.snapshot(db, now=NOW)
    db.commit()
    db.refresh(group)
    assert group.health == "active"


# ---------------------------------------------------------------- list, API, portrait, segments, scoping


def test_the_list_and_api_filter_by_kind_tier_and_health_and_carry_the_registry_fields(
        db: Session, make: Factory, client: TestClient, admin: Any, admin_headers: dict[str, str]) -> None:
    make.account(wecom_userid="owner.l")
    gold = chat(db, "wrGOLD", owner="owner.l", members=externals(3), name="金万家郑州中心金粉群")
    hatch = chat(db, "wrHATCH", owner="owner.l", members=externals(3, "wo"), name="孵化群")
    registry.update_registry(db, group=gold, data=registry.RegistryIn(kind="marketing", tier="金粉群"), viewer=SYSTEM)
    registry.update_registry(db, group=hatch, data=registry.RegistryIn(kind="knowledge", tier="孵化群"),
                             viewer=SYSTEM)
    hatch.health = "silent"
    db.commit()
    answer = client.get("/api/v1/groups", params={"kind": "marketing", "health": "active"}, headers=admin_headers)
    assert answer.status_code == 200
    items = answer.json()["items"]
    assert [i["id"] for i in items] == [gold.id]
    assert {k: items[0][k] for k in ("kind", "tier", "member_count", "capacity", "expected_name", "health")} == {
        "kind": "marketing", "tier": "金粉群", "member_count": 4, "capacity": 200, "expected_name": "",
        "health": "active"}
    silent = client.get("/api/v1/groups", params={"health": "silent"}, headers=admin_headers).json()["items"]
    assert [i["id"] for i in silent] == [hatch.id]
    assert client.get("/api/v1/groups", params={"kind": "nonsense"}, headers=admin_headers).status_code == 422

    page = Console(client).login(admin).get("/groups", params={"tier": "孵化群"})
    assert page.status_code == 200 and page.text.count('data-testid="group-row"') == 1 and "孵化群" in page.text
    assert Console(client).login(admin).get("/groups", params={"health": "zombie"}).status_code == 422


def test_an_operator_gets_404_for_another_accounts_group_code_and_registry(
        db: Session, make: Factory, client: TestClient, token_for: Any) -> None:
    mine, theirs = make.account(wecom_userid="owner.mine"), make.account(wecom_userid="owner.theirs")
    my_group = chat(db, "wrMINE", owner="owner.mine", members=externals(2))
    their_group = chat(db, "wrTHEIRS", owner="owner.theirs", members=externals(2, "wo"))
    code = codes.save_code(db, data=codes.GroupCodeIn(name="他们的码", group_ids=[their_group.id]), viewer=SYSTEM)
    db.commit()
    operator = make.user("operator", accounts=[mine])
    headers = token_for(operator)
    listed = client.get("/api/v1/groups", headers=headers).json()["items"]
    assert [i["id"] for i in listed] == [my_group.id]
    assert client.get(f"/api/v1/groups/{their_group.id}", headers=headers).status_code == 404
    assert client.get(f"/api/v1/group-codes/{code.id}", headers=headers).status_code == 404
    assert client.put(f"/api/v1/groups/{their_group.id}/registry", json={"kind": "marketing"},
                      headers=headers).status_code == 404
    console = Console(client).login(operator)
    assert console.get(f"/groups/{their_group.id}").status_code == 404
    assert console.get(f"/groups/codes/{code.id}").status_code == 404
    with pytest.raises(Invalid):
        codes.save_code(db, data=codes.GroupCodeIn(name="偷", group_ids=[their_group.id]), viewer=viewer_of(operator))
    assert theirs.id == their_group.owner_account_id


def test_the_customer_page_shows_their_groups_and_roles_and_a_segment_finds_them_by_group_kind(
        db: Session, make: Factory, client: TestClient, admin: Any) -> None:
    account = make.account(wecom_userid="owner.p")
    customer = make.customer(account, name="王雨欣")
    customer.wecom_external_userid = "wmPORTRAIT"
    db.commit()
    group = chat(db, "wrPORTRAIT", owner="owner.p", members=[("wmPORTRAIT", 2)], name="金万家郑州中心金粉群")
    registry.update_registry(db, group=group, data=registry.RegistryIn(kind="marketing"), viewer=SYSTEM)
    member = db.scalar(select(GroupMember).where(GroupMember.userid == "wmPORTRAIT"))
    assert member is not None and member.customer_id == customer.id
    registry.set_member_role(db, group=group, member_id=member.id, role="partner", viewer=SYSTEM)
    db.commit()
    page = Console(client).login(admin).get(f"/customers/{customer.id}")
    assert page.status_code == 200 and 'data-testid="customer-group"' in page.text and "合作会员" in page.text

    def matches(tree: dict[str, Any]) -> list[int]:
        clause = compiler.compile_tree(db, seg.parse_tree(tree), viewer=SYSTEM).clause
        from siyu.customers.models import Customer

        return list(db.scalars(select(Customer.id).where(clause)))

    assert matches({"kind": "group_kind", "group_kinds": ["marketing"]}) == [customer.id]
    assert matches({"kind": "group_kind", "group_kinds": ["marketing"], "roles": ["partner"]}) == [customer.id]
    assert matches({"kind": "group_kind", "group_kinds": ["marketing"], "roles": ["admin"]}) == []
    assert matches({"kind": "group_kind", "group_kinds": ["knowledge"]}) == []



def test_the_daily_job_snapshots_groups_raises_qr_renewals_and_pulls_the_owners_figures(
        sim: Sim, db: Session) -> None:
    from siyu.groups import jobs as group_jobs

    api = client_for(db)
    for c in sim.corp.state.group_chats:
        service.apply_group_chat(db, api.group_chat(c.chat_id))
    personal_owner = db.scalar(select(GroupChat.owner_account_id).limit(1))
    assert personal_owner is not None
    personal = registry.register_personal(db, data=registry.PersonalGroupIn(name="老茶客群",
                                                                            owner_account_id=personal_owner),
                                          viewer=SYSTEM)
    db.commit()  # the storage writes in its own transaction
    codes.upload_qr(db, group=personal, stream=io.BytesIO(b"\x89PNG\r\n\x1a\n0000"), viewer=SYSTEM,
                    made_at=datetime.now(UTC) - timedelta(days=6, hours=12))
    db.commit()
    result = group_jobs.run_daily(db, api=api)
    db.commit()
    groups = db.scalar(select(func.count()).select_from(GroupChat).where(GroupChat.status == "active"))
    assert result["groups"] == groups and result["qr_renewals"] == 1
    assert result["owner_stats"] == 2 * len(sim.corp.state.members)
    assert db.scalar(select(func.count()).select_from(GroupDaySnapshot)) == groups


def test_console_pages_register_members_upload_a_qr_and_finish_tasks_within_the_viewers_accounts(
        db: Session, make: Factory, client: TestClient, admin: Any, token_for: Any) -> None:
    mine = make.account(kind="personal", wecom_userid=None, display_name="我的个人号")
    theirs = make.account(kind="personal", wecom_userid=None, display_name="别人的个人号")
    customer = make.customer(mine, name="李思佳")
    group = registry.register_personal(db, data=registry.PersonalGroupIn(name="我的群", owner_account_id=mine.id,
                                                                         fan_owned=True, member_count=0),
                                       viewer=SYSTEM)
    other = registry.register_personal(db, data=registry.PersonalGroupIn(name="别人的群", owner_account_id=theirs.id),
                                       viewer=SYSTEM)
    db.commit()
    operator = make.user("operator", accounts=[mine])
    console = Console(client).login(operator)
    added = console.post(f"/groups/{group.id}/members", {"name": "", "customer_id": str(customer.id),
                                                         "role": "partner"})
    assert added.status_code == 303
    member = db.scalar(select(GroupMember).where(GroupMember.group_chat_id == group.id))
    assert member is not None and member.customer_id == customer.id and member.role == "partner"
    db.refresh(group)
    assert group.member_count == 1 and group.customer_count == 1
    assert console.post(f"/groups/{group.id}/members", {"name": "  "}).status_code == 422
    upload = console.post(f"/groups/{group.id}/qr", {}, files={"file": ("qr.png", b"\x89PNG\r\n\x1a\n00", "image/png")})
    assert upload.status_code == 303
    assert console.get(f"/groups/{group.id}/qr.png").content.startswith(b"\x89PNG")
    bad = console.post(f"/groups/{group.id}/qr", {}, files={"file": ("qr.gif", b"GIF89a", "image/gif")})
    assert bad.status_code == 422 and "PNG" in bad.text
    assert console.post(f"/groups/{other.id}/qr", {}, files={"file": ("qr.png", b"\x89PNG", "image/png")}
                        ).status_code == 404
    groups_api = client.get(f"/api/v1/customers/{customer.id}/groups", headers=token_for(operator))
    assert groups_api.status_code == 200 and groups_api.json()[0]["role"] == "partner"

    for g in (group, other):
        registry.raise_task(db, kind=registry.GroupTaskKind.apply_resources, key=str(g.id), detail="120", group=g)
    db.commit()
    tasks = console.get("/groups/tasks")
    assert tasks.text.count('data-testid="group-task"') == 1 and "申请运营中心资源" in tasks.text
    their_task = db.scalar(select(GroupTask).where(GroupTask.group_chat_id == other.id))
    assert their_task is not None
    assert console.post(f"/groups/tasks/{their_task.id}/done", {}).status_code == 404
    my_task = db.scalar(select(GroupTask).where(GroupTask.group_chat_id == group.id))
    assert my_task is not None
    assert console.post(f"/groups/tasks/{my_task.id}/done", {}).status_code == 303
    db.refresh(my_task)
    assert my_task.status == "done"

    admin_console = Console(client).login(admin)
    saved = admin_console.post("/groups/templates", {"name": "金粉群", "pattern": "{品牌}{城市}中心金粉群{编号}",
                                                     "brand": "金万家"})
    assert saved.status_code == 303
    refused = admin_console.post("/groups/templates", {"name": "坏规则", "pattern": "{品牌}金粉群"})
    assert refused.status_code == 422 and "{编号}" in refused.text

