"""群规 service: rules, running the engine on stored group messages, findings and their actions, the blacklist.

Why it is shaped this way: the engine (``engine.py``) is pure; this module loads what it reads —
group messages from the chat archive (``groups.models.GroupMessage``, stored once per msgid) and
from imported chat exports of personal groups (stored the same way, keyed by their content) —
stores each hit once (unique rule × trigger message, ``INSERT … ON CONFLICT DO NOTHING``) and acts
on the new ones only. So the archive pulling a message twice, the minutely job re-reading a
window, or a dry run overlapping live findings never makes a second finding or a second task.

Actions are graduated per rule (``ModerationRule.ladder``): the member's n-th open finding under a
rule takes step n. WeCom offers no API that removes a group member or renames a group
(PLATFORM.md "Groups"), so removal is always the owner's task with the evidence; a warning is the
owner's task with the templated text to post. Every finding, action, pardon and appeal goes on
the member's timeline (a system touch) and into the audit log.

Scoping: rules are corp-wide and managed by admins and planners (who see every account); a
finding belongs to its group, and a viewer sees the findings of the groups they see
(``groups.service.visible_group_clause``) — another group's finding answers not found. The
blacklist is corp-wide: admins pardon; anyone who sees a finding may record an appeal.

Every function works in the caller's transaction and never commits.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, or_, select
from sqlalchemy.orm import Session

from siyu.autoreply.matcher import UnsafePattern, check_pattern
from siyu.core.db import dialect_insert, utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.pagination import Page, decode_cursor, encode_cursor
from siyu.core.settings import local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers.models import Customer, Touch, TouchKind
from siyu.customers.search import index as search
from siyu.groups import queries as groups_queries
from siyu.groups.models import ChangeKind, GroupChat, GroupMember, GroupMemberChange, GroupMessage, MemberType
from siyu.groups.moderation import engine
from siyu.groups.moderation.engine import GroupInfo, Hit, Msg, RuleSpec
from siyu.groups.moderation.models import (
    BLACKLIST_JOIN,
    Action,
    BlacklistEntry,
    BlacklistStatus,
    FindingStatus,
    ModerationCursor,
    ModerationFinding,
    ModerationRule,
    ModerationWhitelist,
    RuleStatus,
)
from siyu.groups.moderation.schemas import RuleIn
from siyu.maintenance import service as maintenance_service
from siyu.maintenance.models import TaskKind
from siyu.team import service as team_service

# The seed's five group kinds (社群种类); a rule with no kind applies to every group.
GROUP_KINDS = {"product": N_("Product community"), "interest": N_("Interest community"),
               "knowledge": N_("Knowledge community"), "network": N_("Network and resources community"),
               "marketing": N_("Marketing community")}
RULE_KIND_LABELS = {engine.AD: N_("Ad without a red packet"), engine.FLOOD: N_("Flooding"),
                    engine.STICKERS: N_("Consecutive stickers"), engine.BANNED_WORDS: N_("Banned words"),
                    engine.NICKNAME: N_("Nickname format"), engine.VOICE: N_("Voice spam"),
                    BLACKLIST_JOIN: N_("Blacklisted member joined")}
ACTION_LABELS = {Action.warn.value: N_("Warn (owner's task)"), Action.owner_task.value: N_("Owner removes (task)"),
                 Action.blacklist.value: N_("Blacklist"), Action.notify_admin.value: N_("Notify the admin")}
STATUS_LABELS = {RuleStatus.draft.value: N_("Draft"), RuleStatus.live.value: N_("Live"),
                 RuleStatus.off.value: N_("Off")}
FINDING_STATUS_LABELS = {FindingStatus.open.value: N_("finding.open"),
                         FindingStatus.pardoned.value: N_("finding.pardoned"),
                         FindingStatus.false_positive.value: N_("finding.false_positive")}
BLACKLIST_LABELS = {BlacklistStatus.active.value: N_("blacklist.active"),
                    BlacklistStatus.appealed.value: N_("blacklist.appealed"),
                    BlacklistStatus.pardoned.value: N_("blacklist.pardoned")}
# Each parameter a rule kind takes: name → (lowest, highest). Anything else is refused.
PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    engine.AD: {"minutes": (0.5, 60), "min_yuan": (0, 200), "min_people": (1, 100)},
    engine.FLOOD: {"count": (2, 100), "seconds": (1, 3600)},
    engine.STICKERS: {"count": (2, 50)},
    engine.VOICE: {"count": (1, 50), "seconds": (1, 86400)},
    engine.NICKNAME: {"parts": (1, 6)},
    engine.BANNED_WORDS: {},
}
# 单个红包金额 ≤ 200 元 and a group red packet's count ≤ 100 (WeChat's own red packet limits, 微信支付 help
# centre; unconfirmed in WeCom's docs): a rule asking more could never be met.
MAX_BANNED_WORDS = 20_000
MAX_WORD_LENGTH = 50
FINDING_WINDOW_DAYS = 90  # a member's earlier findings under a rule count towards the ladder this long
DRY_RUN_MAX_MESSAGES = 500_000
RUN_BATCH = 50_000  # new messages read per job round
LOOKBACK_MARGIN_SECONDS = 600.0
EVIDENCE_TEXT = 200
BATCH = 500
CURSOR = "corp"
# Group-export message markers (WeChat's own "[图片]" … in exports) → archive message types.
EXPORT_MARKERS = {"[图片]": "image", "[语音]": "voice", "[视频]": "video", "[表情]": "emotion", "[动画表情]": "emotion",
                  "[链接]": "link", "[小程序]": "weapp", "[名片]": "card", "[红包]": "redpacket",
                  "[链接或文件]": "link"}
IMPORT_PREFIX = "import:"  # the msgid of a message from an imported chat export
UNKNOWN_AMOUNT = 10**9  # an exported red packet carries no amount: counted as paid (nobody can check it)


class RuleNotFound(NotFound):
    pass


class FindingNotFound(NotFound):
    pass


class BlacklistNotFound(NotFound):
    pass


def group_kind_of(group: GroupChat) -> str | None:
    """A group's kind as rules match it: the registry's ``kind`` column (its string value), None when unset."""
    value = getattr(group, "kind", None)
    return str(getattr(value, "value", value)) if value else None


def _manager(viewer: Viewer) -> None:
    if not viewer.sees_all_accounts:
        raise Forbidden("Only admins and planners manage group rules")


def _audit(session: Session, viewer: Viewer, action: str, entity_type: str, entity_id: int, summary: str,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> None:
    team_service.record_audit(session, actor=viewer, action=action, entity_type=entity_type, entity_id=entity_id,
                              summary=summary, before=before, after=after)


# ---------------------------------------------------------------- rules


def check_rule(data: RuleIn) -> dict[str, Any]:
    """The rule's parameters, cleaned; a clear error for anything the engine could not run."""
    if data.kind not in engine.RULE_KINDS:
        raise Invalid("Unknown rule type {kind}", field="kind", kind=data.kind[:20])
    if data.group_kind is not None and data.group_kind not in GROUP_KINDS:
        raise Invalid("Unknown group kind {kind}", field="group_kind", kind=data.group_kind[:20])
    if data.status not in {s.value for s in RuleStatus}:
        raise Invalid("Unknown status {status}", field="status", status=data.status[:20])
    params: dict[str, Any] = {}
    for name, (low, high) in PARAMS[data.kind].items():
        if name not in data.params:
            continue
        try:
            value = float(data.params[name])
        except (TypeError, ValueError) as exc:
            raise Invalid("{name} must be a number", field=name, name=name) from exc
        if not low <= value <= high:
            raise Invalid("{name} must be between {low} and {high}", field=name, name=name, low=low, high=high)
        params[name] = int(value) if value.is_integer() and name != "minutes" else value
    if data.kind == engine.AD:
        params["images"] = bool(data.params.get("images", False))
        params["urls"] = bool(data.params.get("urls", True))
        params["ad_words"] = _words(data.params.get("ad_words"), field_name="ad_words", required=False)
    if data.kind == engine.BANNED_WORDS:
        params["words"] = _words(data.params.get("words"), field_name="words", required=True)
    if data.kind == engine.NICKNAME:
        pattern = str(data.params.get("pattern") or "").strip()
        if pattern:
            try:
                check_pattern(pattern)
            except UnsafePattern as exc:
                raise Invalid("This pattern is not allowed: {reason}", field="pattern", reason=str(exc)) from exc
            params["pattern"] = pattern
        params["example"] = str(data.params.get("example") or "")[:64]
    if data.warn_text.strip():
        from siyu.customers import variables

        variables.check_outgoing(data.warn_text, field="warn_text",
                                 allowed=(variables.SALUTATION, variables.ACCOUNT))
    for step in data.ladder:
        if not step:
            raise Invalid("Each step names at least one action", field="ladder")
        for action in step:
            if action not in ACTION_LABELS:
                raise Invalid("Unknown action {action}", field="ladder", action=str(action)[:20])
    if len(data.ladder) > 5:
        raise Invalid("At most 5 steps", field="ladder")
    return params


