"""Inbox rules: ingesting messages exactly once, conversation states, assignment, the queue.

Why it is shaped this way: on a campaign day 170,000 messages arrive (seeds/001). Messages
come in batches from the inbound queue; a batch resolves its customers and conversations
with a handful of set-based queries, inserts its messages with ``ON CONFLICT DO NOTHING``
(a platform retry is the same message and is dropped by the database, never by chance),
and updates each touched conversation once. Assignment runs whenever capacity appears:
a new waiting conversation, an agent coming online, a conversation resolved or handed
back — so nobody waits behind an idle agent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind
from siyu.core.db import (
    among,
    committed,
    dialect_insert,
    insert_records,
    missing_ids,
    remember_after_commit,
    update_from_values,
    utcnow,
)
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.pagination import Page, decode_cursor, encode_cursor
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.customers import variables
from siyu.customers.models import CONTACT_KINDS, Customer, CustomerTag, Friendship, Touch, TouchKind
from siyu.inbox import channel_hooks
from siyu.inbox.models import (
    AgentState,
    CannedReply,
    Channel,
    Conversation,
    ConversationStatus,
    DeliveryStatus,
    Direction,
    Message,
    MessageType,
    ServiceLevel,
    ServiceState,
)
from siyu.team.models import Role, User, UserAccount

PREVIEW_LENGTH = 120
MAX_TEXT = 64 * 1024
KNOWN_TYPES = {t.value for t in MessageType}
DEFAULT_FIRST_RESPONSE_MINUTES = 5
DEFAULT_RESOLUTION_MINUTES = 240
AGENT_ROLES = (Role.service.value, Role.operator.value)
READ_ONLY = ("A WeCom member's own chat is read-only: answer from the sidebar in WeCom, or send a member-confirmed "
             "mass send")


class ConversationNotFound(NotFound):
    pass


@dataclass(slots=True)
class InboundMessage:
    """One message as a connector hands it over, before it is stored (slots, not frozen: a flood makes
    170,000 of them, and a frozen dataclass sets each field through ``object.__setattr__``)."""

    source: str
    platform_msgid: str
    account_id: int
    sent_at: datetime
    customer_id: int | None = None
    external_userid: str = ""
    group_key: str = ""
    sender: str = ""
    msg_type: str = MessageType.text.value
    text: str | bytes = ""
    payload: dict[str, Any] | None = None
    # "out": what a person sent from the platform's own client (a 微信客服 servicer), recorded as sent.
    # A system line (msg_type "system") is neither the customer's nor ours: it never waits for an answer.
    direction: str = Direction.inbound.value
    channel: str = ""  # of a new conversation; empty: from the account's kind


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    conversations: list[int] = field(default_factory=list)
    assigned: int = 0
    auto_replies: int = 0
    # The stored messages' ids by (source, platform_msgid): what the batch added (repeats are not in it).
    ids: dict[tuple[str, str], int] = field(default_factory=dict)


def clean_text(value: str | bytes) -> str:
    """Text safe for every database: valid UTF-8, no NUL, at most 64 KB."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    else:
        value = value.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates
    return value.replace("\x00", "\ufffd")[:MAX_TEXT]


def conversation_key(account_id: int, customer_id: int | None, group_key: str) -> str:
    return f"g:{account_id}:{group_key}" if group_key else f"c:{account_id}:{customer_id}"


def _preview(message_type: str, text: str) -> str:
    if message_type == MessageType.text.value:
        return text[:PREVIEW_LENGTH]
    return f"[{message_type}] {text}"[:PREVIEW_LENGTH]


def _insert(session: Session, model: type[Any]) -> Any:
    # Core statements on the table, not the ORM's bulk path: a flood is ~10x the rows an ORM flush likes.
    return dialect_insert(session, model.__table__)


# ---------------------------------------------------------------- ingestion


def ingest(session: Session, messages: Sequence[InboundMessage], *, auto_reply: bool = True) -> IngestResult:
    """Store a batch of messages exactly once and bring their conversations up to date.

    Mostly the customers' messages; a channel that also reports what was sent from the platform's
    own client (微信客服 servicers) and events (shown as system lines) hands those in the same batch,
    so the conversation's state follows the platform's order. ``auto_reply`` False: a channel Siyu
    cannot write into (a member's own chat, read from the archive) gets no automatic replies.
    """
    result = IngestResult()
    unique: dict[tuple[str, str], InboundMessage] = {}
    for message in messages:
        unique.setdefault((message.source, message.platform_msgid), message)
    result.duplicates = len(messages) - len(unique)
    if not unique:
        return result
    batch = list(unique.values())
    session.flush()  # the reads below go past the ORM (Core, for floods): its pending changes first
    customers = _resolve_customers(session, batch)
    keyed = [(m, conversation_key(m.account_id, c, m.group_key), c) for m, c in zip(batch, customers, strict=True)]
    conversation_ids = _ensure_conversations(session, keyed)

    now = utcnow()
    rows: list[dict[str, Any]] = []
    for message, key, _customer in keyed:
        text = clean_text(message.text)
        kind = message.msg_type if message.msg_type in KNOWN_TYPES else _UNKNOWN
        payload = message.payload
        if kind == _UNKNOWN:  # a copy: the connector's item stays as it came
            payload = {"original_type": message.msg_type, **(payload or {})}
        outbound = message.direction == _OUT
        sent_at = message.sent_at if message.sent_at.tzinfo is not None else message.sent_at.replace(tzinfo=UTC)
        rows.append({
            "conversation_id": conversation_ids[key], "source": message.source,
            "platform_msgid": message.platform_msgid[:128], "direction": _OUT if outbound else _IN,
            "msg_type": kind, "sender": message.sender[:128], "text": text, "payload": payload or None,
            "sent_at": sent_at, "received_at": now, "status": _SENT if outbound else _RECEIVED,
            "error": "", "automatic": False, "internal": False,
        })
    table = Message.__table__.c
    # Only the new ids come back (with the keys to find their rows): the rest is known here, and reading
    # dates and JSON back would cost as much as writing them.
    statement = (_insert(session, Message).on_conflict_do_nothing(index_elements=["source", "platform_msgid"])
                 .returning(table.id, table.source, table.platform_msgid))
    by_key: dict[tuple[str, str], dict[str, Any]] = {(row["source"], row["platform_msgid"]): row for row in rows}
    dialect_name = session.get_bind().dialect.name
    if dialect_name == "postgresql":
        returned = insert_records(session, cast(Table, Message.__table__), rows, conflict=("source", "platform_msgid"),
                                  returning=("id", "source", "platform_msgid"))
    elif dialect_name == "sqlite":
        returned = _insert_values(session, rows)
    else:
        returned = list(session.connection().execute(statement, rows).all())
    inserted = [_stored(new_id, by_key[(source, msgid)]) for new_id, source, msgid in returned]
    result.ids = {(str(source), str(msgid)): int(new_id) for new_id, source, msgid in returned}
    result.stored = len(inserted)
    result.duplicates += len(rows) - len(inserted)

    by_conversation: dict[int, list[Any]] = defaultdict(list)
    for row in inserted:
        by_conversation[row.conversation_id].append(row)
    _update_conversations(session, by_conversation, now=now)
    _record_customer_days(session, inserted, people={
        conversation_ids[key]: (customer, message.account_id) for message, key, customer in keyed
        if customer is not None and not message.group_key})
    result.conversations = sorted(by_conversation)
    account_of = {conversation_ids[key]: message.account_id for message, key, _customer in keyed}
    result.assigned = assign_waiting(session, conversation_ids=result.conversations,
                                     account_ids={account_of[c] for c in result.conversations})
    if not auto_reply or not _responders:
        return result
    stored = [StoredInbound(id=row.id, conversation_id=row.conversation_id, msg_type=row.msg_type, text=row.text,
                            sent_at=row.sent_at, payload=row.payload, account_id=account_of.get(row.conversation_id))
              for row in inserted if _from_customer(row)]
    result.auto_replies = sum(responder(session, stored) for responder in _responders)
    return result


