"""Bulk actions on every customer matching a filter: the confirmation page and the API.

The list's "批量操作" link carries the list's filters here; the page shows what the filter
means, lets the user choose the action, then the exact count and a confirm button that
queues the job (customers.bulk). Mounted before the customers routers so
``/customers/bulk`` is never read as a customer id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, QueryParams

from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_id
from siyu.customers import bulk, service
from siyu.customers import jobs as customers_jobs
from siyu.customers.filters import filter_from_params
from siyu.customers.models import Stage
from siyu.customers.pages import ListQuery
from siyu.customers.schemas import TagName
from siyu.team import service as team_service
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["customers"])
pages = APIRouter(include_in_schema=False)

AUTOMATIC = "auto"  # the stage choice that hands the stage back to the lifecycle rules
NOBODY = "none"  # the owner choice that takes the owner away


def _optional_int(raw: str, *, field_name: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if parse_id(raw) is None:
        raise Invalid("Not a valid number: {value}", field=field_name, value=raw[:20])
    return int(raw)


def _action_from(params: FormData | QueryParams) -> bulk.BulkAction | None:
    """The action chosen in the form, or None while the user has not chosen one."""
    raw = str(params.get("action") or "")
    if not raw:
        return None
    try:
        kind = bulk.BulkKind(raw)
    except ValueError as exc:
        raise Invalid("Unknown bulk action {action}", field="action", action=raw[:40]) from exc
    if kind in (bulk.BulkKind.add_tags, bulk.BulkKind.remove_tags):
        ids = [_optional_int(str(v), field_name="bulk_tag") for v in params.getlist("bulk_tag")]
        return bulk.BulkAction(kind=kind, tag_ids=tuple(sorted({i for i in ids if i is not None})))
    if kind is bulk.BulkKind.assign_owner:
        owner = str(params.get("owner_id") or "")
        if not owner:
            raise Invalid("Choose who will own these customers", field="owner_id")
        return bulk.BulkAction(kind=kind, owner_id=None if owner == NOBODY else
                               _optional_int(owner, field_name="owner_id"))
    stage = str(params.get("stage_to") or "")
    if not stage:
        raise Invalid("Choose the stage", field="stage_to")
    return bulk.BulkAction(kind=kind, stage=None if stage == AUTOMATIC else stage)


FILTER_LABELS = {"q": N_("Search"), "tag": N_("Tag"), "stage": N_("Stage"), "account_id": N_("Account"),
                 "source": N_("Source"), "last_touch_after": N_("Last touch on or after"),
                 "last_touch_before": N_("Last touch before"), "sort": N_("Sort")}


def _filter_summary(session: Session, query: ListQuery) -> list[tuple[str, str]]:
    """The list's filters in words: tag and account names, not their ids."""
    tags = {str(t.id): f"{g.name}:{t.name}" for g in service.list_tag_groups(session) for t in g.tags}
    accounts = service.account_names(session)
    shown = []
    for key, value in query.pairs():
        if key == "sort":
            continue
        if key == "tag":
            value = tags.get(value, value)
        elif key == "stage":
            value = _(f"stage.{value}")
        elif key == "account_id" and parse_id(value) is not None:
            value = accounts.get(int(value), value)
        shown.append((_(FILTER_LABELS.get(key, key)), value))
    return shown


