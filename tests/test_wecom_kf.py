"""微信客服 in the product: parsing every type, pulling kf/sync_msg exactly once, the reply window.

The WeCom side is a small in-process double of the typed ``WecomApi`` kf methods (the pages a
cursor walks through, the customers' profiles, what was sent); the simulator's ``kf/*`` runs
the same paths over HTTP in tests/test_wecom_kf_simulator.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.autoreply import service as autoreply
from siyu.autoreply.models import MatchKind
from siyu.core.db import transaction, utcnow
from siyu.core.errors import Invalid
from siyu.core.i18n import _
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer
from siyu.inbox import delivery
from siyu.inbox import service as inbox
from siyu.inbox.models import Conversation, Message
from siyu.wecom import kf, kf_jobs
from siyu.wecom.client import WecomApiError
from siyu.wecom.models import KfCursor
from tests.conftest import viewer_of
from tests.test_wecom_callback import AES_KEY, CORP_ID, TOKEN, post

OPEN_KFID = "wkSHANYE0000000000000000000001"


class FakeKf:
    """The kf methods of ``WecomApi`` over a list of items: the cursor is the position in the list."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.pulls: list[tuple[str, str | None]] = []
        self.profiles: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self.on_event: list[dict[str, Any]] = []
        self.states: dict[str, int] = {}
        self.trans: list[tuple[str, int]] = []
        self.refuse: WecomApiError | None = None

    def kf_sync_msg(self, open_kfid: str, *, cursor: str = "", token: str | None = None,
                    limit: int = 1000) -> dict[str, Any]:
        self.pulls.append((cursor, token))
        start = int(cursor or 0)
        page = self.items[start:start + limit]
        end = start + len(page)
        return {"errcode": 0, "msg_list": page, "next_cursor": str(end), "has_more": end < len(self.items)}

    def kf_customers(self, external_userids: list[str]) -> list[dict[str, Any]]:
        return [self.profiles[e] for e in external_userids if e in self.profiles]

    def kf_send(self, *, touser: str, open_kfid: str, msgid: str, msgtype: str, content: dict[str, Any]) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.sent.append({"touser": touser, "msgid": msgid, "msgtype": msgtype, msgtype: content})
        return msgid

    def kf_send_on_event(self, *, code: str, msgid: str, msgtype: str, content: dict[str, Any]) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.on_event.append({"code": code, "msgid": msgid, "msgtype": msgtype, msgtype: content})
        return msgid

    def kf_service_state(self, open_kfid: str, external_userid: str) -> dict[str, Any]:
        return {"service_state": self.states.get(external_userid, 0), "servicer_userid": ""}

    def kf_trans(self, open_kfid: str, external_userid: str, state: int, servicer_userid: str | None = None
                 ) -> dict[str, Any]:
        self.trans.append((external_userid, state))
        self.states[external_userid] = state
        return {"msg_code": ""}


def item(n: int, *, customer: str = "wmKF0001", msgtype: str = "text", origin: int = 3, body: Any = None,
         at: int | None = None, **extra: Any) -> dict[str, Any]:
    content = body if body is not None else ({"content": f"第{n}条：什么时候发货？"} if msgtype == "text" else {})
    return {"msgid": f"kfmsg{n:06d}", "open_kfid": OPEN_KFID, "external_userid": customer,
            "send_time": at if at is not None else int(time.time()) - 60, "origin": origin, "msgtype": msgtype,
            msgtype: content, **extra}


def event(n: int, event_type: str, *, customer: str = "wmKF0001", at: int | None = None,
          **fields: Any) -> dict[str, Any]:
    return {"msgid": f"kfevt{n:06d}", "send_time": at if at is not None else int(time.time()) - 5, "origin": 4,
            "msgtype": "event", "event": {"event_type": event_type, "open_kfid": OPEN_KFID,
                                          "external_userid": customer, **fields}}


@pytest.fixture
def fake(db: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKf]:
    """WeCom's kf API as the double, for the jobs and the connector; the kf connector registered."""
    api = FakeKf()
    monkeypatch.setattr(kf_jobs, "_api", lambda: api)
    monkeypatch.setattr("siyu.wecom.connector.kf_api", lambda _account: api)
    kf.register()
    yield api
    delivery.unregister(kf.connector_for)


