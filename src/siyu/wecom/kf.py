"""微信客服 (WeCom customer service, ``kf/*``): the service inbox's channel for campaign floods.

Why it is built this way: WeCom pushes no customer's chat text to a callback. For a 客服账号
(``open_kfid``) the callback ``kf_msg_or_event`` only says that something is waiting, with a
``Token`` valid 10 minutes; the content is pulled with ``kf/sync_msg`` after the cursor Siyu
keeps per account, up to 1,000 messages a page while ``has_more`` (W:94670). Each page is
stored — customers resolved in bulk, one ``inbox.service.ingest`` call — in the *same*
transaction that moves the cursor, under a compare-and-set on the old cursor: a crash
before the commit pulls the page again, and the message table's unique
``(source, platform_msgid)`` drops what an earlier try had stored, so nothing is lost or
doubled, and two workers pulling at once never both store a page.

Every type the docs list is kept with its payload: the customer's messages (origin 3) go
into the inbox; what a servicer sent from WeCom's own client (origin 5) is recorded as our
side of the conversation; events (origin 4) are system lines and change state — a recall
marks the original, ``session_status_change`` mirrors who serves the session,
``msg_send_fail`` fails our message, ``enter_session`` brings the account's greeting
through ``kf/send_msg_on_event`` while its ``welcome_code`` lives (20 s).

Replies leave through ``kf/send_msg`` with Siyu's own ``msgid`` (``siyu-<message id>``), so
a send repeated after a lost answer reaches the customer once. The platform allows them
only within 48 hours of the customer's last message and 5 per customer message, and only
while the session is not served by a person in WeCom's client (else 95018); Siyu checks
the window when the agent presses send and refuses at once, with the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session, object_session

from siyu.accounts.models import Account, AccountKind
from siyu.core.db import among, committed, dialect_insert, insert_records, remember_after_commit, utcnow
from siyu.core.errors import Invalid
from siyu.core.i18n import N_, _
from siyu.customers.models import Customer
from siyu.customers.search import index as search
from siyu.customers.variables import unnamed
from siyu.inbox import channel_hooks, delivery
from siyu.inbox import service as inbox_service
from siyu.inbox.delivery import Accepted, DeliveryError, Outgoing
from siyu.inbox.models import Channel, Conversation, DeliveryStatus, Direction, Message, MessageType, ServiceState
from siyu.wecom.client import WecomApiError
from siyu.wecom.models import KfCursor

log = logging.getLogger(__name__)

SOURCE = "wecom_kf"  # Message.source of what kf/sync_msg brings
KNOWN_CUSTOMERS = "kf_external_userid"  # core.db.committed: external_userids that have a customer
WELCOME_SOURCE = "kf_welcome"  # a greeting, not an answer: inbox.service.NOT_ANSWERS

# ---- the platform's limits (微信客服 › 会话分配与消息收发)
# 读取消息 (W:94670): the callback's token "10分钟内有效"; without one "接口有严格的频率限制" — the docs
# give no number, so a token-less pull happens at most once a minute per 客服账号.
TOKEN_LIFE = timedelta(minutes=10)
TOKENLESS_PULL_INTERVAL = timedelta(seconds=60)
# 发送消息 (W:94677): "仅当微信客户在主动发送消息给客服后的48小时内，企业可发送消息给客户，最多可发送5条消息";
# a servicer serving the session in WeCom's client makes the call answer 95018.
REPLY_WINDOW = timedelta(hours=48)
REPLIES_PER_CUSTOMER_MESSAGE = 5
SESSION_SERVED_BY_PERSON = 95018
# kf/sync_msg's answer to a token it does not take (expired after its 10 minutes, or unknown): "invalid msg token".
INVALID_MSG_TOKEN = 95007
# kf/send_msg's refusals of a reply outside the window: 5 per customer message used up / 48 hours passed.
WINDOW_ERRCODES = {95001: "full", 95002: "closed"}
MAX_TEXT_BYTES = 2048  # 发送消息: text.content "最长不超过2048个字节"
# 发送欢迎语等事件响应消息 (W:95122): the enter_session event's welcome_code "20秒内有效，且只能使用一次".
WELCOME_CODE_LIFE = timedelta(seconds=20)
# msgid: "不多于32字节 … 字符串取值范围(正则表达式)：[0-9a-zA-Z_-]*" (W:94677)
MSGID_MAX_BYTES = 32
MSGID_PREFIX = "siyu-"
_MSGID = re.compile(r"^siyu-(\d+)$")


OUTSIDE_WINDOW = N_("More than 48 hours since the customer's last message: WeChat allows no reply until they write")
WINDOW_FULL = N_("WeChat allows at most 5 replies per customer message; wait for the customer to write again")
SERVED_IN_WECOM = N_("{servicer} serves this customer in WeCom's own client; WeChat refuses replies from Siyu")
SESSION_ENDED = N_("The session has ended in WeCom; WeChat allows no reply until the customer writes again")
IN_WECOM_QUEUE = N_("The session waits in WeCom's queue for a servicer; WeChat refuses replies from Siyu meanwhile")
SERVED_IN_WECOM_NOW = N_("A person took this session in WeCom's own client (95018); not sent, and not retried")
WELCOME_EXPIRED = N_("The welcome code had expired (it lives 20 seconds and works once); no welcome was sent")
TOO_LONG = N_("Too long for WeChat customer service: a message may have at most 2048 bytes")
NO_CUSTOMER = N_("This conversation has no WeChat customer service customer to answer")
NO_OPEN_KFID = N_("This account has no open_kfid")
BUSY = N_("WeCom is busy; trying again shortly ({detail})")
# msg_send_fail's fail_type (读取消息, W:94670)
FAIL_TYPES = {
    0: N_("unknown reason"), 1: N_("the customer service account was deleted"), 2: N_("the app was closed"),
    4: N_("the session expired (more than 48 hours)"), 5: N_("the session was closed"),
    6: N_("more than 5 messages"), 8: N_("the corp is not verified"), 10: N_("the customer refused it"),
    11: N_("no member of the corp is logged in to the WeCom app"),
    12: N_("a message type customer service may not send"),
}
SESSION_CHANGES = {
    1: N_("{servicer} took the session from WeCom's queue"), 2: N_("The session was transferred to {servicer}"),
    3: N_("The session was ended in WeCom"), 4: N_("{servicer} reopened the session"),
}


def msgid_for(message_id: int) -> str:
    """Siyu's msgid for one of its messages: the same on every retry, within the platform's 32 bytes."""
    msgid = f"{MSGID_PREFIX}{message_id}"
    assert len(msgid.encode()) <= MSGID_MAX_BYTES
    return msgid


def message_id_of(msgid: str) -> int | None:
    match = _MSGID.match(msgid or "")
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- parsing a sync_msg item


@dataclass(slots=True)
class Parsed:
    msg_type: str
    text: str
    direction: str
    event: str = ""  # the event_type of an origin-4 item
    external_userid: str = ""


ORIGIN_CUSTOMER, ORIGIN_EVENT, ORIGIN_SERVICER = 3, 4, 5
_MEDIA = {"image", "voice", "video", "file"}


def menu_text(menu: dict[str, Any]) -> str:
    """A msgmenu as plain text (the preview, and what channels without menus send)."""
    lines = [str(menu.get("head_content") or "")]
    for item in menu.get("list") or []:
        click = item.get("click") if isinstance(item, dict) and "click" in item else item
        if isinstance(click, dict):
            lines.append(str(click.get("content") or click.get("id") or ""))
        elif isinstance(item, dict):
            for kind in ("view", "miniprogram", "text"):
                if isinstance(item.get(kind), dict):
                    lines.append(str(item[kind].get("content") or ""))
    lines.append(str(menu.get("tail_content") or ""))
    return "\n".join(line for line in lines if line)


def parse(item: dict[str, Any]) -> Parsed:
    """What Siyu shows of one kf/sync_msg item; the item itself is kept whole as the payload."""
    kind = str(item.get("msgtype") or "")
    origin = int(item.get("origin") or 0)
    found = item.get(kind)
    body: dict[str, Any] = found if isinstance(found, dict) else {}
    direction = Direction.outbound.value if origin == ORIGIN_SERVICER else Direction.inbound.value
    external = str(item.get("external_userid") or "")
    if kind == "event":
        return _event(body, direction=direction)
    if kind == "text":
        return Parsed(MessageType.text.value, str(body.get("content") or ""), direction, external_userid=external)
    if kind in _MEDIA:
        return Parsed(kind, "", direction, external_userid=external)
    if kind == "location":
        text = " ".join(str(body.get(k) or "") for k in ("name", "address")).strip()
        return Parsed(MessageType.location.value, text, direction, external_userid=external)
    if kind == "link":
        return Parsed(MessageType.link.value, str(body.get("title") or body.get("url") or ""), direction,
                      external_userid=external)
    if kind == "business_card":
        return Parsed(MessageType.business_card.value, str(body.get("userid") or ""), direction,
                      external_userid=external)
    if kind == "miniprogram":
        return Parsed(MessageType.miniprogram.value, str(body.get("title") or ""), direction,
                      external_userid=external)
    if kind == "msgmenu":
        return Parsed(MessageType.msgmenu.value, menu_text(body), direction, external_userid=external)
    if kind == "channels":
        text = " ".join(str(body.get(k) or "") for k in ("nickname", "title")).strip()
        return Parsed(MessageType.channels.value, text, direction, external_userid=external)
    return Parsed(kind or MessageType.unknown.value, "", direction, external_userid=external)


def _event(event: dict[str, Any], *, direction: str) -> Parsed:
    kind = str(event.get("event_type") or "")
    external = str(event.get("external_userid") or "")
    if kind == "enter_session":
        scene = str(event.get("scene") or "")
        text = _("The customer entered the session (scene {scene})", scene=scene) if scene else \
            _("The customer entered the session")
    elif kind == "msg_send_fail":
        reason = FAIL_TYPES.get(_int(event.get("fail_type")), FAIL_TYPES[0])
        text = _("A message was not delivered: {reason}", reason=_(reason))
    elif kind == "session_status_change":
        change = SESSION_CHANGES.get(_int(event.get("change_type")))
        servicer = str(event.get("new_servicer_userid") or event.get("old_servicer_userid") or "")
        text = _(change, servicer=servicer) if change else _("The session changed in WeCom")
    elif kind == "user_recall_msg":
        text = _("The customer recalled a message")
    elif kind == "servicer_recall_msg":
        text = _("{servicer} recalled a message", servicer=str(event.get("servicer_userid") or ""))
    elif kind == "servicer_status_change":
        text = _("{servicer} changed their serving status", servicer=str(event.get("servicer_userid") or ""))
    else:
        text = _("WeChat customer service event {event}", event=kind)
    return Parsed(MessageType.system.value, text, Direction.inbound.value, event=kind, external_userid=external)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


@lru_cache(maxsize=4096)
def _from_seconds(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)  # a flood page shares a handful of seconds


def _at(seconds: Any) -> datetime:
    try:
        return _from_seconds(int(seconds))
    except (TypeError, ValueError, OverflowError, OSError):
        return utcnow()


# ---------------------------------------------------------------- accounts and customers


def account_for(session: Session, open_kfid: str, *, name: str = "") -> Account:
    """The Siyu account of a 客服账号; one is created for an open_kfid seen first in a callback."""
    account = session.scalar(select(Account).where(Account.open_kfid == open_kfid))
    if account is None:
        account = Account(kind=AccountKind.wecom_kf.value, open_kfid=open_kfid, display_name=(name or open_kfid)[:64])
        session.add(account)
        session.flush()
    return account


def sync_accounts(session: Session, accounts: Iterable[dict[str, Any]]) -> int:
    """kf/account/list into Siyu: new 客服账号 become accounts, names follow WeCom's. Returns how many are new."""
    created = 0
    for item in accounts:
        open_kfid = str(item.get("open_kfid") or "")
        if not open_kfid:
            continue
        name = str(item.get("name") or open_kfid)[:64]
        account = session.scalar(select(Account).where(Account.open_kfid == open_kfid))
        if account is None:
            session.add(Account(kind=AccountKind.wecom_kf.value, open_kfid=open_kfid, display_name=name,
                                avatar_url=str(item.get("avatar") or "")[:512]))
            created += 1
        else:
            account.display_name = name
            account.avatar_url = str(item.get("avatar") or account.avatar_url)[:512]
    session.flush()
    return created


