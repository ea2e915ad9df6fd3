"""公众号 pushes: stored in one write, answered from memory, ingested into the inbox by a job.

Why it is built this way: building the inbox for a push (the follower's customer, the
conversation, the message, touches, assignment, the SLA clock) is most of the cost of a
callback, and the platform needs none of it in the answer — only "stored" (``success``) or
the passive reply. So the callback

1. authenticates the push (``siyu.mp.callback``),
2. decides the passive reply: the auto-reply matcher is built once and rebuilt only when a
   rule changes (``autoreply.service.active_matcher``); only a message a rule matches costs
   a look at the rule's quiet period and hourly cap,
3. stores the push with that reply in one ``mp_inbound`` row — the callbacks that arrive
   together share one transaction (``core.group_commit``) — and answers.

The ``mp.ingest_inbound`` job then builds the inbox from the stored rows in batches, claiming
each row (``ingested_at``) in the same transaction that ingests it, so a row is ingested
exactly once however many workers and sweeps meet it; a row whose job was lost (the app died
between the commit and the enqueue) is ingested by the sweep. The job records the reply that
went out passively as the conversation's automatic reply (``reply_to_id`` is unique: once).

Follows and QR scans are answered with the channel's welcome, which only the full ingestion
knows (tags, a coupon, the channel's text): they are rare next to messages, and are ingested
in the callback's own transaction, as before, so their welcome stays passive.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, event, func, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.autoreply import service as autoreply_service
from siyu.autoreply.models import AutoReplyRule, AutoReplyRuleVersion, AutoReplySwitch
from siyu.channels import service as channels_service
from siyu.core.db import dialect_insert, utcnow
from siyu.core.i18n import _
from siyu.core.settings import local_zone
from siyu.customers import variables
from siyu.customers.models import Friendship, FriendshipStatus, Touch, TouchKind
from siyu.inbox import service as inbox_service
from siyu.inbox.models import Channel, Conversation, DeliveryStatus, Direction, Message, MessageType
from siyu.mp import writer
from siyu.mp.callback import Authenticated, CallbackRefused, MpQuery
from siyu.mp.models import MpFollower, MpInbound
from siyu.mp.service import (
    LATE_PASSIVE,
    PASSIVE_SOURCE,
    SOURCE,
    WELCOME_SOURCE,
    WINDOW_EVENTS,
    Parsed,
    parse,
    pushed_at,
    resolve_followers,
)

log = logging.getLogger(__name__)

PASSIVE = "passive"  # the reply goes in the callback's own answer
API = "api"  # too late for that: message/custom/send
AUTOREPLY_SOURCE = "autoreply"  # Message.source of an automatic reply sent through the API
ANSWERED_EVENTS = ("subscribe", "SCAN")  # answered with a channel's welcome: ingested in the callback
STALE_AFTER = timedelta(seconds=30)  # a stored push no job has ingested by then is the sweep's
MAX_ATTEMPTS = 5  # failed ingestions of a row before the sweep leaves it (its error kept on the row)
# Ingested rows are kept as long as the quiet period of automatic replies, which is read from them,
# and longer than the platform's retries (3 within ≈15 s) and a replayed nonce's freshness.
KEEP_INGESTED = autoreply_service.QUIET_PERIOD + timedelta(minutes=5)
# During a flood the ingestion gives way to the callbacks, whose 5 seconds are the platform's (a late answer
# is a retry, and more load) — on SQLite the job's write transactions would hold up their commits, and on
# any database it takes the same cores: while this process stores more than FLOOD_RATE pushes a second,
# their ingestion is not enqueued until the flood ebbs (FLOOD_CALM) or the oldest has waited MAX_LAG. Below that rate
# the inbox is built at once.
FLOOD_RATE = 200
FLOOD_CALM = timedelta(seconds=3)  # below FLOOD_RATE this long: the flood is over
MAX_LAG = timedelta(seconds=30)


@dataclass
class Answer:
    """What one callback gets: its stored row, a passive reply (text) or ``success``."""

    row_id: int = 0
    duplicate: bool = False
    reply: str = ""
    mode: str = ""
    pending: bool = False  # stored, not ingested yet: for the job


@dataclass(frozen=True)
class Decision:
    mode: str = ""
    text: str = ""
    version_id: int | None = None


# ---------------------------------------------------------------- the callback: decide, store, answer

# The rules' matcher as the callbacks last read it, per database: reused for this long before the rules'
# fingerprint is read again (one round trip fewer in most group commits). A rule changed in this process
# is seen at once (``_rules_changed``); one changed by another process (the worker pausing a rule at its
# cap, another app process) within this time. The hourly cap itself is read with the limits of every
# batch a rule matches, so a stale matcher cannot send more than the cap.
MATCHER_FRESH_SECONDS = 1.0
_matchers: weakref.WeakKeyDictionary[Any, tuple[float, Any]] = weakref.WeakKeyDictionary()


def _matcher(session: Session) -> Any:
    engine = session.get_bind().engine
    seen = _matchers.get(engine)
    if seen is not None and time.monotonic() - seen[0] < MATCHER_FRESH_SECONDS:
        return seen[1]
    matcher = autoreply_service.active_matcher(session)
    _matchers[engine] = (time.monotonic(), matcher)
    return matcher


@event.listens_for(Session, "after_flush")
def _rules_changed(session: Session, _context: Any) -> None:
    if any(isinstance(o, (AutoReplyRule, AutoReplyRuleVersion, AutoReplySwitch))
           for o in (*session.new, *session.dirty, *session.deleted)):
        _matchers.clear()



_versions: tuple[Any, dict[int, tuple[str, int]]] = (None, {})  # the matcher they belong to; its versions


def _version(session: Session, matcher: Any, version_id: int) -> tuple[str, int] | None:
    """A rule version's reply and hourly cap, read once per matcher (a version never changes; a rule that
    changes gets a new version and a new matcher)."""
    global _versions
    if _versions[0] is not matcher:
        _versions = (matcher, {})
    known = _versions[1]
    if version_id not in known:
        version = session.get(AutoReplyRuleVersion, version_id)
        if version is None:
            return None
        known[version_id] = (version.reply, version.hourly_cap)
    return known[version_id]


@dataclass
class _Limits:
    off: bool  # the account's automatic replies are switched off
    quiet: set[str]  # followers who had an automatic reply within the quiet period
    sent: dict[int, int]  # per rule: its replies of the last hour (in the inbox, and decided but not ingested)


def _limits(session: Session, account_id: int, openids: list[str], rules: dict[int, int], now: datetime) -> _Limits:
    """What limits the replies to a batch's matching pushes, in one round trip (``rules``: rule → version)."""
    columns: list[Any] = [
        select(func.count()).select_from(AutoReplySwitch).where(
            AutoReplySwitch.account_id == account_id, AutoReplySwitch.enabled.is_(False)).scalar_subquery(),
        # openids have no spaces: the followers answered lately come back as one string
        select(func.aggregate_strings(MpInbound.openid, " ")).where(
            MpInbound.account_id == account_id, MpInbound.openid.in_(openids), MpInbound.reply_mode != "",
            MpInbound.received_at >= now - autoreply_service.QUIET_PERIOD).scalar_subquery()]
    for rule_id, version_id in rules.items():
        versions = select(AutoReplyRuleVersion.id).where(AutoReplyRuleVersion.rule_id == rule_id)
        columns.append(select(func.count()).select_from(Message).where(
            Message.rule_version_id.in_(versions), Message.sent_at >= now - timedelta(hours=1)).scalar_subquery())
        columns.append(select(func.count()).select_from(MpInbound).where(
            MpInbound.rule_version_id == version_id, MpInbound.ingested_at.is_(None)).scalar_subquery())
    row = session.execute(select(*columns)).one()
    sent = {rule_id: int(row[2 + 2 * n] or 0) + int(row[3 + 2 * n] or 0) for n, rule_id in enumerate(rules)}
    return _Limits(off=bool(row[0]), quiet=set(str(row[1] or "").split()), sent=sent)