def pull(api: FakeKf, *, token: str = "CALLBACK-TOKEN", **kwargs: Any) -> kf.PullResult:  # noqa: S107
    """A kf_msg_or_event callback's token noted, then the pull (as the job runs it)."""
    if token:
        with transaction() as session:
            kf.note_callback(session, open_kfid=OPEN_KFID, token=token)
    return kf.pull(transaction, api, OPEN_KFID, **kwargs)


def conversation_of(db: Session, external_userid: str = "wmKF0001") -> Conversation:
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == external_userid))
    assert customer is not None
    found = db.scalar(select(Conversation).where(Conversation.customer_id == customer.id))
    assert found is not None
    return found


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(("raw", "msg_type", "text", "direction"), [
    (item(1, body={"content": "1 查订单", "menu_id": "101"}), "text", "1 查订单", "in"),
    (item(2, msgtype="image", body={"media_id": "MEDIA_IMG"}), "image", "", "in"),
    (item(3, msgtype="voice", body={"media_id": "MEDIA_VOICE"}), "voice", "", "in"),
    (item(4, msgtype="video", body={"media_id": "MEDIA_VIDEO"}), "video", "", "in"),
    (item(5, msgtype="file", body={"media_id": "MEDIA_FILE"}), "file", "", "in"),
    (item(6, msgtype="location", body={"latitude": 30.25, "longitude": 120.16, "name": "西湖店",
                                        "address": "杭州市西湖区"}), "location", "西湖店 杭州市西湖区", "in"),
    (item(7, msgtype="link", body={"title": "双十二活动", "desc": "满减", "url": "https://example.com",
                                    "pic_url": ""}), "link", "双十二活动", "in"),
    (item(8, msgtype="business_card", body={"userid": "zhangsan"}), "business_card", "zhangsan", "in"),
    (item(9, msgtype="miniprogram", body={"title": "商城", "appid": "wx1", "pagepath": "pages/index",
                                           "thumb_media_id": "T"}), "miniprogram", "商城", "in"),
    (item(10, msgtype="msgmenu", body={"head_content": "请选择", "list": [
        {"type": "click", "click": {"id": "101", "content": "1 查订单"}}], "tail_content": "谢谢"}),
     "msgmenu", "请选择\n1 查订单\n谢谢", "in"),
    (item(11, msgtype="channels", body={"sub_type": 1, "nickname": "山野茶事", "title": "新茶上市"}),
     "channels", "山野茶事 新茶上市", "in"),
    (item(12, origin=5, body={"content": "您好，我来处理"}, servicer_userid="zhangsan"), "text", "您好，我来处理",
     "out"),
])
def test_every_message_type_of_the_docs_is_parsed(raw: dict[str, Any], msg_type: str, text: str,
                                                  direction: str) -> None:
    parsed = kf.parse(raw)
    assert (parsed.msg_type, parsed.text, parsed.direction, parsed.external_userid) == (
        msg_type, text, direction, "wmKF0001")


@pytest.mark.parametrize(("raw", "line"), [
    (event(1, "enter_session", scene="123", scene_param="abc", welcome_code="W1"),
     "The customer entered the session (scene {scene})"),
    (event(2, "msg_send_fail", fail_msgid="siyu-7", fail_type=10), "A message was not delivered: {reason}"),
    (event(3, "servicer_status_change", servicer_userid="zhangsan", status=1),
     "{servicer} changed their serving status"),
    (event(4, "session_status_change", change_type=1, new_servicer_userid="zhangsan"),
     "{servicer} took the session from WeCom's queue"),
    (event(5, "session_status_change", change_type=3, old_servicer_userid="zhangsan"),
     "The session was ended in WeCom"),
    (event(6, "user_recall_msg", recall_msgid="kfmsg000001"), "The customer recalled a message"),
    (event(7, "servicer_recall_msg", recall_msgid="kfmsg000002", servicer_userid="zhangsan"),
     "{servicer} recalled a message"),
])
def test_every_event_is_a_system_line(raw: dict[str, Any], line: str) -> None:
    parsed = kf.parse(raw)
    assert parsed.msg_type == "system" and parsed.event == raw["event"]["event_type"]
    assert parsed.text == _(line, scene="123", reason=_("the customer refused it"), servicer="zhangsan")


