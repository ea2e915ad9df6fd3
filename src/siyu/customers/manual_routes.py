"""The console's "add a customer" form (thin: the rules are in customers.manual)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from siyu.accounts import service as accounts_service
from siyu.accounts.models import AccountStatus
from siyu.core.deps import CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import parse_id
from siyu.core.viewer import Viewer
from siyu.customers import manual, service
from siyu.customers.pages import FormDep, FormRead, field_errors
from siyu.customers.schemas import CustomerIn

pages = APIRouter(include_in_schema=False)
LABELS = {"name": N_("Nickname"), "phones": N_("Phone"), "account_id": N_("Account"), "remark_name": N_("Remark name"),
          "tags": N_("Tags"), "wechat_id": N_("WeChat ID"), "description": N_("Description")}


def _form(request: Request, session: Session, viewer: Viewer, *, values: dict[str, Any] | None = None,
          errors: dict[str, str] | None = None, existing: Any = None, status_code: int = 200) -> Response:
    accounts = [a for a in accounts_service.visible_accounts(session, viewer=viewer)
                if a.status == AccountStatus.active.value]
    groups = [g for g in service.list_tag_groups(session) if not g.is_computed]
    return render_form(request, status_code, accounts=accounts, groups=groups, values=values or {},
                       errors=errors or {}, existing=existing)


def render_form(request: Request, status_code: int, **context: Any) -> Response:
    from siyu.web.render import render

    return render(request, "customers/new.html", status_code=status_code, nav_active="customers",
                  title=_("Add a customer"), labels=LABELS, **context)


@pages.get("/customers/new", response_class=HTMLResponse)
def new_customer_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _form(request, session, viewer)


@pages.post("/customers/new", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def new_customer(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    keys = ("name", "phone", "account_id", "remark_name", "wechat_id", "description")
    values: dict[str, Any] = {key: str(form.get(key) or "").strip() for key in keys}
    tag_ids = [i for i in (parse_id(str(v)) for v in form.getlist("tag_ids")) if i is not None]
    values["tag_ids"] = tag_ids
    try:
        tags = [service.tag_name(t) for t in service.get_tags(session, tag_ids=tag_ids)]
        account_id = parse_id(values["account_id"])
        if account_id is None:
            raise Invalid("Choose the account this customer is a friend of", field="account_id")
        data = CustomerIn(name=values["name"], account_id=account_id, remark_name=values["remark_name"],
                          phones=[values["phone"]] if values["phone"] else [], tags=tags,
                          wechat_id=values["wechat_id"] or None, description=values["description"])
        added = manual.add_by_hand(session, data=data, viewer=viewer)
        if not added.created:
            session.rollback()
            return _form(request, session, viewer, values=values, existing=added.customer, status_code=409)
        session.commit()
    except (DomainError, ValidationError) as exc:
        session.rollback()
        return _form(request, session, viewer, values=values, errors=field_errors(exc, labels=LABELS),
                     status_code=422)
    return RedirectResponse(f"/customers/{added.customer.id}", status_code=303)