def decide(session: Session, account_id: int, callbacks: list[Authenticated], *, late: list[bool]) -> list[Decision]:
    """The automatic reply of each push, as ``autoreply.service.respond`` would choose it: the best rule that
    matches, unless the account's replies are off, the follower had one within the quiet period, or the rule
    reached its hourly cap. In memory but for the pushes a rule matches."""
    decisions = [Decision() for _c in callbacks]
    texts = [(i, c, parse(c.fields)) for i, c in enumerate(callbacks) if not c.is_event]
    texts = [(i, c, p) for i, c, p in texts if p.text and p.msg_type != MessageType.system.value]
    if not texts:
        return decisions
    matcher = _matcher(session)  # the rules' fingerprint, read at most once a second
    if not matcher.rules:
        return decisions
    zone = local_zone()
    hits = [(i, c, hit) for i, c, p in texts if (hit := matcher.match(
        p.text, account_id=account_id, at=pushed_at(c.fields.get("CreateTime")).astimezone(zone))) is not None]
    if not hits:
        return decisions
    limits = _limits(session, account_id, sorted({c.openid for _i, c, _h in hits}),
                     {hit.rule_id: hit.version_id for _i, _c, hit in hits}, utcnow())
    if limits.off:
        return decisions
    for index, callback, hit in sorted(hits, key=lambda h: (int(h[1].fields.get("CreateTime") or 0), h[0])):
        version = _version(session, matcher, hit.version_id)
        if version is None or callback.openid in limits.quiet:
            continue
        reply, cap = version
        if limits.sent[hit.rule_id] >= cap:
            writer.begin(session)  # the pause and its audit entry commit with the batch
            autoreply_service.pause_at_cap(session, rule_id=hit.rule_id, cap=cap)
            continue
        text = reply
        if variables.variables_in(reply):
            customer_id = session.scalar(select(MpFollower.customer_id).where(MpFollower.openid == callback.openid))
            text = variables.render(reply, variables.values_for(session, [(customer_id, account_id)])[
                (customer_id, account_id)])
        decisions[index] = Decision(API if late[index] else PASSIVE, text, hit.version_id)
        limits.sent[hit.rule_id] += 1
        limits.quiet.add(callback.openid)
    return decisions