def test_siyu_msgids_fit_the_platform_and_map_back() -> None:
    msgid = kf.msgid_for(2**62)
    assert len(msgid.encode()) <= kf.MSGID_MAX_BYTES and kf.message_id_of(msgid) == 2**62
    assert kf.message_id_of("kfmsg000001") is None


# ---------------------------------------------------------------- pulling


def test_a_pull_stores_every_page_and_the_cursor_once_and_the_inbox_shows_it(db: Session, fake: FakeKf) -> None:
    fake.items = [item(n, customer=f"wmKF{n % 40:04d}") for n in range(2500)]
    fake.profiles = {"wmKF0001": {"external_userid": "wmKF0001", "nickname": "小茶友", "avatar": "https://a/1",
                                  "unionid": "oUNION0001"}}
    result = pull(fake, token="TOKEN-A")
    assert (result.pages, result.stored, result.duplicates, result.with_token) == (3, 2500, 0, True)
    assert [token for _cursor, token in fake.pulls] == ["TOKEN-A"] * 3
    assert db.scalar(select(func.count()).select_from(Message)) == 2500
    assert db.scalar(select(KfCursor.cursor)) == "2500"
    conversation = conversation_of(db)
    assert conversation.channel == "wecom_kf" and conversation.unanswered > 0
    customer = db.get(Customer, conversation.customer_id)
    assert customer is not None and (customer.name, customer.unionid) == ("小茶友", "oUNION0001")
    assert db.scalar(select(func.count()).select_from(Conversation)) == 40


def test_a_page_repeating_stored_messages_stores_nothing_twice(db: Session, fake: FakeKf) -> None:
    fake.items = [item(n) for n in range(5)]
    pull(fake)
    fake.items = fake.items + fake.items[:3] + [item(99)]  # the platform repeats three, then one new
    with transaction() as session:
        kf.note_callback(session, open_kfid=OPEN_KFID, token="T2")
    db.execute(update(KfCursor).values(cursor="3"))  # a cursor that points back into stored messages
    db.commit()
    result = pull(fake)
    assert result.stored == 1 and result.duplicates == 5
    assert db.scalar(select(func.count()).select_from(Message)) == 6
    assert conversation_of(db).unanswered == 6


