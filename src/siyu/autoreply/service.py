"""Auto-reply rules: editing (versions), dry runs, switching on and off, and answering.

Why it is shaped this way (seeds/001): a slip once sent a wrong automatic reply to 500
fans in 20 minutes. So a rule cannot be switched on before a dry run of its current
version has been looked at; every edit is a new version and switches the rule off until
its dry run is seen; each rule has an hourly cap that pauses it and raises an alert; a
message is never answered twice (a unique index), an automatic message is never answered,
and one conversation gets at most one automatic reply per quiet period, so two bots can
never ping-pong. Any rule, or all rules of an account, can be switched off in one click.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.autoreply.matcher import CompiledRule, Matcher, UnsafePattern, check_pattern
from siyu.autoreply.models import AutoReplyRule, AutoReplyRuleVersion, AutoReplySwitch, MatchKind
from siyu.core.db import dialect_insert, missing_ids, utcnow
from siyu.core.errors import Conflict, Forbidden, Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.settings import local_zone
from siyu.core.text import Name
from siyu.core.viewer import Viewer
from siyu.customers import variables
from siyu.inbox import service as inbox_service
from siyu.inbox.models import Conversation, DeliveryStatus, Direction, Message, MessageType
from siyu.inbox.service import StoredInbound
from siyu.team import service as team_service

QUIET_PERIOD = timedelta(minutes=10)
DRY_RUN_DAYS = 7
DRY_RUN_SCAN_LIMIT = 50_000
DRY_RUN_SHOWN = 200
EDITING_ROLES = ("admin", "planner", "operator")


class RuleNotFound(NotFound):
    pass


class MenuItem(BaseModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")  # comes back as the click's menu_id
    content: str = Field(min_length=1, max_length=64)


class Menu(BaseModel):
    """A 微信客服 menu (msgmenu): "1 查订单 2 活动规则 3 人工" as items the customer taps."""

    head_content: str = Field("", max_length=1024)
    # msgmenu names it "list"; at most 10 items (W:94677 发送消息; more is refused with 95008).
    items: list[MenuItem] = Field(min_length=1, max_length=10, alias="list")
    tail_content: str = Field("", max_length=1024)

    model_config = ConfigDict(populate_by_name=True)

    def as_text(self) -> str:
        return "\n".join(line for line in [self.head_content, *(i.content for i in self.items), self.tail_content]
                         if line)


class RuleIn(BaseModel):
    name: Name = Field(min_length=1, max_length=64)
    account_id: Id | None = None
    match_kind: MatchKind
    keywords: list[str] = Field(default_factory=list, max_length=500)
    pattern: str = Field("", max_length=500)
    hours: dict[str, Any] | None = None
    priority: int = Field(100, ge=0, le=10_000)
    reply: str = Field("", max_length=2000)
    # A menu answers instead of plain text where the channel has menus (微信客服); elsewhere its text is sent.
    menu: Menu | None = None
    hourly_cap: int = Field(100, ge=1, le=10_000)

    @field_validator("keywords")
    @classmethod
    def clean_keywords(cls, value: list[str]) -> list[str]:
        return [k.strip() for k in value if k.strip()]


# ---------------------------------------------------------------- editing


def _require_editor(session: Session, viewer: Viewer, account_id: int | None) -> None:
    if viewer.role not in EDITING_ROLES:
        raise Forbidden("Your role may not change auto-reply rules")
    if account_id is None and not viewer.sees_all_accounts:
        raise Forbidden("Only planners and administrators may write rules for every account")
    if account_id is not None and (not viewer.can_see_account(account_id)
                                   or missing_ids(session, "account", [account_id])):
        raise Invalid("Account {account_id} not found", field="account_id", account_id=account_id)


def _validate(data: RuleIn) -> None:
    if data.menu is not None and not data.reply.strip():
        data.reply = data.menu.as_text()
    if not data.reply.strip():
        raise Invalid("Write the reply", field="reply")
    variables.check_outgoing(data.reply, field="reply")
    if data.menu is not None:
        for text in (data.menu.head_content, data.menu.tail_content, *(i.content for i in data.menu.items)):
            variables.check_outgoing(text, field="menu")
    if data.match_kind in (MatchKind.exact, MatchKind.contains) and not data.keywords:
        raise Invalid("Give at least one keyword", field="keywords")
    if data.match_kind == MatchKind.regex:
        try:
            check_pattern(data.pattern)
        except UnsafePattern as exc:
            raise Invalid("This pattern is refused: {reason}. Write it without nested repetition.",
                          field="pattern", reason=_(str(exc))) from exc
    if data.match_kind == MatchKind.outside_hours:
        hours = data.hours or {}
        try:
            datetime.strptime(str(hours.get("start")), "%H:%M")
            datetime.strptime(str(hours.get("end")), "%H:%M")
        except ValueError as exc:
            raise Invalid("Give service hours as HH:MM", field="hours") from exc


def get_rule(session: Session, *, rule_id: int, viewer: Viewer) -> AutoReplyRule:
    rule = session.get(AutoReplyRule, rule_id)
    if rule is None or (rule.account_id is not None and not viewer.can_see_account(rule.account_id)):
        raise RuleNotFound("Rule not found")
    return rule


def current_version(session: Session, rule: AutoReplyRule) -> AutoReplyRuleVersion:
    version = session.get(AutoReplyRuleVersion, rule.current_version_id) if rule.current_version_id else None
    if version is None:
        raise RuleNotFound("Rule not found")
    return version


def save_rule(session: Session, *, data: RuleIn, viewer: Viewer, rule_id: int | None = None) -> AutoReplyRule:
    """Create a rule, or add a version to one. A new version is off until its dry run is seen."""
    _require_editor(session, viewer, data.account_id)
    _validate(data)
    if rule_id is None:
        rule = AutoReplyRule(account_id=data.account_id, name=data.name, enabled=False)
        session.add(rule)
        session.flush()
        number = 1
    else:
        rule = get_rule(session, rule_id=rule_id, viewer=viewer)
        _require_editor(session, viewer, rule.account_id)
        rule.name, rule.account_id = data.name, data.account_id
        number = (session.scalar(select(func.max(AutoReplyRuleVersion.version))
                                 .where(AutoReplyRuleVersion.rule_id == rule.id)) or 0) + 1
    version = AutoReplyRuleVersion(
        rule_id=rule.id, version=number, match_kind=data.match_kind.value, keywords=data.keywords,
        pattern=data.pattern, hours=data.hours, priority=data.priority, reply=data.reply,
        menu=data.menu.model_dump(by_alias=True) if data.menu is not None else None, hourly_cap=data.hourly_cap,
        created_by_id=viewer.user_id)
    session.add(version)
    session.flush()
    was_enabled = rule.enabled
    rule.current_version_id = version.id
    rule.enabled = False
    team_service.record_audit(session, actor=viewer, action="create" if number == 1 else "update",
                              entity_type="autoreply_rule", entity_id=rule.id, summary=rule.name,
                              after={"version": number, **data.model_dump(mode="json"),
                                     "switched_off_for_review": was_enabled})
    session.flush()
    return rule


def set_enabled(session: Session, *, rule_id: int, enabled: bool, viewer: Viewer) -> AutoReplyRule:
    rule = get_rule(session, rule_id=rule_id, viewer=viewer)
    _require_editor(session, viewer, rule.account_id)
    if enabled:
        if rule.dry_run_version_id != rule.current_version_id:
            raise Conflict("Look at the dry run of this version before switching the rule on")
        rule.paused_at, rule.paused_reason = None, ""
    rule.enabled = enabled
    team_service.record_audit(session, actor=viewer, action="enable" if enabled else "disable",
                              entity_type="autoreply_rule", entity_id=rule.id, summary=rule.name)
    session.flush()
    return rule


def set_account_switch(session: Session, *, account_id: int, enabled: bool, viewer: Viewer) -> AutoReplySwitch:
    if not viewer.can_see_account(account_id) or missing_ids(session, "account", [account_id]):
        raise NotFound("Account {account_id} not found", account_id=account_id)
    _require_editor(session, viewer, account_id)
    switch = session.get(AutoReplySwitch, account_id)
    if switch is None:
        switch = AutoReplySwitch(account_id=account_id)
        session.add(switch)
    switch.enabled, switch.changed_by_id, switch.changed_at = enabled, viewer.user_id, utcnow()
    team_service.record_audit(session, actor=viewer, action="enable" if enabled else "disable",
                              entity_type="autoreply_account", entity_id=account_id,
                              entity_name=_account_name(session, account_id))
    session.flush()
    return switch


def list_rules(session: Session, *, viewer: Viewer) -> list[tuple[AutoReplyRule, AutoReplyRuleVersion | None]]:
    query = select(AutoReplyRule).order_by(AutoReplyRule.id)
    if not viewer.sees_all_accounts:
        query = query.where(AutoReplyRule.account_id.in_(sorted(viewer.account_ids)))
    rules = list(session.scalars(query))
    versions = {v.id: v for v in session.scalars(select(AutoReplyRuleVersion).where(
        AutoReplyRuleVersion.id.in_([r.current_version_id for r in rules if r.current_version_id])))}
    return [(r, versions.get(r.current_version_id or 0)) for r in rules]


def versions_of(session: Session, rule: AutoReplyRule) -> list[AutoReplyRuleVersion]:
    return list(session.scalars(select(AutoReplyRuleVersion).where(AutoReplyRuleVersion.rule_id == rule.id)
                                .order_by(AutoReplyRuleVersion.version.desc())))


def switched_off_accounts(session: Session) -> set[int]:
    return set(session.scalars(select(AutoReplySwitch.account_id).where(AutoReplySwitch.enabled.is_(False))))


def sends_last_hour(session: Session, *, rule_id: int, now: datetime | None = None) -> int:
    now = now or utcnow()
    versions = select(AutoReplyRuleVersion.id).where(AutoReplyRuleVersion.rule_id == rule_id)
    return int(session.scalar(select(func.count()).select_from(Message).where(
        Message.rule_version_id.in_(versions), Message.sent_at >= now - timedelta(hours=1))) or 0)


# ---------------------------------------------------------------- matching


def _compiled(rule: AutoReplyRule, version: AutoReplyRuleVersion) -> CompiledRule:
    return CompiledRule(version_id=version.id, rule_id=rule.id, account_id=rule.account_id,
                        kind=version.match_kind, priority=version.priority, keywords=tuple(version.keywords),
                        pattern=version.pattern, hours=version.hours)


_matcher_cache: dict[Any, tuple[Any, Matcher]] = {}


def active_matcher(session: Session) -> Matcher:
    """The matcher for the rules switched on now, rebuilt only when a rule changes."""
    rows = session.execute(select(AutoReplyRule.id, AutoReplyRule.current_version_id).where(
        AutoReplyRule.enabled.is_(True), AutoReplyRule.paused_at.is_(None)).order_by(AutoReplyRule.id)).all()
    fingerprint = tuple((r.id, r.current_version_id) for r in rows)
    key = session.get_bind()
    cached = _matcher_cache.get(key)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    rules = {r.id: r for r in session.scalars(select(AutoReplyRule).where(
        AutoReplyRule.id.in_([row.id for row in rows])))}
    versions = session.scalars(select(AutoReplyRuleVersion).where(
        AutoReplyRuleVersion.id.in_([row.current_version_id for row in rows if row.current_version_id])))
    matcher = Matcher([_compiled(rules[v.rule_id], v) for v in versions])
    _matcher_cache[key] = (fingerprint, matcher)
    return matcher


def _local(at: datetime) -> datetime:
    return at.astimezone(local_zone())


def respond(session: Session, *, messages: Sequence[StoredInbound]) -> int:
    """Answer new inbound messages that a switched-on rule matches. Returns how many replies were queued."""
    candidates = [m for m in messages if m.msg_type != MessageType.system.value
                  and not (m.payload or {}).get("automatic")]
    if not candidates:
        return 0
    matcher = active_matcher(session)
    if not matcher.rules:
        return 0

    # In memory first: the messages whose account is known and that no rule matches need no query at all
    # (in a flood most do not match), so conversations, switches and quiet periods are read for the rest.
    candidates = [m for m in candidates if m.account_id is None or _hit(matcher, m, m.account_id) is not None]
    if not candidates:
        return 0
    conversations = {c.id: c for c in session.scalars(select(Conversation).where(
        Conversation.id.in_({m.conversation_id for m in candidates})))}
    off = switched_off_accounts(session)
    now = utcnow()
    recently_answered = set(session.scalars(select(Message.conversation_id).where(
        Message.conversation_id.in_(list(conversations)), Message.automatic.is_(True),
        Message.sent_at >= now - QUIET_PERIOD)))
    sent_now: dict[int, int] = {}  # per rule: the sends of the last hour (read once a batch) and this batch's
    fresh: set[int] = set()
    queued = 0
    for message in sorted(candidates, key=lambda m: (m.sent_at, m.id)):
        conversation = conversations.get(message.conversation_id)
        if conversation is None or conversation.account_id in off or conversation.id in recently_answered:
            continue
        hit = _hit(matcher, message, conversation.account_id)
        if hit is None:
            continue
        # Fresh from the database (once a batch): someone may have just switched it off in another session.
        rule = session.get(AutoReplyRule, hit.rule_id, populate_existing=hit.rule_id not in fresh)
        fresh.add(hit.rule_id)
        version = session.get(AutoReplyRuleVersion, hit.version_id)
        if rule is None or version is None or not rule.enabled or rule.paused_at is not None:
            continue
        if rule.id not in sent_now:
            sent_now[rule.id] = sends_last_hour(session, rule_id=rule.id, now=now)
        if sent_now[rule.id] >= version.hourly_cap:
            _pause(session, rule, cap=version.hourly_cap)
            continue
        values = variables.values_for(session, [(conversation.customer_id, conversation.account_id)])[
            (conversation.customer_id, conversation.account_id)]
        text = variables.render(version.reply, values)
        menu = filled_menu(version.menu, values) if version.menu else None
        if _queue_reply(session, conversation=conversation, answered=message, version=version, text=text, menu=menu,
                        now=now):
            sent_now[rule.id] = sent_now.get(rule.id, 0) + 1
            recently_answered.add(conversation.id)
            queued += 1
    session.flush()
    return queued


def _hit(matcher: Matcher, message: StoredInbound, account_id: int) -> CompiledRule | None:
    menu_id = _menu_id(message)  # a tap on a menu item: its id, as an exact keyword, comes first
    hit = matcher.match_exact(menu_id, account_id=account_id) if menu_id else None
    return hit or matcher.match(message.text, account_id=account_id, at=_local(message.sent_at))


def _menu_id(message: StoredInbound) -> str:
    """The menu item a customer tapped (微信客服 sends the tap as text with ``menu_id``)."""
    text = (message.payload or {}).get("text")
    return str(text.get("menu_id") or "") if isinstance(text, dict) else ""


def filled_menu(menu: dict[str, Any], values: variables.Values) -> dict[str, Any]:
    """A menu's texts (head, items, tail) with the customer-safe variables filled, like a plain reply."""
    return {**menu, "head_content": variables.render(str(menu.get("head_content") or ""), values),
            "tail_content": variables.render(str(menu.get("tail_content") or ""), values),
            "list": [{**item, "content": variables.render(str(item.get("content") or ""), values)}
                     if isinstance(item, dict) else item for item in menu.get("list") or []]}


