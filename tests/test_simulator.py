"""The WeCom simulator's server API: token rules and errcodes, paging, contact ways, welcome
codes, corp tags, group chats, mass sends, state files — and wechatpy's own WeCom client
talking to it, which shows the simulator speaks the protocol Siyu's client will speak."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from wechatpy.enterprise import WeChatClient
from wechatpy.exceptions import WeChatClientException

from siyu.simulator.corp import DEFAULT_MEMBERS, VirtualCorp
from siyu.simulator.server import NAME, RunningServer, ServerOptions, create_app

CORP_ID = "wwSIMTEST0000001"
SECRET = "simulator-test-secret"


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


def token_of(sim: TestClient) -> str:
    answer = sim.get("/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET}).json()
    assert answer["errcode"] == 0, answer
    return str(answer["access_token"])


class Api:
    """Calls the way WeCom clients make them: ?access_token=… and a JSON body for POSTs."""

    def __init__(self, sim: TestClient) -> None:
        self.sim = sim
        self.token = token_of(sim)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return dict(self.sim.get(f"/cgi-bin/{path}", params={"access_token": self.token, **params}).json())

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.sim.post(f"/cgi-bin/{path}", params={"access_token": self.token},
                               content=json.dumps(body, ensure_ascii=False).encode())
        assert answer.status_code == 200  # WeCom answers errors in the body, never with an HTTP status
        return dict(answer.json())


@pytest.fixture
def api(sim: TestClient) -> Api:
    return Api(sim)


def test_gettoken_gives_one_token_for_the_right_secret_and_errcodes_otherwise(sim: TestClient) -> None:
    first = sim.get("/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET})
    assert first.json()["errcode"] == 0 and first.json()["errmsg"] == "ok" and first.json()["expires_in"] == 7200
    assert first.headers["X-Siyu-Simulator"] == NAME
    again = sim.get("/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET}).json()
    assert again["access_token"] == first.json()["access_token"]  # valid tokens are handed out again, as WeCom does

    def code(**params: str) -> int:
        return int(sim.get("/cgi-bin/gettoken", params=params).json()["errcode"])

    assert code(corpid=CORP_ID, corpsecret="wrong") == 40001
    assert code(corpid="wwSOMEONEELSE", corpsecret=SECRET) == 40013
    assert code(corpsecret=SECRET) == 41002
    assert code(corpid=CORP_ID) == 41004


def test_api_calls_need_a_valid_unexpired_token(sim: TestClient, clock: Clock) -> None:
    path = "/cgi-bin/externalcontact/get_follow_user_list"
    assert sim.get(path).json()["errcode"] == 41001
    refused = sim.get(path, params={"access_token": "made-up"})
    assert refused.status_code == 200 and refused.json()["errcode"] == 40014
    assert "more info at https://open.work.weixin.qq.com/devtool/query?e=40014" in refused.json()["errmsg"]
    token = token_of(sim)
    assert sim.get(path, params={"access_token": token}).json()["errcode"] == 0
    clock.now += 7201
    assert sim.get(path, params={"access_token": token}).json()["errcode"] == 42001
    fresh = token_of(sim)
    assert fresh != token and sim.get(path, params={"access_token": fresh}).json()["errcode"] == 0


def test_a_switched_on_rate_limit_answers_45009(corp: VirtualCorp) -> None:
    with TestClient(create_app(corp, ServerOptions(secret=SECRET, rate_limit=3))) as sim:
        api = Api(sim)
        codes = [api.get("externalcontact/get_follow_user_list")["errcode"] for _ in range(4)]
    assert codes == [0, 0, 0, 45009]


def test_default_members_are_the_demo_wecom_accounts(api: Api) -> None:
    from siyu.accounts.models import AccountKind
    from siyu.demo import ACCOUNTS

    demo = {f"shanye.{spec.key}" for spec in ACCOUNTS if spec.kind is AccountKind.wecom}
    assert {userid for userid, _name in DEFAULT_MEMBERS} == demo
    users = api.get("user/simplelist", department_id="1")["userlist"]
    assert {u["userid"] for u in users} == demo
    assert set(api.get("externalcontact/get_follow_user_list")["follow_user"]) == demo
    assert api.get("user/get", userid="nobody")["errcode"] == 60111


def test_list_and_get_show_a_customer_with_remark_tags_and_state(api: Api, corp: VirtualCorp) -> None:
    added = corp.add_contact("shanye.ahe01", state="ch-tea-fair")
    ids = api.get("externalcontact/list", userid="shanye.ahe01")["external_userid"]
    assert added["external_userid"] in ids
    tag = corp.state.tag_groups[0].tags[0]
    assert api.post("externalcontact/mark_tag", {"userid": "shanye.ahe01", "external_userid": added["external_userid"],
                                                 "add_tag": [tag.id]})["errcode"] == 0
    assert api.post("externalcontact/remark", {"userid": "shanye.ahe01", "external_userid": added["external_userid"],
                                               "remark": "陈女士-龙井", "description": "周末到店",
                                               "remark_mobiles": ["13800000000"]})["errcode"] == 0
    detail = api.get("externalcontact/get", external_userid=added["external_userid"])
    assert detail["errcode"] == 0
    assert detail["external_contact"]["name"] == added["name"]
    follow = detail["follow_user"][0]
    assert follow["userid"] == "shanye.ahe01" and follow["state"] == "ch-tea-fair"
    assert follow["remark"] == "陈女士-龙井" and follow["description"] == "周末到店"
    assert follow["remark_mobiles"] == ["13800000000"]
    assert follow["tags"] == [{"group_name": corp.state.tag_groups[0].group_name, "tag_name": tag.name,
                               "tag_id": tag.id, "type": 1}]
    assert api.get("externalcontact/get", external_userid="wmNOBODY")["errcode"] == 40096
    corp.remove_contact("shanye.ahe01", added["external_userid"])
    assert api.get("externalcontact/get", external_userid=added["external_userid"])["errcode"] == 84061
    assert api.post("externalcontact/remark", {"userid": "shanye.ahe01", "external_userid": added["external_userid"],
                                               "remark": "x"})["errcode"] == 84061


def test_batch_get_by_user_pages_with_a_cursor_until_every_customer_is_seen(api: Api) -> None:
    members = ["shanye.xiaoye01", "shanye.xiaoye02"]
    expected = set()
    for userid in members:
        expected.update((userid, e) for e in api.get("externalcontact/list", userid=userid)["external_userid"])
    seen: list[tuple[str, str]] = []
    cursor = ""
    pages = 0
    while True:
        answer = api.post("externalcontact/batch/get_by_user", {"userid_list": members, "cursor": cursor, "limit": 7})
        assert answer["errcode"] == 0 and len(answer["external_contact_list"]) <= 7
        seen += [(i["follow_info"]["userid"], i["external_contact"]["external_userid"])
                 for i in answer["external_contact_list"]]
        pages += 1
        cursor = answer["next_cursor"]
        if not cursor:
            break
    assert pages > 1 and len(seen) == len(set(seen)) and set(seen) == expected
    assert api.post("externalcontact/batch/get_by_user", {"userid_list": members, "cursor": "bogus"})["errcode"] \
        == 50100
    assert api.post("externalcontact/batch/get_by_user", {"userid_list": []})["errcode"] == 40058


def test_group_chats_page_by_cursor_and_show_their_members(api: Api, corp: VirtualCorp) -> None:
    chat_ids: list[str] = []
    cursor = ""
    while True:
        answer = api.post("externalcontact/groupchat/list", {"status_filter": 0, "cursor": cursor, "limit": 2})
        assert answer["errcode"] == 0
        chat_ids += [c["chat_id"] for c in answer["group_chat_list"]]
        cursor = answer["next_cursor"]
        if not cursor:
            break
    assert sorted(chat_ids) == sorted(c.chat_id for c in corp.state.group_chats)
    chat = corp.state.group_chats[0]
    detail = api.post("externalcontact/groupchat/get", {"chat_id": chat.chat_id, "need_name": 1})["group_chat"]
    assert detail["owner"] == chat.owner and detail["name"] == chat.name
    assert {m["userid"] for m in detail["member_list"]} == {m.userid for m in chat.members}
    assert all("name" in m for m in detail["member_list"])
    corp.dismiss_group(chat.chat_id)
    assert api.post("externalcontact/groupchat/get", {"chat_id": chat.chat_id})["errcode"] == 49008
    listed = api.post("externalcontact/groupchat/list", {"limit": 1000})["group_chat_list"]
    assert chat.chat_id not in {c["chat_id"] for c in listed}
    assert api.post("externalcontact/groupchat/list", {"limit": 1001})["errcode"] == 40058


def test_contact_way_keeps_its_state_through_add_get_update_and_delete(api: Api) -> None:
    made = api.post("externalcontact/add_contact_way", {"type": 1, "scene": 2, "state": "channel-42",
                                                        "remark": "门店收银台", "user": ["shanye.vip"]})
    assert made["errcode"] == 0 and len(made["config_id"]) == 32
    # WeCom's image host, or (served by the simulator) its own address: the URL answers the QR image.
    assert made["qr_code"].endswith(f"/wwpic/sim_{made['config_id']}/0")
    image = api.sim.get(made["qr_code"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    way = api.post("externalcontact/get_contact_way", {"config_id": made["config_id"]})["contact_way"]
    assert way["state"] == "channel-42" and way["user"] == ["shanye.vip"] and way["qr_code"] == made["qr_code"]
    assert api.post("externalcontact/update_contact_way", {"config_id": made["config_id"],
                                                           "state": "channel-43"})["errcode"] == 0
    assert api.post("externalcontact/get_contact_way", {"config_id": made["config_id"]})["contact_way"]["state"] \
        == "channel-43"
    listed = api.post("externalcontact/list_contact_way", {"limit": 100})["contact_way"]
    assert {"config_id": made["config_id"]} in listed
    assert api.post("externalcontact/del_contact_way", {"config_id": made["config_id"]})["errcode"] == 0
    assert api.post("externalcontact/get_contact_way", {"config_id": made["config_id"]})["errcode"] == 41044
    assert api.post("externalcontact/get_contact_way", {})["errcode"] == 41043
    assert api.post("externalcontact/add_contact_way", {"scene": 2, "user": ["shanye.vip"]})["errcode"] == 41037
    assert api.post("externalcontact/add_contact_way", {"type": 1, "user": ["shanye.vip"]})["errcode"] == 41038
    assert api.post("externalcontact/add_contact_way", {"type": 1, "scene": 2, "user": ["shanye.vip",
                                                                                        "shanye.ahe01"]})["errcode"] \
        == 41041
    assert api.post("externalcontact/add_contact_way", {"type": 2, "scene": 2, "user": ["nobody"]})["errcode"] \
        == 60111
    assert api.post("externalcontact/add_contact_way", {"type": 1, "scene": 2, "user": ["shanye.vip"],
                                                        "state": "x" * 31})["errcode"] == 40058


def test_welcome_code_works_once_and_only_within_20_seconds(api: Api, corp: VirtualCorp, clock: Clock) -> None:
    first = corp.add_contact("shanye.xiaoye01", state="s1")
    body = {"welcome_code": first["welcome_code"], "text": {"content": "欢迎！"}}
    assert api.post("externalcontact/send_welcome_msg", body)["errcode"] == 0
    assert api.post("externalcontact/send_welcome_msg", body)["errcode"] == 41050
    assert corp.state.welcome_messages[-1].external_userid == first["external_userid"]
    assert corp.state.welcome_messages[-1].text == "欢迎！"
    late = corp.add_contact("shanye.xiaoye01", state="s1")
    clock.now += 21
    assert api.post("externalcontact/send_welcome_msg", {"welcome_code": late["welcome_code"],
                                                         "text": {"content": "hi"}})["errcode"] == 41050
    on_time = corp.add_contact("shanye.xiaoye01")
    assert api.post("externalcontact/send_welcome_msg", {"welcome_code": on_time["welcome_code"]})["errcode"] \
        == 44004
    assert api.post("externalcontact/send_welcome_msg", {"text": {"content": "hi"}})["errcode"] == 41049


def test_corp_tags_are_created_renamed_marked_and_deleted(api: Api, corp: VirtualCorp) -> None:
    made = api.post("externalcontact/add_corp_tag", {"group_name": "活动", "tag": [{"name": "报名"}, {"name": "到场"}]})
    assert made["errcode"] == 0
    group = made["tag_group"]
    assert [t["name"] for t in group["tag"]] == ["报名", "到场"]
    assert api.post("externalcontact/add_corp_tag", {"group_id": group["group_id"],
                                                     "tag": [{"name": "报名"}]})["errcode"] == 40071
    signed_up, came = (t["id"] for t in group["tag"])
    assert api.post("externalcontact/edit_corp_tag", {"id": signed_up, "name": "已报名"})["errcode"] == 0
    assert api.post("externalcontact/edit_corp_tag", {"id": "etNOPE", "name": "x"})["errcode"] == 40068
    listed = api.post("externalcontact/get_corp_tag_list", {"tag_id": [signed_up]})["tag_group"]
    assert listed == [{**listed[0], "tag": [{**listed[0]["tag"][0], "name": "已报名"}]}]
    assert [t["id"] for t in listed[0]["tag"]] == [signed_up]

    relation = {"userid": "shanye.ahe02", "external_userid": corp.add_contact("shanye.ahe02")["external_userid"]}
    assert api.post("externalcontact/mark_tag", {**relation, "add_tag": [signed_up, came]})["errcode"] == 0
    assert api.post("externalcontact/mark_tag", {**relation, "add_tag": ["etNOPE"]})["errcode"] == 40068
    assert api.post("externalcontact/del_corp_tag", {"tag_id": [came]})["errcode"] == 0
    tags = api.get("externalcontact/get", external_userid=relation["external_userid"])["follow_user"][0]["tags"]
    assert [t["tag_id"] for t in tags] == [signed_up]
    assert api.post("externalcontact/del_corp_tag", {"tag_id": [signed_up]})["errcode"] == 0
    groups = api.post("externalcontact/get_corp_tag_list", {})["tag_group"]
    assert group["group_id"] not in {g["group_id"] for g in groups}  # its last tag gone, the group goes too
    assert api.post("externalcontact/del_corp_tag", {})["errcode"] == 40058


def test_mass_send_reports_failures_and_one_message_per_customer_per_day(api: Api, corp: VirtualCorp) -> None:
    one = corp.add_contact("shanye.vip")["external_userid"]
    two = corp.add_contact("shanye.vip")["external_userid"]
    sent = api.post("externalcontact/add_msg_template", {
        "chat_type": "single", "external_userid": [one, two, "wmSTRANGER"], "sender": "shanye.vip",
        "text": {"content": "新品上市"}})
    assert sent["errcode"] == 0 and sent["fail_list"] == ["wmSTRANGER"] and sent["msgid"].startswith("msg")
    result = api.post("externalcontact/get_groupmsg_send_result", {"msgid": sent["msgid"], "userid": "shanye.vip"})
    assert sorted((r["external_userid"], r["status"]) for r in result["send_list"]) == sorted([(one, 1), (two, 1)])
    task = api.post("externalcontact/get_groupmsg_task", {"msgid": sent["msgid"]})["task_list"]
    assert [t["userid"] for t in task] == ["shanye.vip"] and task[0]["send_time"] > 0
    again = api.post("externalcontact/add_msg_template", {"external_userid": [one], "sender": "shanye.vip",
                                                          "text": {"content": "再发一次"}})
    legacy = api.post("externalcontact/get_group_msg_result", {"msgid": again["msgid"]})
    assert [(d["external_userid"], d["status"]) for d in legacy["detail_list"]] == [(one, 3)]  # already got one today
    assert api.post("externalcontact/add_msg_template", {"external_userid": ["wmSTRANGER"], "sender": "shanye.vip",
                                                         "text": {"content": "x"}})["errcode"] == 41048
    assert api.post("externalcontact/add_msg_template", {"external_userid": [one]})["errcode"] == 44004
    assert api.post("externalcontact/get_group_msg_result", {"msgid": "msgNOPE"})["errcode"] == 41047


def test_customers_siyu_already_has_are_adopted_so_replies_to_them_are_delivered(api: Api, corp: VirtualCorp) -> None:
    demo_customer = {"external_userid": "wmDEMOCUSTOMER01", "name": "王芳", "userid": "shanye.vip",
                     "remark": "王芳-龙井", "added_at": 1700000000}
    elsewhere = {**demo_customer, "external_userid": "wmOTHER", "userid": "not.a.member"}
    reply = {"chat_type": "single", "external_userid": ["wmDEMOCUSTOMER01"], "sender": "shanye.vip",
             "text": {"content": "您好"}}
    assert api.post("externalcontact/add_msg_template", reply)["errcode"] == 41048  # unknown to this corp yet
    assert corp.adopt_contacts([demo_customer, elsewhere, demo_customer]) == 1  # once; a stranger member skipped
    assert api.post("externalcontact/add_msg_template", reply)["errcode"] == 0
    contact = api.get("externalcontact/get", external_userid="wmDEMOCUSTOMER01")
    assert contact["external_contact"]["name"] == "王芳" and contact["follow_user"][0]["remark"] == "王芳-龙井"


def test_post_apis_refuse_get_bad_json_and_unknown_paths(api: Api, sim: TestClient) -> None:
    assert api.get("externalcontact/add_contact_way")["errcode"] == 40058
    bad = sim.post("/cgi-bin/externalcontact/get_corp_tag_list", params={"access_token": api.token},
                   content=b"{not json")
    assert bad.status_code == 200 and bad.json()["errcode"] == 40058
    missing = sim.get("/cgi-bin/externalcontact/no_such_api", params={"access_token": api.token})
    assert missing.status_code == 404 and NAME in missing.json()["errmsg"]


def test_the_root_page_says_it_is_a_simulator(sim: TestClient) -> None:
    page = sim.get("/")
    assert page.status_code == 200 and NAME in page.text and "not</strong> WeCom" in page.text
    assert page.headers["Server"] == "siyu-wecom-simulator"
    assert "山野茶舍客服" in page.text and "微信客服" in page.text


def test_the_same_seed_builds_the_same_corp_and_state_files_round_trip(tmp_path: Path, clock: Clock) -> None:
    first = VirtualCorp.seeded(11, corp_id=CORP_ID, clock=clock, salt=0)
    second = VirtualCorp.seeded(11, corp_id=CORP_ID, clock=clock, salt=0)
    other = VirtualCorp.seeded(12, corp_id=CORP_ID, clock=clock, salt=0)
    assert first.dump() == second.dump() != other.dump()
    assert all(c.name and len(c.external_userid) == 32 for c in first.state.contacts)
    added = first.add_contact("shanye.vip", state="s")
    path = tmp_path / "corp.json"
    first.save(path)
    loaded = VirtualCorp.from_file(path, clock=clock)
    assert loaded.overview() == first.overview()
    assert loaded.contact(added["external_userid"]).follow("shanye.vip") is not None
    assert loaded.add_contact("shanye.vip")["external_userid"] == first.add_contact("shanye.vip")["external_userid"]


def test_members_can_be_given_instead_of_the_demo_ones(clock: Clock) -> None:
    corp = VirtualCorp.seeded(1, corp_id=CORP_ID, members=[("alice", "爱丽丝")], clock=clock, contacts_per_member=3)
    assert [m.userid for m in corp.state.members] == ["alice"]
    assert len(corp.contacts_of("alice")) == 3


class SimulatedWeCom(WeChatClient):  # type: ignore[misc]
    """wechatpy's WeCom client with the API base moved to the simulator (gettoken is hard-wired in 1.8.18)."""

    def __init__(self, base: str, corp_id: str, secret: str) -> None:
        self.API_BASE_URL = base
        super().__init__(corp_id, secret)

    def fetch_access_token(self) -> Any:
        return self._fetch_access_token(url=self.API_BASE_URL + "gettoken",
                                        params={"corpid": self.corp_id, "corpsecret": self.secret})