def test_a_crash_between_pull_and_commit_re_pulls_and_loses_or_doubles_nothing(db: Session, fake: FakeKf,
                                                                                monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    fake.items = [item(n, customer=f"wmKF{n % 7:04d}") for n in range(2200)]
    real = kf.store_page
    calls = {"n": 0}

    def crash_on_second_page(session: Session, **kwargs: Any) -> Any:
        calls["n"] += 1
        stored = real(session, **kwargs)
        if calls["n"] == 2:
            raise RuntimeError("worker killed before the commit")
        return stored

    monkeypatch.setattr(kf, "store_page", crash_on_second_page)
    with transaction() as session:
        kf.note_callback(session, open_kfid=OPEN_KFID, token="T")
    with pytest.raises(RuntimeError):
        pull(fake)
    assert db.scalar(select(KfCursor.cursor)) == "1000"  # the first page's commit, not the second's
    assert db.scalar(select(func.count()).select_from(Message)) == 1000
    monkeypatch.setattr(kf, "store_page", real)
    result = pull(fake)
    assert result.stored == 1200
    assert db.scalar(select(func.count()).select_from(Message)) == 2200
    assert db.scalar(select(func.count(func.distinct(Message.platform_msgid)))) == 2200
    assert [cursor for cursor, _token in fake.pulls] == ["", "1000", "1000", "2000"]


def test_an_expired_token_pulls_without_it_at_most_once_a_minute(db: Session, fake: FakeKf) -> None:
    fake.items = [item(1)]
    with transaction() as session:
        kf.note_callback(session, open_kfid=OPEN_KFID, token="OLD", at=utcnow() - timedelta(minutes=11))
    first = pull(fake, token="")
    assert first.stored == 1 and fake.pulls == [("", None)]
    fake.items.append(item(2))
    second = pull(fake, token="")  # at once again: the platform limits pulls without a token
    assert second.stored == 0 and 0 < second.wait_seconds <= kf.TOKENLESS_PULL_INTERVAL.total_seconds()
    assert len(fake.pulls) == 1
    later = pull(fake, token="", now=lambda: utcnow() + kf.TOKENLESS_PULL_INTERVAL)
    assert later.stored == 1 and fake.pulls[-1] == ("1", None)


def test_a_customer_met_elsewhere_is_joined_by_unionid(db: Session, fake: FakeKf, make: Any) -> None:
    account = make.account()
    follower = make.customer(account, name="公众号粉丝")
    follower.unionid = "oUNIONMP"
    db.commit()
    fake.items = [item(1, customer="wmKFNEW")]
    fake.profiles = {"wmKFNEW": {"external_userid": "wmKFNEW", "nickname": "粉丝", "unionid": "oUNIONMP"}}
    pull(fake)
    db.refresh(follower)
    assert follower.wecom_external_userid == "wmKFNEW"
    assert conversation_of(db, "wmKFNEW").customer_id == follower.id


def test_a_callback_through_the_endpoint_pulls_with_its_token(client: TestClient, db: Session, fake: FakeKf,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_TOKEN": TOKEN,
                        "SIYU_WECOM_AES_KEY": AES_KEY}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    fake.items = [item(1, body={"content": "你好，在吗"})]
    xml = (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><CreateTime>{int(time.time())}</CreateTime>"
           "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
           f"<Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>"
           f"<OpenKfId><![CDATA[{OPEN_KFID}]]></OpenKfId></xml>")
    assert post(client, xml).text == "success"
    assert fake.pulls == [("", "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR")]
    assert db.scalar(select(Message.text)) == "你好，在吗"
    account = db.get(Conversation, conversation_of(db).id)
    assert account is not None and account.channel == "wecom_kf"


# ---------------------------------------------------------------- what events change


def test_events_recall_change_the_session_and_fail_our_message(db: Session, fake: FakeKf) -> None:
    fake.items = [item(1), item(2, origin=5, body={"content": "我来"}, servicer_userid="zhangsan")]
    pull(fake)
    conversation = conversation_of(db)
    assert conversation.waiting_since is None and conversation.first_response_at is not None  # answered in WeCom
    ours = inbox.reply(db, conversation_id=conversation.id, text="稍等", viewer=SYSTEM)
    db.commit()
    fake.items += [event(3, "user_recall_msg", recall_msgid="kfmsg000001"),
                   event(4, "session_status_change", change_type=1, new_servicer_userid="zhangsan"),
                   event(5, "msg_send_fail", fail_msgid=kf.msgid_for(ours.id), fail_type=10),
                   event(6, "servicer_status_change", customer="", servicer_userid="zhangsan", status=2)]
    pull(fake)
    db.expire_all()
    recalled = db.scalar(select(Message).where(Message.platform_msgid == "kfmsg000001"))
    assert recalled is not None and (recalled.payload or {}).get("recalled_at")
    conversation = conversation_of(db)
    assert (conversation.service_state, conversation.servicer_userid) == (3, "zhangsan")
    failed = db.get(Message, ours.id)
    assert failed is not None and failed.status == "failed" and _("the customer refused it") in failed.error
    assert (db.scalar(select(KfCursor.servicers)) or {})["zhangsan"]["status"] == 2
    lines = db.scalars(select(Message.text).where(Message.msg_type == "system")).all()
    assert len(lines) == 3 and conversation.unanswered == 0


def test_enter_session_sends_the_greeting_with_the_welcome_code(db: Session, fake: FakeKf, make: Any) -> None:
    account = make.account(kind="wecom_kf", wecom_userid=None, open_kfid=OPEN_KFID, greeting="欢迎来到山野茶事")
    fake.items = [event(1, "enter_session", scene="qr", welcome_code="WELCOME-FRESH")]
    result = pull(fake)
    assert result.welcomes == 1
    assert fake.on_event == [{"code": "WELCOME-FRESH", "msgid": fake.on_event[0]["msgid"], "msgtype": "text",
                              "text": {"content": "欢迎来到山野茶事"}}]
    welcome = db.scalar(select(Message).where(Message.source == kf.WELCOME_SOURCE))
    assert welcome is not None and welcome.status == "sent" and conversation_of(db).account_id == account.id
    db.execute(update(KfCursor).values(cursor=""))  # the page again (a crash before the cursor moved)
    db.commit()
    pull(fake)
    assert len(fake.on_event) == 1


def test_an_expired_welcome_code_is_a_recorded_failure_not_a_crash(db: Session, fake: FakeKf, make: Any) -> None:
    make.account(kind="wecom_kf", wecom_userid=None, open_kfid=OPEN_KFID, greeting="欢迎")
    fake.items = [event(1, "enter_session", welcome_code="OLD-CODE", at=int(time.time()) - 60, customer="wmA"),
                  event(2, "enter_session", welcome_code="USED-CODE", customer="wmB")]
    fake.refuse = WecomApiError(95007, "invalid msg code", api="kf/send_msg_on_event")
    pull(fake)
    welcomes = {m.conversation_id: m for m in db.scalars(select(Message).where(
        Message.source == kf.WELCOME_SOURCE))}
    late, refused = welcomes[conversation_of(db, "wmA").id], welcomes[conversation_of(db, "wmB").id]
    assert late.status == "failed" and late.error == _(kf.WELCOME_EXPIRED)
    assert refused.status == "failed" and "95007" in refused.error
    assert fake.on_event == []


# ---------------------------------------------------------------- the reply window


def kf_conversation(db: Session, fake: FakeKf, *, last_message_ago: timedelta = timedelta(minutes=1)) -> Conversation:
    fake.items.append(item(len(fake.items), at=int(time.time() - last_message_ago.total_seconds())))
    pull(fake)
    return conversation_of(db)


def test_a_reply_is_sent_through_kf_send_msg_with_siyus_msgid(db: Session, fake: FakeKf) -> None:
    conversation = kf_conversation(db, fake)
    reply = inbox.reply(db, conversation_id=conversation.id, text="今天下午发货", viewer=SYSTEM)
    db.commit()
    db.refresh(reply)
    assert reply.status == "sent"
    assert fake.sent == [{"touser": "wmKF0001", "msgid": f"siyu-{reply.id}", "msgtype": "text",
                          "text": {"content": "今天下午发货"}}]


def test_a_reply_after_48_hours_is_refused_at_once_and_nothing_is_sent(db: Session, fake: FakeKf) -> None:
    conversation = kf_conversation(db, fake, last_message_ago=timedelta(hours=49))
    with pytest.raises(Invalid) as refused:
        inbox.reply(db, conversation_id=conversation.id, text="还在吗", viewer=SYSTEM)
    assert refused.value.message == _(kf.OUTSIDE_WINDOW)
    db.rollback()
    assert fake.sent == [] and db.scalar(select(func.count()).select_from(Message).where(
        Message.direction == "out")) == 0


def test_a_sixth_reply_to_one_customer_message_is_refused(client: TestClient, db: Session, fake: FakeKf,
                                                          admin_headers: dict[str, str]) -> None:
    conversation = kf_conversation(db, fake)
    for n in range(kf.REPLIES_PER_CUSTOMER_MESSAGE):
        answer = client.post(f"/api/v1/inbox/conversations/{conversation.id}/messages", headers=admin_headers,
                             json={"text": f"第{n + 1}条回复"})
        assert answer.status_code == 201, answer.text
    sixth = client.post(f"/api/v1/inbox/conversations/{conversation.id}/messages", headers=admin_headers,
                        json={"text": "第6条"})
    assert sixth.status_code == 422 and sixth.json()["detail"] == _(kf.WINDOW_FULL)
    assert len(fake.sent) == 5
    fake.items.append(item(500, at=int(time.time()) + 1))  # the customer writes again: five more are allowed
    pull(fake)
    assert client.post(f"/api/v1/inbox/conversations/{conversation.id}/messages", headers=admin_headers,
                       json={"text": "再回复"}).status_code == 201


def test_95018_after_a_person_took_the_session_is_shown_and_not_retried(db: Session, fake: FakeKf) -> None:
    conversation = kf_conversation(db, fake)
    fake.refuse = WecomApiError(95018, "invalid service state", api="kf/send_msg")
    reply = inbox.reply(db, conversation_id=conversation.id, text="您好", viewer=SYSTEM)
    db.commit()
    db.refresh(reply)
    assert reply.status == "failed" and reply.error == _(kf.SERVED_IN_WECOM_NOW)
    assert delivery.deliver(db, message_id=reply.id, attempt=1).retry is False
    db.refresh(conversation)
    assert conversation.service_state == kf.ServiceState.person
    with pytest.raises(Invalid):  # the next reply is refused before it is queued
        inbox.reply(db, conversation_id=conversation.id, text="再试", viewer=SYSTEM)


def test_taking_a_conversation_puts_an_untouched_session_with_siyu(db: Session, fake: FakeKf, make: Any) -> None:
    conversation = kf_conversation(db, fake)
    agent = make.user("service", accounts=[db.get(Account, conversation.account_id)])
    inbox.transfer(db, conversation_id=conversation.id, to_user_id=agent.id, viewer=SYSTEM)
    db.commit()
    assert fake.trans == [("wmKF0001", kf.ServiceState.assistant)]
    db.refresh(conversation)
    assert conversation.service_state == kf.ServiceState.assistant


# ---------------------------------------------------------------- menus


def test_a_menu_rule_triages_and_a_tap_is_answered_by_its_item(db: Session, fake: FakeKf, make: Any) -> None:
    admin = viewer_of(make.user("admin"))
    menu = autoreply.RuleIn(name="活动分流", match_kind=MatchKind.contains, keywords=["活动"], menu={
        "head_content": "请选择：", "list": [{"id": "order", "content": "1 查订单"}, {"id": "rules", "content":
                                                                                     "2 活动规则"},
                                            {"id": "human", "content": "3 人工"}], "tail_content": ""})
    tap = autoreply.RuleIn(name="活动规则", match_kind=MatchKind.exact, keywords=["rules"],
                           reply="满 200 减 30，截止 12 月 12 日")
    for data in (menu, tap):
        rule = autoreply.save_rule(db, data=data, viewer=admin)
        autoreply.dry_run(db, rule_id=rule.id, viewer=admin)
        autoreply.set_enabled(db, rule_id=rule.id, enabled=True, viewer=admin)
    db.commit()
    fake.items = [item(1, body={"content": "活动怎么参加"})]
    pull(fake)
    assert fake.sent[0]["msgtype"] == "msgmenu"
    assert fake.sent[0]["msgmenu"]["list"][1] == {"type": "click", "click": {"id": "rules", "content": "2 活动规则"}}
    db.execute(update(Message).where(Message.automatic.is_(True)).values(sent_at=utcnow() - timedelta(hours=1)))
    db.commit()  # past the quiet period that keeps two bots from ping-ponging
    fake.items.append(item(2, body={"content": "2 活动规则", "menu_id": "rules"}))
    pull(fake)
    assert fake.sent[1] == {"touser": "wmKF0001", "msgid": fake.sent[1]["msgid"], "msgtype": "text",
                            "text": {"content": "满 200 减 30，截止 12 月 12 日"}}


# ---------------------------------------------------------------- accounts and the API


def test_kf_accounts_are_created_with_their_open_kfid_and_listed_from_wecom(
        client: TestClient, db: Session, admin_headers: dict[str, str]) -> None:
    made = client.post("/api/v1/accounts", headers=admin_headers,
                       json={"kind": "wecom_kf", "display_name": "山野茶事客服", "open_kfid": OPEN_KFID})
    assert made.status_code == 201, made.text
    assert made.json()["open_kfid"] == OPEN_KFID
    again = client.post("/api/v1/accounts", headers=admin_headers,
                        json={"kind": "wecom_kf", "display_name": "重复", "open_kfid": OPEN_KFID})
    assert again.status_code == 409
    missing = client.post("/api/v1/accounts", headers=admin_headers, json={"kind": "wecom_kf", "display_name": "无"})
    assert missing.status_code == 422 and "open_kfid" in missing.json()["detail"]
    created = kf.sync_accounts(db, [{"open_kfid": OPEN_KFID, "name": "山野茶事官方客服", "avatar": ""},
                                    {"open_kfid": "wkSECOND", "name": "售后客服", "avatar": "https://a/b"}])
    db.commit()
    assert created == 1
    names = {a["open_kfid"]: a["display_name"] for a in client.get("/api/v1/accounts",
                                                                    headers=admin_headers).json()["items"]}
    assert names == {OPEN_KFID: "山野茶事官方客服", "wkSECOND": "售后客服"}


def test_the_api_gives_channel_direction_and_delivery(client: TestClient, db: Session, fake: FakeKf, make: Any,
                                                     admin_headers: dict[str, str]) -> None:
    personal = make.account(kind="personal", wecom_userid=None)
    inbox.ingest(db, [inbox.InboundMessage(source="personal", platform_msgid="p1", account_id=personal.id,
                                           external_userid="wmP1", sent_at=utcnow(), text="在吗")])
    db.commit()
    conversation = kf_conversation(db, fake)
    fake.refuse = WecomApiError(95018, "invalid service state", api="kf/send_msg")
    inbox.reply(db, conversation_id=conversation.id, text="您好", viewer=SYSTEM)
    db.commit()
    listed = client.get("/api/v1/inbox/conversations", headers=admin_headers,
                        params={"view": "all", "channel": "wecom_kf"}).json()["items"]
    assert [c["channel"] for c in listed] == ["wecom_kf"]
    every = client.get("/api/v1/inbox/conversations", headers=admin_headers, params={"view": "all"}).json()["items"]
    assert sorted(c["channel"] for c in every) == ["personal", "wecom_kf"]
    assert client.get("/api/v1/inbox/conversations", headers=admin_headers,
                      params={"channel": "fax"}).status_code == 422
    detail = client.get(f"/api/v1/inbox/conversations/{conversation.id}", headers=admin_headers).json()
    incoming, outgoing = detail["messages"]
    assert (incoming["direction"], incoming["delivery"]) == ("in", None)
    assert (outgoing["direction"], outgoing["delivery"], outgoing["failure_reason"]) == (
        "out", "failed", _(kf.SERVED_IN_WECOM_NOW))


def test_the_workspace_shows_the_channel_system_lines_and_why_a_reply_was_refused(
        client: TestClient, db: Session, fake: FakeKf, make: Any) -> None:
    from tests.test_pages import Console

    fake.items = [item(1, at=int(time.time()) - 49 * 3600), event(2, "user_recall_msg", recall_msgid="kfmsg000001")]
    pull(fake)
    conversation = conversation_of(db)
    console = Console(client).login(make.user("admin"))
    queue = console.get("/inbox?view=all")
    assert 'data-channel="wecom_kf"' in queue.text and "微信客服" in queue.text
    page = console.get(f"/inbox/{conversation.id}")
    assert "客户撤回了一条消息" in page.text and 'data-testid="recalled"' in page.text
    refused = console.post(f"/inbox/{conversation.id}/reply", {"text": "还在吗"})
    assert "超过 48 小时" in refused.text
    fake.items.append(event(3, "session_status_change", change_type=1, new_servicer_userid="zhangsan"))
    pull(fake)
    page = console.get(f"/inbox/{conversation.id}")
    assert "由企业微信中的接待人员接待 · zhangsan" in page.text
    refused = console.post(f"/inbox/{conversation.id}/reply", {"text": "还在吗"})
    assert "zhangsan 正在企业微信客户端接待此客户" in refused.text
    assert fake.sent == []


def test_an_ended_session_refuses_replies_until_the_customer_writes_again(db: Session, fake: FakeKf) -> None:
    conversation = kf_conversation(db, fake)
    fake.items.append(event(900, "session_status_change", change_type=3, old_servicer_userid="zhangsan"))
    pull(fake)
    db.refresh(conversation)
    assert conversation.service_state == kf.ServiceState.ended
    with pytest.raises(Invalid) as refused:
        inbox.reply(db, conversation_id=conversation.id, text="还有问题吗", viewer=SYSTEM)
    assert refused.value.message == _(kf.SESSION_ENDED)
    db.rollback()
    fake.items.append(item(901, at=int(time.time()) + 1))
    pull(fake)
    db.refresh(conversation)
    assert conversation.service_state == kf.ServiceState.untouched
    inbox.reply(db, conversation_id=conversation.id, text="您好", viewer=SYSTEM)
    db.commit()
    assert [m["text"]["content"] for m in fake.sent] == ["您好"]


# ---------------------------------------------------------------- answered only when accepted, customer-safe texts


def test_a_kf_reply_answers_the_customer_only_once_kf_send_msg_accepted_it(db: Session, fake: FakeKf) -> None:
    conversation = kf_conversation(db, fake)
    assert conversation.waiting_since is not None
    fake.refuse = WecomApiError(95001, "send msg count limit", api="kf/send_msg")
    refused = inbox.reply(db, conversation_id=conversation.id, text="今天发货", viewer=SYSTEM)
    db.commit()
    db.refresh(refused)
    db.refresh(conversation)
    assert refused.status == "failed"
    assert conversation.waiting_since is not None and conversation.unanswered == 1
    assert conversation.first_response_at is None
    fake.refuse = None
    inbox.retry_reply(db, message_id=refused.id, viewer=SYSTEM)
    db.commit()
    db.refresh(refused)
    db.refresh(conversation)
    assert refused.status == "sent" and len(fake.sent) == 1
    assert conversation.waiting_since is None and conversation.unanswered == 0
    assert conversation.first_response_at is not None


def test_the_welcome_and_menus_fill_only_customer_safe_variables(db: Session, fake: FakeKf, make: Any) -> None:
    from siyu.accounts import service as accounts_service
    from siyu.accounts.schemas import AccountUpdate

    account = make.account(kind="wecom_kf", wecom_userid=None, open_kfid=OPEN_KFID, greeting="{称呼}您好，这里是{账号}")
    admin = viewer_of(make.user("admin"))
    with pytest.raises(Invalid) as internal:
        accounts_service.update_account(db, account_id=account.id, data=AccountUpdate(greeting="{备注名}您好"),
                                        actor=admin)
    assert internal.value.field == "greeting"
    db.rollback()
    fake.profiles["wmKF0001"] = {"external_userid": "wmKF0001", "nickname": "小林"}
    fake.items = [event(1, "enter_session", welcome_code="WELCOME-1")]
    pull(fake)
    assert fake.on_event[0]["text"] == {"content": f"小林您好，这里是{account.display_name}"}
    conversation = conversation_of(db)
    assert conversation.first_response_at is None  # a welcome greets; it answers nothing
    with pytest.raises(Invalid):
        autoreply.save_rule(db, data=autoreply.RuleIn(name="分流", match_kind=MatchKind.contains, keywords=["活动"],
                                                      menu={"head_content": "{电话}",
                                                            "list": [{"id": "a", "content": "1 查订单"}]}),
                            viewer=admin)
    db.rollback()
    rule = autoreply.save_rule(db, data=autoreply.RuleIn(name="分流", match_kind=MatchKind.contains, keywords=["活动"],
                                                         menu={"head_content": "{称呼}，请选择：",
                                                               "list": [{"id": "a", "content": "1 查订单"}]}),
                               viewer=admin)
    autoreply.dry_run(db, rule_id=rule.id, viewer=admin)
    autoreply.set_enabled(db, rule_id=rule.id, enabled=True, viewer=admin)
    db.execute(update(Message).where(Message.automatic.is_(True)).values(sent_at=utcnow() - timedelta(hours=1)))
    db.commit()  # past the quiet period after the (automatic) welcome
    fake.items.append(item(2, body={"content": "活动怎么参加"}))
    pull(fake)
    assert fake.sent[0]["msgmenu"]["head_content"] == "小林，请选择："