def _queue_reply(session: Session, *, conversation: Conversation, answered: StoredInbound,
                 version: AutoReplyRuleVersion, text: str, menu: dict[str, Any] | None, now: datetime) -> bool:
    row = {
        "conversation_id": conversation.id, "source": "autoreply",
        "platform_msgid": f"auto:{answered.id}", "direction": Direction.outbound.value,
        "msg_type": MessageType.msgmenu.value if menu else MessageType.text.value, "sender": "",
        "text": text, "payload": {"msgmenu": menu} if menu else None, "sent_at": now,
        "received_at": now, "status": DeliveryStatus.queued.value, "error": "", "automatic": True,
        "internal": False, "rule_version_id": version.id, "reply_to_id": answered.id,
    }
    # The unique reply_to_id makes "never twice to one message" hold even across workers.
    statement = dialect_insert(session, Message.__table__).values(row).on_conflict_do_nothing().returning(
        Message.__table__.c.id)
    inserted = session.connection().execute(statement).first()
    if inserted is None:
        return False
    inbox_service.send_after_commit(session, int(inserted[0]))
    conversation.last_message_at = now
    conversation.last_message_preview = text[:120]
    return True


def pause_at_cap(session: Session, *, rule_id: int, cap: int) -> None:
    """Pause a rule that reached its hourly cap (a channel that decides replies itself: the 公众号's passive ones)."""
    rule = session.get(AutoReplyRule, rule_id)
    if rule is not None:
        _pause(session, rule, cap=cap)


