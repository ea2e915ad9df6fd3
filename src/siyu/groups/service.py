"""WeCom customer groups and corp tags, mirrored from what the platform's API returns.

Why it is shaped this way: a WeCom callback carries only ids (``ChatId`` + ``ChangeType``,
or a tag ``Id`` + ``TagType``); the caller fetches the detail (``externalcontact/groupchat/get``,
``externalcontact/get_corp_tag_list``) and hands the platform's JSON to these functions, which
reconcile Siyu with it. Events arrive late, twice, and out of order, so nothing here
trusts the event: every function compares the platform's current state with Siyu's and
changes only the difference. Applying the same payload twice changes nothing the second
time — no second timeline entry, no second audit entry, not even ``updated_at``.

Every function works in the caller's transaction and never commits.

Scoping: a group belongs to the account whose ``wecom_userid`` is the group owner's; an
admin or planner sees every group, an operator or service user only the groups of their
accounts (a group of another account answers not found).

Layering: this module runs the group parts' share of a sync and a dismissal (registry roles,
group codes, the intake plan, posts), so those parts never import it; what they read about
groups (scope, ``get_group``, customers behind members) lives in ``groups.queries``, which
is re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, selectinload

from siyu.accounts.models import Account
from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.core.pagination import Page, decode_cursor, encode_cursor
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, CustomerTag, Tag, TagGroup, TagGroupKind, Touch, TouchKind
from siyu.groups import codes, onboarding, posts, registry
from siyu.groups.models import (
    ChangeKind,
    GroupChat,
    GroupChatStatus,
    GroupMember,
    GroupMemberChange,
    GroupMessage,
    MemberType,
)
from siyu.groups.queries import GroupNotFound as GroupNotFound
from siyu.groups.queries import batches as _batches
from siyu.groups.queries import get_group as get_group
from siyu.groups.queries import live_customer_ids as live_customer_ids
from siyu.groups.queries import visible_customer_ids as visible_customer_ids
from siyu.groups.queries import visible_group_clause as visible_group_clause
from siyu.team import service as team_service

log = logging.getLogger(__name__)

MAX_SORT_ORDER = 2**31 - 1
CORP_TAG_KINDS = ("tag", "tag_group")


# ---------------------------------------------------------------- reading the platform's JSON


def _text(value: Any, limit: int) -> str:
    return str(value).strip()[:limit] if value is not None else ""


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    """A platform timestamp (seconds since 1970) as an aware datetime; 0 or garbage is unknown."""
    seconds = _int(value)
    if not seconds or seconds < 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class _MemberIn:
    userid: str
    member_type: int
    join_time: datetime | None
    join_scene: int | None
    invitor_userid: str
    group_nickname: str
    name: str | None  # None: the call did not ask for names (need_name=0); keep what is known
    unionid: str
    state: str


def _member_in(raw: Any) -> _MemberIn | None:
    if not isinstance(raw, dict):
        return None
    userid = _text(raw.get("userid"), 64)
    if not userid:
        return None
    kind = _int(raw.get("type"))
    if kind not in (MemberType.staff, MemberType.external):
        # WeCom ids of external contacts start with "wm"/"wo"; a corp member's UserID never does.
        kind = MemberType.external if userid.startswith(("wm", "wo")) else MemberType.staff
    invitor = raw.get("invitor")
    return _MemberIn(
        userid=userid, member_type=int(kind), join_time=_time(raw.get("join_time")),
        join_scene=_int(raw.get("join_scene")),
        invitor_userid=_text(invitor.get("userid"), 64) if isinstance(invitor, dict) else "",
        group_nickname=_text(raw.get("group_nickname"), 128),
        name=_text(raw.get("name"), 128) if "name" in raw else None,
        unionid=_text(raw.get("unionid"), 64), state=_text(raw.get("state"), 64))


def _admins(raw: Any) -> list[str]:
    admins: list[str] = []
    for item in raw if isinstance(raw, list) else []:
        userid = _text(item.get("userid"), 64) if isinstance(item, dict) else _text(item, 64)
        if userid and userid not in admins:
            admins.append(userid)
    return admins


def _customer_ids(session: Session, external_userids: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _batches(sorted(set(external_userids))):
        for external_userid, customer_id in session.execute(
                select(Customer.wecom_external_userid, Customer.id).where(Customer.wecom_external_userid.in_(chunk))):
            found[str(external_userid)] = customer_id
    return found


def _owner_account_id(session: Session, userid: str) -> int | None:
    return session.scalar(select(Account.id).where(Account.wecom_userid == userid)) if userid else None


def _set(obj: Any, name: str, value: Any) -> bool:
    if getattr(obj, name) == value:
        return False
    setattr(obj, name, value)
    return True


# ---------------------------------------------------------------- group chats


def get_by_chat_id(session: Session, chat_id: str) -> GroupChat | None:
    return session.scalar(select(GroupChat).where(GroupChat.chat_id == chat_id))


def apply_group_chat(session: Session, detail: dict[str, Any], *, at: datetime | None = None,
                     quit_scene: int | None = None) -> GroupChat:
    """Make Siyu's copy of one group match ``detail`` (``group_chat`` of ``groupchat/get``).

    The group is created or updated (name, owner → account, notice, admins); members in the
    list and not current in Siyu join (a member who had left is reactivated), current
    members missing from the list leave (``left_at`` = ``at``, default now, with the
    callback's ``quit_scene`` when the caller has one). Each join and quit is one
    ``GroupMemberChange`` and, for a member known as a customer (``wecom_external_userid``),
    one system touch on the customer's timeline (``group_join`` / ``group_quit``).

    A dismissed group stays dismissed: WeCom never brings a dismissed chat back, so a detail
    fetched before the dismissal and applied after it changes nothing.
    """
    if not isinstance(detail, dict):
        raise Invalid("The group chat detail is not an object")
    chat_id = _text(detail.get("chat_id"), 64)
    if not chat_id:
        raise Invalid("The group chat detail has no chat_id")
    now = at or utcnow()
    group = get_by_chat_id(session, chat_id)
    changed = group is None
    if group is None:
        group = GroupChat(chat_id=chat_id, name="", owner_userid="", notice="", admin_userids=[],
                          status=GroupChatStatus.active.value, member_count=0, customer_count=0,
                          member_version="", created_at=now, updated_at=now)
        session.add(group)
        session.flush()
        link_group_messages(session, group=group)  # archived before it was mirrored
    elif not group.is_active:
        return group
    owner = _text(detail.get("owner"), 64)
    for name, value in (("name", _text(detail.get("name"), 255)), ("owner_userid", owner),
                        ("owner_account_id", _owner_account_id(session, owner)),
                        ("notice", str(detail.get("notice") or "")[:10000]),
                        ("admin_userids", _admins(detail.get("admin_list"))),
                        ("platform_created_at", _time(detail.get("create_time")) or group.platform_created_at),
                        ("member_version", _text(detail.get("member_version"), 64) or group.member_version)):
        changed = _set(group, name, value) or changed
    session.flush()

    raw_members = detail.get("member_list")
    if isinstance(raw_members, list) and raw_members:
        joined, left = _reconcile_members(session, group, raw_members, now=now, quit_scene=quit_scene)
        changed = bool(joined or left) or changed
    # else: no member list at all. Every group has at least its owner, so this is a partial answer,
    # not a group everyone left: the members Siyu knows stay as they are.
    current = [m for m in session.scalars(select(GroupMember).where(GroupMember.group_chat_id == group.id,
                                                                     GroupMember.left_at.is_(None)))]
    changed = _set(group, "member_count", len(current)) or changed
    changed = _set(group, "customer_count", sum(1 for m in current if m.customer_id)) or changed
    if changed:
        group.updated_at = now
    session.flush()
    _after_sync(session, group, current)
    return group


def _after_sync(session: Session, group: GroupChat, current: list[GroupMember]) -> None:
    """The registry's part of a sync: member roles, and group codes moved on before this group is full."""
    registry.assign_roles(group, current)
    codes.after_group_changed(session, group=group)
    onboarding.mark_joined(session, group=group, userids=[m.userid for m in current])  # the intake plan
    session.flush()


def _reconcile_members(session: Session, group: GroupChat, raw_members: list[Any], *, now: datetime,
                       quit_scene: int | None) -> tuple[list[GroupMember], list[GroupMember]]:
    wanted: dict[str, _MemberIn] = {}
    for raw in raw_members:
        member_in = _member_in(raw)
        if member_in is not None:
            wanted.setdefault(member_in.userid, member_in)
    existing = {m.userid: m for m in session.scalars(select(GroupMember)
                                                     .where(GroupMember.group_chat_id == group.id))}
    # Re-resolved on every sync: a customer created (or merged) after they joined gets linked.
    customers = _customer_ids(session, [u for u, m in wanted.items() if m.member_type == MemberType.external])
    joined: list[GroupMember] = []
    for userid, member_in in wanted.items():
        member = existing.get(userid)
        fresh = member is None or member.left_at is not None or (
            # Left and came back between two syncs: the platform shows a later join time.
            member_in.join_time is not None and member.join_time is not None
            and member_in.join_time > member.join_time)
        if member is None:
            member = GroupMember(group_chat_id=group.id, userid=userid, name="")
            session.add(member)
        values: dict[str, Any] = {
            "member_type": member_in.member_type, "join_time": member_in.join_time or member.join_time or now,
            "join_scene": member_in.join_scene, "invitor_userid": member_in.invitor_userid,
            "group_nickname": member_in.group_nickname, "unionid": member_in.unionid, "state": member_in.state,
            "customer_id": customers.get(userid) if member_in.member_type == MemberType.external else None,
            "left_at": None, "quit_scene": None}
        if member_in.name is not None:
            values["name"] = member_in.name
        for name, value in values.items():
            _set(member, name, value)
        if fresh:
            joined.append(member)
    left: list[GroupMember] = []
    for userid, member in existing.items():
        if userid not in wanted and member.left_at is None:
            member.left_at, member.quit_scene = now, quit_scene
            left.append(member)
    session.flush()
    for member in joined:
        _record(session, group, member, ChangeKind.joined, at=member.join_time or now, scene=member.join_scene)
    for member in left:
        _record(session, group, member, ChangeKind.quit, at=now, scene=quit_scene)
    return joined, left


def _record(session: Session, group: GroupChat, member: GroupMember, kind: ChangeKind, *, at: datetime,
            scene: int | None, dismissed: bool = False) -> None:
    session.add(GroupMemberChange(group_chat_id=group.id, member_id=member.id, kind=kind.value, at=at,
                                  scene=scene))
    if member.customer_id is None:
        return
    details: dict[str, Any] = {"event": f"group_{kind.value}", "chat": group.name or group.chat_id,
                               "group_id": group.id, "chat_id": group.chat_id, "scene": scene}
    if kind is ChangeKind.joined and member.state:
        details["state"] = member.state
    if dismissed:
        details["dismissed"] = True
    session.add(Touch(customer_id=member.customer_id, account_id=group.owner_account_id,
                      kind=TouchKind.system.value, occurred_at=at, details=details))


def dismiss_group_chat(session: Session, chat_id: str, at: datetime | None = None) -> GroupChat:
    """The group was dismissed (解散) on WeCom: it is kept, marked dismissed, its members left.

    A dismissal of a group Siyu never saw keeps a dismissed placeholder, so a detail fetched
    earlier and applied later cannot bring it back. Dismissing twice changes nothing.
    """
    chat_id = _text(chat_id, 64)
    if not chat_id:
        raise Invalid("The group chat detail has no chat_id")
    now = at or utcnow()
    group = get_by_chat_id(session, chat_id)
    if group is None:
        group = GroupChat(chat_id=chat_id, name="", owner_userid="", notice="", admin_userids=[],
                          status=GroupChatStatus.dismissed.value, member_count=0, customer_count=0,
                          member_version="", dismissed_at=now, created_at=now, updated_at=now)
        session.add(group)
        session.flush()
        return group
    if not group.is_active:
        return group
    group.status, group.dismissed_at, group.updated_at = GroupChatStatus.dismissed.value, now, now
    group.member_count = group.customer_count = 0
    for member in session.scalars(select(GroupMember).where(GroupMember.group_chat_id == group.id,
                                                            GroupMember.left_at.is_(None))):
        member.left_at = now
        _record(session, group, member, ChangeKind.quit, at=now, scene=None, dismissed=True)
    session.flush()
    codes.after_group_changed(session, group=group)  # a group code holding it moves on
    posts.cancel_for_group(session, group=group)  # its waiting posts are cancelled, and say so
    return group


# ---------------------------------------------------------------- reading groups (console, API)


@dataclass
class GroupFilter:
    account_id: int | None = None
    status: str | None = None
    name: str = ""
    kind: str = ""  # GroupKind
    tier: str = ""
    health: str = ""  # GroupHealth
    platform: str = ""  # GroupPlatform


def _clauses(flt: GroupFilter, viewer: Viewer) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    scope = visible_group_clause(viewer)
    if scope is not None:
        clauses.append(scope)
    if flt.account_id is not None:
        clauses.append(GroupChat.owner_account_id == flt.account_id)
    if flt.status:
        if flt.status not in {s.value for s in GroupChatStatus}:
            raise Invalid("Unknown status {status}", field="status", status=flt.status)
        clauses.append(GroupChat.status == flt.status)
    if flt.name.strip():
        clauses.append(GroupChat.name.contains(flt.name.strip(), autoescape=True))
    clauses.extend(_registry_clauses(flt))
    return clauses


def _registry_clauses(flt: GroupFilter) -> list[ColumnElement[bool]]:
    """The registry's filters (kind, tier, health, platform); unknown values are bad input."""
    from siyu.groups.models import GroupHealth, GroupKind, GroupPlatform

    clauses: list[ColumnElement[bool]] = []
    for value, allowed, column, field_name in ((flt.kind, GroupKind, GroupChat.kind, "kind"),
                                               (flt.health, GroupHealth, GroupChat.health, "health"),
                                               (flt.platform, GroupPlatform, GroupChat.platform, "platform")):
        if value:
            if value not in {v.value for v in allowed}:
                raise Invalid("Unknown value {value}", field=field_name, value=value[:30])
            clauses.append(column == value)
    if flt.tier.strip():
        clauses.append(GroupChat.tier == flt.tier.strip()[:32])
    return clauses


def list_groups(session: Session, *, flt: GroupFilter, viewer: Viewer, limit: int = 50,
                cursor: str | None = None) -> Page[GroupChat]:
    """Groups, the most recently changed first, a page at a time (keyset cursor)."""
    limit = max(1, min(limit, 200))
    query = select(GroupChat).where(*_clauses(flt, viewer))
    if cursor:
        values = decode_cursor(cursor)
        try:
            at, last_id = datetime.fromisoformat(str(values[0])), int(values[1])
        except (ValueError, TypeError, IndexError) as exc:  # a hand-edited cursor is bad input, not a crash
            raise Invalid("Invalid cursor", field="cursor") from exc
        query = query.where(or_(GroupChat.updated_at < at, and_(GroupChat.updated_at == at, GroupChat.id < last_id)))
    rows = list(session.scalars(query.order_by(GroupChat.updated_at.desc(), GroupChat.id.desc()).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.updated_at.isoformat(), last.id])
    return Page(items=rows[:limit], next_cursor=next_cursor)


def count_groups(session: Session, *, flt: GroupFilter, viewer: Viewer) -> int:
    return int(session.scalar(select(func.count()).select_from(GroupChat).where(*_clauses(flt, viewer))) or 0)


def groups_by_ids(session: Session, group_ids: Iterable[int]) -> list[GroupChat]:
    ids = sorted(set(group_ids))
    return list(session.scalars(select(GroupChat).where(GroupChat.id.in_(ids)))) if ids else []


def current_members(session: Session, *, group: GroupChat) -> list[GroupMember]:
    """Who is in the group now: staff first, then in the order they joined."""
    return list(session.scalars(
        select(GroupMember).where(GroupMember.group_chat_id == group.id, GroupMember.left_at.is_(None))
        .order_by(GroupMember.member_type, GroupMember.join_time, GroupMember.id)))


def recent_changes(session: Session, *, group: GroupChat, limit: int = 50
                   ) -> list[tuple[GroupMemberChange, GroupMember]]:
    """The latest joins and quits, newest first."""
    rows = session.execute(
        select(GroupMemberChange, GroupMember).join(GroupMember, GroupMember.id == GroupMemberChange.member_id)
        .where(GroupMemberChange.group_chat_id == group.id)
        .order_by(GroupMemberChange.at.desc(), GroupMemberChange.id.desc()).limit(limit))
    return [(change, member) for change, member in rows]


def customer_names(session: Session, *, customer_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(customer_ids))
    names: dict[int, str] = {}
    for chunk in _batches(ids):
        for customer_id, name in session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(chunk))):
            names[customer_id] = name
    return names


