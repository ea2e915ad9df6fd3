"""Orders in the API and the console: bulk upsert, webhook, import, list, review queue, metrics.

Mounted before the customers routers (``/customers/{id}/orders`` is this domain's page).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from siyu.accounts import service as accounts_service
from siyu.channels.models import Channel
from siyu.core import db as core_db
from siyu.core.deps import AdminApiViewer, AdminPageViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import Forbidden, Invalid
from siyu.core.i18n import _
from siyu.core.ids import Id, parse_id
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.customers.imports import service as customer_imports
from siyu.customers.imports.routes import UploadForm, read_upload_form
from siyu.orders import imports, jobs, schemas, service, webhook
from siyu.orders.models import MatchState, Order, OrderStatus, SourceKind
from siyu.orders.service import STATUS_LABELS
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["orders"])
pages = APIRouter(include_in_schema=False)

__all__ = ["api", "pages", "read_upload_form"]


def _ensure_may_write(viewer: Viewer) -> None:
    if viewer.role == "service":
        raise Forbidden("Service staff cannot change orders")


def _order_out(order: Order, lines: list[Any], viewer: Viewer) -> schemas.OrderOut:
    return schemas.OrderOut(
        id=order.id, source=order.source, order_no=order.order_no, customer_id=order.customer_id,
        match_state=order.match_state, matched_by=order.matched_by, account_id=order.account_id,
        channel_id=order.channel_id, store=order.store, status=order.status, amount=order.amount,
        discount=order.discount, coupon_code=order.coupon_code, refunded_amount=order.refunded_amount,
        buyer_name=order.buyer_name, buyer_phone=viewer.phone(order.buyer_phone) if order.buyer_phone else "",
        paid_at=order.paid_at, lines=[schemas.LineOut.model_validate(line) for line in lines])


# ---------------------------------------------------------------- API


@api.post("/orders", response_model=schemas.UpsertOut)
def api_upsert(session: SessionDep, viewer: ApiViewer, body: schemas.OrdersIn) -> schemas.UpsertOut:
    """Create or update orders in bulk; the same ``source`` + ``order_no`` again updates, never duplicates."""
    _ensure_may_write(viewer)
    result = service.upsert_orders(session, orders=[o.to_data() for o in body.orders], viewer=viewer, via="api")
    session.commit()
    return schemas.UpsertOut(**result.summary())


@api.get("/orders", response_model=schemas.OrderPage,
         responses={404: {"description": "customer_id names a customer that does not exist (or is not yours)"}})
def api_list(session: SessionDep, viewer: ApiViewer, customer_id: Id | None = None, state: MatchState | None = None,
             status: OrderStatus | None = None, source: str | None = None, cursor: str | None = None,
             limit: Annotated[int, Field(ge=1, le=200)] = 50) -> schemas.OrderPage:
    """Orders the caller may see, newest paid first (``state=unmatched`` is the review queue)."""
    page = service.list_orders(session, viewer=viewer, limit=limit, cursor=cursor, flt=service.OrderFilter(
        customer_id=customer_id, state=state.value if state else None, status=status.value if status else None,
        source=source))
    lines = service.load_lines(session, [o.id for o in page.items])
    return schemas.OrderPage(items=[_order_out(o, lines.get(o.id, []), viewer) for o in page.items],
                             next_cursor=page.next_cursor)


@api.get("/orders/metrics", response_model=list[schemas.MetricsOut])
def api_metrics(session: SessionDep, viewer: ApiViewer, by: str = "month", since: date | None = None,
                until: date | None = None) -> list[schemas.MetricsOut]:
    """Buyers, orders, revenue, repurchase rate and average order value per account, channel or month."""
    rows = service.repurchase_metrics(session, viewer=viewer, by=by, since=since, until=until)
    return [schemas.MetricsOut(key=m.key, buyers=m.buyers, orders=m.orders, revenue=m.revenue,
                               repeat_buyers=m.repeat_buyers, repurchase_rate=m.repurchase_rate,
                               average_order_value=m.average_order_value) for m in rows]


@api.get("/orders/{order_id}", response_model=schemas.OrderOut)
def api_get(session: SessionDep, viewer: ApiViewer, order_id: Id) -> schemas.OrderOut:
    order = service.get_order(session, order_id=order_id, viewer=viewer)
    return _order_out(order, service.load_lines(session, [order.id]).get(order.id, []), viewer)


@api.post("/orders/{order_id}/refund", response_model=schemas.OrderOut)
def api_refund(session: SessionDep, viewer: ApiViewer, order_id: Id, body: schemas.RefundIn) -> schemas.OrderOut:
    """Refund part or all of an order (a refund larger than what is left is refused)."""
    _ensure_may_write(viewer)
    order = service.refund(session, order_id=order_id, amount=body.amount, viewer=viewer)
    session.commit()
    return _order_out(order, service.load_lines(session, [order.id]).get(order.id, []), viewer)


@api.post("/orders/{order_id}/match", response_model=schemas.OrderOut)
def api_match(session: SessionDep, viewer: ApiViewer, order_id: Id, body: schemas.MatchIn) -> schemas.OrderOut:
    """Review queue: this unmatched order is this customer's."""
    _ensure_may_write(viewer)
    order = service.match_order(session, order_id=order_id, customer_id=body.customer_id, viewer=viewer)
    session.commit()
    return _order_out(order, service.load_lines(session, [order.id]).get(order.id, []), viewer)