def unknown_customers(session: Session, external_userids: Iterable[str]) -> list[str]:
    ids = sorted(set(filter(None, external_userids)))
    if not ids:
        return []
    column = Customer.__table__.c.wecom_external_userid
    known = set(session.connection().scalars(select(column).where(among(session, column, ids))))
    return [e for e in ids if e not in known]


def resolve_customers(session: Session, external_userids: Iterable[str],
                      profiles: dict[str, dict[str, Any]] | None = None) -> dict[str, int]:
    """Customer id of each external_userid, set-based: known ids, then the same person by unionid (a
    公众号 follower, say), then new customers with the nickname and avatar of kf/customer/batchget.

    A kf external_userid is the corp's external_userid of that WeChat user, the same id contacts
    have, so a customer who is also a member's contact is found by it directly.
    """
    profiles = profiles or {}
    ids = sorted(set(filter(None, external_userids)))
    if not ids:
        return {}
    c = Customer.__table__.c
    session.flush()  # a Core read: the ORM's pending changes first
    known: dict[str, int] = {ext: cid for cid, ext in session.connection().execute(
        select(c.id, c.wecom_external_userid).where(among(session, c.wecom_external_userid, ids)))
        if ext is not None}
    missing = [e for e in ids if e not in known]
    # Profiles are read for customers unknown when the page came: one known by now (met through a
    # contact meanwhile) gets the unionid it lacks — never a name someone typed.
    for seen in [e for e in ids if e in known and (profiles.get(e) or {}).get("unionid")]:
        session.execute(update(Customer).where(Customer.id == known[seen], Customer.unionid.is_(None))
                        .values(unionid=str(profiles[seen]["unionid"])[:64]))
    by_union = {str(profiles[e]["unionid"]): e for e in missing if (profiles.get(e) or {}).get("unionid")}
    if by_union:
        # By unionid alone, the rest filtered here: with statistics lagging a flood, PostgreSQL read every
        # customer without an external_userid (tens of thousands) and compared each with the page's 1,000
        # unionids (~0.4 s a page) instead of using the unionid index.
        matches = [cid for cid, unionid, external, merged in session.connection().execute(
            select(c.id, c.unionid, c.wecom_external_userid, c.merged_into_id).where(
                among(session, c.unionid, sorted(by_union)))) if external is None and merged is None]
        for customer in session.scalars(select(Customer).where(Customer.id.in_(matches))) if matches else ():
            joined = by_union.pop(str(customer.unionid), None)
            if joined is not None:
                customer.wecom_external_userid = joined
                known[joined] = customer.id
        session.flush()
    missing = [e for e in ids if e not in known]
    if missing:
        now = utcnow()
        rows = []
        for ext in missing:
            profile = profiles.get(ext) or {}
            rows.append({"name": str(profile.get("nickname") or unnamed(ext))[:128], "wecom_external_userid": ext,
                         "avatar_url": str(profile.get("avatar") or "")[:512], "source": SOURCE,
                         "unionid": str(profile.get("unionid") or "")[:64] or None, "created_at": now})
        created = insert_records(session, cast(Table, Customer.__table__), rows, conflict=("wecom_external_userid",),
                                 returning=("id", "wecom_external_userid"))
        known.update({str(ext): int(cid) for cid, ext in created})
        names = {str(row["wecom_external_userid"]): str(row["name"]) for row in rows}
        search.index_created(session, {int(cid): names[str(ext)] for cid, ext in created})
        if len(known) < len(ids):  # created by another worker meanwhile
            known.update({str(ext): int(cid) for cid, ext in session.execute(
                select(Customer.id, Customer.wecom_external_userid).where(
                    Customer.wecom_external_userid.in_([e for e in ids if e not in known])))})
    remember_after_commit(session, KNOWN_CUSTOMERS, known)
    return known


