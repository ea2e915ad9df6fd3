"""公众号 end to end through the simulator: followers' pushes (plain and safe mode, made by the simulator
with wechatpy's MP crypto, never Siyu's) reach /mp/callback, become inbox messages on channel ``mp``,
are answered passively when a rule matches (or through message/custom/send when that would be late),
follows through a parametric QR code are attributed to their channel, followers are synced with
user/get + user/info/batchget, and agents' replies keep to the customer-service window."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.autoreply import service as autoreply_service
from siyu.channels import service as channels_service
from siyu.channels.models import ChannelAdd
from siyu.channels.service import ChannelIn
from siyu.core.db import get_engine, transaction, utcnow
from siyu.core.errors import Invalid
from siyu.core.i18n import _
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Friendship
from siyu.customers.variables import unnamed
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox import service as inbox
from siyu.inbox.models import Conversation, DeliveryStatus, Message
from siyu.mp import inbound as mp_inbound
from siyu.mp import jobs as mp_jobs
from siyu.mp import service as mp_service
from siyu.mp import writer as mp_writer
from siyu.mp.models import MpFollower, MpInbound, MpQrCode
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.mp import MpPusher, VirtualMp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from tests.test_autoreply import rule

APPID = "wxSIYUTESTMP0001"
TOKEN = "siyu-mp-test-token"
AES_KEY = base64.b64encode(hashlib.sha256(b"siyu-mp").digest()).decode()[:-1]  # 43 characters
SECRET = "siyu-mp-test-secret"


class Sim:
    def __init__(self, server: RunningServer, mp: VirtualMp, client: TestClient) -> None:
        self.server = server
        self.mp = mp
        self.plain = MpPusher("http://testserver/mp/callback", mp, client=client, retries=0)
        self.safe = MpPusher("http://testserver/mp/callback", mp, client=client, safe=True, retries=0)

    def received(self, openid: str) -> list[dict[str, Any]]:
        return self.mp.received_by(openid)


@pytest.fixture
def sim(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sim]:
    mp = VirtualMp(appid=APPID, secret=SECRET, token=TOKEN, aes_key=AES_KEY)
    server = RunningServer(create_app(VirtualCorp.seeded(1, corp_id="wwUNUSED", contacts_per_member=0,
                                                         groups_per_member=0, salt=0),
                                      ServerOptions(secret="unused", mp=mp))).start()
    for name, value in {"SIYU_MP_APPID": APPID, "SIYU_MP_TOKEN": TOKEN, "SIYU_MP_AES_KEY": AES_KEY,
                        "SIYU_MP_SECRET": SECRET, "SIYU_MP_API_BASE": server.url + "/mp/cgi-bin/"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        yield Sim(server, mp, client)
    finally:
        server.stop()


def mp_messages(db: Session) -> list[Message]:
    db.expire_all()
    return list(db.scalars(select(Message).where(Message.source == mp_service.SOURCE).order_by(Message.id)))


def conversation_of(db: Session, openid: str) -> Conversation:
    follower = db.scalars(select(MpFollower).where(MpFollower.openid == openid)).one()
    return db.scalars(select(Conversation).where(Conversation.customer_id == follower.customer_id)).one()


# ---------------------------------------------------------------- receiving


@pytest.mark.parametrize("mode", ["plain", "safe"])
def test_a_followers_messages_become_inbox_messages_on_channel_mp(db: Session, sim: Sim, mode: str) -> None:
    pusher = sim.safe if mode == "safe" else sim.plain
    follow = sim.mp.follow(nickname="小林")
    assert pusher.push(follow["xml"], follow["openid"]) == ""  # no greeting set: `success`
    for kind, content in [("text", "你好，请问门店几点开门"), ("image", ""), ("voice", "语音转的文字"), ("video", ""),
                          ("location", "西湖店附近"), ("link", "春季新品")]:
        pushed = sim.mp.message(follow["openid"], kind, content)
        assert pusher.push(pushed["xml"], follow["openid"]) == ""
    stored = mp_messages(db)
    assert [m.msg_type for m in stored] == ["system", "text", "image", "voice", "video", "location", "link"]
    assert stored[1].text == "你好，请问门店几点开门" and stored[3].text == "语音转的文字"
    conversation = conversation_of(db, follow["openid"])
    assert conversation.channel == "mp" and conversation.unanswered == 6
    account = db.get_one(Account, conversation.account_id)
    assert account.kind == "mp" and account.mp_appid == APPID
    customer = db.get_one(Customer, conversation.customer_id)
    # WeChat returns no nickname to a 公众号 (user/info/batchget, since 2021-12-27): the team sees a label
    assert customer.name == unnamed(follow["openid"])
    assert db.scalars(select(Friendship).where(Friendship.customer_id == customer.id)).one().status == "active"
    assert pusher.stats.failed == 0 and pusher.stats.acknowledged == 7


def test_the_api_lists_mp_conversations_with_their_channel(client: TestClient, db: Session, sim: Sim,
                                                           admin_headers: dict[str, str]) -> None:
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    pushed = sim.mp.message(follow["openid"], "text", "有优惠吗")
    sim.plain.push(pushed["xml"], follow["openid"])
    listed = client.get("/api/v1/inbox/conversations", params={"channel": "mp"}, headers=admin_headers)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert len(items) == 1 and items[0]["channel"] == "mp"


def test_the_url_check_echoes_echostr_only_with_the_right_signature(client: TestClient, sim: Sim) -> None:
    params, _body = sim.plain.request("<xml/>", "")
    answer = client.get("/mp/callback", params={**params, "echostr": "echo-5678"})
    assert answer.status_code == 200 and answer.text == "echo-5678"
    forged = client.get("/mp/callback", params={**params, "nonce": params["nonce"] + "x", "echostr": "e"})
    assert forged.status_code == 403 and "echo" not in forged.text


# ---------------------------------------------------------------- bad input


def test_safe_mode_with_a_wrong_msg_signature_is_refused_and_nothing_is_stored(client: TestClient, db: Session,
                                                                               sim: Sim) -> None:
    follow = sim.mp.follow()
    params, body = sim.safe.request(follow["xml"], follow["openid"])
    answer = client.post("/mp/callback", params={**params, "msg_signature": "0" * 40}, content=body.encode())
    assert answer.status_code == 403 and answer.text == "wrong signature"
    # The plain-mode signature alone does not open a safe-mode body either.
    assert client.post("/mp/callback", params={k: v for k, v in params.items() if k != "msg_signature"},
                       content=body.encode()).status_code == 403
    assert mp_messages(db) == []


def test_plain_mode_with_a_wrong_signature_is_refused_and_nothing_is_stored(client: TestClient, db: Session,
                                                                            sim: Sim) -> None:
    follow = sim.mp.follow()
    params, body = sim.plain.request(follow["xml"], follow["openid"])
    answer = client.post("/mp/callback", params={**params, "signature": "f" * 40}, content=body.encode())
    assert answer.status_code == 403
    assert mp_messages(db) == []


def test_stale_forged_and_oversized_callbacks_are_refused(client: TestClient, db: Session, sim: Sim) -> None:
    follow = sim.mp.follow()
    params, body = sim.plain.request(follow["xml"], follow["openid"])
    stale = dict(params, timestamp=str(int(time.time()) - 3600))
    assert client.post("/mp/callback", params=stale, content=body.encode()).status_code in (400, 403)
    doctype = '<!DOCTYPE x [<!ENTITY a "b">]><xml><MsgType>text</MsgType></xml>'
    params2, _ = sim.plain.request(doctype, "x")
    assert client.post("/mp/callback", params=params2, content=doctype.encode()).status_code == 400
    params3, _ = sim.plain.request("<xml/>", "x")
    huge = b"<xml>" + b"a" * (3 * 1024 * 1024) + b"</xml>"
    assert client.post("/mp/callback", params=params3, content=huge).status_code == 413
    assert mp_messages(db) == []


def test_a_retry_of_a_stored_message_is_acknowledged_and_stored_once(client: TestClient, db: Session,
                                                                     sim: Sim) -> None:
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    pushed = sim.mp.message(follow["openid"], "text", "在吗")
    params, body = sim.plain.request(pushed["xml"], follow["openid"])
    for _attempt in range(3):  # the platform's retries carry the same request
        answer = client.post("/mp/callback", params=params, content=body.encode())
        assert answer.status_code == 200 and answer.text == "success"
    # The same message in a fresh envelope (another nonce) is the same message too.
    assert sim.plain.push(pushed["xml"], follow["openid"]) == ""
    texts = [m.text for m in mp_messages(db) if m.msg_type == "text"]
    assert texts == ["在吗"]
    assert conversation_of(db, follow["openid"]).unanswered == 1


def test_a_seen_nonce_with_another_message_is_a_replay_and_refused(client: TestClient, db: Session,
                                                                   sim: Sim) -> None:
    follow = sim.mp.follow()
    params, body = sim.plain.request(follow["xml"], follow["openid"])
    assert client.post("/mp/callback", params=params, content=body.encode()).status_code == 200
    forged = sim.mp.message(follow["openid"], "text", "伪造的消息")["xml"]
    replay = client.post("/mp/callback", params=params, content=forged.encode())
    assert replay.status_code == 409
    assert [m.text for m in mp_messages(db) if m.msg_type == "text"] == []


def _postgresql(db: Session) -> None:
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("the callbacks keep a connection of their own on PostgreSQL only")


def test_on_postgresql_a_batch_of_messages_is_one_statement_on_a_kept_connection(
        db: Session, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    _postgresql(db)
    rule(db, keywords=["营业时间"], reply="每天9点到21点营业")
    db.commit()
    monkeypatch.setattr(mp_inbound, "MATCHER_FRESH_SECONDS", 3600.0)
    follow = sim.mp.follow()
    assert sim.plain.push(follow["xml"], follow["openid"]) == ""
    first = sim.mp.message(follow["openid"], "text", "你好")  # reads the rules once
    assert sim.plain.push(first["xml"], follow["openid"]) == ""
    kept = mp_writer._kept["connection"]
    assert kept is not None
    statements: list[str] = []
    checkouts: list[object] = []

    def on_statement(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if connection is kept:
            statements.append(statement.split()[0].upper())

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine.pool, "checkout", lambda *args: checkouts.append(args))
    try:
        quiet = sim.mp.message(follow["openid"], "text", "发货了吗")
        assert sim.plain.push(quiet["xml"], follow["openid"]) == ""
        assert statements == ["INSERT"]  # no ping, no BEGIN, no rules' fingerprint, no COMMIT
        asked = sim.mp.message(follow["openid"], "text", "营业时间？")
        assert sim.plain.push(asked["xml"], follow["openid"]) == "每天9点到21点营业"
        other = sim.mp.follow()
        assert sim.plain.push(other["xml"], other["openid"]) == ""
        statements.clear()
        again = sim.mp.message(other["openid"], "text", "营业时间？")
        assert sim.plain.push(again["xml"], other["openid"]) == "每天9点到21点营业"
        assert statements == ["SELECT", "INSERT"]  # a rule matched: its limits, then the row
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
    assert mp_writer._kept["connection"] is kept and not [c for c in checkouts if c[1] is kept.connection]
    assert [m.text for m in mp_messages(db) if m.msg_type == "text"] == ["你好", "发货了吗", "营业时间？", "营业时间？"]


def test_on_postgresql_a_lost_connection_is_replaced_and_the_batch_written_once(db: Session, sim: Sim) -> None:
    _postgresql(db)
    follow = sim.mp.follow()
    assert sim.plain.push(follow["xml"], follow["openid"]) == ""
    kept = mp_writer._kept["connection"]
    assert kept is not None and kept.connection.dbapi_connection is not None
    kept.connection.dbapi_connection.close()  # the database dropped it while it was idle
    pushed = sim.mp.message(follow["openid"], "text", "还在吗")
    assert sim.plain.push(pushed["xml"], follow["openid"]) == ""
    assert mp_writer._kept["connection"] is not kept
    assert [m.text for m in mp_messages(db) if m.msg_type == "text"] == ["还在吗"]
    assert sim.plain.stats.failed == 0


# ---------------------------------------------------------------- passive replies and the window


@pytest.mark.parametrize("mode", ["plain", "safe"])
def test_a_matching_rule_answers_passively_in_the_callbacks_own_answer(db: Session, sim: Sim, mode: str) -> None:
    pusher = sim.safe if mode == "safe" else sim.plain
    rule(db, keywords=["营业时间"], reply="您好，门店每天9点到21点营业")
    follow = sim.mp.follow()
    pusher.push(follow["xml"], follow["openid"])
    pushed = sim.mp.message(follow["openid"], "text", "请问营业时间？")
    assert pusher.push(pushed["xml"], follow["openid"]) == "您好，门店每天9点到21点营业"
    reply = db.scalars(select(Message).where(Message.automatic.is_(True))).one()
    assert reply.status == "sent" and reply.source == mp_service.PASSIVE_SOURCE and reply.payload["passive"]
    # No API call: nothing went through message/custom/send.
    assert [r["via"] for r in sim.received(follow["openid"])] == ["passive"]
    # A retry of the answered message gets the same answer again, and nothing new is stored.
    assert pusher.push(pushed["xml"], follow["openid"]) == "您好，门店每天9点到21点营业"
    assert db.scalar(select(func.count()).select_from(Message).where(Message.automatic.is_(True))) == 1


def test_a_passive_reply_enqueues_no_delivery_job_and_a_non_matching_message_no_reply(
        db: Session, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    rule(db, keywords=["营业时间"], reply="每天9点到21点营业")
    follow = sim.mp.follow()
    sim.safe.push(follow["xml"], follow["openid"])
    delivered: list[int] = []
    monkeypatch.setattr(inbox_jobs, "deliver_message", delivered.append)
    other = sim.mp.message(follow["openid"], "text", "发货了吗")
    assert sim.safe.push(other["xml"], follow["openid"]) == ""
    pushed = sim.mp.message(follow["openid"], "text", "营业时间是？")
    assert sim.safe.push(pushed["xml"], follow["openid"]) == "每天9点到21点营业"
    # The answer carried it: the delivery job it was queued with is dropped before the commit.
    assert delivered == []
    replies = list(db.scalars(select(Message).where(Message.automatic.is_(True))))
    assert [(r.source, r.status) for r in replies] == [(mp_service.PASSIVE_SOURCE, "sent")]
    assert [r["via"] for r in sim.received(follow["openid"])] == ["passive"]


def test_passive_replies_keep_the_rules_quiet_period_hourly_cap_switch_and_variables(
        db: Session, sim: Sim) -> None:
    capped = rule(db, keywords=["营业时间"], reply="{称呼}您好，每天9点到21点营业", hourly_cap=2)
    follows = [sim.mp.follow(nickname=f"粉丝{n}") for n in range(4)]
    for follow in follows:
        sim.plain.push(follow["xml"], follow["openid"])
    first = sim.mp.message(follows[0]["openid"], "text", "营业时间？")
    assert sim.plain.push(first["xml"], follows[0]["openid"]) == "您好，每天9点到21点营业"  # no name: no id
    again = sim.mp.message(follows[0]["openid"], "text", "营业时间到几点？")
    assert sim.plain.push(again["xml"], follows[0]["openid"]) == ""  # within the quiet period: no second reply
    second = sim.mp.message(follows[1]["openid"], "text", "营业时间")
    assert sim.plain.push(second["xml"], follows[1]["openid"]) == "您好，每天9点到21点营业"
    third = sim.mp.message(follows[2]["openid"], "text", "营业时间")
    assert sim.plain.push(third["xml"], follows[2]["openid"]) == ""  # the hourly cap of 2: paused
    db.refresh(capped)
    assert capped.paused_at is not None
    account = db.scalars(select(Account).where(Account.kind == "mp")).one()
    rule(db, name="门店", keywords=["门店"], reply="门店在西湖边")
    autoreply_service.set_account_switch(db, account_id=account.id, enabled=False, viewer=SYSTEM)
    db.commit()
    fourth = sim.mp.message(follows[3]["openid"], "text", "门店在哪")
    assert sim.plain.push(fourth["xml"], follows[3]["openid"]) == ""  # the account's automatic replies are off
    assert db.scalar(select(func.count()).select_from(Message).where(Message.automatic.is_(True))) == 2


def test_a_passive_reply_that_would_be_late_goes_through_the_customer_service_api(
        db: Session, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    rule(db, keywords=["营业时间"], reply="每天9点到21点营业")
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    # The answer would come after the budget (a slow database, a long queue): `success`, then the API.
    monkeypatch.setattr(mp_service, "PASSIVE_REPLY_BUDGET", timedelta(seconds=0))
    pushed = sim.mp.message(follow["openid"], "text", "营业时间是？")
    assert sim.plain.push(pushed["xml"], follow["openid"]) == ""
    reply = db.scalars(select(Message).where(Message.automatic.is_(True))).one()
    db.refresh(reply)
    assert reply.status == "sent", reply.error
    assert reply.source == "autoreply" and reply.payload["passive"] is False
    sent = sim.received(follow["openid"])
    assert [(r["via"], r["text"]["content"]) for r in sent] == [("custom_send", "每天9点到21点营业")]
    assert mp_service.PASSIVE_REPLY_BUDGET < mp_service.PASSIVE_REPLY_LIMIT


def test_a_passive_reply_answered_too_late_after_its_commit_goes_through_the_api_once(
        db: Session, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    rule(db, keywords=["营业时间"], reply="每天9点到21点营业")
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    store = mp_inbound.store

    def slow_commit(*args: Any, **kwargs: Any) -> Any:  # decided in time, then the commit takes too long
        answers = store(*args, **kwargs)
        monkeypatch.setattr(mp_service, "PASSIVE_REPLY_BUDGET", timedelta(seconds=0))
        return answers

    monkeypatch.setattr(mp_inbound, "store", slow_commit)
    pushed = sim.mp.message(follow["openid"], "text", "营业时间是？")
    assert sim.plain.push(pushed["xml"], follow["openid"]) == ""
    reply = db.scalars(select(Message).where(Message.automatic.is_(True))).one()
    db.refresh(reply)
    assert (reply.source, reply.status, reply.payload["passive"]) == ("autoreply", "sent", False)
    assert [r["via"] for r in sim.received(follow["openid"])] == ["custom_send"]
    assert db.scalars(select(MpInbound.reply_mode).where(MpInbound.dedup_key.like("msg:%"))).one() == "api"


# ---------------------------------------------------------------- stored first, ingested by the job


@pytest.fixture
def lost_handover(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The app dies between a batch's commit and the enqueue of its ingestion: the rows are stored, no job."""
    lost: list[list[int]] = []
    monkeypatch.setattr(mp_jobs.stored_pushes, "hand_over", lost.append)
    return lost