def test_wechatpy_client_gets_tokens_and_external_contacts_from_the_simulator(corp: VirtualCorp) -> None:
    live_corp = VirtualCorp.seeded(3, corp_id=CORP_ID, salt=0)  # the real clock: wechatpy checks expiry itself
    server = RunningServer(create_app(live_corp, ServerOptions(secret=SECRET))).start()
    try:
        client = SimulatedWeCom(server.url + "/cgi-bin/", CORP_ID, SECRET)
        followers = client.external_contact.get_follow_user_list()["follow_user"]
        assert "shanye.xiaoye01" in followers
        ids = client.external_contact.list("shanye.xiaoye01")["external_userid"]
        detail = client.external_contact.get(ids[0])
        assert detail["external_contact"]["external_userid"] == ids[0]
        assert detail["follow_user"][0]["userid"] == "shanye.xiaoye01"
        chats = client.external_contact_group_chat.list_all(limit=1)
        assert len(chats) == len(live_corp.state.group_chats)
        assert client.external_contact_group_chat.get(chats[0]["chat_id"])["group_chat"]["chat_id"] \
            == chats[0]["chat_id"]
        # The token expires on the platform's side: wechatpy sees 42001, fetches a new one and retries.
        old_token = client.access_token
        assert httpx.post(server.url + "/_simulator/tokens/expire").json()["expired"] >= 1
        assert client.external_contact.get(ids[0])["errcode"] == 0
        assert client.access_token != old_token
        with pytest.raises(WeChatClientException) as refused:
            client.external_contact.get("wmNOBODY")
        assert refused.value.errcode == 40096
        wrong = SimulatedWeCom(server.url + "/cgi-bin/", CORP_ID, "not-the-secret")
        with pytest.raises(WeChatClientException) as denied:
            wrong.external_contact.get_follow_user_list()
        assert denied.value.errcode == 40001
    finally:
        server.stop()


