"""Two agents in the service inbox: a customer writes, the queue updates live, a quick reply goes
out — through the WeCom connector to the WeCom simulator, which is where the customer receives it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from siyu.accounts.models import Account
from siyu.core.db import transaction
from siyu.core.settings import get_settings
from siyu.customers.models import Customer
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom import connectors as wecom_connector
from siyu.wecom import send_results
from siyu.wecom.client import client_for
from tests.browser.conftest import _open_tab

pytestmark = pytest.mark.browser

CORP_ID = "wwBROWSERINBOX01"
SECRET = "browser-inbox-secret"
DELIVERED = "已送达"
WAITING_FOR_MEMBER = "已提交企业微信，等待成员确认发送"


@pytest.fixture
def wecom(live_site: Any) -> Iterator[tuple[VirtualCorp, str]]:
    """The simulator with the store account's member and 王芳 as its customer; Siyu pointed at it."""
    with transaction() as session:
        member = str(session.get(Account, live_site.ids["shop"]).wecom_userid)  # type: ignore[union-attr]
    corp = VirtualCorp.seeded(1, corp_id=CORP_ID, members=[(member, "茶小满")], contacts_per_member=3,
                              groups_per_member=0, salt=0)
    external = str(corp.add_contact(member, name="王芳")["external_userid"])
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    settings = {"SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET,
                "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    get_settings.cache_clear()
    with transaction() as session:
        session.get(Customer, live_site.ids["wangfang"]).wecom_external_userid = external  # type: ignore[union-attr]
    wecom_connector.register()
    try:
        yield corp, external
    finally:
        with transaction() as session:
            session.get(Customer, live_site.ids["wangfang"]).wecom_external_userid = None  # type: ignore[union-attr]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        server.stop()


def test_a_customer_message_appears_live_and_gets_a_quick_reply(chromium: Any, live_site: Any,
                                                                 wecom: tuple[VirtualCorp, str]) -> None:
    corp, external = wecom
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
        # The store's WeCom member's own chat is read-only: a reply goes as the one-customer mass send
        # the member confirms (需成员确认的群发).
        agent_a.page.click("[data-testid=member-send] summary")
        form = "[data-testid=member-send-form]"
        agent_a.page.click(f"{form} [data-testid=canned-replies] button:has-text('问候')")
        text = agent_a.page.input_value(f"{form} textarea[name=text]")
        assert text == "王姐您好，我是山野茶舍·西湖店，有什么可以帮您？"  # the salutation, never the remark name
        agent_a.page.click(f"{form} button[type=submit]")
        agent_a.page.wait_for_selector("[data-direction=out]")
        # The customer's phone — the simulator — has it, once, from the store's WeCom member.
        deadline = time.monotonic() + 5
        while not corp.received(external_userid=external) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(r["text"], r["sender"]) for r in corp.received(external_userid=external)] == [
            (text, corp.state.members[0].userid)]
        agent_a.page.reload()
        delivery = agent_a.page.locator("[data-direction=out] [data-testid=delivery]")
        assert delivery.inner_text() == WAITING_FOR_MEMBER  # WeCom took the send task; its result comes later
        # The periodic job reads WeCom's send result back (run here as if its first look were due).
        with transaction() as session:
            api = client_for(session, policy=send_results.ONE_TRY)
        assert send_results.check_due(transaction, api, now=datetime.now(UTC) + timedelta(minutes=2)).delivered == 1
        agent_a.page.reload()
        assert delivery.inner_text() == DELIVERED
        agent_a.screenshot("inbox-conversation", full_page=False)
        assert agent_a.errors == [] and agent_b.errors == []
    finally:
        agent_a.page.context.close()
        agent_b.page.context.close()
