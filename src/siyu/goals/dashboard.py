"""The 工作台 each role opens first: the data behind every number and chart (no HTTP here).

* admin / planner — company numbers today vs yesterday vs the same day last week (precomputed by
  ``goals.jobs.refresh_dashboard`` into ``dashboard_figure``: the page reads a few rows), goals,
  channels by ROI (the channels report), campaigns running, alerts.
* operator — 今日任务 summary, their goals, their customers' ladder, churn.
* service — the inbox queue, SLA breaches, their response times.

Every chart's data is a ``Table`` (header + rows): the page's table view, the CSV and the XLSX
export all read the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from siyu.analytics import service as analytics_service
from siyu.analytics.service import Scope, day_start
from siyu.core.db import utcnow
from siyu.core.i18n import N_, _
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers.models import MANUAL_KINDS, Customer, Friendship, FriendshipStatus, Touch
from siyu.goals import service as goals_service
from siyu.goals.models import DashboardFigure

# The admin dashboard's company figures: name → (label, the list behind the number).
FIGURES: dict[str, tuple[str, str]] = {
    "customers": (N_("Customers"), "/customers"),
    "adds": (N_("Adds"), "/customers?sort=created"),
    "deletions": (N_("Deletions"), "/customers/churn"),
    "net_adds": (N_("Net adds"), "/analytics"),
    "fans": (N_("Customers on 粉丝"), "/customers?stage=fan"),
    "touches": (N_("Touches"), "/analytics/team"),
    "revenue": (N_("Revenue"), "/orders"),
}
# Up to this many customers (by the highest id: a cheap estimate) a first visit before the job ran computes
# the figures itself; above, the section waits for the job (every 5 minutes).
ON_THE_FLY_MAX = 50_000
CHARTS = ("company", "channels", "tasks", "ladder", "response", "stages", "rfm")
TASK_STATUS_LABELS = {"open": N_("To do"), "done": N_("Done"), "snoozed": N_("Snoozed"), "skipped": N_("Skipped"),
                      "closed": N_("Closed by another touch")}


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]


@dataclass
class Board:
    role: str
    day: date
    figures: list[dict[str, Any]] = field(default_factory=list)
    goals: list[goals_service.Evaluation] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    charts: dict[str, dict[str, Any]] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (text, link)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    computed_at: datetime | None = None


# ---------------------------------------------------------------- precomputed company figures


def compute_figures(session: Session, *, day: date) -> dict[str, float]:
    """The company's figures for one local day (flows within the day, levels at its end)."""
    from siyu.orders.models import COUNTED_STATUSES, Order

    start, end = day_start(day), day_start(day + timedelta(days=1))
    live = Customer.merged_into_id.is_(None)
    adds = session.scalar(select(func.count()).select_from(Friendship).where(
        Friendship.added_at >= start, Friendship.added_at < end))
    deletions = session.scalar(select(func.count()).select_from(Friendship).where(
        Friendship.status == FriendshipStatus.deleted.value, Friendship.removed_at >= start,
        Friendship.removed_at < end))
    touches = session.scalar(select(func.count()).select_from(Touch).where(
        Touch.occurred_at >= start, Touch.occurred_at < end, Touch.kind.in_([k.value for k in MANUAL_KINDS])))
    revenue = session.scalar(select(func.coalesce(func.sum(Order.amount - Order.refunded_amount), 0)).where(
        Order.paid_at >= start, Order.paid_at < end, Order.status.in_([s.value for s in COUNTED_STATUSES])))
    funnel = analytics_service.funnel_for(session, clauses=[live], day=day)  # its total: customers by the day's end
    fans, customers = funnel.current["fan"], funnel.total
    return {"customers": float(customers), "adds": float(adds or 0), "deletions": float(deletions or 0),
            "net_adds": float((adds or 0) - (deletions or 0)), "fans": float(fans),
            "touches": float(touches or 0), "revenue": round(float(revenue or 0), 2)}


def store_figures(session: Session, *, day: date, figures: dict[str, float]) -> None:
    session.execute(delete(DashboardFigure).where(DashboardFigure.day == day))
    now = utcnow()
    session.add_all([DashboardFigure(name=name, day=day, value=value, computed_at=now)
                     for name, value in figures.items()])
    session.flush()


def comparison_days(today: date) -> tuple[date, date, date]:
    return today, today - timedelta(days=1), today - timedelta(days=7)


def refresh_figures(session: Session, *, today: date | None = None) -> list[date]:
    """Today's figures always; yesterday's and last week's when missing or computed before their day ended."""
    today = today or local_today()
    done: list[date] = []
    stamps = dict(session.execute(select(DashboardFigure.day, func.min(DashboardFigure.computed_at))
                                  .where(DashboardFigure.day.in_(comparison_days(today)))
                                  .group_by(DashboardFigure.day)).all())
    for day in comparison_days(today):
        stamp = stamps.get(day)
        if day == today or stamp is None or stamp < day_start(day + timedelta(days=1)):
            store_figures(session, day=day, figures=compute_figures(session, day=day))
            done.append(day)
    return done