def staff_accounts(session: Session, *, userids: Iterable[str]) -> dict[str, Account]:
    """Accounts of the corp members among these WeCom user ids."""
    ids = sorted({u for u in userids if u})
    found: dict[str, Account] = {}
    for chunk in _batches(ids):
        for account in session.scalars(select(Account).where(Account.wecom_userid.in_(chunk))):
            found[str(account.wecom_userid)] = account
    return found


# ---------------------------------------------------------------- corp tags


@dataclass
class CorpTagChanges:
    """What one ``apply_corp_tags`` did, as ``group`` or ``group:tag`` names."""

    created: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)  # an existing Siyu group/tag matched by name
    renamed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # left alone, with the reason

    @property
    def changed(self) -> bool:
        return bool(self.created or self.linked or self.renamed or self.deleted)


def _audit(session: Session, action: str, entity_type: str, entity_id: int, summary: str,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> None:
    team_service.record_audit(session, actor=SYSTEM, action=action, entity_type=entity_type, entity_id=entity_id,
                              summary=summary, before=before, after=after)


def _sort_order(raw: Any) -> int | None:
    """WeCom sorts by ``order`` descending; Siyu by ``sort_order`` ascending, local tags from 0 up."""
    order = _int(raw)
    return None if order is None else -min(max(order, 0), MAX_SORT_ORDER)


def apply_corp_tags(session: Session, tag_groups: list[dict[str, Any]], *, complete: bool = False
                    ) -> CorpTagChanges:
    """Mirror WeCom corp tags (``tag_group`` of ``get_corp_tag_list``) into Siyu's tag groups and tags.

    A WeCom group or tag is found by its WeCom id, else by name (a Siyu group of the same
    name; a tag of the same name in that group) and then keeps the id; what is still
    missing is created. A name changed on WeCom renames the Siyu copy. A computed group
    (沟通次数, 购买, 等级) is never matched, created into or renamed onto: such a WeCom group
    is reported in ``conflicts`` and left alone, as is a rename onto a name another Siyu
    group or tag already has. Items marked ``deleted`` are removed as ``delete_corp_tag``
    does. The payload may be a filtered list (one group, some tags), so what it does not
    mention is kept — unless ``complete`` says it is the corp's whole list, in which case
    mirrored groups and tags it does not contain are deleted.
    """
    changes = CorpTagChanges()
    groups = customers_service.list_tag_groups(session)
    by_wecom = {str(g.wecom_id): g for g in groups if g.wecom_id}
    by_name = {g.name: g for g in groups}
    tags_by_wecom = {str(t.wecom_id): t for g in groups for t in g.tags if t.wecom_id}
    seen_groups: set[str] = set()
    seen_tags: set[str] = set()
    for item in tag_groups if isinstance(tag_groups, list) else []:
        if not isinstance(item, dict):
            continue
        group_id, group_name = _text(item.get("group_id"), 64), _text(item.get("group_name"), 64)
        if not group_id:
            changes.conflicts.append(f"{group_name}: no group_id")
            continue
        if item.get("deleted"):
            changes.deleted.extend(_delete_group(session, group_id))
            continue
        seen_groups.add(group_id)
        group = _mirror_group(session, group_id, group_name, by_wecom, by_name, changes)
        if group is None:
            continue
        for tag_item in item.get("tag") or []:
            if not isinstance(tag_item, dict):
                continue
            tag_id, tag_name = _text(tag_item.get("id"), 64), _text(tag_item.get("name"), 64)
            if not tag_id:
                changes.conflicts.append(f"{group.name}:{tag_name}: no id")
                continue
            if tag_item.get("deleted"):
                changes.deleted.extend(_delete_tag(session, tag_id))
                continue
            seen_tags.add(tag_id)
            _mirror_tag(session, group, tag_id, tag_name, _sort_order(tag_item.get("order")), tags_by_wecom,
                        changes)
    if complete:
        for group in [g for g in customers_service.list_tag_groups(session) if g.wecom_id]:
            if group.wecom_id not in seen_groups:
                changes.deleted.extend(_delete_group(session, str(group.wecom_id)))
                continue
            for tag in [t for t in group.tags if t.wecom_id and t.wecom_id not in seen_tags]:
                changes.deleted.extend(_delete_tag(session, str(tag.wecom_id)))
    session.flush()
    for conflict in changes.conflicts:
        log.warning("corp tag not mirrored: %s", conflict)
    return changes


def _mirror_group(session: Session, group_id: str, name: str, by_wecom: dict[str, TagGroup],
                  by_name: dict[str, TagGroup], changes: CorpTagChanges) -> TagGroup | None:
    group = by_wecom.get(group_id)
    if group is None:
        if not name:
            changes.conflicts.append(f"{group_id}: no group_name")
            return None
        group = by_name.get(name)
        if group is not None:
            if group.is_computed:
                changes.conflicts.append(f"{name}: a computed group of Siyu")
                return None
            if group.wecom_id:
                changes.conflicts.append(f"{name}: already mirrors another WeCom group")
                return None
            group.wecom_id = group_id
            changes.linked.append(name)
            _audit(session, "update", "tag_group", group.id, name, before={"wecom_id": None},
                   after={"wecom_id": group_id})
        else:
            group = TagGroup(name=name, kind=TagGroupKind.custom.value, multi_select=True, sort_order=100,
                             wecom_id=group_id, tags=[])
            session.add(group)
            session.flush()
            changes.created.append(name)
            _audit(session, "create", "tag_group", group.id, name, after={"wecom_id": group_id})
        by_wecom[group_id] = by_name[name] = group
        return group
    if name and group.name != name:
        other = by_name.get(name)
        if other is not None and other is not group:
            changes.conflicts.append(f"{group.name} → {name}: the name is taken")
        else:
            old = group.name
            by_name.pop(old, None)
            group.name = name
            by_name[name] = group
            changes.renamed.append(f"{old} → {name}")
            _audit(session, "update", "tag_group", group.id, name, before={"name": old}, after={"name": name})
    return group


def _mirror_tag(session: Session, group: TagGroup, tag_id: str, name: str, sort_order: int | None,
                tags_by_wecom: dict[str, Tag], changes: CorpTagChanges) -> None:
    tag = tags_by_wecom.get(tag_id)
    if tag is None:
        if not name:
            changes.conflicts.append(f"{group.name}:{tag_id}: no name")
            return
        tag = next((t for t in group.tags if t.name == name), None)
        if tag is not None:
            if tag.wecom_id:
                changes.conflicts.append(f"{group.name}:{name}: already mirrors another WeCom tag")
                return
            tag.wecom_id = tag_id
            changes.linked.append(f"{group.name}:{name}")
            _audit(session, "update", "tag", tag.id, f"{group.name}:{name}", before={"wecom_id": None},
                   after={"wecom_id": tag_id})
        else:
            tag = Tag(name=name, wecom_id=tag_id, sort_order=sort_order if sort_order is not None else len(group.tags))
            group.tags.append(tag)
            session.flush()
            changes.created.append(f"{group.name}:{name}")
            _audit(session, "create", "tag", tag.id, f"{group.name}:{name}", after={"wecom_id": tag_id})
        tags_by_wecom[tag_id] = tag
    elif tag.group_id != group.id:
        # WeCom does not move tags between groups; a mirror that disagrees is left for a person to sort out.
        changes.conflicts.append(f"{group.name}:{name}: mirrored in another group")
        return
    elif name and tag.name != name:
        if any(t.name == name and t is not tag for t in group.tags):
            changes.conflicts.append(f"{group.name}:{tag.name} → {name}: the name is taken")
        else:
            old = tag.name
            tag.name = name
            changes.renamed.append(f"{group.name}:{old} → {name}")
            _audit(session, "update", "tag", tag.id, f"{group.name}:{name}", before={"name": old},
                   after={"name": name})
    if sort_order is not None:
        _set(tag, "sort_order", sort_order)


def delete_corp_tag(session: Session, wecom_id: str, kind: str) -> list[str]:
    """A corp tag (``kind`` "tag") or tag group ("tag_group") was deleted on WeCom: remove its mirror.

    Removing a tag on WeCom removes it from every customer in Siyu too: the customer-tag
    links go with the tag, each customer's timeline shows the tag removed (by the system,
    from WeCom) and their computed facts are refreshed; one audit entry per tag, by the
    system, records the tag and how many customers had it. A deleted tag group takes its
    mirrored tags with it; the Siyu group itself goes only when it is a custom group left
    empty — a built-in group (来源, 人群) matched by name, or a group that still holds tags
    made in Siyu, stays and just stops mirroring. Unknown ids change nothing (deleting
    twice is fine). Returns the names removed.
    """
    if kind not in CORP_TAG_KINDS:
        raise Invalid("Unknown corp tag type {kind}", field="kind", kind=kind)
    wecom_id = _text(wecom_id, 64)
    if not wecom_id:
        return []
    return _delete_tag(session, wecom_id) if kind == "tag" else _delete_group(session, wecom_id)


def _delete_group(session: Session, wecom_id: str) -> list[str]:
    group = session.scalar(select(TagGroup).where(TagGroup.wecom_id == wecom_id)
                           .options(selectinload(TagGroup.tags)))
    if group is None:
        return []
    removed: list[str] = []
    for tag in [t for t in group.tags if t.wecom_id]:
        removed.extend(_delete_tag(session, str(tag.wecom_id)))
    if group.kind == TagGroupKind.custom.value and not group.tags:
        _audit(session, "delete", "tag_group", group.id, group.name, before={"name": group.name,
                                                                             "wecom_id": wecom_id})
        removed.append(group.name)
        session.delete(group)
    else:
        group.wecom_id = None
        _audit(session, "update", "tag_group", group.id, group.name, before={"wecom_id": wecom_id},
               after={"wecom_id": None})
    session.flush()
    return removed


def _delete_tag(session: Session, wecom_id: str) -> list[str]:
    tag = session.scalar(select(Tag).where(Tag.wecom_id == wecom_id).options(selectinload(Tag.group)))
    if tag is None or tag.group.is_computed:
        return []
    label = f"{tag.group.name}:{tag.name}"
    customer_ids = list(session.scalars(select(CustomerTag.customer_id).where(CustomerTag.tag_id == tag.id)
                                        .order_by(CustomerTag.customer_id)))
    session.execute(delete(CustomerTag).where(CustomerTag.tag_id == tag.id))
    now = utcnow()
    for chunk in _batches(customer_ids):
        session.execute(insert(Touch), [
            {"customer_id": cid, "kind": TouchKind.tag_change.value, "occurred_at": now, "created_at": now,
             "content": "", "details": {"added": [], "removed": [label], "source": "wecom"}} for cid in chunk])
    _audit(session, "delete", "tag", tag.id, label,
           before={"name": tag.name, "group": tag.group.name, "wecom_id": wecom_id, "customers": len(customer_ids)})
    tag.group.tags.remove(tag)
    session.delete(tag)
    session.flush()
    for chunk in _batches(customer_ids):
        customers_service.refresh_computed_many(
            session, customers=list(session.scalars(select(Customer).where(Customer.id.in_(chunk)))))
    return [label]


def tags_by_wecom_id(session: Session, wecom_ids: Iterable[str]) -> dict[str, Tag]:
    """Siyu's mirrors of these WeCom tag ids (for marking customers with their WeCom tags)."""
    found: dict[str, Tag] = {}
    for chunk in _batches(sorted({w for w in wecom_ids if w})):
        for tag in session.scalars(select(Tag).where(Tag.wecom_id.in_(chunk))):
            found[str(tag.wecom_id)] = tag
    return found


# ---------------------------------------------------------------- customer merges (customers.merge)


def repoint_members(session: Session, *, source_ids: list[int], target_id: int) -> list[list[int]]:
    """Group memberships of merged customers move to the kept one; ``[member id, old customer id]`` each."""
    moved = [[member_id, customer_id] for member_id, customer_id in session.execute(
        select(GroupMember.id, GroupMember.customer_id).where(GroupMember.customer_id.in_(source_ids)))
        if customer_id is not None]
    if moved:
        session.execute(update(GroupMember).where(GroupMember.customer_id.in_(source_ids)).values(customer_id=target_id))
    return moved


def restore_members(session: Session, *, moved: list[list[int]], target_id: int) -> None:
    """Undo ``repoint_members`` (a membership re-linked since by a sync stays as it is)."""
    for member_id, customer_id in moved:
        session.execute(update(GroupMember).where(GroupMember.id == member_id, GroupMember.customer_id == target_id)
                        .values(customer_id=customer_id))


def list_messages(session: Session, *, group_id: int, viewer: Viewer, limit: int = 50,
                  cursor: str | None = None) -> Page[GroupMessage]:
    """The group's archived messages (会话存档), newest first, keyset-paged; the viewer must see the group."""
    group = get_group(session, group_id=group_id, viewer=viewer)
    query = select(GroupMessage).where(GroupMessage.group_chat_id == group.id)
    if cursor:
        values = decode_cursor(cursor)
        try:
            at, last_id = datetime.fromisoformat(str(values[0])), int(values[1])
        except (IndexError, TypeError, ValueError) as exc:
            raise Invalid("Invalid cursor", field="cursor") from exc
        query = query.where(or_(GroupMessage.sent_at < at, and_(GroupMessage.sent_at == at, GroupMessage.id < last_id)))
    rows = list(session.scalars(query.order_by(GroupMessage.sent_at.desc(), GroupMessage.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor([rows[-1].sent_at.isoformat(), rows[-1].id])
                if more and rows else None)


def link_group_messages(session: Session, *, group: GroupChat) -> int:
    """Archived messages of a group met in the archive before it was mirrored: linked once it is."""
    done = session.execute(update(GroupMessage).where(GroupMessage.chat_id == group.chat_id,
                                                      GroupMessage.group_chat_id.is_(None))
                           .values(group_chat_id=group.id), execution_options={"synchronize_session": False})
    return int(getattr(done, "rowcount", 0) or 0)