def store(session: Session, account_id: int, callbacks: list[Authenticated], *,
          late: list[bool]) -> list[Answer | CallbackRefused]:
    """Store authenticated pushes that arrived together (one INSERT) and work out each one's answer.

    A push stored before (the platform's retry: the same ``MsgId``, or the same follower, time and
    event) gets the answer it had and is not stored again; a nonce stored with another push is a
    replayed request and refused. Follows and scans are ingested here (their welcome is the answer).
    """
    if any(c.is_event and c.fields.get("Event") in ANSWERED_EVENTS for c in callbacks):
        writer.begin(session)  # a follow's row and its ingestion commit together
    decisions = decide(session, account_id, callbacks, late=late)
    now = utcnow()
    rows = [{"account_id": account_id, "dedup_key": c.dedup_key, "nonce": c.query.nonce[:64], "openid": c.openid[:64],
             "fields": dict(c.fields), "reply_mode": d.mode, "reply": d.text, "rule_version_id": d.version_id,
             "received_at": now, "ingested_at": None, "attempts": 0, "error": ""}
            for c, d in zip(callbacks, decisions, strict=True)]
    table = MpInbound.__table__
    inserted: dict[tuple[str, str], int] = {
        (str(nonce), str(key)): int(row_id) for row_id, nonce, key in session.execute(
            dialect_insert(session, table).on_conflict_do_nothing().returning(
                table.c.id, table.c.nonce, table.c.dedup_key), rows)}
    answers: list[Answer | CallbackRefused] = []
    new: dict[int, int] = {}  # callback index → its new row
    for index, (callback, decision) in enumerate(zip(callbacks, decisions, strict=True)):
        row_id = inserted.pop((callback.query.nonce[:64], callback.dedup_key), None)
        if row_id is None:
            answers.append(Answer(duplicate=True))
            continue
        new[index] = row_id
        answers.append(Answer(row_id=row_id, reply=decision.text if decision.mode == PASSIVE else "",
                              mode=decision.mode, pending=True))
    repeated = sorted({callbacks[i].dedup_key for i, a in enumerate(answers) if isinstance(a, Answer) and a.duplicate})
    if repeated:
        stored = {str(r.dedup_key): r for r in session.execute(select(
            MpInbound.id, MpInbound.dedup_key, MpInbound.reply_mode, MpInbound.reply).where(
            MpInbound.account_id == account_id, MpInbound.dedup_key.in_(repeated)))}
        for index, answer in enumerate(answers):
            if not isinstance(answer, Answer) or not answer.duplicate:
                continue
            row = stored.get(callbacks[index].dedup_key)
            if row is None:
                answers[index] = CallbackRefused(409, "nonce seen before with another message: a replayed request")
                continue
            answer.row_id, answer.mode = int(row.id), str(row.reply_mode)
            answer.reply = str(row.reply) if row.reply_mode == PASSIVE else ""
    welcome = [i for i in new if callbacks[i].is_event and callbacks[i].fields.get("Event") in ANSWERED_EVENTS]
    if welcome:
        try:
            with session.begin_nested():  # a follow that cannot be ingested now is left to the job
                welcomes = ingest(session, [new[i] for i in welcome], passive=not any(late[i] for i in welcome))
        except Exception:
            log.exception("公众号 follows could not be ingested in the callback; left to the job")
        else:
            for index in welcome:
                answer = answers[index]
                assert isinstance(answer, Answer)
                answer.pending = False
                if new[index] in welcomes and not late[index]:
                    answer.reply, answer.mode = welcomes[new[index]], PASSIVE
    return answers