def _page(request: Request, session: SessionDep, viewer: PageViewer, params: FormData | QueryParams, *,
          status_code: int = 200) -> Response:
    query = ListQuery.from_params(params)
    context: dict[str, Any] = {"query": query, "error": None, "preview": None, "action": None,
                               "back_url": query.url()}
    try:
        bulk.ensure_may_bulk(viewer)
        flt = query.to_filter()
        context["count"] = service.count_matching(session, flt=flt, viewer=viewer)
        action = _action_from(params)
        if action is not None:
            context["action"] = action
            context["preview"] = bulk.preview(session, flt=flt, action=action, viewer=viewer)
    except DomainError as exc:
        session.rollback()
        context["error"] = exc.message
        status_code = exc.status_code if exc.status_code >= 400 else 422
    context.update(
        title=_("Bulk actions"), nav_active="customers", chosen=params, filter_pairs=query.pairs(),
        filter_summary=_filter_summary(session, query),
        tag_groups=[g for g in service.list_tag_groups(session) if not g.is_computed],
        owners=[u for u in team_service.list_users(session) if u.is_active and u.role in bulk.OWNER_ROLES],
        stages=[s.value for s in Stage], automatic=AUTOMATIC, nobody=NOBODY,
        chosen_tags={str(v) for v in params.getlist("bulk_tag")})
    return render(request, "customers/bulk.html", status_code=status_code, **context)


@pages.get("/customers/bulk", response_class=HTMLResponse)
def bulk_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _page(request, session, viewer, request.query_params)


@pages.post("/customers/bulk", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def bulk_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    query = ListQuery.from_params(form)
    try:
        action = _action_from(form)
        if action is None:
            raise Invalid("Choose what to do with these customers", field="action")
        job_id, _count = customers_jobs.submit_bulk(session, flt=query.to_filter(), action=action, actor=viewer,
                                                    link=query.url())
    except DomainError:
        session.rollback()
        return _page(request, session, viewer, form, status_code=422)
    session.commit()
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


# ---------------------------------------------------------------- API


class BulkFilter(BaseModel):
    q: str = Field("", max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=50, description="Tag ids or names (组:标签)")
    stage: str | None = None
    account_id: Id | None = None
    source: str | None = Field(None, max_length=64)
    last_touch_before: datetime | None = None
    last_touch_after: datetime | None = None
    segment: Id | None = Field(None, description="A saved segment's id (its customers, compiled as the list does)")
    rfm: str | None = Field(None, max_length=32, description="An RFM segment")


class BulkRequest(BaseModel):
    filter: BulkFilter = Field(default_factory=BulkFilter)
    action: Literal["add_tags", "remove_tags", "assign_owner", "set_stage"]
    tags: list[TagName] = Field(default_factory=list, max_length=50, description="add_tags / remove_tags")
    owner_id: Id | None = Field(None, description="assign_owner; null takes the owner away")
    stage: str | None = Field(None, description="set_stage; null hands the stage back to the lifecycle rules")
    dry_run: bool = Field(False, description="Only count and describe; change nothing")


@api.post("/customers/bulk", responses={202: {"description": "Queued: job_id, job_url, count"},
                                        404: {"description": "The saved segment named by `segment` does not exist."}})
def api_bulk(session: SessionDep, viewer: ApiViewer, body: BulkRequest) -> Response:
    """Apply an action to every customer matching a filter, as a background job."""
    f = body.filter
    flt = filter_from_params(f.q, f.tags, f.stage, f.account_id, f.source, f.last_touch_before,
                             f.last_touch_after, segment=f.segment, rfm=f.rfm)
    tag_ids: tuple[int, ...] = ()
    if body.action in ("add_tags", "remove_tags"):
        tag_ids = tuple(t.id for t in service.resolve_tags(session, names=list(body.tags), create_missing=False))
    action = bulk.BulkAction(kind=bulk.BulkKind(body.action), tag_ids=tag_ids, owner_id=body.owner_id,
                             stage=body.stage)
    if body.dry_run:
        shown = bulk.preview(session, flt=flt, action=action, viewer=viewer)
        return JSONResponse({"count": shown.count, "description": shown.description, "sample": shown.sample,
                             "dry_run": True})
    job_id, count = customers_jobs.submit_bulk(session, flt=flt, action=action, actor=viewer)
    session.commit()
    return JSONResponse({"job_id": job_id, "job_url": f"/api/v1/jobs/{job_id}", "count": count}, status_code=202)