@dataclass
class StoredInbound:
    """An inbound message just stored, as a responder (the auto-replies) needs it."""

    id: int
    conversation_id: int
    msg_type: str
    text: str
    sent_at: datetime
    payload: dict[str, Any] | None
    account_id: int | None = None  # the conversation's account, when the caller knows it (matched before any query)


# Who answers what ingestion stored, in its transaction; returns how many replies it queued.
Responder = Callable[[Session, Sequence[StoredInbound]], int]
_responders: list[Responder] = []


def on_ingested(responder: Responder) -> Responder:
    """Register a responder (``autoreply.service`` does, at import): auto-replies build on the inbox,
    so the inbox calls them through this list and never imports them."""
    if responder not in _responders:
        _responders.append(responder)
    return responder


# The message columns ingestion writes, with their PostgreSQL types.
# SQLite: the message columns bound per row; the rest are the same for every row of a batch.
_VALUES_COLUMNS = ("conversation_id", "source", "platform_msgid", "direction", "msg_type", "sender", "text",
                   "payload", "sent_at", "status")
_VALUES_CHUNK = 1000  # rows per statement: 10 parameters each, well under SQLite's 32,766 variables


def _insert_values(session: Session, rows: list[dict[str, Any]]) -> list[Any]:
    """SQLite: ``INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING`` straight to the driver, the
    values converted the way the columns' own bind processing converts them, but once per batch where a
    batch shares them: a page's messages share their time of receipt and a handful of send times
    (seconds), so each distinct date is formatted once, and the constant columns are bound once per
    statement (``?1``). Through SQLAlchemy's executemany each of the 14 values of each row went through
    its type's processor (most of a page's insert time). ``ingest`` builds every row with the same
    ``received_at`` and no error, automatic or internal flag."""
    if not rows:
        return []
    connection = session.connection()
    dialect = connection.dialect
    columns = cast(Table, Message.__table__).c
    date = columns.sent_at.type.bind_processor(dialect)
    as_json = columns.payload.type.bind_processor(dialect)
    as_bool = columns.automatic.type.bind_processor(dialect)
    dates: dict[datetime, Any] = {}

    def bound_date(value: datetime) -> Any:
        found = dates.get(value)
        if found is None:
            found = dates[value] = date(value) if date is not None else value
        return found

    false = as_bool(False) if as_bool is not None else False
    # The columns every row of the batch has alike: received_at, error, automatic, internal.
    shared = (bound_date(rows[0]["received_at"]), "", false, false)
    returned: list[Any] = []
    for start in range(0, len(rows), _VALUES_CHUNK):
        chunk = rows[start:start + _VALUES_CHUNK]
        params: list[Any] = list(shared)
        for row in chunk:
            payload = row["payload"]
            params += (row["conversation_id"], row["source"], row["platform_msgid"], row["direction"],
                       row["msg_type"], row["sender"], row["text"],
                       as_json(payload) if as_json is not None else payload, bound_date(row["sent_at"]), row["status"])
        returned += connection.exec_driver_sql(_values_sql(len(chunk)), tuple(params)).all()
    return returned


@lru_cache(maxsize=8)
def _values_sql(count: int) -> str:
    """The statement of ``_insert_values`` for ``count`` rows (the same text each page: the driver keeps
    it prepared). ``?1``–``?4`` are the batch's shared values (received_at, error, automatic, internal)."""
    width = len(_VALUES_COLUMNS)
    cells = []
    for i in range(count):
        first = 5 + i * width
        cells.append("(" + ", ".join(f"?{first + j}" for j in range(width)) + ", ?1, ?2, ?3, ?4)")
    # Only the fixed column names and numbered placeholders are put into the text; values are bound.
    return (f"INSERT INTO message ({', '.join(_VALUES_COLUMNS)}, received_at, error, automatic, internal) "  # noqa: S608
            f"VALUES {', '.join(cells)} ON CONFLICT (source, platform_msgid) DO NOTHING "
            "RETURNING id, source, platform_msgid")


class _Stored(NamedTuple):
    """A message just inserted, as the conversation update and the auto-replies need it."""

    id: int
    conversation_id: int
    sent_at: datetime
    msg_type: str
    text: str
    payload: dict[str, Any] | None
    direction: str


def _stored(new_id: int, row: dict[str, Any]) -> _Stored:
    return _Stored(id=int(new_id), conversation_id=row["conversation_id"], sent_at=row["sent_at"],
                   msg_type=row["msg_type"], text=row["text"], payload=row["payload"], direction=row["direction"])


_IN, _OUT, _SYSTEM, _UNKNOWN = Direction.inbound.value, Direction.outbound.value, MessageType.system.value, \
    MessageType.unknown.value
_SENT, _RECEIVED = DeliveryStatus.sent.value, DeliveryStatus.received.value


def _from_customer(row: Any) -> bool:
    return bool(row.direction == _IN and row.msg_type != _SYSTEM)


CUSTOMER_DAYS = "customer_day_touch"  # core.db.committed: customer-day touch keys on the timeline


def customer_day_key(customer_id: int, account_id: int, day: str) -> str:
    return f"chat-in:{customer_id}:{account_id}:{day}"


