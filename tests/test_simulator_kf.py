"""The simulator's 微信客服 (kf/*): accounts and servicers, sync_msg with cursors and tokens, send_msg
inside its window with msgid dedupe, 95018 once a human took the session, send_msg_on_event's
20-second code, service states, customer/batchget — through the HTTP API, as Siyu calls it."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from siyu.simulator import kf
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import ServerOptions, create_app

CORP_ID = "wwSIMKFTEST00001"
SECRET = "simulator-kf-secret"


class Clock:
    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def corp(clock: Clock) -> VirtualCorp:
    return VirtualCorp.seeded(3, corp_id=CORP_ID, clock=clock, salt=0)


@pytest.fixture
def sim(corp: VirtualCorp) -> Iterator[TestClient]:
    with TestClient(create_app(corp, ServerOptions(secret=SECRET))) as client:
        yield client


class Api:
    def __init__(self, sim: TestClient) -> None:
        self.sim = sim
        self.renew()

    def renew(self) -> None:
        """A fresh access token (after the test moved the clock past the old one's 7,200 s)."""
        self.token = self.sim.get("/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET}).json()[
            "access_token"]

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return dict(self.sim.get(f"/cgi-bin/{path}", params={"access_token": self.token, **params}).json())

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.sim.post(f"/cgi-bin/{path}", params={"access_token": self.token},
                               content=json.dumps(body, ensure_ascii=False).encode())
        assert answer.status_code == 200
        return dict(answer.json())

    def control(self, operation: str, **body: Any) -> dict[str, Any]:
        answer = self.sim.post(f"/_simulator/{operation}", json=body)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def send_text(self, open_kfid: str, external_userid: str, text: str = "您好", msgid: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"touser": external_userid, "open_kfid": open_kfid, "msgtype": "text",
                                "text": {"content": text}}
        if msgid:
            body["msgid"] = msgid
        return self.post("kf/send_msg", body)


@pytest.fixture
def api(sim: TestClient) -> Api:
    return Api(sim)


@pytest.fixture
def open_kfid(corp: VirtualCorp) -> str:
    return corp.kf.state.accounts[0].open_kfid


def pull_all(api: Api, token: str, open_kfid: str, *, cursor: str = "", limit: int = 1000) -> tuple[list[Any], str]:
    items: list[Any] = []
    while True:
        page = api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid, "cursor": cursor, "limit": limit})
        assert page["errcode"] == 0, page
        items.extend(page["msg_list"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return items, cursor


def test_the_seeded_corp_has_a_kf_account_with_servicers(api: Api, open_kfid: str) -> None:
    accounts = api.get("kf/account/list")["account_list"]
    assert accounts == api.post("kf/account/list", {"offset": 0, "limit": 100})["account_list"]
    assert [a["name"] for a in accounts] == ["山野茶舍客服"] and accounts[0]["open_kfid"] == open_kfid
    assert open_kfid.startswith("wk") and len(open_kfid) == 32
    assert api.post("kf/account/list", {"limit": 101})["errcode"] == 40058
    servicers = api.get("kf/servicer/list", open_kfid=open_kfid)["servicer_list"]
    assert servicers == [{"userid": "shanye.xiaoye01", "status": 0}, {"userid": "shanye.xiaoye02", "status": 0}]
    added = api.post("kf/servicer/add", {"open_kfid": open_kfid, "userid_list": ["shanye.vip", "nobody"]})
    assert [(r["userid"], r["errcode"]) for r in added["result_list"]] == [("shanye.vip", 0), ("nobody", 60111)]
    assert len(api.get("kf/servicer/list", open_kfid=open_kfid)["servicer_list"]) == 3
    assert api.get("kf/servicer/list", open_kfid="wkNOSUCHACCOUNT")["errcode"] == 95004
    assert api.get("kf/servicer/list")["errcode"] == 95000
    new = api.post("kf/account/add", {"name": "山野茶舍售后", "media_id": "MEDIA"})
    assert new["errcode"] == 0 and new["open_kfid"].startswith("wk")
    assert api.post("kf/account/add", {"name": "很" * 17, "media_id": "MEDIA"})["errcode"] == 95006
    assert len(api.get("kf/account/list")["account_list"]) == 2


def test_sync_msg_pages_a_thousand_at_a_time_with_cursors(api: Api, corp: VirtualCorp, open_kfid: str) -> None:
    entered = api.control("kf_enter_session", open_kfid=open_kfid, scene="campaign", scene_param="a=1")
    customer = entered["external_userid"]
    for n in range(2499):
        corp.kf.customer_message(open_kfid, customer, content=f"第{n}条")
    token = api.control("kf_callback", open_kfid=open_kfid)["token"]
    first = api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid, "limit": 1000})
    assert (first["errcode"], first["has_more"], len(first["msg_list"])) == (0, 1, 1000)
    event = first["msg_list"][0]
    assert event["origin"] == 4 and event["msgtype"] == "event"
    assert event["event"]["event_type"] == "enter_session" and event["event"]["scene"] == "campaign"
    assert event["event"]["scene_param"] == "a=1" and event["event"]["welcome_code"]
    message = first["msg_list"][1]
    assert {k: message[k] for k in ("open_kfid", "external_userid", "origin", "msgtype")} \
        == {"open_kfid": open_kfid, "external_userid": customer, "origin": 3, "msgtype": "text"}
    assert message["text"] == {"content": "第0条"} and message["send_time"] == int(corp.clock())
    second = api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid, "cursor": first["next_cursor"]})
    third = api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid, "cursor": second["next_cursor"]})
    assert (len(second["msg_list"]), second["has_more"], len(third["msg_list"]), third["has_more"]) \
        == (1000, 1, 500, 0)
    everything = first["msg_list"] + second["msg_list"] + third["msg_list"]
    assert len({m["msgid"] for m in everything}) == 2500
    assert [m["text"]["content"] for m in everything[1:]] == [f"第{n}条" for n in range(2499)]
    # Nothing new: the same cursor again, an empty page. A re-pull from an old cursor repeats the same page.
    empty = api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid, "cursor": third["next_cursor"]})
    assert (empty["msg_list"], empty["has_more"], empty["next_cursor"]) == ([], 0, third["next_cursor"])
    again = api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid, "cursor": first["next_cursor"]})
    assert again["msg_list"] == second["msg_list"]
    corp.kf.customer_message(open_kfid, customer, msgtype="image")
    latest = api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid, "cursor": third["next_cursor"]})
    assert [m["msgtype"] for m in latest["msg_list"]] == ["image"] and latest["msg_list"][0]["image"]["media_id"]
    # Bad cursors and limits are refused.
    for bad in ({"cursor": "not-a-cursor"}, {"cursor": "a" * 65}, {"limit": 1001}, {"limit": -1},
                {"voice_format": 2}):
        assert api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid, **bad})["errcode"] == 40058, bad
    other = api.post("kf/account/add", {"name": "售后", "media_id": "M"})["open_kfid"]
    other_token = api.control("kf_callback", open_kfid=other)["token"]
    assert api.post("kf/sync_msg", {"token": other_token, "open_kfid": other,
                                    "cursor": first["next_cursor"]})["errcode"] == 40058  # another account's cursor


