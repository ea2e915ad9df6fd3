"""The incident tool: everyone who got a wrong automatic reply gets exactly one correction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.autoreply import incidents, service
from siyu.autoreply.incidents import IncidentIn
from siyu.autoreply.models import IncidentRecipient, MatchKind
from siyu.autoreply.service import RuleIn
from siyu.core import jobs
from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.core.models import Job
from siyu.customers.models import Touch
from siyu.inbox import service as inbox
from siyu.inbox.models import Message
from siyu.inbox.service import InboundMessage
from tests.conftest import viewer_of


@pytest.fixture
def admin_viewer(make: Any) -> Any:
    return viewer_of(make.user("admin"))


def wrong_rule(db: Session, admin: Any) -> int:
    rule = service.save_rule(db, viewer=admin, data=RuleIn(
        name="双十一", match_kind=MatchKind.contains, keywords=["活动"], reply="全场一折！（错误）", hourly_cap=1000))
    service.dry_run(db, rule_id=rule.id, viewer=admin)
    service.set_enabled(db, rule_id=rule.id, enabled=True, viewer=admin)
    db.commit()
    assert rule.current_version_id is not None
    return rule.current_version_id


def test_five_hundred_fans_each_get_exactly_one_correction(db: Session, make: Any, admin_viewer: Any,
                                                           connector: Any) -> None:
    account = make.account()
    version_id = wrong_rule(db, admin_viewer)
    customers = make.bulk_customers(account, 500)
    started = utcnow() - timedelta(minutes=1)
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"fan-{c}", account_id=account.id,
                                     customer_id=c, sent_at=utcnow(), text="活动怎么参加") for c in customers])
    db.commit()
    assert db.scalar(select(func.count()).select_from(Message).where(Message.rule_version_id == version_id)) == 500
    admin = admin_viewer
    count, preview = incidents.recipients_preview(db, viewer=admin, data=IncidentIn(
        title="双十一错发", rule_version_id=version_id, since=started, until=utcnow(), correction="x"))
    assert count == 500 and len(preview) == 200
    incident = incidents.open_incident(db, viewer=admin, data=IncidentIn(
        title="双十一错发", rule_version_id=version_id, since=started, until=utcnow(),
        correction="{称呼}您好，刚才的活动信息有误，实际是全场九折，抱歉！"))
    db.commit()
    corrections = db.execute(select(Message.conversation_id, func.count()).where(Message.source == "incident")
                             .group_by(Message.conversation_id)).all()
    assert len(corrections) == 500 and {n for _c, n in corrections} == {1}
    assert db.scalar(select(Message.text).where(Message.source == "incident").limit(1)).startswith("顾客")
    job = db.get(Job, incident.job_id)
    assert job is not None and job.status == "succeeded" and job.result == {"rows": 500}
    touches = db.scalar(select(func.count()).select_from(Touch).where(Touch.content == "双十一错发"))
    assert touches == 500
    _incident, counts, rows = incidents.incident_report(db, incident_id=incident.id, viewer=admin)
    assert counts["recipients"] == 500 and counts["sent"] == 500 and len(rows) == 500
    corrected = [o.customer.id for o in connector.sent if o.text.endswith("抱歉！")]
    assert sorted(corrected) == sorted(customers)  # each of the 500, exactly once


def test_an_interrupted_correction_resumes_without_repeats(db: Session, make: Any, admin_viewer: Any,
                                                         connector: Any) -> None:
    account = make.account()
    version_id = wrong_rule(db, admin_viewer)
    customers = make.bulk_customers(account, 150)
    started = utcnow() - timedelta(minutes=1)
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"r-{c}", account_id=account.id,
                                     customer_id=c, sent_at=utcnow(), text="活动") for c in customers])
    db.commit()
    admin = admin_viewer
    jobs.set_immediate(False)  # queue the job without running it, like a worker that died
    try:
        incident = incidents.open_incident(db, viewer=admin, data=IncidentIn(
            title="中断", rule_version_id=version_id, since=started, until=utcnow(), correction="更正"))
        db.commit()
    finally:
        jobs.set_immediate(True)
    # The first worker got through one chunk before it was killed.
    done, total = incidents.correct_next(db, incident_id=incident.id, viewer=admin)
    db.commit()
    assert (done, total) == (incidents.CHUNK, 150)
    from siyu.autoreply.jobs import send_corrections

    send_corrections(incident.job_id)  # the retried job, run here in immediate mode
    per_conversation = db.execute(select(func.count()).select_from(Message).where(Message.source == "incident")
                                  .group_by(Message.conversation_id)).scalars().all()
    assert len(per_conversation) == 150 and set(per_conversation) == {1}
    assert db.scalar(select(func.count()).select_from(IncidentRecipient).where(
        IncidentRecipient.correction_message_id.is_(None))) == 0


def test_a_wrong_reply_that_never_reached_its_customer_needs_no_correction(
        db: Session, make: Any, admin_viewer: Any, connector: Any) -> None:
    account = make.account()
    version_id = wrong_rule(db, admin_viewer)
    customers = make.bulk_customers(account, 4)
    connector.unreachable = {customers[0]}  # e.g. no longer a contact: the wrong reply failed
    started = utcnow() - timedelta(minutes=1)
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"u-{c}", account_id=account.id,
                                     customer_id=c, sent_at=utcnow(), text="活动") for c in customers])
    db.commit()
    data = IncidentIn(title="错发", rule_version_id=version_id, since=started, until=utcnow(), correction="更正")
    count, preview = incidents.recipients_preview(db, viewer=admin_viewer, data=data)
    assert count == 3 and customers[0] not in {customer for _m, _c, customer in preview}
    incident = incidents.open_incident(db, viewer=admin_viewer, data=data)
    db.commit()
    _incident, counts, _rows = incidents.incident_report(db, incident_id=incident.id, viewer=admin_viewer)
    assert counts["recipients"] == 3 and counts["sent"] == 3 and counts["failed"] == 0
    assert sorted(o.customer.id for o in connector.sent if o.text == "更正") == sorted(customers[1:])


def test_bad_incident_requests_are_refused(db: Session, make: Any, admin_viewer: Any) -> None:
    account = make.account()
    version_id = wrong_rule(db, admin_viewer)
    admin = admin_viewer
    now = utcnow()
    with pytest.raises(Invalid):
        incidents.open_incident(db, viewer=admin, data=IncidentIn(title="t", rule_version_id=version_id,
                                                                  since=now, until=now - timedelta(hours=1),
                                                                  correction="c"))
    with pytest.raises(Invalid):
        incidents.open_incident(db, viewer=admin, data=IncidentIn(title="t", since=now - timedelta(hours=1),
                                                                  until=now, correction="c"))
    with pytest.raises(Invalid):  # nobody got it
        incidents.open_incident(db, viewer=admin, data=IncidentIn(title="t", rule_version_id=version_id,
                                                                  since=now - timedelta(hours=1), until=now,
                                                                  correction="c"))
    assert db.get(Account, account.id) is not None


def test_incident_pages_find_and_correct(client: Any, db: Session, make: Any, admin_viewer: Any,
                                         connector: Any) -> None:
    from tests.test_pages import Console

    account = make.account()
    version_id = wrong_rule(db, admin_viewer)
    customers = make.bulk_customers(account, 3)
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"p-{c}", account_id=account.id,
                                     customer_id=c, sent_at=utcnow(), text="活动") for c in customers])
    db.commit()
    admin = make.user("admin")
    console = Console(client).login(admin)
    since = (utcnow() + timedelta(hours=8) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")  # Asia/Shanghai
    until = (utcnow() + timedelta(hours=8, minutes=1)).strftime("%Y-%m-%dT%H:%M")
    found = console.get("/autoreply/incidents", params={"rule_version_id": version_id, "since": since,
                                                        "until": until})
    assert found.status_code == 200 and "3 位客户收到了这条消息" in found.text
    sent = console.post("/autoreply/incidents", {"rule_version_id": version_id, "message_id": "", "since": since,
                                                 "until": until, "title": "<b>错发</b>", "correction": "抱歉"})
    assert sent.status_code == 303
    report = console.get(sent.headers["location"]).text
    assert "&lt;b&gt;错发&lt;/b&gt;" in report and 'data-testid="incident-recipients"' in report
    refused = console.post("/autoreply/incidents", {"rule_version_id": "", "message_id": "", "since": since,
                                                    "until": until, "title": "x", "correction": "y"})
    assert refused.status_code == 422


def test_the_incident_tool_starts_from_a_wrong_bubble(client: Any, db: Session, make: Any, admin_viewer: Any,
                                                      connector: Any) -> None:
    from sqlalchemy import select as select_

    from siyu.inbox.models import Conversation
    from tests.test_pages import Console

    account = make.account(kind="personal")
    version_id = wrong_rule(db, admin_viewer)
    customers = make.bulk_customers(account, 3)
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"b-{c}", account_id=account.id,
                                     customer_id=c, sent_at=utcnow(), text="活动") for c in customers])
    db.commit()
    conversation = db.scalar(select_(Conversation).where(Conversation.customer_id == customers[0]))
    assert conversation is not None
    automatic = db.scalar(select_(Message).where(Message.conversation_id == conversation.id,
                                                 Message.rule_version_id == version_id))
    assert automatic is not None
    human = inbox.reply(db, conversation_id=conversation.id, text="全场一折哦", viewer=admin_viewer)
    note = inbox.reply(db, conversation_id=conversation.id, text="内部", viewer=admin_viewer, internal=True)
    db.commit()
    assert incidents.prefill_from_message(db, message_id=automatic.id, viewer=admin_viewer)["rule_version_id"] == \
        str(version_id)
    assert incidents.prefill_from_message(db, message_id=human.id, viewer=admin_viewer)["message_id"] == str(human.id)
    with pytest.raises(Invalid):
        incidents.prefill_from_message(db, message_id=note.id, viewer=admin_viewer)

    console = Console(client).login(make.user("admin"))
    thread = console.get(f"/inbox/{conversation.id}").text
    assert f'href="/autoreply/incidents?from_message={automatic.id}"' in thread  # on the automatic bubble
    assert f'href="/autoreply/incidents?from_message={human.id}"' in thread  # and on the agent's
    assert f'from_message={note.id}"' not in thread  # never on an internal note
    opened = console.get(f"/autoreply/incidents?from_message={automatic.id}")
    assert opened.status_code == 200 and "3 位客户收到了这条消息" in opened.text
    assert f'<option value="{version_id}" selected>' in opened.text
    service_user = make.user("service", accounts=[account])
    assert 'data-testid="report-message"' not in Console(client).login(service_user).get(
        f"/inbox/{conversation.id}").text  # only those who may send corrections see it


def test_the_incident_report_counts_failed_attempts_apart(db: Session, make: Any, admin_viewer: Any,
                                                          connector: Any) -> None:
    account = make.account()
    version_id = wrong_rule(db, admin_viewer)
    customers = make.bulk_customers(account, 4)
    connector.unreachable = {customers[0]}  # the wrong reply never reached this one
    started = utcnow() - timedelta(minutes=1)
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"a-{c}", account_id=account.id,
                                     customer_id=c, sent_at=utcnow(), text="活动") for c in customers])
    db.commit()
    connector.unreachable = {customers[1]}  # and the correction fails for this one, at first
    data = IncidentIn(title="错发", rule_version_id=version_id, since=started, until=utcnow(), correction="更正")
    assert incidents.unreached(db, data=data, viewer=admin_viewer) == 1
    incident = incidents.open_incident(db, viewer=admin_viewer, data=data)
    db.commit()
    _incident, counts, _rows = incidents.incident_report(db, incident_id=incident.id, viewer=admin_viewer)
    assert (counts["recipients"], counts["sent"], counts["failed"], counts["failed_attempts"], counts["unreached"]) \
        == (3, 2, 1, 1, 1)
    failed = db.scalar(select(Message).where(Message.source == "incident", Message.status == "failed"))
    assert failed is not None
    connector.unreachable = set()
    inbox.retry_reply(db, message_id=failed.id, viewer=admin_viewer)
    db.commit()
    _incident, counts, _rows = incidents.incident_report(db, incident_id=incident.id, viewer=admin_viewer)
    assert (counts["sent"], counts["failed"], counts["failed_attempts"]) == (3, 0, 1)  # delivered, attempt kept
