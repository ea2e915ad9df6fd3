"""用户维系: the API (tasks, cadence policies) and the console's 今日任务 and 维系节奏 pages.

The page and the API share the service; ``/today?view=sidebar`` is the same list at phone width for
the chat sidebar. An operator naming an account they do not serve gets 404, as for a customer.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from siyu.accounts import service as accounts_service
from siyu.core.deps import AdminApiViewer, AdminPageViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.pagination import decode_cursor, encode_cursor
from siyu.core.settings import local_today
from siyu.core.viewer import Viewer
from siyu.customers.pages import FormDep, FormRead
from siyu.maintenance import service
from siyu.maintenance.models import TASK_KIND_LABELS, Task, TaskKind
from siyu.maintenance.schemas import (
    CompletionOut,
    FollowUpIn,
    FollowUpOut,
    PolicyCreated,
    PolicyIn,
    PolicyOut,
    SkipIn,
    SnoozeIn,
    TaskActionOut,
    TaskDoneIn,
    TaskOut,
    TaskPage,
    TaskSettingsIn,
    TaskSettingsOut,
)
from siyu.segments.schemas import parse_tree
from siyu.web.render import render

api = APIRouter(tags=["tasks"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
PAGE_SIZE = 50


def _task_out(task: Task, names: dict[int, tuple[str, str]]) -> TaskOut:
    name, remark = names.get(task.id, ("", ""))
    return TaskOut(id=task.id, kind=task.kind, customer_id=task.customer_id, account_id=task.account_id,
                   due_at=task.day, status=task.status, title=service.task_title(task, remark or name),
                   priority=task.priority, overdue_days=task.overdue_days, detail=task.detail)


def _action_out(task: Task) -> TaskActionOut:
    return TaskActionOut(id=task.id, status=task.status, touch_id=task.touch_id, finished_at=task.finished_at)


def _after(cursor: str | None) -> tuple[int, int] | None:
    if not cursor:
        return None
    try:
        priority, last_id = decode_cursor(cursor)
        return int(priority), int(last_id)
    except (ValueError, TypeError) as exc:
        raise Invalid("Invalid cursor", field="cursor") from exc


# ---------------------------------------------------------------- API


@api.get("/tasks", response_model=TaskPage)
def list_tasks(session: SessionDep, viewer: ApiViewer, due: str = "today",
               account_id: Annotated[int | None, Query(ge=1)] = None,
               limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE, cursor: str | None = None) -> TaskPage:
    """The viewer's open tasks due today, most important first (``due=today`` is the one list there is)."""
    if due != "today":
        raise Invalid("Only due=today is supported", field="due")
    tasks = service.list_today(session, viewer=viewer, account_id=account_id, limit=limit + 1, after=_after(cursor))
    next_cursor = encode_cursor([tasks[limit - 1].priority, tasks[limit - 1].id]) if len(tasks) > limit else None
    tasks = tasks[:limit]
    names = service.task_customers(session, tasks)
    return TaskPage(items=[_task_out(t, names) for t in tasks], next_cursor=next_cursor)


@api.post("/tasks/{task_id}/done", response_model=TaskActionOut)
def task_done(session: SessionDep, viewer: ApiViewer, task_id: Id, data: TaskDoneIn | None = None) -> TaskActionOut:
    task = service.complete_task(session, task_id=task_id, data=data or TaskDoneIn(), viewer=viewer)
    session.commit()
    return _action_out(task)


@api.post("/tasks/{task_id}/snooze", response_model=TaskActionOut)
def task_snooze(session: SessionDep, viewer: ApiViewer, task_id: Id, data: SnoozeIn) -> TaskActionOut:
    task = service.snooze_task(session, task_id=task_id, days=data.days, viewer=viewer)
    session.commit()
    return _action_out(task)