# ---------------------------------------------------------------- storing a page


@dataclass
class PageResult:
    stored: int = 0
    duplicates: int = 0
    events: int = 0
    welcomes: int = 0
    conversations: list[int] = field(default_factory=list)


def store_page(session: Session, *, open_kfid: str, items: list[dict[str, Any]],
               profiles: dict[str, dict[str, Any]] | None = None,
               parsed: list[tuple[dict[str, Any], Parsed]] | None = None) -> PageResult:
    """One kf/sync_msg page into the inbox: one ingest call, then what the page's events change."""
    account = account_for(session, open_kfid)
    if parsed is None:
        parsed = [(item, parse(item)) for item in items if isinstance(item, dict)]
    customers = resolve_customers(session, [p.external_userid for _item, p in parsed], profiles)
    messages: list[inbox_service.InboundMessage] = []
    events: list[tuple[dict[str, Any], Parsed]] = []
    for item, p in parsed:
        if p.event:
            events.append((item, p))
        if p.event == "servicer_status_change":
            continue  # about a servicer, not a customer: kept on the cursor row below
        customer_id = customers.get(p.external_userid)
        msgid = str(item.get("msgid") or "")
        if customer_id is None or not msgid:
            log.warning("kf item without a customer or msgid skipped: %s", str(item)[:200])
            continue
        messages.append(inbox_service.InboundMessage(
            source=SOURCE, platform_msgid=msgid, account_id=account.id, customer_id=customer_id,
            sent_at=_at(item.get("send_time")), sender=str(item.get("servicer_userid") or p.external_userid),
            msg_type=p.msg_type, text=p.text, payload=item, direction=p.direction, channel=Channel.wecom_kf.value))
    ingested = inbox_service.ingest(session, messages)
    # A customer writing after the end opens a new session on the platform (state 0): ingest's conversation
    # update does it (inbox.service._SETS), in the same statement.
    result = PageResult(stored=ingested.stored, duplicates=ingested.duplicates, events=len(events),
                        conversations=ingested.conversations)
    for item, p in events:
        result.welcomes += _apply_event(session, account, item, p, customers)
    session.flush()
    return result


