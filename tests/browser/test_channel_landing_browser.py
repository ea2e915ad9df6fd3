"""A channel's QR leads a customer to a page on their phone that says whom to add and how."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


def test_the_channel_landing_page_fits_a_phone_and_names_the_persona_not_the_channel(tab: Any, phone: Any) -> None:
    tab.login()
    tab.go(f"/channels/{tab.site.ids['channel']}")
    link = tab.page.get_attribute('[data-testid="landing-link"]', "href")
    assert link and "/c/" in link
    page = phone.page
    page.goto(link)
    landing = page.inner_text('[data-testid="landing"]')
    assert "山野茶舍·线上" in landing and "加好友领 5 元无门槛券" in landing and "shanye-online" in landing
    assert "包裹卡第2批" not in page.content()
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the landing page scrolls sideways: {widths}"
    phone.screenshot("channel-landing-phone")
    assert phone.errors == [], phone.errors