def _pause(session: Session, rule: AutoReplyRule, *, cap: int) -> None:
    if rule.paused_at is not None:
        return
    rule.paused_at = utcnow()
    rule.paused_reason = f"hourly cap {cap} reached"
    # The alert: an audit entry now, and the rule shown as paused on the rules page and the inbox.
    team_service.record_audit(session, actor=_system(), action="pause", entity_type="autoreply_rule",
                              entity_id=rule.id, entity_name=rule.name,
                              summary=_("Hourly cap {cap} reached", cap=cap))


def _account_name(session: Session, account_id: int) -> str:
    account = session.get(Account, account_id)
    return account.display_name if account is not None else ""


def _system() -> Viewer:
    from siyu.core.viewer import SYSTEM

    return SYSTEM


def paused_rules(session: Session, *, viewer: Viewer) -> list[AutoReplyRule]:
    return [rule for rule, _version in list_rules(session, viewer=viewer) if rule.paused_at is not None]


# ---------------------------------------------------------------- dry run


@dataclass
class DryRunHit:
    message_id: int
    conversation_id: int
    customer_id: int | None
    text: str
    sent_at: datetime
    reply: str


@dataclass
class DryRun:
    scanned: int
    matched: int
    customers: int
    hits: list[DryRunHit]
    days: int


