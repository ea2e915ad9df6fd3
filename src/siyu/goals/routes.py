"""目标 (goals) in the API and the console, and the 工作台's chart exports."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Forbidden, Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.settings import local_today
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import Viewer
from siyu.goals import catalogue, dashboard, service
from siyu.goals.models import Goal
from siyu.goals.schemas import ForecastOut, GoalEdit, GoalIn, GoalOut, PointOut
from siyu.team import service as team_service
from siyu.team.models import User
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render

api = APIRouter(tags=["goals"])
pages = APIRouter(include_in_schema=False)

FIELD_LABELS = {"name": "Name", "metric": "Metric", "scope": "Scope", "target": "Target", "start": "Start",
                "deadline": "Deadline", "owner_id": "Owner", "parent_id": "Parent goal"}
STATE_LABELS = {"on_track": "On track", "at_risk": "At risk", "off_track": "Off track"}


def goal_out(found: service.Evaluation) -> GoalOut:
    goal = found.goal
    return GoalOut(
        id=goal.id, name=goal.name, metric=goal.metric, metric_label=_(found.metric.label), unit=found.metric.unit,
        scope=goal.scope_key, target=goal.target, start=goal.start, deadline=goal.deadline, owner_id=goal.owner_id,
        parent_id=goal.parent_id, progress=found.progress, state=found.state, has_data=found.has_data,
        forecast=ForecastOut(linear=found.outlook.linear, seasonal=found.outlook.seasonal,
                             linear_points=[PointOut(at=d, value=v) for d, v in found.outlook.linear_path],
                             seasonal_points=[PointOut(at=d, value=v) for d, v in found.outlook.seasonal_path]),
        points=[PointOut(at=d, value=v) for d, v in zip(found.daily.days, found.path, strict=True)]
        if found.has_data else [],
        subgoals_total=found.subgoals_total, subgoals_add_up=found.subgoals_add_up)


# ---------------------------------------------------------------- API


@api.get("/goals", response_model=list[GoalOut])
def api_list(session: SessionDep, viewer: ApiViewer) -> list[GoalOut]:
    """Goals this viewer may see, each with ``progress``, ``forecast`` (linear, seasonal) and ``state``."""
    return [goal_out(service.evaluate(session, goal=g, viewer=viewer))
            for g in service.list_goals(session, viewer=viewer)]


@api.get("/goals/metrics")
def api_metrics(viewer: ApiViewer) -> list[dict[str, Any]]:
    """The goals' metric catalogue: name, label, mode (sum/level/ratio/share), unit and scopes."""
    return catalogue.catalogue()


@api.post("/goals", response_model=GoalOut, status_code=201,
          responses={404: {"description": "A scope or parent goal that does not exist or is not yours"}})
def api_create(session: SessionDep, viewer: ApiViewer, data: GoalIn) -> GoalOut:
    """A goal: ``metric`` from ``/goals/metrics``, ``scope`` (company, account:<id>, operator:<id>, segment:<id>,
    channel:<id>, group_kind:<kind>), ``target``, ``start`` and ``deadline`` (local days); ``parent_id`` for a
    sub-goal (one account's or operator's share; the shares may not exceed the parent's target)."""
    goal = service.create_goal(session, data=data, viewer=viewer)
    session.commit()
    return goal_out(service.evaluate(session, goal=goal, viewer=viewer))


@api.get("/goals/{goal_id}", response_model=GoalOut)
def api_get(session: SessionDep, viewer: ApiViewer, goal_id: Id) -> GoalOut:
    return goal_out(service.evaluate(session, goal=service.get_goal(session, goal_id=goal_id, viewer=viewer),
                                     viewer=viewer))


@api.patch("/goals/{goal_id}", response_model=GoalOut,
           responses={403: {"description": "A goal set for you by an admin or a planner"}})
def api_update(session: SessionDep, viewer: ApiViewer, goal_id: Id, data: GoalEdit) -> GoalOut:
    """Change a goal: only the fields sent change. ``metric``/``scope`` only while it has no sub-goals; a
    parent's ``target`` not below its shares' total and its dates covering theirs; a share within its parent.
    Admins and planners edit any goal; others the goals they own and set themselves (403 otherwise)."""
    goal = service.update_goal(session, goal_id=goal_id, data=data, viewer=viewer)
    session.commit()
    return goal_out(service.evaluate(session, goal=goal, viewer=viewer))


@api.delete("/goals/{goal_id}", status_code=204,
            responses={403: {"description": "A goal set for you by an admin or a planner"}})