def make_late(session: Session, row_id: int) -> int:
    """A passive reply decided but not answered in time (the commit was slow): it goes through
    message/custom/send instead — at ingestion, or now if the job has already recorded it."""
    moved = session.execute(update(MpInbound).where(MpInbound.id == row_id, MpInbound.reply_mode == PASSIVE)
                            .values(reply_mode=API), execution_options={"synchronize_session": False})
    if not getattr(moved, "rowcount", 0):
        return 0
    row = session.get_one(MpInbound, row_id)
    answered = session.scalar(select(Message.id).where(Message.source == SOURCE,
                                                       Message.platform_msgid == row.dedup_key))
    if answered is None:
        return 0
    return send_through_api(session, list(session.scalars(select(Message.id).where(
        Message.reply_to_id == answered, Message.source == PASSIVE_SOURCE))))


def send_through_api(session: Session, reply_ids: list[int]) -> int:
    """Replies recorded as passive that were not answered in time: queued for message/custom/send."""
    moved = 0
    for reply in session.scalars(select(Message).where(Message.id.in_(reply_ids), Message.source == PASSIVE_SOURCE)):
        payload = dict(reply.payload or {})
        reply.source = str(payload.pop("source_was", "") or WELCOME_SOURCE)[:16]
        payload.update(passive=False, late_passive=_(LATE_PASSIVE))
        reply.payload, reply.status = payload, DeliveryStatus.queued.value
        session.flush()
        inbox_service.send_after_commit(session, reply.id)
        moved += 1
    return moved


# ---------------------------------------------------------------- the job: stored pushes into the inbox