class CreateCustomerIn(BaseModel):
    account_id: Id


@api.post("/orders/{order_id}/create-customer")
def api_create_customer(session: SessionDep, viewer: ApiViewer, order_id: Id, body: CreateCustomerIn) -> Any:
    """Review queue: create a customer from the order's buyer and match the order to them."""
    _ensure_may_write(viewer)
    customer = service.create_customer_for(session, order_id=order_id, account_id=body.account_id, viewer=viewer)
    session.commit()
    return {"customer_id": customer.id}


@api.post("/orders/{order_id}/ignore", response_model=schemas.OrderOut)
def api_ignore(session: SessionDep, viewer: ApiViewer, order_id: Id) -> schemas.OrderOut:
    """Review queue: the order is nobody's Siyu follows."""
    _ensure_may_write(viewer)
    order = service.ignore_order(session, order_id=order_id, viewer=viewer)
    session.commit()
    return _order_out(order, [], viewer)


def _errors_json(exc: customer_imports.ImportInvalid) -> JSONResponse:
    return JSONResponse({"detail": exc.message, "total": exc.total, "errors": [e.as_dict() for e in exc.errors]},
                        status_code=422)


IMPORT_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": "CSV (UTF-8, BOM, GBK) or "
                                "XLSX; header row: 订单号, 付款时间, 实付金额 and optional columns."}}}}}},
    "responses": {"202": {"description": "A large file: checked, then written by a background job."},
                  "422": {"description": 'The file is invalid: {"errors": [{"row", "column", "message"}]}.'}},
}


def _run_upload(session: Session, viewer: Viewer, uploaded: Any) -> tuple[dict[str, Any], int]:
    """Check an uploaded file whole, then write it (small) or queue it (large): the answer and status."""
    imports.ensure_may_import(viewer)
    if not isinstance(uploaded, UploadFile) or not uploaded.filename:
        raise Invalid("Attach the file in the multipart field file", field="file")
    upload = customer_imports.store_upload(uploaded.file, filename=uploaded.filename or "", viewer=viewer)
    keep = False
    try:
        plan = imports.check_file(session, source=upload.source, viewer=viewer)
        if plan.rows <= imports.BACKGROUND_ROWS:
            result = imports.execute(session, plan=plan, viewer=viewer, filename=upload.filename)
            session.commit()
            return result.summary(), 200
        job_id = jobs.submit_import(session, upload=upload, plan=plan, actor=viewer)
        keep = True
        session.commit()
        return {"job_id": job_id, "job_url": f"/api/v1/jobs/{job_id}", "orders": plan.orders}, 202
    finally:
        if not keep:
            customer_imports.discard_upload(upload.token)


@api.post("/orders/import", openapi_extra=IMPORT_BODY)
def api_import(session: SessionDep, viewer: ApiViewer, form: UploadForm) -> Response:
    """Import orders from a CSV or XLSX file (multipart field ``file``): all or nothing, idempotent."""
    try:
        answer, status = _run_upload(session, viewer, form.get("file"))
    except customer_imports.ImportInvalid as exc:
        session.rollback()
        return _errors_json(exc)
    return JSONResponse(answer, status_code=status)