def stored_pushes(db: Session) -> list[MpInbound]:
    db.expire_all()
    return list(db.scalars(select(MpInbound).order_by(MpInbound.id)))


def test_a_push_stored_but_never_ingested_is_ingested_once_by_the_sweep_with_its_passive_reply(
        db: Session, sim: Sim, lost_handover: list[list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    rule(db, keywords=["营业时间"], reply="每天9点到21点营业")
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])  # a follow is ingested in its callback (its welcome)
    pushed = sim.mp.message(follow["openid"], "text", "营业时间是？")
    assert sim.safe.push(pushed["xml"], follow["openid"]) == "每天9点到21点营业"  # answered from the stored row
    assert lost_handover and [m.text for m in mp_messages(db) if m.msg_type == "text"] == []
    assert [r.ingested_at is None for r in stored_pushes(db)] == [False, True]
    assert mp_jobs.sweep_inbound.call_local() == 0  # not stale yet: its job may still come
    monkeypatch.setattr(mp_inbound, "STALE_AFTER", timedelta(seconds=0))
    assert mp_jobs.sweep_inbound.call_local() == 1
    assert mp_jobs.sweep_inbound.call_local() == 0
    row_id = stored_pushes(db)[1].id
    mp_jobs.ingest_inbound.call_local(row_id)  # the lost job turning up after all: nothing twice
    assert [m.text for m in mp_messages(db) if m.msg_type == "text"] == ["营业时间是？"]
    conversation = conversation_of(db, follow["openid"])
    assert conversation.unanswered == 1 and conversation.last_message_preview == "每天9点到21点营业"
    replies = list(db.scalars(select(Message).where(Message.automatic.is_(True))))
    assert [(r.source, r.status, r.text, r.conversation_id) for r in replies] == [
        (mp_service.PASSIVE_SOURCE, "sent", "每天9点到21点营业", conversation.id)]
    assert [r["via"] for r in sim.received(follow["openid"])] == ["passive"]  # no API call for it


