"""用户维系: the API (tasks, cadence policies) and the console's 今日任务 and 维系节奏 pages.

The page and the API share the service; ``/today?view=sidebar`` is the same list at phone width for
the chat sidebar. An operator naming an account they do not serve gets 404, as for a customer.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from siyu.accounts import service as accounts_service
from siyu.core.deps import AdminApiViewer, AdminPageViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.pagination import decode_cursor, encode_cursor
from siyu.core.settings import local_today
from siyu.core.viewer import Viewer
from siyu.customers.models import Friendship
from siyu.maintenance import churn, pool, service
from siyu.maintenance.models import TASK_KIND_LABELS, Task, TaskKind
from siyu.maintenance.schemas import (
    ChurnOut,
    ChurnPage,
    ChurnReasonIn,
    ClaimOut,
    CompletionOut,
    FollowUpIn,
    FollowUpOut,
    PolicyCreated,
    PolicyIn,
    PolicyOut,
    PolicyUpdate,
    PoolCustomerOut,
    PoolPage,
    PoolSettingsIn,
    PoolSettingsOut,
    SkipIn,
    SnoozeIn,
    TaskActionOut,
    TaskDoneIn,
    TaskOut,
    TaskPage,
    TaskSettingsIn,
    TaskSettingsOut,
)
from siyu.segments.schemas import ConditionGroup, parse_tree
from siyu.web.forms import FormDep, FormRead
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


@api.patch("/cadence-policies/{policy_id}", response_model=PolicyCreated)
def update_policy(session: SessionDep, viewer: AdminApiViewer, policy_id: Id, data: PolicyUpdate) -> PolicyCreated:
    """Change a policy (only the fields given); its customers follow at once."""
    result = service.update_policy(session, policy_id=policy_id, data=data, viewer=viewer)
    session.commit()
    return PolicyCreated(**PolicyOut.model_validate(result.policy).model_dump(), message=result.message)


@api.delete("/cadence-policies/{policy_id}", status_code=204)
def delete_policy(session: SessionDep, viewer: AdminApiViewer, policy_id: Id) -> None:
    service.delete_policy(session, policy_id=policy_id, viewer=viewer)
    session.commit()


# ---------------------------------------------------------------- 公海 and churn (API)


def _pool_after(cursor: str | None) -> tuple[datetime, int] | None:
    if not cursor:
        return None
    try:
        at, last_id = decode_cursor(cursor)
        return datetime.fromisoformat(str(at)), int(last_id)
    except (ValueError, TypeError) as exc:
        raise Invalid("Invalid cursor", field="cursor") from exc


def _pool_page(session: Any, viewer: Viewer, *, account_id: int | None, limit: int,
               cursor: str | None) -> tuple[list[Any], str | None, dict[int, list[tuple[int, str]]]]:
    found = pool.list_pool(session, viewer=viewer, account_id=account_id, limit=limit + 1, after=_pool_after(cursor))
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor([last.pool_since.isoformat() if last.pool_since else "", last.id])
    found = found[:limit]
    routes = churn.win_back_routes(session, customer_ids=[c.id for c in found])
    if not viewer.sees_all_accounts:
        routes = {cid: [r for r in rs if viewer.can_see_account(r[0])] for cid, rs in routes.items()}
    return found, next_cursor, routes


@api.get("/pool", response_model=PoolPage, responses={
    404: {"description": "account_id names an account that does not exist (or is not yours)"}})
def list_pool(session: SessionDep, viewer: ApiViewer, account_id: Annotated[int | None, Query(ge=1)] = None,
              limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE, cursor: str | None = None) -> PoolPage:
    """公海: customers without an owner on the viewer's accounts, longest waiting first."""
    found, next_cursor, routes = _pool_page(session, viewer, account_id=account_id, limit=limit, cursor=cursor)
    settings = service.get_settings_row(session)
    return PoolPage(items=[PoolCustomerOut(customer_id=c.id, name=c.name, pool_since=c.pool_since,
                                           last_touch_at=c.last_touch_at,
                                           account_ids=[a for a, _n in routes.get(c.id, [])]) for c in found],
                    next_cursor=next_cursor,
                    claimed_today=pool.claims_today(session, user_id=viewer.user_id) if viewer.user_id else 0,
                    claim_limit=settings.pool_claim_limit)