def _words(raw: Any, *, field_name: str, required: bool) -> list[str]:
    items = raw.splitlines() if isinstance(raw, str) else list(raw or [])
    words = sorted({str(w).strip() for w in items if str(w).strip()})
    if required and not words:
        raise Invalid("List at least one word", field=field_name)
    if len(words) > MAX_BANNED_WORDS:
        raise Invalid("At most {n} words", field=field_name, n=MAX_BANNED_WORDS)
    if any(len(w) > MAX_WORD_LENGTH for w in words):
        raise Invalid("A word is longer than {n} characters", field=field_name, n=MAX_WORD_LENGTH)
    return words


def list_rules(session: Session) -> list[ModerationRule]:
    return list(session.scalars(select(ModerationRule).order_by(ModerationRule.id)))


def get_rule(session: Session, *, rule_id: int) -> ModerationRule:
    rule = session.get(ModerationRule, rule_id)
    if rule is None:
        raise RuleNotFound("Rule not found")
    return rule


def _snapshot(rule: ModerationRule) -> dict[str, Any]:
    params = dict(rule.params)
    if "words" in params:
        params["words"] = len(params["words"])  # the count, not a 5,000-word list in every audit entry
    return {"name": rule.name, "kind": rule.kind, "group_kind": rule.group_kind, "status": rule.status,
            "params": params, "ladder": rule.ladder}


def save_rule(session: Session, *, data: RuleIn, viewer: Viewer, rule_id: int | None = None) -> ModerationRule:
    _manager(viewer)
    params = check_rule(data)
    ladder = data.ladder or [[Action.owner_task.value]]
    now = utcnow()
    if rule_id is None:
        rule = ModerationRule(name=data.name.strip(), kind=data.kind, group_kind=data.group_kind, params=params,
                              ladder=ladder, warn_text=data.warn_text.strip(), status=data.status,
                              created_by_id=viewer.user_id, created_at=now, updated_at=now)
        session.add(rule)
        session.flush()
        _audit(session, viewer, "create", "group_rule", rule.id, rule.name, after=_snapshot(rule))
        return rule
    rule = get_rule(session, rule_id=rule_id)
    before = _snapshot(rule)
    rule.name, rule.kind, rule.group_kind, rule.params = data.name.strip(), data.kind, data.group_kind, params
    rule.ladder, rule.warn_text, rule.status, rule.updated_at = ladder, data.warn_text.strip(), data.status, now
    session.flush()
    _audit(session, viewer, "update", "group_rule", rule.id, rule.name, before=before, after=_snapshot(rule))
    return rule


def set_status(session: Session, *, rule_id: int, status: str, viewer: Viewer) -> ModerationRule:
    _manager(viewer)
    if status not in {s.value for s in RuleStatus}:
        raise Invalid("Unknown status {status}", field="status", status=status[:20])
    rule = get_rule(session, rule_id=rule_id)
    before = rule.status
    rule.status, rule.updated_at = status, utcnow()
    session.flush()
    team_service.record_audit(session, actor=viewer, action="enable" if status == RuleStatus.live.value else "disable",
                              entity_type="group_rule", entity_id=rule.id, summary=rule.name,
                              before={"status": before}, after={"status": status})
    return rule