def _handle_push(key: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    with core_db.transaction() as session:
        return webhook.receive(session, key=key, headers=headers, body=body)


@api.post("/orders/webhook/{source}", responses={
    401: {"description": "Unsigned, wrongly signed, or the timestamp is stale (nothing read)"},
    409: {"description": "A replay of a request already received"},
    413: {"description": "The body is larger than the limit"}})
async def api_webhook(request: Request, source: str) -> JSONResponse:
    """Orders pushed by a shop system, signed with the source's secret (see ``orders.webhook``)."""
    body = await request.body()  # bounded by the app's body limit before this runs
    headers = {name.lower(): value for name, value in request.headers.items()}
    answer = await run_in_threadpool(_handle_push, source[:32], headers, body)
    return JSONResponse(answer)


class SourceIn(BaseModel):
    key: str = Field(min_length=2, max_length=32)
    name: str = Field("", max_length=64)
    kind: SourceKind = SourceKind.generic
    app_id: str = Field("", max_length=64)


@api.post("/orders/sources")
def api_create_source(session: SessionDep, viewer: AdminApiViewer, body: SourceIn) -> Any:
    """A webhook source and its secret (shown once here; admins only)."""
    source = service.create_source(session, key=body.key, name=body.name, kind=body.kind.value, viewer=viewer)
    source.app_id = body.app_id.strip()
    session.commit()
    return {"key": source.key, "kind": source.kind, "secret": source.secret,
            "url": f"/api/v1/orders/webhook/{source.key}"}


# ---------------------------------------------------------------- console


def _names(session: Session) -> dict[int, str]:
    return customers_service.account_names(session)


def _customer_names(session: Session, orders: list[Order]) -> dict[int, str]:
    from sqlalchemy import select

    from siyu.customers.models import Customer

    ids = sorted({o.customer_id for o in orders if o.customer_id})
    if not ids:
        return {}
    return {cid: name for cid, name in session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids)))}


@pages.get("/orders", response_class=HTMLResponse)
def orders_page(request: Request, session: SessionDep, viewer: PageViewer, state: str = "", q: str = "",
                cursor: str | None = None) -> Response:
    chosen = state if state in {s.value for s in MatchState} else None
    page = service.list_orders(session, viewer=viewer, cursor=cursor,
                               flt=service.OrderFilter(state=chosen, q=q[:64]))
    return render(request, "orders/list.html", nav_active="orders", title=_("Orders"), orders=page.items,
                  next_cursor=page.next_cursor, state=chosen or "", q=q[:64],
                  lines=service.load_lines(session, [o.id for o in page.items]),
                  customers=_customer_names(session, page.items), accounts=_names(session),
                  visible_accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  unmatched=service.count_unmatched(session, viewer=viewer), status_labels=STATUS_LABELS)


def _back(form: Any) -> str:
    target = form.get("next")
    return target if isinstance(target, str) and target.startswith("/orders") and "//" not in target else "/orders"


@pages.post("/orders/{order_id}/match", dependencies=[FormRead, CsrfChecked])
def match_submit(session: SessionDep, viewer: PageViewer, order_id: Id, form: FormDep) -> Response:
    _ensure_may_write(viewer)
    raw = form.get("customer_id")
    customer_id = parse_id(raw) if isinstance(raw, str) else None
    if customer_id is None:
        raise Invalid("Customer {customer_id} not found", field="customer_id",
                      customer_id=str(raw)[:20] if raw else "")
    service.match_order(session, order_id=order_id, customer_id=customer_id, viewer=viewer)
    session.commit()
    return RedirectResponse(_back(form), status_code=303)


@pages.post("/orders/{order_id}/create-customer", dependencies=[FormRead, CsrfChecked])
def create_customer_submit(session: SessionDep, viewer: PageViewer, order_id: Id, form: FormDep) -> Response:
    _ensure_may_write(viewer)
    raw = form.get("account_id")
    account_id = parse_id(raw) if isinstance(raw, str) else None
    if account_id is None:
        raise Invalid("Choose the account of this customer", field="account_id")
    customer = service.create_customer_for(session, order_id=order_id, account_id=account_id, viewer=viewer)
    session.commit()
    return RedirectResponse(f"/customers/{customer.id}", status_code=303)


