"""An offline event end to end in a browser: a planner creates it, a customer signs up on their phone through
the public link (390 px wide), and staff check them in by opening the sign-up's check-in page on a phone."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


def test_public_sign_up_on_a_phone_and_staff_check_in_at_the_door(tab: Any, phone: Any, chromium: Any) -> None:
    tab.login()
    tab.go("/offline-events/new")
    tab.page.fill("#ev-name", "春茶品鉴会")
    tab.page.select_option("#ev-kind", "tasting")
    tab.page.fill("#ev-capacity", "20")
    tab.page.fill("#ev-start", "2030-04-05T14:00")
    tab.page.fill("#ev-end", "2030-04-05T16:00")
    tab.page.fill("#ev-place", "杭州西湖店二楼茶室")
    tab.page.fill("#ev-desc", "老周带大家品三款明前龙井，现场冲泡，茶点管够。")
    tab.page.click('[data-testid="event-save"]')
    tab.page.wait_for_selector('[data-testid="event-name"]')
    link = tab.page.get_attribute('[data-testid="public-link"]', "href")
    assert link and "/e/" in link
    tab.screenshot("offline-event-detail")

    # The customer, on their phone: no login.
    page = phone.page
    page.goto(link)
    assert "春茶品鉴会" in page.inner_text('[data-testid="public-event"]')
    page.fill("#su-name", "王芳")
    page.fill("#su-phone", "1381234")
    page.click('[data-testid="public-submit"]')
    assert "请输入 11 位手机号码" in page.inner_text('[data-testid="error-phone"]')
    assert page.input_value("#su-name") == "王芳"
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the sign-up page scrolls sideways: {widths}"
    phone.screenshot("offline-public-form-phone")
    page.fill("#su-phone", "138 1234 1234")
    page.click('[data-testid="public-submit"]')
    page.wait_for_selector('[data-testid="ticket-qr"]')
    assert "王芳，报名成功" in page.inner_text('[data-testid="ticket-status"]')
    assert page.evaluate("document.querySelector('[data-testid=ticket-qr]').naturalWidth") > 100
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the ticket page scrolls sideways: {widths}"
    phone.screenshot("offline-ticket-phone")
    ticket = page.url.rsplit("/t/", 1)[1].split("?")[0]
    assert phone.errors == [], phone.errors

    # Staff at the door: their phone opens what the QR holds, the check-in page (login required).
    context = chromium.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", viewport={"width": 390, "height": 844},
                                   is_mobile=True, has_touch=True)
    staff = context.new_page()
    try:
        staff.goto(f"{tab.site.url}/offline-events/checkin/{ticket}")
        assert "/login" in staff.url
        staff.fill("#username", "admin")
        staff.fill("#password", tab.site.password)
        staff.click("button[type=submit]")
        staff.wait_for_selector('[data-testid="checkin-submit"]')
        assert "王芳" in staff.inner_text('[data-testid="checkin-name"]')
        staff.click('[data-testid="checkin-submit"]')
        assert "签到成功" in staff.inner_text('[data-testid="checkin-done"]')
        staff.screenshot(path=str(_artifact("offline-checkin-staff-phone")), full_page=True)
    finally:
        context.close()

    tab.page.reload()
    assert tab.page.inner_text('[data-testid="count-attended"]') == "1"
    tab.page.goto(tab.page.url.split("?")[0].split("#")[0] + "?status=attended")
    assert "王芳" in tab.page.inner_text('[data-testid="signup-list"]')
    assert tab.errors == [], tab.errors


def _artifact(name: str) -> Any:
    from tests.browser.conftest import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"{name}.png"
