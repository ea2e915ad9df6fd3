"""The phone-width sidebar: find the customer of the chat in one search, then work on their portrait.

Opened beside a personal-WeChat chat on the operator's phone or computer, or as the WeCom
chat-toolbar app: WeCom's JS-SDK gives the page the chat's external user id
(``getCurExternalContact``), and ``/sidebar?external_userid=…`` opens that customer directly.
The portrait it leads to is the customer page's sidebar view (touches, tags, notes, orders).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from siyu.core.deps import PageViewer, SessionDep
from siyu.core.errors import DomainError
from siyu.core.i18n import _
from siyu.customers import service
from siyu.customers.models import Customer
from siyu.web.render import render

pages = APIRouter(include_in_schema=False)
RESULTS = 20


@pages.get("/sidebar", response_class=HTMLResponse)
def sidebar(request: Request, session: SessionDep, viewer: PageViewer, q: str = "",
            external_userid: str = "") -> Response:
    if external_userid:
        found = session.scalar(select(Customer.id).where(Customer.wecom_external_userid == external_userid[:64],
                                                         Customer.merged_into_id.is_(None)))
        if found is not None:
            try:
                service.get_customer(session, customer_id=found, viewer=viewer)  # scope check
                return RedirectResponse(f"/customers/{found}?view=sidebar", status_code=303)
            except DomainError:
                session.rollback()
    q = q.strip()[:200]
    items = []
    error = None
    status = 200
    if q:
        try:
            service.check_search_rate(viewer, q)
            page = service.list_customers(session, flt=service.CustomerFilter(q=q), viewer=viewer, limit=RESULTS)
            items = service.to_summaries(session, customers=page.items, viewer=viewer)
        except DomainError as exc:
            session.rollback()
            error = exc.message
            status = exc.status_code
    return render(request, "customers/sidebar.html", status_code=status, title=_("Find the customer"), q=q,
                  items=items, error=error,
                  unknown_contact=bool(external_userid), account_names=service.account_names(session))
