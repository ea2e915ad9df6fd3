"""Replies leaving Siyu for WeCom customers, end to end against the running simulator (no mocks):
an inbox reply reaches the customer exactly once; a busy WeCom is retried by the delivery job
and still delivers once; an answer lost after WeCom may have acted is never resent; a customer
who deleted us, an unknown one, one without an external user ID → failed, with the reason;
and issue 8: a wrong rule answers 500 customers, the incident tool corrects each exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.autoreply import incidents
from siyu.autoreply.incidents import IncidentIn
from siyu.core.db import transaction, utcnow
from siyu.core.i18n import _
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer
from siyu.inbox import delivery
from siyu.inbox import service as inbox
from siyu.inbox.jobs import deliver_message
from siyu.inbox.models import Conversation, Message
from siyu.inbox.service import InboundMessage
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom import connector as wecom_connector
from siyu.wecom import send_results
from siyu.wecom.client import client_for
from siyu.wecom.models import SendCheck
from tests.conftest import viewer_of
from tests.test_incidents import wrong_rule

CORP_ID = "wwSIYUCONNECTOR1"
SECRET = "connector-test-secret-0123456789"
MEMBER = "shanye.xiaoye01"
SEND = "externalcontact/add_msg_template"


class Simulator:
    def __init__(self, server: RunningServer, corp: VirtualCorp) -> None:
        self.server = server
        self.corp = corp

    def control(self, method: str, path: str, body: dict[str, Any] | None = None, **params: str) -> Any:
        answer = httpx.request(method, f"{self.server.url}/_simulator/{path}", json=body, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def received(self, external_userid: str = "", chat_id: str = "") -> list[dict[str, Any]]:
        """What reached people's phones, as the simulator's read-only control reports it."""
        return list(self.control("GET", "received", external_userid=external_userid, chat_id=chat_id)["messages"])

    def fault(self, **fault: Any) -> None:
        self.control("POST", "faults", fault)

    def calls(self, path: str = SEND) -> int:
        return int(self.control("GET", "faults")["calls"].get(path, 0))

    def new_contact(self, userid: str = MEMBER) -> str:
        return str(self.control("POST", "add_contact", {"userid": userid})["external_userid"])


@pytest.fixture
def sim(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """The simulator in this process, Siyu configured to call it, and the WeCom connector registered."""
    corp = VirtualCorp.seeded(5, corp_id=CORP_ID, contacts_per_member=2, groups_per_member=0, salt=0)
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    for name, value in {"SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET,
                        "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    wecom_connector.register()
    try:
        yield Simulator(server, corp)
    finally:
        wecom_connector.unregister()
        server.stop()


def wecom_customer(make: Any, db: Session, account: Any, external_userid: str | None, **overrides: Any) -> Any:
    customer = make.customer(account, **overrides)
    customer.wecom_external_userid = external_userid  # as the add event records it
    db.commit()
    return customer


def conversation_of(db: Session, account: Any, customer: Any, n: int = 1) -> Conversation:
    inbox.ingest(db, [InboundMessage(source="wecom", platform_msgid=f"in-{customer.id}-{n}", account_id=account.id,
                                     customer_id=customer.id, sent_at=utcnow(), text="请问还有货吗？")])
    db.commit()
    return db.scalars(select(Conversation).where(Conversation.customer_id == customer.id)).one()


def reply(db: Session, conversation: Conversation, text: str) -> Message:
    # a correction in a member's own chat: a one-customer mass send the member confirms (需成员确认的群发)
    message = inbox.reply(db, conversation_id=conversation.id, text=text, viewer=SYSTEM, member_send=True)
    db.commit()  # the delivery job runs once this commits (immediate mode in tests)
    db.refresh(message)
    return message


def shown(message: Message) -> str:
    """The reason as the conversation shows it (the inbox template translates it again)."""
    return _(message.error)


# ---------------------------------------------------------------- an inbox reply


def test_an_inbox_reply_reaches_the_wecom_customer_exactly_once(db: Session, make: Any, sim: Simulator) -> None:
    account = make.account(wecom_userid=MEMBER)
    external = sim.new_contact()
    customer = wecom_customer(make, db, account, external)
    conversation = conversation_of(db, account, customer)

    message = reply(db, conversation, "您好，明前龙井还有货，今天下单明天发。")

    assert message.status == "sent" and message.error == ""
    got = sim.received(external)
    assert [(r["text"], r["sender"], r["via"]) for r in got] == [("您好，明前龙井还有货，今天下单明天发。", MEMBER,
                                                                   "mass_send")]
    assert message.payload is not None and message.payload["platform_id"] == got[0]["msgid"]
    # Delivering again (a duplicate job, a retried worker) sends nothing: only queued messages go out.
    deliver_message(message.id, 2)
    assert sim.calls() == 1 and len(sim.received(external)) == 1
    assert sim.received(sim.corp.contacts_of(MEMBER)[0]["external_userid"]) == []  # nobody else got it


def test_a_group_conversation_reply_goes_to_that_group_chat(db: Session, make: Any, sim: Simulator) -> None:
    account = make.account(wecom_userid=MEMBER)
    members = [sim.new_contact(), sim.new_contact()]
    chat_id = sim.control("POST", "create_group", {"owner": MEMBER, "name": "新客福利群",
                                                   "external_userids": members})["chat_id"]
    other = sim.control("POST", "create_group", {"owner": MEMBER, "name": "老友群"})["chat_id"]
    inbox.ingest(db, [InboundMessage(source="wecom", platform_msgid="g-1", account_id=account.id, group_key=chat_id,
                                     sender=members[0], sent_at=utcnow(), text="群里问一下")])
    db.commit()
    conversation = db.scalars(select(Conversation).where(Conversation.group_key == chat_id)).one()

    message = reply(db, conversation, "大家好，活动今晚八点开始")

    assert message.status == "sent"
    assert [r["text"] for r in sim.received(chat_id=chat_id)] == ["大家好，活动今晚八点开始"]
    assert sim.received(chat_id=other) == []


# ---------------------------------------------------------------- a busy or failing platform


def test_a_busy_wecom_is_retried_by_the_delivery_job_and_delivers_once(db: Session, make: Any,
                                                                       sim: Simulator) -> None:
    account = make.account(wecom_userid=MEMBER)
    external = sim.new_contact()
    conversation = conversation_of(db, account, wecom_customer(make, db, account, external))
    sim.fault(path=SEND, times=1, errcode=45009)

    message = reply(db, conversation, "稍等，我帮您查一下库存")

    # The connector does not wait inside the job: the attempt fails fast and the job comes back later.
    assert message.status == "queued" and "45009" in shown(message) and "企业微信" in shown(message)
    assert sim.calls() == 1 and sim.received(external) == []
    deliver_message(message.id, 2)  # the job's retry, 10 s later in a real worker
    db.refresh(message)
    assert message.status == "sent" and message.error == ""
    assert [r["text"] for r in sim.received(external)] == ["稍等，我帮您查一下库存"]
    assert sim.calls() == 2


def test_a_busy_wecom_that_stays_busy_fails_after_the_last_attempt(db: Session, make: Any, sim: Simulator) -> None:
    account = make.account(wecom_userid=MEMBER)
    external = sim.new_contact()
    conversation = conversation_of(db, account, wecom_customer(make, db, account, external))
    sim.fault(path=SEND, times=delivery.MAX_ATTEMPTS, errcode=-1)

    message = reply(db, conversation, "您好")
    for attempt in range(2, delivery.MAX_ATTEMPTS + 1):
        assert message.status == "queued"
        deliver_message(message.id, attempt)
        db.refresh(message)

    assert message.status == "failed" and "-1" in shown(message)
    assert sim.calls() == delivery.MAX_ATTEMPTS and sim.received(external) == []


def test_an_answer_lost_after_wecom_may_have_acted_is_never_resent(db: Session, make: Any, sim: Simulator) -> None:
    account = make.account(wecom_userid=MEMBER)
    external = sim.new_contact()
    conversation = conversation_of(db, account, wecom_customer(make, db, account, external))
    sim.fault(path=SEND, times=1, status=502)

    message = reply(db, conversation, "您好")

    assert message.status == "failed" and "避免重复发送" in shown(message)
    deliver_message(message.id, 2)
    assert sim.calls() == 1  # a failed message is not tried again

    # A 503 means WeCom did not carry the request out: that one is retried.
    sim.fault(path=SEND, times=1, status=503)
    second = reply(db, conversation, "在吗")
    assert second.status == "queued"
    deliver_message(second.id, 2)
    db.refresh(second)
    assert second.status == "sent" and [r["text"] for r in sim.received(external)] == ["在吗"]


# ---------------------------------------------------------------- customers WeCom cannot reach


def test_customers_wecom_cannot_reach_fail_with_the_reason(db: Session, make: Any, sim: Simulator) -> None:
    account = make.account(wecom_userid=MEMBER)
    left = sim.new_contact()
    deleted_us = wecom_customer(make, db, account, left)
    sim.control("POST", "remove_contact", {"userid": MEMBER, "external_userid": left})
    unknown = wecom_customer(make, db, account, "wmNOBODYKNOWSTHISEXTERNALUSERID0")
    no_id = wecom_customer(make, db, account, None)

    for customer in (deleted_us, unknown):
        message = reply(db, conversation_of(db, account, customer), "您好")
        assert message.status == "failed", message.error
        assert "不是" in shown(message) and "企业微信联系人" in shown(message) and "41048" in shown(message)
    message = reply(db, conversation_of(db, account, no_id), "您好")
    assert message.status == "failed" and shown(message) == "该客户没有企业微信外部联系人 ID，企业微信无法送达"
    assert sim.received(left) == [] and sim.received("wmNOBODYKNOWSTHISEXTERNALUSERID0") == []
    assert sim.calls() == 2  # the customer without an ID never reached WeCom


def test_the_reason_is_shown_on_the_conversation(client: Any, db: Session, make: Any, sim: Simulator) -> None:
    from tests.test_pages import Console

    account = make.account(wecom_userid=MEMBER)
    customer = wecom_customer(make, db, account, None, name="王芳")
    conversation = conversation_of(db, account, customer)
    reply(db, conversation, "您好")
    console = Console(client).login(make.user("admin"))
    page = console.get(f"/inbox/{conversation.id}")
    assert page.status_code == 200
    assert "该客户没有企业微信外部联系人 ID，企业微信无法送达" in page.text


def test_a_member_wecom_does_not_know_and_a_too_long_text_fail_permanently(db: Session, make: Any,
                                                                         sim: Simulator) -> None:
    gone = make.account(wecom_userid="someone.who.left")
    conversation = conversation_of(db, gone, wecom_customer(make, db, gone, sim.new_contact()))
    message = reply(db, conversation, "您好")
    assert message.status == "failed" and "someone.who.left" in shown(message) and "60111" in shown(message)

    account = make.account(wecom_userid=MEMBER)
    conversation = conversation_of(db, account, wecom_customer(make, db, account, sim.new_contact()))
    message = reply(db, conversation, "茶" * 1400)  # 4,200 bytes in UTF-8
    assert message.status == "failed" and "4000" in shown(message)
    assert sim.calls() == 1


def test_without_the_wecom_secret_no_connector_answers(db: Session, make: Any, sim: Simulator,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIYU_WECOM_SECRET", "")
    get_settings.cache_clear()
    account = make.account(wecom_userid=MEMBER)
    conversation = conversation_of(db, account, wecom_customer(make, db, account, sim.new_contact()))
    message = reply(db, conversation, "您好")
    assert message.status == "failed" and message.error == delivery.NO_CONNECTOR
    personal = make.account(kind="personal", wecom_userid=None)
    assert wecom_connector.connector_for(personal) is None
    assert sim.calls() == 0


# ---------------------------------------------------------------- issue 8: the incident tool, for real


def test_five_hundred_customers_each_receive_exactly_one_correction(db: Session, make: Any,
                                                                    sim: Simulator) -> None:
    """Enable a wrong rule, let it answer 500 customers, run the incident tool, and count what each
    customer's phone received — through the simulator, not a recording double."""
    # The wrong answer and its correction are two mass messages to each customer on one day; the
    # platform allows 4 per customer per month (the simulator models a stricter one per day).
    sim.corp.mass_send_daily_limit = 2
    externals = [sim.corp.add_contact(MEMBER)["external_userid"] for _ in range(500)]
    account = make.account(wecom_userid=MEMBER)
    admin = viewer_of(make.user("admin"))
    version_id = wrong_rule(db, admin)
    customers = make.bulk_customers(account, 500)
    db.execute(update(Customer), [{"id": c, "wecom_external_userid": e} for c, e in zip(customers, externals,
                                                                                       strict=True)])
    db.commit()
    started = utcnow() - timedelta(minutes=1)

    inbox.ingest(db, [InboundMessage(source="wecom", platform_msgid=f"fan-{c}", account_id=account.id,
                                     customer_id=c, sent_at=utcnow(), text="活动怎么参加") for c in customers])
    db.commit()  # 500 automatic replies, each delivered through the simulator

    wrong = Counter(r["external_userid"] for r in sim.received() if r["text"] == "全场一折！（错误）")
    assert wrong == Counter({e: 1 for e in externals})
    incident = incidents.open_incident(db, viewer=admin, data=IncidentIn(
        title="双十一错发", rule_version_id=version_id, since=started, until=utcnow(),
        correction="{称呼}您好，刚才的活动信息有误，实际是全场九折，抱歉！"))
    db.commit()  # the correction job runs (immediate mode), each correction delivered once it commits

    corrections = [r for r in sim.received() if r["text"].endswith("实际是全场九折，抱歉！")]
    assert Counter(r["external_userid"] for r in corrections) == Counter({e: 1 for e in externals})
    by_customer = dict(zip(externals, customers, strict=True))
    assert all(r["text"].startswith(f"顾客{by_customer[r['external_userid']]}您好") for r in corrections)
    assert sim.calls() == 1000  # 500 wrong answers + 500 corrections, nothing sent twice
    _incident, counts, _rows = incidents.incident_report(db, incident_id=incident.id, viewer=admin)
    assert counts["recipients"] == 500 and counts["sent"] == 500 and counts["failed"] == 0
    platform_ids = db.scalars(select(Message.payload).where(Message.source == "incident")).all()
    assert {p["platform_id"] for p in platform_ids if p} == {r["msgid"] for r in corrections}
    # WeCom's send results, read back: every wrong reply and every correction reached its customer.
    assert read_back_results(db).delivered == 1000
    assert db.scalar(select(func.count()).select_from(Message).where(Message.status != "delivered",
                                                                     Message.direction == "outbound")) == 0
    _incident, counts, _rows = incidents.incident_report(db, incident_id=incident.id, viewer=admin)
    assert counts["delivered"] == 500