def _conversation(session: Session, account: Account, customer_id: int | None) -> Conversation | None:
    if customer_id is None:
        return None
    return session.scalar(select(Conversation).where(
        Conversation.key == inbox_service.conversation_key(account.id, customer_id, "")))


def _apply_event(session: Session, account: Account, item: dict[str, Any], p: Parsed,
                 customers: dict[str, int]) -> int:
    """What an event changes besides its system line; safe to apply again (a re-pulled page). Returns
    1 when a welcome was queued."""
    found = item.get("event")
    event: dict[str, Any] = found if isinstance(found, dict) else {}
    if p.event == "servicer_status_change":
        row = cursor_row(session, account.open_kfid or "")
        servicer = str(event.get("servicer_userid") or "")
        if servicer:
            row.servicers = {**(row.servicers or {}), servicer: {
                "status": _int(event.get("status")), "at": _at(item.get("send_time")).isoformat()}}
        return 0
    conversation = _conversation(session, account, customers.get(p.external_userid))
    if p.event in ("user_recall_msg", "servicer_recall_msg"):
        recalled = session.scalar(select(Message).where(Message.source == SOURCE,
                                                        Message.platform_msgid == str(event.get("recall_msgid"))))
        if recalled is not None:
            recalled.payload = {**(recalled.payload or {}), "recalled_at": _at(item.get("send_time")).isoformat()}
    elif p.event == "session_status_change" and conversation is not None:
        change = _int(event.get("change_type"))
        if change in (1, 2, 4):
            conversation.service_state = ServiceState.person
            conversation.servicer_userid = str(event.get("new_servicer_userid") or "")[:64]
        elif change == 3:
            conversation.service_state = ServiceState.ended
            conversation.servicer_userid = ""
    elif p.event == "msg_send_fail":
        message_id = message_id_of(str(event.get("fail_msgid") or ""))
        failed = session.get(Message, message_id) if message_id is not None else None
        if failed is not None:
            reason = FAIL_TYPES.get(_int(event.get("fail_type")), FAIL_TYPES[0])
            delivery.fail_after_acceptance(failed, _("WeChat did not deliver it: {reason}", reason=_(reason)))
    elif p.event == "enter_session" and conversation is not None:
        if conversation.service_state in (None, ServiceState.ended):
            conversation.service_state = ServiceState.untouched
        code = str(event.get("welcome_code") or "")
        if code and account.greeting.strip():
            return _queue_welcome(session, account, conversation, item, code)
    return 0


