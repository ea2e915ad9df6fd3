"""The campaign incident on 微信客服, end to end against the running simulator: 500 customers write
through the kf path (kf_msg_or_event callback, kf/sync_msg), a wrong rule answers each through
kf/send_msg, and the incident's correction reaches each of them exactly once through kf/send_msg —
counted by the simulator. The platform's window holds for corrections too: a customer whose last
message is older than 48 hours gets none, and the report says why."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.autoreply import incidents
from siyu.autoreply.incidents import IncidentIn
from siyu.core.db import utcnow
from siyu.core.i18n import _
from siyu.customers.models import Customer
from siyu.inbox.models import Conversation, Message
from siyu.wecom import kf
from tests.test_incidents import admin_viewer, wrong_rule  # noqa: F401 - the fixture is used by name
from tests.test_wecom_kf_simulator import Sim, kf_account, sim  # noqa: F401 - the fixture is used by name

CORRECTION = "{称呼}您好，刚才的活动信息有误，实际是全场九折，抱歉！"


def test_five_hundred_kf_customers_each_get_exactly_one_correction_through_send_msg(
        client: TestClient, db: Session, sim: Sim, admin_viewer: Any) -> None:  # noqa: F811
    kf_account(db)
    version_id = wrong_rule(db, admin_viewer)
    desk = sim.corp.kf
    started = utcnow() - timedelta(minutes=1)
    fans = [desk.customer_message(open_kfid=sim.open_kfid, content="活动怎么参加？")["external_userid"]
            for _n in range(500)]
    late = desk.customer_message(open_kfid=sim.open_kfid, content="活动怎么参加？")["external_userid"]
    sim.callback(client)  # one kf_msg_or_event; Siyu pulls the 501 messages with kf/sync_msg

    stored = db.scalar(select(func.count()).select_from(Message).where(Message.source == kf.SOURCE))
    assert stored == 501
    wrong = [m for m in desk.state.delivered if m["via"] == "kf" and m["text"] == "全场一折！（错误）"]
    assert Counter(m["external_userid"] for m in wrong) == Counter({ext: 1 for ext in [*fans, late]})

    # The late customer's last message is 49 hours old by the time the correction goes out: on the
    # platform and in Siyu alike (the window: 48 hours after the customer's last message).
    desk.session(sim.open_kfid, late).last_customer_at = time.time() - 49 * 3600
    late_conversation = db.scalars(select(Conversation).join(Customer, Customer.id == Conversation.customer_id)
                                   .where(Customer.wecom_external_userid == late)).one()
    late_conversation.last_inbound_at = utcnow() - timedelta(hours=49)
    db.commit()

    incident = incidents.open_incident(db, viewer=admin_viewer, data=IncidentIn(
        title="双十一错发", rule_version_id=version_id, since=started, until=utcnow(), correction=CORRECTION))
    db.commit()

    corrections = [m for m in desk.state.delivered if m["via"] == "kf" and m["text"].endswith("抱歉！")]
    per_customer = Counter(m["external_userid"] for m in corrections)
    assert per_customer == Counter({ext: 1 for ext in fans})  # each of the 500 once, the late one never
    assert len({m["msgid"] for m in corrections}) == 500
    _incident, counts, _rows = incidents.incident_report(db, incident_id=incident.id, viewer=admin_viewer)
    assert (counts["recipients"], counts["sent"], counts["failed"]) == (501, 500, 1)
    refused = db.scalars(select(Message).where(Message.source == "incident",
                                               Message.conversation_id == late_conversation.id)).one()
    assert refused.status == "failed" and refused.error == _(kf.OUTSIDE_WINDOW)

    # Running the correction again (a restarted job) sends nothing more.
    again, total = incidents.correct_next(db, incident_id=incident.id, viewer=admin_viewer)
    db.commit()
    assert (again, total) == (501, 501)
    assert len([m for m in desk.state.delivered if m["text"].endswith("抱歉！")]) == 500
