"""What a stored WeCom event changes in Siyu. Every handler is safe to run twice.

- A new external contact becomes (or re-joins) a customer with a friendship to the account
  whose WeCom ``UserID`` it added, keeping the contact way ``State``; the add is attributed
  to the channel with that state (tags, coupon, welcome text).
- A deleted friendship (by either side) is marked, attributed as lost, and put on the
  customer's timeline as a churn alert, with who ended it (``Friendship.ended_by``) for the churn
  list and review (``maintenance.churn``).
- ``kf_msg_or_event`` (微信客服) keeps the callback's token and pulls the waiting messages after
  the commit (``wecom.kf``). WeCom pushes no customer chat text to a callback: a ``message/*``
  callback comes from a member writing to an app, and is stored and ignored.
- ``msgaudit_notify`` (会话存档) pulls the chat archive after the commit (``wecom.archive``);
  ``msg_audit_approved`` records that a customer agreed to archiving.
- With the API connected (``api``): an add sends the channel's welcome message with the
  event's ``WelcomeCode`` first (WeCom allows 20 seconds), then reads the contact (name,
  remark, phones, corp tags) into Siyu; customer-group changes read the group
  (``groups.service``); corp tag changes read or delete the mirrored tags.
- Kinds Siyu does not act on are kept and marked *ignored*.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.channels import service as channels_service
from siyu.core.db import utcnow
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.customers.variables import unnamed
from siyu.wecom.models import EventStatus, WecomEvent

log = logging.getLogger(__name__)
CHURN_EVENTS = {"change_external_contact/del_external_contact": "member",  # our member removed the customer
                "change_external_contact/del_follow_user": "customer"}  # the customer removed our member


GROUP_GONE = 49008  # groupchat/get: the group was dismissed
KF_EVENT = "kf_msg_or_event"  # 微信客服: messages wait to be pulled with kf/sync_msg
ARCHIVE_EVENT = "msgaudit_notify"  # 会话存档: new messages wait to be pulled with GetChatData (W:95039)
ARCHIVE_CONSENT_EVENT = "change_external_contact/msg_audit_approved"  # a customer agreed to archiving


class EventError(Exception):
    """Processing failed in a way a retry may fix (e.g. the account is not set up yet)."""


def _at(fields: dict[str, Any]) -> datetime:
    try:
        return datetime.fromtimestamp(int(fields.get("CreateTime") or 0), tz=UTC) if fields.get("CreateTime") \
            else utcnow()
    except (ValueError, OverflowError):
        return utcnow()


def _accounts(session: Session, userids: list[str]) -> dict[str, Account]:
    """The accounts of these WeCom members, by UserID; one that is not set up fails the events."""
    wanted = sorted(set(userids))
    found = {a.wecom_userid: a for a in session.scalars(select(Account).where(Account.wecom_userid.in_(wanted)))
             if a.wecom_userid} if any(wanted) else {}
    for userid in wanted:
        if userid not in found:
            raise EventError(f"no account with WeCom UserID {userid!r}")
    return found


def _account(session: Session, fields: dict[str, Any]) -> Account:
    userid = fields.get("UserID", "")
    return _accounts(session, [userid])[userid]


def _customers(session: Session, external_userids: list[str], *, create: bool) -> dict[str, Customer]:
    """Customers by WeCom external user id; with ``create``, the ones not known yet are made."""
    wanted = sorted({e for e in external_userids if e})
    found = {c.wecom_external_userid: c for c in session.scalars(select(Customer).where(
        Customer.wecom_external_userid.in_(wanted)))} if wanted else {}
    missing = [e for e in wanted if e not in found]
    if create and missing:
        # The callback carries no name; the API sync (or the next edit event) fills it in.
        new = [Customer(name=unnamed(e), wecom_external_userid=e, source="wecom") for e in missing]
        session.add_all(new)
        session.flush()
        found.update({c.wecom_external_userid: c for c in new})
    return {e: c for e, c in found.items() if e}


def _customer(session: Session, external_userid: str, *, create: bool) -> Customer | None:
    return _customers(session, [external_userid], create=create).get(external_userid)


ADD_EVENTS = ("change_external_contact/add_external_contact", "change_external_contact/add_half_external_contact")
API_EVENT_PREFIXES = (*ADD_EVENTS, "change_external_contact/edit_external_contact", "change_external_chat/",
                      "change_external_tag/")


def needs_api(event_types: Iterable[str]) -> bool:
    """Whether any of these events reads or writes through the WeCom API while processed (a kf pull runs
    after the commit, as its own job)."""
    return any(kind.startswith(API_EVENT_PREFIXES) for kind in event_types)


def connected_api(session: Session) -> Any | None:
    """The WeCom API with a fresh token, or None when no corp secret is configured.

    Called before a batch's write transaction: a token fetched (and stored) inside it would
    wait for the batch's own write lock on SQLite.
    """
    from siyu.wecom.client import WecomApiError, WecomNotConfigured, client_for

    try:
        api = client_for(session)
        _ = api.client.access_token
    except WecomNotConfigured:
        return None
    except WecomApiError as exc:
        if exc.retryable:
            raise
        log.warning("WeCom API unavailable for events: %s", exc)
        return None
    return api


def process(session: Session, event: WecomEvent, *, touched: list[Customer] | None = None,
            api: Any | None = None) -> str:
    """Apply one event; returns the status it ends in.

    Customers whose computed facts need refreshing are appended to ``touched`` when given (the
    caller refreshes a batch of events at once), else refreshed here.
    """
    fields: dict[str, Any] = event.fields or {}
    kind = event.event_type
    if kind in ADD_EVENTS:
        added = _added(session, [fields], api=api)
        if touched is None:
            from siyu.customers import service as customers_service

            customers_service.refresh_computed_many(session, customers=added)
        else:
            touched.extend(added)
    elif kind in CHURN_EVENTS:
        _removed(session, fields, side=CHURN_EVENTS[kind])
    elif kind == "change_external_contact/edit_external_contact":
        customer = _customer(session, fields.get("ExternalUserID", ""), create=False)
        if customer is not None:
            session.add(Touch(customer_id=customer.id, kind=TouchKind.system.value, occurred_at=_at(fields),
                              details={"event": "wecom_profile_edited", "userid": fields.get("UserID", "")}))
            if api is not None:
                _read_contact(session, api, customer.wecom_external_userid or "", changed_at=_at(fields))
    elif kind.startswith("change_external_chat/") and api is not None:
        _group_changed(session, api, fields, change=kind.split("/", 1)[1])
    elif kind.startswith("change_external_tag/") and api is not None:
        _tag_changed(session, api, fields, change=kind.split("/", 1)[1])
    elif kind == "change_external_contact/transfer_fail":
        customer = _customer(session, fields.get("ExternalUserID", ""), create=False)
        if customer is not None:
            session.add(Touch(customer_id=customer.id, kind=TouchKind.system.value, occurred_at=_at(fields),
                              content=fields.get("FailReason", ""),
                              details={"event": "wecom_transfer_failed", "userid": fields.get("UserID", "")}))
    elif kind == KF_EVENT:
        _kf_waiting(session, fields)
    elif kind == ARCHIVE_EVENT:
        _archive_waiting(session, fields)
    elif kind == ARCHIVE_CONSENT_EVENT:
        from siyu.wecom import archive

        archive.record_consent(session, userid=str(fields.get("UserID") or ""),
                               external_userid=str(fields.get("ExternalUserID") or ""), status="approved",
                               at=_at(fields))
    else:  # message/* included: WeCom sends those for members writing to an app, never customers' chats
        return EventStatus.ignored.value
    session.flush()
    return EventStatus.processed.value


def runs(events: list[WecomEvent], *, api: Any | None) -> list[list[WecomEvent]]:
    """A batch cut into runs applied together, in order: consecutive friend-adds, every other event alone.

    Adds are run together only when no API call is made: nothing leaves Siyu then, so a run that
    fails can be applied again one event at a time. A run never holds the same member and
    contact twice, which keeps "a re-add of a friendship" meaning what it means one at a time.
    """
    cut: list[list[WecomEvent]] = []
    pairs: set[tuple[str, str]] = set()
    for event in events:
        fields = event.fields or {}
        pair = (fields.get("UserID", ""), fields.get("ExternalUserID", ""))
        together = api is None and event.event_type in ADD_EVENTS
        if together and cut and cut[-1][-1].event_type in ADD_EVENTS and pair not in pairs:
            cut[-1].append(event)
        else:
            cut.append([event])
            pairs = set()
        pairs.add(pair)
    return cut


def process_run(session: Session, run: list[WecomEvent], *, touched: list[Customer],
                api: Any | None = None) -> str:
    """Apply a run from ``runs``: one event through ``process``, or friend-adds set-based."""
    if len(run) == 1:
        return process(session, run[0], touched=touched, api=api)
    touched.extend(_added(session, [event.fields or {} for event in run], api=None))
    session.flush()
    return EventStatus.processed.value


def _added(session: Session, adds: list[dict[str, Any]], *, api: Any | None = None) -> list[Customer]:
    """Friend-adds, in order: customers, friendships, channel attribution; the customers, one per add."""
    accounts = _accounts(session, [fields.get("UserID", "") for fields in adds])
    external_userids = [fields.get("ExternalUserID", "") for fields in adds]
    if not all(external_userids):
        raise EventError("add event without ExternalUserID")
    customers = _customers(session, external_userids, create=True)
    pairs = [(customers[e].id, accounts[f.get("UserID", "")].id) for e, f in zip(external_userids, adds, strict=True)]
    friendships = {(f.customer_id, f.account_id): f for f in session.scalars(select(Friendship).where(
        tuple_(Friendship.customer_id, Friendship.account_id).in_(sorted(set(pairs)))))}
    for (customer_id, account_id), fields in zip(pairs, adds, strict=True):
        at, state = _at(fields), fields.get("State", "")[:64]
        friendship = friendships.get((customer_id, account_id))
        if friendship is None:
            friendships[(customer_id, account_id)] = friendship = Friendship(
                customer_id=customer_id, account_id=account_id, added_at=at, channel_state=state)
            session.add(friendship)
        elif friendship.status != FriendshipStatus.active.value:
            friendship.status, friendship.removed_at, friendship.added_at = FriendshipStatus.active.value, None, at
            friendship.channel_state = state or friendship.channel_state
    session.flush()
    if api is not None:
        # Read the contact before the welcome is written: {昵称} and {备注名} need the name and the
        # remark. Nothing has been sent yet, so a busy WeCom may still fail the whole event (it is
        # retried); once the welcome — with its coupon — is out, nothing after it may fail the add.
        for external_userid in dict.fromkeys(external_userids):
            _read_contact(session, api, external_userid)
            session.refresh(customers[external_userid])  # the page writer updates names set-based
    outcomes = channels_service.on_friends_added(session, [
        channels_service.FriendAdd(customer_id=customer_id, account_id=account_id,
                                   state=fields.get("State", "")[:64], added_at=_at(fields))
        for (customer_id, account_id), fields in zip(pairs, adds, strict=True)])
    for (customer_id, account_id), fields, outcome in zip(pairs, adds, outcomes, strict=True):
        welcome_sent: bool | str = False
        if api is not None and (outcome.welcome or outcome.material_ids) and fields.get("WelcomeCode"):
            attachments = outcome.attachments
            if outcome.material_ids:  # images and mini-program covers go as temporary material (W:90253)
                from siyu.library import service as library_service
                from siyu.wecom import media

                attachments = media.welcome_attachments(
                    session, api, library_service.welcome_materials(session, outcome.material_ids))
            if outcome.welcome or attachments:
                welcome_sent = _send_welcome(api, fields["WelcomeCode"], outcome.welcome or "", attachments)
        session.add(Touch(customer_id=customer_id, account_id=account_id, kind=TouchKind.system.value,
                          occurred_at=_at(fields),
                          details={"event": "wecom_friend_added", "state": fields.get("State", "")[:64],
                                   "welcome": outcome.welcome, "welcome_code": fields.get("WelcomeCode", ""),
                                   "welcome_sent": welcome_sent, "alert": outcome.alert}))
    return [customers[e] for e in external_userids]


def _send_welcome(api: Any, code: str, text: str, attachments: list[dict[str, Any]] | None = None) -> bool | str:
    """True when WeCom took the welcome message, else its reason (the code lives 20 s and works once)."""
    from siyu.wecom.client import WecomApiError

    try:
        if attachments:  # the channel's materials from the library (W:92137)
            api.send_welcome_message(code, text=text, attachments=attachments)
        else:
            api.send_welcome_message(code, text=text)
    except WecomApiError as exc:
        if exc.retryable:
            raise
        log.warning("welcome message refused: %s", exc)
        return exc.display()
    return True


def _read_contact(session: Session, api: Any, external_userid: str, *, changed_at: datetime | None = None) -> None:
    """The contact's name, remarks, phones and corp tags as WeCom has them (the sync's page writer)."""
    from siyu.wecom import sync
    from siyu.wecom.client import WecomApiError

    if not external_userid:
        return
    try:
        detail = api.external_contact(external_userid)
    except WecomApiError as exc:
        if exc.retryable:
            raise
        log.warning("contact %s could not be read: %s", external_userid, exc)
        return
    items = [{"external_contact": detail.get("external_contact") or {}, "follow_info": follow}
             for follow in detail.get("follow_user") or []]
    for item in items:  # externalcontact/get lists tags as objects; the page writer takes ids
        item["follow_info"] = {**item["follow_info"], "tag_id": [t.get("tag_id") for t in
                                                                 item["follow_info"].get("tags") or []
                                                                 if t.get("tag_id")]}
    userids = [i["follow_info"].get("userid", "") for i in items]
    accounts = {u: a for a, u in session.execute(select(Account.id, Account.wecom_userid)
                                                 .where(Account.wecom_userid.in_(userids))) if u}
    session.flush()
    sync.apply_page(session, items, accounts=accounts, run=None, wecom_changed_at=changed_at)


def _group_changed(session: Session, api: Any, fields: dict[str, Any], *, change: str) -> None:
    from siyu.groups import service as groups_service
    from siyu.wecom.client import WecomApiError

    chat_id = fields.get("ChatId", "")
    if not chat_id:
        raise EventError("change_external_chat without ChatId")
    at = _at(fields)
    if change == "dismiss":
        groups_service.dismiss_group_chat(session, chat_id, at)
        return
    try:
        detail = api.group_chat(chat_id)
    except WecomApiError as exc:
        if exc.errcode == GROUP_GONE:
            groups_service.dismiss_group_chat(session, chat_id, at)
            return
        raise
    quit_scene = int(fields["QuitScene"]) if str(fields.get("QuitScene", "")).isdigit() else None
    groups_service.apply_group_chat(session, detail, at=at, quit_scene=quit_scene)


def _tag_changed(session: Session, api: Any, fields: dict[str, Any], *, change: str) -> None:
    from siyu.groups import service as groups_service

    wecom_id, kind = fields.get("Id", ""), fields.get("TagType", "tag")
    if not wecom_id:
        raise EventError("change_external_tag without Id")
    if change == "delete":
        groups_service.delete_corp_tag(session, wecom_id, kind)
        return
    tag_groups = api.corp_tags(group_ids=[wecom_id]) if kind == "tag_group" else api.corp_tags(tag_ids=[wecom_id])
    groups_service.apply_corp_tags(session, tag_groups)


def _removed(session: Session, fields: dict[str, Any], *, side: str) -> None:
    account = _account(session, fields)
    customer = _customer(session, fields.get("ExternalUserID", ""), create=False)
    if customer is None:
        return  # never known: nothing to mark
    at = _at(fields)
    friendship = session.scalar(select(Friendship).where(Friendship.customer_id == customer.id,
                                                         Friendship.account_id == account.id))
    if friendship is not None and friendship.status == FriendshipStatus.active.value:
        friendship.status, friendship.removed_at = FriendshipStatus.deleted.value, at
        friendship.ended_by = side
        channels_service.on_friend_removed(session, customer_id=customer.id, account_id=account.id, at=at)
        session.add(Touch(customer_id=customer.id, account_id=account.id, kind=TouchKind.system.value,
                          occurred_at=at, details={"event": "churn", "side": side}))


def _kf_waiting(session: Session, fields: dict[str, Any]) -> None:
    """kf_msg_or_event: something waits in a 微信客服 account; keep the token and pull after the commit."""
    from siyu.core import jobs
    from siyu.wecom import kf

    open_kfid = str(fields.get("OpenKfId") or "")
    if not open_kfid:
        raise EventError("kf_msg_or_event without OpenKfId")
    kf.note_callback(session, open_kfid=open_kfid, token=str(fields.get("Token") or ""))
    queued: set[str] = session.info.setdefault("siyu_kf_pulls", set())
    if open_kfid not in queued:  # one pull per account for a batch of callbacks
        queued.add(open_kfid)
        jobs.enqueue_after_commit(session, "wecom.kf_jobs.pull_messages", open_kfid)
        jobs.enqueue_after_commit(session, lambda: queued.discard(open_kfid))


def _archive_waiting(session: Session, fields: dict[str, Any]) -> None:
    """msgaudit_notify: the chat archive has new messages; pull after the commit (one pull per batch)."""
    from siyu.core import jobs
    from siyu.wecom import archive

    archive.note_notify(session)
    if not session.info.get("siyu_archive_pull"):
        session.info["siyu_archive_pull"] = True
        jobs.enqueue_after_commit(session, "wecom.archive_jobs.pull_archive")
        jobs.enqueue_after_commit(session, lambda: session.info.pop("siyu_archive_pull", None))