def _queue_welcome(session: Session, account: Account, conversation: Conversation, item: dict[str, Any],
                   code: str) -> int:
    """The account's greeting as an answer to enter_session, sent with the welcome_code (once per event)."""
    now = utcnow()
    expires = _at(item.get("send_time")) + WELCOME_CODE_LIFE
    text = inbox_service.fill_variables(session, text=account.greeting, conversation=conversation)
    expired = expires <= now
    row = {"conversation_id": conversation.id, "source": WELCOME_SOURCE,
           "platform_msgid": f"welcome:{item.get('msgid')}"[:128], "direction": Direction.outbound.value,
           "msg_type": MessageType.text.value, "sender": "", "text": text,
           "payload": {"welcome_code": code, "code_expires_at": expires.isoformat()}, "sent_at": now,
           "received_at": now, "status": DeliveryStatus.failed.value if expired else DeliveryStatus.queued.value,
           "error": _(WELCOME_EXPIRED) if expired else "", "automatic": True, "internal": False}
    table = Message.__table__
    inserted = session.execute(dialect_insert(session, table).values(row).on_conflict_do_nothing(
        index_elements=["source", "platform_msgid"]).returning(table.c.id)).first()
    if inserted is None:
        return 0  # queued by an earlier pull of this page
    if not expired:
        inbox_service.send_after_commit(session, int(inserted[0]))
    return 1


