"""Staff hand-over pages and API: choose the receiver, see the count, confirm, follow each customer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, QueryParams

from siyu.accounts import handover
from siyu.accounts import jobs as accounts_jobs
from siyu.accounts.models import Account
from siyu.core.deps import AdminApiViewer, AdminPageViewer, CsrfChecked, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import _
from siyu.core.ids import Id, parse_id
from siyu.core.viewer import Viewer
from siyu.team import service as team_service
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["accounts"])
pages = APIRouter(include_in_schema=False)


def _optional_id(params: FormData | QueryParams, key: str) -> int | None:
    raw = str(params.get(key) or "").strip()
    if not raw:
        return None
    if parse_id(raw) is None:
        raise Invalid("Not a valid number: {value}", field=key, value=raw[:20])
    return int(raw)


def _plan(session: Session, account_id: int, params: FormData | QueryParams, viewer: Viewer) -> handover.HandoverPlan:
    return handover.plan(session, from_account_id=account_id, viewer=viewer,
                         to_account_id=_optional_id(params, "to_account_id"),
                         to_owner_id=_optional_id(params, "to_owner_id"),
                         resigned=str(params.get("resigned") or "") in ("1", "on", "true"))


def _form_page(request: Request, session: Session, viewer: Viewer, account_id: int,
               params: FormData | QueryParams, *, status_code: int = 200, error: str | None = None) -> Response:
    source = session.get(Account, account_id)
    if source is None:
        raise handover.HandoverNotFound("Account {account_id} not found", account_id=account_id)
    shown: handover.HandoverPlan | None = None
    chosen = any(params.get(k) for k in ("to_account_id", "to_owner_id"))
    if chosen and error is None:
        try:
            shown = _plan(session, account_id, params, viewer)
        except DomainError as exc:
            session.rollback()
            error, status_code = exc.message, 422
    targets = [a for a in session.scalars(select(Account).order_by(Account.display_name))
               if a.id != source.id and a.kind == source.kind]
    owners = [u for u in team_service.list_users(session) if u.is_active and u.role in handover.OWNER_ROLES]
    return render(request, "accounts/handover.html", status_code=status_code, nav_active="accounts",
                  title=_("Hand over customers"), source=source, plan=shown, error=error, targets=targets,
                  owners=owners, params=params)


@pages.get("/accounts/{account_id}/handover", response_class=HTMLResponse)
def handover_form(request: Request, session: SessionDep, viewer: AdminPageViewer, account_id: Id) -> Response:
    return _form_page(request, session, viewer, account_id, request.query_params)


@pages.post("/accounts/{account_id}/handover", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def handover_start(request: Request, session: SessionDep, viewer: AdminPageViewer, account_id: Id,
                   form: FormDep) -> Response:
    try:
        planned = _plan(session, account_id, form, viewer)
        record = handover.start(session, handover_plan=planned, viewer=viewer,
                                message=str(form.get("message") or "").strip())
        job_id = accounts_jobs.submit(session, handover_id=record.id, actor=viewer, total=planned.customers,
                                      title=_("Hand over the customers of {account}",
                                              account=planned.source.display_name))
    except DomainError as exc:
        session.rollback()
        return _form_page(request, session, viewer, account_id, form, status_code=422, error=exc.message)
    session.commit()
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _detail(session: Session, handover_id: int) -> dict[str, Any]:
    record = handover.get(session, handover_id=handover_id)
    accounts = {a.id: a.display_name for a in session.scalars(select(Account))}
    owners = team_service.display_names(session, user_ids={record.to_owner_id} if record.to_owner_id else set())
    return {"handover": record, "counts": handover.counts(session, handover_id=record.id),
            "failures": handover.failures(session, handover_id=record.id), "accounts": accounts, "owners": owners}


@pages.get("/handovers/{handover_id}", response_class=HTMLResponse)
def handover_page(request: Request, session: SessionDep, viewer: AdminPageViewer, handover_id: Id) -> Response:
    return render(request, "accounts/handover_detail.html", nav_active="accounts", title=_("Hand-over"),
                  **_detail(session, handover_id))


@pages.post("/handovers/{handover_id}/retry", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def handover_retry(session: SessionDep, viewer: AdminPageViewer, handover_id: Id) -> Response:
    count = handover.retry_failed(session, handover_id=handover_id, viewer=viewer)
    if not count:
        return RedirectResponse(f"/handovers/{handover_id}", status_code=303)
    job_id = accounts_jobs.submit(session, handover_id=handover_id, actor=viewer, total=count,
                                  title=_("Hand-over {id}: try the failed customers again", id=handover_id))
    session.commit()
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


# ---------------------------------------------------------------- API


class HandoverIn(BaseModel):
    to_account_id: Id | None = Field(None, description="WeCom accounts: the member who takes over")
    to_owner_id: Id | None = Field(None, description="Personal accounts: the operator who takes over")
    resigned: bool = Field(False, description="WeCom: the member has left the corp (离职继承)")
    message: str = Field("", max_length=200, description="WeCom: what customers are told on takeover")
    dry_run: bool = Field(False, description="Only check and count")


@api.post("/accounts/{account_id}/handover", responses={
    200: {"description": "dry_run: the counts and warnings, nothing started"},
    202: {"description": "Started: handover_id, job_id, job_url"}})
def api_handover(session: SessionDep, viewer: AdminApiViewer, account_id: Id, body: HandoverIn) -> Response:
    """Hand an account's customers over (离职/在职继承) as a background job."""
    planned = handover.plan(session, from_account_id=account_id, viewer=viewer, to_account_id=body.to_account_id,
                            to_owner_id=body.to_owner_id, resigned=body.resigned)
    summary = {"mode": planned.mode.value, "customers": planned.customers,
               "without_wecom_id": planned.without_wecom_id, "target_free": planned.target_free}
    if body.dry_run:
        return JSONResponse({**summary, "dry_run": True})
    record = handover.start(session, handover_plan=planned, viewer=viewer, message=body.message)
    job_id = accounts_jobs.submit(session, handover_id=record.id, actor=viewer, total=planned.customers,
                                  title=_("Hand over the customers of {account}", account=planned.source.display_name))
    session.commit()
    return JSONResponse({**summary, "handover_id": record.id, "job_id": job_id,
                         "job_url": f"/api/v1/jobs/{job_id}"}, status_code=202)


@api.get("/handovers/{handover_id}")
def api_handover_status(session: SessionDep, viewer: AdminApiViewer, handover_id: Id) -> dict[str, Any]:
    shown = _detail(session, handover_id)
    record = shown["handover"]
    return {"id": record.id, "status": record.status, "mode": record.mode, "counts": shown["counts"],
            "failures": [{"customer_id": item.customer_id, "name": name, "errcode": item.errcode, "error": item.error}
                         for item, name in shown["failures"]]}
