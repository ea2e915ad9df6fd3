"""数据分析 in the API and the console: the metrics API, the ladder over time, team performance."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from siyu.analytics import metrics, service, team
from siyu.analytics.service import STAGES, Scope, parse_scope
from siyu.core.deps import ApiViewer, PageViewer, SessionDep
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.settings import local_today
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import Viewer
from siyu.segments import service as segments_service
from siyu.team import service as team_service
from siyu.web.render import render

api = APIRouter(tags=["analytics"])
pages = APIRouter(include_in_schema=False)

PERIODS = (7, 30, 90)
CHARTS = ("funnel", "cohorts", "flows", "churn", "stage_times")


class PointOut(BaseModel):
    at: date
    value: float | int


class SeriesOut(BaseModel):
    metric: str
    scope: str
    interval: str
    points: list[PointOut]


class MetricOut(BaseModel):
    name: str
    label: str
    kind: str
    unit: str
    scopes: list[str]
    intervals: list[str]


# ---------------------------------------------------------------- API


@api.get("/metrics", response_model=list[MetricOut])
def api_catalogue(viewer: ApiViewer) -> list[dict[str, Any]]:
    """The metrics catalogue: each metric's name, label, kind (stock/flow), unit and the scopes it takes."""
    return metrics.catalogue()


@api.get("/metrics/{name}", response_model=SeriesOut,
         responses={404: {"description": "No such metric, or a scope that does not exist or is not yours"}})
def api_series(session: SessionDep, viewer: ApiViewer, name: str, scope: str = "company",
               since: Annotated[date | None, Query(alias="from")] = None,
               until: Annotated[date | None, Query(alias="to")] = None, interval: str = "day") -> SeriesOut:
    """One metric over time: ``scope`` is company, account:<id>, operator:<user id> or segment:<id>;
    ``from``/``to`` are local days (Asia/Shanghai), both included (default: the last 30 days)."""
    until = until or local_today()
    since = since or until - timedelta(days=29)
    found = metrics.series(session, viewer=viewer, name=name, scope=parse_scope(scope), since=since, until=until,
                           interval=interval)
    return SeriesOut(metric=found.metric, scope=found.scope, interval=found.interval,
                     points=[PointOut(at=p.at, value=p.value) for p in found.points])


@api.get("/analytics/funnel")
def api_funnel(session: SessionDep, viewer: ApiViewer, day: date | None = None,
               scope: str = "company") -> dict[str, Any]:
    """The ladder on a local day (default today): customers on each stage (``current``) and on it or higher
    (``reached``). A saved segment's is read from its kept counts when they answer: ``as_of`` is when they were
    taken — today's then counts the members and stages as of that time, not live; ``refreshing``: the segment
    changed since, read live while its counts are computed again."""
    found = service.funnel(session, viewer=viewer, day=day or local_today(), scope=parse_scope(scope))
    return {"day": found.day.isoformat(), "scope": parse_scope(scope).key, "current": found.current,
            "reached": found.reached, "as_of": found.as_of.isoformat() if found.as_of else None,
            "refreshing": found.refreshing}


@api.get("/analytics/cohorts")
def api_cohorts(session: SessionDep, viewer: ApiViewer, weeks: int = 12, until: date | None = None,
                scope: str = "company") -> list[dict[str, Any]]:
    """Weekly cohorts by add date: how many reached 用户/客户/粉丝 within 7/30/90 days (null: not yet known)."""
    rows = service.cohorts(session, viewer=viewer, weeks=weeks, until=until or local_today(),
                           scope=parse_scope(scope))
    return [{"week": r.week.isoformat(), "added": r.added,
             "reached": {stage: {str(d): v for d, v in by_days.items()} for stage, by_days in r.reached.items()}}
            for r in rows]


@api.get("/analytics/team")
def api_team(session: SessionDep, viewer: ApiViewer, since: Annotated[date | None, Query(alias="from")] = None,
             until: Annotated[date | None, Query(alias="to")] = None) -> dict[str, Any]:
    """Team performance per operator and account over the period, each list with its team average."""
    until = until or local_today()
    found = team.build(session, viewer=viewer, since=since or until - timedelta(days=29), until=until)
    return {"from": found.since.isoformat(), "to": found.until.isoformat(),
            "operators": [{"id": r.key, "name": r.label, **r.figures} for r in found.operators],
            "accounts": [{"id": r.key, "name": r.label, **r.figures} for r in found.accounts],
            "average": {"operators": found.average(found.operators), "accounts": found.average(found.accounts)}}


