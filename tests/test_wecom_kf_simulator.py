"""微信客服 end to end against the running simulator (no doubles): a customer enters the session and
writes, WeCom's kf_msg_or_event reaches /wecom/callback, Siyu pulls kf/sync_msg, greets with the
welcome code, and an agent's reply reaches the customer exactly once; a servicer taking the session
in WeCom's client stops Siyu's replies (95018 shown, not retried); a token WeCom no longer takes is
dropped and the pull goes on without it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.errors import Invalid
from siyu.core.i18n import _
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer
from siyu.inbox import delivery
from siyu.inbox import service as inbox
from siyu.inbox.models import Conversation, Message
from siyu.simulator.callbacks import kf_msg_or_event
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom import connectors as wecom_connector
from siyu.wecom import kf, kf_jobs
from siyu.wecom.models import KfCursor
from tests.test_wecom_callback import AES_KEY, CORP_ID, TOKEN, post

SECRET = "kf-e2e-secret-0123456789"


class Sim:
    def __init__(self, server: RunningServer, corp: VirtualCorp) -> None:
        self.server = server
        self.corp = corp

    def control(self, operation: str, **body: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.server.url}/_simulator/{operation}", json=body)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    @property
    def open_kfid(self) -> str:
        return str(self.corp.kf.state.accounts[0].open_kfid)

    def received(self, external_userid: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.server.url}/_simulator/received", params={"external_userid": external_userid})
        return [m for m in answer.json()["messages"] if str(m.get("via", "")).startswith("kf")]

    def callback(self, client: TestClient, *, token: str | None = None) -> None:
        """WeCom's kf_msg_or_event for the account, with a fresh token (or the one given)."""
        fresh = self.control("kf_callback", open_kfid=self.open_kfid)
        xml = kf_msg_or_event(CORP_ID, token=token or fresh["token"], open_kfid=self.open_kfid,
                              create_time=int(time.time()))
        assert post(client, xml).text == "success"


@pytest.fixture
def sim(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sim]:
    corp = VirtualCorp.seeded(3, corp_id=CORP_ID, contacts_per_member=2, groups_per_member=0, salt=0)
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    for name, value in {"SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET, "SIYU_WECOM_TOKEN": TOKEN,
                        "SIYU_WECOM_AES_KEY": AES_KEY, "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    wecom_connector.register()
    try:
        yield Sim(server, corp)
    finally:
        wecom_connector.unregister()
        server.stop()


def kf_account(db: Session, greeting: str = "") -> Account:
    assert kf_jobs.sync_accounts() == 1  # kf/account/list of the simulator's corp
    account = db.scalars(select(Account).where(Account.kind == "wecom_kf")).one()
    account.greeting = greeting
    db.commit()
    return account


def test_a_customer_is_greeted_pulled_and_answered_exactly_once(client: TestClient, db: Session, sim: Sim) -> None:
    account = kf_account(db, greeting="欢迎来到山野茶舍，请问有什么可以帮您？")
    entered = sim.control("kf_enter_session", open_kfid=sim.open_kfid, nickname="爱喝白茶的小林", scene="campaign")
    customer_id = entered["external_userid"]
    sim.control("kf_customer_message", open_kfid=sim.open_kfid, external_userid=customer_id, content="发货了吗？")
    sim.callback(client)
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == customer_id))
    assert customer is not None and customer.name == "爱喝白茶的小林"
    conversation = db.scalars(select(Conversation).where(Conversation.customer_id == customer.id)).one()
    assert (conversation.channel, conversation.account_id, conversation.unanswered) == ("wecom_kf", account.id, 1)
    assert [m["text"] for m in sim.received(customer_id)] == ["欢迎来到山野茶舍，请问有什么可以帮您？"]
    reply = inbox.reply(db, conversation_id=conversation.id, text="今天下午就发，请放心", viewer=SYSTEM)
    db.commit()
    db.refresh(reply)
    assert reply.status == "sent"
    db.execute(update(Message).where(Message.id == reply.id).values(status="queued"))  # as if the answer was lost
    db.commit()
    delivery.deliver(db, message_id=reply.id, attempt=2)
    db.commit()
    texts = [m["text"] for m in sim.received(customer_id)]
    assert texts.count("今天下午就发，请放心") == 1  # the same msgid: the platform delivers it once
    sim.callback(client)  # nothing new: nothing doubled
    assert db.scalar(select(func.count()).select_from(Message).where(Message.source == kf.SOURCE)) == 2


def test_a_servicer_taking_the_session_in_wecom_stops_replies_from_siyu(client: TestClient, db: Session,
                                                                       sim: Sim) -> None:
    kf_account(db)
    written = sim.control("kf_customer_message", open_kfid=sim.open_kfid, content="我要退货")
    customer_id = written["external_userid"]
    sim.control("kf_servicer_take", open_kfid=sim.open_kfid, external_userid=customer_id)
    sim.callback(client)
    conversation = db.scalars(select(Conversation)).one()
    assert conversation.service_state == kf.ServiceState.person
    with pytest.raises(Invalid):
        inbox.reply(db, conversation_id=conversation.id, text="您好", viewer=SYSTEM)
    db.rollback()
    conversation.service_state = None  # Siyu's view lags behind WeCom: the platform answers 95018
    db.commit()
    reply = inbox.reply(db, conversation_id=conversation.id, text="您好", viewer=SYSTEM)
    db.commit()
    db.refresh(reply)
    assert (reply.status, reply.error) == ("failed", _(kf.SERVED_IN_WECOM_NOW))
    assert sim.received(customer_id) == []
    sim.control("kf_servicer_reply", open_kfid=sim.open_kfid, external_userid=customer_id, content="已为您退货")
    sim.callback(client)
    servicer = db.scalar(select(Message).where(Message.source == kf.SOURCE, Message.direction == "out"))
    assert servicer is not None and servicer.text == "已为您退货" and servicer.status == "sent"


def test_a_token_wecom_no_longer_takes_is_dropped_and_the_pull_goes_on_without_it(client: TestClient,
                                                                                   db: Session, sim: Sim) -> None:
    kf_account(db)
    for n in range(1100):  # more than a page
        sim.control("kf_customer_message", open_kfid=sim.open_kfid, content=f"第{n}条")
    sim.callback(client, token="ENCexpiredTokenFromElevenMinutesAgo0000000000")
    assert db.scalar(select(func.count()).select_from(Message)) == 1000  # one page without a token, then the limit
    row = db.scalars(select(KfCursor)).one()
    assert row.token == "" and row.tokenless_at is not None
    sim.callback(client)  # a fresh callback: the rest with its token
    assert db.scalar(select(func.count()).select_from(Message)) == 1100
    assert db.scalar(select(func.count(func.distinct(Message.platform_msgid)))) == 1100
