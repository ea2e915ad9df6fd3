"""Merge duplicates: suggestions, side-by-side preview, merge, history and undo (API and console).

Mounted before the customers router so ``/customers/merge`` is never read as a customer id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_id
from siyu.core.viewer import Viewer
from siyu.customers import service
from siyu.customers.merge import service as merge
from siyu.customers.models import Customer, CustomerMerge
from siyu.customers.schemas import CustomerOut, CustomerSummary
from siyu.team import service as team_service
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["customers"])
pages = APIRouter(include_in_schema=False)

REASON_LABELS = {"phone": N_("Same phone"), "wechat_id": N_("Same WeChat ID"), "name_city": N_("Same name and city")}


class MergeIn(BaseModel):
    target_id: Id
    source_ids: list[Id] = Field(min_length=1, max_length=merge.MAX_MERGE)
    choices: dict[str, int] = Field(default_factory=dict)


class FieldChoiceOut(BaseModel):
    name: str
    label: str
    values: dict[int, Any]
    chosen: int
    conflict: bool


class MergePreviewOut(BaseModel):
    customers: list[CustomerOut]
    fields: list[FieldChoiceOut]
    touch_counts: dict[int, int]


class MergeOut(BaseModel):
    id: int
    target_id: int
    source_ids: list[int]
    choices: dict[str, int]
    created_at: datetime
    undone_at: datetime | None
    can_undo: bool


class DuplicateGroupOut(BaseModel):
    reason: str
    key: str
    customers: list[CustomerSummary]


def _merge_out(record: CustomerMerge) -> MergeOut:
    return MergeOut(id=record.id, target_id=record.target_id, source_ids=record.source_ids, choices=record.choices,
                    created_at=record.created_at, undone_at=record.undone_at, can_undo=merge.can_undo(record))


def _duplicates(session: Session, viewer: Viewer) -> list[DuplicateGroupOut]:
    groups = merge.suggest_duplicates(session, viewer=viewer)
    ids = sorted({cid for g in groups for cid in g.customer_ids})
    customers = {c.id: c for c in session.query(Customer).filter(Customer.id.in_(ids))} if ids else {}
    summaries = {s.id: s for s in service.to_summaries(session, customers=list(customers.values()), viewer=viewer)}
    return [DuplicateGroupOut(reason=g.reason, key=g.key, customers=[summaries[c] for c in g.customer_ids])
            for g in groups]


# ---------------------------------------------------------------- API


@api.get("/customers/duplicates", response_model=dict[str, list[DuplicateGroupOut]])
def api_duplicates(session: SessionDep, viewer: ApiViewer) -> dict[str, list[DuplicateGroupOut]]:
    return {"items": _duplicates(session, viewer)}


MISSING_CUSTOMER: dict[int | str, dict[str, Any]] = {
    404: {"description": "A customer to merge does not exist (or is not yours)"}}


@api.get("/customers/merge/preview", response_model=MergePreviewOut, responses=MISSING_CUSTOMER)
def api_merge_preview(session: SessionDep, viewer: ApiViewer, target_id: Id,
                      source_ids: Annotated[list[Id], Query()]) -> MergePreviewOut:
    preview = merge.preview_merge(session, target_id=target_id, source_ids=source_ids, viewer=viewer)
    return MergePreviewOut(
        customers=[service.to_detail(session, customer=c, viewer=viewer) for c in preview.customers],
        fields=[FieldChoiceOut(name=f.name, label=_(f.label), values=f.values, chosen=f.chosen, conflict=f.conflict)
                for f in preview.fields],
        touch_counts=preview.touch_counts)


@api.post("/customers/merge", response_model=MergeOut, status_code=201, responses=MISSING_CUSTOMER)
def api_merge(session: SessionDep, viewer: ApiViewer, data: MergeIn) -> MergeOut:
    record = merge.merge_customers(session, target_id=data.target_id, source_ids=data.source_ids,
                                   choices=data.choices, viewer=viewer)
    session.commit()
    return _merge_out(record)


@api.get("/customers/merges", response_model=dict[str, list[MergeOut]])
def api_merges(session: SessionDep, viewer: ApiViewer) -> dict[str, list[MergeOut]]:
    return {"items": [_merge_out(r) for r in merge.list_merges(session, viewer=viewer)]}


@api.post("/customers/merges/{merge_id}/undo", response_model=MergeOut)
def api_undo_merge(session: SessionDep, viewer: ApiViewer, merge_id: Id) -> MergeOut:
    record = merge.undo_merge(session, merge_id=merge_id, viewer=viewer)
    session.commit()
    return _merge_out(record)


# ---------------------------------------------------------------- console


def _ids(values: list[str]) -> list[int]:
    return [i for v in values if (i := parse_id(v)) is not None]


@pages.get("/customers/duplicates", response_class=HTMLResponse)
def duplicates_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return render(request, "customers/duplicates.html", nav_active="customers", title=_("Possible duplicates"),
                  groups=_duplicates(session, viewer), reason_labels={k: _(v) for k, v in REASON_LABELS.items()})


@pages.get("/customers/merge-pick", response_class=HTMLResponse)
def merge_pick(request: Request, session: SessionDep, viewer: PageViewer, q: str = "", with_id: str = "") -> Response:
    """Find the other customer of a merge by name, remark name, phone or WeChat ID — never by typing an id."""
    customer = service.get_customer(session, customer_id=parse_id(with_id) or 0, viewer=viewer)
    q = q.strip()[:64]
    results: list[Any] = []
    if q:
        service.check_search_rate(viewer, q)
        page = service.list_customers(session, flt=service.CustomerFilter(q=q), viewer=viewer, limit=20)
        results = [s for s in service.to_summaries(session, customers=page.items, viewer=viewer) if s.id != customer.id]
    return render(request, "customers/merge_pick.html", nav_active="customers", title=_("Merge with…"),
                  customer=customer, q=q, results=results, account_names=service.account_names(session))


@pages.get("/customers/merge", response_class=HTMLResponse)
def merge_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    ids = _ids(request.query_params.getlist("ids"))
    target = request.query_params.get("target", "")
    target_id = parse_id(target) or (ids[0] if ids else 0)
    return _render_preview(request, session, viewer, target_id=target_id,
                           source_ids=[i for i in ids if i != target_id], ids=ids)


def _render_preview(request: Request, session: Session, viewer: Viewer, *, target_id: int, source_ids: list[int],
                    ids: list[int], error: str | None = None, status_code: int = 200,
                    choices: dict[str, int] | None = None) -> Response:
    preview = None
    if len(set(ids)) < 2:
        error = error or _("Choose at least two customers to compare.")
        status_code = 422 if status_code == 200 else status_code
    else:
        try:
            preview = merge.preview_merge(session, target_id=target_id, source_ids=source_ids, viewer=viewer)
        except DomainError as exc:
            session.rollback()
            error, status_code = exc.message, exc.status_code
    details = ([service.to_detail(session, customer=c, viewer=viewer) for c in preview.customers]
               if preview else [])
    owners = team_service.display_names(session, user_ids=[c.owner_id for c in preview.customers]) if preview else {}
    return render(request, "customers/merge.html", status_code=status_code, nav_active="customers",
                  title=_("Merge customers"), preview=preview, details=details, ids=ids, error=error,
                  choices=choices or {}, owners=owners, account_names=service.account_names(session))


@pages.post("/customers/merge", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def merge_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    ids = _ids([v for v in form.getlist("ids") if isinstance(v, str)])
    target_text = form.get("target_id")
    target_id = (parse_id(target_text) if isinstance(target_text, str) else None) or 0
    source_ids = [i for i in ids if i != target_id]
    choices: dict[str, int] = {}
    for name in merge.MERGE_FIELDS:
        value = form.get(f"choice_{name}")
        if isinstance(value, str) and parse_id(value) is not None:
            choices[name] = int(value)
    try:
        record = merge.merge_customers(session, target_id=target_id, source_ids=source_ids, choices=choices,
                                       viewer=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _render_preview(request, session, viewer, target_id=target_id, source_ids=source_ids, ids=ids,
                               error=exc.message, status_code=exc.status_code, choices=choices)
    return RedirectResponse(f"/customers/merges?done={record.id}", status_code=303)


@pages.get("/customers/merges", response_class=HTMLResponse)
def merges_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    records = merge.list_merges(session, viewer=viewer)
    ids = sorted({r.target_id for r in records} | {s for r in records for s in r.source_ids})
    names = dict(session.query(Customer.id, Customer.name).filter(Customer.id.in_(ids)).all()) if ids else {}
    done, undone = request.query_params.get("done", ""), request.query_params.get("undone", "")
    notice = None
    if parse_id(done) is not None:
        notice = _("Merged. You can undo this merge here for 30 days.")
    elif parse_id(undone) is not None:
        notice = _("The merge was undone; the customers are separate again.")
    return render(request, "customers/merges.html", nav_active="customers", title=_("Merge history"),
                  records=records, names=names, can_undo=merge.can_undo, notice=notice,
                  highlight=parse_id(done))


@pages.post("/customers/merges/{merge_id}/undo", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def undo_submit(request: Request, session: SessionDep, viewer: PageViewer, merge_id: Id) -> Response:
    merge.undo_merge(session, merge_id=merge_id, viewer=viewer)
    session.commit()
    return RedirectResponse(f"/customers/merges?undone={merge_id}", status_code=303)
