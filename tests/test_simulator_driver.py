"""The simulator's driver: real encrypted callbacks, checked by a small receiver that decrypts
them with wechatpy's WeCom crypto (signature, corp id, XML fields), answers what a test
wants (success, errors, silence) — and finally Siyu's own callback endpoint turning a
friends scenario into customers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from defusedxml import ElementTree
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from typer.testing import CliRunner
from wechatpy.enterprise.crypto import WeChatCrypto

from siyu.simulator.callbacks import Encrypter
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.driver import Options, Summary, announce_kf, run_scenario, run_simulated_traffic
from siyu.simulator.server import RunningServer, ServerOptions, create_app

CORP_ID = "wwDRIVERTEST0001"
TOKEN = "driver-test-token"
AES_KEY = base64.b64encode(hashlib.sha256(b"driver").digest()).decode()[:-1]
SECRET = "driver-test-secret"


@dataclass
class Delivery:
    params: dict[str, str]
    xml: str
    fields: dict[str, Any]


@dataclass
class Receiver:
    """Siyu's side of the wire, reduced to checking what arrives."""

    answers: list[tuple[int, str] | float] = field(default_factory=list)  # scripted replies, then "success"
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_event: Any = None

    def app(self) -> Starlette:
        async def callback(request: Request) -> PlainTextResponse:
            params = dict(request.query_params)
            body = (await request.body()).decode()
            # Signature as WeCom defines it, computed here by hand; then wechatpy decrypts (checking it again).
            encrypted = ElementTree.fromstring(body).findtext("Encrypt") or ""
            expected = hashlib.sha1("".join(sorted([TOKEN, params["timestamp"], params["nonce"],  # noqa: S324
                                                    encrypted])).encode()).hexdigest()
            assert expected == params["msg_signature"]
            assert ElementTree.fromstring(body).findtext("ToUserName") == CORP_ID
            xml = WeChatCrypto(TOKEN, AES_KEY, CORP_ID).decrypt_message(body, params["msg_signature"],
                                                                        params["timestamp"], params["nonce"])
            root = ElementTree.fromstring(xml)
            fields: dict[str, Any] = {}
            for child in root:
                fields[child.tag] = [i.text for i in child] if len(child) else (child.text or "")
            with self.lock:
                self.deliveries.append(Delivery(params=params, xml=xml, fields=fields))
                scripted = self.answers.pop(0) if self.answers else None
            if self.on_event is not None:
                await asyncio.to_thread(self.on_event, fields)
            if isinstance(scripted, float):
                await asyncio.sleep(scripted)
                return PlainTextResponse("success")
            if scripted is not None:
                status, text = scripted
                return PlainTextResponse(text, status_code=status)
            return PlainTextResponse("success")

        async def healthz(_request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/wecom/callback", callback, methods=["POST"]), Route("/healthz", healthz)])

    def events(self, change: str | None = None) -> list[dict[str, Any]]:
        return [d.fields for d in self.deliveries if change is None or d.fields.get("ChangeType") == change]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def siyu(receiver: Receiver) -> Iterator[str]:
    server = RunningServer(receiver.app()).start()
    yield server.url
    server.stop()


@pytest.fixture
def corp() -> VirtualCorp:
    return VirtualCorp.seeded(5, corp_id=CORP_ID, salt=0)


def encrypter() -> Encrypter:
    return Encrypter(corp_id=CORP_ID, token=TOKEN, aes_key=AES_KEY)


def play(name: str, target: str, corp: VirtualCorp | None = None, simulator_url: str | None = None,
         **kwargs: Any) -> Summary:
    options = Options(count=kwargs.pop("count"), settle=0, progress_every=60, **kwargs.pop("options", {}))
    return run_scenario(name, target=target, encrypter=encrypter(), options=options, corp=corp,
                        simulator_url=simulator_url, echo=lambda _line: None, **kwargs)


def test_friends_adds_are_signed_encrypted_and_carry_state_and_welcome_code(receiver: Receiver, siyu: str,
                                                                           corp: VirtualCorp) -> None:
    summary = play("friends", siyu, corp, count=10, options={"delete_share": 0.2})
    assert (summary.sent, summary.acknowledged, summary.failed, summary.retried) == (12, 12, 0, 0)
    adds = receiver.events("add_external_contact")
    assert len(adds) == 10
    states = {w.state for w in corp.state.contact_ways}
    for event in adds:
        assert event["ToUserName"] == CORP_ID and event["FromUserName"] == "sys" and event["MsgType"] == "event"
        assert event["Event"] == "change_external_contact" and int(event["CreateTime"]) > 0
        assert event["State"] in states and event["WelcomeCode"]
        contact = corp.contact(event["ExternalUserID"])
        assert contact.follows[0].userid == event["UserID"] and contact.follows[0].state == event["State"]
    # The welcome code in the callback is one the simulated API accepts (once).
    assert corp.api_send_welcome_msg({"welcome_code": adds[-1]["WelcomeCode"], "text": {"content": "hi"}}) == {}
    gone = receiver.events("del_follow_user") + receiver.events("del_external_contact")
    assert len(gone) == 2
    for event in gone:
        assert corp.contact(event["ExternalUserID"]).follow(event["UserID"]) is None  # the corp changed first
    assert len({d.params["nonce"] for d in receiver.deliveries}) == len(receiver.deliveries)


def test_an_unacknowledged_callback_is_resent_with_the_same_event(receiver: Receiver, siyu: str,
                                                                  corp: VirtualCorp) -> None:
    receiver.answers = [(503, "busy"), (200, "not success"), 1.0]  # an error, a wrong body, then too slow
    summary = play("friends", siyu, corp, count=1, options={"delete_share": 0}, timeout=0.4, retry_delay=0)
    assert (summary.sent, summary.acknowledged, summary.retried, summary.failed) == (1, 1, 3, 0)
    xmls = {d.xml for d in receiver.deliveries}
    assert len(receiver.deliveries) == 4 and len(xmls) == 1  # the same event every time …
    assert len({d.params["nonce"] for d in receiver.deliveries}) == 4  # … in a fresh envelope each time


def test_after_three_resends_the_callback_counts_as_failed(receiver: Receiver, siyu: str, corp: VirtualCorp) -> None:
    receiver.answers = [(500, "down")] * 4
    summary = play("friends", siyu, corp, count=1, options={"delete_share": 0}, retry_delay=0)
    assert (summary.acknowledged, summary.retried, summary.failed) == (0, 3, 1)
    assert summary.errors == {"HTTP 500: down": 1}
    assert len(receiver.deliveries) == 4


def test_same_envelope_resends_the_identical_request(receiver: Receiver, siyu: str, corp: VirtualCorp) -> None:
    receiver.answers = [(500, "down")]
    play("friends", siyu, corp, count=1, options={"delete_share": 0}, retry_delay=0, same_envelope=True)
    first, second = receiver.deliveries
    assert first.params == second.params and first.xml == second.xml


def pull_everything(corp: VirtualCorp, token: str, *, limit: int = 1000) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = corp.kf.api_sync_msg({"token": token, "cursor": cursor, "limit": limit})
        items.extend(page["msg_list"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return items


KF_CALLBACK_FIELDS = {"ToUserName", "CreateTime", "MsgType", "Event", "Token", "OpenKfId"}


def test_campaign_through_kf_announces_a_flood_with_batched_callbacks(receiver: Receiver, siyu: str,
                                                                      corp: VirtualCorp) -> None:
    summary = play("campaign", siyu, corp, count=600, options={"duplicate_share": 0.2, "concurrency": 8})
    assert summary.failed == 0 and summary.acknowledged == summary.sent and summary.kf_messages == 600
    assert 1 <= summary.sent < 600  # one callback covers many waiting messages
    assert len(receiver.deliveries) == summary.sent + summary.duplicates
    open_kfid = corp.kf.state.accounts[0].open_kfid
    for delivery in receiver.deliveries:  # decrypted by wechatpy in the receiver: the platform's fields only
        fields = delivery.fields
        assert set(fields) == KF_CALLBACK_FIELDS and fields["ToUserName"] == CORP_ID
        assert (fields["MsgType"], fields["Event"], fields["OpenKfId"]) == ("event", "kf_msg_or_event", open_kfid)
        assert fields["Token"] and int(fields["CreateTime"]) > 0
    first_xml = {d.xml for d in receiver.deliveries}
    assert len(first_xml) == summary.sent  # a duplicate is the same callback again, not a new one
    # The last callback's token pulls the whole flood, 1,000 at a time (here 250).
    items = pull_everything(corp, receiver.deliveries[-1].fields["Token"], limit=250)
    entered = [i for i in items if i["msgtype"] == "event"]
    written = [i for i in items if i["origin"] == 3]
    assert len(entered) == 30 and len(written) == 570 and len({i["msgid"] for i in items}) == 600
    assert all(e["event"]["event_type"] == "enter_session" and e["event"]["scene"].startswith("sim-")
               for e in entered)
    assert {w["external_userid"] for w in written} <= {e["event"]["external_userid"] for e in entered}
    assert sum(1 for w in written if w["msgtype"] == "text") > 450 and len({w["msgtype"] for w in written}) > 2


def test_a_control_with_a_callback_target_announces_itself(receiver: Receiver, siyu: str) -> None:
    corp = VirtualCorp.seeded(6, corp_id=CORP_ID, salt=0)
    simulator = RunningServer(create_app(corp, ServerOptions(secret=SECRET, callback_target=siyu,
                                                             encrypter=encrypter()))).start()
    try:
        open_kfid = corp.kf.state.accounts[0].open_kfid
        written = httpx.post(f"{simulator.url}/_simulator/kf_customer_message",
                             json={"open_kfid": open_kfid, "msgtype": "location"}).json()
        assert len(receiver.deliveries) == 1  # delivered before the control answered
        fields = receiver.deliveries[0].fields
        assert set(fields) == KF_CALLBACK_FIELDS and fields["OpenKfId"] == open_kfid
        token = httpx.get(f"{simulator.url}/cgi-bin/gettoken",
                          params={"corpid": CORP_ID, "corpsecret": SECRET}).json()["access_token"]
        page = httpx.post(f"{simulator.url}/cgi-bin/kf/sync_msg", params={"access_token": token},
                          json={"token": fields["Token"], "open_kfid": open_kfid}).json()
        assert page["errcode"] == 0 and [m["msgid"] for m in page["msg_list"]] == [written["msgid"]]
        assert page["msg_list"][0]["location"]["name"]
    finally:
        simulator.stop()


def test_groups_scenario_creates_changes_and_dismisses_groups(receiver: Receiver, siyu: str,
                                                             corp: VirtualCorp) -> None:
    summary = play("groups", siyu, corp, count=30)
    assert summary.failed == 0
    created = receiver.events("create")
    updates = receiver.events("update")
    dismissed = receiver.events("dismiss")
    assert len(created) == 3 and len(dismissed) == len(created) // 5
    assert updates and {u["UpdateDetail"] for u in updates} <= {"add_member", "del_member"}
    for update in updates:
        assert update["Event"] == "change_external_chat"
        assert int(update["MemChangeCnt"]) == len(update["MemChangeList"]) >= 1
        if update["UpdateDetail"] == "add_member":
            assert update["JoinScene"] in ("1", "2", "3")
        else:
            assert update["QuitScene"] in ("0", "1")
        assert update["LastMemVer"] != update["CurMemVer"]
    chat_id = created[0]["ChatId"]
    final = {m.userid for m in corp._chat(chat_id).members if m.type == 2}
    joined: set[str] = set()
    # Callbacks may arrive out of order (several in flight); the member version orders them.
    for update in sorted((u for u in updates if u["ChatId"] == chat_id), key=lambda u: u["CurMemVer"]):
        changed = set(update["MemChangeList"])
        joined = joined | changed if update["UpdateDetail"] == "add_member" else joined - changed
    assert joined <= final  # everyone a callback says joined (and did not leave) is in the group


def test_announce_kf_calls_back_for_what_customers_do_in_the_corp(receiver: Receiver, siyu: str,
                                                                   corp: VirtualCorp) -> None:
    notifier = announce_kf(corp, siyu, encrypter(), retry_delay=0)
    entered = corp.kf.enter_session(scene="store")
    corp.kf.customer_message(external_userid=entered["external_userid"], msgtype="voice")
    assert notifier.idle() and len(receiver.deliveries) == 2
    assert notifier.sender.stats.acknowledged == 2
    tokens = [d.fields["Token"] for d in receiver.deliveries]
    assert [m["msgtype"] for m in pull_everything(corp, tokens[-1])] == ["event", "voice"]
    corp.kf.listeners.remove(notifier.notify)
    corp.kf.customer_message(external_userid=entered["external_userid"])
    assert len(receiver.deliveries) == 2
    notifier.sender.clients.close()


def test_chat_goes_through_kf_with_some_of_the_corps_own_customers(receiver: Receiver, siyu: str,
                                                                     corp: VirtualCorp) -> None:
    summary = play("chat", siyu, corp, count=40, options={"concurrency": 1})
    assert summary.kf_messages == 44 and summary.failed == 0
    assert not [d for d in receiver.deliveries if d.fields.get("MsgType") != "event"]  # no invented text callback
    assert {d.fields["Event"] for d in receiver.deliveries} == {"kf_msg_or_event"}
    items = pull_everything(corp, receiver.deliveries[-1].fields["Token"])
    entered = {i["event"]["external_userid"] for i in items if i["msgtype"] == "event"}
    assert len(entered) == 4 and len([i for i in items if i["origin"] == 3]) == 40
    customers = corp.kf.api_customer_batchget({"external_userid_list": sorted(entered)})["customer_list"]
    assert all(c["nickname"] and c["unionid"] for c in customers)


def test_tags_scenario_announces_tag_changes_the_corp_already_has(receiver: Receiver, siyu: str,
                                                                  corp: VirtualCorp) -> None:
    play("tags", siyu, corp, count=8)
    events = receiver.events()
    assert len(events) == 8 and all(e["Event"] == "change_external_tag" for e in events)
    assert events[0]["TagType"] == "tag_group" and events[0]["ChangeType"] == "create"
    group = next(g for g in corp.state.tag_groups if g.group_id == events[0]["Id"])
    live: set[str] = set()
    first: str | None = None  # the tag the group was created with (announced by the group's event)
    for event in events[1:]:  # replayed in order, every callback names a tag that exists at that moment
        assert event["TagType"] == "tag"
        if event["ChangeType"] == "create":
            live.add(event["Id"])
            continue
        if event["Id"] not in live and first is None:
            first = event["Id"]
            live.add(first)
        assert event["Id"] in live
        if event["ChangeType"] == "delete":
            live.remove(event["Id"])
    assert live <= {t.id for t in group.tags} and len(live) >= len(group.tags) - 1


def test_a_separate_simulator_has_the_contact_before_its_callback_arrives(receiver: Receiver, siyu: str) -> None:
    remote = VirtualCorp.seeded(5, corp_id=CORP_ID, salt=0)
    simulator = RunningServer(create_app(remote, ServerOptions(secret=SECRET))).start()
    seen: list[tuple[str, int]] = []

    def look_up(fields: dict[str, Any]) -> None:  # what Siyu does on an add: ask the API who this is
        token = httpx.get(f"{simulator.url}/cgi-bin/gettoken",
                          params={"corpid": CORP_ID, "corpsecret": SECRET}).json()["access_token"]
        answer = httpx.get(f"{simulator.url}/cgi-bin/externalcontact/get",
                           params={"access_token": token, "external_userid": fields["ExternalUserID"]}).json()
        seen.append((fields["ExternalUserID"], answer["errcode"]))

    receiver.on_event = look_up
    try:
        summary = play("friends", siyu, simulator_url=simulator.url, count=5, options={"delete_share": 0})
    finally:
        simulator.stop()
    assert summary.acknowledged == 5
    assert len(seen) == 5 and all(code == 0 for _e, code in seen)


def test_rate_spaces_the_callbacks(receiver: Receiver, siyu: str, corp: VirtualCorp) -> None:
    started = time.monotonic()
    play("friends", siyu, corp, count=6, options={"rate": 10.0, "delete_share": 0})
    assert time.monotonic() - started >= 0.45


def test_cli_scenario_prints_a_summary(receiver: Receiver, siyu: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.cli import app

    monkeypatch.setenv("SIYU_WECOM_CORP_ID", CORP_ID)
    monkeypatch.setenv("SIYU_WECOM_TOKEN", TOKEN)
    monkeypatch.setenv("SIYU_WECOM_AES_KEY", AES_KEY)
    runner = CliRunner()
    result = runner.invoke(app, ["simulator", "scenario", "friends", "--target", siyu, "--count", "4"])
    assert result.exit_code == 0, result.output
    assert "friends: sent 4, acknowledged 4, retried 0, duplicates 0, failed 0" in result.output
    assert len(receiver.events("add_external_contact")) == 4
    assert runner.invoke(app, ["simulator"]).exit_code in (0, 2)
    assert "scenario" in runner.invoke(app, ["simulator"]).output
    unknown = runner.invoke(app, ["simulator", "scenario", "dance", "--target", siyu])
    assert unknown.exit_code == 2


def test_cli_campaign_floods_through_kf(receiver: Receiver, siyu: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.cli import app

    monkeypatch.setenv("SIYU_WECOM_CORP_ID", CORP_ID)
    monkeypatch.setenv("SIYU_WECOM_TOKEN", TOKEN)
    monkeypatch.setenv("SIYU_WECOM_AES_KEY", AES_KEY)
    runner = CliRunner()
    result = runner.invoke(app, ["simulator", "scenario", "campaign", "--channel", "kf", "--target", siyu,
                                 "--count", "200", "--concurrency", "4", "--duplicates", "0"])
    assert result.exit_code == 0, result.output
    assert "微信客服: 200 messages and events waiting to be pulled" in result.output
    assert receiver.deliveries and {d.fields["Event"] for d in receiver.deliveries} == {"kf_msg_or_event"}
    refused = runner.invoke(app, ["simulator", "scenario", "campaign", "--channel", "sms", "--target", siyu])
    assert refused.exit_code == 2 and "--channel" in refused.output


def test_run_simulated_traffic_serves_the_api_and_plays_scenarios(receiver: Receiver, siyu: str) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    summaries = run_simulated_traffic(siyu, corp_id=CORP_ID, token=TOKEN, aes_key=AES_KEY, secret=SECRET,
                                      scenarios=("friends", "chat"), count=5, rate=0, serve_port=port,
                                      keep_serving=False, echo=lambda _line: None)
    assert [s.scenario for s in summaries] == ["friends", "chat"]
    assert all(s.failed == 0 and s.acknowledged == s.sent for s in summaries)
    assert len(receiver.events("add_external_contact")) == 5
    assert summaries[1].kf_messages == 5 + 1  # one customer enters 微信客服 and writes 5 times
    assert {d.fields["Event"] for d in receiver.deliveries[-summaries[1].sent:]} == {"kf_msg_or_event"}


@pytest.fixture
def wecom_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.core.settings import get_settings

    monkeypatch.setenv("SIYU_WECOM_CORP_ID", CORP_ID)
    monkeypatch.setenv("SIYU_WECOM_TOKEN", TOKEN)
    monkeypatch.setenv("SIYU_WECOM_AES_KEY", AES_KEY)
    get_settings.cache_clear()


# TestClient stands in for the network here; it warns about the per-request timeout the driver always sets.
NO_TIMEOUT_WARNING = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")


@NO_TIMEOUT_WARNING
def test_siyu_turns_simulated_friend_adds_into_customers_and_deletions_into_churn(
        app: Any, db: Any, make: Any, wecom_settings: None) -> None:
    from sqlalchemy import select

    from siyu.channels import service as channels_service
    from siyu.channels.service import ChannelIn
    from siyu.core.viewer import SYSTEM
    from siyu.customers.models import Customer, Friendship

    account = make.account(wecom_userid="shanye.xiaoye01")
    channel = channels_service.save_channel(db, viewer=SYSTEM, data=ChannelIn(
        name="西湖店收银台", account_ids=[account.id], tag_names=["来源:门店"]))
    db.commit()
    corp = VirtualCorp.seeded(5, corp_id=CORP_ID, members=[("shanye.xiaoye01", "小野")], salt=0)
    summary = play("friends", "http://siyu.test", corp, count=5,
                   options={"delete_share": 0.4, "states": [channel.key], "concurrency": 2},
                   client_factory=lambda: TestClient(app))
    assert (summary.sent, summary.acknowledged, summary.failed) == (7, 7, 0)
    added = {c.external_userid for c in corp.state.contacts if any(f.state == channel.key for f in c.follows)}
    rows = db.execute(select(Customer.wecom_external_userid, Friendship.status, Friendship.channel_state)
                      .join(Friendship, Friendship.customer_id == Customer.id)
                      .where(Customer.wecom_external_userid.in_(added))).all()
    assert len(rows) == 5 and {r.channel_state for r in rows} == {channel.key}
    assert sorted(r.status for r in rows) == ["active"] * 3 + ["deleted"] * 2
