"""The web console as a user meets it: log in, find customers, read and edit a portrait.

These drive the real app through TestClient with a browser's Accept header and the
CSRF token read from the page, and assert on what the page shows.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from siyu.core.settings import get_settings
from tests.conftest import TEST_PASSWORD

HTML = {"accept": "text/html,application/xhtml+xml"}
HTMX = {**HTML, "hx-request": "true"}
NASTY = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "🍵", "مرحبا"]


class Console:
    """A logged-in browser session against the TestClient."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.client.headers.update(HTML)

    def login(self, user: Any) -> Console:
        page = self.client.get("/login")
        token = csrf_from(page.text)
        response = self.client.post("/login", data={"username": user.username, "password": TEST_PASSWORD,
                                                    "csrf_token": token, "next": "/"}, follow_redirects=False)
        assert response.status_code == 303, response.text
        return self

    def token(self) -> str:
        return csrf_from(self.client.get("/").text)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, **kwargs)

    def post(self, url: str, data: dict[str, Any], *, htmx: bool = False, csrf: bool = True, **kwargs: Any) -> Any:
        data = dict(data)
        headers = dict(HTMX if htmx else HTML)
        if csrf:
            if htmx:
                headers["x-csrf-token"] = self.token()
            else:
                data["csrf_token"] = self.token()
        return self.client.post(url, data=data, headers=headers, follow_redirects=False, **kwargs)


def csrf_from(text: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', text) or re.search(
        r'name="csrf-token" content="([^"]+)"', text)
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def console(client: TestClient) -> Console:
    return Console(client)


def tag_id(db: Any, group: str, name: str) -> int:
    from siyu.customers import service

    return next(t.id for g in service.list_tag_groups(db) if g.name == group for t in g.tags if t.name == name)


def row_names(page_html: str) -> set[str]:
    return {html.unescape(n) for n in re.findall(r'data-testid="customer-name">([^<]*)<', page_html)}


# ---------------------------------------------------------------- log in, CSRF


def test_login_flow_reads_the_csrf_field_and_lands_on_the_dashboard(console: Console, admin: Any) -> None:
    login = console.get("/login")
    assert login.status_code == 200
    assert 'name="csrf_token"' in login.text and 'name="username"' in login.text and 'name="password"' in login.text
    console.login(admin)
    dashboard = console.get("/")
    assert dashboard.status_code == 200
    assert "工作台" in dashboard.text
    assert 'data-testid="current-user"' in dashboard.text


