"""优惠券: the API (``/api/v1/coupons``) and the console's ``/coupons`` pages. Thin: parse, call the service, render."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_count, parse_id
from siyu.core.viewer import Viewer
from siyu.coupons import service
from siyu.coupons.models import KIND_LABELS, CouponBatchCode
from siyu.coupons.schemas import BatchIn, BatchOut, CodesIn, IssueIn, IssueOut, as_out
from siyu.customers.models import Customer
from siyu.segments import service as segments_service
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render

api = APIRouter(tags=["coupons"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
LABELS = {"name": N_("Batch name"), "kind": N_("Kind"), "amount": N_("Amount off"), "discount": N_("Discount"),
          "min_spend": N_("Minimum spend"), "valid_from": N_("First valid day"), "valid_until": N_("Last valid day"),
          "remind_days": N_("Remind days before expiry"), "generate": N_("Codes to generate"),
          "codes": N_("Coupon codes"), "segment_id": N_("Segment"), "customer_ids": N_("Customers")}


def _out(session: Session, batch: Any) -> BatchOut:
    return as_out(batch, service.figures(session, [batch.id])[batch.id])


def _issue_out(result: service.IssueResult) -> IssueOut:
    return IssueOut(issued=result.issued, already=result.already, short=len(result.short),
                    codes={str(k): v for k, v in list(result.codes.items())[:1000]})


# ---------------------------------------------------------------- API


@api.get("/coupons", response_model=dict[str, list[BatchOut]])
def api_list(session: SessionDep, viewer: ApiViewer) -> dict[str, list[BatchOut]]:
    batches = service.list_batches(session)
    figures = service.figures(session, [b.id for b in batches])
    return {"items": [as_out(b, figures[b.id]) for b in batches]}


@api.post("/coupons", response_model=BatchOut, status_code=201)
def api_create(session: SessionDep, viewer: ApiViewer, data: BatchIn) -> BatchOut:
    """A coupon batch: what a code is worth, when it is valid, and its pool (codes given, or generated)."""
    batch = service.create_batch(session, data=data, viewer=viewer)
    session.commit()
    return _out(session, batch)


@api.get("/coupons/{batch_id}", response_model=BatchOut)
def api_get(session: SessionDep, viewer: ApiViewer, batch_id: Id) -> BatchOut:
    return _out(session, service.get_batch(session, batch_id=batch_id))


@api.post("/coupons/{batch_id}/codes", response_model=BatchOut)
def api_codes(session: SessionDep, viewer: ApiViewer, batch_id: Id, data: CodesIn) -> BatchOut:
    service.add_codes(session, batch_id=batch_id, codes=data.codes, generate=data.generate, viewer=viewer)
    session.commit()
    return _out(session, service.get_batch(session, batch_id=batch_id))


@api.post("/coupons/{batch_id}/issue", response_model=IssueOut)
def api_issue(session: SessionDep, viewer: ApiViewer, batch_id: Id, data: IssueIn) -> IssueOut:
    """One code per customer (the one they hold already, else a free one) to the customers or the segment."""
    if (data.segment_id is None) == (not data.customer_ids):
        raise Invalid("Name either the customers or a segment", field="segment_id")
    if data.segment_id is not None:
        result = service.issue_to_segment(session, batch_id=batch_id, segment_id=data.segment_id, viewer=viewer)
    else:
        service.require_manager(viewer)
        result = service.issue(session, batch_id, data.customer_ids, via="manual", viewer=viewer)
    session.commit()
    return _issue_out(result)


# ---------------------------------------------------------------- console


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _decimal(form: FormData, key: str) -> Decimal:
    try:
        return Decimal(_text(form, key) or "0")
    except InvalidOperation as exc:
        raise Invalid("Must be a number", field=key) from exc


def _whole(form: FormData, key: str, default: int) -> int:
    text = _text(form, key)
    if not text:
        return default
    value = parse_count(text, default=-1)
    if value < 0:
        raise Invalid("Must be a number", field=key)
    return value


def _day(form: FormData, key: str) -> date:
    try:
        return date.fromisoformat(_text(form, key))
    except ValueError as exc:
        raise Invalid("Dates are written like 2026-12-05", field=key) from exc


def _list(request: Request, session: Session, *, errors: dict[str, str], values: dict[str, Any],
          status_code: int = 200) -> Response:
    batches = service.list_batches(session)
    return render(request, "coupons/list.html", status_code=status_code, nav_active="coupons", title=_("Coupons"),
                  batches=batches, figures=service.figures(session, [b.id for b in batches]), errors=errors,
                  values=values, worth={b.id: service.worth(b) for b in batches},
                  kind_labels={k.value: _(v) for k, v in KIND_LABELS.items()})


@pages.get("/coupons", response_class=HTMLResponse)
def list_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _list(request, session, errors={}, values={})


@pages.post("/coupons", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def create_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}
    try:
        data = BatchIn(name=_text(form, "name"), kind=_text(form, "kind") or "amount",
                       amount=_decimal(form, "amount"), discount=_decimal(form, "discount"),
                       min_spend=_decimal(form, "min_spend"), valid_from=_day(form, "valid_from"),
                       valid_until=_day(form, "valid_until"), remind_days=_whole(form, "remind_days", 3),
                       generate=_whole(form, "generate", 0), codes=_text(form, "codes").splitlines())
        batch = service.create_batch(session, data=data, viewer=viewer)
    except (ValidationError, DomainError) as exc:
        session.rollback()
        if isinstance(exc, DomainError) and exc.status_code == 403:
            raise
        return _list(request, session, errors=field_errors(exc, labels=LABELS), values=values, status_code=422)
    session.commit()
    return RedirectResponse(f"/coupons/{batch.id}", status_code=303)


def _detail(request: Request, session: Session, viewer: Viewer, batch_id: int, *, errors: dict[str, str] | None = None,
            notice: str = "", status_code: int = 200) -> Response:
    batch = service.get_batch(session, batch_id=batch_id)
    codes = list(session.scalars(select(CouponBatchCode).where(CouponBatchCode.batch_id == batch.id,
                                                               CouponBatchCode.customer_id.is_not(None))
                                 .order_by(CouponBatchCode.claimed_at.desc()).limit(200)))
    ids = [c.customer_id for c in codes if c.customer_id]
    names = dict(session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids))).all())
    return render(request, "coupons/detail.html", status_code=status_code, nav_active="coupons", title=batch.name,
                  batch=batch, figures=service.figures(session, [batch.id])[batch.id], codes=codes, names=names,
                  worth=service.worth(batch), segments=segments_service.list_segments(session, viewer=viewer),
                  errors=errors or {}, notice=notice)


@pages.get("/coupons/{batch_id}", response_class=HTMLResponse)
def detail_page(request: Request, session: SessionDep, viewer: PageViewer, batch_id: Id) -> Response:
    return _detail(request, session, viewer, batch_id)


@pages.post("/coupons/{batch_id}/codes", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def codes_submit(request: Request, session: SessionDep, viewer: PageViewer, batch_id: Id, form: FormDep) -> Response:
    try:
        service.add_codes(session, batch_id=batch_id, codes=_text(form, "codes").splitlines(),
                          generate=_whole(form, "generate", 0), viewer=viewer)
    except DomainError as exc:
        session.rollback()
        if exc.status_code in (403, 404):
            raise
        return _detail(request, session, viewer, batch_id, errors=field_errors(exc, labels=LABELS), status_code=422)
    session.commit()
    return RedirectResponse(f"/coupons/{batch_id}", status_code=303)


@pages.post("/coupons/{batch_id}/issue", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def issue_submit(request: Request, session: SessionDep, viewer: PageViewer, batch_id: Id, form: FormDep) -> Response:
    segment = _text(form, "segment_id")
    try:
        segment_id = parse_id(segment)
        if segment_id is None:
            raise Invalid("Choose a segment", field="segment_id")
        result = service.issue_to_segment(session, batch_id=batch_id, segment_id=segment_id, viewer=viewer)
    except DomainError as exc:
        session.rollback()
        if exc.status_code == 403:
            raise
        return _detail(request, session, viewer, batch_id, errors=field_errors(exc, labels=LABELS), status_code=422)
    session.commit()
    notice = _("Issued {n} codes; {m} customers held one already; {k} left without a code (the pool ran dry)",
               n=result.issued, m=result.already, k=len(result.short))
    return _detail(request, session, viewer, batch_id, notice=notice)
