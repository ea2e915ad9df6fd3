"""抽奖: the API (``/api/v1/draws``) and the console's ``/draws`` pages. Thin: parse, call the service, render."""

from __future__ import annotations

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
from siyu.coupons import service as coupons_service
from siyu.customers.models import Customer
from siyu.draws import service
from siyu.draws.models import STATUS_LABELS, DrawStatus, LuckyDraw
from siyu.draws.schemas import DrawIn, DrawOut, PrizeIn, PrizeOut, WinnerOut
from siyu.segments import service as segments_service
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render

api = APIRouter(tags=["draws"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
FORM_PRIZES = 3
LABELS = {"name": N_("Draw name"), "segment_id": N_("Segment"), "prizes": N_("Prizes")}


def _out(session: Session, draw: LuckyDraw) -> DrawOut:
    out = DrawOut.model_validate(draw)
    out.prizes = [PrizeOut.model_validate(p) for p in service.prizes_of(session, draw.id)]
    out.winners = [WinnerOut.model_validate(w) for w in service.winners_of(session, draw.id)]
    out.algorithm = service.algorithm_text()
    if draw.status != DrawStatus.drawn.value:
        out.seed = ""
    return out


# ---------------------------------------------------------------- API


@api.get("/draws", response_model=dict[str, list[DrawOut]])
def api_list(session: SessionDep, viewer: ApiViewer) -> dict[str, list[DrawOut]]:
    return {"items": [_out(session, d) for d in service.list_draws(session)]}


@api.post("/draws", response_model=DrawOut, status_code=201)
def api_create(session: SessionDep, viewer: ApiViewer, data: DrawIn) -> DrawOut:
    """A lucky draw for a segment: prizes with stock and odds (percent per eligible customer)."""
    draw = service.create_draw(session, data=data, viewer=viewer)
    session.commit()
    return _out(session, draw)


@api.get("/draws/{draw_id}", response_model=DrawOut)
def api_get(session: SessionDep, viewer: ApiViewer, draw_id: Id) -> DrawOut:
    return _out(session, service.get_draw(session, draw_id=draw_id))


@api.get("/draws/{draw_id}/audit", response_model=dict[str, Any])
def api_audit(session: SessionDep, viewer: ApiViewer, draw_id: Id) -> dict[str, Any]:
    """What anyone needs to recompute a finished draw: the seed, the sorted eligible ids, the prizes, the winners."""
    draw = service.get_draw(session, draw_id=draw_id)
    if draw.status != DrawStatus.drawn.value:
        raise Invalid("This draw has not been drawn yet", field="draw_id")
    prizes, winners = service.prizes_of(session, draw.id), service.winners_of(session, draw.id)
    return {"seed": draw.seed, "eligible_ids": [int(i) for i in draw.eligible_ids.split(",") if i],
            "eligible_digest": draw.eligible_digest, "algorithm": service.algorithm_text(),
            "prizes": [{"id": p.id, "stock": p.stock, "odds": str(p.odds)} for p in prizes],
            "winners": [{"position": w.position, "customer_id": w.customer_id, "prize_id": w.prize_id}
                        for w in winners],
            "verified": service.verify(draw, prizes, winners)}


@api.post("/draws/{draw_id}/draw", response_model=DrawOut)
def api_draw(session: SessionDep, viewer: ApiViewer, draw_id: Id) -> DrawOut:
    """Draw now (once): the seed is made and recorded, winners get their prizes and a task tells them."""
    service.run_draw(session, draw_id=draw_id, viewer=viewer)
    session.commit()
    return _out(session, service.get_draw(session, draw_id=draw_id))


# ---------------------------------------------------------------- console


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _number(text: str, field: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise Invalid("Must be a number", field=field) from exc


def _draw_in(form: FormData) -> DrawIn:
    prizes = []
    for n in range(FORM_PRIZES):
        name = _text(form, f"prize_{n}_name")
        if not name:
            continue
        batch, stock = _text(form, f"prize_{n}_batch"), _text(form, f"prize_{n}_stock")
        prizes.append(PrizeIn(name=name, coupon_batch_id=parse_id(batch), stock=parse_count(stock, default=0),
                              odds=_number(_text(form, f"prize_{n}_odds") or "0", "prizes")))
    segment_id = parse_id(_text(form, "segment_id"))
    if segment_id is None:
        raise Invalid("Choose a segment", field="segment_id")
    return DrawIn(name=_text(form, "name"), segment_id=segment_id, prizes=prizes,
                  exclude_blacklisted=bool(form.get("exclude_blacklisted")))


def _context(session: Session, viewer: Viewer) -> dict[str, Any]:
    return {"segments": segments_service.list_segments(session, viewer=viewer),
            "batches": coupons_service.list_batches(session), "form_prizes": range(FORM_PRIZES),
            "status_labels": {k.value: _(v) for k, v in STATUS_LABELS.items()}}


def _list(request: Request, session: Session, viewer: Viewer, *, errors: dict[str, str], values: dict[str, Any],
          status_code: int = 200) -> Response:
    draws = service.list_draws(session)
    return render(request, "draws/list.html", status_code=status_code, nav_active="draws", title=_("Lucky draws"),
                  draws=draws, winners=service.winner_counts(session, [d.id for d in draws]), errors=errors,
                  values=values, **_context(session, viewer))


@pages.get("/draws", response_class=HTMLResponse)
def list_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _list(request, session, viewer, errors={}, values={"exclude_blacklisted": "on"})


@pages.post("/draws", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def create_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}
    try:
        draw = service.create_draw(session, data=_draw_in(form), viewer=viewer)
    except (ValidationError, DomainError) as exc:
        session.rollback()
        if isinstance(exc, DomainError) and exc.status_code == 403:
            raise
        return _list(request, session, viewer, errors=field_errors(exc, labels=LABELS), values=values,
                     status_code=422)
    session.commit()
    return RedirectResponse(f"/draws/{draw.id}", status_code=303)


def _detail(request: Request, session: Session, viewer: Viewer, draw_id: int, *, errors: dict[str, str] | None = None,
            status_code: int = 200) -> Response:
    draw = service.get_draw(session, draw_id=draw_id)
    prizes, winners = service.prizes_of(session, draw.id), service.winners_of(session, draw.id)
    names = dict(session.execute(select(Customer.id, Customer.name).where(
        Customer.id.in_([w.customer_id for w in winners]))).all())
    segment = None
    if draw.segment_id is not None:
        segment = next((s for s in segments_service.list_segments(session, viewer=viewer)
                        if s.id == draw.segment_id), None)
    return render(request, "draws/detail.html", status_code=status_code, nav_active="draws", title=draw.name,
                  draw=draw, prizes=prizes, prize_names={p.id: p.name for p in prizes}, winners=winners, names=names,
                  segment=segment, algorithm=service.algorithm_text(), errors=errors or {},
                  verified=service.verify(draw, prizes, winners) if draw.status == DrawStatus.drawn.value else None,
                  batches={b.id: b.name for b in coupons_service.list_batches(session)},
                  status_labels={k.value: _(v) for k, v in STATUS_LABELS.items()})


@pages.get("/draws/{draw_id}", response_class=HTMLResponse)
def detail_page(request: Request, session: SessionDep, viewer: PageViewer, draw_id: Id) -> Response:
    return _detail(request, session, viewer, draw_id)


@pages.post("/draws/{draw_id}/draw", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def draw_submit(request: Request, session: SessionDep, viewer: PageViewer, draw_id: Id) -> Response:
    try:
        service.run_draw(session, draw_id=draw_id, viewer=viewer)
    except DomainError as exc:
        session.rollback()
        if exc.status_code in (403, 404):
            raise
        return _detail(request, session, viewer, draw_id, errors=field_errors(exc, labels=LABELS),
                       status_code=exc.status_code)
    session.commit()
    return RedirectResponse(f"/draws/{draw_id}", status_code=303)
