"""WeCom customer groups and corp tags mirrored from the platform's JSON: the simulator's own
answers (``groupchat/get``, ``get_corp_tag_list``) and hand-written edge cases; the console's
group list and detail pages and the API, scoped by account."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.errors import Invalid
from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service
from siyu.customers.models import CustomerTag, Tag, TagGroup, Touch
from siyu.groups import service
from siyu.groups.models import GroupChat, GroupMember, GroupMemberChange
from siyu.simulator.corp import VirtualCorp
from siyu.team.models import AuditEntry
from tests.conftest import Factory, viewer_of
from tests.test_pages import Console

CORP_ID = "wwGROUPSTEST0001"
T0 = 1_760_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def corp(clock: Clock) -> VirtualCorp:
    members = (("grp.owner01", "小野"), ("grp.owner02", "阿禾"))
    return VirtualCorp.seeded(5, corp_id=CORP_ID, members=members, contacts_per_member=10, clock=clock, salt=0)


def detail(corp: VirtualCorp, chat_id: str) -> dict[str, Any]:
    """What groupchat/get answers, the way the API client will hand it over."""
    return dict(corp.api_groupchat_get({"chat_id": chat_id, "need_name": 1})["group_chat"])


def first_chat(corp: VirtualCorp, owner: str = "grp.owner01") -> dict[str, Any]:
    return next(g for g in corp.groups() if g["owner"] == owner)


def group_touches(db: Session, customer_id: int) -> list[dict[str, Any]]:
    touches = db.scalars(select(Touch).where(Touch.customer_id == customer_id).order_by(Touch.occurred_at, Touch.id))
    return [t.details or {} for t in touches if (t.details or {}).get("event", "").startswith("group_")]


def as_customer(db: Session, make: Factory, account: Any, external_userid: str, name: str = "") -> Any:
    customer = make.customer(account, **({"name": name} if name else {}))
    customer.wecom_external_userid = external_userid
    db.commit()
    return customer


def counts(db: Session) -> tuple[int, int, int, int]:
    return (db.scalar(select(func.count()).select_from(GroupMember)) or 0,
            db.scalar(select(func.count()).select_from(GroupMemberChange)) or 0,
            db.scalar(select(func.count()).select_from(Touch)) or 0,
            db.scalar(select(func.count()).select_from(AuditEntry)) or 0)


# ---------------------------------------------------------------- group chats


def test_a_simulated_group_is_mirrored_and_applying_it_twice_changes_nothing(
        db: Session, make: Factory, corp: VirtualCorp) -> None:
    owner = make.account(display_name="小野", wecom_userid="grp.owner01")
    chat = first_chat(corp)
    known = as_customer(db, make, owner, chat["externals"][0], name="王雨欣")
    payload = detail(corp, chat["chat_id"])

    group = service.apply_group_chat(db, payload)
    db.commit()
    assert group.name == payload["name"] and group.owner_account_id == owner.id
    assert group.notice == payload["notice"] and group.status == "active"
    assert group.platform_created_at == datetime.fromtimestamp(payload["create_time"], tz=UTC)
    assert group.member_count == len(payload["member_list"]) == len(chat["externals"]) + 1
    assert group.customer_count == 1
    staff = db.scalar(select(GroupMember).where(GroupMember.userid == "grp.owner01"))
    assert staff is not None and staff.member_type == 1 and staff.customer_id is None and staff.name == "小野"
    member = db.scalar(select(GroupMember).where(GroupMember.userid == chat["externals"][0]))
    assert member is not None and member.customer_id == known.id and member.join_scene == 1
    assert member.invitor_userid == "grp.owner01"
    touches = group_touches(db, known.id)
    assert [t["event"] for t in touches] == ["group_join"] and touches[0]["chat"] == payload["name"]
    assert touches[0]["group_id"] == group.id

    before, stamp = counts(db), group.updated_at
    again = service.apply_group_chat(db, detail(corp, chat["chat_id"]), at=datetime.now(UTC) + timedelta(hours=1))
    db.commit()
    assert again.id == group.id and counts(db) == before and again.updated_at == stamp


def test_members_quit_and_rejoin_keep_their_history_and_the_customers_timeline(
        db: Session, make: Factory, corp: VirtualCorp, clock: Clock) -> None:
    owner = make.account(wecom_userid="grp.owner01")
    chat = first_chat(corp)
    leaver_id = chat["externals"][0]
    leaver = as_customer(db, make, owner, leaver_id)
    group = service.apply_group_chat(db, detail(corp, chat["chat_id"]))
    db.commit()
    size = group.member_count

    clock.now += 3600
    corp.quit_group(chat["chat_id"], [leaver_id], scene=1)
    quit_at = datetime.fromtimestamp(clock.now, tz=UTC)
    service.apply_group_chat(db, detail(corp, chat["chat_id"]), at=quit_at, quit_scene=1)
    db.commit()
    row = db.scalar(select(GroupMember).where(GroupMember.userid == leaver_id))
    assert row is not None and row.left_at == quit_at and row.quit_scene == 1
    assert group.member_count == size - 1 and group.customer_count == 0 and group.updated_at == quit_at

    clock.now += 3600
    corp.join_group(chat["chat_id"], [leaver_id], scene=3)
    service.apply_group_chat(db, detail(corp, chat["chat_id"]))
    db.commit()
    rows = list(db.scalars(select(GroupMember).where(GroupMember.userid == leaver_id)))
    assert len(rows) == 1 and rows[0].left_at is None and rows[0].quit_scene is None  # the same row, reactivated
    assert rows[0].join_scene == 3 and rows[0].join_time == datetime.fromtimestamp(clock.now, tz=UTC)
    assert group.member_count == size and group.customer_count == 1
    kinds = [c.kind for c in db.scalars(select(GroupMemberChange).where(GroupMemberChange.member_id == rows[0].id)
                                        .order_by(GroupMemberChange.id))]
    assert kinds == ["join", "quit", "join"]
    assert [(t["event"], t["scene"]) for t in group_touches(db, leaver.id)] == [
        ("group_join", 1), ("group_quit", 1), ("group_join", 3)]


def test_a_quit_and_rejoin_between_two_syncs_is_seen_from_the_later_join_time(db: Session, make: Factory) -> None:
    owner = make.account(wecom_userid="boss")
    customer = as_customer(db, make, owner, "wmCUSTOMER0001")
    payload = {"chat_id": "wrEDGE01", "name": "品鉴会", "owner": "boss", "create_time": T0,
               "member_list": [{"userid": "boss", "type": 1, "join_time": T0, "join_scene": 1},
                               {"userid": "wmCUSTOMER0001", "type": 2, "join_time": T0 + 10, "join_scene": 1}]}
    service.apply_group_chat(db, payload)
    payload["member_list"][1]["join_time"] = T0 + 5000  # left and came back while nobody looked
    service.apply_group_chat(db, payload)
    db.commit()
    assert [t["event"] for t in group_touches(db, customer.id)] == ["group_join", "group_join"]


def test_hand_written_payloads_edge_cases(db: Session, make: Factory) -> None:
    owner = make.account(wecom_userid="boss")
    with pytest.raises(Invalid):
        service.apply_group_chat(db, {"name": "no id"})
    with pytest.raises(Invalid):
        service.apply_group_chat(db, [])  # type: ignore[arg-type]
    payload: dict[str, Any] = {
        "chat_id": "wrEDGE02", "name": "<b>群</b>", "owner": "nobody-we-know", "create_time": "garbage",
        "notice": None, "admin_list": [{"userid": "boss"}, {"userid": "boss"}, "x"],
        "member_list": [
            {"userid": "boss", "join_time": T0},  # no type: a UserID, so staff
            {"userid": "wmNOTYETCUSTOMER", "join_time": 0, "name": "张三", "group_nickname": "老张",
             "state": "store-hz", "unionid": "o123"},
            {"userid": "wmNOTYETCUSTOMER", "type": 2, "join_time": T0},  # listed twice: the first wins
            {"type": 2}, "not an object"]}
    group = service.apply_group_chat(db, payload)
    db.commit()
    assert group.owner_account_id is None and group.platform_created_at is None and group.notice == ""
    assert group.admin_userids == ["boss", "x"] and group.member_count == 2 and group.customer_count == 0
    stranger = db.scalar(select(GroupMember).where(GroupMember.userid == "wmNOTYETCUSTOMER"))
    assert stranger is not None and stranger.member_type == 2 and stranger.state == "store-hz"
    assert stranger.name == "张三" and stranger.join_time is not None  # no join time given: when we saw it
    assert db.scalar(select(GroupMember.member_type).where(GroupMember.userid == "boss")) == 1

    # Later: the owner gets an account, the stranger becomes a customer, names were not asked for.
    owner.wecom_userid = "nobody-we-know"
    customer = as_customer(db, make, owner, "wmNOTYETCUSTOMER")
    for member in payload["member_list"][:2]:
        member.pop("name", None)
    group = service.apply_group_chat(db, payload)
    db.commit()
    assert group.owner_account_id == owner.id and group.customer_count == 1
    assert stranger.customer_id == customer.id and stranger.name == "张三"  # name kept when not returned
    assert group_touches(db, customer.id) == []  # linked, but they joined before they were a customer

    # An answer without a member list is partial (every group has its owner): nobody is marked as left.
    before = counts(db)
    for partial in ({**payload, "member_list": []}, {k: v for k, v in payload.items() if k != "member_list"}):
        assert service.apply_group_chat(db, partial).member_count == 2
    assert counts(db) == before


def test_dismissal_is_final_and_idempotent(db: Session, make: Factory, corp: VirtualCorp) -> None:
    owner = make.account(wecom_userid="grp.owner01")
    chat = first_chat(corp)
    customer = as_customer(db, make, owner, chat["externals"][0])
    stale = detail(corp, chat["chat_id"])
    service.apply_group_chat(db, stale)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    group = service.dismiss_group_chat(db, chat["chat_id"], at)
    db.commit()
    assert group.status == "dismissed" and group.dismissed_at == at and group.member_count == 0
    assert all(m.left_at == at for m in db.scalars(select(GroupMember)))
    assert group_touches(db, customer.id)[-1] == {**group_touches(db, customer.id)[-1], "event": "group_quit",
                                                  "dismissed": True}
    before = counts(db)
    service.dismiss_group_chat(db, chat["chat_id"], at + timedelta(days=1))
    service.apply_group_chat(db, stale)  # fetched before the dismissal, applied after: changes nothing
    db.commit()
    assert counts(db) == before and group.status == "dismissed" and group.dismissed_at == at

    placeholder = service.dismiss_group_chat(db, "wrNEVERSEEN", at)
    service.apply_group_chat(db, {**stale, "chat_id": "wrNEVERSEEN"})
    db.commit()
    assert placeholder.status == "dismissed" and placeholder.member_count == 0


# ---------------------------------------------------------------- corp tags


def tag_list(corp: VirtualCorp, **filters: Any) -> list[dict[str, Any]]:
    return list(corp.api_get_corp_tag_list(filters)["tag_group"])


def group_named(db: Session, name: str) -> TagGroup | None:
    return db.scalar(select(TagGroup).where(TagGroup.name == name))


def test_corp_tags_are_created_matched_by_name_and_applied_twice_without_change(
        db: Session, make: Factory, corp: VirtualCorp) -> None:
    listed = tag_list(corp)
    source = group_named(db, "来源")
    assert source is not None and any(t.name == "门店" for t in source.tags)  # Siyu's built-in group
    changes = service.apply_corp_tags(db, listed)
    db.commit()
    wecom_source = next(g for g in listed if g["group_name"] == "来源")
    assert source.wecom_id == wecom_source["group_id"] and "来源" in changes.linked
    store = next(t for t in source.tags if t.name == "门店")
    assert store.wecom_id == next(t["id"] for t in wecom_source["tag"] if t["name"] == "门店")
    assert "来源:门店" in changes.linked and "来源:线上" in changes.created
    level = group_named(db, "客户等级")
    assert level is not None and level.kind == "custom" and level.wecom_id
    assert [t.name for t in sorted(level.tags, key=lambda t: (t.sort_order, t.id))] == ["普通", "重要", "VIP"]
    assert not changes.conflicts
    audits = db.scalar(select(func.count()).select_from(AuditEntry))
    assert audits and db.scalar(select(AuditEntry.actor).where(AuditEntry.entity_type == "tag")) == "system"

    second = service.apply_corp_tags(db, tag_list(corp))
    db.commit()
    assert not second.changed and db.scalar(select(func.count()).select_from(AuditEntry)) == audits


def test_corp_tag_renames_and_deletions_follow_wecom(db: Session, make: Factory, corp: VirtualCorp) -> None:
    account = make.account()
    service.apply_corp_tags(db, tag_list(corp))
    db.commit()
    preference = next(g for g in tag_list(corp) if g["group_name"] == "偏好")
    green_id = next(t["id"] for t in preference["tag"] if t["name"] == "绿茶")
    black_id = next(t["id"] for t in preference["tag"] if t["name"] == "红茶")

    corp.tag_admin("update", id=green_id, name="明前绿茶")
    corp.tag_admin("update", id=preference["group_id"], name="口味偏好")
    changes = service.apply_corp_tags(db, tag_list(corp, group_id=[preference["group_id"]]))
    db.commit()
    assert set(changes.renamed) == {"偏好 → 口味偏好", "口味偏好:绿茶 → 明前绿茶"}
    green = service.tags_by_wecom_id(db, [green_id])[green_id]
    assert green.name == "明前绿茶" and green.group.name == "口味偏好"

    fan = make.customer(account)
    other = make.customer(account)
    customers_service.set_customer_tags(db, customer_id=fan.id, viewer=SYSTEM, add=[green], remove=[])
    db.commit()
    corp.tag_admin("delete", tag_id=[green_id])
    assert service.delete_corp_tag(db, green_id, "tag") == ["口味偏好:明前绿茶"]
    db.commit()
    assert not service.tags_by_wecom_id(db, [green_id])
    assert db.scalar(select(func.count()).select_from(CustomerTag).where(CustomerTag.customer_id == fan.id)) == \
        db.scalar(select(func.count()).select_from(CustomerTag).where(CustomerTag.customer_id == other.id))
    removal = db.scalars(select(Touch).where(Touch.customer_id == fan.id, Touch.kind == "tag_change")
                         .order_by(Touch.id.desc())).first()
    assert removal is not None and removal.details == {"added": [], "removed": ["口味偏好:明前绿茶"],
                                                       "source": "wecom"}
    audit = db.scalars(select(AuditEntry).where(AuditEntry.action == "delete", AuditEntry.entity_type == "tag")).one()
    assert audit.actor == "system" and audit.before is not None and audit.before["customers"] == 1
    assert service.delete_corp_tag(db, green_id, "tag") == []  # twice: nothing left to do
    with pytest.raises(Invalid):
        service.delete_corp_tag(db, green_id, "label")

    # A deleted custom group goes with its tags; a built-in group matched by name stays.
    removed = service.delete_corp_tag(db, preference["group_id"], "tag_group")
    source_id = next(g["group_id"] for g in tag_list(corp) if g["group_name"] == "来源")
    service.delete_corp_tag(db, source_id, "tag_group")
    db.commit()
    assert "口味偏好:红茶" in removed and "口味偏好" in removed and group_named(db, "口味偏好") is None
    assert not service.tags_by_wecom_id(db, [black_id])
    source = group_named(db, "来源")
    assert source is not None and source.wecom_id is None and source.kind == "source"
    assert "门店" not in [t.name for t in source.tags]  # it mirrored WeCom's 门店, so it went with it
    assert [t.name for t in source.tags] == ["线上广告", "包裹卡", "小程序", "线下活动", "推手推荐", "老客转介绍",
                                             "社群"]


def test_computed_groups_are_never_matched_or_filled(db: Session) -> None:
    level = group_named(db, "等级")
    assert level is not None and level.is_computed
    tags_before = sorted(t.name for t in level.tags)
    changes = service.apply_corp_tags(db, [
        {"group_id": "etLEVEL", "group_name": "等级", "create_time": T0, "order": 1,
         "tag": [{"id": "etV9", "name": "V9 至尊", "create_time": T0, "order": 1}]},
        {"group_id": "etTASTE", "group_name": "口味", "create_time": T0,
         "tag": [{"id": "etSWEET", "name": "偏甜"}]}])
    db.commit()
    assert changes.conflicts == ["等级: a computed group of Siyu"]
    assert level.wecom_id is None and sorted(t.name for t in level.tags) == tags_before
    assert not service.tags_by_wecom_id(db, ["etV9"]) and service.tags_by_wecom_id(db, ["etSWEET"])
    # Renaming a mirrored group onto a computed group's name is refused too.
    renamed = service.apply_corp_tags(db, [{"group_id": "etTASTE", "group_name": "等级", "tag": []}])
    assert renamed.conflicts == ["口味 → 等级: the name is taken"] and group_named(db, "口味") is not None


def test_deleted_flags_and_a_complete_list_remove_what_wecom_no_longer_has(db: Session) -> None:
    service.apply_corp_tags(db, [
        {"group_id": "etA", "group_name": "活动",
         "tag": [{"id": "etA1", "name": "双11"}, {"id": "etA2", "name": "618"}]},
        {"group_id": "etB", "group_name": "门店", "tag": [{"id": "etB1", "name": "西湖店"}]}])
    changes = service.apply_corp_tags(db, [
        {"group_id": "etA", "group_name": "活动", "tag": [{"id": "etA2", "name": "618", "deleted": True}]}])
    assert changes.deleted == ["活动:618"] and service.tags_by_wecom_id(db, ["etA1"])
    full = service.apply_corp_tags(db, [{"group_id": "etA", "group_name": "活动", "tag": []}], complete=True)
    db.commit()
    assert set(full.deleted) == {"活动:双11", "门店:西湖店", "门店"}
    assert group_named(db, "门店") is None
    kept = group_named(db, "活动")  # still on WeCom's list, if empty
    assert kept is not None and kept.wecom_id == "etA" and kept.tags == []


# ---------------------------------------------------------------- console and API


def test_group_pages_in_chinese_escaped_and_linked(client: TestClient, db: Session, make: Factory,
                                                   corp: VirtualCorp) -> None:
    owner = make.account(display_name="小野", wecom_userid="grp.owner01")
    console = Console(client).login(make.user("admin"))
    empty = console.get("/groups")
    assert empty.status_code == 200 and "还没有客户群" in empty.text and 'href="/groups"' in empty.text

    chat = first_chat(corp)
    customer = as_customer(db, make, owner, chat["externals"][0], name="王雨欣")
    payload = detail(corp, chat["chat_id"])
    payload["name"] = "<script>alert(1)</script>"
    group = service.apply_group_chat(db, payload)
    corp.quit_group(chat["chat_id"], [chat["externals"][1]], scene=0)
    service.apply_group_chat(db, {**detail(corp, chat["chat_id"]), "name": payload["name"]}, quit_scene=0)
    db.commit()

    page = console.get("/groups")
    assert page.status_code == 200 and "社群" in page.text and "群主账号" in page.text
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert len(re.findall(r'data-testid="group-row"', page.text)) == 1 and "小野" in page.text

    shown = console.get(f"/groups/{group.id}")
    assert shown.status_code == 200 and "&lt;script&gt;" in shown.text and "<script>alert" not in shown.text
    assert f'href="/customers/{customer.id}"' in shown.text and "王雨欣" in shown.text
    assert "当前成员" in shown.text and "最近入群与退群" in shown.text and "主动退群" in shown.text
    assert 'data-kind="quit"' in shown.text and "员工" in shown.text

    timeline = console.get(f"/customers/{customer.id}")
    assert "加入了群" in timeline.text and f'href="/groups/{group.id}"' in timeline.text
    assert "<script>alert" not in timeline.text

    assert console.get("/groups?status=dismissed").text.count('data-testid="group-row"') == 0
    assert "没有符合筛选条件的群" in console.get("/groups?name=不存在").text
    assert console.get("/groups?name=script").text.count('data-testid="group-row"') == 1
    assert console.get("/groups?status=bogus").status_code == 422
    assert console.get("/groups?account_id=x").status_code == 422
    assert console.get("/groups/999999").status_code == 404


def test_operators_see_only_the_groups_of_their_accounts(client: TestClient, db: Session, make: Factory,
                                                         corp: VirtualCorp, token_for: Any) -> None:
    mine = make.account(display_name="小野", wecom_userid="grp.owner01")
    theirs = make.account(display_name="阿禾", wecom_userid="grp.owner02")
    own_group = service.apply_group_chat(db, detail(corp, first_chat(corp, "grp.owner01")["chat_id"]))
    other_group = service.apply_group_chat(db, detail(corp, first_chat(corp, "grp.owner02")["chat_id"]))
    orphan = service.apply_group_chat(db, {"chat_id": "wrORPHAN", "name": "无主群", "owner": "left-the-corp"})
    db.commit()
    operator = make.user("operator", accounts=[mine])

    viewer = viewer_of(operator)
    visible = service.list_groups(db, flt=service.GroupFilter(), viewer=viewer).items
    assert [g.id for g in visible] == [own_group.id]
    assert {g.id for g in service.list_groups(db, flt=service.GroupFilter(), viewer=SYSTEM).items} == {
        own_group.id, other_group.id, orphan.id}

    console = Console(client).login(operator)
    page = console.get("/groups")
    assert page.text.count('data-testid="group-row"') == 1 and f'/groups/{own_group.id}"' in page.text
    assert console.get(f"/groups/{other_group.id}").status_code == 404
    assert console.get(f"/groups/{orphan.id}").status_code == 404
    assert console.get(f"/groups/{own_group.id}").status_code == 200

    headers = token_for(operator)
    listed = client.get("/api/v1/groups", headers=headers).json()
    assert [g["id"] for g in listed["items"]] == [own_group.id]
    assert client.get(f"/api/v1/groups/{other_group.id}", headers=headers).status_code == 404
    shown = client.get(f"/api/v1/groups/{own_group.id}", headers=headers).json()
    assert shown["member_count"] == len(shown["members"]) and shown["owner_account_id"] == mine.id
    assert client.get(f"/api/v1/groups?account_id={theirs.id}", headers=headers).json()["items"] == []


def test_the_group_list_pages_by_last_change(client: TestClient, db: Session, make: Factory) -> None:
    make.account(wecom_userid="boss")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(53):
        service.apply_group_chat(db, {"chat_id": f"wrPAGE{n:03d}", "name": f"团购群{n}", "owner": "boss"},
                                 at=start + timedelta(minutes=n))
    db.commit()
    console = Console(client).login(make.user("planner"))
    first = console.get("/groups")
    assert first.text.count('data-testid="group-row"') == 50 and "53 个群" in first.text
    assert "团购群52" in first.text and "团购群2<" not in first.text
    next_url = re.search(r'href="([^"]+)" data-testid="next-page"', first.text)
    assert next_url is not None
    second = console.get(next_url.group(1).replace("&amp;", "&"))
    assert second.text.count('data-testid="group-row"') == 3 and "团购群0<" in second.text
    assert 'data-testid="first-page"' in second.text and 'data-testid="next-page"' not in second.text
    assert console.get("/groups?cursor=not-a-cursor").status_code == 422
    tags = db.scalar(select(func.count()).select_from(Tag))
    assert tags  # untouched by groups
    assert db.scalar(select(func.count()).select_from(GroupChat)) == 53


def test_a_merge_moves_group_memberships_to_the_kept_customer_and_undo_moves_them_back(
        client: TestClient, db: Session, make: Factory) -> None:
    from siyu.customers.merge import service as merge

    owner = make.account(wecom_userid="boss")
    duplicate = as_customer(db, make, owner, "wmMERGED0001", name="李雅静")
    kept = make.customer(owner, name="李雅静")
    payload = {"chat_id": "wrMERGE", "name": "老友茶话群", "owner": "boss",
               "member_list": [{"userid": "wmMERGED0001", "type": 2, "join_time": T0}]}
    group = service.apply_group_chat(db, payload)
    db.commit()

    def member_customer() -> int | None:
        db.expire_all()
        return db.scalar(select(GroupMember.customer_id).where(GroupMember.userid == "wmMERGED0001"))

    record = merge.merge_customers(db, target_id=kept.id, source_ids=[duplicate.id], choices={}, viewer=SYSTEM)
    db.commit()
    assert member_customer() == kept.id  # at once, not at the next sync
    console = Console(client).login(make.user("admin"))
    page = console.get(f"/groups/{group.id}").text
    assert f'href="/customers/{kept.id}"' in page and f'href="/customers/{duplicate.id}"' not in page
    service.apply_group_chat(db, payload)  # the next sync agrees
    db.commit()
    assert member_customer() == kept.id
    merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)
    db.commit()
    assert member_customer() == duplicate.id


def test_mirrored_tags_are_marked_on_the_tag_settings_page(client: TestClient, db: Session, make: Factory) -> None:
    service.apply_corp_tags(db, [{"group_id": "etTEA", "group_name": "茶类",
                                  "tag": [{"id": "etTEA1", "name": "岩茶"}]}])
    db.commit()
    page = Console(client).login(make.user("admin")).get("/settings/tags").text
    assert page.count('data-testid="wecom-mirror"') == 1 and "企业微信企业标签" in page