# ---------------------------------------------------------------- the cursor and pulling


def cursor_row(session: Session, open_kfid: str) -> KfCursor:
    row = session.get(KfCursor, open_kfid)
    if row is None:
        session.execute(dialect_insert(session, KfCursor.__table__).values(open_kfid=open_kfid, cursor="", token="")
                        .on_conflict_do_nothing())
        row = session.get(KfCursor, open_kfid)
        assert row is not None
    return row


def note_callback(session: Session, *, open_kfid: str, token: str, at: datetime | None = None) -> None:
    """A kf_msg_or_event callback: keep its token (the freshest wins) for the pull."""
    account_for(session, open_kfid)
    row = cursor_row(session, open_kfid)
    at = at or utcnow()
    if token and (row.token_at is None or at >= row.token_at):
        row.token, row.token_at = token[:128], at
    session.flush()


@dataclass
class PullResult:
    pages: int = 0
    stored: int = 0
    duplicates: int = 0
    welcomes: int = 0
    raced: int = 0
    wait_seconds: float = 0.0  # > 0: a token-less pull must wait this long (the platform's limit)
    with_token: bool = False
    tokens_refused: int = 0


class _Raced(Exception):
    """Another worker moved the cursor since this one read it: its page was stored there."""


Transaction = Callable[[], AbstractContextManager[Session]]


def pull(transaction: Transaction, api: Any, open_kfid: str, *, now: Callable[[], datetime] = utcnow,
         max_pages: int | None = None) -> PullResult:
    """Pull one 客服账号's waiting messages page by page until ``has_more`` is false.

    API calls happen outside any transaction; each page is stored with its cursor in one.
    """
    result = PullResult()
    met: set[str] = set()  # customers of earlier pages of this pull: their profiles are not read again
    while max_pages is None or result.pages < max_pages:
        with transaction() as session:
            row = cursor_row(session, open_kfid)
            cursor, token = row.cursor, row.token
            current = now()
            fresh = bool(token) and row.token_at is not None and current - row.token_at < TOKEN_LIFE
            if not fresh:
                if row.tokenless_at is not None and current - row.tokenless_at < TOKENLESS_PULL_INTERVAL:
                    result.wait_seconds = (TOKENLESS_PULL_INTERVAL - (current - row.tokenless_at)).total_seconds()
                    return result
                row.tokenless_at = current
        try:
            page = api.kf_sync_msg(open_kfid, cursor=cursor, token=token if fresh else None)
        except WecomApiError as exc:
            if not (fresh and exc.errcode == INVALID_MSG_TOKEN):
                raise
            with transaction() as session:  # the token is not taken (any more): pull without it
                session.execute(update(KfCursor).where(KfCursor.open_kfid == open_kfid, KfCursor.token == token)
                                .values(token="", token_at=None))
            result.tokens_refused += 1
            continue
        result.with_token = result.with_token or fresh
        items = [item for item in page.get("msg_list") or [] if isinstance(item, dict)]
        parsed = [(item, parse(item)) for item in items]
        profiles = _profiles(transaction, api, [p.external_userid for _item, p in parsed if
                                                p.external_userid not in met])
        next_cursor = str(page.get("next_cursor") or cursor)
        try:
            with transaction() as session:
                moved = session.execute(update(KfCursor).where(KfCursor.open_kfid == open_kfid,
                                                               KfCursor.cursor == cursor)
                                        .values(cursor=next_cursor, pulled_at=now()),
                                        execution_options={"synchronize_session": False})
                if getattr(moved, "rowcount", 1) != 1:
                    raise _Raced()
                stored = store_page(session, open_kfid=open_kfid, items=items, profiles=profiles, parsed=parsed)
        except _Raced:
            result.raced += 1
            continue
        met.update(p.external_userid for _item, p in parsed)
        result.pages += 1
        result.stored += stored.stored
        result.duplicates += stored.duplicates
        result.welcomes += stored.welcomes
        if not page.get("has_more"):
            break
    return result