def test_an_identical_retry_before_ingestion_gets_the_same_answer_and_is_stored_once(
        client: TestClient, db: Session, sim: Sim, lost_handover: list[list[int]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    rule(db, keywords=["营业时间"], reply="每天9点到21点营业")
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    pushed = sim.mp.message(follow["openid"], "text", "营业时间？")
    params, body = sim.plain.request(pushed["xml"], follow["openid"])
    answers = [client.post("/mp/callback", params=params, content=body.encode()) for _attempt in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("<Content><![CDATA[每天9点到21点营业]]></Content>" in a.text for a in answers)  # the same passive reply
    assert sim.safe.push(pushed["xml"], follow["openid"]) == "每天9点到21点营业"  # a fresh envelope: the same
    assert len([r for r in stored_pushes(db) if r.dedup_key.startswith("msg:")]) == 1
    monkeypatch.setattr(mp_inbound, "STALE_AFTER", timedelta(seconds=0))
    mp_jobs.sweep_inbound.call_local()
    assert [m.text for m in mp_messages(db) if m.msg_type == "text"] == ["营业时间？"]
    assert db.scalar(select(func.count()).select_from(Message).where(Message.automatic.is_(True))) == 1


def test_a_push_that_fails_to_ingest_keeps_its_error_and_holds_up_no_other(
        db: Session, sim: Sim, lost_handover: list[list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = sim.mp.follow(), sim.mp.follow()
    for follow in (first, second):
        sim.plain.push(follow["xml"], follow["openid"])
    for follow in (first, second):
        pushed = sim.mp.message(follow["openid"], "text", "你好")
        sim.plain.push(pushed["xml"], follow["openid"])
    ingest = mp_inbound.ingest

    def broken(session: Session, row_ids: list[int], **kwargs: Any) -> dict[int, str]:
        rows = session.scalars(select(MpInbound).where(MpInbound.id.in_(row_ids))).all()
        if any(r.openid == first["openid"] for r in rows):
            raise ValueError("坏数据")
        return ingest(session, row_ids, **kwargs)

    monkeypatch.setattr(mp_inbound, "ingest", broken)
    monkeypatch.setattr(mp_inbound, "STALE_AFTER", timedelta(seconds=0))
    mp_jobs.sweep_inbound.call_local()
    assert [m.sender for m in mp_messages(db) if m.msg_type == "text"] == [second["openid"]]
    failed = [r for r in stored_pushes(db) if r.ingested_at is None]
    assert [(r.openid, r.attempts, r.error) for r in failed] == [(first["openid"], 1, "ValueError: 坏数据")]


def test_an_agents_reply_goes_through_custom_send_inside_the_window(db: Session, sim: Sim) -> None:
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    pushed = sim.mp.message(follow["openid"], "text", "我想问下会员卡")
    sim.plain.push(pushed["xml"], follow["openid"])
    conversation = conversation_of(db, follow["openid"])
    for n in range(mp_service.REPLIES_PER_MESSAGE):
        inbox.reply(db, conversation_id=conversation.id, text=f"回复{n}", viewer=SYSTEM)
        db.commit()
    assert [r["text"]["content"] for r in sim.received(follow["openid"])] == [f"回复{n}" for n in range(5)]
    # The sixth is refused when the agent presses send, with the reason; nothing is queued.
    with pytest.raises(Invalid) as refused:
        inbox.reply(db, conversation_id=conversation.id, text="第六条", viewer=SYSTEM)
    assert str(refused.value) == _(mp_service.WINDOW_FULL)
    db.rollback()
    # The follower writes again: the window opens again.
    again = sim.mp.message(follow["openid"], "text", "还有一个问题")
    sim.plain.push(again["xml"], follow["openid"])
    inbox.reply(db, conversation_id=conversation.id, text="请讲", viewer=SYSTEM)
    db.commit()
    assert sim.received(follow["openid"])[-1]["text"]["content"] == "请讲"


def test_a_reply_outside_the_window_is_refused_with_the_reason(client: TestClient, db: Session, sim: Sim,
                                                               admin_headers: dict[str, str]) -> None:
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    pushed = sim.mp.message(follow["openid"], "text", "你好")
    sim.plain.push(pushed["xml"], follow["openid"])
    conversation = conversation_of(db, follow["openid"])
    long_ago = utcnow() - timedelta(hours=49)
    db.execute(update(Conversation).where(Conversation.id == conversation.id).values(last_inbound_at=long_ago))
    db.execute(update(MpFollower).where(MpFollower.openid == follow["openid"]).values(last_event_at=long_ago))
    db.commit()
    answer = client.post(f"/api/v1/inbox/conversations/{conversation.id}/messages", json={"text": "在的"},
                         headers=admin_headers)
    assert answer.status_code == 422, answer.text
    assert "48" in answer.text
    # The platform refuses it too (45015), should a reply reach it anyway.
    sim.mp.followers[follow["openid"]].last_message_at = time.time() - 49 * 3600
    sim.mp.followers[follow["openid"]].last_event_at = time.time() - 49 * 3600
    token = sim.mp.api_token({"grant_type": "client_credential", "appid": APPID, "secret": SECRET})["access_token"]
    refused = httpx.post(f"{sim.server.url}/mp/cgi-bin/message/custom/send", params={"access_token": token},
                         json={"touser": follow["openid"], "msgtype": "text", "text": {"content": "x"}})
    assert refused.json()["errcode"] == 45015


def test_a_follow_opens_a_one_minute_window_of_three_messages(db: Session, sim: Sim) -> None:
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    conversation = conversation_of(db, follow["openid"])
    for n in range(mp_service.REPLIES_PER_EVENT):
        inbox.reply(db, conversation_id=conversation.id, text=f"欢迎{n}", viewer=SYSTEM)
        db.commit()
    assert len(sim.received(follow["openid"])) == 3
    with pytest.raises(Invalid):
        inbox.reply(db, conversation_id=conversation.id, text="第四条", viewer=SYSTEM)


def test_an_unfollow_closes_the_conversation_to_replies(db: Session, sim: Sim) -> None:
    follow = sim.mp.follow()
    sim.plain.push(follow["xml"], follow["openid"])
    pushed = sim.mp.message(follow["openid"], "text", "再见")
    sim.plain.push(pushed["xml"], follow["openid"])
    gone = sim.mp.unfollow(follow["openid"])
    sim.plain.push(gone["xml"], follow["openid"])
    db.expire_all()
    follower = db.scalars(select(MpFollower).where(MpFollower.openid == follow["openid"])).one()
    assert follower.subscribed is False
    assert db.scalars(select(Friendship).where(Friendship.customer_id == follower.customer_id)).one().status == \
        "deleted"
    with pytest.raises(Invalid) as refused:
        inbox.reply(db, conversation_id=conversation_of(db, follow["openid"]).id, text="x", viewer=SYSTEM)
    assert str(refused.value) == _(mp_service.NOT_FOLLOWING)


# ---------------------------------------------------------------- QR codes, channels, followers


def test_a_follow_through_a_parametric_qr_code_is_attributed_to_its_channel(
        client: TestClient, db: Session, sim: Sim, admin_headers: dict[str, str]) -> None:
    follow0 = sim.mp.follow()  # the MP account exists once its first callback came
    sim.plain.push(follow0["xml"], follow0["openid"])
    account = db.scalars(select(Account).where(Account.kind == "mp")).one()
    channel = channels_service.save_channel(db, data=ChannelIn(
        name="门店海报", account_ids=[account.id], tag_names=["来源:海报粉丝"], welcome_text="欢迎关注山野茶舍！"),
        viewer=SYSTEM)
    db.commit()
    made = client.post("/api/v1/mp/qrcodes", json={"channel_id": channel.id, "account_id": account.id,
                                                   "permanent": True}, headers=admin_headers)
    assert made.status_code == 201, made.text
    assert made.json()["scene"] == channel.key and made.json()["expires_at"] is None
    temporary = client.post("/api/v1/mp/qrcodes", json={"channel_id": channel.id, "account_id": account.id,
                                                        "expire_seconds": 3600}, headers=admin_headers)
    assert temporary.status_code == 201 and temporary.json()["expires_at"]
    assert sim.mp.scene_of(made.json()["ticket"]) == channel.key
    follow = sim.mp.follow(scene=channel.key, nickname="阿青")
    assert sim.plain.push(follow["xml"], follow["openid"]) == "欢迎关注山野茶舍！"  # the welcome, passively
    db.expire_all()
    follower = db.scalars(select(MpFollower).where(MpFollower.openid == follow["openid"])).one()
    assert follower.scene == channel.key
    add = db.scalars(select(ChannelAdd).where(ChannelAdd.customer_id == follower.customer_id)).one()
    assert add.channel_id == channel.id and add.account_id == account.id and add.first_touch
    tags = channels_service.customers_service.customer_tags(db, customer_ids=[follower.customer_id])
    assert "海报粉丝" in {t.name for t in tags[follower.customer_id]}
    # A follower who scans again (SCAN) is recorded through the same channel, once.
    scan = sim.mp.scan(follow["openid"], channel.key)
    sim.plain.push(scan["xml"], follow["openid"])
    assert db.scalar(select(func.count()).select_from(ChannelAdd).where(
        ChannelAdd.customer_id == follower.customer_id)) == 1
    assert db.scalar(select(func.count()).select_from(MpQrCode)) == 2


def test_a_qr_code_for_an_account_that_is_not_a_gongzhonghao_is_refused(
        client: TestClient, db: Session, sim: Sim, make: Any, admin_headers: dict[str, str]) -> None:
    member = make.account()
    channel = channels_service.save_channel(db, data=ChannelIn(name="活码", account_ids=[member.id]), viewer=SYSTEM)
    db.commit()
    answer = client.post("/api/v1/mp/qrcodes", json={"channel_id": channel.id, "account_id": member.id},
                         headers=admin_headers)
    assert answer.status_code == 422 and "公众号" in answer.json()["detail"]


def test_followers_are_synced_by_pages_and_joined_by_unionid(client: TestClient, db: Session, sim: Sim,
                                                             make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    known = make.customer(make.account(), name="老顾客")
    db.execute(update(Customer).where(Customer.id == known.id).values(unionid="union-known"))
    db.commit()
    first = sim.mp.follow()
    sim.plain.push(first["xml"], first["openid"])
    for n in range(250):
        sim.mp.follow(nickname=f"粉丝{n}", unionid="union-known" if n == 7 else f"union-{n}")
    leaver = db.scalars(select(MpFollower)).one()
    sim.mp.followers[leaver.openid].subscribe = False  # left while Siyu was not told
    sim.mp.order.remove(leaver.openid)
    monkeypatch.setattr(mp_service, "FOLLOWERS_PER_PAGE", 100)
    monkeypatch.setattr("siyu.simulator.mp.FOLLOWERS_PER_PAGE", 100)
    from siyu.mp.client import api_for

    with transaction() as session:
        api = api_for(session)
    account_id = leaver.account_id
    # A crash after the first page: the next run goes on from the stored cursor.
    partial = mp_service.sync_followers(transaction, api, account_id, max_pages=1)
    assert partial.pages == 1 and not partial.finished
    result = mp_service.sync_followers(transaction, api, account_id)
    assert result.finished and result.seen == 150 and result.unfollowed == 1
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(MpFollower).where(MpFollower.subscribed.is_(True))) == 250
    joined = db.scalars(select(MpFollower).where(MpFollower.unionid == "union-known")).one()
    assert joined.customer_id == known.id  # the same person, reached through WeCom before
    assert db.scalars(select(MpFollower).where(MpFollower.openid == leaver.openid)).one().subscribed is False


def test_the_follower_sync_starts_as_a_job_from_the_api(client: TestClient, db: Session, sim: Sim,
                                                        admin_headers: dict[str, str]) -> None:
    first = sim.mp.follow()
    sim.plain.push(first["xml"], first["openid"])
    sim.mp.follow()
    account = db.scalars(select(Account).where(Account.kind == "mp")).one()
    started = client.post(f"/api/v1/mp/accounts/{account.id}/sync-followers", headers=admin_headers)
    assert started.status_code == 202, started.text
    job = client.get(f"/api/v1/jobs/{started.json()['job_id']}", headers=admin_headers)
    assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(MpFollower)) == 2
    assert DeliveryStatus.sent.value == "sent"


# ---------------------------------------------------------------- the campaign flood from the command line


def test_cli_campaign_floods_through_the_gongzhonghao(app: Any, db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from siyu.cli import app as cli

    for name, value in {"SIYU_MP_APPID": APPID, "SIYU_MP_TOKEN": TOKEN, "SIYU_MP_AES_KEY": AES_KEY,
                        "SIYU_MP_SECRET": SECRET}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    rule(db, keywords=["领券"], reply="券在卡包里")
    siyu = RunningServer(app).start()
    try:
        result = CliRunner().invoke(cli, ["simulator", "scenario", "campaign", "--channel", "mp", "--target", siyu.url,
                                          "--count", "120", "--concurrency", "4"])
    finally:
        siyu.stop()
    assert result.exit_code == 0, result.output
    assert "campaign through the 公众号: 6 follows and 120 messages pushed, acknowledged 126" in result.output
    assert "(safe mode)" in result.output and "failed 0" in result.output
    db.expire_all()
    stored = db.scalar(select(func.count()).select_from(Message).where(
        Message.source == mp_service.SOURCE, Message.msg_type != "system"))
    assert stored == 120
    assert db.scalar(select(func.count()).select_from(MpFollower)) == 6


# ---------------------------------------------------------------- the console


def test_an_administrator_saves_the_connection_in_the_console_and_the_environment_wins(
        client: TestClient, db: Session, admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_pages import Console

    for name in ("SIYU_MP_APPID", "SIYU_MP_TOKEN", "SIYU_MP_AES_KEY", "SIYU_MP_SECRET"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    console = Console(client).login(admin)
    page = client.get("/mp")
    assert page.status_code == 200 and "mp-state" in page.text
    bad = console.post("/mp", {"appid": APPID, "token": TOKEN, "aes_key": "too-short"})
    assert bad.status_code == 422 and "EncodingAESKey" in bad.text
    saved = console.post("/mp", {"appid": APPID, "token": TOKEN, "aes_key": AES_KEY, "secret": SECRET})
    assert saved.status_code == 303
    shown = client.get("/mp")
    assert "/mp/callback" in shown.text and TOKEN not in shown.text and APPID in shown.text
    from siyu.mp import config as mp_config

    db.expire_all()
    assert mp_config.effective(db).token == TOKEN and mp_config.effective(db).source["token"] == "console"
    monkeypatch.setenv("SIYU_MP_TOKEN", "from-the-environment")
    get_settings.cache_clear()
    assert mp_config.effective(db).token == "from-the-environment"


def test_the_demos_simulated_traffic_brings_gongzhonghao_followers_messages(
        app: Any, db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.simulator.driver import run_simulated_traffic

    for name, value in {"SIYU_MP_APPID": APPID, "SIYU_MP_TOKEN": TOKEN, "SIYU_MP_AES_KEY": AES_KEY,
                        "SIYU_MP_SECRET": SECRET}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    siyu = RunningServer(app).start()
    try:
        summaries = run_simulated_traffic(siyu.url, corp_id="wwDEMOMP", token="t" * 8, aes_key=AES_KEY,
                                          secret="s", scenarios=(), count=0, rate=0, serve_port=0,
                                          keep_serving=False, wait_seconds=10, echo=lambda _line: None,
                                          mp_messages=20)
    finally:
        siyu.stop()
    assert [s.failed for s in summaries] == [0]
    db.expire_all()
    conversations = db.scalars(select(Conversation).where(Conversation.channel == "mp")).all()
    assert conversations and sum(c.unanswered for c in conversations) == 20
