"""The metrics catalogue and its time series (``GET /api/v1/metrics/{name}``), for BI tools and charts.

Two kinds of metric: a *stock* is a level read at the end of each bucket (customers on each rung of
the ladder, from the stage transitions); a *flow* is a count or sum of what happened inside the
bucket (touches, adds, revenue …). Flows are grouped by local day in the database — the day index
``floor((t - local midnight of from) / 1 day)``, so a touch at 23:59 and one at 00:01 fall on their own
local days — and the days are summed into weeks (Monday first) or months here.

Scope is the ladder's (``service.Scope``): a scope the viewer may not see is NotFound, never zeros.
A period in which the metric is zero throughout answers no points at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlalchemy.orm import Session

from siyu.analytics import service
from siyu.analytics.models import MemberBehaviour
from siyu.analytics.service import Scope, day_start, days_between
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.viewer import Viewer
from siyu.customers.models import MANUAL_KINDS, Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.maintenance.models import Task, TaskStatus
from siyu.orders.models import Order
from siyu.team.models import UserAccount

INTERVALS = ("day", "week", "month")
MAX_POINTS = 400
MAX_SPAN_DAYS = 3 * 366


class MetricNotFound(NotFound):
    """No metric of that name in the catalogue."""


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    kind: str  # "stock" or "flow"
    unit: str = "count"
    scopes: tuple[str, ...] = ("company", "account", "operator", "segment")


CATALOGUE: dict[str, Metric] = {m.name: m for m in (
    Metric("ladder_traffic", N_("Customers on 流量"), "stock"),
    Metric("ladder_user", N_("Customers on 用户"), "stock"),
    Metric("ladder_customer", N_("Customers on 客户"), "stock"),
    Metric("ladder_fan", N_("Customers on 粉丝"), "stock"),
    Metric("customers_added", N_("Customers added"), "flow"),
    Metric("touches", N_("Touches"), "flow"),
    Metric("private_chats", N_("Private chats"), "flow"),
    Metric("adds", N_("Adds"), "flow"),
    Metric("deletions", N_("Deletions"), "flow"),
    Metric("net_adds", N_("Net adds"), "flow"),
    Metric("revenue", N_("Revenue"), "flow", unit="yuan"),
    Metric("tasks_due", N_("Tasks due"), "flow", scopes=("company", "account", "operator")),
    Metric("tasks_done", N_("Tasks done"), "flow", scopes=("company", "account", "operator")),
    Metric("wecom_chat_cnt", N_("WeCom chats"), "flow", scopes=("company", "account", "operator")),
    Metric("wecom_message_cnt", N_("WeCom messages sent"), "flow", scopes=("company", "account", "operator")),
    Metric("wecom_new_contact_cnt", N_("WeCom new contacts"), "flow", scopes=("company", "account", "operator")),
    Metric("wecom_negative_feedback_cnt", N_("WeCom deleted/blocked by customers"), "flow",
           scopes=("company", "account", "operator")),
)}


@dataclass
class Point:
    at: date
    value: float | int


@dataclass
class Series:
    metric: str
    scope: str
    interval: str
    points: list[Point]


def catalogue() -> list[dict[str, Any]]:
    return [{"name": m.name, "label": _(m.label), "kind": m.kind, "unit": m.unit, "scopes": list(m.scopes),
             "intervals": list(INTERVALS)} for m in CATALOGUE.values()]


def buckets(since: date, until: date, interval: str) -> list[tuple[date, date]]:
    """[start, end] local days of each bucket, clipped to [since, until]."""
    out: list[tuple[date, date]] = []
    cursor = since
    while cursor <= until:
        if interval == "day":
            last = cursor
        elif interval == "week":
            last = cursor + timedelta(days=6 - cursor.weekday())
        else:
            following = date(cursor.year + (cursor.month == 12), cursor.month % 12 + 1, 1)
            last = following - timedelta(days=1)
        last = min(last, until)
        out.append((cursor, last))
        cursor = last + timedelta(days=1)
    return out


def series(session: Session, *, viewer: Viewer, name: str, scope: Scope, since: date, until: date,
           interval: str = "day") -> Series:
    metric = CATALOGUE.get(name)
    if metric is None:
        raise MetricNotFound("Metric {name} not found", name=name[:40])
    if interval not in INTERVALS:
        raise Invalid("Interval must be day, week or month", field="interval")
    if until < since:
        raise Invalid("The period ends before it starts", field="to")
    if (until - since).days > MAX_SPAN_DAYS:
        raise Invalid("A period is at most three years", field="from")
    if scope.kind not in metric.scopes:
        raise Invalid("Metric {name} has no {scope} scope", field="scope", name=name, scope=scope.kind)
    spans = buckets(since, until, interval)
    if len(spans) > MAX_POINTS:
        raise Invalid("At most {n} points: choose a longer interval or a shorter period", field="interval",
                      n=MAX_POINTS)
    clauses, drivers = service.customer_filter(session, scope=scope, viewer=viewer)  # NotFound: not theirs
    if metric.kind == "stock":
        stage = name.removeprefix("ladder_")
        company = service.whole_company(scope, viewer)
        points = [Point(at=first, value=service.funnel_for(session, clauses=clauses, day=last, company=company,
                                                           drivers=drivers).current[stage])
                  for first, last in spans]
    else:
        daily = _daily(session, name=name, scope=scope, viewer=viewer, clauses=clauses, since=since, until=until)
        points = []
        for first, last in spans:
            total = sum(daily.get((first - since).days + n, 0) for n in range((last - first).days + 1))
            points.append(Point(at=first, value=round(total, 2) if isinstance(total, float) else total))
    if not any(p.value for p in points):
        points = []  # a period with no data: an empty series (an empty state, not a flat line of zeros)
    return Series(metric=name, scope=scope.key, interval=interval, points=points)


def _day_index(session: Session, column: Any, since: date) -> ColumnElement[Any]:
    dialect = session.get_bind().dialect.name
    span = days_between(column, day_start(since), dialect)
    return func.floor(span) if dialect == "postgresql" else cast(span, Integer)


def _daily(session: Session, *, name: str, scope: Scope, viewer: Viewer, clauses: list[ColumnElement[bool]],
           since: date, until: date) -> dict[int, Any]:
    start, end = day_start(since), day_start(until + timedelta(days=1))
    in_scope = select(Customer.id).where(*clauses)

    def grouped(query_for: Callable[[ColumnElement[Any]], Any], column: Any) -> dict[int, Any]:
        day = _day_index(session, column, since)
        return {int(d): v for d, v in session.execute(query_for(day).group_by(day))}

    if name in ("touches", "private_chats"):
        kinds = [TouchKind.chat.value] if name == "private_chats" else [k.value for k in MANUAL_KINDS]
        # Customers the viewer may see (merged ones left out); on the account, or by the operator.
        where: list[Any] = [Touch.occurred_at >= start, Touch.occurred_at < end, Touch.kind.in_(kinds),
                            Touch.customer_id.in_(in_scope)]
        if scope.kind == "account":
            where.append(Touch.account_id == scope.id)
        elif scope.kind == "operator":
            where.append(Touch.user_id == scope.id)
        return grouped(lambda day: select(day, func.count()).where(*where), Touch.occurred_at)
    if name == "customers_added":
        return grouped(lambda day: select(day, func.count()).select_from(Customer).where(
            Customer.created_at >= start, Customer.created_at < end, *clauses), Customer.created_at)
    if name in ("adds", "deletions", "net_adds"):
        where_f: list[Any] = [Friendship.customer_id.in_(in_scope)]
        if scope.kind == "account":
            where_f.append(Friendship.account_id == scope.id)
        elif not viewer.sees_all_accounts:
            where_f.append(Friendship.account_id.in_(sorted(viewer.account_ids)))
        added = grouped(lambda day: select(day, func.count()).where(
            Friendship.added_at >= start, Friendship.added_at < end, *where_f), Friendship.added_at)
        deleted = grouped(lambda day: select(day, func.count()).where(
            Friendship.status == FriendshipStatus.deleted.value, Friendship.removed_at >= start,
            Friendship.removed_at < end, *where_f), Friendship.removed_at)
        if name == "adds":
            return added
        if name == "deletions":
            return deleted
        return {d: added.get(d, 0) - deleted.get(d, 0) for d in set(added) | set(deleted)}
    if name == "revenue":
        found = grouped(lambda day: select(day, func.sum(Order.amount - Order.refunded_amount)).where(
            Order.paid_at >= start, Order.paid_at < end, Order.customer_id.in_(in_scope)), Order.paid_at)
        return {d: float(v or 0) for d, v in found.items()}
    # By local calendar day: tasks and WeCom's figures are stored per day already.
    if name in ("tasks_due", "tasks_done"):
        where_t: list[Any] = [Task.day >= since, Task.day <= until]
        if name == "tasks_done":
            where_t.append(Task.status == TaskStatus.done.value)
        if scope.kind == "account":
            where_t.append(Task.account_id == scope.id)
        elif scope.kind == "operator":
            where_t.append(Task.operator_id == scope.id)
        if not viewer.sees_all_accounts:
            where_t.append(Task.account_id.in_(sorted(viewer.account_ids)))
        rows = session.execute(select(Task.day, func.count()).where(*where_t).group_by(Task.day))
        return {(day - since).days: int(n) for day, n in rows}
    column = getattr(MemberBehaviour, name.removeprefix("wecom_"))
    where_b: list[Any] = [MemberBehaviour.day >= since, MemberBehaviour.day <= until]
    if scope.kind == "account":
        where_b.append(MemberBehaviour.account_id == scope.id)
    elif scope.kind == "operator":
        where_b.append(MemberBehaviour.account_id.in_(
            select(UserAccount.account_id).where(UserAccount.user_id == scope.id)))
    if not viewer.sees_all_accounts:
        where_b.append(MemberBehaviour.account_id.in_(sorted(viewer.account_ids)))
    rows = session.execute(select(MemberBehaviour.day, func.sum(column)).where(*where_b)
                           .group_by(MemberBehaviour.day))
    return {(day - since).days: int(n or 0) for day, n in rows}