def _profiles(transaction: Transaction, api: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Nickname, avatar and unionid of the customers Siyu has not met yet (kf/customer/batchget)."""
    if not any(ids):
        return {}
    with transaction() as session:
        met = committed(session, KNOWN_CUSTOMERS)  # stored by earlier pages: no query, no profile read
        unknown = unknown_customers(session, [e for e in ids if e not in met])
    if not unknown:
        return {}
    try:
        return {str(c.get("external_userid")): c for c in api.kf_customers(unknown) if c.get("external_userid")}
    except WecomApiError as exc:
        if exc.retryable:
            raise
        log.warning("kf customer profiles not read (%s); customers are kept by their id", exc)
        return {}


# ---------------------------------------------------------------- the reply window


def window_refusal(session: Session, conversation: Conversation, *, before_id: int | None = None,
                   now: datetime | None = None) -> str | None:
    """Why the platform would refuse a reply in this conversation now (in the viewer's words), or None."""
    if conversation.channel != Channel.wecom_kf.value:
        return None
    if conversation.service_state == ServiceState.person:
        return _(SERVED_IN_WECOM, servicer=conversation.servicer_userid or _("A colleague"))
    if conversation.service_state == ServiceState.ended:
        return _(SESSION_ENDED)
    if conversation.service_state == ServiceState.queued:
        return _(IN_WECOM_QUEUE)
    now = now or utcnow()
    last_in = conversation.last_inbound_at
    if last_in is None or now - last_in > REPLY_WINDOW:
        return _(OUTSIDE_WINDOW)
    query = select(func.count()).select_from(Message).where(
        Message.conversation_id == conversation.id, Message.direction == Direction.outbound.value,
        Message.internal.is_(False), Message.status != DeliveryStatus.failed.value,
        Message.source.not_in([SOURCE, WELCOME_SOURCE]), Message.sent_at >= last_in)
    if before_id is not None:
        query = query.where(Message.id < before_id)
    if int(session.scalar(query) or 0) >= REPLIES_PER_CUSTOMER_MESSAGE:
        return _(WINDOW_FULL)
    return None


def check_reply(session: Session, conversation: Conversation, account: Account) -> None:
    """The delivery registry's reply check: a reply outside the window is refused at once."""
    if account.kind != AccountKind.wecom_kf.value:
        return
    reason = window_refusal(session, conversation)
    if reason is not None:
        raise Invalid(reason, field="text")


# ---------------------------------------------------------------- sending


def kf_content(outgoing: Outgoing) -> tuple[str, dict[str, Any]]:
    """msgtype and its object for kf/send_msg: a menu when the message carries one, else text."""
    menu = (outgoing.payload or {}).get("msgmenu")
    if outgoing.msg_type == MessageType.msgmenu.value and isinstance(menu, dict):
        return "msgmenu", {
            "head_content": str(menu.get("head_content") or ""),
            "list": [{"type": "click", "click": {"id": str(i.get("id")), "content": str(i.get("content"))}}
                     for i in menu.get("list") or [] if isinstance(i, dict)],
            "tail_content": str(menu.get("tail_content") or "")}
    return "text", {"content": outgoing.text}


@dataclass(frozen=True)
class KfConnector:
    """Sends replies of 微信客服 accounts through kf/send_msg (and welcomes through send_msg_on_event)."""

    api: Any

    def send_text(self, outgoing: Outgoing) -> Accepted:
        account = outgoing.account
        if not account.open_kfid:
            raise DeliveryError(_(NO_OPEN_KFID), permanent=True)
        external = outgoing.customer.wecom_external_userid if outgoing.customer is not None else None
        if not external:
            raise DeliveryError(_(NO_CUSTOMER), permanent=True)
        if len(outgoing.text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise DeliveryError(_(TOO_LONG), permanent=True)
        msgtype, content = kf_content(outgoing)
        msgid = msgid_for(outgoing.message_id)
        session = object_session(account)
        code = str((outgoing.payload or {}).get("welcome_code") or "")
        conversation = None
        if session is not None:
            message = session.get(Message, outgoing.message_id)
            conversation = session.get(Conversation, message.conversation_id) if message is not None else None
        try:
            if code:
                expires = (outgoing.payload or {}).get("code_expires_at")
                if expires and datetime.fromisoformat(str(expires)) <= utcnow():
                    raise DeliveryError(_(WELCOME_EXPIRED), permanent=True)
                sent = self.api.kf_send_on_event(code=code, msgid=msgid, msgtype=msgtype, content=content)
            else:
                if session is not None and conversation is not None:
                    reason = window_refusal(session, conversation, before_id=outgoing.message_id)
                    if reason is not None:
                        raise DeliveryError(reason, permanent=True)
                sent = self.api.kf_send(touser=external, open_kfid=account.open_kfid, msgid=msgid, msgtype=msgtype,
                                        content=content)
        except WecomApiError as exc:
            if exc.errcode == SESSION_SERVED_BY_PERSON:
                if conversation is not None:
                    conversation.service_state = ServiceState.person
                raise DeliveryError(_(SERVED_IN_WECOM_NOW), permanent=True) from exc
            if exc.retryable:
                raise DeliveryError(_(BUSY, detail=exc.display())) from exc
            if exc.errcode in WINDOW_ERRCODES:
                reason = WINDOW_FULL if WINDOW_ERRCODES[exc.errcode] == "full" else OUTSIDE_WINDOW
                raise DeliveryError(f"{_(reason)} ({exc.display()})", permanent=True) from exc
            if code:
                raise DeliveryError(f"{_(WELCOME_EXPIRED)} ({exc.display()})", permanent=True) from exc
            raise DeliveryError(exc.display(), permanent=True) from exc
        return Accepted(sent or msgid)


# ---------------------------------------------------------------- session state


def mirror_taken(session: Session, conversation: Conversation) -> None:
    """An agent took a 微信客服 conversation in Siyu: bring WeCom's session state along (after commit)."""
    if conversation.channel != Channel.wecom_kf.value:
        return
    from siyu.core import jobs

    jobs.enqueue_after_commit(session, "wecom.kf_jobs.take_session", conversation.id)


def take_session(session: Session, api: Any, conversation: Conversation) -> int | None:
    """Read the session's state and, when nobody handled it yet, put it with Siyu (智能助手, state 1).

    Siyu answers through the API, which the platform allows in states 0 and 1 only; moving the
    session to a person (3) would make every reply from Siyu fail with 95018, so a session stays
    with Siyu while its agents serve it. A session a person took in WeCom's client is left with
    them and shown. Returns the state now seen.
    """
    account = session.get(Account, conversation.account_id)
    customer = session.get(Customer, conversation.customer_id) if conversation.customer_id else None
    if account is None or not account.open_kfid or customer is None or not customer.wecom_external_userid:
        return None
    answer = api.kf_service_state(account.open_kfid, customer.wecom_external_userid)
    state = _int(answer.get("service_state"))
    servicer = str(answer.get("servicer_userid") or "")
    if state == ServiceState.untouched:  # the platform moves a session from 0 to 1, not back from 2, 3 or 4
        api.kf_trans(account.open_kfid, customer.wecom_external_userid, ServiceState.assistant)
        state, servicer = ServiceState.assistant, ""
    conversation.service_state = state
    conversation.servicer_userid = servicer[:64]
    session.flush()
    return state


# ---------------------------------------------------------------- registration


def connector_for(account: Account) -> KfConnector | None:
    """The delivery registry's factory: 微信客服 accounts, while the corp id and a Secret are set."""
    if account.kind != AccountKind.wecom_kf.value:
        return None
    from siyu.wecom.connector import kf_api

    api = kf_api(account)
    return KfConnector(api) if api is not None else None


def register() -> None:
    delivery.register(connector_for)
    channel_hooks.register_reply_check(check_reply)
    channel_hooks.register_taken_listener(mirror_taken)


def unregister() -> None:
    delivery.unregister(connector_for)