def test_every_message_type_of_the_docs_is_in_sync_msg(api: Api, corp: VirtualCorp, open_kfid: str) -> None:
    customer = api.control("kf_enter_session", open_kfid=open_kfid)["external_userid"]
    for msgtype in kf.CUSTOMER_TYPES:
        api.control("kf_customer_message", open_kfid=open_kfid, external_userid=customer, msgtype=msgtype)
    api.control("kf_customer_message", open_kfid=open_kfid, external_userid=customer, content="人工", menu_id="3")
    api.control("kf_servicer_take", open_kfid=open_kfid, external_userid=customer)
    api.control("kf_servicer_reply", open_kfid=open_kfid, external_userid=customer, content="我来帮您查")
    sent = "msgid0001"
    api.control("kf_event", event_type="msg_send_fail", open_kfid=open_kfid, external_userid=customer,
                fail_msgid=sent, fail_type=10)
    api.control("kf_event", event_type="user_recall_msg", open_kfid=open_kfid, external_userid=customer,
                recall_msgid="x1")
    api.control("kf_event", event_type="servicer_recall_msg", open_kfid=open_kfid, external_userid=customer,
                recall_msgid="x2", servicer_userid="shanye.xiaoye01")
    api.control("kf_event", event_type="servicer_status_change", open_kfid=open_kfid,
                servicer_userid="shanye.xiaoye02", status=2)
    api.control("kf_end_session", open_kfid=open_kfid, external_userid=customer)
    items, _cursor = pull_all(api, api.control("kf_callback", open_kfid=open_kfid)["token"], open_kfid)
    kinds = [m["event"]["event_type"] if m["msgtype"] == "event" else m["msgtype"] for m in items]
    assert kinds == ["enter_session", *kf.CUSTOMER_TYPES, "text", "session_status_change", "text", "msg_send_fail",
                     "user_recall_msg", "servicer_recall_msg", "servicer_status_change", "session_status_change"]
    menu = items[len(kf.CUSTOMER_TYPES) + 1]
    assert menu["text"] == {"content": "人工", "menu_id": "3"}
    taken = items[len(kf.CUSTOMER_TYPES) + 2]["event"]
    assert taken["change_type"] == 1 and taken["new_servicer_userid"] == "shanye.xiaoye01" and taken["msg_code"]
    reply = items[len(kf.CUSTOMER_TYPES) + 3]
    assert reply["origin"] == 5 and reply["servicer_userid"] == "shanye.xiaoye01"
    assert items[-1]["event"]["change_type"] == 3
    assert api.get("kf/servicer/list", open_kfid=open_kfid)["servicer_list"][1]["status"] == 1
    for item in items:
        assert item["origin"] in (3, 4, 5) and (item["msgtype"] == "event") == (item["origin"] == 4)
        assert item["msgtype"] == "event" or item[item["msgtype"]]
    assert api.sim.post("/_simulator/kf_customer_message", json={"open_kfid": open_kfid, "msgtype": "event"}) \
        .status_code == 400
    assert api.sim.post("/_simulator/kf_event", json={"event_type": "dance"}).status_code == 400