def read_figures(session: Session, *, today: date) -> tuple[dict[str, dict[date, float]], datetime | None]:
    found: dict[str, dict[date, float]] = {}
    stamp: datetime | None = None
    for name, day, value, computed_at in session.execute(
            select(DashboardFigure.name, DashboardFigure.day, DashboardFigure.value, DashboardFigure.computed_at)
            .where(DashboardFigure.day.in_(comparison_days(today)))):
        found.setdefault(name, {})[day] = float(value)
        if day == today:
            stamp = computed_at
    return found, stamp


# ---------------------------------------------------------------- the boards


def board_role(viewer: Viewer) -> str:
    return "admin" if viewer.sees_all_accounts else ("service" if viewer.role == "service" else "operator")


def build(session: Session, *, viewer: Viewer, today: date | None = None) -> Board:
    today = today or local_today()
    board = Board(role=board_role(viewer), day=today)
    owned = goals_service.list_goals(session, viewer=viewer, owner_id=viewer.user_id) if viewer.user_id else []
    board.goals = [goals_service.evaluate(session, goal=g, viewer=viewer, today=today) for g in owned]
    _common(session, board, viewer)
    if board.role == "admin":
        _admin(session, board, viewer, today)
    elif board.role == "operator":
        _operator(session, board, viewer, today)
    else:
        _service(session, board, viewer, today)
    return board


def _common(session: Session, board: Board, viewer: Viewer) -> None:
    """The ladder cards' and the RFM chart's data every 工作台 shows below its role section."""
    from siyu.customers import service as customers_service
    from siyu.segments import rfm
    from siyu.segments.models import RFM_LABELS

    stages = customers_service.stage_counts(session, viewer=viewer)
    board.tables["stages"] = Table([_("Stage"), _("On this stage")],
                                   [[_(f"stage.{s}"), stages.get(s, 0)] for s in analytics_service.STAGES])
    counts = rfm.distribution(session, scope=customers_service.visible_customer_clause(viewer))
    board.tables["rfm"] = Table([_("RFM distribution"), _("Buyers")],
                                [[_(label), counts[key.value]] for key, label in RFM_LABELS.items()])


def _admin(session: Session, board: Board, viewer: Viewer, today: date) -> None:
    found, stamp = read_figures(session, today=today)
    if today not in {d for days in found.values() for d in days} and _small(session):
        refresh_figures(session, today=today)  # the first visit before the job ran: compute once, store
        found, stamp = read_figures(session, today=today)
    board.computed_at = stamp
    days = comparison_days(today)
    for name, (label, link) in FIGURES.items():
        raw = [found.get(name, {}).get(d) for d in days]
        values = [v if v is None or name == "revenue" else int(v) for v in raw]
        board.figures.append({"name": name, "label": _(label), "link": link, "today": values[0],
                              "yesterday": values[1], "last_week": values[2]})
    header = [_("Figure"), _("Today"), _("Yesterday"), _("Same day last week")]
    board.tables["company"] = Table(header, [[f["label"], f["today"], f["yesterday"], f["last_week"]]
                                             for f in board.figures])
    shown = [f for f in board.figures if f["name"] in ("adds", "deletions", "net_adds", "touches")]
    board.charts["company"] = {"x": [f["label"] for f in shown], "series": [
        {"name": header[i + 1], "data": [f[key] or 0 for f in shown]}
        for i, key in enumerate(("today", "yesterday", "last_week"))]}
    _channels(session, board, viewer, today)
    board.campaigns = _campaigns(session)
    _alerts(session, board, viewer, today)


def _small(session: Session) -> bool:
    """Few enough customers to compute the figures during a page view (else the job's next run brings them)."""
    return int(session.scalar(select(func.max(Customer.id))) or 0) <= ON_THE_FLY_MAX


def _channels(session: Session, board: Board, viewer: Viewer, today: date) -> None:
    from siyu.channels import service as channels_service

    channels = {c.id: c for c in channels_service.list_channels(session, viewer=viewer)}
    figures = channels_service.report(session, since=today - timedelta(days=29), until=today,
                                      channel_ids=sorted(channels))
    ranked = sorted(figures.values(), key=lambda f: (f.roi is None, -(f.roi or 0), -f.net))[:8]
    board.tables["channels"] = Table(
        [_("Channel"), _("Net adds"), _("Revenue"), _("Cost"), _("ROI")],
        [[channels[f.channel_id].name, f.net, float(f.revenue), float(f.cost),
          "" if f.roi is None else f"{f.roi:.0%}"] for f in ranked])
    board.charts["channels"] = {"x": [channels[f.channel_id].name for f in ranked], "series": [
        {"name": _("ROI"), "data": [round((f.roi or 0) * 100, 1) for f in ranked]}]}


def _campaigns(session: Session) -> list[dict[str, Any]]:
    """Campaigns running (群发 scheduled, sending, or sent in the last days) with their status and reach."""
    from siyu.campaigns import service as campaigns_service
    from siyu.campaigns.models import CAMPAIGN_STATUS_LABELS, CampaignStatus

    return [{"id": c.id, "name": c.name, "status": _(CAMPAIGN_STATUS_LABELS[CampaignStatus(c.status)]),
             "targeted": targeted} for c, targeted in campaigns_service.in_progress(session)]