@pages.post("/orders/{order_id}/ignore", dependencies=[FormRead, CsrfChecked])
def ignore_submit(session: SessionDep, viewer: PageViewer, order_id: Id, form: FormDep) -> Response:
    _ensure_may_write(viewer)
    service.ignore_order(session, order_id=order_id, viewer=viewer)
    session.commit()
    return RedirectResponse(_back(form), status_code=303)


@pages.post("/orders/{order_id}/refund", dependencies=[FormRead, CsrfChecked])
def refund_submit(session: SessionDep, viewer: PageViewer, order_id: Id, form: FormDep) -> Response:
    _ensure_may_write(viewer)
    raw = form.get("amount")
    try:
        amount = Decimal(raw.strip()) if isinstance(raw, str) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise Invalid("Not an amount: {value}", field="amount", value=str(raw)[:20])
    order = service.refund(session, order_id=order_id, amount=amount, viewer=viewer)
    session.commit()
    target = f"/customers/{order.customer_id}/orders" if order.customer_id else "/orders"
    return RedirectResponse(target, status_code=303)


@pages.get("/customers/{customer_id}/orders", response_class=HTMLResponse)
def customer_orders_page(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                         cursor: str | None = None) -> Response:
    customer = customers_service.get_customer(session, customer_id=customer_id, viewer=viewer)
    page = service.list_orders(session, viewer=viewer, cursor=cursor,
                               flt=service.OrderFilter(customer_id=customer.id))
    from siyu.orders.models import CustomerPurchaseFacts

    return render(request, "orders/customer.html", nav_active="customers", title=_("Orders of {name}",
                  name=customer.name), customer=customer, orders=page.items, next_cursor=page.next_cursor,
                  lines=service.load_lines(session, [o.id for o in page.items]),
                  facts=session.get(CustomerPurchaseFacts, customer.id), accounts=_names(session),
                  status_labels=STATUS_LABELS)


@pages.get("/orders/metrics", response_class=HTMLResponse)
def metrics_page(request: Request, session: SessionDep, viewer: PageViewer, by: str = "month") -> Response:
    by = by if by in service.GROUPINGS else "month"
    rows = service.repurchase_metrics(session, viewer=viewer, by=by)
    labels: dict[str, str] = {}
    if by == "account":
        labels = {str(k): v for k, v in _names(session).items()}
    elif by == "channel":
        from sqlalchemy import select

        labels = {str(i): n for i, n in session.execute(select(Channel.id, Channel.name))}
    return render(request, "orders/metrics.html", nav_active="orders", title=_("Repurchase and value"),
                  rows=rows, by=by, labels=labels)


@pages.get("/orders/import", response_class=HTMLResponse)
def import_page(request: Request, viewer: PageViewer) -> Response:
    imports.ensure_may_import(viewer)
    return render(request, "orders/import.html", nav_active="orders", title=_("Import orders"), errors=[], total=0,
                  columns=imports.COLUMNS, result=None)


@pages.post("/orders/import", response_class=HTMLResponse)
def import_submit(request: Request, session: SessionDep, viewer: PageViewer, form: UploadForm,
                  _csrf: Annotated[None, CsrfChecked]) -> Response:
    try:
        answer, status = _run_upload(session, viewer, form.get("file"))
    except customer_imports.ImportInvalid as exc:
        session.rollback()
        return render(request, "orders/import.html", status_code=422, nav_active="orders", title=_("Import orders"),
                      errors=exc.errors, total=exc.total, columns=imports.COLUMNS, result=None)
    if status == 202:
        return RedirectResponse(f"/jobs/{answer['job_id']}", status_code=303)
    return render(request, "orders/import.html", nav_active="orders", title=_("Import orders"), errors=[], total=0,
                  columns=imports.COLUMNS, result=answer)


@pages.get("/orders/sources", response_class=HTMLResponse)
def sources_page(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    return render(request, "orders/sources.html", nav_active="orders", title=_("Order sources"),
                  sources=service.list_sources(session), created=None)


@pages.post("/orders/sources", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def sources_submit(request: Request, session: SessionDep, viewer: AdminPageViewer, form: FormDep) -> Response:
    def text(name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    source = service.create_source(session, key=text("key"), name=text("name"), kind=text("kind") or "generic",
                                   viewer=viewer)
    source.app_id = text("app_id")[:64]
    session.commit()
    return render(request, "orders/sources.html", nav_active="orders", title=_("Order sources"),
                  sources=service.list_sources(session), created=source)