def _record_customer_days(session: Session, inserted: Sequence[Any], *, people: dict[int, tuple[int, int]]) -> None:
    """The customer's own messages on the portrait: one 私聊 touch per customer × account × local day.

    The day's touch is written by its first message (a unique key, so an INSERT … ON CONFLICT DO
    NOTHING: a retried or concurrent batch never doubles it) and counted as a contact then; later
    messages of that day are already on it. Set-based, for floods: one read of which days exist,
    one insert of the new ones, and the new contacts counted with a few statements
    (customers.service.count_new_contacts) — a batch of messages from customers who already wrote
    today costs one indexed read.
    """
    zone = local_zone()
    first: dict[str, tuple[Any, tuple[int, int]]] = {}  # the day's first message, per customer × account × day
    days: dict[datetime, str] = {}  # the local day of each quarter hour (zones change offset on quarter hours)
    for row in inserted:
        person = people.get(row.conversation_id)
        if person is None or not _from_customer(row):
            continue
        quarter = row.sent_at.replace(minute=row.sent_at.minute - row.sent_at.minute % 15, second=0, microsecond=0)
        day = days.get(quarter)
        if day is None:
            day = days[quarter] = quarter.astimezone(zone).date().isoformat()
        key = customer_day_key(person[0], person[1], day)
        current = first.get(key)
        if current is None or row.sent_at < current[0].sent_at:
            first[key] = (row, person)
    known = committed(session, CUSTOMER_DAYS)  # days already on the timeline (committed): no query for them
    first = {key: value for key, value in first.items() if key not in known}
    if not first:
        return
    touches = cast(Table, Touch.__table__).c
    existing = set(session.connection().scalars(select(touches.dedupe_key).where(
        among(session, touches.dedupe_key, sorted(first)))))
    remember_after_commit(session, CUSTOMER_DAYS, first)  # each is there once this commits
    now = utcnow()
    new_rows = [{"customer_id": customer_id, "account_id": account_id, "user_id": None, "kind": TouchKind.chat.value,
                 "content": _preview(row.msg_type, row.text), "amount": None, "dedupe_key": key,
                 "occurred_at": row.sent_at, "created_at": now,
                 "details": {"event": "customer_messages", "direction": "customer",
                             "conversation_id": row.conversation_id}}
                for key, (row, (customer_id, account_id)) in first.items() if key not in existing]
    if not new_rows:
        return
    written = insert_records(session, cast(Table, Touch.__table__), new_rows, conflict=("dedupe_key",),
                             returning=("customer_id", "occurred_at"))
    contacts: dict[int, int] = defaultdict(int)
    latest: dict[int, datetime] = {}
    for customer_id, occurred_at in written:
        contacts[customer_id] += 1
        latest[customer_id] = max(occurred_at, latest.get(customer_id, occurred_at))
    # Contacts: the count, the last touch, the stage and 沟通次数 move.
    customers_service.count_new_contacts(session, contacts=dict(contacts), last_at=latest)


def _resolve_customers(session: Session, batch: list[InboundMessage]) -> list[int | None]:
    """Customer of each private message: by id, or by WeCom external user id (created if new)."""
    external = {m.external_userid for m in batch if m.customer_id is None and m.external_userid and not m.group_key}
    known: dict[str, int] = {}
    if external:
        known = {ext: cid for cid, ext in session.execute(
            select(Customer.id, Customer.wecom_external_userid).where(
                Customer.wecom_external_userid.in_(sorted(external)))) if ext is not None}
    for message in batch:
        ext = message.external_userid
        if message.customer_id is None and ext and not message.group_key and ext not in known:
            # A message from someone we have never seen (the add event may still be on its way):
            # keep the message, and the person, rather than drop either.
            customer = Customer(name=variables.unnamed(ext), wecom_external_userid=ext, source="wecom")
            session.add(customer)
            session.flush()
            session.add(Friendship(customer_id=customer.id, account_id=message.account_id))
            known[ext] = customer.id
    session.flush()
    return [m.customer_id if m.customer_id is not None else known.get(m.external_userid) for m in batch]


def _ensure_conversations(session: Session, keyed: list[tuple[InboundMessage, str, int | None]]) -> dict[str, int]:
    keys = sorted({key for _m, key, _c in keyed})
    columns = cast(Table, Conversation.__table__).c
    found: dict[str, int] = {key: cid for key, cid in session.connection().execute(
        select(columns.key, columns.id).where(among(session, columns.key, keys)))}
    missing: dict[str, dict[str, Any]] = {}
    new_customers = [c for _m, k, c in keyed if c is not None and k not in found]
    levels = _priorities(session, new_customers)
    first_seen: dict[str, datetime] = {}
    for message, key, _customer in keyed:
        if key not in first_seen or message.sent_at < first_seen[key]:
            first_seen[key] = message.sent_at
    kinds: dict[int, str] = {}
    if any(key not in found for _m, key, _c in keyed):
        kinds = {aid: kind for aid, kind in session.execute(select(Account.id, Account.kind).where(
            Account.id.in_(sorted({m.account_id for m, key, _c in keyed if key not in found}))))}
    for message, key, customer_id in keyed:
        if key in found or key in missing:
            continue
        missing[key] = {"key": key, "account_id": message.account_id, "customer_id": customer_id,
                        "channel": message.channel or channel_of(kinds.get(message.account_id, "")),
                        "group_key": message.group_key, "status": ConversationStatus.open.value,
                        "unanswered": 0, "priority": levels.get(customer_id or 0, 0),
                        # Opened when the customer wrote, so response times measure their wait.
                        "last_message_preview": "", "opened_at": first_seen[key], "created_at": utcnow()}
    if missing:
        # Another worker may create the same conversation at the same moment: the key decides, and the
        # ones it created (not returned here) are read back.
        found.update({str(key): int(cid) for cid, key in insert_records(
            session, cast(Table, Conversation.__table__), list(missing.values()), conflict=("key",),
            returning=("id", "key"))})
        raced = sorted(key for key in missing if key not in found)
        if raced:
            found.update({key: cid for key, cid in session.connection().execute(
                select(columns.key, columns.id).where(among(session, columns.key, raced)))})
    return found


def channel_of(account_kind: str) -> str:
    """The channel of a conversation on an account of this kind (when the connector names none)."""
    return {AccountKind.wecom_kf.value: Channel.wecom_kf.value, AccountKind.mp.value: Channel.mp.value,
            AccountKind.wecom.value: Channel.wecom_archive.value}.get(account_kind, Channel.personal.value)


def _priorities(session: Session, customer_ids: list[int]) -> dict[int, int]:
    """Higher customer levels are served first: the level's rank in the lifecycle rules."""
    if not customer_ids:
        return {}
    rules = customers_service.get_rules(session)
    rank = {level.label: i for i, level in enumerate(sorted(rules.levels, key=lambda lv: lv.min_total))}
    customer = cast(Table, Customer.__table__).c
    rows = session.connection().execute(select(customer.id, customer.level).where(
        among(session, customer.id, sorted(set(customer_ids)))))
    return {cid: rank.get(level, 0) for cid, level in rows}


def _update_conversations(session: Session, by_conversation: dict[int, list[Any]], *, now: datetime) -> None:
    """Every touched conversation moved by one set-based UPDATE per 1,000, computed by the database
    from the batch's figures and the row's current values (nothing is read first); reopening (rare)
    goes through the ORM afterwards.

    Per conversation the batch gives: how many customer messages, the first and last of them, the
    last answer a person sent from the platform's own client, and the latest message with its preview.
    """
    if not by_conversation:
        return
    figures: list[dict[str, Any]] = []
    for conversation_id, rows in by_conversation.items():
        latest = max(rows, key=lambda r: r.sent_at)
        customer = [r.sent_at for r in rows if _from_customer(r)]
        figures.append({
            "id": conversation_id, "n_in": len(customer), "first_in": min(customer, default=None),
            "last_in": max(customer, default=None),
            "answered": max((r.sent_at for r in rows if r.direction == _OUT), default=None),
            "latest_at": latest.sent_at, "preview": _preview(latest.msg_type, latest.text)})
    session.flush()  # the ORM's pending changes first: the UPDATE below goes past it
    reopened: list[int] = []
    for start in range(0, len(figures), _UPDATE_CHUNK):
        chunk = figures[start:start + _UPDATE_CHUNK]
        returned = _update_chunk(session, chunk)
        waiting = {f["id"] for f in chunk if f["n_in"]}
        reopened += [cid for cid, status in returned if cid in waiting and status != ConversationStatus.open.value]
    for conversation in session.scalars(select(Conversation).where(Conversation.id.in_(reopened))) if reopened else ():
        session.refresh(conversation)
        _reopen(session, conversation, now=min(r.sent_at for r in by_conversation[conversation.id]))
    session.flush()