def read_back_results(db: Session, *, minutes: int = 2) -> send_results.CheckRun:
    """The periodic job's work, run now as if ``minutes`` had passed (rows are due a minute after sending)."""
    api = client_for(db, policy=send_results.ONE_TRY)
    return send_results.check_due(transaction, api, now=utcnow() + timedelta(minutes=minutes))


def test_the_incident_report_shows_why_a_correction_did_not_arrive(client: Any, db: Session, make: Any,
                                                                   sim: Simulator) -> None:
    """Corrections that WeCom refuses at once (the customer deleted the member since), or accepts and
    then does not send (the customer's receive limit), are failed with the platform's reason; a
    wrong reply that never reached its customer (no WeCom id, no connection) needs no correction."""
    from tests.test_pages import Console

    account = make.account(wecom_userid=MEMBER)
    admin_user = make.user("admin")
    admin = viewer_of(admin_user)
    version_id = wrong_rule(db, admin)
    reachable = wecom_customer(make, db, account, sim.new_contact(), name="王芳")
    deleted_us = wecom_customer(make, db, account, sim.new_contact(), name="李娜")
    at_limit = wecom_customer(make, db, account, sim.new_contact(), name="陈静")
    never_reached = wecom_customer(make, db, account, None, name="赵磊")
    no_connection = make.account(kind="personal", wecom_userid=None)
    personal = make.customer(no_connection, name="张伟")
    sim.corp.mass_send_daily_limit = 2
    sim.corp.api_add_msg_template({"chat_type": "single", "sender": MEMBER, "text": {"content": "早安"},
                                   "external_userid": [at_limit.wecom_external_userid]})  # her first today
    started = utcnow() - timedelta(minutes=1)
    inbox.ingest(db, [InboundMessage(source="wecom", platform_msgid=f"p-{c.id}", account_id=a.id, customer_id=c.id,
                                     sent_at=utcnow(), text="活动") for a, c in (
        (account, reachable), (account, deleted_us), (account, at_limit), (account, never_reached),
        (no_connection, personal))])
    db.commit()
    assert read_back_results(db).delivered == 3  # the wrong reply reached 王芳, 李娜 and 陈静
    sim.corp.remove_contact(MEMBER, str(deleted_us.wecom_external_userid))

    incident = incidents.open_incident(db, viewer=admin, data=IncidentIn(
        title="错发", rule_version_id=version_id, since=started, until=utcnow(), correction="抱歉，刚才发错了"))
    db.commit()
    console = Console(client).login(admin_user)
    report = console.get(f"/autoreply/incidents/{incident.id}").text
    assert 'data-testid="incident-counts"' in report and "李娜" in report and "赵磊" not in report
    assert _(wecom_connector.NOT_A_CONTACT) in report  # 李娜: refused when the correction was created
    assert _incident_counts(db, incident.id, admin) == {"recipients": 3, "sent": 2, "delivered": 0, "failed": 1}

    run = read_back_results(db)
    assert (run.delivered, run.failed) == (1, 1)
    report = console.get(f"/autoreply/incidents/{incident.id}").text
    assert _(send_results.LIMIT_REACHED) in report  # 陈静: accepted, then not sent by WeCom
    assert _incident_counts(db, incident.id, admin) == {"recipients": 3, "sent": 0, "delivered": 1, "failed": 2}
    assert [r["text"] for r in sim.received(str(reachable.wecom_external_userid))] == ["全场一折！（错误）",
                                                                                     "抱歉，刚才发错了"]
    assert [r["text"] for r in sim.received(str(at_limit.wecom_external_userid))] == ["早安", "全场一折！（错误）"]