@api.post("/pool/{customer_id}/claim", response_model=ClaimOut)
def claim_from_pool(session: SessionDep, viewer: ApiViewer, customer_id: Id) -> ClaimOut:
    """Claim a pool customer: 404 outside the viewer's accounts, 409 when someone was first, 422 past the limit."""
    customer = pool.claim(session, customer_id=customer_id, viewer=viewer)
    session.commit()
    assert customer.owner_id is not None and customer.claimed_at is not None
    return ClaimOut(customer_id=customer.id, owner_id=customer.owner_id, claimed_at=customer.claimed_at,
                    claimed_today=pool.claims_today(session, user_id=customer.owner_id),
                    claim_limit=service.get_settings_row(session).pool_claim_limit)


@api.get("/pool/settings", response_model=PoolSettingsOut)
def get_pool_settings(session: SessionDep, viewer: ApiViewer) -> PoolSettingsOut:
    return PoolSettingsOut.model_validate(service.get_settings_row(session))


@api.put("/pool/settings", response_model=PoolSettingsOut)
def put_pool_settings(session: SessionDep, viewer: AdminApiViewer, data: PoolSettingsIn) -> PoolSettingsOut:
    """The pool policy: untouched days before a customer enters (0: never), claims a day, hold days."""
    row = service.get_settings_row(session)
    before = PoolSettingsOut.model_validate(row).model_dump()
    row.pool_untouched_days, row.pool_claim_limit, row.pool_hold_days = (
        data.pool_untouched_days, data.pool_claim_limit, data.pool_hold_days)
    from siyu.team.service import record_audit

    record_audit(session, actor=viewer, action="update", entity_type="pool_settings", before=before,
                 after=data.model_dump())
    session.commit()
    return PoolSettingsOut.model_validate(row)


def _churn_after(cursor: str | None) -> tuple[datetime, int] | None:
    return _pool_after(cursor)


def _churn_page(session: Any, viewer: Viewer, *, account_id: int | None, since: date | None, until: date | None,
                side: str, limit: int, cursor: str | None) -> tuple[list[churn.ChurnRow], str | None]:
    rows = churn.list_churn(session, viewer=viewer, account_id=account_id, since=since, until=until, side=side,
                            limit=limit + 1, after=_churn_after(cursor))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1].friendship
        next_cursor = encode_cursor([last.removed_at.isoformat() if last.removed_at else "", last.id])
    return rows[:limit], next_cursor


@api.get("/churn", response_model=ChurnPage, responses={
    404: {"description": "account_id names an account that does not exist (or is not yours)"}})
def list_churn(session: SessionDep, viewer: ApiViewer, account_id: Annotated[int | None, Query(ge=1)] = None,
               since: date | None = None, until: date | None = None, side: str = "",
               limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE, cursor: str | None = None) -> ChurnPage:
    """Ended friendships, newest first; ``side``: customer (they deleted us) or member (we removed them)."""
    rows, next_cursor = _churn_page(session, viewer, account_id=account_id, since=since, until=until, side=side,
                                    limit=limit, cursor=cursor)
    routes = churn.win_back_routes(session, customer_ids=[r.customer.id for r in rows])
    return ChurnPage(items=[ChurnOut(customer_id=r.customer.id, account_id=r.friendship.account_id,
                                     name=r.customer.name, removed_at=r.friendship.removed_at,
                                     ended_by=r.friendship.ended_by, churn_reason=r.friendship.churn_reason,
                                     churn_note=r.friendship.churn_note,
                                     other_accounts=[a for a, _n in routes.get(r.customer.id, [])
                                                     if viewer.can_see_account(a)])
                            for r in rows if r.friendship.removed_at is not None],
                     next_cursor=next_cursor)


