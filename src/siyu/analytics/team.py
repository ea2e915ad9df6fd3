"""Team performance: each operator and each account side by side over a period, with the team average.

Per operator the customers are the ones they own (``Customer.owner_id``) and the acts the ones they
did (``Touch.user_id``, ``Task.operator_id``, ``Conversation.assignee_id``); per account the customers
are its friends and the acts the ones done on it. Response and resolution times come from the inbox's
own report (``inbox.reports.build``) and task completion from the maintenance service
(``completion_rates``) — one implementation each. WeCom's figures (``MemberBehaviour``) are the
platform's own per-member statistics, shown beside Siyu's.

Operators see their own row and their accounts' rows; the team average is over the rows shown.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.analytics.models import BehaviourState, MemberBehaviour
from siyu.analytics.service import _check_period, day_start
from siyu.core.i18n import N_, _
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import Viewer
from siyu.customers.models import MANUAL_KINDS, Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.inbox import reports as inbox_reports
from siyu.maintenance import service as maintenance_service
from siyu.maintenance.models import Task, TaskStatus
from siyu.orders.models import Order
from siyu.team.models import Role, User

# The columns, in order: key → label. Touch kinds come first, one column each.
TOUCH_COLUMNS = tuple(f"touch_{kind.value}" for kind in MANUAL_KINDS)
COLUMNS: dict[str, str] = {
    "touches": N_("Touches"),
    "private_chats": N_("Private chats"),
    "tasks_due": N_("Tasks due"),
    "tasks_done": N_("Tasks done"),
    "first_response_minutes": N_("First response (min)"),
    "resolution_minutes": N_("Resolution (min)"),
    "adds": N_("Adds"),
    "deletions": N_("Deletions"),
    "net_adds": N_("Net adds"),
    "revenue": N_("Revenue"),
    "completeness": N_("Profile completeness %"),
    "wecom_chat_cnt": N_("WeCom chats"),
    "wecom_message_cnt": N_("WeCom messages sent"),
    "wecom_reply_percentage": N_("WeCom reply rate %"),
    "wecom_avg_reply_time": N_("WeCom avg reply (min)"),
    "wecom_negative_feedback_cnt": N_("WeCom deleted/blocked by customers"),
    "wecom_new_apply_cnt": N_("WeCom friend requests sent"),
    "wecom_new_contact_cnt": N_("WeCom new contacts"),
}
# Averages over days or customers, not sums: the team average of a rate is the mean of the rows.
MEAN_COLUMNS = frozenset({"first_response_minutes", "resolution_minutes", "completeness", "wecom_reply_percentage",
                          "wecom_avg_reply_time"})


@dataclass
class PerformanceRow:
    kind: str  # "operator" or "account"
    key: int
    label: str
    figures: dict[str, float | int | None] = field(default_factory=dict)


@dataclass
class Performance:
    since: date
    until: date
    operators: list[PerformanceRow]
    accounts: list[PerformanceRow]
    touch_kinds: list[str]

    def average(self, rows: list[PerformanceRow]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key in [*TOUCH_COLUMNS, *COLUMNS]:
            values = [float(v) for r in rows if (v := r.figures.get(key)) is not None]
            out[key] = round(sum(values) / len(values), 1) if values else None
        return out

    @property
    def empty(self) -> bool:
        rows = [*self.operators, *self.accounts]
        return not any(v for r in rows for k, v in r.figures.items() if k != "completeness")


def build(session: Session, *, viewer: Viewer, since: date, until: date) -> Performance:
    _check_period(since, until)
    start, end = day_start(since), day_start(until + timedelta(days=1))
    users = [u for u in session.scalars(select(User).where(User.is_active.is_(True)).order_by(User.id))
             if u.role in (Role.operator.value, Role.service.value) or u.id == viewer.user_id]
    if not viewer.sees_all_accounts:
        users = [u for u in users if u.id == viewer.user_id]
    accounts = [a for a in session.scalars(select(Account).order_by(Account.id)) if viewer.can_see_account(a.id)]
    operators = [PerformanceRow("operator", u.id, u.display_name or u.username) for u in users]
    account_rows = [PerformanceRow("account", a.id, a.display_name) for a in accounts]
    user_ids, account_ids = [u.id for u in users], [a.id for a in accounts]

    _touches(session, operators, Touch.user_id, user_ids, start, end)
    _touches(session, account_rows, Touch.account_id, account_ids, start, end)
    # Tasks: the maintenance service's completion per operator; the same counts per account.
    completion = {c.operator_id: c for c in maintenance_service.completion_rates(
        session, since=since, until=until, viewer=viewer)}
    for row in operators:
        found = completion.get(row.key)
        row.figures["tasks_due"], row.figures["tasks_done"] = (found.total, found.done) if found else (0, 0)
    tasks = _grouped(session, select(Task.account_id, func.count(), func.count().filter(
        Task.status == TaskStatus.done.value)).where(Task.day >= since, Task.day <= until,
                                                     Task.account_id.in_(account_ids)).group_by(Task.account_id))
    for row in account_rows:
        due, done = tasks.get(row.key, (0, 0))
        row.figures["tasks_due"], row.figures["tasks_done"] = int(due), int(done)
    # Response and resolution: the inbox's report.
    report = inbox_reports.build(session, viewer=viewer, since=start, until=end)
    for rows, found_rows in ((operators, report.agents), (account_rows, report.accounts)):
        by_key = {r.key: r for r in found_rows}
        for row in rows:
            inbox_row = by_key.get(row.key)
            row.figures["first_response_minutes"] = inbox_row.first_response_minutes if inbox_row else None
            row.figures["resolution_minutes"] = inbox_row.resolution_minutes if inbox_row else None
    # Friendships added and deleted: on the account; of the customers an operator owns.
    _friendships(session, account_rows, Friendship.account_id, account_ids, start, end, owner=False)
    _friendships(session, operators, Customer.owner_id, user_ids, start, end, owner=True)
    # Revenue (paid minus refunded, orders paid in the period) and completeness of their customers.
    net = func.sum(Order.amount - Order.refunded_amount)
    paid = [Order.paid_at >= start, Order.paid_at < end]  # a refund is taken off by refunded_amount
    owned = _grouped(session, select(Customer.owner_id, net).join(Customer, Customer.id == Order.customer_id)
                     .where(*paid, Customer.owner_id.in_(user_ids)).group_by(Customer.owner_id))
    friends = _grouped(session, select(Friendship.account_id, net)
                       .join(Order, Order.customer_id == Friendship.customer_id)
                       .where(*paid, Friendship.account_id.in_(account_ids),
                              Friendship.status == FriendshipStatus.active.value).group_by(Friendship.account_id))
    completeness_owned = _grouped(session, select(Customer.owner_id, func.avg(Customer.completeness)).where(
        Customer.owner_id.in_(user_ids), Customer.merged_into_id.is_(None)).group_by(Customer.owner_id))
    completeness_friends = _grouped(session, select(Friendship.account_id, func.avg(Customer.completeness))
                                    .join(Customer, Customer.id == Friendship.customer_id)
                                    .where(Friendship.account_id.in_(account_ids),
                                           Friendship.status == FriendshipStatus.active.value,
                                           Customer.merged_into_id.is_(None)).group_by(Friendship.account_id))
    for rows, revenue, completeness in ((operators, owned, completeness_owned),
                                        (account_rows, friends, completeness_friends)):
        for row in rows:
            row.figures["revenue"] = round(float(revenue.get(row.key, (0,))[0] or 0), 2)
            value = completeness.get(row.key, (None,))[0]
            row.figures["completeness"] = round(float(value), 1) if value is not None else None
    _behaviour(session, account_rows, account_ids, since, until)
    kinds = [kind.value for kind in MANUAL_KINDS]
    return Performance(since=since, until=until, operators=operators, accounts=account_rows, touch_kinds=kinds)


def _grouped(session: Session, query: Any) -> dict[Any, tuple[Any, ...]]:
    return {row[0]: tuple(row[1:]) for row in session.execute(query)}


def _touches(session: Session, rows: list[PerformanceRow], column: Any, keys: list[int], start: Any,
             end: Any) -> None:
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for key, kind, n in session.execute(select(column, Touch.kind, func.count()).where(
            column.in_(keys), Touch.occurred_at >= start, Touch.occurred_at < end,
            Touch.kind.in_([k.value for k in MANUAL_KINDS])).group_by(column, Touch.kind)):
        counts[key][kind] = int(n)
    for row in rows:
        mine = counts.get(row.key, {})
        for kind in MANUAL_KINDS:
            row.figures[f"touch_{kind.value}"] = mine.get(kind.value, 0)
        row.figures["touches"] = sum(mine.values())
        row.figures["private_chats"] = mine.get(TouchKind.chat.value, 0)


def _friendships(session: Session, rows: list[PerformanceRow], column: Any, keys: list[int], start: Any, end: Any,
                 *, owner: bool) -> None:
    base = select(column, func.count()).select_from(Friendship)
    if owner:
        base = base.join(Customer, Customer.id == Friendship.customer_id)
    added_where: list[ColumnElement[bool]] = [column.in_(keys), Friendship.added_at >= start, Friendship.added_at < end]
    deleted_where: list[ColumnElement[bool]] = [column.in_(keys), Friendship.status == FriendshipStatus.deleted.value,
                                                Friendship.removed_at >= start, Friendship.removed_at < end]
    added = _grouped(session, base.where(*added_where).group_by(column))
    deleted = _grouped(session, base.where(*deleted_where).group_by(column))
    for row in rows:
        adds, deletions = int(added.get(row.key, (0,))[0]), int(deleted.get(row.key, (0,))[0])
        row.figures.update(adds=adds, deletions=deletions, net_adds=adds - deletions)


def _behaviour(session: Session, rows: list[PerformanceRow], keys: list[int], since: date, until: date) -> None:
    b = MemberBehaviour
    found = _grouped(session, select(
        b.account_id, func.count(), func.sum(b.chat_cnt), func.sum(b.message_cnt), func.avg(b.reply_percentage),
        func.avg(b.avg_reply_time), func.sum(b.negative_feedback_cnt), func.sum(b.new_apply_cnt),
        func.sum(b.new_contact_cnt)).where(b.account_id.in_(keys), b.day >= since, b.day <= until,
                                           b.state == BehaviourState.ok).group_by(b.account_id))
    unknown = {a for (a,) in session.execute(select(b.account_id).where(
        b.account_id.in_(keys), b.day >= since, b.day <= until, b.state == BehaviourState.unknown_member))}
    names = ("wecom_chat_cnt", "wecom_message_cnt", "wecom_reply_percentage", "wecom_avg_reply_time",
             "wecom_negative_feedback_cnt", "wecom_new_apply_cnt", "wecom_new_contact_cnt")
    for row in rows:
        values = found.get(row.key)
        for position, name in enumerate(names):
            value = values[position + 1] if values else None
            row.figures[name] = round(float(value), 1) if value is not None and name in MEAN_COLUMNS else (
                int(value) if value is not None else None)
        row.figures["wecom_unknown_member"] = 1 if row.key in unknown and not values else 0


def column_labels() -> list[tuple[str, str]]:
    kinds = [(f"touch_{kind.value}", _("Touches: {kind}", kind=_(f"touch.{kind.value}"))) for kind in MANUAL_KINDS]
    return [*kinds, *[(key, _(label)) for key, label in COLUMNS.items()]]


def to_csv(performance: Performance) -> str:
    """Operators, then accounts, each with the team average; UTF-8 with BOM for Excel."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    columns = column_labels()
    for title, rows in ((_("Operators"), performance.operators), (_("Accounts"), performance.accounts)):
        writer.writerow([title, *[label for _key, label in columns]])
        for row in rows:
            writer.writerow([neutralise(row.label), *["" if row.figures.get(k) is None else row.figures[k]
                                                      for k, _label in columns]])
        average = performance.average(rows)
        writer.writerow([_("Team average"), *["" if average.get(k) is None else average[k] for k, _label in columns]])
        writer.writerow([])
    return out.getvalue()
