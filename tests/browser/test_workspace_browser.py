"""The three-pane service workspace: a conversation opens beside the queue (which stays), a reply
that the platform refuses is shown red with its reason and a 重试 button, and the conversation stays
in the unanswered queue. Screenshots at 1440 and 1024 pixels."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.browser.conftest import _open_tab

pytestmark = pytest.mark.browser


def test_open_a_conversation_beside_the_queue_and_retry_a_failed_reply(chromium: Any, live_site: Any) -> None:
    # A personal WeChat account (no connection can send for it yet): every reply is refused.
    token = httpx.post(f"{live_site.url}/api/v1/auth/token",
                       data={"username": "admin", "password": live_site.password}).json()["access_token"]
    sent = httpx.post(f"{live_site.url}/api/v1/inbox/messages", headers={"Authorization": f"Bearer {token}"},
                      json=[{"source": "simulator", "platform_msgid": f"workspace-{n}",
                             "account_id": live_site.ids["online"], "customer_id": live_site.ids[who],
                             "sent_at": datetime.now(UTC).isoformat(), "text": text}
                            for n, (who, text) in enumerate([("lina", "我的快递发货了吗？"),
                                                             ("wangfang", "周末门店几点开门？")])])
    assert sent.status_code == 202, sent.text
    tab = next(_open_tab(chromium, live_site, viewport={"width": 1440, "height": 900}))
    try:
        tab.login("admin")
        tab.go("/inbox")
        page = tab.page
        rows = page.locator("[data-testid=conversation-row]")
        assert rows.count() >= 2
        assert page.inner_text("[data-testid=count-unanswered]").startswith("未回复 ")
        # Keyword filter: "everyone who asked 发货".
        page.fill("[data-testid=queue-asked]", "发货")
        page.click("[data-testid=queue-filter-submit]")
        page.wait_for_url("**asked=**")
        assert rows.count() == 1 and "李娜" in rows.first.inner_text()
        tab.go("/inbox")

        page.click("[data-testid=conversation-row]:has-text('李娜')")
        page.wait_for_selector("[data-testid=reply-form]")
        assert page.url.endswith("/inbox/" + page.get_attribute(
            "[data-testid=conversation-row]:has-text('李娜')", "data-conversation-id"))
        assert page.locator("[data-testid=conversation-row]").count() >= 2  # the queue is still there
        assert page.is_visible("[data-testid=portrait]")
        page.frame_locator("[data-testid=portrait]").locator("[data-testid=customer-title]").wait_for()
        tab.screenshot("inbox-workspace-1440", full_page=False)

        page.fill("textarea[name=text]", "您好，已经发出了，单号稍后发您")
        page.click("[data-testid=send]")
        failed = page.locator("[data-delivery=failed]")
        failed.wait_for()
        assert "未送达" in failed.inner_text()
        assert page.is_visible("[data-delivery=failed] [data-testid=retry]")
        # Not handled: still in the unanswered queue beside it.
        assert page.locator("[data-testid=conversation-row]:has-text('李娜')").count() == 1
        page.click("[data-delivery=failed] [data-testid=retry]")
        page.locator("[data-delivery=failed] [data-testid=retry]").wait_for()  # tried again, refused again
        page.set_viewport_size({"width": 1024, "height": 800})
        tab.screenshot("inbox-workspace-1024", full_page=False)
        assert tab.errors == []
    finally:
        tab.page.context.close()