def dry_run(session: Session, *, rule_id: int, viewer: Viewer, days: int = DRY_RUN_DAYS) -> DryRun:
    """Who the rule's current version would have answered in the last ``days``, and with what."""
    rule = get_rule(session, rule_id=rule_id, viewer=viewer)
    version = current_version(session, rule)
    matcher = Matcher([_compiled(rule, version)])
    since = utcnow() - timedelta(days=days)
    query = (select(Message.id, Message.conversation_id, Message.text, Message.sent_at, Conversation.account_id,
                    Conversation.customer_id)
             .join(Conversation, Conversation.id == Message.conversation_id)
             .where(Message.direction == Direction.inbound.value, Message.sent_at >= since,
                    Message.msg_type != MessageType.system.value)
             .order_by(Message.sent_at.desc()).limit(DRY_RUN_SCAN_LIMIT))
    if rule.account_id is not None:
        query = query.where(Conversation.account_id == rule.account_id)
    elif not viewer.sees_all_accounts:
        query = query.where(Conversation.account_id.in_(sorted(viewer.account_ids)))
    scanned = matched = 0
    hits: list[DryRunHit] = []
    customers: set[int] = set()
    for row in session.execute(query):
        scanned += 1
        if matcher.match(row.text, account_id=row.account_id, at=_local(row.sent_at)) is None:
            continue
        matched += 1
        if row.customer_id is not None:
            customers.add(row.customer_id)
        if len(hits) < DRY_RUN_SHOWN:
            conversation = session.get(Conversation, row.conversation_id)
            reply = inbox_service.fill_variables(session, text=version.reply, conversation=conversation) \
                if conversation is not None else version.reply
            hits.append(DryRunHit(message_id=row.id, conversation_id=row.conversation_id,
                                  customer_id=row.customer_id, text=row.text, sent_at=row.sent_at, reply=reply))
    rule.dry_run_version_id = version.id
    session.flush()
    return DryRun(scanned=scanned, matched=matched, customers=len(customers), hits=hits, days=days)


def suggest_reply(session: Session, *, conversation: Conversation) -> str | None:
    """The reply a switched-on rule would give to the customer's last message, filled for this conversation:
    what the sidebar offers where Siyu cannot send itself (a WeCom member's own chat). None: no rule matches."""
    last = session.scalar(select(Message).where(
        Message.conversation_id == conversation.id, Message.direction == Direction.inbound.value,
        Message.msg_type != MessageType.system.value).order_by(Message.sent_at.desc(), Message.id.desc()).limit(1))
    if last is None or not last.text:
        return None
    hit = active_matcher(session).match(last.text, account_id=conversation.account_id, at=_local(last.sent_at))
    version = session.get(AutoReplyRuleVersion, hit.version_id) if hit is not None else None
    if version is None:
        return None
    return inbox_service.fill_variables(session, text=version.reply, conversation=conversation)


@inbox_service.on_ingested
def _respond_to_ingested(session: Session, messages: Sequence[StoredInbound]) -> int:
    return respond(session, messages=messages)