def rule_counts(session: Session) -> dict[int, tuple[int, int]]:
    """Per rule: findings and how many of them were reported as false positives (the rule's feedback)."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for rule_id, status, n in session.execute(
            select(ModerationFinding.rule_id, ModerationFinding.status, func.count())
            .where(ModerationFinding.rule_id.is_not(None))
            .group_by(ModerationFinding.rule_id, ModerationFinding.status)):
        key = int(rule_id or 0)
        counts[key][0] += int(n)
        if status == FindingStatus.false_positive.value:
            counts[key][1] += int(n)
    return {k: (v[0], v[1]) for k, v in counts.items()}


def spec(rule: ModerationRule) -> RuleSpec:
    return RuleSpec(id=rule.id, kind=rule.kind, group_kind=rule.group_kind, params=dict(rule.params))


def live_specs(session: Session) -> list[RuleSpec]:
    return [spec(r) for r in session.scalars(select(ModerationRule).where(
        ModerationRule.status == RuleStatus.live.value).order_by(ModerationRule.id))]


# ---------------------------------------------------------------- whitelist


def whitelist(session: Session) -> list[ModerationWhitelist]:
    return list(session.scalars(select(ModerationWhitelist).order_by(ModerationWhitelist.id)))


def add_whitelisted(session: Session, *, userid: str, note: str, viewer: Viewer) -> ModerationWhitelist:
    _manager(viewer)
    userid = userid.strip()[:64]
    if not userid:
        raise Invalid("Give the colleague's WeCom ID", field="userid")
    row = session.scalar(select(ModerationWhitelist).where(ModerationWhitelist.userid == userid))
    if row is None:
        row = ModerationWhitelist(userid=userid, note=note.strip()[:128])
        session.add(row)
        session.flush()
        _audit(session, viewer, "create", "group_whitelist", row.id, userid, after={"note": row.note})
    return row


def remove_whitelisted(session: Session, *, entry_id: int, viewer: Viewer) -> None:
    _manager(viewer)
    row = session.get(ModerationWhitelist, entry_id)
    if row is None:
        raise NotFound("Not on the whitelist")
    _audit(session, viewer, "delete", "group_whitelist", row.id, row.userid)
    session.delete(row)
    session.flush()


# ---------------------------------------------------------------- reading messages for the engine


def group_infos(session: Session, group_ids: Iterable[int]) -> dict[int, GroupInfo]:
    """Each group's kind and who is exempt there: its owner, its admins, and the whitelisted colleagues."""
    white = frozenset(session.scalars(select(ModerationWhitelist.userid)))
    infos: dict[int, GroupInfo] = {}
    ids = sorted(set(group_ids))
    kind = getattr(GroupChat, "kind", None)  # the registry's column once it exists (see group_kind_of)
    cols = (GroupChat.id, GroupChat.owner_userid, GroupChat.admin_userids) + ((kind,) if kind is not None else ())
    for start in range(0, len(ids), BATCH):
        for row in session.execute(select(*cols).where(GroupChat.id.in_(ids[start:start + BATCH]))):
            exempt = {row[1], *(row[2] or [])} - {""}
            value = row[3] if len(row) > 3 else None
            infos[row[0]] = GroupInfo(kind=str(getattr(value, "value", value)) if value else None,
                                      exempt=frozenset(exempt) | white)
    return infos


def load_messages(session: Session, *, group_ids: Sequence[int] | None = None, since: datetime | None = None,
                  since_by_group: dict[int, datetime] | None = None, limit: int | None = None) -> list[Msg]:
    """Stored group messages as the engine reads them, sorted by group and time (recalled ones left out), each
    with its sender's group nickname (the member list; an imported export names senders by it)."""
    member = and_(GroupMember.group_chat_id == GroupMessage.group_chat_id, GroupMember.userid == GroupMessage.sender)
    query = (select(GroupMessage.msgid, GroupMessage.group_chat_id, GroupMessage.sender, _epoch(session),
                    GroupMessage.msg_type, GroupMessage.text, GroupMember.group_nickname, GroupMember.name)
             .outerjoin(GroupMember, member)
             .where(GroupMessage.group_chat_id.is_not(None), GroupMessage.action == "send"))
    rows: list[Any] = []
    if since_by_group:
        ids = sorted(since_by_group)
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            earliest = min(since_by_group[g] for g in chunk)
            rows += [r for r in session.connection().execute(query.where(GroupMessage.group_chat_id.in_(chunk),
                                                                         GroupMessage.sent_at >= earliest))
                     if r[3] >= since_by_group[int(r[1] or 0)].timestamp() - 0.001]
    else:
        if group_ids is not None:
            query = query.where(GroupMessage.group_chat_id.in_(list(group_ids)))
        if since is not None:
            query = query.where(GroupMessage.sent_at >= since)
        if limit is not None:
            query = query.order_by(GroupMessage.sent_at.desc()).limit(limit)
        rows = list(session.connection().execute(query))
    packets = {r[0] for r in rows if r[4] in engine.RED_PACKET_TYPES}
    amounts = _red_packets(session, packets) if packets else {}
    none = (0, 0)
    out = [Msg(msgid, gid, sender, round(float(at), 3), kind, text or "",
               *(amounts.get(msgid, none) if packets else none),
               nick or name or (sender if msgid.startswith(IMPORT_PREFIX) else ""))
           for msgid, gid, sender, at, kind, text, nick, name in rows]
    out.sort(key=lambda m: (m.group, m.at, m.key))
    return out


def _epoch(session: Session) -> Any:
    """``sent_at`` as seconds since 1970 computed by the database (no datetime object per message): SQLite keeps
    naive UTC text (``julianday``, to the millisecond), PostgreSQL a timestamptz (``extract(epoch …)``)."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(GroupMessage.sent_at) - 2440587.5) * 86400.0
    return func.extract("epoch", GroupMessage.sent_at)


def _red_packets(session: Session, msgids: set[str]) -> dict[str, tuple[int, int]]:
    """A red packet's total (fen) and count from the archive's payload: ``redpacket.totalamount`` (分) and
    ``totalcnt`` (会话存档 › 消息格式 › 红包消息, W:91774); an export's red packet carries neither."""
    found: dict[str, tuple[int, int]] = {}
    ids = sorted(msgids)
    for start in range(0, len(ids), BATCH):
        for msgid, kind, payload in session.execute(select(GroupMessage.msgid, GroupMessage.msg_type,
                                                           GroupMessage.payload)
                                                    .where(GroupMessage.msgid.in_(ids[start:start + BATCH]))):
            body = (payload or {}).get(kind) if isinstance(payload, dict) else None
            if isinstance(body, dict) and body.get("unknown_amount"):
                found[msgid] = (UNKNOWN_AMOUNT, UNKNOWN_AMOUNT)
            elif isinstance(body, dict):
                try:
                    found[msgid] = (int(body.get("totalamount") or 0), int(body.get("totalcnt") or 0))
                except (TypeError, ValueError):
                    found[msgid] = (0, 0)
    return found


# ---------------------------------------------------------------- storing findings and acting


@dataclass
class Outcome:
    messages: int = 0
    hits: int = 0
    created: list[int] = field(default_factory=list)  # new finding ids
    pending_groups: int = 0