def test_the_callback_token_lasts_ten_minutes_for_its_own_account(api: Api, clock: Any, open_kfid: str) -> None:
    api.control("kf_enter_session", open_kfid=open_kfid)
    token = api.control("kf_callback", open_kfid=open_kfid)["token"]
    other = api.post("kf/account/add", {"name": "售后", "media_id": "M"})["open_kfid"]
    assert api.post("kf/sync_msg", {"token": token, "open_kfid": other})["errcode"] == 95007
    assert api.post("kf/sync_msg", {"token": "ENCnotissued", "open_kfid": open_kfid})["errcode"] == 95007
    clock.now += kf.SYNC_TOKEN_SECONDS - 1
    assert len(api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid})["msg_list"]) == 1
    assert len(api.post("kf/sync_msg", {"token": token})["msg_list"]) == 1  # the token names its account
    clock.now += 2
    expired = api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid})
    assert expired["errcode"] == 95007 and "invalid msg token" in expired["errmsg"]


def test_without_a_token_sync_msg_is_rate_limited(api: Api, clock: Any, open_kfid: str) -> None:
    api.control("kf_enter_session", open_kfid=open_kfid)
    clock.now = (clock.now // 60) * 60  # the start of a minute
    answers = [api.post("kf/sync_msg", {"open_kfid": open_kfid})["errcode"]
               for _ in range(kf.UNTOKENED_SYNC_PER_MINUTE + 1)]
    assert answers == [0] * kf.UNTOKENED_SYNC_PER_MINUTE + [45009]
    token = api.control("kf_callback", open_kfid=open_kfid)["token"]
    assert api.post("kf/sync_msg", {"token": token, "open_kfid": open_kfid})["errcode"] == 0  # a token is not limited
    clock.now += 60
    everything = api.post("kf/sync_msg", {})  # no account: every account's messages
    assert everything["errcode"] == 0 and len(everything["msg_list"]) == 1


def test_sync_msg_keeps_three_days(api: Api, corp: VirtualCorp, clock: Any, open_kfid: str) -> None:
    customer = corp.kf.customer_message(open_kfid, content="旧消息")["external_userid"]
    clock.now += kf.SYNC_KEEP_SECONDS + 1
    corp.kf.customer_message(open_kfid, customer, content="新消息")
    api.renew()
    items, _cursor = pull_all(api, api.control("kf_callback", open_kfid=open_kfid)["token"], open_kfid)
    assert [m["text"]["content"] for m in items] == ["新消息"]


def test_send_msg_only_within_48_hours_and_5_per_customer_message(api: Api, corp: VirtualCorp, clock: Any,
                                                                   open_kfid: str) -> None:
    customer = api.control("kf_enter_session", open_kfid=open_kfid)["external_userid"]
    assert api.send_text(open_kfid, customer)["errcode"] == 95002  # entered, but has not written yet
    api.control("kf_customer_message", open_kfid=open_kfid, external_userid=customer, content="在吗")
    answers = [api.send_text(open_kfid, customer, f"第{n}条") for n in range(6)]
    assert [a["errcode"] for a in answers] == [0] * 5 + [95001]
    assert all(a["msgid"] for a in answers[:5])
    api.control("kf_customer_message", open_kfid=open_kfid, external_userid=customer, content="还有吗")
    assert api.send_text(open_kfid, customer)["errcode"] == 0  # the customer wrote again: 5 more
    clock.now += kf.SEND_WINDOW_SECONDS - 10
    api.renew()
    assert api.send_text(open_kfid, customer)["errcode"] == 0
    clock.now += 11
    api.renew()
    late = api.send_text(open_kfid, customer)
    assert late["errcode"] == 95002 and "48 hours" in late["errmsg"]
    received = api.sim.get("/_simulator/received", params={"external_userid": customer}).json()["messages"]
    assert [r["text"] for r in received] == [f"第{n}条" for n in range(5)] + ["您好", "您好"]
    assert all(r["via"] == "kf" and r["open_kfid"] == open_kfid and r["msgid"] for r in received)
    assert api.send_text(open_kfid, "wmNOSUCHCUSTOMER")["errcode"] == 40096


def test_a_caller_msgid_is_returned_as_given_and_delivered_once(api: Api, open_kfid: str) -> None:
    customer = api.control("kf_customer_message", open_kfid=open_kfid, content="你好")["external_userid"]
    first = api.send_text(open_kfid, customer, "订单已发货", msgid="siyu-reply_000042")
    again = api.send_text(open_kfid, customer, "订单已发货", msgid="siyu-reply_000042")
    assert first == again == {"errcode": 0, "errmsg": "ok", "msgid": "siyu-reply_000042"}
    received = api.sim.get("/_simulator/received", params={"external_userid": customer}).json()["messages"]
    assert [(r["msgid"], r["text"]) for r in received] == [("siyu-reply_000042", "订单已发货")]
    for n in range(4):  # the retry used none of the 5 messages
        assert api.send_text(open_kfid, customer, msgid=f"m{n}")["errcode"] == 0
    assert api.send_text(open_kfid, customer, msgid="m9")["errcode"] == 95001
    for bad in ("x" * 33, "含中文", "a b", "a.b"):
        assert api.send_text(open_kfid, customer, msgid=bad)["errcode"] == 40058, bad
    assert api.send_text(open_kfid, customer, "好" * 683)["errcode"] == 45002  # 2,049 bytes
    assert api.post("kf/send_msg", {"touser": customer, "open_kfid": open_kfid, "msgtype": "text",
                                    "text": {"content": ""}})["errcode"] == 44004
    assert api.post("kf/send_msg", {"touser": customer, "open_kfid": open_kfid, "msgtype": "sticker",
                                    "sticker": {}})["errcode"] == 40008
    menu = {"head_content": "请选择", "list": [{"type": "click", "click": {"id": str(n), "content": f"选项{n}"}}
                                               for n in range(11)]}
    assert api.post("kf/send_msg", {"touser": customer, "open_kfid": open_kfid, "msgtype": "msgmenu",
                                    "msgmenu": menu})["errcode"] == 95008
    assert api.post("kf/send_msg", {"touser": customer, "open_kfid": "wkNOSUCH", "msgtype": "text",
                                    "text": {"content": "x"}})["errcode"] == 95004


def test_after_a_human_took_the_session_send_msg_answers_95018(api: Api, open_kfid: str) -> None:
    customer = api.control("kf_customer_message", open_kfid=open_kfid, content="转人工")["external_userid"]
    state = api.post("kf/service_state/get", {"open_kfid": open_kfid, "external_userid": customer})
    assert (state["service_state"], state["servicer_userid"]) == (0, "")
    api.control("kf_servicer_take", open_kfid=open_kfid, external_userid=customer, servicer_userid="shanye.xiaoye02")
    state = api.post("kf/service_state/get", {"open_kfid": open_kfid, "external_userid": customer})
    assert (state["service_state"], state["servicer_userid"]) == (3, "shanye.xiaoye02")
    refused = api.send_text(open_kfid, customer, msgid="after-human")
    assert refused["errcode"] == 95018 and "session status invalid" in refused["errmsg"]
    assert api.sim.get("/_simulator/received", params={"external_userid": customer}).json()["messages"] == []
    back = api.post("kf/service_state/trans", {"open_kfid": open_kfid, "external_userid": customer,
                                               "service_state": 1})
    assert back["errcode"] == 40058  # 3 only goes to another servicer (3) or ends (4)
    ended = api.post("kf/service_state/trans", {"open_kfid": open_kfid, "external_userid": customer,
                                                "service_state": 4})
    assert ended["errcode"] == 0 and "msg_code" not in ended  # the human ended it, not the assistant
    assert api.send_text(open_kfid, customer)["errcode"] == 95018
    api.control("kf_customer_message", open_kfid=open_kfid, external_userid=customer, content="又来了")
    assert api.post("kf/service_state/get", {"open_kfid": open_kfid, "external_userid": customer})[
        "service_state"] == 0  # writing again opens a new session
    assert api.send_text(open_kfid, customer, msgid="after-human")["errcode"] == 0


def test_service_state_trans_follows_the_allowed_changes(api: Api, open_kfid: str) -> None:
    customer = api.control("kf_customer_message", open_kfid=open_kfid)["external_userid"]
    body = {"open_kfid": open_kfid, "external_userid": customer}
    assert api.post("kf/service_state/trans", {**body, "service_state": 1}) == {"errcode": 0, "errmsg": "ok"}
    assert api.send_text(open_kfid, customer)["errcode"] == 0  # the smart assistant (1) may send
    assert api.post("kf/service_state/trans", {**body, "service_state": 0})["errcode"] == 40058
    assert api.post("kf/service_state/trans", {**body, "service_state": 3,
                                               "servicer_userid": "shanye.vip"})["errcode"] == 95014
    assert api.post("kf/service_state/trans", {**body, "service_state": 2})["errcode"] == 0
    assert api.send_text(open_kfid, customer)["errcode"] == 95018  # queued for a human
    taken = api.post("kf/service_state/trans", {**body, "service_state": 3, "servicer_userid": "shanye.xiaoye01"})
    assert taken == {"errcode": 0, "errmsg": "ok"}  # from the queue: no msg_code
    other = api.control("kf_customer_message", open_kfid=open_kfid)["external_userid"]
    handed = api.post("kf/service_state/trans", {"open_kfid": open_kfid, "external_userid": other,
                                                 "service_state": 3, "servicer_userid": "shanye.xiaoye02"})
    assert handed["errcode"] == 0 and handed["msg_code"]
    line = api.post("kf/send_msg_on_event", {"code": handed["msg_code"], "msgtype": "text",
                                             "text": {"content": "已为您转接人工客服"}})
    assert line["errcode"] == 0 and line["msgid"]
    assert api.post("kf/service_state/trans", {**body, "service_state": 9})["errcode"] == 40058
    assert api.post("kf/service_state/get", {**body, "external_userid": "wmNOBODY"})["errcode"] == 40096


def test_a_welcome_code_sends_once_within_20_seconds(api: Api, clock: Any, open_kfid: str) -> None:
    entered = api.control("kf_enter_session", open_kfid=open_kfid, scene="store")
    code = entered["welcome_code"]
    welcome = {"code": code, "msgid": "welcome-1", "msgtype": "msgmenu",
               "msgmenu": {"head_content": "您好，请选择：", "list": [
                   {"type": "click", "click": {"id": "1", "content": "查订单"}}], "tail_content": ""}}
    clock.now += kf.EVENT_CODE_SECONDS - 1
    assert api.post("kf/send_msg_on_event", welcome) == {"errcode": 0, "errmsg": "ok", "msgid": "welcome-1"}
    assert api.post("kf/send_msg_on_event", {**welcome, "msgid": "welcome-2"})["errcode"] == 40058  # used
    received = api.sim.get("/_simulator/received",
                           params={"external_userid": entered["external_userid"]}).json()["messages"]
    assert [(r["via"], r["msgtype"], r["text"]) for r in received] == [("kf_event", "msgmenu", "您好，请选择：")]
    # Entering again within 48 hours of a welcome: no new welcome_code.
    assert api.control("kf_enter_session", open_kfid=open_kfid,
                       external_userid=entered["external_userid"])["welcome_code"] == ""
    late = api.control("kf_enter_session", open_kfid=open_kfid)
    clock.now += kf.EVENT_CODE_SECONDS + 1
    assert api.post("kf/send_msg_on_event", {"code": late["welcome_code"], "msgtype": "text",
                                             "text": {"content": "欢迎"}})["errcode"] == 40058  # expired
    assert api.post("kf/send_msg_on_event", {"code": "nope", "msgtype": "text",
                                             "text": {"content": "欢迎"}})["errcode"] == 40058


def test_customer_batchget_answers_up_to_100_and_lists_invalid_ids(api: Api, corp: VirtualCorp,
                                                                   open_kfid: str) -> None:
    contact = corp.state.contacts[0]
    known = api.control("kf_enter_session", open_kfid=open_kfid, external_userid=contact.external_userid,
                        scene="store", scene_param="table=3")
    assert known["external_userid"] == contact.external_userid  # the same person, the same id
    stranger = api.control("kf_customer_message", open_kfid=open_kfid, content="hi")["external_userid"]
    answer = api.post("kf/customer/batchget", {"external_userid_list": [contact.external_userid, stranger, "wmX"],
                                               "need_enter_session_context": 1})
    assert answer["errcode"] == 0 and answer["invalid_external_userid"] == ["wmX"]
    first, second = answer["customer_list"]
    assert (first["nickname"], first["unionid"], first["avatar"], first["gender"]) \
        == (contact.name, contact.unionid, contact.avatar, contact.gender)
    assert first["enter_session_context"] == {"scene": "store", "scene_param": "table=3"}
    assert second["external_userid"] == stranger and second["unionid"].startswith("o") and second["nickname"]
    too_many = [stranger] * (kf.BATCHGET_MAX + 1)
    assert api.post("kf/customer/batchget", {"external_userid_list": too_many})["errcode"] == 40058
    assert api.post("kf/customer/batchget", {"external_userid_list": []})["errcode"] == 40058


def test_send_msg_can_be_slow_and_fail_transiently_after_delivering(sim: TestClient, api: Api,
                                                                     open_kfid: str) -> None:
    customer = api.control("kf_customer_message", open_kfid=open_kfid, content="hi")["external_userid"]
    fault = sim.post("/_simulator/faults", json={"path": "kf/send_msg", "errcode": -1, "after": True})
    assert fault.status_code == 200 and fault.json()["after"] is True
    lost = api.send_text(open_kfid, customer, "第一条", msgid="r1")
    assert lost["errcode"] == -1  # the platform delivered it, the answer was lost …
    assert api.send_text(open_kfid, customer, "第一条", msgid="r1")["errcode"] == 0  # … the retry is a no-op
    received = sim.get("/_simulator/received", params={"external_userid": customer}).json()["messages"]
    assert [r["msgid"] for r in received] == ["r1"]
    sim.app.state.faults.dice = random.Random(7)  # type: ignore[attr-defined]
    assert sim.post("/_simulator/faults", json={"path": "kf/send_msg", "errcode": -1, "percent": 50,
                                                "latency": 0.05, "forever": True}).status_code == 200
    started = time.monotonic()
    answers = [api.send_text(open_kfid, customer, msgid="r2")["errcode"] for _ in range(8)]
    assert time.monotonic() - started >= 8 * 0.05
    assert 0 in answers and -1 in answers and set(answers) == {0, -1}
    described = sim.get("/_simulator/faults").json()
    assert described["pending"][0]["forever"] and described["failed"]["kf/send_msg"] == answers.count(-1) + 1
    sim.delete("/_simulator/faults")
    received = sim.get("/_simulator/received", params={"external_userid": customer}).json()["messages"]
    assert [r["msgid"] for r in received] == ["r1", "r2"]  # every msgid delivered exactly once
    for bad in ({"percent": 0, "errcode": -1}, {"latency": 61}, {"times": 1}, {"status": 404}):
        assert sim.post("/_simulator/faults", json=bad).status_code == 400, bad


def test_kf_state_survives_save_and_load(tmp_path: Path, api: Api, corp: VirtualCorp, clock: Any,
                                         open_kfid: str) -> None:
    customer = api.control("kf_customer_message", open_kfid=open_kfid, content="你好")["external_userid"]
    token = api.control("kf_callback", open_kfid=open_kfid)["token"]
    _items, cursor = pull_all(api, token, open_kfid)
    assert api.send_text(open_kfid, customer, msgid="kept")["errcode"] == 0
    corp.save(tmp_path / "corp.json")
    loaded = VirtualCorp.from_file(tmp_path / "corp.json", clock=clock)
    assert loaded.kf.state.accounts[0].open_kfid == open_kfid
    loaded.kf.customer_message(open_kfid, customer, content="我又来了")
    answer = loaded.kf.api_sync_msg({"token": loaded.kf.callback(open_kfid)["token"], "cursor": cursor})
    assert [m["text"]["content"] for m in answer["msg_list"]] == ["我又来了"]
    assert loaded.kf.api_send_msg({"touser": customer, "open_kfid": open_kfid, "msgid": "kept", "msgtype": "text",
                                   "text": {"content": "x"}}) == {"msgid": "kept"}
    assert len(loaded.kf.received(customer)) == 1


def test_many_customers_write_at_once_and_the_items_are_what_sync_msg_returns(api: Api, open_kfid: str) -> None:
    first = api.control("kf_customer_messages", open_kfid=open_kfid,
                        messages=[{"content": f"活动怎么参加？#{n}"} for n in range(3)])
    customers = [item["external_userid"] for item in first["items"]]
    assert len(set(customers)) == 3  # an empty external_userid: a new customer each
    again = api.control("kf_customer_messages", open_kfid=open_kfid,
                        messages=[{"external_userid": customers[0], "content": "发货了吗"}])
    assert [item["external_userid"] for item in again["items"]] == [customers[0]]
    items, _cursor = pull_all(api, again["token"], open_kfid)
    assert items == first["items"] + again["items"]
    assert [item["text"]["content"] for item in items] == [*(f"活动怎么参加？#{n}" for n in range(3)), "发货了吗"]
    for bad in ("not a list", [1], [{"content": "x"}] * 10_001):
        answer = api.sim.post("/_simulator/kf_customer_messages", json={"open_kfid": open_kfid, "messages": bad})
        assert answer.status_code == 400 and answer.json()["errcode"] == 40058, bad
