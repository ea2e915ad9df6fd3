"""Full sync from WeCom: members, corp tags, every external contact with its follow users, groups.

Callbacks keep Siyu current minute by minute; the sync is the reconciliation that makes Siyu
and WeCom agree even after missed callbacks or a long outage. ``siyu wecom sync``, the
console's 立即同步 button and a nightly job run it.

- **Phases**: members (follow users → accounts; new members get an account) → corp tags
  (the whole list, so tags deleted on WeCom go) → contacts (``batch/get_by_user``, 100
  members per request, cursor pages of 100) → groups → reconcile.
- **Resumable**: each page is stored in one transaction together with the run's position
  (phase, member chunk, cursor), kept in ``app_setting['wecom.sync']``. A crash or a killed
  worker leaves the position of the last stored page; the next run continues from there and
  finds what it already stored by external user id, so nothing is created twice.
- **Fast**: a page is applied with a few set-based queries (existing customers and
  friendships looked up per page, new ones inserted in bulk), not one ORM round trip per contact.
- **New → created, changed → updated, gone → deleted**: a friendship seen in this run is
  stamped with the run number; after the contacts phase, active friendships of synced
  members that this run did not see are marked deleted with a timeline entry.
- **Conflicts** (WeCom's remark or description differs from a non-empty one in Siyu): the
  last writer wins and the timeline keeps both versions. Siyu's value is the later write while
  an operator's edit has not reached WeCom yet (its write-back pending or refused) — unless an
  edit callback says WeCom changed after it; then it is kept and written back again. Otherwise
  WeCom changed after Siyu's last write-back, and WeCom's value is taken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind
from siyu.core.db import utcnow
from siyu.core.models import AppSetting
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, CustomerTag, Friendship, FriendshipStatus, Phone, Touch, TouchKind
from siyu.customers.search import index as search
from siyu.customers.variables import is_unnamed, unnamed
from siyu.groups import service as groups_service

log = logging.getLogger(__name__)

STATE_KEY = "wecom.sync"
MEMBERS_PER_REQUEST = 100
PAGE_LIMIT = 100
PHASES = ("members", "tags", "contacts", "groups", "reconcile", "done")
# The name callback-created customers got before they were named ``variables.unnamed``: still replaced by
# the name WeCom gives, like the unnamed placeholder.
PLACEHOLDER_PREFIX = "企业微信客户"
GENDERS = {1: "男", 2: "女"}

def _placeholder(name: str | None) -> bool:
    """A name Siyu made up for a customer it knew only by id (WeCom's name replaces it)."""
    if not name or is_unnamed(name):
        return True
    tail = name[len(PLACEHOLDER_PREFIX):]
    return name.startswith(PLACEHOLDER_PREFIX) and 0 < len(tail) <= 6 and tail.isascii() and tail.isalnum()


Transaction = Callable[[], AbstractContextManager[Session]]
Progress = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------- the run's state


def read_state(session: Session) -> dict[str, Any]:
    row = session.get(AppSetting, STATE_KEY)
    return dict(row.value) if row is not None else {}


def _save_state(session: Session, state: dict[str, Any]) -> None:
    row = session.get(AppSetting, STATE_KEY)
    if row is None:
        session.add(AppSetting(key=STATE_KEY, value=dict(state)))
    else:
        row.value = dict(state)


def _new_state(previous: dict[str, Any]) -> dict[str, Any]:
    return {"run": int(previous.get("run") or 0) + 1, "status": "running", "phase": "members", "chunk": 0,
            "cursor": "", "group_index": 0, "userids": [], "started_at": utcnow().isoformat(), "finished_at": None,
            "error": "", "counts": {"members": 0, "accounts_created": 0, "contacts": 0, "customers_created": 0,
                                    "friendships_created": 0, "friendships_updated": 0, "gone": 0, "groups": 0}}


def is_running(session: Session) -> bool:
    return read_state(session).get("status") == "running"


# ---------------------------------------------------------------- one page of contacts


def _local_accounts(session: Session, userids: list[str]) -> dict[str, int]:
    return {u: a for a, u in session.execute(select(Account.id, Account.wecom_userid).where(
        Account.wecom_userid.in_(userids))) if u}


def _siyu_wrote_last(friendship: Friendship, wecom_changed_at: datetime | None) -> bool:
    """Whether Siyu's remark fields are the later write: an operator's edit not yet written back
    to WeCom (a write-back pending or refused), newer than WeCom's change when its time is known."""
    edited, written = friendship.siyu_edited_at, friendship.wecom_written_at
    if edited is None or (written is not None and written >= edited):
        return False
    return wecom_changed_at is None or edited > wecom_changed_at


def apply_page(session: Session, items: list[dict[str, Any]], *, accounts: dict[str, int],
               run: int | None, wecom_changed_at: datetime | None = None) -> dict[str, int]:
    """Store one ``batch/get_by_user`` page: customers, friendships, phones and tags, in bulk.

    ``run`` stamps the friendships seen by a sync run; a callback reading one contact passes None,
    and the event's time as ``wecom_changed_at`` (a sync cannot know when WeCom's values changed).
    """
    counts = {"contacts": 0, "customers_created": 0, "friendships_created": 0, "friendships_updated": 0}
    items = [i for i in items if (i.get("external_contact") or {}).get("external_userid")
             and (i.get("follow_info") or {}).get("userid") in accounts]
    if not items:
        return counts
    counts["contacts"] = len(items)
    now = utcnow()
    contacts = {i["external_contact"]["external_userid"]: i["external_contact"] for i in items}
    known = {ext: (cid, name) for cid, ext, name in session.execute(
        select(Customer.id, Customer.wecom_external_userid, Customer.name)
        .where(Customer.wecom_external_userid.in_(sorted(contacts))))}
    new = sorted(ext for ext in contacts if ext not in known)
    if new:
        ids = list(session.scalars(insert(Customer).returning(Customer.id, sort_by_parameter_order=True), [
            {"name": (contacts[ext].get("name") or unnamed(ext))[:128], "wecom_external_userid": ext,
             "avatar_url": (contacts[ext].get("avatar") or "")[:512],
             "gender": GENDERS.get(int(contacts[ext].get("gender") or 0), ""), "source": "wecom",
             "created_at": now, "updated_at": now} for ext in new]))
        known.update({ext: (cid, contacts[ext].get("name") or "") for ext, cid in zip(new, ids, strict=True)})
        counts["customers_created"] = len(new)
        search.mark_dirty(session, ids)
    renamed = [(cid, contacts[ext].get("name")) for ext, (cid, name) in known.items()
               if ext not in new and contacts[ext].get("name") and _placeholder(name)]
    for customer_id, name in renamed:
        session.execute(update(Customer).where(Customer.id == customer_id).values(name=str(name)[:128], updated_at=now),
                        execution_options={"synchronize_session": False})
    search.mark_dirty(session, [cid for cid, _n in renamed])

    customer_ids = sorted({cid for cid, _n in known.values()})
    existing = {(f.customer_id, f.account_id): f for f in session.scalars(
        select(Friendship).where(Friendship.customer_id.in_(customer_ids),
                                 Friendship.account_id.in_(sorted(set(accounts.values())))))}
    phones_by_friendship: dict[int, set[str]] = {}
    if existing:
        for fid, number in session.execute(select(Phone.friendship_id, Phone.number).where(
                Phone.friendship_id.in_([f.id for f in existing.values()]))):
            phones_by_friendship.setdefault(fid, set()).add(number)
    tag_mirrors = groups_service.tags_by_wecom_id(
        session, {t for i in items for t in (i.get("follow_info") or {}).get("tag_id") or []})
    have_tags = {(cid, tid) for cid, tid in session.execute(select(CustomerTag.customer_id, CustomerTag.tag_id)
                                                             .where(CustomerTag.customer_id.in_(customer_ids)))}
    new_friendships: list[dict[str, Any]] = []
    new_phones: dict[tuple[int, int], list[str]] = {}
    touches: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    rewrite: set[int] = set()  # customers whose newer Siyu edit won: written back to WeCom
    for item in items:
        ext = item["external_contact"]["external_userid"]
        follow = item["follow_info"]
        customer_id, account_id = known[ext][0], accounts[follow["userid"]]
        remark, description = str(follow.get("remark") or "")[:128], str(follow.get("description") or "")
        mobiles = [customers_service.normalise_phone(m) for m in follow.get("remark_mobiles") or [] if m]
        friendship = existing.get((customer_id, account_id))
        if friendship is None:
            added = datetime.fromtimestamp(int(follow.get("createtime") or 0), tz=UTC) if follow.get("createtime") \
                else now
            new_friendships.append({"customer_id": customer_id, "account_id": account_id, "remark_name": remark,
                                    "description": description, "status": FriendshipStatus.active.value,
                                    "channel_state": str(follow.get("state") or "")[:64], "added_at": added,
                                    "wecom_synced_run": run})
            new_phones[(customer_id, account_id)] = mobiles
        else:
            changed: dict[str, Any] = {}
            both: dict[str, tuple[str, str]] = {}
            siyu_later = _siyu_wrote_last(friendship, wecom_changed_at)
            for field, value in (("remark_name", remark), ("description", description)):
                mine = getattr(friendship, field)
                if value != mine and value:
                    if mine:
                        both[field] = (mine, value)
                    if siyu_later and mine:
                        continue  # kept; the write-back below brings WeCom level again
                    changed[field] = value
            if both and siyu_later:
                rewrite.add(customer_id)
            if friendship.status != FriendshipStatus.active.value:
                changed.update(status=FriendshipStatus.active.value, removed_at=None)
            if changed:
                counts["friendships_updated"] += 1
            if run is not None:
                changed["wecom_synced_run"] = run
            if both:
                touches.append({"customer_id": customer_id, "account_id": account_id, "user_id": None,
                                "kind": TouchKind.field_change.value, "content": "", "amount": None,
                                "details": {"fields": sorted(both), "via": "wecom_sync",
                                            "siyu": {k: v[0] for k, v in both.items()},
                                            "wecom": {k: v[1] for k, v in both.items()},
                                            "kept": "siyu" if siyu_later else "wecom"},
                                "occurred_at": now, "created_at": now})
            for field, value in changed.items():
                setattr(friendship, field, value)
            have = phones_by_friendship.get(friendship.id, set())
            extra = [m for m in mobiles if m and m not in have]
            if extra:
                session.add_all(Phone(friendship_id=friendship.id, customer_id=customer_id, number=m) for m in extra)
        for wecom_tag in follow.get("tag_id") or []:
            tag = tag_mirrors.get(wecom_tag)
            if tag is not None and (customer_id, tag.id) not in have_tags:
                have_tags.add((customer_id, tag.id))
                links.append({"customer_id": customer_id, "tag_id": tag.id, "created_at": now})
    if new_friendships:
        made = list(session.scalars(insert(Friendship).returning(Friendship.id, sort_by_parameter_order=True),
                                    new_friendships))
        phones = [{"friendship_id": fid, "customer_id": row["customer_id"], "number": m}
                  for fid, row in zip(made, new_friendships, strict=True)
                  for m in dict.fromkeys(new_phones[(row["customer_id"], row["account_id"])]) if m]
        if phones:
            session.execute(insert(Phone), phones)
        search.mark_dirty(session, [row["customer_id"] for row in new_friendships])  # remarks, phones: plain INSERTs
        counts["friendships_created"] = len(made)
    if links:
        session.execute(insert(CustomerTag), links)
    if touches:
        session.execute(insert(Touch), touches)
    session.flush()
    if rewrite:
        customers_service.notify_changed(session, sorted(rewrite), {"remark_name", "description", "phones"})
    if new or links:
        fresh = list(session.scalars(select(Customer).where(Customer.id.in_(
            sorted({known[e][0] for e in new} | {link["customer_id"] for link in links})))))
        customers_service.refresh_computed_many(session, customers=fresh)
    return counts


# ---------------------------------------------------------------- the phases


def run(transaction: Transaction, api: Any, *, restart: bool = False, progress: Progress | None = None,
        stop_after_pages: int | None = None) -> dict[str, Any]:
    """Run (or resume) a full sync; returns the final state. ``stop_after_pages`` is for crash tests."""
    with transaction() as session:
        state = read_state(session)
        if restart or state.get("status") != "running":
            state = _new_state(state)
            _save_state(session, state)
    pages = 0
    try:
        while state["phase"] != "done":
            with transaction() as session:
                state = read_state(session)
                state = _step(session, api, state)
                _save_state(session, state)
            pages += 1
            if progress is not None:
                progress(state)
            if stop_after_pages is not None and pages >= stop_after_pages and state["phase"] != "done":
                return state
    except Exception as exc:
        with transaction() as session:
            state = read_state(session)
            state["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            _save_state(session, state)  # still "running": the next run resumes where this one stopped
        raise
    return state


def _step(session: Session, api: Any, state: dict[str, Any]) -> dict[str, Any]:
    """One unit of work of the current phase, stored together with the new position."""
    counts = state["counts"]
    phase = state["phase"]
    if phase == "members":
        userids = sorted(api.follow_users())
        names = {m.get("userid"): m.get("name") for m in api.members()}
        have = _local_accounts(session, userids)
        for userid in userids:
            if userid not in have:
                session.add(Account(kind=AccountKind.wecom.value, display_name=str(names.get(userid) or userid)[:64],
                                    wecom_userid=userid))
                counts["accounts_created"] += 1
        state.update(userids=userids, phase="tags")
        counts["members"] = len(userids)
    elif phase == "tags":
        groups_service.apply_corp_tags(session, api.corp_tags(), complete=True)
        state["phase"] = "contacts"
    elif phase == "contacts":
        chunks = [state["userids"][i:i + MEMBERS_PER_REQUEST]
                  for i in range(0, len(state["userids"]), MEMBERS_PER_REQUEST)]
        if state["chunk"] >= len(chunks):
            state.update(phase="groups", cursor="")
            return state
        members = chunks[state["chunk"]]
        page = api.external_contacts_page(members, cursor=state["cursor"], limit=PAGE_LIMIT)
        found = apply_page(session, page.get("external_contact_list", []),
                           accounts=_local_accounts(session, members), run=state["run"])
        for key, value in found.items():
            counts[key] = counts.get(key, 0) + value
        cursor = page.get("next_cursor", "")
        state["cursor"] = cursor
        if not cursor:
            state["chunk"] += 1
    elif phase == "groups":
        chats = state.get("chat_ids")
        if chats is None:
            state["chat_ids"] = [c.get("chat_id") for c in api.group_chats() if c.get("chat_id")]
            state["group_index"] = 0
            return state
        index = state["group_index"]
        for chat_id in chats[index:index + 20]:
            try:
                groups_service.apply_group_chat(session, api.group_chat(chat_id))
            except Exception as exc:  # a group dismissed meanwhile is the next callback's to report
                if getattr(exc, "errcode", None) != 49008:
                    raise
                groups_service.dismiss_group_chat(session, chat_id)
            counts["groups"] += 1
        state["group_index"] = index + 20
        if state["group_index"] >= len(chats):
            state.pop("chat_ids", None)
            state["phase"] = "reconcile"
    elif phase == "reconcile":
        counts["gone"] = _mark_gone(session, userids=state["userids"], run=state["run"])
        state.update(phase="done", status="done", finished_at=utcnow().isoformat(), error="")
    return state


def _mark_gone(session: Session, *, userids: list[str], run: int) -> int:
    """Active friendships of synced members that this run did not see: deleted on WeCom."""
    account_ids = sorted(_local_accounts(session, userids).values())
    if not account_ids:
        return 0
    gone = list(session.execute(select(Friendship.id, Friendship.customer_id, Friendship.account_id)
                                .join(Customer, Customer.id == Friendship.customer_id)
                                .where(Friendship.account_id.in_(account_ids),
                                       Friendship.status == FriendshipStatus.active.value,
                                       Customer.wecom_external_userid.is_not(None),
                                       (Friendship.wecom_synced_run.is_(None)) | (Friendship.wecom_synced_run != run))))
    if not gone:
        return 0
    now = utcnow()
    session.execute(update(Friendship).where(Friendship.id.in_([g.id for g in gone]))
                    .values(status=FriendshipStatus.deleted.value, removed_at=now),
                    execution_options={"synchronize_session": False})
    session.execute(insert(Touch), [
        {"customer_id": g.customer_id, "account_id": g.account_id, "user_id": None, "kind": TouchKind.system.value,
         "content": "", "amount": None, "details": {"event": "wecom_sync_gone", "run": run},
         "occurred_at": now, "created_at": now} for g in gone])
    return len(gone)


NIGHTLY_HOUR, NIGHTLY_MINUTE = 3, 30  # wecom.jobs.nightly_sync's crontab


def next_nightly_run(now: datetime | None = None) -> datetime:
    """When the nightly sync runs next (the worker's local clock)."""
    from datetime import timedelta

    from siyu.core.settings import local_zone

    local = (now or utcnow()).astimezone(local_zone())
    due = local.replace(hour=NIGHTLY_HOUR, minute=NIGHTLY_MINUTE, second=0, microsecond=0)
    return due if due > local else due + timedelta(days=1)