def ingest(session: Session, row_ids: list[int], *, passive: bool = False) -> dict[int, str]:
    """Build the inbox from stored pushes not ingested yet (claimed in this transaction: exactly once).

    Returns the welcome of each follow or scan answered passively (``passive``: in the callback), by row.
    """
    claimed = list(session.scalars(update(MpInbound).where(MpInbound.id.in_(row_ids), MpInbound.ingested_at.is_(None))
                                   .values(ingested_at=utcnow()).returning(MpInbound.id),
                                   execution_options={"synchronize_session": False}))
    if not claimed:
        return {}
    rows = list(session.scalars(select(MpInbound).where(MpInbound.id.in_(claimed)).order_by(MpInbound.id)))
    by_account: dict[int, list[MpInbound]] = defaultdict(list)
    for row in rows:
        by_account[row.account_id].append(row)
    welcomes: dict[int, str] = {}
    for account_id, account_rows in by_account.items():
        welcomes.update(_ingest_account(session, account_id, account_rows, passive=passive))
    return welcomes


def _ingest_account(session: Session, account_id: int, rows: list[MpInbound], *, passive: bool) -> dict[int, str]:
    pushed = [(row, Authenticated(query=MpQuery(), fields={str(k): str(v) for k, v in (row.fields or {}).items()}))
              for row in rows]
    new_followers: list[str] = []
    customers = resolve_followers(session, account_id, [c.openid for _r, c in pushed], created=new_followers)
    if new_followers:  # a push carries no nickname: user/info/batchget fills it in after the commit
        from siyu.core import jobs as core_jobs

        core_jobs.enqueue_after_commit(session, "mp.jobs.fetch_profiles", account_id, new_followers)
    messages: list[inbox_service.InboundMessage] = []
    parsed: dict[str, tuple[Authenticated, Parsed]] = {}
    for _row, callback in pushed:
        customer_id = customers.get(callback.openid)
        if customer_id is None or callback.dedup_key in parsed:
            continue
        p = parse(callback.fields)
        parsed[callback.dedup_key] = (callback, p)
        messages.append(inbox_service.InboundMessage(
            source=SOURCE, platform_msgid=callback.dedup_key, account_id=account_id, customer_id=customer_id,
            sent_at=pushed_at(callback.fields.get("CreateTime")), sender=callback.openid, msg_type=p.msg_type,
            text=p.text, payload=dict(callback.fields), channel=Channel.mp.value))
    # The automatic replies were decided in the callback (and some already given there): recorded below.
    ingested = inbox_service.ingest(session, messages, auto_reply=False)
    ids = {key: message_id for (source, key), message_id in ingested.ids.items() if source == SOURCE}
    events = [(c, p, customers[c.openid], ids.get(c.dedup_key)) for key, (c, p) in parsed.items()
              if key in ids and p.event]
    welcomes = _apply_events(session, session.get_one(Account, account_id), events, passive=passive) if events else {}
    _record_replies(session, account_id, [(row, ids[row.dedup_key]) for row in rows
                                          if row.reply_mode and row.rule_version_id and row.dedup_key in ids])
    answered: dict[int, str] = {}
    for row in rows:
        welcome = welcomes.get(ids.get(row.dedup_key, 0))
        if welcome is not None:  # kept on the row: a retry gets it again, and the quiet period counts it
            row.reply_mode, row.reply = (PASSIVE if passive else API), welcome
            if passive:
                answered[row.id] = welcome
    session.flush()
    return answered