def _evidence(session: Session, keys: set[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    ids = sorted(keys)
    for start in range(0, len(ids), BATCH):
        for msgid, sent_at, kind, text in session.execute(
                select(GroupMessage.msgid, GroupMessage.sent_at, GroupMessage.msg_type, GroupMessage.text)
                .where(GroupMessage.msgid.in_(ids[start:start + BATCH]))):
            found[msgid] = {"msgid": msgid, "at": sent_at.isoformat(), "type": kind,
                            "text": (text or "")[:EVIDENCE_TEXT]}
    return found


def store_hits(session: Session, hits: list[Hit], *, act: bool = True) -> list[int]:
    """Each hit once (rule × trigger); the new ones are acted on. Returns the new findings' ids."""
    if not hits:
        return []
    rules = {r.id: r for r in session.scalars(select(ModerationRule).where(
        ModerationRule.id.in_(sorted({h.rule_id for h in hits}))))}
    evidence = _evidence(session, {k for h in hits for k in h.evidence})
    members = _members(session, {(h.group, h.sender) for h in hits})
    table = cast(Table, ModerationFinding.__table__)
    now = utcnow()
    created: list[int] = []
    for hit in hits:
        rule = rules.get(hit.rule_id)
        if rule is None:
            continue
        member = members.get((hit.group, hit.sender))
        row = {"rule_id": rule.id, "rule_key": str(rule.id), "rule_kind": rule.kind, "group_chat_id": hit.group,
               "member_userid": hit.sender[:64], "member_name": (member[1] if member else "")[:128],
               "customer_id": member[0] if member else None, "trigger": hit.trigger[:160],
               "evidence": [evidence.get(k, {"msgid": k, "at": "", "type": "", "text": ""}) for k in hit.evidence],
               "detail": hit.detail, "offence": 1, "actions": [], "task_id": None, "admin_notified": False,
               "status": FindingStatus.open.value, "feedback_note": "", "feedback_by_id": None,
               "occurred_at": datetime.fromtimestamp(hit.at, tz=UTC), "created_at": now}
        inserted = session.execute(dialect_insert(session, table).on_conflict_do_nothing(
            index_elements=["rule_key", "trigger"]).returning(table.c.id), [row]).scalar()
        if inserted is not None:
            created.append(int(inserted))
    session.flush()
    if act:
        for finding_id in created:
            finding = session.get(ModerationFinding, finding_id)
            assert finding is not None
            act_on(session, finding=finding, rule=rules[cast(int, finding.rule_id)])
    return created


def _members(session: Session, pairs: set[tuple[int, str]]) -> dict[tuple[int, str], tuple[int | None, str]]:
    """(group, sender) → (customer id, name) from the group's member list, else from the customer by WeCom id."""
    found: dict[tuple[int, str], tuple[int | None, str]] = {}
    groups = sorted({g for g, _s in pairs})
    senders = sorted({s for _g, s in pairs})
    for start in range(0, len(senders), BATCH):
        chunk = senders[start:start + BATCH]
        for gid, userid, cid, nick, name in session.execute(
                select(GroupMember.group_chat_id, GroupMember.userid, GroupMember.customer_id,
                       GroupMember.group_nickname, GroupMember.name)
                .where(GroupMember.userid.in_(chunk), GroupMember.group_chat_id.in_(groups))):
            found[(gid, userid)] = (cid, nick or name or "")
        for gid, nick, cid, name in session.execute(  # personal groups: the export names senders by nickname
                select(GroupMember.group_chat_id, GroupMember.group_nickname, GroupMember.customer_id,
                       GroupMember.name).where(GroupMember.group_nickname.in_(chunk),
                                               GroupMember.group_chat_id.in_(groups))):
            found.setdefault((gid, nick), (cid, nick or name or ""))
        customers = {ext: (cid, name) for cid, ext, name in session.execute(
            select(Customer.id, Customer.wecom_external_userid, Customer.name)
            .where(Customer.wecom_external_userid.in_(chunk)))}
        for gid, sender in pairs:
            if sender in customers and (found.get((gid, sender)) or (None, ""))[0] is None:
                cid, name = customers[sender]
                found[(gid, sender)] = (cid, (found.get((gid, sender)) or (None, name))[1] or name)
    live = groups_queries.live_customer_ids(session, customer_ids=[c for c, _n in found.values() if c])
    return {k: (live.get(c, c) if c else None, n) for k, (c, n) in found.items()}


def _ensure_customer(session: Session, finding: ModerationFinding) -> int | None:
    """The finding's member as a customer: a WeCom external contact Siyu has not met yet is created (as the
    archive does), so the evidence lands on a portrait and a task can name them."""
    if finding.customer_id is not None:
        return finding.customer_id
    userid = finding.member_userid
    if not userid.startswith(("wo", "wm")):
        return None
    table = Customer.__table__
    session.execute(dialect_insert(session, table).on_conflict_do_nothing(index_elements=["wecom_external_userid"]),
                    [{"name": finding.member_name or f"群成员{userid[-6:]}", "wecom_external_userid": userid,
                      "source": "wecom", "created_at": utcnow()}])
    customer_id = session.scalar(select(Customer.id).where(Customer.wecom_external_userid == userid))
    if customer_id is not None:
        search.mark_dirty(session, [customer_id])
        finding.customer_id = customer_id
    return customer_id


def _offence(session: Session, finding: ModerationFinding) -> int:
    since = finding.occurred_at - timedelta(days=FINDING_WINDOW_DAYS)
    return int(session.scalar(select(func.count()).select_from(ModerationFinding).where(
        ModerationFinding.rule_key == finding.rule_key, ModerationFinding.member_userid == finding.member_userid,
        ModerationFinding.status == FindingStatus.open.value, ModerationFinding.occurred_at >= since,
        ModerationFinding.id <= finding.id)) or 1)


def evidence_time(at: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An evidence time (stored as ISO text, UTC) as people read it: local time."""
    try:
        return datetime.fromisoformat(at).astimezone(local_zone()).strftime(fmt)
    except ValueError:
        return ""


def _clock(at: str) -> str:
    return evidence_time(at, "%H:%M:%S")


def describe(finding: ModerationFinding, rule_name: str, group_name: str) -> str:
    """One line for the timeline, the task and the audit log: the group, the rule, what was seen."""
    kind = _(RULE_KIND_LABELS.get(finding.rule_kind, finding.rule_kind))
    seen = "；".join(f"{_clock(str(e.get('at') or ''))} {e.get('text') or e.get('type')}"
                    for e in finding.evidence[:3])
    return _("Group {group} · rule {rule} ({kind}) · {n} messages: {seen}", group=group_name, rule=rule_name,
             kind=kind, n=len(finding.evidence), seen=seen)


def warn_text(session: Session, rule: ModerationRule, finding: ModerationFinding, account_id: int) -> str:
    """The warning the owner posts, with the customer-safe variables only (``customers.variables``):
    {称呼} is the member as the group sees them (their group nickname), {账号} the owner's account."""
    from siyu.customers import variables

    text = rule.warn_text or _("@{salutation} please keep to the group rule “{rule}”; thank you.",
                               salutation="{" + variables.SALUTATION + "}", rule=rule.name)
    values = variables.values_for(session, [(finding.customer_id, account_id)])[(finding.customer_id, account_id)]
    return variables.render(text, variables.Values(salutation=finding.member_name or values.salutation,
                                                   account=values.account))


def act_on(session: Session, *, finding: ModerationFinding, rule: ModerationRule | None) -> None:
    """The step of the rule's ladder for this offence: tasks, blacklist, alert; timeline and audit always."""
    group = session.get(GroupChat, finding.group_chat_id)
    assert group is not None
    group_name = group.name or group.chat_id
    rule_name = rule.name if rule is not None else _(RULE_KIND_LABELS[BLACKLIST_JOIN])
    if rule is not None:
        finding.offence = _offence(session, finding)
        ladder = rule.ladder or [[Action.owner_task.value]]
        step = list(ladder[min(finding.offence, len(ladder)) - 1])
    else:
        step = [Action.owner_task.value]
    customer_id = _ensure_customer(session, finding)
    summary = describe(finding, rule_name, group_name)
    done: list[str] = []
    for action in step:
        if action in (Action.warn.value, Action.owner_task.value):
            if customer_id is None or group.owner_account_id is None:
                if Action.notify_admin.value not in step:
                    step.append(Action.notify_admin.value)  # nobody to give the task to: the admin hears of it
                continue
            if action == Action.warn.value:
                kind, detail = TaskKind.group_warn, _("Post in {group}: {text}", group=group_name,
                                                      text=warn_text(session, rule, finding, group.owner_account_id)
                                                      if rule else "")
            elif rule is None:
                kind, detail = TaskKind.group_flag, summary
            else:
                kind, detail = TaskKind.group_removal, summary
            task = maintenance_service.create_task(session, kind=kind, customer_id=customer_id,
                                                   account_id=group.owner_account_id, detail=detail,
                                                   ref_id=finding.id)
            finding.task_id = finding.task_id or task.id
            done.append(action)
        elif action == Action.blacklist.value:
            _blacklist(session, finding=finding, reason=summary)
            done.append(action)
        elif action == Action.notify_admin.value:
            finding.admin_notified = True
            _audit(session, SYSTEM, "alert", "group_finding", finding.id, summary)
            done.append(action)
    finding.actions = done
    actions = "、".join(_(ACTION_LABELS[a]) for a in done) or _("no action")
    _timeline(session, finding, group, _("Broke a group rule: {summary} → {actions}", summary=summary,
                                         actions=actions), event="group_moderation")
    _audit(session, SYSTEM, "moderate", "group_finding", finding.id, summary,
           after={"rule": rule_name, "offence": finding.offence, "actions": done, "trigger": finding.trigger})
    session.flush()


def _timeline(session: Session, finding: ModerationFinding, group: GroupChat, content: str, *, event: str,
              key: str | None = None) -> None:
    if finding.customer_id is None:
        return
    session.add(Touch(customer_id=finding.customer_id, account_id=group.owner_account_id,
                      kind=TouchKind.system.value, content=content[:2000], occurred_at=utcnow(),
                      details={"event": event, "finding_id": finding.id, "group_id": group.id,
                               "chat": group.name or group.chat_id},
                      dedupe_key=(key or f"{event}:{finding.id}")[:128]))


def _blacklist(session: Session, *, finding: ModerationFinding, reason: str) -> BlacklistEntry:
    entry = session.scalar(select(BlacklistEntry).where(BlacklistEntry.userid == finding.member_userid))
    if entry is None:
        entry = BlacklistEntry(userid=finding.member_userid, customer_id=finding.customer_id,
                               name=finding.member_name, reason=reason[:255], finding_id=finding.id,
                               status=BlacklistStatus.active.value, created_at=utcnow())
        session.add(entry)
    elif entry.status == BlacklistStatus.pardoned.value:
        entry.status, entry.reason, entry.finding_id = BlacklistStatus.active.value, reason[:255], finding.id
        entry.pardoned_at, entry.pardon_reason, entry.appeal, entry.appealed_at = None, "", "", None
    session.flush()
    _audit(session, SYSTEM, "blacklist", "group_blacklist", entry.id, entry.name or entry.userid,
           after={"finding": finding.id})
    return entry


# ---------------------------------------------------------------- running: the minutely job and dry runs


def cursor_row(session: Session) -> ModerationCursor:
    row = session.get(ModerationCursor, CURSOR)
    if row is None:
        session.execute(dialect_insert(session, ModerationCursor.__table__).values(
            name=CURSOR, message_id=0, change_id=0, pending={}).on_conflict_do_nothing())
        row = session.get(ModerationCursor, CURSOR)
        assert row is not None
    return row


def run_new(session: Session, *, now: datetime | None = None) -> Outcome:
    """New group messages since the last run (and groups whose ads still wait) through the live rules, then
    blacklisted members who joined a group. Re-reading is harmless: findings are unique."""
    now = now or utcnow()
    row = cursor_row(session)
    outcome = Outcome()
    specs = live_specs(session)
    new = list(session.execute(select(GroupMessage.id, GroupMessage.group_chat_id, GroupMessage.sent_at,
                                      GroupMessage.msgid)
                               .where(GroupMessage.id > row.message_id, GroupMessage.group_chat_id.is_not(None))
                               .order_by(GroupMessage.id).limit(RUN_BATCH)))
    last_id = new[-1][0] if new else row.message_id
    if specs and (new or row.pending):
        back = timedelta(seconds=engine.max_window_seconds(specs) + LOOKBACK_MARGIN_SECONDS)
        since: dict[int, datetime] = {}
        for _id, new_gid, sent_at, _m in new:
            since[int(new_gid or 0)] = min(since.get(int(new_gid or 0), sent_at), sent_at)
        for pending_gid, at in (row.pending or {}).items():
            when = datetime.fromtimestamp(float(at), tz=UTC)
            since[int(pending_gid)] = min(since.get(int(pending_gid), when), when)
        since = {g: (s if s.tzinfo else s.replace(tzinfo=UTC)) - back for g, s in since.items()}
        messages = load_messages(session, since_by_group=since)
        result = engine.Engine(specs).run(messages, group_infos(session, since), now=now.timestamp())
        fresh = {m for _id, _g, _s, m in new}
        windowed = {engine.FLOOD, engine.STICKERS, engine.VOICE, engine.BANNED_WORDS}
        kinds = {s.id: s.kind for s in specs}
        # A windowed rule's trigger must be a new message: an older one was judged when it was new.
        hits = [h for h in result.hits if kinds[h.rule_id] not in windowed or h.trigger in fresh]
        outcome.messages, outcome.hits = len(messages), len(hits)
        outcome.created = store_hits(session, hits)
        row.pending = {str(g): at for g, at in result.pending.items()}
        outcome.pending_groups = len(result.pending)
    elif not specs:
        row.pending = {}
    row.message_id = last_id
    outcome.created += check_joins(session, row=row)
    row.ran_at = now
    session.flush()
    return outcome


def dry_run(session: Session, *, rule_id: int, days: int, viewer: Viewer, now: datetime | None = None
            ) -> dict[str, Any]:
    """What the rule would have found over the last ``days`` (nothing stored but the summary on the rule)."""
    _manager(viewer)
    if not 1 <= days <= 30:
        raise Invalid("A dry run covers 1 to 30 days", field="days")
    rule = get_rule(session, rule_id=rule_id)
    now = now or utcnow()
    messages = load_messages(session, since=now - timedelta(days=days), limit=DRY_RUN_MAX_MESSAGES)
    groups = group_infos(session, {m.group for m in messages})
    result = engine.Engine([spec(rule)], grace=0).run(messages, groups, now=now.timestamp())
    names = {g.id: g.name or g.chat_id for g in session.scalars(
        select(GroupChat).where(GroupChat.id.in_(sorted({h.group for h in result.hits}) or [0])))}
    texts = {m.key: m.text for m in messages if any(m.key == h.trigger for h in result.hits[:20])}
    per_group: dict[int, int] = defaultdict(int)
    for hit in result.hits:
        per_group[hit.group] += 1
    summary = {"days": days, "messages": len(messages), "findings": len(result.hits),
               "members": len({(h.group, h.sender) for h in result.hits}), "groups": len(per_group),
               "capped": len(messages) >= DRY_RUN_MAX_MESSAGES, "at": now.isoformat(),
               "top_groups": [{"group_id": g, "name": names.get(g, ""), "findings": n}
                              for g, n in sorted(per_group.items(), key=lambda i: -i[1])[:10]],
               "samples": [{"group": names.get(h.group, ""), "sender": h.sender,
                            "at": datetime.fromtimestamp(h.at, tz=UTC).isoformat(),
                            "text": texts.get(h.trigger, "")[:EVIDENCE_TEXT], "detail": h.detail}
                           for h in result.hits[:20]]}
    rule.dry_run = summary
    _audit(session, viewer, "test", "group_rule", rule.id, rule.name,
           after={"days": days, "findings": summary["findings"], "messages": summary["messages"]})
    session.flush()
    return summary


# ---------------------------------------------------------------- the blacklist at intake and joins


def refused(session: Session, userids: Iterable[str]) -> set[str]:
    """Which of these people every group's intake refuses (on the blacklist, pardon not given)."""
    ids = sorted({u for u in userids if u})
    found: set[str] = set()
    for start in range(0, len(ids), BATCH):
        found.update(session.scalars(select(BlacklistEntry.userid).where(
            BlacklistEntry.userid.in_(ids[start:start + BATCH]),
            BlacklistEntry.status != BlacklistStatus.pardoned.value)))
    return found


def refused_customers(session: Session, customer_ids: Iterable[int]) -> set[int]:
    """Which of these customers are on the blacklist (pardon not given): e.g. kept out of lucky draws."""
    ids = sorted(set(customer_ids))
    found: set[int] = set()
    for start in range(0, len(ids), BATCH):
        found.update(c for c in session.scalars(select(BlacklistEntry.customer_id).where(
            BlacklistEntry.customer_id.in_(ids[start:start + BATCH]),
            BlacklistEntry.status != BlacklistStatus.pardoned.value)) if c is not None)
    return found


def check_joins(session: Session, *, row: ModerationCursor) -> list[int]:
    """Blacklisted members who joined a group since the last run: a finding and a task for that group's owner."""
    changes = list(session.execute(
        select(GroupMemberChange.id, GroupMemberChange.group_chat_id, GroupMemberChange.at, GroupMember.userid,
               GroupMember.customer_id, GroupMember.group_nickname, GroupMember.name)
        .join(GroupMember, GroupMember.id == GroupMemberChange.member_id)
        .where(GroupMemberChange.id > row.change_id, GroupMemberChange.kind == ChangeKind.joined.value,
               GroupMember.member_type == MemberType.external.value)
        .order_by(GroupMemberChange.id).limit(RUN_BATCH)))
    if not changes:
        return []
    row.change_id = changes[-1][0]
    banned = refused(session, [c[3] for c in changes])
    created: list[int] = []
    table = cast(Table, ModerationFinding.__table__)
    for change_id, gid, at, userid, cid, nick, name in changes:
        if userid not in banned:
            continue
        entry = session.scalar(select(BlacklistEntry).where(BlacklistEntry.userid == userid))
        assert entry is not None
        if _aware(at) < _aware(entry.created_at):
            continue  # joined before being blacklisted
        since = _aware(entry.created_at).astimezone(local_zone()).date()  # the local day, as everywhere
        evidence = [{"msgid": "", "at": at.isoformat(), "type": "join",
                     "text": _("On the blacklist since {day}: {reason}", day=since.isoformat(),
                               reason=entry.reason)[:EVIDENCE_TEXT]}]
        inserted = session.execute(dialect_insert(session, table).on_conflict_do_nothing(
            index_elements=["rule_key", "trigger"]).returning(table.c.id), [{
                "rule_id": None, "rule_key": BLACKLIST_JOIN, "rule_kind": BLACKLIST_JOIN, "group_chat_id": gid,
                "member_userid": userid, "member_name": (nick or name or entry.name)[:128],
                "customer_id": cid or entry.customer_id, "trigger": f"join:{change_id}", "evidence": evidence,
                "detail": {"blacklist_id": entry.id}, "offence": 1, "actions": [], "task_id": None,
                "admin_notified": False, "status": FindingStatus.open.value, "feedback_note": "",
                "feedback_by_id": None, "occurred_at": at, "created_at": utcnow()}]).scalar()
        if inserted is None:
            continue
        finding = session.get(ModerationFinding, int(inserted))
        assert finding is not None
        act_on(session, finding=finding, rule=None)
        created.append(finding.id)
    return created


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _blacklist_scope(query: Any, viewer: Viewer) -> Any:
    """Admins and planners see the whole blacklist; others the entries that came from findings in their groups
    (every group's intake still refuses every entry: ``refused``)."""
    scope = groups_queries.visible_group_clause(viewer)
    if scope is None:
        return query
    return (query.join(ModerationFinding, ModerationFinding.id == BlacklistEntry.finding_id)
            .join(GroupChat, GroupChat.id == ModerationFinding.group_chat_id).where(scope))


def list_blacklist(session: Session, *, viewer: Viewer, status: str | None = None) -> list[BlacklistEntry]:
    query = _blacklist_scope(select(BlacklistEntry), viewer).order_by(BlacklistEntry.id.desc()).limit(500)
    if status:
        query = query.where(BlacklistEntry.status == status)
    return list(session.scalars(query))


def get_entry(session: Session, *, entry_id: int, viewer: Viewer = SYSTEM) -> BlacklistEntry:
    entry = session.scalar(_blacklist_scope(select(BlacklistEntry), viewer).where(BlacklistEntry.id == entry_id))
    if entry is None:
        raise BlacklistNotFound("Not on the blacklist")
    return entry


def appeal(session: Session, *, entry_id: int, text: str, viewer: Viewer) -> BlacklistEntry:
    """The member's appeal, recorded by staff (the member has no console): still refused until pardoned."""
    entry = get_entry(session, entry_id=entry_id, viewer=viewer)
    if entry.status == BlacklistStatus.pardoned.value:
        raise Invalid("Already pardoned", field="status")
    if not text.strip():
        raise Invalid("Write down the appeal", field="text")
    entry.status, entry.appeal, entry.appealed_at = BlacklistStatus.appealed.value, text.strip()[:500], utcnow()
    session.flush()
    _audit(session, viewer, "appeal", "group_blacklist", entry.id, entry.name or entry.userid,
           after={"appeal": entry.appeal})
    return entry


def pardon_entry(session: Session, *, entry_id: int, reason: str, viewer: Viewer) -> BlacklistEntry:
    if not viewer.is_admin:
        raise Forbidden("Only admins pardon")
    entry = get_entry(session, entry_id=entry_id)
    if not reason.strip():
        raise Invalid("Say why", field="reason")
    if entry.status == BlacklistStatus.pardoned.value:
        return entry
    before = entry.status
    entry.status, entry.pardon_reason = BlacklistStatus.pardoned.value, reason.strip()[:255]
    entry.pardoned_at, entry.pardoned_by_id = utcnow(), viewer.user_id
    session.flush()
    _audit(session, viewer, "pardon", "group_blacklist", entry.id, entry.name or entry.userid,
           before={"status": before}, after={"status": entry.status, "reason": entry.pardon_reason})
    if entry.customer_id is not None:
        session.add(Touch(customer_id=entry.customer_id, user_id=viewer.user_id, kind=TouchKind.system.value,
                          occurred_at=utcnow(), content=_("Taken off the group blacklist: {reason}",
                                                          reason=entry.pardon_reason),
                          details={"event": "group_pardon", "blacklist_id": entry.id}))
    return entry


# ---------------------------------------------------------------- findings: reading, feedback, pardon


@dataclass
class FindingFilter:
    group_id: int | None = None
    rule_id: int | None = None
    status: str | None = None
    admin_only: bool = False  # the admin's alerts


def _finding_query(flt: FindingFilter, viewer: Viewer) -> Any:
    query = select(ModerationFinding).join(GroupChat, GroupChat.id == ModerationFinding.group_chat_id)
    scope = groups_queries.visible_group_clause(viewer)
    if scope is not None:
        query = query.where(scope)
    if flt.group_id is not None:
        query = query.where(ModerationFinding.group_chat_id == flt.group_id)
    if flt.rule_id is not None:
        query = query.where(ModerationFinding.rule_id == flt.rule_id)
    if flt.status:
        if flt.status not in FINDING_STATUS_LABELS:
            raise Invalid("Unknown status {status}", field="status", status=flt.status[:20])
        query = query.where(ModerationFinding.status == flt.status)
    if flt.admin_only:
        query = query.where(ModerationFinding.admin_notified.is_(True))
    return query


def list_findings(session: Session, *, flt: FindingFilter, viewer: Viewer, limit: int = 50,
                  cursor: str | None = None) -> Page[ModerationFinding]:
    if flt.group_id is not None:
        groups_queries.get_group(session, group_id=flt.group_id, viewer=viewer)  # 404 for another's group
    query = _finding_query(flt, viewer)
    if cursor:
        try:
            at_raw, last_raw = decode_cursor(cursor)
            at, last_id = datetime.fromisoformat(str(at_raw)), int(last_raw)
        except (ValueError, TypeError) as exc:
            raise Invalid("Invalid cursor", field="cursor") from exc
        query = query.where(or_(ModerationFinding.occurred_at < at,
                                and_(ModerationFinding.occurred_at == at, ModerationFinding.id < last_id)))
    rows = list(session.scalars(query.order_by(ModerationFinding.occurred_at.desc(), ModerationFinding.id.desc())
                                .limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor([rows[-1].occurred_at.isoformat(), rows[-1].id])
                if more and rows else None)


def get_finding(session: Session, *, finding_id: int, viewer: Viewer) -> ModerationFinding:
    finding = session.get(ModerationFinding, finding_id)
    if finding is None:
        raise FindingNotFound("Finding not found")
    try:
        groups_queries.get_group(session, group_id=finding.group_chat_id, viewer=viewer)
    except NotFound as exc:
        raise FindingNotFound("Finding not found") from exc
    return finding


def rule_names(session: Session) -> dict[int, str]:
    return {rid: name for rid, name in session.execute(select(ModerationRule.id, ModerationRule.name))}


def _reopenable(finding: ModerationFinding) -> None:
    if finding.status != FindingStatus.open.value:
        raise Invalid("This finding is already settled", field="status")


def _close_task(session: Session, finding: ModerationFinding, viewer: Viewer, reason: str) -> None:
    if finding.task_id is None:
        return
    from siyu.maintenance.models import Task, TaskStatus

    task = session.get(Task, finding.task_id)
    if task is not None and task.status in (TaskStatus.open.value, TaskStatus.snoozed.value):
        task.status, task.skip_reason = TaskStatus.skipped.value, reason[:255]
        task.finished_by_id, task.finished_at = viewer.user_id, utcnow()


def mark_false_positive(session: Session, *, finding_id: int, note: str, viewer: Viewer) -> ModerationFinding:
    """Feedback: the rule was wrong here. The finding stops counting towards the member's ladder, its open task
    is closed, and the rule's false-positive count (on the rules page) goes up."""
    finding = get_finding(session, finding_id=finding_id, viewer=viewer)
    _reopenable(finding)
    finding.status, finding.feedback_note, finding.feedback_by_id = (FindingStatus.false_positive.value,
                                                                     note.strip()[:255], viewer.user_id)
    _close_task(session, finding, viewer, _("False positive"))
    group = session.get(GroupChat, finding.group_chat_id)
    assert group is not None
    _timeline(session, finding, group, _("A group-rule finding was withdrawn as a false positive"),
              event="group_feedback")
    _audit(session, viewer, "feedback", "group_finding", finding.id, note.strip()[:200] or str(finding.id),
           after={"status": finding.status, "rule_id": finding.rule_id})
    session.flush()
    return finding


def pardon_finding(session: Session, *, finding_id: int, reason: str, viewer: Viewer) -> ModerationFinding:
    """The admin forgives a finding (and takes the member off the blacklist when it put them there)."""
    if not viewer.is_admin:
        raise Forbidden("Only admins pardon")
    if not reason.strip():
        raise Invalid("Say why", field="reason")
    finding = get_finding(session, finding_id=finding_id, viewer=viewer)
    _reopenable(finding)
    finding.status, finding.feedback_note, finding.feedback_by_id = (FindingStatus.pardoned.value,
                                                                     reason.strip()[:255], viewer.user_id)
    _close_task(session, finding, viewer, _("Pardoned"))
    group = session.get(GroupChat, finding.group_chat_id)
    assert group is not None
    _timeline(session, finding, group, _("A group-rule finding was pardoned: {reason}", reason=reason.strip()),
              event="group_pardon")
    _audit(session, viewer, "pardon", "group_finding", finding.id, reason.strip()[:200],
           after={"status": finding.status})
    entry = session.scalar(select(BlacklistEntry).where(BlacklistEntry.finding_id == finding.id,
                                                        BlacklistEntry.status != BlacklistStatus.pardoned.value))
    if entry is not None:
        pardon_entry(session, entry_id=entry.id, reason=reason, viewer=viewer)
    session.flush()
    return finding


# ---------------------------------------------------------------- imported exports of personal groups


def import_group_export(session: Session, *, group_id: int, data: bytes, viewer: Viewer,
                        now: datetime | None = None) -> dict[str, int]:
    """A personal group's chat export (the TXT or CSV layouts of ``customers.chat_imports``; any sender) stored
    as the group's messages — keyed by time, sender and text, so the same file twice stores nothing twice —
    and then moderated like the archive's."""
    from siyu.customers.imports import chat as ci

    group = groups_queries.get_group(session, group_id=group_id, viewer=viewer)
    if viewer.role == "service":
        raise Forbidden("Service staff cannot import chats; ask an operator")
    text = ci.decode(data)
    if not text.strip():
        raise Invalid("The file is empty")
    rows = _parse_export(text)
    if not rows:
        raise Invalid("No messages found in this file")
    table = GroupMessage.__table__
    stored_at = utcnow()
    values = []
    for at, sender, kind, body in rows:
        key = hashlib.sha1(f"{group.chat_id}|{at.isoformat()}|{sender}|{body}".encode(),
                           usedforsecurity=False).hexdigest()[:24]
        payload: dict[str, Any] = {"via": "group_export", kind: {"unknown_amount": True}} if kind == "redpacket" \
            else {"via": "group_export"}
        values.append({"msgid": f"{IMPORT_PREFIX}{key}", "seq": 0, "chat_id": group.chat_id, "group_chat_id": group.id,
                       "sender": sender[:64], "member_type": MemberType.external.value, "customer_id": None,
                       "action": "send", "msg_type": kind, "text": body[:4000], "payload": payload, "sent_at": at,
                       "received_at": stored_at})
    inserted = session.execute(dialect_insert(session, table).on_conflict_do_nothing(index_elements=["msgid"])
                               .returning(table.c.id), values).all()
    team_service.record_audit(session, actor=viewer, action="import", entity_type="group_chat", entity_id=group.id,
                              summary=group.name or group.chat_id,
                              after={"rows": len(values), "count": len(inserted)})
    outcome = run_new(session, now=now)
    return {"messages": len(values), "new_messages": len(inserted), "findings": len(outcome.created)}


def _parse_export(text: str) -> list[tuple[datetime, str, str, str]]:
    from siyu.customers.imports import chat as ci

    out: list[tuple[datetime, str, str, str]] = []
    if ci.looks_like_csv(text):
        import csv
        import io

        types = {"1": "text", "3": "image", "34": "voice", "43": "video", "47": "emotion", "49": "link",
                 "10000": "system"}
        for row in csv.DictReader(io.StringIO(text)):
            parts = (row.get("StrTime") or "").split()
            at = ci._local_time(parts[0], parts[1]) if len(parts) == 2 else None
            sender = (row.get("NickName") or row.get("Sender") or "").strip()
            if at is None or not sender:
                continue
            content = (row.get("StrContent") or "").strip()
            out.append((at, sender, types.get((row.get("Type") or "1").strip(), "unknown"), content))
        return out
    current: list[Any] | None = None
    for raw in text.splitlines():
        found = ci.HEADER.match(raw.rstrip())
        if found is not None:
            day, clock, sender = found.groups()
            at = ci._local_time(day, clock)
            current = [at, sender.strip(), []] if at is not None else None
            if current is not None:
                out.append((current[0], current[1], "", ""))
            continue
        if current is not None and out:
            body = "\n".join([*current[2], raw.rstrip()]).strip()
            current[2].append(raw.rstrip())
            out[-1] = (current[0], current[1], "", body)
    typed = []
    for at, sender, _kind, body in out:
        kind = EXPORT_MARKERS.get(body.strip(), "")
        if not kind and body.startswith("[链接]"):
            kind = "link"
        typed.append((at, sender, kind or "text", body))
    return typed