def test_console_pages_send_a_visitor_to_the_login_page(console: Console) -> None:
    response = console.get("/customers", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/customers"


def test_form_post_without_csrf_token_is_refused(console: Console, make: Any, admin: Any) -> None:
    page = console.get("/login")
    refused = console.client.post("/login", data={"username": admin.username, "password": TEST_PASSWORD},
                                  follow_redirects=False)
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    assert csrf_from(page.text)
    customer = make.customer(make.account())
    console.login(admin)
    response = console.post(f"/customers/{customer.id}/touches", {"kind": "chat", "content": "偷偷记一笔"}, csrf=False)
    assert response.status_code == 403
    forged = console.client.post(f"/customers/{customer.id}/touches", data={"kind": "chat", "csrf_token": "forged"},
                                 follow_redirects=False)
    assert forged.status_code == 403
    assert "偷偷记一笔" not in console.get(f"/customers/{customer.id}").text


# ---------------------------------------------------------------- the customer list


@pytest.fixture
def tagged(make: Any, db: Any) -> dict[str, Any]:
    account = make.account(display_name="茶小满")
    other = make.account(display_name="米小鲜")
    people = {
        "甲": make.customer(account, name="甲", tags=["来源:门店", "人群:宝妈"]),
        "乙": make.customer(account, name="乙", tags=["来源:门店", "人群:白领"]),
        "丙": make.customer(account, name="丙", tags=["来源:包裹卡", "人群:宝妈"]),
        "丁": make.customer(other, name="丁", remark_name="丁-爱喝普洱", phones=["13900001234"]),
    }
    make.touch(people["丁"], kind="chat", content="问了新茶")
    return {"account": account, "other": other, **people}


def test_customer_list_filters_tags_and_across_groups_or_within(console: Console, admin: Any, db: Any,
                                                                 tagged: dict[str, Any]) -> None:
    console.login(admin)
    store, mum, office = tag_id(db, "来源", "门店"), tag_id(db, "人群", "宝妈"), tag_id(db, "人群", "白领")
    everyone = console.get("/customers")
    assert everyone.status_code == 200
    assert row_names(everyone.text) == {"甲", "乙", "丙", "丁"}
    assert "共 4 位客户" in everyone.text
    both = console.get("/customers", params={"tag": [store, mum]})
    assert row_names(both.text) == {"甲"}
    assert "共 1 位客户" in both.text
    assert f'value="{store}"' in both.text and "checked" in both.text
    either = console.get("/customers", params={"tag": [mum, office]})
    assert row_names(either.text) == {"甲", "乙", "丙"}
    assert row_names(console.get("/customers", params={"stage": "user"}).text) == {"丁"}
    assert row_names(console.get("/customers", params={"account_id": tagged["other"].id}).text) == {"丁"}
    assert row_names(console.get("/customers", params={"q": "普洱"}).text) == {"丁"}
    assert row_names(console.get("/customers", params={"q": "1234"}).text) == {"丁"}
    assert row_names(console.get("/customers", params={"sort": "name"}).text) == {"甲", "乙", "丙", "丁"}
    touched = console.get("/customers", params={"last_touch_after": "2000-01-01"})
    assert row_names(touched.text) == {"丁"}
    untouched = console.get("/customers", params={"last_touch_before": "2000-01-01"})
    assert row_names(untouched.text) == set()
    assert 'data-testid="empty-state"' in untouched.text
    assert "没有符合筛选条件的客户" in untouched.text


def test_htmx_filter_request_gets_only_the_results_part(console: Console, admin: Any, db: Any,
                                                         tagged: dict[str, Any]) -> None:
    console.login(admin)
    response = console.get("/customers", params={"tag": tag_id(db, "人群", "宝妈")},
                           headers={**HTMX, "hx-target": "results"})
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="results"') or 'id="results"' in response.text[:300]
    assert "<html" not in response.text
    assert row_names(response.text) == {"甲", "丙"}


@pytest.mark.parametrize(("params", "message"), [
    ({"stage": "bogus"}, "未知阶段 bogus"),
    ({"cursor": "not-a-cursor"}, "分页参数无效"),
    ({"cursor": "WyJsYXN0X3RvdWNoIiwieCIsInkiXQ"}, "分页参数无效"),  # right shape, wrong values
    ({"sort": "shoe-size"}, "未知排序方式 shoe-size"),
    ({"last_touch_before": "yesterday"}, "日期 yesterday 无效"),
    ({"account_id": "abc"}, "账号的值无效"),
    ({"tag": "星座:天蝎"}, "未知标签组 星座"),
    ({"tag": "999999"}, "未知标签"),
])
def test_bad_list_parameters_show_a_clear_error(console: Console, admin: Any, params: dict[str, str],
                                                message: str) -> None:
    console.login(admin)
    response = console.get("/customers", params=params)
    assert response.status_code == 422
    assert message in response.text
    assert 'id="customer-filters"' in response.text  # the form stays, so the user can fix it


def test_list_pages_with_a_cursor_that_keeps_the_filters(console: Console, admin: Any, make: Any) -> None:
    account = make.account()
    for n in range(53):
        make.customer(account, name=f"客户{n:02d}", tags=["人群:吃货"])
    make.customer(account, name="不吃货")
    console.login(admin)
    first = console.get("/customers", params={"tag": "人群:吃货", "sort": "name"})
    assert len(row_names(first.text)) == 50
    assert "共 53 位客户" in first.text
    next_url = html.unescape(re.search(r'href="([^"]+)"[^>]*data-testid="next-page"', first.text).group(1))
    assert "cursor=" in next_url and "sort=name" in next_url and "tag=" in next_url
    second = console.get(next_url)
    assert second.status_code == 200
    assert len(row_names(second.text)) == 3
    assert row_names(first.text).isdisjoint(row_names(second.text))
    assert "不吃货" not in second.text
    assert 'data-testid="first-page"' in second.text and "第一页" in second.text
    assert 'data-testid="next-page"' not in second.text


def test_count_shows_an_estimate_past_the_exact_limit(console: Console, admin: Any, make: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    account = make.account()
    for _n in range(4):
        make.customer(account)
    monkeypatch.setenv("SIYU_LIST_EXACT_COUNT_LIMIT", "3")
    get_settings.cache_clear()
    console.login(admin)
    # Past the exact limit the list shows an estimate (small databases: counted outright).
    assert "约 4 位客户" in console.get("/customers").text


# ---------------------------------------------------------------- escaping


def assert_escaped_and_intact(page: str) -> None:
    assert "<script>alert(1)</script>" not in page
    assert "<img src=x onerror=alert(1)>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "🍵" in page
    assert "مرحبا" in page


def test_hostile_names_remarks_and_notes_are_shown_escaped_and_intact(console: Console, admin: Any,
                                                                      make: Any) -> None:
    nasty = " ".join(NASTY)
    account = make.account(display_name=nasty, positioning=nasty)
    customer = make.customer(account, name=nasty, remark_name=nasty, description=nasty, objective_notes=nasty,
                             emotional_notes=nasty, city=nasty[:60], tags=[f"人群:{NASTY[0]}"])
    make.touch(customer, kind="note", content=nasty)
    console.login(admin)
    listing = console.get("/customers").text
    assert_escaped_and_intact(listing)
    detail = console.get(f"/customers/{customer.id}")
    assert detail.status_code == 200
    assert_escaped_and_intact(detail.text)
    for testid in ("remark-name", "description", "objective-notes", "emotional-notes", "touch-content"):
        assert f'data-testid="{testid}">{html.escape(nasty, quote=False)}<' in detail.text.replace("&#34;", '"'), testid
    assert_escaped_and_intact(console.get("/accounts").text)
    audit = console.get("/audit")
    assert "<script>alert(1)</script>" not in audit.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in audit.text


# ---------------------------------------------------------------- the customer page


def test_customer_page_shows_the_portrait(console: Console, admin: Any, make: Any, db: Any) -> None:
    from siyu.core.viewer import SYSTEM
    from siyu.customers import service
    from siyu.customers.schemas import AddressIn, AttachmentIn

    account = make.account(display_name="茶小满")
    customer = make.customer(account, name="王芳", remark_name="王芳-爱喝岩茶", phones=["13812341234"],
                             description="杭州，两个孩子", city="杭州", emotional_notes="说话温柔", tags=["人群:宝妈"])
    service.add_address(db, customer_id=customer.id, viewer=SYSTEM,
                        data=AddressIn(label="家", recipient="王芳", region="浙江省杭州市", detail="西湖区某路1号"))
    service.add_attachment(db, customer_id=customer.id, viewer=SYSTEM,
                           data=AttachmentIn(account_id=account.id, title="名片", url="https://example.com/card.png"))
    service.add_attachment(db, customer_id=customer.id, viewer=SYSTEM,
                           data=AttachmentIn(account_id=account.id, kind="card", title="坏链接",
                                             url="javascript:alert(1)"))
    db.commit()
    make.touch(customer, kind="purchase", content="明前龙井", amount="368")
    console.login(admin)
    page = console.get(f"/customers/{customer.id}")
    assert page.status_code == 200
    text = page.text
    for expected in ("王芳-爱喝岩茶", "茶小满", "13812341234", "杭州，两个孩子", "说话温柔", "西湖区某路1号",
                     "https://example.com/card.png", "明前龙井", "¥368.00", "购买", "宝妈", "资料完整度"):
        assert expected in text, expected
    assert 'href="javascript:' not in text
    assert 'data-testid="stage"' in text and "客户" in text
    assert "<option value=\"chat\"" in text and "<option value=\"tag_change\"" not in text  # manual kinds only


def test_operator_gets_a_404_page_for_another_accounts_customer(console: Console, make: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    other = make.customer(theirs, name="别人的客户")
    own = make.customer(mine, name="自己的客户")
    console.login(operator)
    response = console.get(f"/customers/{other.id}")
    assert response.status_code == 404
    assert "客户不存在" in response.text
    assert "别人的客户" not in response.text
    assert console.post(f"/customers/{other.id}/touches", {"kind": "chat"}).status_code == 404
    assert console.post(f"/customers/{other.id}/tags", {"add": "1"}, htmx=True).status_code == 404
    assert console.get(f"/customers/{other.id}/touches", headers=HTMX).status_code == 404
    assert console.get(f"/customers/{own.id}").status_code == 200
    assert row_names(console.get("/customers").text) == {"自己的客户"}


def test_over_long_description_is_refused_with_the_field_named(console: Console, admin: Any, make: Any) -> None:
    account = make.account()
    customer = make.customer(account, description="原来的描述")
    console.login(admin)
    whole = console.post(f"/customers/{customer.id}", {"section": "remark", "account_id": account.id,
                                                       "remark_name": "新备注", "description": "描" * 1_000_000})
    assert whole.status_code == 413  # a 9 MB form: refused unread, before the field could be checked
    assert "请求内容超过 1 MB" in whole.text
    response = console.post(f"/customers/{customer.id}", {"section": "remark", "account_id": account.id,
                                                          "remark_name": "新备注", "description": "描" * 30_000})
    assert response.status_code == 422
    error = re.search(r'data-testid="error-description">([^<]*)<', response.text)
    assert error, "the description field's error is shown next to it"
    assert error.group(1).startswith("描述：太长了：最多 20000 个字符")
    page = console.get(f"/customers/{customer.id}").text
    assert "原来的描述" in page and "新备注" not in page


def test_portrait_and_remark_edits_are_saved_and_land_on_the_timeline(console: Console, admin: Any,
                                                                      make: Any) -> None:
    account = make.account()
    customer = make.customer(account, name="李雷")
    console.login(admin)
    saved = console.post(f"/customers/{customer.id}", {
        "section": "portrait", "name": "李雷", "city": "苏州", "job": "教师", "gender": "男",
        "objective_notes": "两个孩子\n住滨江", "emotional_notes": "爱笑"})
    assert saved.status_code == 303
    assert saved.headers["location"].startswith(f"/customers/{customer.id}?done=saved")
    remark = console.post(f"/customers/{customer.id}", {
        "section": "remark", "account_id": account.id, "remark_name": "李雷-爱喝普洱",
        "phones": "139 0000 1234\n13800001111", "description": "住在滨江"})
    assert remark.status_code == 303
    page = console.get(remark.headers["location"]).text
    for expected in ("苏州", "教师", "两个孩子\n住滨江", "李雷-爱喝普洱", "13900001234", "13800001111", "已保存"):
        assert expected in page, expected
    assert "资料变更" in page and "城市" in page  # the field_change touch names the fields
    bad = console.post(f"/customers/{customer.id}", {"section": "remark", "account_id": account.id,
                                                      "phones": "not a phone"})
    assert bad.status_code == 422
    assert "电话：格式不正确" in bad.text
    assert "not a phone" in bad.text  # what was typed is kept
    blank = console.post(f"/customers/{customer.id}", {"section": "portrait", "name": ""})
    assert blank.status_code == 422
    assert 'data-testid="error-name">姓名：必填' in blank.text


def test_custom_fields_on_the_portrait_form(console: Console, admin: Any, make: Any, db: Any) -> None:
    from siyu.core.viewer import SYSTEM
    from siyu.customers import service
    from siyu.customers.schemas import CustomFieldIn

    service.create_custom_field(db, data=CustomFieldIn(key="birthday", label="生日", field_type="date"), actor=SYSTEM)
    service.create_custom_field(db, data=CustomFieldIn(key="tea", label="口味", field_type="choice",
                                                       choices=["绿茶", "红茶"]), actor=SYSTEM)
    db.commit()
    customer = make.customer(make.account())
    console.login(admin)
    ok = console.post(f"/customers/{customer.id}", {"section": "portrait", "name": customer.name,
                                                     "custom.birthday": "1990-05-01", "custom.tea": "红茶"})
    assert ok.status_code == 303
    page = console.get(f"/customers/{customer.id}").text
    assert "1990-05-01" in page and "红茶" in page
    bad = console.post(f"/customers/{customer.id}", {"section": "portrait", "name": customer.name,
                                                      "custom.birthday": "明天"})
    assert bad.status_code == 422
    assert 'data-testid="error-custom.birthday">生日必须是日期' in bad.text


def test_tag_editor_toggles_chips_with_htmx(console: Console, admin: Any, make: Any, db: Any) -> None:
    customer = make.customer(make.account(), tags=["人群:宝妈"])
    mum, office = tag_id(db, "人群", "宝妈"), tag_id(db, "人群", "白领")
    console.login(admin)
    added = console.post(f"/customers/{customer.id}/tags", {"add": office}, htmx=True)
    assert added.status_code == 200
    assert '<div id="tag-panel"' in added.text and "<html" not in added.text
    assert re.search(rf'name="remove" value="{office}"', added.text)
    assert 'hx-swap-oob="true"' in added.text  # the facts card follows
    assert "afterbegin:#timeline-list" in added.text and "+ 人群:白领" in added.text
    removed = console.post(f"/customers/{customer.id}/tags", {"remove": mum}, htmx=True)
    assert re.search(rf'name="add" value="{mum}"', removed.text)
    created = console.post(f"/customers/{customer.id}/tags", {"new_tag": "人群：茶艺爱好者"}, htmx=True)
    assert created.status_code == 200
    assert "茶艺爱好者" in created.text
    unknown = console.post(f"/customers/{customer.id}/tags", {"new_tag": "星座:天蝎"}, htmx=True)
    assert unknown.status_code == 422
    assert unknown.headers["hx-retarget"] == "#tag-errors"
    assert "未知标签组 星座" in unknown.text
    computed = console.post(f"/customers/{customer.id}/tags", {"add": tag_id(db, "等级", "V1 新朋友")}, htmx=True)
    assert computed.status_code == 422
    assert "自动计算" in computed.text
    plain = console.post(f"/customers/{customer.id}/tags", {"remove": office})
    assert plain.status_code == 303
    page = console.get(plain.headers["location"]).text
    assert re.search(rf'name="add" value="{office}"', page)
    assert "标签已更新" in page


def test_add_a_touch_with_htmx_prepends_it_and_refreshes_the_facts(console: Console, admin: Any,
                                                                   make: Any) -> None:
    account = make.account(display_name="茶小满")
    customer = make.customer(account)
    console.login(admin)
    response = console.post(f"/customers/{customer.id}/touches", {
        "kind": "purchase", "content": "买了明前龙井 🍵", "amount": "368", "account_id": account.id}, htmx=True)
    assert response.status_code == 200, response.text
    assert response.text.lstrip().startswith('<div class="timeline-entry"')
    assert "买了明前龙井 🍵" in response.text and "¥368.00" in response.text and "茶小满" in response.text
    assert 'id="facts"' in response.text and 'data-testid="purchase-count">1' in response.text
    # The header's stage badge follows the ladder (an out-of-band swap with the new stage).
    badges = response.text.split('<span id="customer-badges"')[1].split("</span></span>")[0]
    assert 'hx-swap-oob="true"' in badges and 'data-stage="customer"' in badges
    missing_amount = console.post(f"/customers/{customer.id}/touches", {"kind": "purchase"}, htmx=True)
    assert missing_amount.status_code == 422
    assert missing_amount.headers["hx-retarget"] == "#touch-errors"
    assert "购买记录需要填写金额" in missing_amount.text
    system_kind = console.post(f"/customers/{customer.id}/touches", {"kind": "tag_change"}, htmx=True)
    assert system_kind.status_code == 422
    future = console.post(f"/customers/{customer.id}/touches", {"kind": "chat", "occurred_at": "2999-01-01T10:00"},
                          htmx=True)
    assert future.status_code == 422 and "不能晚于现在" in future.text
    plain = console.post(f"/customers/{customer.id}/touches", {"kind": "chat", "content": "聊了聊春茶",
                                                               "occurred_at": "2024-05-01T14:30"})
    assert plain.status_code == 303
    page = console.get(plain.headers["location"]).text
    assert "聊了聊春茶" in page and "2024-05-01 14:30" in page
    assert page.index("买了明前龙井") < page.index("聊了聊春茶")  # newest first


def test_timeline_pages_with_more(console: Console, admin: Any, make: Any) -> None:
    customer = make.customer(make.account())
    for n in range(25):
        make.touch(customer, kind="note", content=f"第{n:02d}条")
    console.login(admin)
    page = console.get(f"/customers/{customer.id}").text
    assert "第24条" in page and "第05条" in page and "第04条" not in page
    more = re.search(r'hx-get="(/customers/\d+/touches\?[^"]+)"', page)
    assert more
    rest = console.get(html.unescape(more.group(1)), headers=HTMX)
    assert rest.status_code == 200
    assert "第04条" in rest.text and "第00条" in rest.text and "第05条" not in rest.text
    assert '<div id="timeline-more" hx-swap-oob="true">' in rest.text
    no_js = console.get(html.unescape(more.group(1)), follow_redirects=False)
    assert no_js.status_code == 303 and "touches_cursor=" in no_js.headers["location"]
    assert "第04条" in console.get(no_js.headers["location"]).text
    assert console.get(f"/customers/{customer.id}", params={"touches_cursor": "garbage"}).status_code == 422


def test_sidebar_view_hides_navigation_and_keeps_the_view_after_saving(console: Console, admin: Any,
                                                                       make: Any) -> None:
    customer = make.customer(make.account())
    console.login(admin)
    page = console.get(f"/customers/{customer.id}", params={"view": "sidebar"}).text
    assert '<body class="siyu-sidebar">' in page
    saved = console.post(f"/customers/{customer.id}/touches", {"kind": "chat", "content": "hi", "view": "sidebar"})
    assert "view=sidebar" in saved.headers["location"]


def test_addresses_can_be_added_and_deleted(console: Console, admin: Any, make: Any) -> None:
    customer = make.customer(make.account())
    console.login(admin)
    added = console.post(f"/customers/{customer.id}/addresses", {"label": "公司", "recipient": "王芳",
                                                                 "region": "上海市", "detail": "静安区某路"})
    assert added.status_code == 303
    page = console.get(f"/customers/{customer.id}").text
    assert "静安区某路" in page
    address_id = re.search(r'/addresses/(\d+)/delete', page).group(1)
    too_long = console.post(f"/customers/{customer.id}/addresses", {"detail": "路" * 300})
    assert too_long.status_code == 422 and "详细地址：太长了" in too_long.text
    deleted = console.post(f"/customers/{customer.id}/addresses/{address_id}/delete", {})
    assert deleted.status_code == 303
    assert "静安区某路" not in console.get(f"/customers/{customer.id}").text


# ---------------------------------------------------------------- language


def test_console_is_chinese_by_default_and_english_after_switching(console: Console, admin: Any,
                                                                   make: Any) -> None:
    make.customer(make.account())
    console.login(admin)
    chinese = console.get("/customers").text
    assert '<html lang="zh-CN">' in chinese
    assert "客户" in chinese and "筛选" in chinese and "流量" in chinese
    switched = console.get("/lang/en", headers={**HTML, "referer": "http://testserver/customers"},
                           follow_redirects=False)
    assert switched.status_code == 303
    english = console.get("/customers").text
    assert '<html lang="en">' in english
    assert "Customers" in english and "Filter" in english and "Traffic" in english
    assert "筛选" not in english and "stage.traffic" not in english
    assert "Administrator" in english  # role names have English labels too


def test_custom_field_types_have_labels_in_both_languages() -> None:
    from siyu.core.i18n import catalogue
    from siyu.customers.models import FieldType

    for locale in ("zh-CN", "en"):
        known = catalogue(locale)
        assert not [t for t in FieldType if f"field_type.{t.value}" not in known], locale


# ---------------------------------------------------------------- accounts, team, audit, settings, dashboard


def test_accounts_page_shows_personas_and_warns_near_capacity(console: Console, admin: Any, make: Any) -> None:
    full = make.account(display_name="茶小满1号", friend_capacity=2, positioning="福利官", signature="每天一杯好茶",
                        greeting="你好呀，我是茶小满", kind="wecom", store="杭州西湖店", tier_served="VIP",
                        owner_user_id=admin.id)
    make.account(display_name="米小鲜", kind="personal", wecom_userid=None)
    make.customer(full)
    make.customer(full)
    console.login(admin)
    page = console.get("/accounts").text
    for expected in ("茶小满1号", "福利官", "每天一杯好茶", "你好呀，我是茶小满", "杭州西湖店", "VIP", "企业微信",
                     "个人微信", admin.display_name):
        assert expected in page, expected
    assert 'data-testid="capacity-warning"' in page and "100.0%" in page
    assert page.count('data-testid="capacity-warning"') == 1


def test_users_page_is_for_admins_and_creates_users(console: Console, admin: Any, make: Any) -> None:
    account = make.account(display_name="茶小满")
    operator = make.user("operator", accounts=[account])
    console.login(operator)
    assert console.get("/users").status_code == 403
    assert console.get("/audit").status_code == 403
    console.client.cookies.clear()
    console.login(admin)
    page = console.get("/users").text
    assert operator.username in page and "运维" in page and "茶小满" in page
    created = console.post("/users", {"username": "xiaomei", "display_name": "小美", "password": "long-enough-pw",
                                      "role": "service", "account_ids": str(account.id)})
    assert created.status_code == 303
    page = console.get("/users").text
    assert "xiaomei" in page and "小美" in page and "客服" in page
    duplicate = console.post("/users", {"username": "xiaomei", "password": "long-enough-pw", "role": "service"})
    assert duplicate.status_code == 422 and "已被占用" in duplicate.text


def test_audit_page_filters_and_pages(console: Console, admin: Any, make: Any) -> None:
    account = make.account()
    for n in range(3):
        make.customer(account, name=f"审计{n}")
    console.login(admin)
    page = console.get("/audit", params={"entity_type": "customer"})
    assert page.status_code == 200
    assert page.text.count('data-testid="audit-entry"') == 3
    # The object by its name, linked to its page; the creation's fields by their labels.
    assert re.search(r'<span class="text-secondary">客户</span>\s*<a href="/customers/\d+">审计2</a>', page.text)
    assert '<td class="text-nowrap">姓名</td>' in page.text and "name</td>" not in page.text
    everything = console.get("/audit").text
    assert everything.count('data-testid="audit-entry"') > 3
    assert console.get("/audit", params={"cursor": "bad"}).status_code == 422


def test_tags_settings_page(console: Console, admin: Any, make: Any) -> None:
    operator = make.user("operator")
    console.login(operator)
    page = console.get("/settings/tags")
    assert page.status_code == 200
    assert "来源" in page.text and "生命周期规则" in page.text and "至少购买 1 次" in page.text
    assert 'data-testid="rules-form"' not in page.text
    assert console.post("/settings/tags/groups", {"name": "口味"}).status_code == 403
    group_id = re.search(r'action="/settings/tags/groups/(\d+)/tags"', page.text).group(1)
    assert console.post(f"/settings/tags/groups/{group_id}/tags", {"name": "老客户"}).status_code == 303
    console.client.cookies.clear()
    console.login(admin)
    assert console.post("/settings/tags/groups", {"name": "口味", "multi_select": "1"}).status_code == 303
    again = console.post("/settings/tags/groups", {"name": "口味"})
    assert again.status_code == 422 and "标签组 口味 已存在" in again.text
    field = console.post("/settings/fields", {"key": "tea", "label": "口味偏好", "field_type": "choice",
                                              "choices": "绿茶，红茶, 乌龙"})
    assert field.status_code == 303
    bad_field = console.post("/settings/fields", {"key": "Bad Key", "label": "x", "field_type": "text"})
    assert bad_field.status_code == 422 and "键名：格式不正确" in bad_field.text
    page = console.get("/settings/tags").text
    assert "口味" in page and "老客户" in page and "绿茶、红茶、乌龙" in page


def test_lifecycle_rules_form_saves_and_recomputes(console: Console, admin: Any, make: Any) -> None:
    customer = make.customer(make.account())
    make.touch(customer, kind="chat")
    console.login(admin)
    page = console.get("/settings/tags").text
    form = {
        "user_min_contacts": "2", "customer_min_purchases": "1", "fan_min_purchases": "3", "fan_min_contacts": "10",
        "contact_buckets.min": ["0", "1", ""], "contact_buckets.label": ["未沟通", "聊过", ""],
        "purchase_buckets.min": ["0", "1"], "purchase_buckets.label": ["未购买", "买过"],
        "levels.min_total": ["0", "500"], "levels.label": ["新朋友", "老朋友"],
    }
    assert 'data-testid="rules-form"' in page
    saved = console.post("/settings/rules", form)
    assert saved.status_code == 303 and "job=" in saved.headers["location"]
    after = console.get(saved.headers["location"]).text
    assert "规则已保存，正在后台重新计算所有客户" in after and "至少 2 次双向沟通" in after
    job_page = console.get(re.search(r'href="(/jobs/\d+)" data-testid="job-link"', after).group(1)).text
    assert 'data-status="succeeded"' in job_page
    assert "流量" in console.get(f"/customers/{customer.id}").text
    bad = console.post("/settings/rules", {**form, "customer_min_purchases": "0"})
    assert bad.status_code == 422 and "成为客户所需购买次数：不能小于 1" in bad.text


def test_dashboard_shows_the_ladder_and_capacity(console: Console, admin: Any, make: Any) -> None:
    account = make.account(display_name="茶小满", friend_capacity=3)
    make.customer(account)
    talked = make.customer(account)
    make.touch(talked, kind="chat")
    console.login(admin)
    page = console.get("/").text
    assert "/static/vendor/echarts/echarts.min.js" in page
    funnel = json.loads(html.unescape(re.search(r"data-funnel='([^']+)'", page).group(1)))
    assert [(item["name"], item["value"], item["current"]) for item in funnel["items"]] == [
        ("流量", 2, 1), ("用户", 1, 1), ("客户", 0, 0), ("粉丝", 0, 0)]
    assert "茶小满" in page and "66.7%" in page
    assert "<script>" not in page.split("</head>")[1]  # no inline scripts in the body


def test_dashboard_says_how_many_accounts_it_shows_of_all(console: Console, admin: Any, make: Any) -> None:
    for n in range(7):
        make.account(display_name=f"账号{n}")
    page = console.login(admin).get("/")
    assert page.text.count('data-testid="dashboard-account"') == 6
    assert "查看全部 7 个账号" in page.text