def api_delete(session: SessionDep, viewer: ApiViewer, goal_id: Id) -> None:
    """Delete a goal together with its sub-goals (deleting one share leaves its parent under-allocated)."""
    service.delete_goal(session, goal_id=goal_id, viewer=viewer)
    session.commit()


# ---------------------------------------------------------------- console


def goal_chart(found: service.Evaluation) -> dict[str, Any]:
    """The goal's ECharts line data: progress so far, the target, both forecasts to the deadline."""
    days = found.daily.days + [d for d, _v in found.outlook.linear_path]
    observed = len(found.daily.days)
    pad: list[float | None] = [None] * (observed - 1)
    progress_line = list(found.path) + [None] * len(found.outlook.linear_path)
    bridge = [found.progress] if found.progress is not None else [None]
    return {"x": [d.isoformat() for d in days], "series": [
        {"name": _("Progress"), "data": progress_line},
        {"name": _("Target"), "data": [found.goal.target] * len(days)},
        {"name": _("Linear forecast"), "data": pad + bridge + [v for _d, v in found.outlook.linear_path]},
        {"name": _("Seasonal forecast"), "data": pad + bridge + [v for _d, v in found.outlook.seasonal_path]},
    ]}


def goal_table(found: service.Evaluation) -> tuple[list[str], list[list[Any]]]:
    header = [_("Day"), _("Progress"), _("Linear forecast"), _("Seasonal forecast"), _("Target")]
    rows: list[list[Any]] = [[d.isoformat(), "" if v is None else v, "", "", found.goal.target]
                             for d, v in zip(found.daily.days, found.path, strict=True)]
    rows += [[d.isoformat(), "", lin, sea, found.goal.target]
             for (d, lin), (_d, sea) in zip(found.outlook.linear_path, found.outlook.seasonal_path, strict=True)]
    return header, rows