@api.put("/customers/{customer_id}/churn/{account_id}", response_model=ChurnOut)
def put_churn_reason(session: SessionDep, viewer: ApiViewer, customer_id: Id, account_id: Id,
                     data: ChurnReasonIn) -> ChurnOut:
    """The churn review: why the customer left this account (``reason`` one of the list, ``note`` free text)."""
    friendship = churn.set_reason(session, customer_id=customer_id, account_id=account_id, reason=data.reason,
                                  note=data.note, viewer=viewer)
    session.commit()
    routes = churn.win_back_routes(session, customer_ids=[customer_id])
    assert friendship.removed_at is not None
    return ChurnOut(customer_id=customer_id, account_id=account_id, name=friendship.customer.name,
                    removed_at=friendship.removed_at, ended_by=friendship.ended_by,
                    churn_reason=friendship.churn_reason, churn_note=friendship.churn_note,
                    other_accounts=[a for a, _n in routes.get(customer_id, []) if viewer.can_see_account(a)])


# ---------------------------------------------------------------- console


def _today_context(session: Any, viewer: Viewer, account_id: int | None) -> dict[str, Any]:
    tasks = service.list_today(session, viewer=viewer, account_id=account_id, limit=PAGE_SIZE)
    names = service.task_customers(session, tasks)
    # Churn reviews: the customer's other active friendships (a win-back route) and the stored reason.
    lost = [t for t in tasks if t.kind == TaskKind.deleted.value]
    routes = churn.win_back_routes(session, customer_ids=[t.customer_id for t in lost if t.customer_id is not None])
    lost_keys = {(t.customer_id, t.account_id) for t in lost}
    reasons = {(f.customer_id, f.account_id): f for f in session.scalars(
        select(Friendship).where(Friendship.customer_id.in_(sorted({c for c, _a in lost_keys}))))
        if (f.customer_id, f.account_id) in lost_keys} if lost else {}
    items = [{"task": t, "name": names.get(t.id, ("", ""))[0], "remark": names.get(t.id, ("", ""))[1],
              "label": _(TASK_KIND_LABELS[TaskKind(t.kind)]),
              "routes": [r for r in routes.get(t.customer_id or 0, []) if r[0] != t.account_id],
              "ended": reasons.get((t.customer_id, t.account_id))} for t in tasks]
    accounts = accounts_service.list_accounts(session, viewer=viewer)
    from siyu.groups import posts as group_posts  # the groups' work: group tasks, posts missed or unconfirmed

    return {"items": items, "accounts": accounts, "account_id": account_id, "today": local_today(),
            "group_items": group_posts.today_items(session, viewer=viewer, account_id=account_id),
            "reasons": {k: _(v) for k, v in churn.REASONS.items()}}


@pages.get("/today", response_class=HTMLResponse)
def today_page(request: Request, session: SessionDep, viewer: PageViewer, view: str = "",
               account: Annotated[int | None, Query(ge=1)] = None) -> Response:
    context = _today_context(session, viewer, account)
    template = "maintenance/today_sidebar.html" if view == "sidebar" else "maintenance/today.html"
    if view != "sidebar":
        context["completion"] = _completion_rows(session, viewer)
    return render(request, template, nav_active="maintenance", title=_("Today's tasks"), **context)


COMPLETION_DAYS = 7


def _completion_rows(session: Any, viewer: Viewer) -> list[dict[str, Any]]:
    """The last week's tasks per operator the viewer may see (their own, or everyone's for a lead)."""
    from siyu.team import service as team_service

    until = local_today()
    rows = service.completion_rates(session, since=until - timedelta(days=COMPLETION_DAYS - 1), until=until,
                                    viewer=viewer)
    names = team_service.display_names(session, user_ids=[r.operator_id for r in rows])
    return [{"name": names.get(r.operator_id or 0, _("Nobody (account without an operator)")), "row": r,
             "percent": round(r.rate * 100)} for r in rows]


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


def _policy_form(form: Any) -> tuple[str, ConditionGroup | None, int, int]:
    import json

    raw = str(form.get("conditions", "") or "").strip()
    conditions = parse_tree(json.loads(raw)) if raw else None
    return (str(form.get("name", "") or ""), conditions, int(str(form.get("every_days", "0") or "0")),
            int(str(form.get("quiet_days", "0") or "0")))


