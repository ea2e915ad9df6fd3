"""用户维系 service: cadence policies, each customer's next-due day, and the daily task list.

Why the next-due day is stored: an operator's "who to talk to today" must be an indexed read at a
million customers. ``CadenceDue.next_due_on`` is moved in the same transaction as the touches that
move it: ``customers.service`` calls its touch listeners (``on_touches_written``) after every touch
write — the console's ``add_touch``, bulk touches, the sync, and the inbox flood's set-based
``count_new_contacts`` — and ``touches_written`` here re-derives the due day of those customers with
one aggregate read and one executemany UPDATE per batch, and closes their open chat tasks.

Who matches a policy is decided by the one segment compiler (``segments.compiler.compile_tree``):
a policy's condition is a segment condition tree, never a filter language of its own.

The daily job (``generate_tasks``) writes tasks with a unique key (customer, account, kind, day)
and ``INSERT … ON CONFLICT DO NOTHING``, counting the day's existing tasks against each operator's
cap, so running it twice creates nothing twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from siyu.accounts.models import Account
from siyu.core.db import among, dialect_insert, utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.settings import local_today, local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import (
    CONTACT_KINDS,
    Customer,
    CustomField,
    CustomFieldValue,
    Friendship,
    FriendshipStatus,
    Touch,
    TouchKind,
)
from siyu.customers.schemas import TouchIn
from siyu.inbox.models import Conversation, ConversationStatus
from siyu.maintenance.models import (
    TASK_KEY,
    TASK_KIND_LABELS,
    CadenceDue,
    CadencePolicy,
    FollowUp,
    Task,
    TaskKind,
    TaskSettings,
    TaskStatus,
    ref_key_of,
)
from siyu.maintenance.schemas import PolicyIn, PolicyUpdate, TaskDoneIn
from siyu.orders.models import CustomerPurchaseFacts
from siyu.segments.compiler import compile_tree
from siyu.segments.schemas import parse_tree
from siyu.team.service import record_audit

# The private touch a cadence counts (私聊), and the touches of another kind that start a quiet period.
PRIVATE_KINDS = (TouchKind.chat.value,)
QUIET_KINDS = tuple(sorted({k.value for k in CONTACT_KINDS} - set(PRIVATE_KINDS) | {TouchKind.purchase.value}))
# Task kinds a private chat with the customer finishes (closed when the customer is chatted with otherwise).
CHAT_TASK_KINDS = (TaskKind.cadence.value, TaskKind.follow_up.value, TaskKind.birthday.value)
# Custom date fields read for birthday / anniversary tasks (keys, as the demo and imports name them).
DATE_FIELD_KEYS = ("birthday", "anniversary")
NEW_FRIEND_DAYS = 3  # a friend added within these days without a remark name is a task
DELETED_LOOKBACK_DAYS = 1  # friends who deleted us since the last run
BATCH = 1000
# Kind weights in the priority: a conversation waiting for us comes before a routine check-in.
# The kinds the daily job makes (and caps per operator); the rest arrive from other domains as they happen.
GENERATED_KINDS = frozenset({TaskKind.cadence.value, TaskKind.follow_up.value, TaskKind.birthday.value,
                             TaskKind.new_friend.value, TaskKind.deleted.value, TaskKind.unanswered.value})
# A 客户SOP step (sops.service) is a planned touch: after a follow-up, before a birthday.
KIND_WEIGHT = {TaskKind.unanswered: 400, TaskKind.follow_up: 300, TaskKind.sop: 280, TaskKind.birthday: 250,
               TaskKind.deleted: 200, TaskKind.cadence: 100, TaskKind.new_friend: 50, TaskKind.campaign: 260,
               TaskKind.event_follow: 270, TaskKind.event_invite: 150,  # 线下活动 (offline.service)
               TaskKind.coupon_expiry: 150, TaskKind.reward: 260, TaskKind.draw_win: 260}


class TaskNotFound(NotFound):
    """A task that does not exist or is on an account the viewer cannot see."""


class PolicyNotFound(NotFound):
    pass


# ---------------------------------------------------------------- settings


def get_settings_row(session: Session) -> TaskSettings:
    row = session.scalar(select(TaskSettings).limit(1))
    if row is None:
        row = TaskSettings(generate_hour=7, generate_minute=30, cap_per_operator=50)
        session.add(row)
        session.flush()
    return row


# ---------------------------------------------------------------- policies


def list_policies(session: Session) -> list[CadencePolicy]:
    return list(session.scalars(select(CadencePolicy).order_by(CadencePolicy.position, CadencePolicy.id)))


def get_policy(session: Session, *, policy_id: int) -> CadencePolicy:
    policy = session.get(CadencePolicy, policy_id)
    if policy is None:
        raise PolicyNotFound("Cadence policy not found")
    return policy


@dataclass
class ApplyResult:
    policy: CadencePolicy
    matched: int
    message: str = ""


def create_policy(session: Session, *, data: PolicyIn, viewer: Viewer) -> ApplyResult:
    if not viewer.is_admin:
        raise NotFound("Not found")
    conditions = data.conditions.model_dump(mode="json") if data.conditions is not None else None
    if data.conditions is not None:
        compile_tree(session, data.conditions, viewer=viewer)  # refuses deleted tags, fields, …
    policy = CadencePolicy(name=data.name.strip(), conditions=conditions, every_days=data.every_days,
                           quiet_days=data.quiet_days, position=data.position, active=True,
                           created_by_id=viewer.user_id)
    session.add(policy)
    session.flush()
    result = apply_policy(session, policy=policy)
    record_audit(session, actor=viewer, action="create", entity_type="cadence_policy", entity_id=policy.id,
                 entity_name=policy.name, after=_policy_snapshot(policy))
    return result


def _policy_snapshot(policy: CadencePolicy) -> dict[str, Any]:
    return {"name": policy.name, "every_days": policy.every_days, "quiet_days": policy.quiet_days,
            "position": policy.position, "active": policy.active, "conditions": policy.conditions}


def update_policy(session: Session, *, policy_id: int, data: PolicyUpdate, viewer: Viewer) -> ApplyResult:
    """Change a policy; its customers follow at once.

    A new condition, a new position or switching the policy off takes its customers off the cadence
    and (when on) puts the customers it now matches back on, with due days from their timelines; new
    days only move the due days. Running tasks already created today stay as they are.
    """
    if not viewer.is_admin:
        raise NotFound("Not found")
    policy = get_policy(session, policy_id=policy_id)
    before = _policy_snapshot(policy)
    given = data.model_fields_set
    if "conditions" in given:
        if data.conditions is not None:
            compile_tree(session, data.conditions, viewer=viewer)  # refuses deleted tags, fields, …
        policy.conditions = data.conditions.model_dump(mode="json") if data.conditions is not None else None
    if data.name is not None:
        policy.name = data.name.strip()
    for attribute in ("every_days", "quiet_days", "position", "active"):
        value = getattr(data, attribute)
        if attribute in given and value is not None:
            setattr(policy, attribute, value)
    after = _policy_snapshot(policy)
    changed = {key for key in after if after[key] != before[key]}
    if not changed:
        return ApplyResult(policy=policy, matched=policy.matched)
    session.flush()
    if changed & {"conditions", "position", "active"}:
        session.execute(delete(CadenceDue).where(CadenceDue.policy_id == policy.id))
        if policy.active:
            result = apply_policy(session, policy=policy)
        else:
            policy.matched = 0
            result = ApplyResult(policy=policy, matched=0)
    else:
        ids = list(session.scalars(select(CadenceDue.customer_id).where(CadenceDue.policy_id == policy.id)
                                   .distinct()))
        refresh_due(session, customer_ids=ids)
        result = ApplyResult(policy=policy, matched=policy.matched)
    action = ("disable" if not policy.active else "enable") if changed == {"active"} else "update"
    record_audit(session, actor=viewer, action=action, entity_type="cadence_policy", entity_id=policy.id,
                 entity_name=policy.name, before={k: before[k] for k in changed}, after={k: after[k] for k in changed})
    return result


def delete_policy(session: Session, *, policy_id: int, viewer: Viewer) -> None:
    if not viewer.is_admin:
        raise NotFound("Not found")
    policy = get_policy(session, policy_id=policy_id)
    record_audit(session, actor=viewer, action="delete", entity_type="cadence_policy", entity_id=policy.id,
                 entity_name=policy.name, before=_policy_snapshot(policy))
    session.execute(delete(CadenceDue).where(CadenceDue.policy_id == policy.id))
    session.delete(policy)
    session.flush()


def apply_policy(session: Session, *, policy: CadencePolicy, today: date | None = None,
                 now: datetime | None = None) -> ApplyResult:
    """Put the customers matching the policy (and under no earlier policy) on its cadence.

    Who matches is the segment compiler's WHERE clause on ``customer``, joined with the active
    friendships (one row per customer × account). New rows get their due day from the timeline.
    """
    today = today or local_today()
    # The outer friendship aliased: the compiler's leaves (EXISTS on friendship) correlate to customer only.
    friend = aliased(Friendship)
    query = (select(friend.customer_id, friend.account_id)
             .join(Customer, Customer.id == friend.customer_id)
             .where(friend.status == FriendshipStatus.active.value, Customer.merged_into_id.is_(None)))
    if policy.conditions:
        query = query.where(compile_tree(session, parse_tree(policy.conditions), viewer=SYSTEM, now=now).clause)
    taken = select(CadenceDue.customer_id).where(CadenceDue.customer_id == friend.customer_id,
                                                 CadenceDue.account_id == friend.account_id)
    pairs = [(int(c), int(a)) for c, a in session.execute(query.where(~taken.exists()))]
    already = session.scalar(select(func.count()).select_from(CadenceDue).where(CadenceDue.policy_id == policy.id))
    matched = len(pairs) + int(already or 0)
    policy.matched = matched
    if not pairs:
        message = _("No customer matches this policy's condition now: nothing was put on its cadence.") \
            if matched == 0 else ""
        return ApplyResult(policy=policy, matched=matched, message=message)
    table = cast(Table, CadenceDue.__table__)
    for start in range(0, len(pairs), BATCH * 10):
        chunk = pairs[start:start + BATCH * 10]
        session.connection().execute(
            dialect_insert(session, table).on_conflict_do_nothing(),
            [{"customer_id": c, "account_id": a, "policy_id": policy.id, "next_due_on": today,
              "last_private_at": None} for c, a in chunk])
    refresh_due(session, customer_ids=sorted({c for c, _a in pairs}), today=today)
    return ApplyResult(policy=policy, matched=matched)


def apply_all_policies(session: Session, *, today: date | None = None) -> dict[int, int]:
    """The daily step before the tasks: friends who are gone leave their cadence, new matches join one."""
    prune_due(session)
    return {p.id: apply_policy(session, policy=p, today=today).matched
            for p in list_policies(session) if p.active}


def prune_due(session: Session) -> int:
    """Cadence rows whose friendship is no longer active (deleted us, transferred): nobody to chat with there.

    One join (the few inactive friendships against the cadence's primary key), one executemany DELETE.
    """
    pairs = [{"c": int(c), "a": int(a)} for c, a in session.execute(
        select(CadenceDue.customer_id, CadenceDue.account_id)
        .join(Friendship, and_(Friendship.customer_id == CadenceDue.customer_id,
                               Friendship.account_id == CadenceDue.account_id))
        .where(Friendship.status != FriendshipStatus.active.value))]
    if pairs:
        table = cast(Table, CadenceDue.__table__)
        session.connection().execute(delete(table).where(table.c.customer_id == bindparam("c"),
                                                         table.c.account_id == bindparam("a")), pairs)
    return len(pairs)


# ---------------------------------------------------------------- next-due days (kept with the touches)


def _local_day(at: datetime | None) -> date | None:
    return at.astimezone(local_zone()).date() if at is not None else None


def refresh_due(session: Session, *, customer_ids: Sequence[int], today: date | None = None) -> int:
    """Re-derive the next-due day of these customers' cadence rows from their timeline, set-based.

    Per batch: one read (the last private touch on the row's account — or on no account — the last
    touch of another kind, the last purchase) and one executemany UPDATE of the rows that moved.
    """
    today = today or local_today()
    ids = sorted(set(customer_ids))
    moved = 0
    due_table = cast(Table, CadenceDue.__table__)
    due = due_table.c
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        last_private = (select(func.max(Touch.occurred_at))
                        .where(Touch.kind.in_(PRIVATE_KINDS), Touch.customer_id == CadenceDue.customer_id,
                               or_(Touch.account_id == CadenceDue.account_id, Touch.account_id.is_(None)))
                        .scalar_subquery())
        last_other = (select(func.max(Touch.occurred_at))
                      .where(Touch.kind.in_(QUIET_KINDS), Touch.customer_id == CadenceDue.customer_id)
                      .scalar_subquery())
        rows = session.execute(
            select(CadenceDue.customer_id, CadenceDue.account_id, CadenceDue.next_due_on, CadenceDue.last_private_at,
                   CadencePolicy.every_days, CadencePolicy.quiet_days, last_private.label("private"),
                   last_other.label("other"), CustomerPurchaseFacts.last_purchase_at)
            .join(CadencePolicy, CadencePolicy.id == CadenceDue.policy_id)
            .outerjoin(CustomerPurchaseFacts, CustomerPurchaseFacts.customer_id == CadenceDue.customer_id)
            .where(CadenceDue.customer_id.in_(chunk))).all()
        changes = []
        for row in rows:
            next_due = next_due_day(today=today, every_days=row.every_days, quiet_days=row.quiet_days,
                                    last_private=row.private,
                                    last_other=max((t for t in (row.other, row.last_purchase_at) if t is not None),
                                                   default=None))
            if next_due != row.next_due_on or row.private != row.last_private_at:
                changes.append({"c": row.customer_id, "a": row.account_id, "due": next_due, "private": row.private})
        if changes:
            session.connection().execute(
                update(due_table).where(due.customer_id == bindparam("c"), due.account_id == bindparam("a"))
                .values(next_due_on=bindparam("due"), last_private_at=bindparam("private")), changes)
            moved += len(changes)
    return moved


def next_due_day(*, today: date, every_days: int, quiet_days: int, last_private: datetime | None,
                 last_other: datetime | None) -> date:
    """Every N days after the last private touch (today if there never was one), never inside the quiet
    period after a purchase or a touch of another kind."""
    private_day = _local_day(last_private)
    due = private_day + timedelta(days=every_days) if private_day is not None else today
    other_day = _local_day(last_other)
    if other_day is not None and quiet_days > 0:
        due = max(due, other_day + timedelta(days=quiet_days))
    return due


def touches_written(session: Session, customer_ids: list[int]) -> None:
    """Touch listener: these customers' timelines changed — move their due days, close chat tasks done otherwise."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    today = local_today()
    # A flood's batch costs one indexed read when none of its customers is on a cadence or has an open task.
    on_cadence = list(session.scalars(select(CadenceDue.customer_id)
                                      .where(among(session, CadenceDue.customer_id, ids)).distinct()))
    if on_cadence:
        refresh_due(session, customer_ids=on_cadence, today=today)
    _close_touched_tasks(session, ids)


def _close_touched_tasks(session: Session, ids: list[int]) -> None:
    task = Task.__table__.c
    open_tasks = session.execute(
        select(task.id, task.customer_id, task.account_id, task.created_at)
        .where(among(session, task.customer_id, ids),
               task.status.in_([TaskStatus.open.value, TaskStatus.snoozed.value]),
               task.kind.in_(CHAT_TASK_KINDS))).all()
    if not open_tasks:
        return
    latest: dict[tuple[int, int | None], datetime] = {
        (int(c), a): at for c, a, at in session.execute(
            select(Touch.customer_id, Touch.account_id, func.max(Touch.occurred_at))
            .where(Touch.kind.in_(PRIVATE_KINDS),
                   among(session, Touch.customer_id, sorted({t.customer_id for t in open_tasks})))
            .group_by(Touch.customer_id, Touch.account_id))}
    closing = []
    for row in open_tasks:
        candidates = [at for key in ((row.customer_id, row.account_id), (row.customer_id, None))
                      if (at := latest.get(key)) is not None]
        if candidates and max(candidates) >= row.created_at:
            closing.append(row.id)
    if closing:
        session.execute(update(Task).where(Task.id.in_(closing))
                        .values(status=TaskStatus.closed.value, finished_at=utcnow()))


def register() -> None:
    """Listen to every touch write of the customers domain (idempotent)."""
    customers_service.on_touches_written(touches_written)


register()


# ---------------------------------------------------------------- the daily job


@dataclass
class Candidate:
    kind: TaskKind
    customer_id: int
    account_id: int
    overdue_days: int = 0
    detail: str = ""
    ref_id: int | None = None
    score: int = 0


@dataclass
class GenerateResult:
    day: date
    created: int = 0
    due_customers: int = 0
    candidates: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def _level_ranks(session: Session) -> dict[str, int]:
    rules = customers_service.get_rules(session)
    return {lv.label: rank for rank, lv in enumerate(sorted(rules.levels, key=lambda lv: lv.min_total), start=1)}


def _score(kind: TaskKind, *, level_rank: int, overdue: int, spent: Decimal | None) -> int:
    """Priority: the kind, the customer's level, days overdue (capped), the value they bought (log scale)."""
    value = int(10 * math.log10(1 + float(spent))) if spent else 0
    return KIND_WEIGHT[kind] + 40 * level_rank + min(overdue, 60) * 2 + value


def _cadence_candidates(session: Session, day: date, ranks: dict[str, int]) -> list[Candidate]:
    quiet_since = datetime.combine(day, datetime.min.time(), tzinfo=local_zone())
    rows = session.execute(
        select(CadenceDue.customer_id, CadenceDue.account_id, CadenceDue.next_due_on, Customer.level,
               CustomerPurchaseFacts.total_spent, CustomerPurchaseFacts.last_purchase_at, CadencePolicy.quiet_days)
        .join(CadencePolicy, CadencePolicy.id == CadenceDue.policy_id)
        .join(Customer, Customer.id == CadenceDue.customer_id)
        .outerjoin(CustomerPurchaseFacts, CustomerPurchaseFacts.customer_id == CadenceDue.customer_id)
        .where(CadenceDue.next_due_on <= day, CadencePolicy.active.is_(True), Customer.merged_into_id.is_(None)))
    found = []
    for c, a, due_on, level, spent, bought_at, quiet in rows:
        if bought_at is not None and quiet and bought_at >= quiet_since - timedelta(days=quiet):
            continue  # inside the quiet period after a purchase (orders' facts)
        overdue = (day - due_on).days
        found.append(Candidate(TaskKind.cadence, c, a, overdue_days=overdue,
                               score=_score(TaskKind.cadence, level_rank=ranks.get(level, 0), overdue=overdue,
                                            spent=spent)))
    return found


def _other_candidates(session: Session, day: date, now: datetime, ranks: dict[str, int]) -> list[Candidate]:
    found: list[Candidate] = []
    customer_facts: dict[int, tuple[str, Decimal | None]] = {}  # level, spent

    def add(kind: TaskKind, rows: Iterable[Any], detail_of: Any = None, ref_of: Any = None,
            overdue_of: Any = None) -> None:
        for row in rows:
            found.append(Candidate(kind, int(row.customer_id), int(row.account_id),
                                   overdue_days=overdue_of(row) if overdue_of else 0,
                                   detail=(detail_of(row) if detail_of else "")[:255],
                                   ref_id=ref_of(row) if ref_of else None))

    add(TaskKind.follow_up, session.execute(
        select(FollowUp.id, FollowUp.customer_id, FollowUp.account_id, FollowUp.note, FollowUp.due_on)
        .where(FollowUp.due_on <= day, FollowUp.done.is_(False))),
        detail_of=lambda r: r.note, ref_of=lambda r: r.id, overdue_of=lambda r: (day - r.due_on).days)
    month_day = day.strftime("%m-%d")
    add(TaskKind.birthday, session.execute(
        select(CustomFieldValue.customer_id, Friendship.account_id, CustomField.label)
        .join(CustomField, CustomField.id == CustomFieldValue.field_id)
        .join(Friendship, Friendship.customer_id == CustomFieldValue.customer_id)
        .where(CustomField.key.in_(DATE_FIELD_KEYS), Friendship.status == FriendshipStatus.active.value,
               func.substr(CustomFieldValue.value, func.length(CustomFieldValue.value) - 4) == month_day)),
        detail_of=lambda r: r.label)
    add(TaskKind.new_friend, session.execute(
        select(Friendship.customer_id, Friendship.account_id)
        .where(Friendship.status == FriendshipStatus.active.value, Friendship.remark_name == "",
               Friendship.added_at >= now - timedelta(days=NEW_FRIEND_DAYS))))
    add(TaskKind.deleted, session.execute(
        select(Friendship.customer_id, Friendship.account_id)
        .where(Friendship.status == FriendshipStatus.deleted.value,
               Friendship.removed_at >= now - timedelta(days=DELETED_LOOKBACK_DAYS))))
    add(TaskKind.unanswered, session.execute(
        select(Conversation.id, Conversation.customer_id, Conversation.account_id, Conversation.unanswered)
        .where(Conversation.status == ConversationStatus.open.value, Conversation.unanswered > 0,
               Conversation.customer_id.is_not(None), Conversation.group_key == "")),
        ref_of=lambda r: r.id, detail_of=lambda r: str(r.unanswered))
    ids = sorted({c.customer_id for c in found})
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        for cid, level, spent in session.execute(
                select(Customer.id, Customer.level, CustomerPurchaseFacts.total_spent)
                .outerjoin(CustomerPurchaseFacts, CustomerPurchaseFacts.customer_id == Customer.id)
                .where(Customer.id.in_(chunk))):
            customer_facts[cid] = (level, spent)
    for c in found:
        level, bought = customer_facts.get(c.customer_id, ("", None))
        c.score = _score(c.kind, level_rank=ranks.get(level, 0), overdue=c.overdue_days, spent=bought)
    return found


def generate_tasks(session: Session, *, day: date | None = None, now: datetime | None = None) -> GenerateResult:
    """Today's tasks for every operator: the candidates of each kind, prioritised, capped per operator.

    Idempotent: the day's existing tasks count against the cap and the unique key refuses a second
    copy, so a second run the same day creates nothing.
    """
    now = now or utcnow()
    day = day or now.astimezone(local_zone()).date()
    cap = get_settings_row(session).cap_per_operator
    ranks = _level_ranks(session)
    cadence = _cadence_candidates(session, day, ranks)
    candidates = cadence + _other_candidates(session, day, now, ranks)
    result = GenerateResult(day=day, due_customers=len(cadence), candidates=len(candidates))
    owners = {aid: owner for aid, owner in session.execute(select(Account.id, Account.owner_user_id))}
    existing_keys = {(c, a, k) for c, a, k in session.execute(
        select(Task.customer_id, Task.account_id, Task.kind).where(Task.day == day))}
    used: dict[tuple[str, int], int] = defaultdict(int)
    # The cap is for the kinds made here, counted row by row (two tasks of one kind for one customer both
    # take room): other domains' tasks (SOP steps, moments, group rules, events) never crowd out an
    # unanswered customer.
    for a, n in session.execute(select(Task.account_id, func.count())
                                .where(Task.day == day, Task.kind.in_(sorted(GENERATED_KINDS)))
                                .group_by(Task.account_id)):
        used[_operator_key(owners.get(a), a)] += n
    by_operator: dict[tuple[str, int], list[Candidate]] = defaultdict(list)
    for cand in candidates:
        if (cand.customer_id, cand.account_id, cand.kind.value) not in existing_keys:
            by_operator[_operator_key(owners.get(cand.account_id), cand.account_id)].append(cand)
    rows = []
    seen: set[tuple[int, int, str]] = set()
    for key, group in by_operator.items():
        room = cap - used[key]
        if room <= 0:
            continue
        group.sort(key=lambda cand: (-cand.score, -cand.overdue_days, cand.customer_id))
        for cand in group:
            unique = (cand.customer_id, cand.account_id, cand.kind.value)
            if unique in seen:
                continue
            seen.add(unique)
            rows.append({"kind": cand.kind.value, "customer_id": cand.customer_id, "account_id": cand.account_id,
                         "operator_id": owners.get(cand.account_id), "day": day, "priority": cand.score,
                         "overdue_days": cand.overdue_days, "status": TaskStatus.open.value, "detail": cand.detail,
                         "ref_id": cand.ref_id, "snoozed_until": None, "skip_reason": "", "touch_id": None,
                         "finished_by_id": None, "finished_at": None, "created_at": now})
            room -= 1
            if room <= 0:
                break
    table = cast(Table, Task.__table__)
    for start in range(0, len(rows), BATCH):
        session.connection().execute(dialect_insert(session, table).on_conflict_do_nothing(
            index_elements=list(TASK_KEY)), rows[start:start + BATCH])
    result.created = len(rows)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[str(row["kind"])] += 1
    result.by_kind = dict(counts)
    return result


def _operator_key(owner_id: int | None, account_id: int) -> tuple[str, int]:
    return ("user", owner_id) if owner_id is not None else ("account", account_id)


# ---------------------------------------------------------------- the list and its actions


def _scope(query: Any, viewer: Viewer) -> Any:
    if viewer.sees_all_accounts:
        return query
    return query.where(Task.account_id.in_(sorted(viewer.account_ids)))


def today_query(viewer: Viewer, *, day: date, account_id: int | None = None) -> Any:
    # An unanswered-conversation task leaves the list as soon as somebody answered (in the inbox or
    # elsewhere): the conversation, not the task, says whether the customer still waits.
    still_waiting = (select(Conversation.id)
                     .where(Conversation.id == Task.ref_id, Conversation.status == ConversationStatus.open.value,
                            Conversation.unanswered > 0).exists())
    query = select(Task).where(or_(and_(Task.status == TaskStatus.open.value, Task.day == day),
                                   and_(Task.status == TaskStatus.snoozed.value, Task.snoozed_until <= day)),
                               or_(Task.kind != TaskKind.unanswered.value, still_waiting))
    if account_id is not None:
        query = query.where(Task.account_id == account_id)
    elif viewer.sees_all_accounts and viewer.user_id is not None:
        query = query.where(Task.operator_id == viewer.user_id)  # an admin's own list; ?account= for another's
    return _scope(query, viewer)


def list_today(session: Session, *, viewer: Viewer, account_id: int | None = None, day: date | None = None,
               limit: int = 50, after: tuple[int, int] | None = None) -> list[Task]:
    """The viewer's open tasks of the day, most important first; another account's: 404."""
    day = day or local_today()
    if account_id is not None and (not viewer.can_see_account(account_id) or session.get(Account, account_id) is None):
        raise NotFound("Account not found")
    query = today_query(viewer, day=day, account_id=account_id)
    if after is not None:
        priority, last_id = after
        query = query.where(or_(Task.priority < priority, and_(Task.priority == priority, Task.id > last_id)))
    return list(session.scalars(query.order_by(Task.priority.desc(), Task.id).limit(limit)))


GROUP_TASK_PRIORITY = 350  # a group owner's moderation task: before routine check-ins, after a waiting chat


def create_task(session: Session, *, kind: TaskKind, customer_id: int, account_id: int, detail: str,
                ref_id: int | None = None, priority: int = GROUP_TASK_PRIORITY, now: datetime | None = None) -> Task:
    """One task today for the account's operator, made by another domain (groups.moderation); the day's
    task of the same customer, account and kind (and ``ref_key``) is reused (the unique key), so a second
    call adds nothing."""
    now = now or utcnow()
    day = now.astimezone(local_zone()).date()
    owner = session.scalar(select(Account.owner_user_id).where(Account.id == account_id))
    table = cast(Table, Task.__table__)
    session.execute(dialect_insert(session, table).on_conflict_do_nothing(
        index_elements=list(TASK_KEY)), [{
            "kind": kind.value, "customer_id": customer_id, "account_id": account_id, "operator_id": owner,
            "day": day, "priority": priority, "overdue_days": 0, "status": TaskStatus.open.value,
            "detail": detail[:255], "ref_id": ref_id, "ref_key": ref_key_of(kind.value, ref_id),
            "snoozed_until": None, "skip_reason": "", "touch_id": None, "finished_by_id": None, "finished_at": None,
            "created_at": now}])
    task = session.scalar(select(Task).where(Task.customer_id == customer_id, Task.account_id == account_id,
                                             Task.kind == kind.value, Task.day == day,
                                             Task.ref_key == ref_key_of(kind.value, ref_id)))
    assert task is not None
    return task


def get_task(session: Session, *, task_id: int, viewer: Viewer) -> Task:
    task = session.get(Task, task_id)
    if task is None or not viewer.can_see_account(task.account_id):
        raise TaskNotFound("Task not found")
    return task


def _finishable(task: Task) -> None:
    if task.status not in (TaskStatus.open.value, TaskStatus.snoozed.value):
        raise Invalid("This task is already finished", field="status")


def complete_task(session: Session, *, task_id: int, data: TaskDoneIn, viewer: Viewer) -> Task:
    """Done: the touch is recorded on the customer's timeline with the operator, the task answers it."""
    task = get_task(session, task_id=task_id, viewer=viewer)
    _finishable(task)
    kind = TaskKind(task.kind)
    if kind is TaskKind.account_qr:  # answered by the upload itself (accounts.qr_renewal.close_tasks)
        raise Invalid("Upload the new QR code on the account's QR page; the task then closes by itself",
                      field="status")
    if kind is TaskKind.moment or task.customer_id is None:  # posted by hand: the moments post says so
        from siyu.moments import service as moments_service

        moments_service.task_done(session, task=task, viewer=viewer)
        return task
    touch_kind = TouchKind.note if kind in (TaskKind.new_friend, TaskKind.deleted) else TouchKind.chat
    if kind in (TaskKind.group_removal, TaskKind.group_warn, TaskKind.group_flag):
        touch_kind = TouchKind.note  # done in the group, not a private chat with the customer
    content = data.note.strip() or _("{task} (from today's tasks)", task=_(TASK_KIND_LABELS[kind]))
    touch = customers_service.add_touch(session, customer_id=task.customer_id, viewer=viewer,
                                        data=TouchIn(kind=touch_kind, content=content, account_id=task.account_id))
    task.status = TaskStatus.done.value
    task.touch_id = touch.id
    task.finished_by_id = viewer.user_id
    task.finished_at = utcnow()
    if kind is TaskKind.follow_up and task.ref_id is not None:
        session.execute(update(FollowUp).where(FollowUp.id == task.ref_id).values(done=True, touch_id=touch.id))
    if data.follow_up_days:
        schedule_follow_up(session, customer_id=task.customer_id, account_id=task.account_id,
                           days=data.follow_up_days, note=data.follow_up_note, touch_id=touch.id, viewer=viewer)
    session.flush()
    return task


def schedule_follow_up(session: Session, *, customer_id: int, account_id: int, days: int, note: str,
                       viewer: Viewer, touch_id: int | None = None, today: date | None = None) -> FollowUp:
    """"N 天后回访": a follow-up task appears on that day's list."""
    if not viewer.can_see_account(account_id):
        raise NotFound("Account not found")
    customers_service.get_customer(session, customer_id=customer_id, viewer=viewer)
    follow = FollowUp(customer_id=customer_id, account_id=account_id,
                      due_on=(today or local_today()) + timedelta(days=days), note=note.strip()[:255],
                      touch_id=touch_id, created_by_id=viewer.user_id)
    session.add(follow)
    session.flush()
    return follow


def snooze_task(session: Session, *, task_id: int, days: int, viewer: Viewer, today: date | None = None) -> Task:
    task = get_task(session, task_id=task_id, viewer=viewer)
    _finishable(task)
    task.status = TaskStatus.snoozed.value
    task.snoozed_until = (today or local_today()) + timedelta(days=days)
    session.flush()
    return task


def skip_task(session: Session, *, task_id: int, reason: str, viewer: Viewer) -> Task:
    task = get_task(session, task_id=task_id, viewer=viewer)
    _finishable(task)
    if not reason.strip():
        raise Invalid("Say why the task is skipped", field="reason")
    task.status = TaskStatus.skipped.value
    task.skip_reason = reason.strip()[:255]
    task.finished_by_id = viewer.user_id
    task.finished_at = utcnow()
    session.flush()
    return task


@dataclass
class Completion:
    operator_id: int | None
    total: int
    done: int
    skipped: int
    closed: int

    @property
    def rate(self) -> float:
        return round(self.done / self.total, 3) if self.total else 0.0


def completion_rates(session: Session, *, since: date, until: date, viewer: Viewer) -> list[Completion]:
    """Per operator: tasks of these days and how many were done, skipped, closed by another touch."""
    query = _scope(select(Task.operator_id, Task.status, func.count()).where(Task.day >= since, Task.day <= until)
                   .group_by(Task.operator_id, Task.status), viewer)
    counts: dict[int | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for operator_id, status, n in session.execute(query):
        counts[operator_id][status] += int(n)
    return [Completion(operator_id=op, total=sum(c.values()), done=c[TaskStatus.done.value],
                       skipped=c[TaskStatus.skipped.value], closed=c[TaskStatus.closed.value])
            for op, c in sorted(counts.items(), key=lambda item: item[0] or 0)]


def task_customers(session: Session, tasks: Sequence[Task]) -> dict[int, tuple[str, str]]:
    """Name and remark name of the tasks' customers (on the task's account) for display."""
    if not tasks:
        return {}
    pairs = sorted({(t.customer_id, t.account_id) for t in tasks if t.customer_id is not None})
    names = {cid: name for cid, name in session.execute(
        select(Customer.id, Customer.name).where(Customer.id.in_(sorted({c for c, _a in pairs}))))}
    # By customer id (its index), the account picked here: a row-value IN is a scan on SQLite.
    remarks = {(c, a): r for c, a, r in session.execute(
        select(Friendship.customer_id, Friendship.account_id, Friendship.remark_name)
        .where(Friendship.customer_id.in_(sorted({c for c, _a in pairs}))))}
    return {t.id: (names.get(t.customer_id, ""), remarks.get((t.customer_id, t.account_id), ""))
            for t in tasks if t.customer_id is not None}


def task_title(task: Task, customer_name: str) -> str:
    label = _(TASK_KIND_LABELS[TaskKind(task.kind)])
    if task.kind in (TaskKind.moment.value, TaskKind.account_qr.value) and task.detail:  # no customer: its text
        return f"{label} · {task.detail}"
    return f"{label} · {customer_name}" if customer_name else label


# ---------------------------------------------------------------- tasks other domains create (客户SOP steps)


def add_tasks(session: Session, rows: Sequence[dict[str, Any]], *, kind: TaskKind, day: date,
              now: datetime | None = None) -> dict[tuple[int, int], int]:
    """Open tasks of ``kind`` for (customer, account) pairs on ``day``: the operator is the account's owner.

    ``rows``: ``customer_id``, ``account_id``, ``detail`` (the script), ``ref_id`` (the caller's record).
    Set-based and idempotent like the daily job: the unique key (customer, account, kind, day, ref_key) keeps
    one task per pair and day — per pair, day and ``ref_id`` for the kinds kept apart (``APART_KINDS``) — and a
    second call answers the task already there. Returns pair → task id (of the row's own ``ref_id`` if apart).
    """
    if not rows:
        return {}
    now = now or utcnow()
    account_ids = sorted({int(r["account_id"]) for r in rows})
    owners = {aid: owner for aid, owner in session.execute(
        select(Account.id, Account.owner_user_id).where(Account.id.in_(account_ids)))}
    values = [{"kind": kind.value, "customer_id": int(r["customer_id"]), "account_id": int(r["account_id"]),
               "operator_id": owners.get(int(r["account_id"])), "day": day, "priority": KIND_WEIGHT[kind],
               "overdue_days": 0, "status": TaskStatus.open.value, "detail": str(r.get("detail", ""))[:255],
               "ref_id": r.get("ref_id"), "ref_key": ref_key_of(kind.value, r.get("ref_id")), "snoozed_until": None,
               "skip_reason": "", "touch_id": None, "finished_by_id": None, "finished_at": None, "created_at": now}
              for r in rows]
    table = cast(Table, Task.__table__)
    for start in range(0, len(values), BATCH):
        session.connection().execute(dialect_insert(session, table).on_conflict_do_nothing(
            index_elements=list(TASK_KEY)), values[start:start + BATCH])
    customers = sorted({int(r["customer_id"]) for r in rows})
    keys = {(v["customer_id"], v["account_id"]): v["ref_key"] for v in values}
    found: dict[tuple[int, int], int] = {}
    for start in range(0, len(customers), BATCH):
        for task_id, c, a, ref_key in session.execute(
                select(Task.id, Task.customer_id, Task.account_id, Task.ref_key)
                .where(Task.customer_id.in_(customers[start:start + BATCH]), Task.kind == kind.value,
                       Task.day == day, Task.ref_key.in_(sorted(set(keys.values()))))):
            # c always set here (the query asks for these customers); a moment task has none
            if c is not None and keys.get((int(c), int(a))) == ref_key:
                found[(int(c), int(a))] = int(task_id)
    return found