def _record_replies(session: Session, account_id: int, answered: list[tuple[MpInbound, int]]) -> None:
    """The automatic replies decided in the callbacks, as their conversations' replies (once each)."""
    if not answered:
        return
    conversation_of = dict(session.execute(select(Message.id, Message.conversation_id).where(
        Message.id.in_([message_id for _row, message_id in answered]))).all())
    conversations = {c.id: c for c in session.scalars(select(Conversation).where(
        Conversation.id.in_(set(conversation_of.values()))))}
    now = utcnow()
    table = Message.__table__
    for row, message_id in answered:
        conversation = conversations.get(conversation_of.get(message_id, 0))
        if conversation is None:
            continue
        text = row.reply or _fill(session, row, conversation)
        passive = row.reply_mode == PASSIVE
        record = {"conversation_id": conversation.id, "source": PASSIVE_SOURCE if passive else AUTOREPLY_SOURCE,
                  "platform_msgid": f"auto:{message_id}", "direction": Direction.outbound.value,
                  "msg_type": MessageType.text.value, "sender": "", "text": text,
                  "payload": {"passive": True, "source_was": AUTOREPLY_SOURCE} if passive else
                  {"passive": False, "late_passive": _(LATE_PASSIVE)},
                  "sent_at": now, "received_at": now,
                  "status": (DeliveryStatus.sent if passive else DeliveryStatus.queued).value, "error": "",
                  "automatic": True, "internal": False, "rule_version_id": row.rule_version_id,
                  "reply_to_id": message_id}
        inserted = session.execute(dialect_insert(session, table).values(record).on_conflict_do_nothing()
                                   .returning(table.c.id)).first()
        if inserted is None:
            continue
        conversation.last_message_at, conversation.last_message_preview = now, text[:120]
        if not passive:
            inbox_service.send_after_commit(session, int(inserted[0]))


def _fill(session: Session, row: MpInbound, conversation: Conversation) -> str:
    version = session.get(AutoReplyRuleVersion, row.rule_version_id or 0)
    if version is None:
        return ""
    return variables.render(version.reply, variables.values_for(session, [(conversation.customer_id, row.account_id)])[
        (conversation.customer_id, row.account_id)])


def _apply_events(session: Session, account: Account, events: list[tuple[Authenticated, Parsed, int, int | None]],
                  *, passive: bool) -> dict[int, str]:
    """Follows, unfollows, scans and clicks change the follower; returns the follows' welcomes by message.

    ``passive``: the welcomes go in the callbacks' answers; otherwise through message/custom/send.
    """
    followers = {f.openid: f for f in session.scalars(select(MpFollower).where(
        MpFollower.openid.in_(sorted({c.openid for c, _p, _cid, _mid in events}))))}
    friendships = {f.customer_id: f for f in session.scalars(select(Friendship).where(
        Friendship.account_id == account.id,
        Friendship.customer_id.in_(sorted({cid for _c, p, cid, _m in events if p.event in _FOLLOWING}))))}
    adds: list[tuple[channels_service.FriendAdd, int | None]] = []
    for callback, p, customer_id, message_id in sorted(events, key=lambda e: int(e[0].fields.get("CreateTime") or 0)):
        follower = followers.get(callback.openid)
        if follower is None:
            continue
        at = pushed_at(callback.fields.get("CreateTime"))
        if p.event in WINDOW_EVENTS:
            follower.last_event_at = max(at, follower.last_event_at or at)
        if p.event == "subscribe":
            follower.subscribed, follower.subscribed_at, follower.unsubscribed_at = True, at, None
            follower.scene = p.scene[:64]
            _friendship(friendships.get(customer_id), active=True, state=p.scene, at=at)
            adds.append((channels_service.FriendAdd(customer_id, account.id, p.scene, at), message_id))
        elif p.event == "SCAN" and p.scene:
            adds.append((channels_service.FriendAdd(customer_id, account.id, p.scene, at), message_id))
        elif p.event == "unsubscribe":
            follower.subscribed, follower.unsubscribed_at = False, at
            _friendship(friendships.get(customer_id), active=False, state="", at=at)
            channels_service.on_friend_removed(session, customer_id=customer_id, account_id=account.id, at=at)
        if p.event in _FOLLOWING:
            session.add(Touch(customer_id=customer_id, account_id=account.id, kind=TouchKind.system.value,
                              content=p.text[:2000], occurred_at=at,
                              details={"event": f"mp_{p.event}", "scene": p.scene}))
    outcomes = channels_service.on_friends_added(session, [add for add, _m in adds]) if adds else []
    welcomes: dict[int, str] = {}
    for (add, message_id), outcome in zip(adds, outcomes, strict=True):
        text = outcome.welcome or (account.greeting if not add.state else "")
        if message_id is None or not text or message_id in welcomes:
            continue
        conversation = session.scalar(select(Conversation).where(
            Conversation.key == inbox_service.conversation_key(account.id, add.customer_id, "")))
        if conversation is None:
            continue
        text = inbox_service.fill_variables(session, text=text, conversation=conversation)
        if _record_welcome(session, conversation, message_id, text, passive=passive):
            welcomes[message_id] = text
    session.flush()
    return welcomes