def _policies_page(request: Request, session: Any, *, message: str = "", error: str = "",
                   status_code: int = 200) -> Response:
    return render(request, "maintenance/policies.html", nav_active="maintenance", title=_("Touch cadence"),
                  policies=service.list_policies(session), message=message, error=error, status_code=status_code)


def _policy_error(exc: Exception) -> str:
    return exc.message if isinstance(exc, DomainError) else _("Check the name, the days and the condition")


@pages.post("/maintenance/policies", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def policies_create(request: Request, session: SessionDep, viewer: AdminPageViewer, form: FormDep) -> Response:
    try:
        name, conditions, every_days, quiet_days = _policy_form(form)
        data = PolicyIn(name=name, conditions=conditions, every_days=every_days, quiet_days=quiet_days)
        result = service.create_policy(session, data=data, viewer=viewer)
    except (ValidationError, ValueError, DomainError) as exc:
        session.rollback()
        return _policies_page(request, session, error=_policy_error(exc), status_code=422)
    session.commit()
    return _policies_page(request, session, message=result.message or _(
        "{n} customer × account pairs are on this cadence", n=result.matched))


@pages.post("/maintenance/policies/{policy_id}", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def policies_update(request: Request, session: SessionDep, viewer: AdminPageViewer, policy_id: Id,
                    form: FormDep) -> Response:
    """The row's edit form (name, days, condition) or its switch (``active`` only)."""
    try:
        if "active" in form and "name" not in form:
            data = PolicyUpdate(active=str(form.get("active")) == "1")
        else:
            name, conditions, every_days, quiet_days = _policy_form(form)
            data = PolicyUpdate(name=name, conditions=conditions, every_days=every_days, quiet_days=quiet_days)
        result = service.update_policy(session, policy_id=policy_id, data=data, viewer=viewer)
    except (ValidationError, ValueError, DomainError) as exc:
        session.rollback()
        if isinstance(exc, NotFound):
            raise
        return _policies_page(request, session, error=_policy_error(exc), status_code=422)
    session.commit()
    if not result.policy.active:
        message = _("Policy “{name}” is off: its customers are off the cadence", name=result.policy.name)
    else:
        message = result.message or _("Policy “{name}” saved: {n} customer × account pairs are on it",
                                      name=result.policy.name, n=result.matched)
    return _policies_page(request, session, message=message)


@pages.post("/maintenance/policies/{policy_id}/delete", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def policies_delete(request: Request, session: SessionDep, viewer: AdminPageViewer, policy_id: Id) -> Response:
    policy = service.get_policy(session, policy_id=policy_id)
    name = policy.name
    service.delete_policy(session, policy_id=policy_id, viewer=viewer)
    session.commit()
    return _policies_page(request, session, message=_("Policy “{name}” deleted", name=name))


@pages.post("/customers/{customer_id}/follow-ups", dependencies=[FormRead, CsrfChecked])
def customer_follow_up(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                       form: FormDep) -> Response:
    """The customer page's "N 天后回访" form: back to the timeline with a notice (or what was wrong)."""
    view = "sidebar" if str(form.get("view", "")) == "sidebar" else ""
    try:
        data = FollowUpIn(account_id=int(str(form.get("account_id", "") or "0")),
                          days=int(str(form.get("days", "") or "0")), note=str(form.get("note", "") or "")[:255])
    except (ValidationError, ValueError):
        done = "follow-up-invalid"
    else:
        service.schedule_follow_up(session, customer_id=customer_id, account_id=data.account_id, days=data.days,
                                   note=data.note, viewer=viewer)
        session.commit()
        done = "follow-up"
    query = f"done={done}" + ("&view=sidebar" if view else "")
    return RedirectResponse(f"/customers/{customer_id}?{query}#timeline", status_code=303)


@pages.post("/today/{task_id}/churn-reason", dependencies=[FormRead, CsrfChecked])
def today_churn_reason(request: Request, session: SessionDep, viewer: PageViewer, task_id: Id,
                       form: FormDep) -> Response:
    """The churn review from the task: the reason is stored on the ended friendship, the task is done."""
    task = service.get_task(session, task_id=task_id, viewer=viewer)
    if task.kind != TaskKind.deleted.value or task.customer_id is None:
        raise Invalid("Only a lost friend's task takes a reason", field="reason")
    reason, note = str(form.get("reason", "") or ""), str(form.get("note", "") or "")
    churn.set_reason(session, customer_id=task.customer_id, account_id=task.account_id, reason=reason, note=note,
                     viewer=viewer)
    label = _(churn.REASONS[reason])
    service.complete_task(session, task_id=task.id, viewer=viewer,
                          data=TaskDoneIn(note=f"{_('Reason for leaving')}：{label}" + (f"（{note.strip()}）"
                                                                                       if note.strip() else "")))
    session.commit()
    return RedirectResponse(_back(form), status_code=303)


# ---------------------------------------------------------------- 公海 and churn (console)


def _pool_context(session: Any, viewer: Viewer, account_id: int | None, cursor: str | None) -> dict[str, Any]:
    found, next_cursor, routes = _pool_page(session, viewer, account_id=account_id, limit=PAGE_SIZE, cursor=cursor)
    settings = service.get_settings_row(session)
    return {"customers": found, "routes": routes, "next_cursor": next_cursor, "account_id": account_id,
            "accounts": accounts_service.visible_accounts(session, viewer=viewer), "settings": settings,
            "claimed_today": pool.claims_today(session, user_id=viewer.user_id) if viewer.user_id else 0}


@pages.get("/pool", response_class=HTMLResponse)
def pool_page(request: Request, session: SessionDep, viewer: PageViewer,
              account: Annotated[int | None, Query(ge=1)] = None, cursor: str | None = None) -> Response:
    return render(request, "maintenance/pool.html", nav_active="pool", title=_("Public pool"),
                  notice=request.query_params.get("claimed", ""),
                  **_pool_context(session, viewer, account, cursor or None))


@pages.post("/pool/{customer_id}/claim", dependencies=[FormRead, CsrfChecked])
def pool_claim_page(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                    form: FormDep) -> Response:
    customer = pool.claim(session, customer_id=customer_id, viewer=viewer)
    session.commit()
    account = str(form.get("account", "") or "")
    return RedirectResponse(f"/pool?claimed={customer.id}" + (f"&account={int(account)}" if account.isdigit()
                                                               else ""), status_code=303)


@pages.get("/customers/churn", response_class=HTMLResponse)
def churn_page(request: Request, session: SessionDep, viewer: PageViewer,
               account: Annotated[int | None, Query(ge=1)] = None, since: str = "", until: str = "",
               side: str = "", cursor: str | None = None) -> Response:
    """流失好友: who left which account when, who ended it, the review; filters and a cursor."""
    try:
        since_day = date.fromisoformat(since) if since else None
        until_day = date.fromisoformat(until) if until else None
    except ValueError as exc:
        raise Invalid("Dates are written like 2026-12-05", field="since") from exc
    rows, next_cursor = _churn_page(session, viewer, account_id=account, since=since_day, until=until_day, side=side,
                                    limit=PAGE_SIZE, cursor=cursor or None)
    routes = churn.win_back_routes(session, customer_ids=[r.customer.id for r in rows])
    from urllib.parse import urlencode

    filters = {k: v for k, v in (("account", account or ""), ("since", since), ("until", until), ("side", side)) if v}
    next_url = f"/customers/churn?{urlencode({**filters, 'cursor': next_cursor})}" if next_cursor else ""
    visible = accounts_service.visible_accounts(session, viewer=viewer)
    return render(request, "maintenance/churn.html", nav_active="maintenance", title=_("Lost friends"),
                  rows=rows, routes=routes, next_url=next_url, account_id=account, since=since, until=until,
                  side=side, accounts=visible, account_names={a.id: a.display_name for a in visible},
                  sides={k: _(v) for k, v in churn.SIDES.items()},
                  reasons={k: _(v) for k, v in churn.REASONS.items()})