# ---------------------------------------------------------------- console


def _day(value: str | None, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise Invalid("Not a date: {value}", field="day", value=value[:20]) from exc


def _int(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or len(value) > 12:
        raise Invalid("Not a number: {value}", field="segment_id", value=value[:20])
    return int(value)


def _ladder_params(request: Request) -> tuple[date, date, date, Scope]:
    today = local_today()
    query = request.query_params
    day = _day(query.get("day"), today)
    until = _day(query.get("until"), today)
    since = _day(query.get("since"), until - timedelta(days=29))
    segment_id = _int(query.get("segment_id"))
    return day, since, until, Scope("segment", segment_id) if segment_id else Scope()


def _ladder(session: Any, viewer: Viewer, request: Request) -> dict[str, Any]:
    day, since, until, scope = _ladder_params(request)
    funnel = service.funnel(session, viewer=viewer, day=day, scope=scope)
    cohorts = service.cohorts(session, viewer=viewer, weeks=12, until=until, scope=scope)
    flows = service.flows(session, viewer=viewer, since=since, until=until, scope=scope)
    churn = service.churn_by_stage(session, viewer=viewer, since=since, until=until, scope=scope)
    times = service.stage_times(session, viewer=viewer, since=since, until=until, scope=scope)
    return {"day": day, "since": since, "until": until, "scope": scope, "funnel": funnel, "cohorts": cohorts,
            "flows": flows, "churn": churn, "times": times}


def _stage(name: str) -> str:
    return _("New customers") if name == service.FLOW_NEW else _(f"stage.{name}")


def _tables(data: dict[str, Any]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Every chart's data as (header, rows): the table views and the CSV exports read the same."""
    funnel = data["funnel"]
    days = service.COHORT_DAYS
    cohort_header = [_("Week"), _("Added")] + [_("{stage} within {days} days", stage=_(f"stage.{s}"), days=d)
                                              for s in STAGES[1:] for d in days]
    cohort_rows = [[r.week.isoformat(), r.added] + ["" if r.reached[s][d] is None else r.reached[s][d]
                                                    for s in STAGES[1:] for d in days] for r in data["cohorts"]]
    return {
        "funnel": ([_("Stage"), _("On this stage"), _("On this stage or higher")],
                   [[_(f"stage.{s}"), funnel.current[s], funnel.reached[s]] for s in STAGES]),
        "cohorts": (cohort_header, cohort_rows),
        "flows": ([_("From"), _("To"), _("Customers")],
                  [[_stage(f.source), _stage(f.target), f.customers] for f in data["flows"]]),
        "churn": ([_("Stage"), _("At the start"), _("Churned"), _("Churn rate")],
                  [[_(f"stage.{r.stage}"), r.at_start, r.churned, "" if r.rate is None else f"{r.rate:.1%}"]
                   for r in data["churn"]]),
        "stage_times": ([_("From"), _("To"), _("Customers"), _("Median days")],
                        [[_(f"stage.{t.from_stage}"), _(f"stage.{t.to_stage}"), t.customers,
                          "" if t.median_days is None else t.median_days] for t in data["times"]]),
    }


def _sankey(flows: list[service.Flow]) -> dict[str, Any]:
    start, end = _("At the start"), _("At the end")
    stages: dict[str, str] = {}  # node name → its stage (or "new"), which colours it
    links = []
    for f in flows:
        source = _stage(f.source) if f.source == service.FLOW_NEW else f"{start}·{_stage(f.source)}"
        target = f"{end}·{_stage(f.target)}"
        stages.setdefault(source, f.source)
        stages.setdefault(target, f.target)
        links.append({"source": source, "target": target, "value": f.customers})
    return {"nodes": [{"name": n, "stage": stage} for n, stage in stages.items()], "links": links}


@pages.get("/analytics", response_class=HTMLResponse)
def ladder_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    data = _ladder(session, viewer, request)
    funnel = data["funnel"]
    chart = {"reached": _("On this stage or higher"), "current": _("On this stage"),
             "items": [{"name": _(f"stage.{s}"), "value": funnel.reached[s], "current": funnel.current[s]}
                       for s in STAGES]}
    segments = segments_service.list_segments(session, viewer=viewer)
    churn_chart = {"x": [_(f"stage.{r.stage}") for r in data["churn"]],
                   "series": [{"name": _("Churned"), "data": [r.churned for r in data["churn"]]}]}
    return render(request, "analytics/ladder.html", nav_active="analytics", title=_("Analytics"), **data,
                  chart=chart, sankey=_sankey(data["flows"]), churn_chart=churn_chart, tables=_tables(data),
                  segments=segments, stages=STAGES, cohort_days=service.COHORT_DAYS,
                  query=str(request.query_params))


def _csv_response(header: list[str], rows: list[list[Any]], filename: str) -> Response:
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow([neutralise(v) if isinstance(v, str) else v for v in row])
    return Response(out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _team_period(request: Request) -> tuple[date, date, int]:
    raw = request.query_params.get("days") or "30"
    days = int(raw) if raw.isdigit() and int(raw) in PERIODS else 30
    until = _day(request.query_params.get("until"), local_today())
    return until - timedelta(days=days - 1), until, days


@pages.get("/analytics/team", response_class=HTMLResponse)
def team_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    since, until, days = _team_period(request)
    found = team.build(session, viewer=viewer, since=since, until=until)
    columns = team.column_labels()
    chart_columns = ("touches", "private_chats", "net_adds", "tasks_done")
    labels = dict(columns)
    chart = {"x": [r.label for r in found.operators + found.accounts],
             "series": [{"name": labels[c], "data": [r.figures.get(c) or 0 for r in found.operators + found.accounts]}
                        for c in chart_columns]}
    return render(request, "analytics/team.html", nav_active="analytics_team", title=_("Team performance"),
                  performance=found, columns=columns, chart=chart, days=days, periods=PERIODS, until=until)


@pages.get("/analytics/team.csv")
def team_csv(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    since, until, days = _team_period(request)
    found = team.build(session, viewer=viewer, since=since, until=until)
    team_service.record_audit(session, actor=viewer, action="export", entity_type="analytics_report",
                              summary="team", after={"chart": "team", "days": days})
    session.commit()
    return Response(team.to_csv(found).encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="team-performance-{until:%Y%m%d}.csv"'})


def _report_choices(session: Any, viewer: Viewer) -> list[tuple[str, str]]:
    """The scopes whose weekly report this viewer may open: the company, their accounts, themselves."""
    from siyu.analytics import reports

    out: list[tuple[str, str]] = []
    for scope in reports.scopes(session):
        try:
            service.check_scope(session, scope=scope, viewer=viewer)
        except NotFound:
            continue
        if scope.kind == "company" and not viewer.sees_all_accounts:
            continue
        out.append((scope.key, reports.scope_label(session, scope)))
    return out


@pages.get("/analytics/reports/weekly", response_class=HTMLResponse)
def weekly_report_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    """A scope's weekly report, fit to print on A4 (the page the WeCom card opens)."""
    from sqlalchemy import select

    from siyu.analytics import reports
    from siyu.analytics.models import WeeklyReport

    query = request.query_params
    default = "company" if viewer.sees_all_accounts else f"operator:{viewer.user_id}"
    scope = parse_scope(query.get("scope") or default)
    week = reports.parse_week(query.get("week"), today=local_today())
    report = reports.build(session, viewer=viewer, scope=scope, week=week)
    delivery = session.scalar(select(WeeklyReport).where(WeeklyReport.scope == scope.key, WeeklyReport.week == week))
    return render(request, "analytics/weekly_report.html", nav_active="analytics",
                  title=_("Weekly report · {scope}", scope=report.label), report=report, delivery=delivery,
                  choices=_report_choices(session, viewer), number=reports.number, signed=reports.signed)


# Last: /analytics/team.csv above is a page of its own.
@pages.get("/analytics/{chart}.csv")
def ladder_csv(request: Request, session: SessionDep, viewer: PageViewer, chart: str) -> Response:
    if chart not in CHARTS:
        raise NotFound("Not found")
    data = _ladder(session, viewer, request)
    header, rows = _tables(data)[chart]
    team_service.record_audit(session, actor=viewer, action="export", entity_type="analytics_report",
                              summary=chart, after={"chart": chart, "scope": data["scope"].key})
    session.commit()
    return _csv_response(header, rows, f"analytics-{chart}-{data['until']:%Y%m%d}.csv")