@api.post("/tasks/{task_id}/skip", response_model=TaskActionOut)
def task_skip(session: SessionDep, viewer: ApiViewer, task_id: Id, data: SkipIn) -> TaskActionOut:
    task = service.skip_task(session, task_id=task_id, reason=data.reason, viewer=viewer)
    session.commit()
    return _action_out(task)


@api.get("/tasks/completion", response_model=list[CompletionOut])
def task_completion(session: SessionDep, viewer: ApiViewer, since: date | None = None,
                    until: date | None = None) -> list[CompletionOut]:
    """Completion per operator over these days (default: the last 7): for the analytics work."""
    until = until or local_today()
    since = since or until - timedelta(days=6)
    return [CompletionOut(operator_id=c.operator_id, total=c.total, done=c.done, skipped=c.skipped,
                          closed=c.closed, rate=c.rate)
            for c in service.completion_rates(session, since=since, until=until, viewer=viewer)]


@api.post("/customers/{customer_id}/follow-ups", response_model=FollowUpOut, status_code=201)
def create_follow_up(session: SessionDep, viewer: ApiViewer, customer_id: Id, data: FollowUpIn) -> FollowUpOut:
    """"N 天后回访": a follow-up task for this customer on that account appears on that day's list."""
    follow = service.schedule_follow_up(session, customer_id=customer_id, account_id=data.account_id, days=data.days,
                                        note=data.note, viewer=viewer)
    session.commit()
    return FollowUpOut.model_validate(follow)


@api.get("/tasks/settings", response_model=TaskSettingsOut)
def get_task_settings(session: SessionDep, viewer: ApiViewer) -> TaskSettingsOut:
    return TaskSettingsOut.model_validate(service.get_settings_row(session))


@api.put("/tasks/settings", response_model=TaskSettingsOut)
def put_task_settings(session: SessionDep, viewer: AdminApiViewer, data: TaskSettingsIn) -> TaskSettingsOut:
    """When the daily list is made (local time) and how many tasks each operator gets at most."""
    row = service.get_settings_row(session)
    row.generate_hour, row.generate_minute, row.cap_per_operator = (data.generate_hour, data.generate_minute,
                                                                    data.cap_per_operator)
    session.commit()
    return TaskSettingsOut.model_validate(row)


@api.get("/cadence-policies", response_model=list[PolicyOut])
def list_policies(session: SessionDep, viewer: ApiViewer) -> list[PolicyOut]:
    return [PolicyOut.model_validate(p) for p in service.list_policies(session)]


@api.post("/cadence-policies", response_model=PolicyCreated, status_code=201)
def create_policy(session: SessionDep, viewer: AdminApiViewer, data: PolicyIn) -> PolicyCreated:
    """Create a policy and put the customers it matches on its cadence (``matched``; ``message`` when none)."""
    result = service.create_policy(session, data=data, viewer=viewer)
    session.commit()
    return PolicyCreated(**PolicyOut.model_validate(result.policy).model_dump(), message=result.message)


@api.delete("/cadence-policies/{policy_id}", status_code=204)
def delete_policy(session: SessionDep, viewer: AdminApiViewer, policy_id: Id) -> None:
    service.delete_policy(session, policy_id=policy_id, viewer=viewer)
    session.commit()


# ---------------------------------------------------------------- console


def _today_context(session: Any, viewer: Viewer, account_id: int | None) -> dict[str, Any]:
    tasks = service.list_today(session, viewer=viewer, account_id=account_id, limit=PAGE_SIZE)
    names = service.task_customers(session, tasks)
    items = [{"task": t, "name": names.get(t.id, ("", ""))[0], "remark": names.get(t.id, ("", ""))[1],
              "label": _(TASK_KIND_LABELS[TaskKind(t.kind)])} for t in tasks]
    accounts = accounts_service.list_accounts(session, viewer=viewer)
    return {"items": items, "accounts": accounts, "account_id": account_id, "today": local_today()}


