"""The incident tool: find everyone a wrong message reached, and correct it once for each.

Pick what went wrong — a rule version, or the exact text of a sent message — and a time
range; the recipients are the conversations that received it, listed exactly (not
estimated). The correction goes out as one tracked job: each recipient is a row with a
unique key, so a restarted job carries on where it stopped and nobody gets it twice; each
customer's timeline records the incident; the job page shows progress, the incident page
shows who received the correction and whose delivery failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from siyu.autoreply.models import AutoReplyRuleVersion, Incident, IncidentRecipient
from siyu.core import jobs
from siyu.core.db import utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers import variables
from siyu.customers.models import Touch, TouchKind
from siyu.inbox import service as inbox_service
from siyu.inbox.models import Conversation, DeliveryStatus, Direction, Message, MessageType

CHUNK = 100


class IncidentIn(BaseModel):
    title: str = Field(min_length=1, max_length=128)
    rule_version_id: Id | None = None
    message_id: Id | None = None
    since: datetime
    until: datetime
    correction: str = Field(min_length=1, max_length=2000)


def _wrong_messages(*, rule_version_id: int | None, message_text: str, since: datetime, until: datetime,
                    viewer: Viewer, failed: bool = False) -> Any:
    # Everyone it reached or may still reach: sent, delivered, or on its way (a correction then
    # follows it); a wrong reply that failed never reached its customer and needs no correction
    # (``failed=True``: those, counted apart).
    status = Message.status == DeliveryStatus.failed.value if failed else \
        Message.status != DeliveryStatus.failed.value
    query = select(Message.id, Message.conversation_id, Conversation.customer_id).join(
        Conversation, Conversation.id == Message.conversation_id).where(
        Message.direction == Direction.outbound.value, Message.internal.is_(False),
        status, Message.sent_at >= since, Message.sent_at <= until)
    if rule_version_id is not None:
        query = query.where(Message.rule_version_id == rule_version_id)
    else:
        query = query.where(Message.text == message_text)
    if not viewer.sees_all_accounts:
        query = query.where(Conversation.account_id.in_(sorted(viewer.account_ids)))
    return query


FROM_MESSAGE_BEFORE = timedelta(minutes=1)


def prefill_from_message(session: Session, *, message_id: int, viewer: Viewer) -> dict[str, str]:
    """The incident form started from one wrong bubble: its rule version (an automatic reply) or the
    message itself (a person's reply), from just before it was sent until now, and a title."""
    message = session.get(Message, message_id)
    conversation = session.get(Conversation, message.conversation_id) if message else None
    if message is None or conversation is None or message.direction != Direction.outbound.value or \
            message.internal or not viewer.can_see_account(conversation.account_id):
        raise Invalid("No such sent message", field="message_id")
    zone = local_zone()
    since = (message.sent_at - FROM_MESSAGE_BEFORE).astimezone(zone)
    until = max(utcnow(), message.sent_at).astimezone(zone) + FROM_MESSAGE_BEFORE
    values = {"since": since.strftime("%Y-%m-%dT%H:%M"), "until": until.strftime("%Y-%m-%dT%H:%M"),
              "title": _("Wrong reply: {text}", text=message.text[:24]), "from_message": str(message.id)}
    if message.rule_version_id is not None:
        values["rule_version_id"] = str(message.rule_version_id)
    else:
        values["message_id"] = str(message.id)
    return values


def _resolve_selector(session: Session, data: IncidentIn, viewer: Viewer) -> tuple[int | None, str]:
    if viewer.role not in ("admin", "planner", "operator"):
        raise Forbidden("Your role may not send corrections")
    variables.check_outgoing(data.correction, field="correction")
    if data.until <= data.since:
        raise Invalid("The end of the time range must be after its start", field="until")
    if (data.rule_version_id is None) == (data.message_id is None):
        raise Invalid("Pick either a rule version or a sent message", field="rule_version_id")
    if data.rule_version_id is not None:
        if session.get(AutoReplyRuleVersion, data.rule_version_id) is None:
            raise Invalid("No such rule version", field="rule_version_id")
        return data.rule_version_id, ""
    message = session.get(Message, data.message_id)
    conversation = session.get(Conversation, message.conversation_id) if message else None
    if message is None or conversation is None or message.direction != Direction.outbound.value or \
            not viewer.can_see_account(conversation.account_id):
        raise Invalid("No such sent message", field="message_id")
    return None, message.text


def unreached(session: Session, *, data: IncidentIn, viewer: Viewer) -> int:
    """How many of the wrong messages failed: they never reached anyone, so nobody is corrected for them."""
    version_id, text = _resolve_selector(session, data, viewer)
    query = _wrong_messages(rule_version_id=version_id, message_text=text, since=data.since, until=data.until,
                            viewer=viewer, failed=True)
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def recipients_preview(session: Session, *, data: IncidentIn, viewer: Viewer, limit: int = 200
                       ) -> tuple[int, list[tuple[int, int, int | None]]]:
    """How many conversations received it, and the first ``limit`` (message, conversation, customer)."""
    version_id, text = _resolve_selector(session, data, viewer)
    query = _wrong_messages(rule_version_id=version_id, message_text=text, since=data.since, until=data.until,
                            viewer=viewer)
    rows = session.execute(query.order_by(Message.id)).all()
    by_conversation: dict[int, tuple[int, int, int | None]] = {}
    for message_id, conversation_id, customer_id in rows:
        by_conversation.setdefault(conversation_id, (message_id, conversation_id, customer_id))
    return len(by_conversation), list(by_conversation.values())[:limit]


def open_incident(session: Session, *, data: IncidentIn, viewer: Viewer) -> Incident:
    """Record the incident and its exact recipients, then start the correction job (after commit)."""
    version_id, text = _resolve_selector(session, data, viewer)
    incident = Incident(title=data.title, rule_version_id=version_id, message_text=text, since=data.since,
                        until=data.until, correction=data.correction, created_by_id=viewer.user_id)
    session.add(incident)
    session.flush()
    seen: set[int] = set()
    wrong = _wrong_messages(rule_version_id=version_id, message_text=text, since=data.since, until=data.until,
                            viewer=viewer)
    for message_id, conversation_id, customer_id in session.execute(wrong.order_by(Message.id)):
        if conversation_id in seen:
            continue
        seen.add(conversation_id)
        session.add(IncidentRecipient(incident_id=incident.id, conversation_id=conversation_id,
                                      customer_id=customer_id, wrong_message_id=message_id))
    if not seen:
        raise Invalid("Nobody received that message in this time range", field="since")
    session.flush()
    job = jobs.submit(session, "autoreply.jobs.send_corrections", kind="autoreply.incident",
                      title=_("Correction: {title}", title=data.title),
                      params={"incident_id": incident.id, "user_id": viewer.user_id}, actor=viewer, total=len(seen))
    incident.job_id = job.id
    from siyu.team import service as team_service

    team_service.record_audit(session, actor=viewer, action="create", entity_type="incident", entity_id=incident.id,
                              summary=data.title, after={"recipients": len(seen), **data.model_dump(mode="json")})
    return incident


def correct_next(session: Session, *, incident_id: int, viewer: Viewer) -> tuple[int, int]:
    """Send the correction to the next chunk of recipients; returns (corrected so far, total)."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound("Incident not found")
    pending = list(session.scalars(select(IncidentRecipient).where(
        IncidentRecipient.incident_id == incident_id, IncidentRecipient.correction_message_id.is_(None))
        .order_by(IncidentRecipient.id).limit(CHUNK)))
    for recipient in pending:
        _correct(session, incident=incident, recipient=recipient, viewer=viewer)
    counts = session.execute(select(func.count(), func.count(IncidentRecipient.correction_message_id)).where(
        IncidentRecipient.incident_id == incident_id)).one()
    return int(counts[1]), int(counts[0])


def _correct(session: Session, *, incident: Incident, recipient: IncidentRecipient, viewer: Viewer) -> None:
    conversation = session.get(Conversation, recipient.conversation_id)
    if conversation is None:
        recipient.correction_message_id = 0  # the conversation is gone: nothing to send, nothing to retry
        return
    text = inbox_service.fill_variables(session, text=incident.correction, conversation=conversation)
    # a correction: in a member's own chat, the one-customer mass send the member confirms (需成员确认的群发)
    try:
        message = inbox_service.reply(session, conversation_id=conversation.id, text=text, viewer=viewer,
                                      automatic=True, member_send=True)
    except Invalid as refused:
        # The channel's window (微信客服: 48 hours after the customer's last message, 5 replies each) holds
        # for corrections too: refused now, kept as a failed correction with the reason, never retried —
        # and the other recipients are corrected all the same.
        now = utcnow()
        message = Message(conversation_id=conversation.id, source="incident",
                          platform_msgid=f"incident:{incident.id}:{recipient.id}", direction=Direction.outbound.value,
                          msg_type=MessageType.text.value, sender=viewer.username, text=text, sent_at=now,
                          status=DeliveryStatus.failed.value, error=refused.message[:500], author_id=viewer.user_id,
                          automatic=True, internal=False, payload={"failed_attempts": 1})
        session.add(message)
        session.flush()
    message.source = "incident"
    recipient.correction_message_id = message.id
    if conversation.customer_id is not None and message.status != DeliveryStatus.failed.value:
        session.add(Touch(customer_id=conversation.customer_id, account_id=conversation.account_id,
                          user_id=viewer.user_id, kind=TouchKind.system.value, content=incident.title[:2000],
                          details={"event": "incident", "incident_id": incident.id,
                                   "wrong_message_id": recipient.wrong_message_id,
                                   "correction_message_id": message.id}))
    session.flush()


def incident_report(session: Session, *, incident_id: int,
                    viewer: Viewer) -> tuple[Incident, dict[str, int], list[Any]]:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound("Incident not found")
    rows = session.execute(
        select(IncidentRecipient, Message.status, Message.error, Conversation.account_id, Message.payload)
        .join(Conversation, Conversation.id == IncidentRecipient.conversation_id)
        .outerjoin(Message, and_(Message.id == IncidentRecipient.correction_message_id))
        .where(IncidentRecipient.incident_id == incident_id).order_by(IncidentRecipient.id)).all()
    if not viewer.sees_all_accounts and any(not viewer.can_see_account(r.account_id) for r in rows):
        raise NotFound("Incident not found")
    counts = {"recipients": len(rows), "pending": 0, DeliveryStatus.queued.value: 0, DeliveryStatus.sent.value: 0,
              DeliveryStatus.delivered.value: 0, DeliveryStatus.failed.value: 0, "failed_attempts": 0}
    for row in rows:
        key = row.status if row.status in counts else "pending"
        counts[key] += 1
        # Attempts the platform refused, apart from the outcome (a retried correction may be delivered now).
        counts["failed_attempts"] += int((row.payload or {}).get("failed_attempts", 0))
    wrong = _wrong_messages(rule_version_id=incident.rule_version_id, message_text=incident.message_text,
                            since=incident.since, until=incident.until, viewer=viewer, failed=True)
    counts["unreached"] = int(session.scalar(select(func.count()).select_from(wrong.subquery())) or 0)
    return incident, counts, list(rows)


def list_incidents(session: Session) -> list[Incident]:
    return list(session.scalars(select(Incident).order_by(Incident.id.desc()).limit(100)))