def _editor(request: Request, session: Any, viewer: Viewer, *, values: dict[str, Any] | None = None,
            errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    goals = service.list_goals(session, viewer=viewer)
    evaluations = [service.evaluate(session, goal=g, viewer=viewer) for g in goals]
    users = list(session.query(User).order_by(User.id)) if viewer.sees_all_accounts else []
    today = local_today()
    return render(request, "goals/list.html", status_code=status_code, nav_active="goals", title=_("Goals"),
                  evaluations=evaluations, metrics=catalogue.catalogue(), users=users,
                  scopes=service.scope_choices(session, viewer=viewer),
                  owners={u.id: u.display_name or u.username for u in session.query(User)
                          if u.id in {g.owner_id for g in goals}},
                  values=values or {"start": today.isoformat(), "scope": "company" if viewer.sees_all_accounts
                                    else f"operator:{viewer.user_id}"},
                  errors=errors or {}, states={k: _(v) for k, v in STATE_LABELS.items()})


@pages.get("/goals", response_class=HTMLResponse)
def list_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _editor(request, session, viewer)


@pages.post("/goals/new", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def create_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    data = {k: (v.strip() or None) for k, v in values.items() if k in GoalIn.model_fields}
    try:
        goal = service.create_goal(session, data=GoalIn.model_validate(data), viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        labels = {k: _(v) for k, v in FIELD_LABELS.items()}
        return _editor(request, session, viewer, values=values, status_code=422,
                       errors=field_errors(exc, labels=labels))
    return RedirectResponse(f"/goals/{goal.id}", status_code=303)


@pages.get("/goals/{goal_id}", response_class=HTMLResponse)
def detail_page(request: Request, session: SessionDep, viewer: PageViewer, goal_id: Id) -> Response:
    goal = service.get_goal(session, goal_id=goal_id, viewer=viewer)
    found = service.evaluate(session, goal=goal, viewer=viewer)
    shares = [service.evaluate(session, goal=g, viewer=viewer)
              for g in service.subgoals(session, goal=goal, viewer=viewer)]
    above = session.get(Goal, goal.parent_id) if goal.parent_id is not None else None
    parent = service.evaluate(session, goal=above, viewer=viewer) if above is not None else None
    refusal = service.edit_refusal(goal, viewer)
    return render(request, "goals/detail.html", nav_active="goals", title=goal.name, found=found, shares=shares,
                  chart=goal_chart(found), table=goal_table(found), states={k: _(v) for k, v in STATE_LABELS.items()},
                  parent=parent, refusal=_(refusal) if refusal else None)


def _edit_form(request: Request, session: Any, viewer: Viewer, goal: Goal, *, values: dict[str, Any] | None = None,
               errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    shares = service.subgoals(session, goal=goal, viewer=viewer)
    users = list(session.query(User).order_by(User.id)) if viewer.sees_all_accounts else []
    current = {"name": goal.name, "metric": goal.metric, "scope": goal.scope_key, "target": f"{goal.target:g}",
               "start": goal.start.isoformat(), "deadline": goal.deadline.isoformat(),
               "owner_id": "" if goal.owner_id is None else str(goal.owner_id)}
    return render(request, "goals/edit.html", status_code=status_code, nav_active="goals",
                  title=_("Edit goal"), goal=goal, shares=shares, metrics=catalogue.catalogue(), users=users,
                  scopes=service.scope_choices(session, viewer=viewer), values=current | (values or {}),
                  errors=errors or {})


@pages.get("/goals/{goal_id}/edit", response_class=HTMLResponse)
def edit_page(request: Request, session: SessionDep, viewer: PageViewer, goal_id: Id) -> Response:
    goal = service.get_goal(session, goal_id=goal_id, viewer=viewer)
    refusal = service.edit_refusal(goal, viewer)
    if refusal is not None:
        raise Forbidden(refusal)
    return _edit_form(request, session, viewer, goal)


@pages.post("/goals/{goal_id}/edit", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def edit_submit(request: Request, session: SessionDep, viewer: PageViewer, goal_id: Id, form: FormDep) -> Response:
    goal = service.get_goal(session, goal_id=goal_id, viewer=viewer)
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    data: dict[str, Any] = {k: (v.strip() if k == "name" else v.strip() or None) for k, v in values.items()
                            if k in GoalEdit.model_fields}
    if "owner_id" in data and data["owner_id"] is None:
        data["owner_id"] = viewer.user_id  # 「我」
    try:
        service.update_goal(session, goal_id=goal.id, data=GoalEdit.model_validate(data), viewer=viewer)
        session.commit()
    except (ValidationError, Invalid, NotFound) as exc:
        session.rollback()
        labels = {k: _(v) for k, v in FIELD_LABELS.items()}
        goal = service.get_goal(session, goal_id=goal_id, viewer=viewer)
        return _edit_form(request, session, viewer, goal, values=values, status_code=422,
                          errors=field_errors(exc, labels=labels))
    return RedirectResponse(f"/goals/{goal.id}", status_code=303)


@pages.post("/goals/{goal_id}/delete", dependencies=[FormRead, CsrfChecked])
def delete_submit(request: Request, session: SessionDep, viewer: PageViewer, goal_id: Id) -> Response:
    goal = service.get_goal(session, goal_id=goal_id, viewer=viewer)
    back = f"/goals/{goal.parent_id}" if goal.parent_id is not None else "/goals"
    service.delete_goal(session, goal_id=goal.id, viewer=viewer)
    session.commit()
    return RedirectResponse(back, status_code=303)


def export(header: list[str], rows: list[list[Any]], *, fmt: str, filename: str, sheet: str) -> Response:
    disposition = {"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'}
    clean = [[neutralise(v) if isinstance(v, str) else v for v in row] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        out.write("\ufeff")
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(clean)
        return Response(out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8", headers=disposition)
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    page = book.create_sheet(sheet[:31])
    page.append(header)
    for row in clean:
        page.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return Response(buffer.getvalue(), headers=disposition,
                    media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@pages.get("/goals/{goal_id}/chart.{fmt}")
def goal_export(request: Request, session: SessionDep, viewer: PageViewer, goal_id: Id, fmt: str) -> Response:
    if fmt not in ("csv", "xlsx"):
        raise NotFound("Not found")
    goal = service.get_goal(session, goal_id=goal_id, viewer=viewer)
    header, rows = goal_table(service.evaluate(session, goal=goal, viewer=viewer))
    team_service.record_audit(session, actor=viewer, action="export", entity_type="goal", entity_id=goal.id,
                              summary=goal.name, after={"format": fmt, "rows": len(rows)})
    session.commit()
    return export(header, rows, fmt=fmt, filename=f"goal-{goal.id}-{local_today():%Y%m%d}", sheet=_("Goals"))


@pages.get("/dashboard/{chart}.{fmt}")
def dashboard_export(request: Request, session: SessionDep, viewer: PageViewer, chart: str, fmt: str) -> Response:
    if fmt not in ("csv", "xlsx") or chart not in dashboard.CHARTS:
        raise NotFound("Not found")
    table = dashboard.chart_table(session, viewer=viewer, chart=chart)
    if table is None:
        raise NotFound("Not found")
    team_service.record_audit(session, actor=viewer, action="export", entity_type="dashboard_chart",
                              summary=chart, after={"chart": chart, "format": fmt})
    session.commit()
    return export(table.header, table.rows, fmt=fmt, filename=f"dashboard-{chart}-{local_today():%Y%m%d}",
                  sheet=_("Dashboard"))