# The batch's figures per conversation, as the VALUES list of the UPDATE (their SQL types).
_FIGURES = (("id", "INTEGER"), ("n_in", "INTEGER"), ("first_in", "TIMESTAMP"), ("last_in", "TIMESTAMP"),
            ("answered", "TIMESTAMP"), ("latest_at", "TIMESTAMP"), ("preview", "TEXT"))
_UPDATE_CHUNK = 1000  # rows per statement: 7 parameters each, well under SQLite's 32,766 variables
# The rules of the former per-row Python, in SQL; "c" is the row as it was, "v" the batch's figures.
# A person's answer from the platform's own client (v.answered) at or after the customer's last
# message (this batch's or the row's) stops the wait.
_LAST_IN = ("CASE WHEN v.last_in IS NULL THEN c.last_inbound_at WHEN c.last_inbound_at IS NULL THEN v.last_in "
            "WHEN v.last_in > c.last_inbound_at THEN v.last_in ELSE c.last_inbound_at END")
_ANSWERED = f"(v.answered IS NOT NULL AND ({_LAST_IN} IS NULL OR v.answered >= {_LAST_IN}))"
_NEWER = "(c.last_message_at IS NULL OR v.latest_at >= c.last_message_at)"
_SETS = {
    "unanswered": f"CASE WHEN {_ANSWERED} THEN 0 ELSE c.unanswered + v.n_in END",
    "waiting_since": f"CASE WHEN {_ANSWERED} THEN NULL WHEN v.n_in > 0 AND (c.waiting_since IS NULL OR "
                     "v.first_in < c.waiting_since) THEN v.first_in ELSE c.waiting_since END",
    "last_inbound_at": _LAST_IN,
    "first_response_at": "COALESCE(c.first_response_at, v.answered)",
    "last_message_at": f"CASE WHEN {_NEWER} THEN v.latest_at ELSE c.last_message_at END",
    "last_message_preview": f"CASE WHEN {_NEWER} THEN v.preview ELSE c.last_message_preview END",
    # 微信客服: a customer writing after the session ended opens a new one on the platform (W:94669).
    "service_state": f"CASE WHEN c.service_state = {ServiceState.ended} AND v.n_in > 0 "
                     f"THEN {ServiceState.untouched} ELSE c.service_state END",
}


