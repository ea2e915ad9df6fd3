"""The console in a real browser (Debian's Chromium): the steps an operator takes every day."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def result_names(tab: Any) -> list[str]:
    return [n.strip() for n in tab.page.locator('[data-testid="customer-name"]').all_inner_texts()]


def _live_customers() -> int:
    import os

    from sqlalchemy import func, select

    from siyu.core.db import make_engine
    from siyu.customers.models import Customer

    engine = make_engine(os.environ["SIYU_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            found = conn.execute(select(func.count()).select_from(Customer)
                                 .where(Customer.merged_into_id.is_(None))).scalar_one()
    finally:
        engine.dispose()
    assert found >= 16
    return int(found)


def test_filter_by_two_tags_open_a_customer_edit_a_tag_and_add_a_touch(tab: Any) -> None:
    page = tab.page
    tab.login()
    tab.go("/customers")
    # The seed's 16, and whatever customers other browser tests added to the shared site before this one.
    assert f"共 {_live_customers()} 位客户" in page.inner_text('[data-testid="result-count"]')
    # Two tags from two groups: AND across groups. Each click swaps the results through htmx.
    count = page.locator('[data-testid="result-count"]')
    page.click('label:has(input[data-tag="来源:门店"])')
    expect(count).to_have_text("共 2 位客户")
    page.click('label:has(input[data-tag="人群:宝妈"])')
    expect(count).to_have_text("共 1 位客户")
    assert result_names(tab) == ["王芳"]
    assert re.search(r"tag=\d+.*tag=\d+", page.url), "the filters are in the address bar"
    tab.screenshot("customers-filtered")

    page.click('[data-testid="customer-name"]:text("王芳")')
    page.wait_for_url(re.compile(r"/customers/\d+$"))
    assert page.inner_text('[data-testid="customer-title"]') == "王芳"
    assert "王芳-两娃宝妈爱岩茶" in page.inner_text("#remarks")

    # Edit a tag: add 人群:白领 with one click; the panel, the facts and the timeline follow.
    chip = page.locator('#tag-panel button[data-tag="人群:白领"]')
    assert chip.get_attribute("aria-pressed") == "false"
    chip.click()
    page.wait_for_selector('#tag-panel button[data-tag="人群:白领"][aria-pressed="true"]')
    page.wait_for_selector('#timeline-list [data-kind="tag_change"]:has-text("+ 人群:白领")')
    # …and remove 人群:宝妈 again.
    page.click('#tag-panel button[data-tag="人群:宝妈"]')
    page.wait_for_selector('#tag-panel button[data-tag="人群:宝妈"][aria-pressed="false"]')

    # Add a touch: it appears at the top of the timeline and the contact count goes up.
    contacts_before = int(page.inner_text('[data-testid="contact-count"]'))
    assert page.is_hidden("[data-amount-field]"), "the amount only shows for a purchase"
    page.select_option("#touch-kind", "chat")
    page.fill("#touch-content", "问了今年的春茶，约了周六来店里试喝 🍵")
    page.click('[data-testid="touch-submit"]')
    first = page.locator('#timeline-list [data-testid="timeline-entry"]').first
    expect(first).to_contain_text("约了周六来店里试喝 🍵")
    expect(first).to_contain_text("私聊")
    expect(page.locator('[data-testid="contact-count"]')).to_have_text(str(contacts_before + 1))
    assert page.input_value("#touch-content") == "", "the form is emptied for the next touch"

    # A purchase without an amount is refused next to the form, and nothing is added.
    page.select_option("#touch-kind", "purchase")
    assert page.is_visible("[data-amount-field]")
    page.click('[data-testid="touch-submit"]')
    page.wait_for_selector('#touch-errors :text("购买记录需要填写金额")')
    tab.screenshot("customer-detail")

    page.reload()
    assert "约了周六来店里试喝" in page.inner_text("#timeline-list")
    assert page.locator('#tag-panel button[data-tag="人群:白领"][aria-pressed="true"]').count() == 1
    assert tab.errors == [], tab.errors


def test_customer_page_fits_a_phone_screen(phone: Any) -> None:
    page = phone.page
    phone.login()
    for path in (f"/customers/{phone.site.ids['wangfang']}", f"/customers/{phone.site.ids['wangfang']}?view=sidebar",
                 f"/customers/{phone.site.ids['nasty']}", "/customers"):
        phone.go(path)
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{path} scrolls sideways: {widths}"
    phone.go(f"/customers/{phone.site.ids['wangfang']}")
    phone.screenshot("customer-phone-top", full_page=False)
    phone.go(f"/customers/{phone.site.ids['wangfang']}?view=sidebar")
    assert page.is_hidden(".siyu-nav")
    page.fill("#touch-content", "侧边栏里记一笔")
    page.click('[data-testid="touch-submit"]')
    page.wait_for_selector('#timeline-list :text("侧边栏里记一笔")')
    phone.screenshot("customer-phone-sidebar")
    assert phone.errors == [], phone.errors


def test_hostile_text_stays_text_in_the_browser(tab: Any) -> None:
    page = tab.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.login()
    tab.go("/customers?q=alert")
    assert "<script>alert(1)</script>🍵 مرحبا" in result_names(tab)
    tab.go(f"/customers/{tab.site.ids['nasty']}")
    assert page.inner_text('[data-testid="customer-title"]') == "<script>alert(1)</script>🍵 مرحبا"
    assert "<img src=x onerror=alert(1)>" in page.inner_text("#remarks")
    assert dialogs == []
    assert tab.errors == [], tab.errors


def test_dashboard_draws_the_ladder_and_other_pages_render(tab: Any) -> None:
    page = tab.page
    tab.login()
    page.wait_for_selector('[data-testid="funnel"] svg')
    assert "流量" in page.inner_text('[data-testid="funnel"]')
    tab.screenshot("dashboard")
    for path, marker in (("/accounts", "山野茶舍·西湖店"), ("/users", "xiaoman"), ("/audit", "admin"),
                         ("/settings/tags", "生命周期规则")):
        tab.go(path)
        assert marker in page.inner_text("body"), path
    tab.go("/accounts")
    tab.screenshot("accounts")
    tab.go("/settings/tags")
    tab.screenshot("settings-tags")
    assert tab.errors == [], tab.errors


def test_wecom_test_connection_shows_the_platforms_error_then_success(tab: Any) -> None:
    import os

    from siyu.core.settings import get_settings
    from siyu.simulator.corp import VirtualCorp
    from siyu.simulator.server import RunningServer, ServerOptions, create_app

    server = RunningServer(create_app(VirtualCorp.seeded(1, corp_id="wwBROWSER0000001", salt=0),
                                      ServerOptions(secret="browser-sim-secret"))).start()
    names = ("SIYU_WECOM_CORP_ID", "SIYU_WECOM_SECRET", "SIYU_WECOM_API_BASE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({"SIYU_WECOM_CORP_ID": "wwBROWSER0000001", "SIYU_WECOM_SECRET": "a-wrong-secret",
                       "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"})
    get_settings.cache_clear()
    try:
        page = tab.page
        tab.login()
        tab.go("/wecom")
        page.click('[data-testid="wecom-test"]')
        result = page.locator('[data-testid="wecom-test-result"]')
        expect(result).to_contain_text("企业微信返回 40001：invalid credential")
        assert "a-wrong-secret" not in page.content()
        tab.screenshot("wecom-test-connection-refused")
        os.environ["SIYU_WECOM_SECRET"] = "browser-sim-secret"
        get_settings.cache_clear()
        page.click('[data-testid="wecom-test"]')
        expect(result).to_contain_text("连接成功")
        assert not tab.errors
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        server.stop()


def test_the_navigation_stays_on_one_line_at_1024_px_and_its_groups_open(tab: Any) -> None:
    page = tab.page
    tab.login()
    page.set_viewport_size({"width": 1024, "height": 768})
    tab.go("/segments")
    nav = page.locator('[data-testid="nav"]')
    item = page.locator('[data-testid="nav"] > li').first
    nav_box, item_box = nav.bounding_box(), item.bounding_box()
    assert nav_box is not None and item_box is not None
    assert nav_box["height"] <= item_box["height"] * 1.5, f"the navigation wraps: {nav_box} vs {item_box}"
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    # The open page's group is marked; its list opens on a click and closes on Escape.
    group = page.locator(".siyu-menu.active summary")
    expect(group).to_have_text("客户")
    group.click()
    expect(page.locator('.siyu-menu.active a[aria-current="page"]')).to_have_text("客户分群")
    page.keyboard.press("Escape")
    expect(page.locator(".siyu-menu details[open]")).to_have_count(0)
    page.locator(".siyu-menu summary", has_text="设置").click()
    page.locator(".siyu-menu a", has_text="审计日志").click()
    page.wait_for_url(tab.site.url + "/audit")
    assert tab.errors == [], tab.errors
