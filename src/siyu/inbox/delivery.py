"""Sending outbound messages through the connector of the conversation's account.

A reply is stored as *queued* and only marked *sent* once the platform has accepted it — and
only then does it answer the customer (``inbox.service.reply_accepted``: the SLA clock stops, the
timeline records the 私聊); a failed one leaves the conversation waiting and can be retried;
the delivery runs as a job on the inbound queue (fast), transient failures are retried
with a growing delay, permanent ones are marked *failed* with the reason, shown on the
message. Connectors register themselves per account kind (the WeCom connection, the
simulator); an account with no connector fails its messages with a clear reason instead
of pretending to have sent them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session, object_session

from siyu.accounts.models import Account
from siyu.core.db import utcnow
from siyu.core.i18n import N_
from siyu.customers.models import Customer
from siyu.inbox import service as inbox_service
from siyu.inbox.models import Conversation, DeliveryStatus, Message

MAX_ATTEMPTS = 5
NO_CONNECTOR = N_("No connection can send messages for this account yet")


class DeliveryError(Exception):
    """``permanent``: retrying cannot help (e.g. the customer deleted us); otherwise retried."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Outgoing:
    message_id: int
    text: str
    account: Account
    customer: Customer | None
    group_key: str
    msg_type: str = "text"
    payload: dict[str, Any] | None = None  # e.g. {"msgmenu": …} for a menu, {"welcome_code": …} for a welcome


@dataclass(frozen=True)
class Accepted:
    """The platform took the message; ``confirmed_later``: whether the customer got it is told later.

    (A WeCom reply is a mass-send task the member confirms in their app; its result is read back.)
    """

    platform_id: str
    confirmed_later: bool = False


class Connector(Protocol):
    def send_text(self, outgoing: Outgoing) -> str | Accepted:
        """Hand the message to the platform; return its id there. Raise DeliveryError on failure."""
        ...


_factories: list[Callable[[Account], Connector | None]] = []


def register(factory: Callable[[Account], Connector | None]) -> None:
    """A connector offers itself for the accounts it can serve (the first that answers wins)."""
    if factory not in _factories:
        _factories.append(factory)


def unregister(factory: Callable[[Account], Connector | None]) -> None:
    if factory in _factories:
        _factories.remove(factory)


def connector_for(account: Account) -> Connector | None:
    for factory in _factories:
        connector = factory(account)
        if connector is not None:
            return connector
    return None


@dataclass
class Attempt:
    done: bool
    retry: bool


def deliver(session: Session, *, message_id: int, attempt: int) -> Attempt:
    """Try once to send a queued message. Idempotent: anything not queued is left alone."""
    message = session.get(Message, message_id)
    if message is None or message.status != DeliveryStatus.queued.value or message.internal:
        return Attempt(done=True, retry=False)
    conversation = session.get(Conversation, message.conversation_id)
    account = session.get(Account, conversation.account_id) if conversation else None
    if conversation is None or account is None:
        _count_failed_attempt(message)
        return _fail(message, "conversation gone")
    connector = connector_for(account)
    if connector is None:
        _count_failed_attempt(message)
        return _fail(message, NO_CONNECTOR)
    customer = session.get(Customer, conversation.customer_id) if conversation.customer_id else None
    try:
        platform_id = connector.send_text(Outgoing(message_id=message.id, text=message.text, account=account,
                                                   customer=customer, group_key=conversation.group_key,
                                                   msg_type=message.msg_type, payload=message.payload))
    except DeliveryError as exc:
        _count_failed_attempt(message)
        if exc.permanent or attempt >= MAX_ATTEMPTS:
            return _fail(message, exc.reason)
        message.error = exc.reason  # shown while it waits for the next attempt
        return Attempt(done=False, retry=True)
    accepted = platform_id if isinstance(platform_id, Accepted) else Accepted(platform_id)
    message.status = DeliveryStatus.sent.value
    message.error = ""
    message.payload = {**(message.payload or {}), "platform_id": accepted.platform_id,
                       "sent_at": utcnow().isoformat(), "awaiting_confirmation": accepted.confirmed_later}
    inbox_service.reply_accepted(session, message=message)  # only now is the customer answered
    return Attempt(done=True, retry=False)


def failed_attempts(message: Message) -> int:
    """Attempts the platform refused, counted apart from the one that finally went through (if any)."""
    return int((message.payload or {}).get("failed_attempts", 0))


def _count_failed_attempt(message: Message) -> None:
    message.payload = {**(message.payload or {}), "failed_attempts": failed_attempts(message) + 1}


def confirm(message: Message, *, delivered_at: datetime | None) -> None:
    """The platform says the customer got a message it had accepted."""
    if message.status != DeliveryStatus.sent.value:
        return
    message.status = DeliveryStatus.delivered.value
    payload = {**(message.payload or {}), "awaiting_confirmation": False}
    if delivered_at is not None:
        payload["delivered_at"] = delivered_at.isoformat()
    message.payload = payload


def fail_after_acceptance(message: Message, reason: str) -> None:
    """The platform had accepted the message but did not deliver it (reason shown on the message)."""
    if message.status != DeliveryStatus.sent.value:
        return
    message.payload = {**(message.payload or {}), "awaiting_confirmation": False}
    _count_failed_attempt(message)
    _fail(message, reason)
    session = object_session(message)
    if session is not None:
        inbox_service.reply_failed(session, message=message)  # unanswered again, its touch taken back


def _fail(message: Message, reason: str) -> Attempt:
    message.status = DeliveryStatus.failed.value
    message.error = reason[:500]
    return Attempt(done=True, retry=False)