@pages.get("/today", response_class=HTMLResponse)
def today_page(request: Request, session: SessionDep, viewer: PageViewer, view: str = "",
               account: Annotated[int | None, Query(ge=1)] = None) -> Response:
    context = _today_context(session, viewer, account)
    template = "maintenance/today_sidebar.html" if view == "sidebar" else "maintenance/today.html"
    return render(request, template, nav_active="maintenance", title=_("Today's tasks"), **context)


def _back(form: Any) -> str:
    view = "sidebar" if str(form.get("view", "")) == "sidebar" else ""
    account = str(form.get("account", "") or "")
    query = "&".join(part for part in (f"view={view}" if view else "",
                                        f"account={int(account)}" if account.isdigit() else "") if part)
    return "/today" + (f"?{query}" if query else "")


@pages.post("/today/{task_id}/done", dependencies=[FormRead, CsrfChecked])
def today_done(request: Request, session: SessionDep, viewer: PageViewer, task_id: Id, form: FormDep) -> Response:
    days_text = str(form.get("follow_up_days", "") or "").strip()
    try:
        data = TaskDoneIn(note=str(form.get("note", "") or ""),
                          follow_up_days=int(days_text) if days_text.isdigit() else None)
    except ValidationError as exc:
        raise Invalid("Follow-up days must be between 1 and 365", field="follow_up_days") from exc
    service.complete_task(session, task_id=task_id, data=data, viewer=viewer)
    session.commit()
    return RedirectResponse(_back(form), status_code=303)


@pages.post("/today/{task_id}/snooze", dependencies=[FormRead, CsrfChecked])
def today_snooze(request: Request, session: SessionDep, viewer: PageViewer, task_id: Id, form: FormDep) -> Response:
    days_text = str(form.get("days", "1") or "1")
    days = int(days_text) if days_text.isdigit() else 0
    if not 1 <= days <= 30:
        raise Invalid("Snooze between 1 and 30 days", field="days")
    service.snooze_task(session, task_id=task_id, days=days, viewer=viewer)
    session.commit()
    return RedirectResponse(_back(form), status_code=303)


@pages.post("/today/{task_id}/skip", dependencies=[FormRead, CsrfChecked])
def today_skip(request: Request, session: SessionDep, viewer: PageViewer, task_id: Id, form: FormDep) -> Response:
    service.skip_task(session, task_id=task_id, reason=str(form.get("reason", "") or ""), viewer=viewer)
    session.commit()
    return RedirectResponse(_back(form), status_code=303)


@pages.get("/maintenance/policies", response_class=HTMLResponse)
def policies_page(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    return render(request, "maintenance/policies.html", nav_active="maintenance", title=_("Touch cadence"),
                  policies=service.list_policies(session), message=request.query_params.get("message", ""),
                  error="")


@pages.post("/maintenance/policies", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def policies_create(request: Request, session: SessionDep, viewer: AdminPageViewer, form: FormDep) -> Response:
    import json

    raw = str(form.get("conditions", "") or "").strip()
    try:
        data = PolicyIn(name=str(form.get("name", "") or ""),
                        conditions=parse_tree(json.loads(raw)) if raw else None,
                        every_days=int(str(form.get("every_days", "0") or "0")),
                        quiet_days=int(str(form.get("quiet_days", "0") or "0")))
        result = service.create_policy(session, data=data, viewer=viewer)
    except (ValidationError, ValueError, DomainError) as exc:
        session.rollback()
        error = exc.message if isinstance(exc, DomainError) else _("Check the name, the days and the condition")
        return render(request, "maintenance/policies.html", nav_active="maintenance", title=_("Touch cadence"),
                      policies=service.list_policies(session), message="", error=error, status_code=422)
    session.commit()
    message = result.message or _("{n} customer × account pairs are on this cadence", n=result.matched)
    return render(request, "maintenance/policies.html", nav_active="maintenance", title=_("Touch cadence"),
                  policies=service.list_policies(session), message=message, error="")