def test_faults_are_injected_for_a_number_of_calls_and_calls_are_counted(sim: TestClient, api: Api) -> None:
    assert sim.post("/_simulator/faults", json={"path": "externalcontact/list", "times": 2,
                                                "errcode": 45009}).status_code == 200
    assert sim.post("/_simulator/faults", json={"path": "*", "status": 503}).status_code == 200
    assert sim.post("/_simulator/faults", json={"times": 0, "errcode": 45009}).status_code == 400
    assert sim.post("/_simulator/faults", json={"status": 404}).status_code == 400
    assert api.get("externalcontact/list", userid="shanye.vip")["errcode"] == 45009
    assert api.get("externalcontact/list", userid="shanye.vip")["errcode"] == 45009
    busy = sim.get("/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET})
    assert busy.status_code == 503
    assert api.get("externalcontact/list", userid="shanye.vip")["errcode"] == 0
    state = sim.get("/_simulator/faults").json()
    assert state["pending"] == [] and state["calls"]["externalcontact/list"] == 3
    assert sim.delete("/_simulator/faults").json() == {"cleared": True}
    assert sim.get("/_simulator/faults").json() == {"pending": [], "calls": {}, "failed": {}}


def test_transfers_answer_per_customer_and_wait_for_the_takeover(api: Api, corp: VirtualCorp) -> None:
    corp.auto_accept_transfer = False  # as on the platform: taken over after 24 hours
    mine = api.get("externalcontact/list", userid="shanye.ahe01")["external_userid"]
    other = api.get("externalcontact/list", userid="shanye.vip")["external_userid"][0]
    body = {"handover_userid": "shanye.ahe01", "takeover_userid": "shanye.ahe02", "external_userid": [mine[0], other]}
    answer = api.post("externalcontact/transfer_customer", body)
    assert answer["customer"] == [{"external_userid": mine[0], "errcode": 0},
                                  {"external_userid": other, "errcode": 84061}]
    assert api.post("externalcontact/transfer_customer", {**body, "external_userid": [mine[0]]})["customer"] \
        == [{"external_userid": mine[0], "errcode": 40100}]  # already on its way
    result = api.post("externalcontact/transfer_result", {"handover_userid": "shanye.ahe01",
                                                          "takeover_userid": "shanye.ahe02"})
    assert result["customer"] == [{"external_userid": mine[0], "status": 2, "takeover_time": 0}]
    assert api.post("externalcontact/transfer_customer", {**body, "takeover_userid": "shanye.ahe01"})["errcode"] \
        == 40058
    assert api.post("externalcontact/resigned/transfer_customer", body)["errcode"] == 40097
    corp.resign_member("shanye.ahe01")
    assert api.get("user/get", userid="shanye.ahe01")["errcode"] == 60111
    assert "shanye.ahe01" not in api.get("externalcontact/get_follow_user_list")["follow_user"]
    unassigned = api.post("externalcontact/get_unassigned_list", {"page_size": 2})
    assert len(unassigned["info"]) == 2 and unassigned["is_last"] is False and unassigned["next_cursor"]