def _alerts(session: Session, board: Board, viewer: Viewer, today: date) -> None:
    from siyu.inbox.models import Conversation

    breaches = _sla_breaches(session, viewer, today)
    if breaches:
        board.alerts.append((_("{n} conversations waited past the service level today", n=breaches), "/inbox"))
    off = [e for e in board.goals if e.state == "off_track"]
    for evaluation in off:
        board.alerts.append((_("Goal {name} is off track", name=evaluation.goal.name),
                             f"/goals/{evaluation.goal.id}"))
    waiting = session.scalar(select(func.count()).select_from(Conversation).where(
        Conversation.status == "open", Conversation.unanswered > 0))
    board.numbers["waiting"] = int(waiting or 0)


def _sla_breaches(session: Session, viewer: Viewer, today: date) -> int:
    from siyu.inbox.models import Conversation
    from siyu.inbox.service import visible_conversations

    where: list[Any] = [Conversation.sla_alerted_at >= day_start(today)]
    visible = visible_conversations(viewer)
    if visible is not None:
        where.append(visible)
    return int(session.scalar(select(func.count()).select_from(Conversation).where(*where)) or 0)


def _operator(session: Session, board: Board, viewer: Viewer, today: date) -> None:
    from siyu.maintenance.models import Task, TaskStatus

    where: list[Any] = [Task.day == today]
    if not viewer.sees_all_accounts:
        where.append(Task.account_id.in_(sorted(viewer.account_ids)))
    counts = dict(session.execute(select(Task.status, func.count()).where(*where).group_by(Task.status)).all())
    done = int(counts.get(TaskStatus.done.value, 0))
    total = sum(int(n) for n in counts.values())
    board.numbers.update(tasks_total=total, tasks_done=done, tasks_open=int(counts.get(TaskStatus.open.value, 0)))
    board.tables["tasks"] = Table([_("Status"), _("Tasks")],
                                  [[_(TASK_STATUS_LABELS.get(s, s)), int(n)] for s, n in sorted(counts.items())])
    board.charts["tasks"] = {"x": [row[0] for row in board.tables["tasks"].rows],
                             "series": [{"name": _("Tasks"), "data": [row[1] for row in board.tables["tasks"].rows]}]}
    funnel = analytics_service.funnel(session, viewer=viewer, day=today, scope=Scope())
    board.tables["ladder"] = Table([_("Stage"), _("On this stage")],
                                   [[_(f"stage.{s}"), funnel.current[s]] for s in analytics_service.STAGES])
    board.charts["ladder"] = {"x": [_(f"stage.{s}") for s in analytics_service.STAGES],
                              "series": [{"name": _("On this stage"),
                                          "data": [funnel.current[s] for s in analytics_service.STAGES]}]}
    ended: list[Any] = [Friendship.status == FriendshipStatus.deleted.value,
                        Friendship.removed_at >= day_start(today - timedelta(days=6))]
    if not viewer.sees_all_accounts:
        ended.append(Friendship.account_id.in_(sorted(viewer.account_ids)))
    board.numbers["churn_7d"] = int(session.scalar(select(func.count()).select_from(Friendship).where(*ended)) or 0)


def _service(session: Session, board: Board, viewer: Viewer, today: date) -> None:
    from siyu.inbox import reports
    from siyu.inbox.models import Conversation
    from siyu.inbox.service import visible_conversations

    where: list[Any] = [Conversation.status == "open"]
    visible = visible_conversations(viewer)
    if visible is not None:
        where.append(visible)
    board.numbers["queue"] = int(session.scalar(select(func.count()).select_from(Conversation).where(*where)) or 0)
    board.numbers["mine"] = int(session.scalar(select(func.count()).select_from(Conversation).where(
        *where, Conversation.assignee_id == viewer.user_id)) or 0)
    board.numbers["breaches"] = _sla_breaches(session, viewer, today)
    report = reports.build(session, viewer=viewer, since=day_start(today - timedelta(days=6)),
                           until=day_start(today + timedelta(days=1)))
    mine = next((r for r in report.agents if r.key == viewer.user_id), None)
    board.numbers["my_first_response"] = mine.first_response_minutes if mine else None
    board.numbers["my_conversations"] = mine.conversations if mine else 0
    labels = [_("Under 1 minute"), _("1–5 minutes"), _("5–15 minutes"), _("15–60 minutes"), _("Over an hour")]
    board.tables["response"] = Table([_("First response"), _("Conversations")],
                                     [[label, n] for label, n in zip(labels, report.waits, strict=False)])
    board.charts["response"] = {"x": labels, "series": [{"name": _("Conversations"), "data": report.waits}]}


def chart_table(session: Session, *, viewer: Viewer, chart: str, today: date | None = None) -> Table | None:
    board = build(session, viewer=viewer, today=today)
    return board.tables.get(chart)


__all__ = ["SYSTEM", "Board", "Table", "build", "refresh_figures"]
