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


def test_a_personal_accounts_own_qr_fills_the_phone_width_landing_page_until_it_expires(phone: Any) -> None:
    """The operator's uploaded QR (with its expiry) is what the customer long-presses; an expired one is not shown."""
    import io
    import os
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from siyu.accounts import media
    from siyu.accounts.models import Account
    from siyu.channels.models import Channel
    from siyu.core.db import make_engine
    from siyu.core.settings import local_today

    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    engine = make_engine(os.environ["SIYU_DATABASE_URL"])
    with Session(engine) as session:
        account = session.get(Account, phone.site.ids["online"])
        assert account is not None
        saved = (account.qr_image_url, account.qr_expires_on)
        account.qr_image_url = media.save_image(io.BytesIO(png), field="qr_image")
        account.qr_expires_on = local_today() + timedelta(days=30)
        channel = session.get(Channel, phone.site.ids["channel"])
        assert channel is not None
        key = channel.key
        session.commit()
    try:
        page = phone.page
        phone.go(f"/c/{key}")
        qr = page.locator('[data-testid="landing-qr"]')
        assert qr.get_attribute("src", timeout=5000).startswith("/media/persona/")
        assert "长按识别二维码" in page.inner_text('[data-testid="landing"]')
        box = qr.bounding_box()
        width = page.evaluate("window.innerWidth")
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (box, width)
        assert page.evaluate("document.documentElement.scrollWidth") <= width

        with Session(engine) as session:
            account = session.get(Account, phone.site.ids["online"])
            assert account is not None
            account.qr_expires_on = local_today() - timedelta(days=1)
            session.commit()
        phone.go(f"/c/{key}")
        assert page.locator('[data-testid="landing-qr"]').count() == 0
        assert "shanye-online" in page.inner_text('[data-testid="landing"]')  # the WeChat ID to search instead
        assert phone.errors == [], phone.errors
    finally:
        with Session(engine) as session:
            account = session.get(Account, phone.site.ids["online"])
            assert account is not None
            account.qr_image_url, account.qr_expires_on = saved
            session.commit()
        engine.dispose()