_FOLLOWING = ("subscribe", "unsubscribe")  # the events that change the friendship


def _friendship(friendship: Friendship | None, *, active: bool, state: str, at: datetime) -> None:
    if friendship is None:
        return
    if active:
        friendship.status, friendship.removed_at = FriendshipStatus.active.value, None
        friendship.added_at = at
        if state:
            friendship.channel_state = state[:64]
    else:  # the follower unsubscribed: the customer ended it
        friendship.status, friendship.removed_at = FriendshipStatus.deleted.value, at
        friendship.ended_by = "customer"


def _record_welcome(session: Session, conversation: Conversation, answered_id: int, text: str, *,
                    passive: bool) -> bool:
    now = utcnow()
    table = Message.__table__
    row: dict[str, Any] = {
        "conversation_id": conversation.id, "source": PASSIVE_SOURCE if passive else WELCOME_SOURCE,
        "platform_msgid": f"welcome:{answered_id}", "direction": Direction.outbound.value,
        "msg_type": MessageType.text.value, "sender": "", "text": text,
        "payload": {"passive": True, "source_was": WELCOME_SOURCE} if passive else {"passive": False},
        "sent_at": now, "received_at": now,
        "status": (DeliveryStatus.sent if passive else DeliveryStatus.queued).value, "error": "",
        "automatic": True, "internal": False, "reply_to_id": answered_id}
    inserted = session.execute(dialect_insert(session, table).values(row).on_conflict_do_nothing()
                               .returning(table.c.id)).first()
    if inserted is None:
        return False
    conversation.last_message_at, conversation.last_message_preview = now, text[:120]
    if not passive:
        inbox_service.send_after_commit(session, int(inserted[0]))
    return True


class FloodMeter:
    """Whether this process stored more than FLOOD_RATE pushes within one second lately (within FLOOD_CALM:
    a flood with a lull of a second is still a flood). The callbacks count what they store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0
        self._flooded_at = -FLOOD_CALM.total_seconds()

    def add(self, count: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts.append((now, count))
            self._total += count
            while self._counts and self._counts[0][0] < now - 1.0:
                self._total -= self._counts.popleft()[1]
            if self._total >= FLOOD_RATE:
                self._flooded_at = now

    def flooding(self) -> bool:
        with self._lock:
            return time.monotonic() - self._flooded_at < FLOOD_CALM.total_seconds()


flood = FloodMeter()


def give_way(waited: float) -> bool:
    """Whether stored pushes wait a while longer before their ingestion is enqueued (see FLOOD_RATE)."""
    return waited < MAX_LAG.total_seconds() and flood.flooding()


# ---------------------------------------------------------------- the sweep


def left_behind(session: Session, *, limit: int = 5000) -> list[int]:
    """Rows stored but not ingested a while after (their job was lost, or failed fewer than 5 times)."""
    return list(session.scalars(select(MpInbound.id).where(
        MpInbound.ingested_at.is_(None), MpInbound.attempts < MAX_ATTEMPTS,
        MpInbound.received_at < utcnow() - STALE_AFTER).order_by(MpInbound.id).limit(limit)))


def record_failure(session: Session, row_id: int, error: str) -> None:
    session.execute(update(MpInbound).where(MpInbound.id == row_id, MpInbound.ingested_at.is_(None)).values(
        attempts=MpInbound.attempts + 1, error=error[:500]), execution_options={"synchronize_session": False})


def forget_ingested(session: Session) -> int:
    result = session.execute(delete(MpInbound).where(MpInbound.ingested_at < utcnow() - KEEP_INGESTED))
    return int(getattr(result, "rowcount", 0) or 0)
