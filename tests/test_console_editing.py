"""An admin edits what the company owns in the console: accounts and personas, users, tags and
groups, custom fields, a customer added by hand — with bad input refused in Chinese, operators
kept out, and every change audited."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.channels.models import Channel
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, CustomerTag, CustomField, Tag
from siyu.customers.schemas import CustomFieldIn
from siyu.segments.models import Segment
from siyu.team.models import AuditEntry, User, UserSession
from tests.conftest import SYSTEM, TEST_PASSWORD
from tests.test_pages import HTML, Console, csrf_from

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def console(client: TestClient, admin: Any) -> Console:
    return Console(client).login(admin)


def _audit(db: Session, action: str, kind: str) -> list[AuditEntry]:
    return list(db.scalars(select(AuditEntry).where(AuditEntry.action == action, AuditEntry.entity_type == kind)))


def _tag(db: Session, group: str, name: str) -> Tag:
    return next(t for g in customers_service.list_tag_groups(db) if g.name == group for t in g.tags if t.name == name)


# ---------------------------------------------------------------- accounts and personas


def test_admin_creates_a_personal_account_with_persona_avatar_and_qr_code(console: Console, db: Session) -> None:
    response = console.post("/accounts/new", {
        "display_name": "山野茶舍·小满", "kind": "personal", "friend_capacity": "5000", "positioning": "门店茶艺顾问",
        "signature": "每天一杯好茶", "greeting": "你好呀～", "qr_expires_on": "2026-12-20", "store": "", "brand": "",
        "tier_served": "", "wechat_id": "xiaoman", "wecom_userid": "", "owner_user_id": ""},
        files={"avatar": ("me.png", PNG, "image/png"), "qr_image": ("qr.png", PNG, "image/png")})
    assert response.status_code == 303, response.text
    account = db.scalar(select(Account).where(Account.display_name == "山野茶舍·小满"))
    assert account is not None and account.kind == "personal" and account.positioning == "门店茶艺顾问"
    assert account.qr_expires_on == date(2026, 12, 20)
    assert account.avatar_url.startswith("/media/persona/") and account.qr_image_url.startswith("/media/persona/")
    image = console.get(account.avatar_url)
    assert image.status_code == 200 and image.content == PNG and image.headers["content-type"] == "image/png"
    assert console.get("/media/persona/nope.png").status_code == 404
    assert _audit(db, "create", "account")[-1].entity_name == "山野茶舍·小满"


def test_admin_edits_a_persona_and_raises_the_capacity(console: Console, db: Session, make: Any) -> None:
    account = make.account(display_name="山野茶舍·西湖店", kind="personal", wecom_userid=None)
    page = console.get(f"/accounts/{account.id}/edit")
    assert page.status_code == 200 and 'data-testid="account-form"' in page.text
    response = console.post(f"/accounts/{account.id}/edit", {
        "display_name": "山野茶舍·西湖店", "friend_capacity": "20000", "positioning": "福利官",
        "signature": "新签名", "greeting": "{称呼}你好", "qr_expires_on": ""},
        files={"moments_cover": ("cover.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 32, "image/jpeg")})
    assert response.status_code == 303, response.text
    db.expire_all()
    edited = db.get_one(Account, account.id)
    assert (edited.friend_capacity, edited.signature, edited.positioning) == (20000, "新签名", "福利官")
    assert edited.moments_cover_url.endswith(".jpg")
    entry = _audit(db, "update", "account")[-1]
    assert entry.before and entry.after and entry.before["friend_capacity"] == 5000
    assert entry.after["friend_capacity"] == 20000


@pytest.mark.parametrize(("capacity", "message"),
                         [("20001", "不能大于 20000"), ("abc", "1 到 20000"), ("", "1 到 20000")])
def test_capacity_out_of_range_is_refused_in_chinese(console: Console, db: Session, make: Any, capacity: str,
                                                     message: str) -> None:
    account = make.account()
    response = console.post(f"/accounts/{account.id}/edit", {"display_name": "x", "friend_capacity": capacity})
    assert response.status_code == 422
    assert message in response.text
    db.expire_all()
    assert db.get_one(Account, account.id).friend_capacity == 5000


def test_capacity_cannot_go_below_the_friends_the_account_has(console: Console, db: Session, make: Any) -> None:
    account = make.account()
    make.bulk_customers(account, 3)
    response = console.post(f"/accounts/{account.id}/edit", {"display_name": account.display_name,
                                                             "friend_capacity": "2"})
    assert response.status_code == 422 and "已有 3 位好友" in response.text


def test_an_upload_that_is_not_an_image_is_refused(console: Console, db: Session, make: Any) -> None:
    account = make.account()
    response = console.post(f"/accounts/{account.id}/edit", {"display_name": "x", "friend_capacity": "5000"},
                            files={"avatar": ("evil.png", b"<svg onload=alert(1)>", "image/png")})
    assert response.status_code == 422 and "不是图片" in response.text
    db.expire_all()
    assert db.get_one(Account, account.id).avatar_url == ""


def test_retiring_an_account_is_audited_and_it_can_come_back(console: Console, db: Session, make: Any) -> None:
    account = make.account()
    assert console.post(f"/accounts/{account.id}/status", {"status": "retired"}).status_code == 303
    db.expire_all()
    assert db.get_one(Account, account.id).status == "retired"
    assert [e.entity_name for e in _audit(db, "retire", "account")] == [account.display_name]
    assert "停用" in console.get("/audit").text
    console.post(f"/accounts/{account.id}/status", {"status": "active"})
    db.expire_all()
    assert db.get_one(Account, account.id).status == "active"


def test_operators_cannot_open_or_post_the_admin_editing_pages(client: TestClient, make: Any, db: Session) -> None:
    account = make.account()
    operator = make.user("operator", accounts=[account])
    other = make.user("operator")
    tag = _tag(db, "人群", "宝妈") if any(g.name == "人群" for g in customers_service.list_tag_groups(db)) else None
    console = Console(client).login(operator)
    urls = ["/accounts/new", f"/accounts/{account.id}/edit", "/settings/fields/1"]
    if tag is not None:
        urls.append(f"/settings/tags/{tag.id}")
    for url in urls:
        assert console.get(url).status_code in (403, 404), url
    edit = console.post(f"/accounts/{account.id}/edit", {"display_name": "x", "friend_capacity": "5"})
    assert edit.status_code == 403
    assert console.post(f"/users/{other.id}/reset-password", {}).status_code == 403
    assert console.post(f"/users/{other.id}/logout-everywhere", {}).status_code == 403
    db.expire_all()
    assert db.get_one(Account, account.id).display_name == account.display_name


# ---------------------------------------------------------------- users


def test_reset_password_is_shown_once_ends_sessions_and_is_audited_without_it(
        app: Any, console: Console, db: Session, make: Any) -> None:
    operator = make.user("operator")
    victim = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    victim.headers.update(HTML)
    Console(victim).login(operator)
    assert victim.get("/customers", follow_redirects=False).status_code == 200

    response = console.post(f"/users/{operator.id}/reset-password", {})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    match = re.search(r'data-testid="new-password">([^<]+)<', response.text)
    assert match, "the new password is on the page"
    password = match.group(1)
    assert len(password) >= 12
    assert password not in console.get("/users").text, "shown only once"
    assert victim.get("/customers", follow_redirects=False).status_code == 303, "their sessions ended"
    entry = _audit(db, "reset_password", "user")[-1]
    assert password not in str(entry.after) and password not in entry.summary

    fresh = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
    token = csrf_from(fresh.get("/login").text)
    old = fresh.post("/login", data={"username": operator.username, "password": TEST_PASSWORD, "csrf_token": token},
                     follow_redirects=False)
    assert old.status_code != 303
    token = csrf_from(fresh.get("/login").text)
    new = fresh.post("/login", data={"username": operator.username, "password": password, "csrf_token": token},
                     follow_redirects=False)
    assert new.status_code == 303


def test_a_disabled_user_cannot_log_in_nor_get_a_password_reset(client: TestClient, console: Console, db: Session,
                                                                make: Any) -> None:
    operator = make.user("operator")
    assert console.post(f"/users/{operator.id}", {"role": "operator"}).status_code == 303  # "active" unticked
    db.expire_all()
    assert db.get_one(User, operator.id).is_active is False
    response = console.post(f"/users/{operator.id}/reset-password", {})
    assert response.status_code == 422 and "已停用" in response.text
    other = TestClient(client.app, base_url="http://testserver", raise_server_exceptions=False)
    token = csrf_from(other.get("/login").text)
    refused = other.post("/login", data={"username": operator.username, "password": TEST_PASSWORD,
                                         "csrf_token": token}, follow_redirects=False)
    assert refused.status_code == 401


def test_log_out_everywhere_kills_the_users_other_sessions(app: Any, console: Console, db: Session,
                                                           make: Any) -> None:
    operator = make.user("operator")
    phones = []
    for _n in range(2):
        browser = TestClient(app, base_url="http://testserver", raise_server_exceptions=False)
        browser.headers.update(HTML)
        Console(browser).login(operator)
        phones.append(browser)
    assert console.post(f"/users/{operator.id}/logout-everywhere", {}).status_code == 303
    assert all(p.get("/customers", follow_redirects=False).status_code == 303 for p in phones)
    assert console.get("/customers", follow_redirects=False).status_code == 200, "the admin's own session lives"
    assert db.scalar(select(func.count()).select_from(UserSession).where(
        UserSession.user_id == operator.id, UserSession.revoked_at.is_(None))) == 0


def test_admin_edits_a_users_name_and_accounts(console: Console, db: Session, make: Any) -> None:
    first, second = make.account(), make.account()
    operator = make.user("operator", accounts=[first])
    response = console.post(f"/users/{operator.id}", {"role": "operator", "is_active": "on", "accounts_in_form": "1",
                                                      "display_name": "小满", "account_ids": [str(second.id)]})
    assert response.status_code == 303
    db.expire_all()
    user = db.get_one(User, operator.id)
    assert (user.display_name, user.account_ids, user.is_active) == ("小满", [second.id], True)
    # The table's quick form (role and status only) leaves the accounts alone.
    console.post(f"/users/{operator.id}", {"role": "service", "is_active": "on"})
    db.expire_all()
    assert db.get_one(User, operator.id).account_ids == [second.id]


# ---------------------------------------------------------------- tags and groups


@pytest.fixture
def taste(db: Session) -> dict[str, Tag]:
    group = customers_service.create_tag_group(db, name="口味", multi_select=True, actor=SYSTEM)
    tags = {name: customers_service.create_tag(db, group_id=group.id, name=name, actor=SYSTEM)
            for name in ("浓香", "浓香型", "清香")}
    db.commit()
    return tags


def test_merging_two_tags_carries_every_customer_over(console: Console, db: Session, make: Any,
                                                      taste: dict[str, Tag]) -> None:
    account = make.account()
    both = make.customer(account, tags=["口味:浓香", "口味:浓香型"])
    only_source = [make.customer(account, tags=["口味:浓香型"]) for _n in range(3)]
    make.customer(account, tags=["口味:清香"])
    db.add(Channel(key="chTaste0000001", name="口味海报", tag_names=["口味:浓香型", "口味:清香"]))
    db.add(Segment(name="浓香客", conditions={"kind": "and", "conditions": [
        {"kind": "tag", "tag_ids": [taste["浓香型"].id]}]}))
    db.commit()
    source, target = taste["浓香型"].id, taste["浓香"].id

    page = console.get(f"/settings/tags/{source}")
    assert "4 位客户带有这个标签" in page.text
    response = console.post(f"/settings/tags/{source}/merge", {"target_id": str(target)})
    assert response.status_code == 303
    db.expire_all()
    holders = set(db.scalars(select(CustomerTag.customer_id).where(CustomerTag.tag_id == target)))
    assert holders == {both.id, *(c.id for c in only_source)}
    assert db.get(Tag, source) is None
    assert db.scalar(select(func.count()).select_from(CustomerTag).where(CustomerTag.tag_id == source)) == 0
    assert db.scalar(select(Channel.tag_names).where(Channel.key == "chTaste0000001")) == ["口味:浓香", "口味:清香"]
    assert db.scalar(select(Segment.conditions))["conditions"][0]["tag_ids"] == [target]
    entry = _audit(db, "merge", "tag")[-1]
    assert entry.after and entry.after["customers"] == 4


def test_a_tag_cannot_be_merged_into_itself_or_another_group(console: Console, db: Session,
                                                             taste: dict[str, Tag]) -> None:
    tag = taste["清香"]
    response = console.post(f"/settings/tags/{tag.id}/merge", {"target_id": str(tag.id)})
    assert response.status_code == 422 and "不能合并到自己" in response.text
    other = _tag(db, "人群", "宝妈")
    response = console.post(f"/settings/tags/{tag.id}/merge", {"target_id": str(other.id)})
    assert response.status_code == 422 and "同一标签组" in response.text
    assert db.get(Tag, tag.id) is not None


def test_deleting_a_tag_shows_the_count_first_and_needs_it_confirmed(console: Console, db: Session, make: Any,
                                                                     taste: dict[str, Tag]) -> None:
    account = make.account()
    for _n in range(2):
        make.customer(account, tags=["口味:清香"])
    tag = taste["清香"]
    tag_id = tag.id
    page = console.get(f"/settings/tags/{tag.id}")
    assert "删除后，这个标签会从 2 位客户身上移除" in page.text
    assert 'name="count" value="2"' in page.text
    make.customer(account, tags=["口味:清香"])  # someone got the tag while the admin read the page
    stale = console.post(f"/settings/tags/{tag.id}/delete", {"count": "2"})
    assert stale.status_code == 409 and "现在有 3 位客户" in stale.text
    assert db.get(Tag, tag.id) is not None
    assert console.post(f"/settings/tags/{tag_id}/delete", {"count": "3"}).status_code == 303
    db.expire_all()
    assert db.get(Tag, tag_id) is None
    assert _audit(db, "delete", "tag")[-1].before == {"name": "口味:清香", "customers": 3}


def test_renaming_and_reordering_tags_and_groups(console: Console, db: Session, taste: dict[str, Tag]) -> None:
    db.add(Channel(key="chTaste0000002", name="清香海报", tag_names=["口味:清香"]))
    db.commit()
    tag = taste["清香"]
    assert console.post(f"/settings/tags/{tag.id}/rename", {"name": "清香型"}).status_code == 303
    taken = console.post(f"/settings/tags/{tag.id}/rename", {"name": "浓香"})
    assert taken.status_code == 409 and "请改用合并" in taken.text
    assert console.post(f"/settings/tags/{tag.id}/rename", {"name": "a:b"}).status_code == 422
    assert console.post(f"/settings/tags/{tag.id}/move", {"direction": "up"}).status_code == 303
    db.expire_all()
    group = db.get_one(Tag, tag.id).group
    assert [t.name for t in sorted(group.tags, key=lambda t: t.sort_order)] == ["浓香", "清香型", "浓香型"]
    assert db.scalar(select(Channel.tag_names).where(Channel.key == "chTaste0000002")) == ["口味:清香型"]
    assert console.post(f"/settings/tag-groups/{group.id}/rename", {"name": "茶香"}).status_code == 303
    db.expire_all()
    assert db.scalar(select(Channel.tag_names).where(Channel.key == "chTaste0000002")) == ["茶香:清香型"]
    before = [g.name for g in customers_service.list_tag_groups(db)]
    console.post(f"/settings/tag-groups/{group.id}/move", {"direction": "up"})
    db.expire_all()
    after = [g.name for g in customers_service.list_tag_groups(db)]
    assert after.index("茶香") == before.index("茶香") - 1
    assert console.post(f"/settings/tags/{tag.id}/move", {"direction": "sideways"}).status_code == 422


def test_computed_tags_are_not_edited_here(console: Console, db: Session) -> None:
    computed = next(t for g in customers_service.list_tag_groups(db) if g.is_computed for t in g.tags)
    response = console.post(f"/settings/tags/{computed.id}/rename", {"name": "别的"})
    assert response.status_code == 422
    assert db.get(Tag, computed.id) is not None and db.get_one(Tag, computed.id).name != "别的"


def test_deleting_a_group_needs_its_count(console: Console, db: Session, make: Any, taste: dict[str, Tag]) -> None:
    make.customer(make.account(), tags=["口味:清香", "口味:浓香"])
    group_id = taste["清香"].group_id
    assert "1 位客户带有这个组的标签" in console.get(f"/settings/tag-groups/{group_id}").text
    assert console.post(f"/settings/tag-groups/{group_id}/delete", {"count": "0"}).status_code == 409
    assert console.post(f"/settings/tag-groups/{group_id}/delete", {"count": "1"}).status_code == 303
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Tag).where(Tag.group_id == group_id)) == 0


# ---------------------------------------------------------------- custom fields


def test_admin_edits_and_retires_a_custom_field(console: Console, db: Session, make: Any) -> None:
    field = customers_service.create_custom_field(db, data=CustomFieldIn(
        key="tea", label="爱喝的茶", field_type="choice", choices=["龙井", "岩茶"]), actor=SYSTEM)  # type: ignore[arg-type]
    customer = make.customer(make.account(), custom_fields={"tea": "岩茶"})
    db.commit()
    held = console.post(f"/settings/fields/{field.id}", {"label": "爱喝的茶", "choices": "龙井"})
    assert held.status_code == 409 and "1 位客户" in held.text
    saved = console.post(f"/settings/fields/{field.id}", {"label": "常喝的茶", "choices": "龙井，岩茶，白茶"})
    assert saved.status_code == 303
    db.expire_all()
    assert (db.get_one(CustomField, field.id).label, db.get_one(CustomField, field.id).choices) == (
        "常喝的茶", ["龙井", "岩茶", "白茶"])
    assert console.post(f"/settings/fields/{field.id}", {"label": "", "choices": "龙井"}).status_code == 422

    assert console.post(f"/settings/fields/{field.id}/retire", {"retired": "1"}).status_code == 303
    db.expire_all()
    assert [f.key for f in customers_service.list_custom_fields(db)] == []
    assert "常喝的茶" not in console.get(f"/customers/{customer.id}").text
    assert customers_service.custom_values(db, customer_id=customer.id).get("tea") in ("岩茶", None)
    assert 'data-testid="manage-field"' in console.get("/settings/tags").text
    assert [e.action for e in db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "custom_field"))][-1] \
        == "retire"


# ---------------------------------------------------------------- a customer added by hand


def test_a_customer_added_by_hand_is_deduplicated_like_an_import(console: Console, db: Session, make: Any,
                                                                 taste: dict[str, Tag]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    response = console.post("/customers/new", {"name": "林小姐", "phone": "138 1234 5678",
                                               "account_id": str(account.id), "remark_name": "林小姐-爱清香",
                                               "tag_ids": [str(taste["清香"].id)]})
    assert response.status_code == 303
    customer = db.scalar(select(Customer).where(Customer.name == "林小姐"))
    assert customer is not None and customer.source == "personal"
    tags = customers_service.customer_tags(db, customer_ids=[customer.id])[customer.id]
    assert [t.name for t in tags if not t.group.is_computed] == ["清香"]
    assert "个人微信" in console.get(f"/customers/{customer.id}").text
    assert _audit(db, "create", "customer")[-1].entity_id == str(customer.id)

    again = console.post("/customers/new", {"name": "Lin", "phone": "+86 13812345678", "account_id": str(account.id)})
    assert again.status_code == 409 and f'href="/customers/{customer.id}"' in again.text
    assert db.scalar(select(func.count()).select_from(Customer)) == 1

    missing = console.post("/customers/new", {"name": "", "phone": "", "account_id": ""})
    assert missing.status_code == 422 and "请选择" in missing.text


def test_an_operator_adds_customers_only_to_their_own_accounts(client: TestClient, db: Session, make: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    console = Console(client).login(operator)
    assert console.post("/customers/new", {"name": "甲", "account_id": str(theirs.id)}).status_code == 422
    assert console.post("/customers/new", {"name": "乙", "account_id": str(mine.id)}).status_code == 303
    assert set(db.scalars(select(Customer.name))) == {"乙"}


def test_a_retired_account_leaves_the_channel_rotation(console: Console, db: Session, make: Any) -> None:
    from siyu.channels import service as channels_service
    from tests.conftest import viewer_of

    first, second = make.account(), make.account()
    channel = channels_service.save_channel(db, viewer=viewer_of(make.user("admin")), data=channels_service.ChannelIn(
        name="轮流", account_ids=[first.id, second.id], account_strategy="round_robin"))
    db.commit()
    console.post(f"/accounts/{first.id}/status", {"status": "retired"})
    db.expire_all()
    picks = {channels_service.pick_account(db, db.get_one(Channel, channel.id))[0] for _n in range(4)}
    assert picks == {second.id}
