"""Two agents in the service inbox: a customer writes, the queue updates live, a quick reply goes out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from siyu.inbox import delivery
from tests.browser.conftest import _open_tab
from tests.conftest import RecordingConnector

pytestmark = pytest.mark.browser


def test_a_customer_message_appears_live_and_gets_a_quick_reply(chromium: Any, live_site: Any) -> None:
    connector = RecordingConnector()

    def factory(_account: Any) -> RecordingConnector:
        return connector

    delivery.register(factory)
    agent_a = next(_open_tab(chromium, live_site, viewport={"width": 1366, "height": 900}))
    agent_b = next(_open_tab(chromium, live_site, viewport={"width": 1366, "height": 900}))
    try:
        agent_a.login("kefu.a")
        agent_a.go("/inbox")
        agent_a.page.click("[data-testid=go-online]")
        agent_a.page.wait_for_selector("[data-testid=go-away]")
        agent_b.login("kefu.b")
        agent_b.go("/inbox")
        assert agent_a.page.locator("[data-testid=conversation-row]").count() == 0

        # The customer writes (here through the connector API, as the WeCom callback or simulator would).
        token = httpx.post(f"{live_site.url}/api/v1/auth/token",
                           data={"username": "admin", "password": live_site.password}).json()["access_token"]
        sent = httpx.post(f"{live_site.url}/api/v1/inbox/messages", headers={"Authorization": f"Bearer {token}"},
                          json=[{"source": "simulator", "platform_msgid": "browser-1",
                                 "account_id": live_site.ids["shop"], "customer_id": live_site.ids["wangfang"],
                                 "sent_at": datetime.now(UTC).isoformat(), "text": "请问明前龙井还有货吗？"}])
        assert sent.status_code == 202, sent.text

        # Both queues update without a reload (server-sent events).
        row = "[data-testid=conversation-row]:has-text('王芳')"
        agent_a.page.wait_for_selector(row, timeout=10000)
        agent_b.page.wait_for_selector(row, timeout=10000)
        agent_a.page.click(row)
        agent_a.page.wait_for_selector("[data-testid=reply-form]")
        agent_a.page.click("[data-testid=canned-replies] button:has-text('问候')")
        text = agent_a.page.input_value("textarea[name=text]")
        assert text == "王芳-两娃宝妈爱岩茶您好，我是山野茶舍·西湖店，有什么可以帮您？"
        agent_a.page.click("[data-testid=send]")
        agent_a.page.wait_for_selector("[data-direction=out]")
        assert [o.text for o in connector.sent] == [text]
        agent_a.screenshot("inbox-conversation", full_page=False)
        assert agent_a.errors == [] and agent_b.errors == []
    finally:
        delivery.unregister(factory)
        agent_a.page.context.close()
        agent_b.page.context.close()