def _update_chunk(session: Session, chunk: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The chunk's conversations moved by ``_SETS`` (``core.db.update_from_values``); each row's id and status."""
    return [(int(cid), str(status)) for cid, status in update_from_values(
        session, cast(Table, Conversation.__table__), chunk, figures=_FIGURES, sets=_SETS,
        returning=("id", "status"))]


def _reopen(session: Session, conversation: Conversation, *, now: datetime) -> None:
    conversation.status = ConversationStatus.open.value
    conversation.snoozed_until = None
    conversation.resolved_at = None
    conversation.opened_at = now
    conversation.first_response_at = None
    conversation.sla_alerted_at = None
    if conversation.assignee_id is not None and not _is_online(session, conversation.assignee_id):
        conversation.assignee_id = None  # never route a reopened conversation to someone who is away
        conversation.assigned_at = None


# ---------------------------------------------------------------- agents and assignment


def _agent_states(session: Session, user_ids: Iterable[int]) -> dict[int, AgentState]:
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    return {a.user_id: a for a in session.scalars(select(AgentState).where(AgentState.user_id.in_(ids)))}


def _is_online(session: Session, user_id: int) -> bool:
    state = session.get(AgentState, user_id)
    return bool(state and state.online)


def agent_state(session: Session, *, user_id: int) -> AgentState:
    state = session.get(AgentState, user_id)
    if state is None:
        state = AgentState(user_id=user_id, online=False)
        session.add(state)
        session.flush()
    return state


def set_online(session: Session, *, user_id: int, online: bool) -> int:
    """Go online (take conversations) or away (hand back every open one). Returns how many moved."""
    state = agent_state(session, user_id=user_id)
    state.online = online
    state.changed_at = utcnow()
    session.flush()
    if online:
        return assign_waiting(session, account_ids=_agent_accounts(session, user_id))
    handed_back = list(session.scalars(select(Conversation.id).where(
        Conversation.assignee_id == user_id, Conversation.status == ConversationStatus.open.value)))
    if handed_back:
        session.execute(update(Conversation).where(Conversation.id.in_(handed_back))
                        .values(assignee_id=None, assigned_at=None))
        session.flush()
        assign_waiting(session, conversation_ids=handed_back)
    return len(handed_back)


def set_capacity(session: Session, *, user_id: int, capacity: int) -> None:
    if not 0 <= capacity <= 500:
        raise Invalid("Capacity must be between 0 and 500", field="capacity")
    agent_state(session, user_id=user_id).capacity = capacity
    session.flush()
    assign_waiting(session, account_ids=_agent_accounts(session, user_id))


def _agent_accounts(session: Session, user_id: int) -> set[int]:
    return set(session.scalars(select(UserAccount.account_id).where(UserAccount.user_id == user_id)))


def _loads(session: Session, user_ids: list[int]) -> dict[int, int]:
    if not user_ids:
        return {}
    rows = session.execute(select(Conversation.assignee_id, func.count()).where(
        Conversation.assignee_id.in_(user_ids), Conversation.status == ConversationStatus.open.value)
        .group_by(Conversation.assignee_id))
    loads = {user_id: 0 for user_id in user_ids}
    loads.update({user_id: count for user_id, count in rows if user_id is not None})
    return loads


def assign_waiting(session: Session, *, conversation_ids: Sequence[int] | None = None,
                   account_ids: Iterable[int] | None = None, limit: int = 1000) -> int:
    """Give unassigned open conversations to online agents of their account: round robin under capacity.

    Highest priority first, then longest waiting. Returns how many were assigned. Agents
    with free capacity are found first, so a flood with everyone busy costs two small queries.
    ``conversation_ids`` with ``account_ids``: only these conversations, which belong to these accounts.
    """
    waiting_clause = and_(Conversation.status == ConversationStatus.open.value, Conversation.assignee_id.is_(None))
    if conversation_ids is not None and account_ids is not None:
        # The caller knows the conversations' accounts (ingest): agents first, the conversations only if one
        # of those accounts has an agent with room — a flood with everyone busy reads no conversation here.
        if not conversation_ids:
            return 0
        accounts = set(account_ids)
    elif conversation_ids is not None:
        if not conversation_ids:
            return 0
        # By primary key only, the rest filtered here: a plan that cannot go wrong when the statistics lag a
        # flood (PostgreSQL, told that few conversations wait, scanned the waiting ones against the list).
        c = cast(Table, Conversation.__table__).c
        session.flush()
        accounts = {account_id for account_id, status, assignee_id in session.connection().execute(
            select(c.account_id, c.status, c.assignee_id).where(among(session, c.id, sorted(conversation_ids))))
            if status == ConversationStatus.open.value and assignee_id is None}
    elif account_ids is not None:
        accounts = set(account_ids)
    else:
        accounts = set(session.scalars(select(Conversation.account_id).where(waiting_clause).distinct()))
    if not accounts:
        return 0
    agents_by_account: dict[int, list[int]] = defaultdict(list)
    for user_id, account_id in session.execute(
        select(UserAccount.user_id, UserAccount.account_id)
        .join(User, User.id == UserAccount.user_id).join(AgentState, AgentState.user_id == UserAccount.user_id)
        .where(UserAccount.account_id.in_(sorted(accounts)), AgentState.online.is_(True), User.is_active.is_(True),
               User.role.in_(AGENT_ROLES))
    ):
        agents_by_account[account_id].append(user_id)
    agent_ids = sorted({u for users in agents_by_account.values() for u in users})
    states = _agent_states(session, agent_ids)
    loads = _loads(session, agent_ids)
    free = {u: states[u].capacity - loads[u] for u in agent_ids if loads[u] < states[u].capacity}
    open_accounts = sorted(a for a, users in agents_by_account.items() if any(u in free for u in users))
    if not open_accounts:
        return 0
    query = select(Conversation).where(waiting_clause, Conversation.account_id.in_(open_accounts))
    if conversation_ids is not None:
        query = query.where(Conversation.id.in_(sorted(conversation_ids)))
    waiting = list(session.scalars(query.order_by(
        Conversation.priority.desc(), Conversation.waiting_since.asc().nulls_last(), Conversation.id,
    ).limit(min(limit, sum(free.values())))))
    now = utcnow()
    assigned = 0
    for conversation in waiting:
        candidates = [u for u in agents_by_account.get(conversation.account_id, []) if loads[u] < states[u].capacity]
        if not candidates:
            continue
        # Round robin: the agent who was given a conversation longest ago goes next.
        chosen = min(candidates, key=lambda u: (states[u].last_assigned_at or datetime.min.replace(tzinfo=now.tzinfo),
                                                loads[u], u))
        conversation.assignee_id = chosen
        conversation.assigned_at = now
        states[chosen].last_assigned_at = now
        loads[chosen] += 1
        now = now + timedelta(microseconds=1)  # keeps the rotation strict inside one batch
        assigned += 1
    session.flush()
    return assigned


# ---------------------------------------------------------------- conversation actions


def visible_conversations(viewer: Viewer) -> Any:
    if viewer.sees_all_accounts:
        return None
    return Conversation.account_id.in_(sorted(viewer.account_ids))


def get_conversation(session: Session, *, conversation_id: int, viewer: Viewer) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or not viewer.can_see_account(conversation.account_id):
        raise ConversationNotFound("Conversation not found")
    return conversation


def _touch(session: Session, conversation: Conversation, *, viewer: Viewer, event: str, content: str = "",
           kind: TouchKind = TouchKind.system) -> None:
    if conversation.customer_id is None:
        return
    session.add(Touch(customer_id=conversation.customer_id, account_id=conversation.account_id,
                      user_id=viewer.user_id, kind=kind.value, content=content[:2000],
                      details={"event": event, "conversation_id": conversation.id}))
    if kind in CONTACT_KINDS:  # a reply is two-way contact: the ladder and last touch move
        customer = session.get(Customer, conversation.customer_id)
        if customer is not None:
            customers_service.refresh_computed(session, customer=customer)


def reply(session: Session, *, conversation_id: int, text: str, viewer: Viewer, internal: bool = False,
          automatic: bool = False, member_send: bool = False) -> Message:
    """An agent's reply (queued for the connector) or internal note (never sent).

    A WeCom member's own chat (channel ``wecom_archive``, read from the chat archive) is read-only:
    no server API writes into it. Only ``member_send`` — a one-customer mass send the member confirms
    in WeCom (需成员确认的群发, counted against the customer's monthly mass-send quota) — goes out, for
    corrections; everyday answers go from the chat toolbar's sidebar into the open chat.
    """
    conversation = get_conversation(session, conversation_id=conversation_id, viewer=viewer)
    body = clean_text(text).strip()
    if not body:
        raise Invalid("Write something first", field="text")
    if not internal and not member_send and conversation.channel == Channel.wecom_archive.value:
        raise Invalid(READ_ONLY, field="text")
    if not internal:
        channel_hooks.check_reply(session, conversation)  # the channel's window: refused now, not in the job
    now = utcnow()
    message = Message(conversation_id=conversation.id, source="console", platform_msgid=f"out:{conversation.id}:"
                      f"{now.timestamp():.6f}:{viewer.user_id or 0}", direction=Direction.outbound.value,
                      msg_type=MessageType.text.value, sender=viewer.username, text=body, sent_at=now,
                      status=DeliveryStatus.sent.value if internal else DeliveryStatus.queued.value,
                      author_id=viewer.user_id, automatic=automatic, internal=internal)
    session.add(message)
    if not internal:
        # Not answered yet: the customer keeps waiting (and the SLA clock runs) until the platform
        # accepts the reply (reply_accepted); a reply that fails never counts as handled.
        conversation.last_message_at = now
        conversation.last_message_preview = _preview(MessageType.text.value, body)
        if conversation.assignee_id is None and viewer.user_id is not None and not automatic:
            conversation.assignee_id, conversation.assigned_at = viewer.user_id, now
            channel_hooks.taken(session, conversation)
    session.flush()
    if not internal:
        send_after_commit(session, message.id)
    return message


# Automatic messages that greet rather than answer (微信客服's welcome on entering a session).
NOT_ANSWERS = ("kf_welcome",)


def _answers(message: Message) -> bool:
    """A person's reply (or a correction) answers the customer; a rule's automatic reply or a welcome does not."""
    return (message.direction == Direction.outbound.value and not message.internal
            and message.rule_version_id is None and message.source not in NOT_ANSWERS)


def reply_touch_key(message_id: int) -> str:
    return f"reply:{message_id}"


def reply_accepted(session: Session, *, message: Message) -> None:
    """The platform took a reply: what the customer wrote before it is answered, the first response
    is taken, and the timeline records the 私聊 (the contact count and last touch move)."""
    if not _answers(message):
        return
    # Fresh from the database: ingestion updates conversations with plain UPDATEs.
    conversation = session.get(Conversation, message.conversation_id, populate_existing=True)
    if conversation is None:
        return
    now = utcnow()
    if conversation.waiting_since is not None and conversation.waiting_since <= message.sent_at:
        # What arrived while the reply was on its way is still waiting.
        later, since = session.execute(select(func.count(), func.min(Message.sent_at)).where(
            Message.conversation_id == conversation.id, Message.direction == Direction.inbound.value,
            Message.msg_type != MessageType.system.value, Message.sent_at > message.sent_at)).one()
        conversation.unanswered = int(later or 0)
        conversation.waiting_since = _aware(since) if later else None
    if conversation.first_response_at is None:
        conversation.first_response_at = now
    if conversation.customer_id is not None and session.scalar(
            select(Touch.id).where(Touch.dedupe_key == reply_touch_key(message.id))) is None:
        session.add(Touch(customer_id=conversation.customer_id, account_id=conversation.account_id,
                          user_id=message.author_id, kind=TouchKind.chat.value, content=message.text[:2000],
                          occurred_at=now, dedupe_key=reply_touch_key(message.id),
                          details={"event": "reply", "conversation_id": conversation.id, "message_id": message.id}))
        customer = session.get(Customer, conversation.customer_id)
        if customer is not None:
            customers_service.refresh_computed(session, customer=customer)
    session.flush()


def reply_failed(session: Session, *, message: Message) -> None:
    """A reply the platform had accepted did not reach the customer after all (e.g. the member never
    sent WeCom's mass-send task): the conversation is unanswered again and its touch is taken back."""
    if not _answers(message):
        return
    conversation = session.get(Conversation, message.conversation_id, populate_existing=True)
    if conversation is None:
        return
    touch = session.scalar(select(Touch).where(Touch.dedupe_key == reply_touch_key(message.id)))
    if touch is not None:
        session.delete(touch)
    answered = [Message.conversation_id == conversation.id, Message.direction == Direction.outbound.value,
                Message.internal.is_(False), Message.rule_version_id.is_(None), Message.id != message.id,
                Message.status.in_((DeliveryStatus.sent.value, DeliveryStatus.delivered.value)),
                Message.sent_at >= conversation.opened_at]
    last_answer = _aware(session.scalar(select(func.max(Message.sent_at)).where(*answered)))
    if last_answer is None:
        conversation.first_response_at = None
    if conversation.status != ConversationStatus.resolved.value:
        waiting = [Message.conversation_id == conversation.id, Message.direction == Direction.inbound.value,
                   Message.msg_type != MessageType.system.value, Message.sent_at >= conversation.opened_at]
        if last_answer is not None:
            waiting.append(Message.sent_at > last_answer)
        count, since = session.execute(select(func.count(), func.min(Message.sent_at)).where(*waiting)).one()
        conversation.unanswered = int(count or 0)
        conversation.waiting_since = _aware(since) if count else None
    session.flush()
    if conversation.customer_id is not None:
        customer = session.get(Customer, conversation.customer_id)
        if customer is not None:
            customers_service.refresh_computed(session, customer=customer)


def _aware(value: Any) -> datetime | None:
    """An aggregate's datetime (SQLite hands back text without a time zone) as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return cast(datetime, value) if value.tzinfo else value.replace(tzinfo=UTC)


def retry_reply(session: Session, *, message_id: int, viewer: Viewer, conversation_id: int | None = None) -> Message:
    """Send a failed reply again: a new attempt of the same message through the delivery job."""
    message = session.get(Message, message_id)
    if message is None or (conversation_id is not None and message.conversation_id != conversation_id):
        raise NotFound("Message not found")
    get_conversation(session, conversation_id=message.conversation_id, viewer=viewer)
    if message.direction != Direction.outbound.value or message.internal:
        raise Invalid("Only a message to the customer can be sent again")
    if message.status != DeliveryStatus.failed.value:
        raise Invalid("Only a message that failed can be sent again")
    message.status = DeliveryStatus.queued.value
    message.error = ""
    message.payload = {**(message.payload or {}), "retried_by": viewer.user_id, "retried_at": utcnow().isoformat()}
    session.flush()
    send_after_commit(session, message.id)
    return message


def send_after_commit(session: Session, message_id: int) -> None:
    """Deliver an outbound message through its account's connector once this transaction commits."""
    from siyu.core import jobs

    jobs.enqueue_after_commit(session, "inbox.jobs.deliver_message", message_id)


def change_status(session: Session, *, conversation_id: int, status: str, viewer: Viewer,
                  snooze_until: datetime | None = None) -> Conversation:
    conversation = get_conversation(session, conversation_id=conversation_id, viewer=viewer)
    if status not in {s.value for s in ConversationStatus}:
        raise Invalid("Unknown status {status}", field="status", status=status)
    now = utcnow()
    if status == ConversationStatus.snoozed.value:
        if snooze_until is None or snooze_until <= now:
            raise Invalid("Choose a time in the future to snooze until", field="snooze_until")
        conversation.snoozed_until = snooze_until
    previous_assignee = conversation.assignee_id
    if status == ConversationStatus.open.value and conversation.status != status:
        _reopen(session, conversation, now=now)
    conversation.status = status
    if status == ConversationStatus.resolved.value:
        conversation.resolved_at = now
        conversation.waiting_since = None
        conversation.unanswered = 0
    _touch(session, conversation, viewer=viewer, event=f"conversation_{status}")
    session.flush()
    if previous_assignee is not None and status != ConversationStatus.open.value:
        # The agent's load dropped: the longest-waiting conversation of their accounts is theirs now.
        assign_waiting(session, account_ids=_agent_accounts(session, previous_assignee))
    elif status == ConversationStatus.open.value:
        assign_waiting(session, conversation_ids=[conversation.id])
    return conversation


def transfer(session: Session, *, conversation_id: int, to_user_id: int | None, viewer: Viewer) -> Conversation:
    conversation = get_conversation(session, conversation_id=conversation_id, viewer=viewer)
    previous = conversation.assignee_id
    if to_user_id is not None:
        target = session.get(User, to_user_id)
        if target is None or not target.is_active:
            raise Invalid("No such colleague", field="assignee_id")
        sees_all = Role(target.role).sees_all_accounts
        if not sees_all and conversation.account_id not in target.account_ids:
            raise Forbidden("That colleague does not work on this account")
    conversation.assignee_id = to_user_id
    conversation.assigned_at = utcnow() if to_user_id else None
    if to_user_id is not None and to_user_id != previous:
        channel_hooks.taken(session, conversation)
    _touch(session, conversation, viewer=viewer, event="conversation_transferred")
    session.flush()
    if previous is not None and previous != to_user_id:
        assign_waiting(session, account_ids=_agent_accounts(session, previous))
    if to_user_id is None:
        assign_waiting(session, conversation_ids=[conversation.id])
    return conversation


def wake_snoozed(session: Session, *, now: datetime | None = None) -> int:
    """Snoozed conversations whose time has come are open again (periodic)."""
    now = now or utcnow()
    due = list(session.scalars(select(Conversation).where(
        Conversation.status == ConversationStatus.snoozed.value, Conversation.snoozed_until <= now)))
    for conversation in due:
        _reopen(session, conversation, now=now)
    session.flush()
    if due:
        assign_waiting(session, conversation_ids=[c.id for c in due])
    return len(due)


# ---------------------------------------------------------------- SLA


def service_level(session: Session, account_id: int) -> ServiceLevel:
    return session.get(ServiceLevel, account_id) or ServiceLevel(
        account_id=account_id, first_response_minutes=DEFAULT_FIRST_RESPONSE_MINUTES,
        resolution_minutes=DEFAULT_RESOLUTION_MINUTES)


def breached(conversation: Conversation, level: ServiceLevel, *, now: datetime) -> str | None:
    """Which target this conversation has missed: "first_response", "resolution" or None."""
    if conversation.status != ConversationStatus.open.value:
        return None
    if conversation.waiting_since is not None and conversation.first_response_at is None and (
            now - conversation.waiting_since > timedelta(minutes=level.first_response_minutes)):
        return "first_response"
    if now - conversation.opened_at > timedelta(minutes=level.resolution_minutes):
        return "resolution"
    return None


def sweep_sla(session: Session, *, now: datetime | None = None) -> list[int]:
    """Mark newly breached conversations (once each); returns their ids for the alert."""
    now = now or utcnow()
    levels = {lv.account_id: lv for lv in session.scalars(select(ServiceLevel))}
    fastest = min([lv.first_response_minutes for lv in levels.values()] + [DEFAULT_FIRST_RESPONSE_MINUTES])
    candidates = session.scalars(select(Conversation).where(
        Conversation.status == ConversationStatus.open.value, Conversation.sla_alerted_at.is_(None),
        or_(Conversation.waiting_since < now - timedelta(minutes=fastest),
            Conversation.opened_at < now - timedelta(minutes=fastest))))
    alerted = []
    for conversation in candidates:
        level = levels.get(conversation.account_id) or service_level(session, conversation.account_id)
        if breached(conversation, level, now=now):
            conversation.sla_alerted_at = now
            alerted.append(conversation.id)
    session.flush()
    return alerted


# ---------------------------------------------------------------- the queue


QUEUE_VIEWS = ("unanswered", "mine", "open", "pending", "snoozed", "resolved", "all")


@dataclass
class QueueFilter:
    """Which conversations: the queue, its count, and bulk actions all read the same filter."""

    view: str = "unanswered"
    account_id: int | None = None
    assignee_id: int | None = None
    channel: str | None = None  # wecom_kf, mp, wecom_archive, personal
    q: str = ""  # customer name, remark name on the account, or the last message contains it
    asked: str = ""  # a message the customer is still waiting on contains it ("everyone who asked 发货")
    tag: str = ""  # the customer has this tag (组:标签 or a unique tag name)
    level: str = ""  # the customer's level (等级)
    ids: tuple[int, ...] = ()  # a selection of conversations

    def to_json(self) -> dict[str, Any]:
        return {"view": self.view, "account_id": self.account_id, "channel": self.channel, "q": self.q,
                "asked": self.asked, "tag": self.tag, "level": self.level, "ids": list(self.ids)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueueFilter:
        return cls(view=str(data.get("view", "unanswered")), account_id=data.get("account_id"),
                   channel=data.get("channel") or None, q=str(data.get("q", "")), asked=str(data.get("asked", "")),
                   tag=str(data.get("tag", "")), level=str(data.get("level", "")),
                   ids=tuple(int(i) for i in data.get("ids") or ()))


MAX_SELECTION = 1000
SEARCH_MAX = 64


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _narrowing(session: Session, flt: QueueFilter) -> list[Any]:
    """The search, keyword, tag, level and selection parts of a filter, as WHERE clauses."""
    clauses: list[Any] = []
    q, asked = flt.q.strip()[:SEARCH_MAX], flt.asked.strip()[:SEARCH_MAX]
    if q:
        pattern = _like(q)
        clauses.append(or_(
            Conversation.last_message_preview.like(pattern, escape="\\"),
            Conversation.customer_id.in_(select(Customer.id).where(Customer.name.like(pattern, escape="\\"))),
            Conversation.customer_id.in_(select(Friendship.customer_id).where(
                Friendship.account_id == Conversation.account_id,
                Friendship.remark_name.like(pattern, escape="\\")))))
    if asked:
        clauses.append(Conversation.waiting_since.is_not(None))
        clauses.append(select(Message.id).where(
            Message.conversation_id == Conversation.id, Message.direction == Direction.inbound.value,
            Message.sent_at >= Conversation.waiting_since, Message.text.like(_like(asked), escape="\\")).exists())
    if flt.tag.strip():
        (tag,) = customers_service.resolve_tags(session, names=[flt.tag.strip()], create_missing=False)
        clauses.append(Conversation.customer_id.in_(select(CustomerTag.customer_id).where(
            CustomerTag.tag_id == tag.id)))
    if flt.level.strip():
        clauses.append(Conversation.customer_id.in_(select(Customer.id).where(Customer.level == flt.level.strip())))
    if flt.ids:
        if len(flt.ids) > MAX_SELECTION:
            raise Invalid("Select at most {n} conversations", field="ids", n=MAX_SELECTION)
        clauses.append(Conversation.id.in_(sorted(set(flt.ids))))
    return clauses


def list_queue(session: Session, *, flt: QueueFilter, viewer: Viewer, limit: int = 50,
               cursor: str | None = None) -> Page[Conversation]:
    """Conversations of one view, keyset-paged; the unanswered view is longest waiting first."""
    if flt.view not in QUEUE_VIEWS:
        raise Invalid("Unknown view {view}", field="view", view=flt.view)
    _check_channel(flt)
    query = select(Conversation)
    if flt.channel:
        query = query.where(Conversation.channel == flt.channel)
    scope = visible_conversations(viewer)
    if scope is not None:
        query = query.where(scope)
    if flt.account_id is not None:
        if not viewer.can_see_account(flt.account_id):
            raise Invalid("Account {account_id} not found", field="account_id", account_id=flt.account_id)
        query = query.where(Conversation.account_id == flt.account_id)
    if flt.assignee_id is not None:
        query = query.where(Conversation.assignee_id == flt.assignee_id)
    query = query.where(*_narrowing(session, flt))
    if flt.view == "unanswered":
        query = query.where(Conversation.status == ConversationStatus.open.value,
                            Conversation.waiting_since.is_not(None))
        order_column = Conversation.waiting_since
        ascending = True
    else:
        if flt.view == "mine":
            query = query.where(Conversation.assignee_id == viewer.user_id,
                                Conversation.status == ConversationStatus.open.value)
        elif flt.view != "all":
            query = query.where(Conversation.status == flt.view)
        order_column = Conversation.last_message_at
        ascending = False
    if cursor:
        values = decode_cursor(cursor)
        if len(values) != 2:
            raise Invalid("Invalid cursor", field="cursor")
        try:
            at, last_id = datetime.fromisoformat(values[0]), int(values[1])
        except (TypeError, ValueError) as exc:
            raise Invalid("Invalid cursor", field="cursor") from exc
        query = query.where(
            or_(order_column > at, and_(order_column == at, Conversation.id > last_id)) if ascending
            else or_(order_column < at, and_(order_column == at, Conversation.id < last_id)))
    if ascending:
        query = query.order_by(order_column.asc(), Conversation.id.asc())
    else:
        query = query.where(order_column.is_not(None)).order_by(order_column.desc(), Conversation.id.desc())
    rows = list(session.scalars(query.limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        value = last.waiting_since if ascending else last.last_message_at
        next_cursor = encode_cursor([value.isoformat() if value else None, last.id])
    return Page(items=rows[:limit], next_cursor=next_cursor)


def _check_channel(flt: QueueFilter) -> None:
    if flt.channel and flt.channel not in {c.value for c in Channel}:
        raise Invalid("Unknown channel {channel}", field="channel", channel=flt.channel)


def queue_counts(session: Session, *, viewer: Viewer) -> dict[str, int]:
    query = select(Conversation.status, func.count()).group_by(Conversation.status)
    scope = visible_conversations(viewer)
    if scope is not None:
        query = query.where(scope)
    counts = {status: count for status, count in session.execute(query)}
    waiting = select(func.count()).select_from(Conversation).where(
        Conversation.status == ConversationStatus.open.value, Conversation.waiting_since.is_not(None))
    mine = select(func.count()).select_from(Conversation).where(
        Conversation.status == ConversationStatus.open.value, Conversation.assignee_id == viewer.user_id)
    if scope is not None:
        waiting, mine = waiting.where(scope), mine.where(scope)
    counts["unanswered"] = int(session.scalar(waiting) or 0)
    counts["mine"] = int(session.scalar(mine) or 0)
    return counts


def messages_of(session: Session, *, conversation: Conversation, limit: int = 100) -> list[Message]:
    """The latest messages in platform order (oldest first on screen)."""
    rows = list(session.scalars(select(Message).where(Message.conversation_id == conversation.id)
                                .order_by(Message.sent_at.desc(), Message.id.desc()).limit(limit)))
    return rows[::-1]


# ---------------------------------------------------------------- canned replies


def canned_replies(session: Session, *, account_id: int | None) -> list[CannedReply]:
    query = select(CannedReply).order_by(CannedReply.shortcut)
    if account_id is not None:
        query = query.where(or_(CannedReply.account_id.is_(None), CannedReply.account_id == account_id))
    return list(session.scalars(query))


def render_canned(session: Session, *, reply: CannedReply, conversation: Conversation) -> str:
    return fill_variables(session, text=reply.body, conversation=conversation)


def fill_variables(session: Session, *, text: str, conversation: Conversation) -> str:
    """A text for this conversation's customer with its customer-safe variables filled (customers.variables)."""
    if "{" not in text:  # nothing to fill: no lookups
        return text
    return variables.fill(session, text, customer_id=conversation.customer_id, account_id=conversation.account_id)


# ---------------------------------------------------------------- bulk actions on a filter


BULK_ACTIONS = ("assign", "resolve", "reply", "tag")


def _filtered(session: Session, flt: QueueFilter, viewer: Viewer) -> Any:
    """The queue filter as a plain query on ids (bulk actions walk it by id, not by the page order)."""
    query = select(Conversation.id)
    scope = visible_conversations(viewer)
    if scope is not None:
        query = query.where(scope)
    if flt.account_id is not None:
        query = query.where(Conversation.account_id == flt.account_id)
    query = query.where(*_narrowing(session, flt))
    if flt.channel:
        query = query.where(Conversation.channel == flt.channel)
    if flt.view == "unanswered":
        query = query.where(Conversation.status == ConversationStatus.open.value,
                            Conversation.waiting_since.is_not(None))
    elif flt.view == "mine":
        query = query.where(Conversation.assignee_id == viewer.user_id,
                            Conversation.status == ConversationStatus.open.value)
    elif flt.view != "all":
        query = query.where(Conversation.status == flt.view)
    return query


def count_matching(session: Session, *, flt: QueueFilter, viewer: Viewer) -> int:
    if flt.view not in QUEUE_VIEWS:
        raise Invalid("Unknown view {view}", field="view", view=flt.view)
    _check_channel(flt)
    return int(session.scalar(select(func.count()).select_from(_filtered(session, flt, viewer).subquery())) or 0)


def matching_ids(session: Session, *, flt: QueueFilter, viewer: Viewer, after_id: int, limit: int) -> list[int]:
    query = _filtered(session, flt, viewer).where(Conversation.id > after_id).order_by(Conversation.id).limit(limit)
    return list(session.scalars(query))


def validate_bulk(session: Session, *, action: str, args: dict[str, Any]) -> None:
    if action not in BULK_ACTIONS:
        raise Invalid("Unknown bulk action {action}", field="action", action=action)
    if action == "reply" and not str(args.get("text", "")).strip():
        raise Invalid("Write something first", field="text")
    if action == "reply":
        variables.check_outgoing(str(args["text"]), field="text")
    if action == "tag" and not args.get("tags"):
        raise Invalid("Choose at least one tag", field="tags")
    if action == "assign" and args.get("assignee_id") is not None:
        target = session.get(User, args["assignee_id"])
        if target is None or not target.is_active:
            raise Invalid("No such colleague", field="assignee_id")


def apply_bulk(session: Session, *, conversation_ids: list[int], action: str, args: dict[str, Any],
               viewer: Viewer) -> dict[str, int]:
    """One chunk of a bulk action; returns counts. Conversations that refuse (e.g. a colleague who
    does not work on that account) are counted as skipped, not fatal."""
    changed = skipped = 0
    for conversation_id in conversation_ids:
        try:
            with session.begin_nested():
                if action == "assign":
                    transfer(session, conversation_id=conversation_id, to_user_id=args.get("assignee_id"),
                             viewer=viewer)
                elif action == "resolve":
                    change_status(session, conversation_id=conversation_id, status="resolved", viewer=viewer)
                elif action == "reply":
                    conversation = get_conversation(session, conversation_id=conversation_id, viewer=viewer)
                    text = fill_variables(session, text=str(args["text"]), conversation=conversation)
                    # a mass send: in a member's own chat, one the member confirms (需成员确认的群发)
                    reply(session, conversation_id=conversation_id, text=text, viewer=viewer, member_send=True)
                elif action == "tag":
                    conversation = get_conversation(session, conversation_id=conversation_id, viewer=viewer)
                    if conversation.customer_id is None:
                        raise Invalid("Group chats have no customer to tag")
                    tags = customers_service.resolve_tags(session, names=list(args["tags"]))
                    customers_service.set_customer_tags(session, customer_id=conversation.customer_id, add=tags,
                                                        remove=[], viewer=viewer)
            changed += 1
        except (Invalid, Forbidden, NotFound):
            skipped += 1
    return {"changed": changed, "skipped": skipped}


def save_canned(session: Session, *, shortcut: str, title: str, body: str, account_id: int | None,
                viewer: Viewer) -> CannedReply:
    if viewer.role not in ("admin", "planner", "operator"):
        raise Forbidden("Your role may not change quick replies")
    if account_id is not None and (not viewer.can_see_account(account_id)
                                   or missing_ids(session, "account", [account_id])):
        raise Invalid("Account {account_id} not found", field="account_id", account_id=account_id)
    if account_id is None and not viewer.sees_all_accounts:
        raise Forbidden("Only planners and administrators may write quick replies for every account")
    shortcut, title, body = shortcut.strip(), title.strip(), body.strip()
    if not (shortcut and title and body):
        raise Invalid("Fill in the shortcut, the title and the text", field="body")
    if len(shortcut) > 32 or len(title) > 64 or len(body) > 2000:
        raise Invalid("Too long: shortcut 32, title 64, text 2,000 characters at most", field="body")
    variables.check_outgoing(body, field="body")
    reply = CannedReply(shortcut=shortcut, title=title, body=body, account_id=account_id)
    session.add(reply)
    session.flush()
    return reply


def delete_canned(session: Session, *, reply_id: int, viewer: Viewer) -> None:
    reply = session.get(CannedReply, reply_id)
    if reply is None or (reply.account_id is not None and not viewer.can_see_account(reply.account_id)):
        raise NotFound("Quick reply not found")
    every_account = reply.account_id is None
    if viewer.role not in ("admin", "planner", "operator") or (every_account and not viewer.sees_all_accounts):
        raise Forbidden("Your role may not change quick replies")
    session.delete(reply)
    session.flush()
