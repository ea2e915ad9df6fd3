"""The goals' metric catalogue: what a SMART goal can measure, day by day, over which scopes.

Each metric gives one value per local day (Asia/Shanghai) of a period — the *daily* series a goal's
progress, chart and forecasts are read from. Where ``analytics.metrics`` already computes a figure
(net adds, revenue, tasks due/done, the ladder) its daily computation is reused, not rewritten.

Modes — how the days make the goal's progress:

* ``sum``: a flow; progress is the total since the goal's start (net adds, revenue).
* ``level``: a stock read at the end of each day; progress is the latest value (fans, group active
  members, profile completeness).
* ``ratio``: numerator and denominator per day; progress is Σ numerator ÷ Σ denominator over the
  period (task completion, 送达率, first-response minutes).
* ``share``: a numerator per day over a fixed base (the scope's customers); progress is Σ ÷ base (互动率).

Percent metrics answer 0–100. Scopes: company, account:<id>, operator:<user id>, segment:<id>,
channel:<id> (customers added through that channel) and group_kind:<kind> (group metrics). A scope the
viewer may not see is NotFound (404), never zeros.

Sources: 送达率 reads the one send-quota ledger (``sends``): a recipient reserved and not released is
a message that went out, so 送达率 = kept ÷ reserved per day — campaigns, SOP steps and group posts all
write there, so the metric needs no campaign table. Profile completeness is stored per customer with no
history: only today's value is known (earlier days are blank, and the forecast is flat).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, func, or_, select
from sqlalchemy.orm import Session

from siyu.analytics import metrics as analytics_metrics
from siyu.analytics import service as analytics_service
from siyu.analytics.service import Scope as AnalyticsScope
from siyu.analytics.service import day_start
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer, Touch, TouchKind

SCOPE_KINDS = ("company", "account", "operator", "segment", "channel", "group_kind")
CUSTOMER_SCOPES = ("company", "account", "operator", "segment", "channel")
MAX_DAYS = 3 * 366
SCOPE_ERROR = N_("Unknown scope {scope}: use company, account:<id>, operator:<id>, segment:<id>, channel:<id> or group_kind:<kind>")  # noqa: E501


class GoalScopeNotFound(NotFound):
    """A scope that does not exist or that this viewer may not see."""


@dataclass(frozen=True)
class GoalMetric:
    name: str
    label: str
    mode: str  # sum | level | ratio | share
    unit: str = "count"  # count | yuan | percent | minutes
    scopes: tuple[str, ...] = CUSTOMER_SCOPES
    lower_is_better: bool = False
    additive: bool = False  # sub-goals per account/operator add up to the parent's target
    # The list behind the number (the console link), formatted with the scope's id.
    link: str = "/customers"


CATALOGUE: dict[str, GoalMetric] = {m.name: m for m in (
    GoalMetric("net_adds", N_("Net adds"), "sum", additive=True, link="/customers?sort=created"),
    GoalMetric("fans", N_("Customers on 粉丝"), "level", additive=True, link="/customers?stage=fan"),
    GoalMetric("repurchase_rate", N_("Repurchase rate"), "level", unit="percent", link="/orders"),
    GoalMetric("revenue", N_("Revenue"), "sum", unit="yuan", additive=True, link="/orders"),
    GoalMetric("group_active_members", N_("Group active members"), "level",
               scopes=("company", "account", "group_kind"), additive=True, link="/groups"),
    GoalMetric("delivery_rate", N_("送达率 (delivery rate)"), "ratio", unit="percent",
               scopes=("company", "segment", "channel"), link="/sops"),
    GoalMetric("interaction_rate", N_("互动率 (interaction rate)"), "share", unit="percent", link="/customers"),
    GoalMetric("task_completion", N_("Task completion"), "ratio", unit="percent",
               scopes=("company", "account", "operator"), link="/today"),
    GoalMetric("first_response_minutes", N_("First-response time (minutes)"), "ratio", unit="minutes",
               scopes=("company", "account", "operator"), lower_is_better=True, link="/inbox/reports"),
    GoalMetric("profile_completeness", N_("Profile completeness"), "level", unit="percent", link="/customers"),
)}


@dataclass(frozen=True)
class GoalScope:
    kind: str = "company"
    id: int | None = None
    text: str = ""  # the group kind

    @property
    def key(self) -> str:
        if self.kind == "company":
            return "company"
        return f"{self.kind}:{self.text}" if self.kind == "group_kind" else f"{self.kind}:{self.id}"


def parse_scope(raw: str | None) -> GoalScope:
    from siyu.groups.models import GroupKind

    text = (raw or "company").strip()
    if text == "company":
        return GoalScope()
    kind, _sep, ident = text.partition(":")
    if kind == "group_kind" and ident in {k.value for k in GroupKind}:
        return GoalScope(kind=kind, text=ident)
    if kind not in SCOPE_KINDS or kind == "group_kind" or not ident.isdigit() or len(ident) > 12:
        raise Invalid(SCOPE_ERROR, field="scope", scope=text[:40])
    return GoalScope(kind=kind, id=int(ident))


def check_scope(session: Session, *, scope: GoalScope, viewer: Viewer) -> None:
    """NotFound when the scope does not exist or the viewer may not see it."""
    if scope.kind in ("account", "operator", "segment"):
        try:
            analytics_service.check_scope(session, scope=AnalyticsScope(scope.kind, scope.id), viewer=viewer)
        except NotFound as exc:
            raise GoalScopeNotFound("Scope {scope} not found", scope=scope.key) from exc
    elif scope.kind == "channel":
        from siyu.channels import service as channels_service

        try:
            channels_service.get_channel(session, channel_id=scope.id or 0, viewer=viewer)
        except NotFound as exc:
            raise GoalScopeNotFound("Scope {scope} not found", scope=scope.key) from exc


def customer_clauses(session: Session, *, scope: GoalScope, viewer: Viewer) -> list[ColumnElement[bool]]:
    """WHERE conditions on ``customer`` for the scope, as the viewer may see it (the ladder's own)."""
    check_scope(session, scope=scope, viewer=viewer)
    if scope.kind == "channel":
        from siyu.channels.models import ChannelAdd

        clauses = analytics_service.customer_clauses(session, scope=AnalyticsScope(), viewer=viewer)
        return [*clauses, Customer.id.in_(select(ChannelAdd.customer_id).where(ChannelAdd.channel_id == scope.id))]
    if scope.kind == "group_kind":
        return analytics_service.customer_clauses(session, scope=AnalyticsScope(), viewer=viewer)
    return analytics_service.customer_clauses(session, scope=AnalyticsScope(scope.kind, scope.id), viewer=viewer)


@dataclass
class Daily:
    """One metric's days: ``values`` (sum/level: the day's figure; ratio/share: the numerator),
    ``denominators`` (ratio) and ``base`` (share). None: nothing known that day."""

    days: list[date]
    values: list[float | None]
    denominators: list[float] | None = None
    base: float | None = None

    @property
    def has_data(self) -> bool:
        if any(v is not None and v != 0 for v in self.values):
            return True
        return bool(self.denominators and any(self.denominators))


def get_metric(name: str) -> GoalMetric:
    metric = CATALOGUE.get(name)
    if metric is None:
        raise analytics_metrics.MetricNotFound("Metric {name} not found", name=name[:40])
    return metric


def daily(session: Session, *, viewer: Viewer, name: str, scope: GoalScope, since: date, until: date) -> Daily:
    """The metric's values for each local day from ``since`` to ``until`` (both included)."""
    metric = get_metric(name)
    if until < since:
        raise Invalid("The period ends before it starts", field="to")
    if (until - since).days > MAX_DAYS:
        raise Invalid("A period is at most three years", field="from")
    if scope.kind not in metric.scopes:
        raise Invalid("Metric {name} has no {scope} scope", field="scope", name=name, scope=scope.kind)
    days = [since + timedelta(days=n) for n in range((until - since).days + 1)]
    return _COMPUTE[name](session, viewer, scope, days)


# ---------------------------------------------------------------- the computations


def _indexed(days: list[date], found: dict[int, Any], *, blank: float | None = 0) -> list[float | None]:
    return [float(found[i]) if i in found and found[i] is not None else blank for i in range(len(days))]


def _reused(name: str) -> Callable[[Session, Viewer, GoalScope, list[date]], dict[int, Any]]:
    """A flow that ``analytics.metrics`` computes per local day: its own function, our clauses."""
    def compute(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> dict[int, Any]:
        clauses = customer_clauses(session, scope=scope, viewer=viewer)
        as_analytics = (AnalyticsScope(scope.kind, scope.id) if scope.kind in ("account", "operator", "segment")
                        else AnalyticsScope())
        return analytics_metrics._daily(session, name=name, scope=as_analytics, viewer=viewer, clauses=clauses,
                                        since=days[0], until=days[-1])
    return compute


def _net_adds(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    return Daily(days=days, values=_indexed(days, _reused("net_adds")(session, viewer, scope, days)))


def _revenue(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    return Daily(days=days, values=_indexed(days, _reused("revenue")(session, viewer, scope, days)))


def _task_completion(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    done = _reused("tasks_done")(session, viewer, scope, days)
    due = _reused("tasks_due")(session, viewer, scope, days)
    return Daily(days=days, values=[100.0 * v if v is not None else None for v in _indexed(days, done)],
                 denominators=[float(v or 0) for v in _indexed(days, due)])


def _fans(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    """Customers on 粉丝 at the end of each day — the funnel's own rule (``analytics.service.funnel_for``:
    a transition valid at the day's end, a customer added before it), read in one pass over the 粉丝 rows
    that overlap the period instead of one funnel per day."""
    from siyu.analytics.models import STAGE_RANKS, StageTransition

    clauses = customer_clauses(session, scope=scope, viewer=viewer)
    ends = [day_start(d + timedelta(days=1)) for d in days]
    t = StageTransition
    change = [0] * (len(days) + 1)
    for at, until, created_at in session.execute(
            select(t.at, t.until, Customer.created_at).join(Customer, Customer.id == t.customer_id).where(
                t.to_rank == STAGE_RANKS["fan"], t.at < ends[-1], or_(t.until.is_(None), t.until >= ends[0]),
                *clauses)):
        first = bisect_right(ends, max(at, created_at))  # the first day end after it began
        last = len(days) if until is None else bisect_right(ends, until)  # valid while until >= the day end
        if first < last:
            change[first] += 1
            change[last] -= 1
    values: list[float | None] = []
    running = 0
    for i in range(len(days)):
        running += change[i]
        values.append(float(running))
    return Daily(days=days, values=values)


def _repurchase_rate(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    """Share of the scope's buyers (≥ 1 counted order) with ≥ 2, at the end of each day."""
    from siyu.orders.models import COUNTED_STATUSES, Order

    clauses = customer_clauses(session, scope=scope, viewer=viewer)
    end = day_start(days[-1] + timedelta(days=1))
    firsts: dict[int, list[Any]] = {}
    for customer_id, paid_at in session.execute(
            select(Order.customer_id, Order.paid_at).where(
                Order.paid_at < end, Order.status.in_([s.value for s in COUNTED_STATUSES]),
                Order.customer_id.in_(select(Customer.id).where(*clauses))).order_by(Order.customer_id, Order.paid_at)):
        seen = firsts.setdefault(int(customer_id or 0), [])
        if len(seen) < 2:
            seen.append(analytics_service.local_day(paid_at))
    values: list[float | None] = []
    for day in days:
        buyers = sum(1 for s in firsts.values() if s[0] <= day)
        again = sum(1 for s in firsts.values() if len(s) > 1 and s[1] <= day)
        values.append(round(100.0 * again / buyers, 2) if buyers else None)
    return Daily(days=days, values=values)


def _group_active_members(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    """Members who spoke in the 7 days to each day, summed over the scope's groups (the daily snapshots)."""
    from siyu.groups.models import GroupChat, GroupDaySnapshot

    check_scope(session, scope=scope, viewer=viewer)
    where: list[Any] = [GroupDaySnapshot.day >= days[0], GroupDaySnapshot.day <= days[-1]]
    if scope.kind == "account":
        where.append(GroupChat.owner_account_id == scope.id)
    elif scope.kind == "group_kind":
        where.append(GroupChat.kind == scope.text)
    if not viewer.sees_all_accounts:
        where.append(GroupChat.owner_account_id.in_(sorted(viewer.account_ids)))
    rows = session.execute(select(GroupDaySnapshot.day, func.sum(GroupDaySnapshot.speakers_7d))
                           .join(GroupChat, GroupChat.id == GroupDaySnapshot.group_chat_id)
                           .where(*where).group_by(GroupDaySnapshot.day))
    found = {(day - days[0]).days: n for day, n in rows}
    return Daily(days=days, values=_indexed(days, found, blank=None))


def _delivery_rate(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    """Recipients kept (not released) ÷ recipients reserved in the send-quota ledger, per day."""
    from siyu.sends.models import SendLedgerEntry, TargetKind

    clauses = customer_clauses(session, scope=scope, viewer=viewer)
    where: list[Any] = [SendLedgerEntry.day >= days[0], SendLedgerEntry.day <= days[-1]]
    if scope.kind != "company" or not viewer.sees_all_accounts:
        where += [SendLedgerEntry.target_kind == TargetKind.customer.value,
                  SendLedgerEntry.target_id.in_(select(Customer.id).where(*clauses))]
    rows = session.execute(select(SendLedgerEntry.day, func.count(),
                                  func.count().filter(SendLedgerEntry.released_at.is_(None)))
                           .where(*where).group_by(SendLedgerEntry.day))
    reserved: dict[int, int] = {}
    kept: dict[int, int] = {}
    for day, total, went in rows:
        reserved[(day - days[0]).days] = int(total)
        kept[(day - days[0]).days] = int(went)
    return Daily(days=days, values=[100.0 * v if v is not None else None for v in _indexed(days, kept)],
                 denominators=[float(v or 0) for v in _indexed(days, reserved)])


def _interaction_rate(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    """Customers we had a private chat with (私聊 touches) during the period ÷ the scope's customers.

    Each customer counts once, on the local day of their first chat in the period (a chat at 23:59
    is that day's, one at 00:01 the next day's).
    """
    clauses = customer_clauses(session, scope=scope, viewer=viewer)
    start, end = day_start(days[0]), day_start(days[-1] + timedelta(days=1))
    where: list[Any] = [Touch.occurred_at >= start, Touch.occurred_at < end, Touch.kind == TouchKind.chat.value,
                        Touch.customer_id.in_(select(Customer.id).where(*clauses))]
    if scope.kind == "account":
        where.append(Touch.account_id == scope.id)
    firsts = select(Touch.customer_id, func.min(Touch.occurred_at).label("first")).where(*where) \
        .group_by(Touch.customer_id).subquery()
    day = analytics_metrics._day_index(session, firsts.c.first, days[0])
    found = {int(d): int(n) for d, n in session.execute(select(day, func.count()).group_by(day))}
    base = int(session.scalar(select(func.count()).select_from(Customer).where(Customer.created_at < end, *clauses))
               or 0)
    return Daily(days=days, values=[100.0 * v if v is not None else None for v in _indexed(days, found)],
                 base=float(base))


def _first_response_minutes(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    """Minutes from a conversation's opening to its first reply, averaged (Σ minutes ÷ answered)."""
    from siyu.inbox.models import Conversation
    from siyu.inbox.reports import _minutes
    from siyu.inbox.service import visible_conversations

    check_scope(session, scope=scope, viewer=viewer)
    start, end = day_start(days[0]), day_start(days[-1] + timedelta(days=1))
    visible = visible_conversations(viewer)
    where: list[Any] = [Conversation.opened_at >= start, Conversation.opened_at < end,
                        Conversation.first_response_at.is_not(None)]
    if visible is not None:
        where.append(visible)
    if scope.kind == "account":
        where.append(Conversation.account_id == scope.id)
    elif scope.kind == "operator":
        where.append(Conversation.assignee_id == scope.id)
    dialect = session.get_bind().dialect.name
    wait = cast(_minutes(Conversation.first_response_at, Conversation.opened_at, dialect), Float)
    day = analytics_metrics._day_index(session, Conversation.opened_at, days[0])
    minutes: dict[int, float] = {}
    answered: dict[int, int] = {}
    for d, total, n in session.execute(select(day, func.sum(wait), func.count()).where(*where).group_by(day)):
        minutes[int(d)] = float(total or 0)
        answered[int(d)] = int(n)
    return Daily(days=days, values=_indexed(days, minutes),
                 denominators=[float(v or 0) for v in _indexed(days, answered)])


def _profile_completeness(session: Session, viewer: Viewer, scope: GoalScope, days: list[date]) -> Daily:
    """The scope's customers' average stored completeness — known for today only (no history kept)."""
    from siyu.core.settings import local_today

    clauses = customer_clauses(session, scope=scope, viewer=viewer)
    today = local_today()
    values: list[float | None] = [None] * len(days)
    if days[0] <= today <= days[-1]:
        average = session.scalar(select(func.avg(cast(Customer.completeness, Float))).where(*clauses))
        values[(today - days[0]).days] = round(float(average), 2) if average is not None else None
    return Daily(days=days, values=values)


_COMPUTE: dict[str, Callable[[Session, Viewer, GoalScope, list[date]], Daily]] = {
    "net_adds": _net_adds,
    "fans": _fans,
    "repurchase_rate": _repurchase_rate,
    "revenue": _revenue,
    "group_active_members": _group_active_members,
    "delivery_rate": _delivery_rate,
    "interaction_rate": _interaction_rate,
    "task_completion": _task_completion,
    "first_response_minutes": _first_response_minutes,
    "profile_completeness": _profile_completeness,
}


def catalogue() -> list[dict[str, Any]]:
    return [{"name": m.name, "label": _(m.label), "mode": m.mode, "unit": m.unit, "scopes": list(m.scopes),
             "lower_is_better": m.lower_is_better, "additive": m.additive} for m in CATALOGUE.values()]


__all__ = ["CATALOGUE", "Daily", "GoalMetric", "GoalScope", "daily", "parse_scope"]
