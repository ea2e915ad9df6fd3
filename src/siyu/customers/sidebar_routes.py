"""The phone-width sidebar: find the customer of the chat in one search, then work on their portrait.

Opened beside a personal-WeChat chat on the operator's phone or computer, or as the WeCom
chat-toolbar app: WeCom's JS-SDK gives the page the chat's external user id
(``getCurExternalContact``), and ``/sidebar?external_userid=…`` opens that customer directly.
The portrait it leads to is the customer page's sidebar view (touches, tags, notes, orders).

``/sidebar/reply`` is the chat toolbar's reply panel for a WeCom member's own chat, which no server
API can write into: it offers the conversation's suggested reply (the auto-reply rule matching the
customer's last archived message) and the quick replies, and puts the chosen text into the open chat
with the JS-SDK's ``sendChatMessage`` after ``agentConfig`` (W:96935) — the member presses send. The
JS-SDK is loaded only when the page is opened inside WeCom's client; elsewhere the page says so and
offers to copy the text.
"""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.deps import CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError
from siyu.core.i18n import _
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer
from siyu.customers import service
from siyu.customers.models import Customer
from siyu.inbox.models import Channel, Conversation
from siyu.web.render import render

pages = APIRouter(include_in_schema=False)
RESULTS = 20
SCRIPTS_IN_SIDEBAR = 15  # the library's scripts in the reply panel (most used first, or those found)


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


# ---------------------------------------------------------------- replies in the member's own chat

# The JS-SDK, loaded only inside WeCom's client (W:90514 "引入JS文件"); never in tests or the demo.
JSSDK_URLS = ("https://res.wx.qq.com/open/js/jweixin-1.2.0.js",
              "https://open.work.weixin.qq.com/wwopen/js/jwxwork-1.0.0.js")
WECOM_AGENT = "wxwork"  # WeCom's client says so in its User-Agent


def _reply_conversation(session: Session, viewer: Viewer, customer_id: int) -> Conversation | None:
    query = select(Conversation).where(Conversation.customer_id == customer_id,
                                       Conversation.channel == Channel.wecom_archive.value)
    if not viewer.sees_all_accounts:
        query = query.where(Conversation.account_id.in_(sorted(viewer.account_ids or [0])))
    return session.scalar(query.order_by(Conversation.last_message_at.desc().nulls_last(), Conversation.id.desc())
                          .limit(1))


@pages.get("/sidebar/reply", response_class=HTMLResponse)
def sidebar_reply(request: Request, session: SessionDep, viewer: PageViewer, customer_id: int = 0,
                  external_userid: str = "", script_q: str = "") -> Response:
    """The chat toolbar's reply panel: the conversation's suggested reply and the quick replies, each put into
    the open chat with the JS-SDK's ``sendChatMessage`` (the member presses send in WeCom)."""
    from siyu.autoreply import service as autoreply_service
    from siyu.inbox import service as inbox_service
    from siyu.library import service as library_service

    if external_userid and not customer_id:
        customer_id = session.scalar(select(Customer.id).where(
            Customer.wecom_external_userid == external_userid[:64], Customer.merged_into_id.is_(None))) or 0
    customer = service.get_customer(session, customer_id=customer_id, viewer=viewer) if customer_id else None
    conversation = _reply_conversation(session, viewer, customer.id) if customer is not None else None
    suggested = autoreply_service.suggest_reply(session, conversation=conversation) if conversation else None
    canned = [(c.title, inbox_service.render_canned(session, reply=c, conversation=conversation))
              for c in inbox_service.canned_replies(session, account_id=conversation.account_id)] \
        if conversation is not None else []
    # 话术库: a compact picker, rendered for this customer; putting one into the chat counts a use
    scripts = library_service.scripts_for(
        session, customer_id=customer.id, account_id=conversation.account_id if conversation else None,
        q=script_q[:100], limit=SCRIPTS_IN_SIDEBAR) if customer is not None else []
    inside = WECOM_AGENT in request.headers.get("user-agent", "").lower()
    response = render(request, "customers/sidebar_reply.html", title=_("Reply in the chat"), customer=customer,
                      conversation=conversation, suggested=suggested, canned=canned, scripts=scripts,
                      script_q=script_q[:100], jssdk_urls=JSSDK_URLS if inside else ())
    if inside:  # the JS-SDK's own origins, on this page only
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' https://res.wx.qq.com https://open.work.weixin.qq.com; "
            "connect-src 'self' https://qyapi.weixin.qq.com; object-src 'none'; base-uri 'self'; "
            "form-action 'self'")
    return response


class AgentConfigIn(BaseModel):
    url: str = Field(min_length=1, max_length=2000)


@pages.post("/sidebar/agent-config", dependencies=[CsrfChecked])
def agent_config(session: SessionDep, viewer: PageViewer, data: AgentConfigIn) -> JSONResponse:
    """``wx.agentConfig``'s parameters for the page's URL (the JS-SDK asks before ``sendChatMessage``)."""
    from siyu.wecom.client import WecomApiError, client_for

    settings = get_settings()
    if not settings.wecom_agent_id:
        return JSONResponse({"message": _("The app's AgentId (SIYU_WECOM_AGENT_ID) is not set")}, status_code=409)
    try:
        signed = client_for(session).agent_config(agent_id=settings.wecom_agent_id, url=data.url.split("#")[0],
                                                   noncestr=secrets.token_hex(8), timestamp=int(time.time()))
    except WecomApiError as exc:
        return JSONResponse({"message": exc.display()}, status_code=409)
    return JSONResponse(signed)