def _incident_counts(db: Session, incident_id: int, viewer: Any) -> dict[str, int]:
    db.expire_all()
    _incident, counts, _rows = incidents.incident_report(db, incident_id=incident_id, viewer=viewer)
    return {key: counts[key] for key in ("recipients", "sent", "delivered", "failed")}


def test_a_reply_stays_waiting_until_the_member_sends_it_and_is_given_up_after_three_days(
        client: Any, db: Session, make: Any, sim: Simulator) -> None:
    from tests.test_pages import Console

    sim.corp.auto_confirm_mass_send = False  # the member has not tapped "send" in their WeCom app yet
    account = make.account(wecom_userid=MEMBER)
    conversation = conversation_of(db, account, wecom_customer(make, db, account, sim.new_contact()))
    confirmed, forgotten = reply(db, conversation, "您好"), reply(db, conversation, "在吗")
    assert confirmed.status == forgotten.status == "sent"
    admin = make.user("admin")
    page = Console(client).login(admin).get(f"/inbox/{conversation.id}").text
    assert page.count("已提交企业微信，等待成员确认发送") == 2
    assert read_back_results(db, minutes=0).waiting == 0  # not due yet: the first look is a minute later
    assert read_back_results(db).waiting == 2
    sim.fault(path="externalcontact/get_groupmsg_send_result", errcode=45009, times=50)  # WeCom busy
    assert read_back_results(db, minutes=10) == send_results.CheckRun()  # nothing settled, nothing lost
    sim.control("DELETE", "faults")

    sim.corp.confirm_mass_send(str((confirmed.payload or {})["platform_id"]), MEMBER)
    assert read_back_results(db, minutes=10).delivered == 1
    assert read_back_results(db, minutes=3 * 24 * 60 + 1).failed == 1
    db.expire_all()
    assert db.get(Message, confirmed.id).status == "delivered"  # type: ignore[union-attr]
    gone = db.get(Message, forgotten.id)
    assert gone is not None and gone.status == "failed" and gone.error == send_results.NEVER_SENT
    page = Console(client).login(admin).get(f"/inbox/{conversation.id}").text
    assert "已送达" in page and _(send_results.NEVER_SENT) in page
    assert db.scalar(select(func.count()).select_from(SendCheck)) == 0


def test_the_app_registers_the_wecom_connector(db: Session, make: Any, sim: Simulator) -> None:
    from siyu.app import create_app as create_siyu_app

    account = make.account(wecom_userid=MEMBER)
    wecom_connector.unregister()
    assert delivery.connector_for(account) is None
    create_siyu_app()
    assert isinstance(delivery.connector_for(account), wecom_connector.WecomConnector)
