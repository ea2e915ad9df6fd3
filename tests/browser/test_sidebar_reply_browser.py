"""The chat toolbar's reply panel puts the suggested reply into the member's open WeCom chat with the
JS-SDK's sendChatMessage after agentConfig. WeCom's JS-SDK and its signed agentConfig parameters exist only
inside WeCom's client, so this test injects a STAND-IN ``wx`` object (recording its calls) and a stand-in
answer for /sidebar/agent-config; the page itself never loads the JS-SDK outside WeCom."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from siyu.accounts.models import Account
from siyu.autoreply import service as autoreply_service
from siyu.autoreply.models import MatchKind
from siyu.core.db import transaction, utcnow
from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service
from siyu.customers.schemas import CustomerIn
from siyu.inbox import service as inbox_service
from siyu.inbox.models import Channel, Conversation

pytestmark = pytest.mark.browser

STAND_IN_WX = """
window.__wxCalls = [];
window.wx = {  // a stand-in for WeCom's JS-SDK, named as such: the real one exists only inside WeCom
  agentConfig: function (config) { window.__wxCalls.push(["agentConfig", config.jsApiList, config.signature]);
                                   config.success({}); },
  invoke: function (name, args, callback) { window.__wxCalls.push([name, args]);
                                            callback({err_msg: name + ":ok"}); }
};
"""


def test_sidebar_puts_the_suggested_reply_into_the_chat_with_a_stand_in_wx_object(tab: Any, live_site: Any) -> None:
    with transaction() as session:
        account = session.get(Account, live_site.ids["shop"])
        assert account is not None
        rule = autoreply_service.save_rule(session, data=autoreply_service.RuleIn(
            name="优惠咨询", match_kind=MatchKind.contains, keywords=["优惠"], reply="您好，本周全场满200减30"),
            viewer=SYSTEM)
        autoreply_service.dry_run(session, rule_id=rule.id, viewer=SYSTEM)
        autoreply_service.set_enabled(session, rule_id=rule.id, enabled=True, viewer=SYSTEM)
        rule_id = rule.id
        # A customer of this test's own: other tests on the shared site open conversations with the seeded
        # customers on other channels, and a conversation keeps the channel it was opened on.
        customer = customers_service.create_customer(session, data=CustomerIn(
            name="赵敏", account_id=account.id, remark_name="赵敏-会话存档"), viewer=SYSTEM)
        customer_id = customer.id
        inbox_service.ingest(session, [inbox_service.InboundMessage(
            source="wecom_archive", platform_msgid="browser-archive-1", account_id=account.id,
            customer_id=customer_id, sent_at=utcnow() - timedelta(minutes=1), text="最近有优惠吗？",
            channel=Channel.wecom_archive.value)], auto_reply=False)
    tab.login()
    tab.page.add_init_script(STAND_IN_WX)
    tab.page.route("**/sidebar/agent-config", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"corpid": "wwSTANDIN", "agentid": "1000002", "timestamp": 1, "nonceStr": "n",
                         "signature": "stand-in-signature"})))
    tab.go(f"/sidebar/reply?customer_id={customer_id}")
    assert tab.page.get_by_test_id("suggested-reply").inner_text() == "您好，本周全场满200减30"
    tab.page.get_by_test_id("send-suggested").click()
    tab.page.wait_for_function("() => window.__wxCalls.length >= 2")
    calls = tab.page.evaluate("window.__wxCalls")
    assert calls[0] == ["agentConfig", ["sendChatMessage"], "stand-in-signature"]
    assert calls[1] == ["sendChatMessage", {"msgtype": "text", "text": {"content": "您好，本周全场满200减30"}}]
    assert "已放入聊天" in tab.page.locator("[data-jssdk-status]").inner_text()
    assert tab.errors == []
    with transaction() as session:  # leave the shared site as it was
        autoreply_service.set_enabled(session, rule_id=rule_id, enabled=False, viewer=SYSTEM)
        session.delete(session.query(Conversation).filter_by(channel="wecom_archive", customer_id=customer_id).one())


def test_outside_wecom_the_sidebar_loads_no_jssdk_and_says_so(tab: Any, live_site: Any) -> None:
    tab.login()
    requested: list[str] = []
    tab.page.on("request", lambda request: requested.append(request.url))
    tab.go(f"/sidebar/reply?customer_id={live_site.ids['wangfang']}")
    assert "不在企业微信客户端内" in tab.page.locator("[data-jssdk-status]").inner_text()
    assert not [url for url in requested if "weixin" in url or "wx.qq.com" in url]
    assert tab.errors == []
