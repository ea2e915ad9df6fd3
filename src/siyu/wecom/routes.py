"""The WeCom callback endpoint and the console's view of the connection and its events."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy import select

from siyu.core.db import transaction
from siyu.core.deps import AdminPageViewer, PageViewer, SessionDep
from siyu.core.i18n import _
from siyu.core.settings import get_settings
from siyu.web.render import render
from siyu.wecom import callback, events, jobs
from siyu.wecom.callback import CallbackRefused
from siyu.wecom.models import EventStatus, WecomEvent

log = logging.getLogger(__name__)
callbacks = APIRouter(include_in_schema=False)
pages = APIRouter(include_in_schema=False)


def _query(request: Request) -> callback.Query:
    params = request.query_params
    return callback.Query(msg_signature=params.get("msg_signature", ""), timestamp=params.get("timestamp", ""),
                          nonce=params.get("nonce", ""), echostr=params.get("echostr", ""))


def _refused(request: Request, exc: CallbackRefused) -> Response:
    log.warning("WeCom callback refused (%s) from %s: %s", exc.status,
                request.client.host if request.client else "?", exc.reason)
    return PlainTextResponse(exc.reason, status_code=exc.status)


@callbacks.get("/wecom/callback")
def verify(request: Request) -> Response:
    try:
        return PlainTextResponse(callback.verify_url(_query(request)))
    except CallbackRefused as exc:
        return _refused(request, exc)


@callbacks.post("/wecom/callback")
async def receive(request: Request) -> Response:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > callback.MAX_BODY_BYTES:
        return _refused(request, CallbackRefused(413, "body larger than 2 MB"))
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > callback.MAX_BODY_BYTES:
            return _refused(request, CallbackRefused(413, "body larger than 2 MB"))
    query = _query(request)
    try:
        with transaction() as session:
            event = callback.accept(session, query=query, body=bytes(body))
            if event is not None:
                jobs.enqueue(session, event.id)
    except CallbackRefused as exc:
        return _refused(request, exc)
    return PlainTextResponse("success")


# ---------------------------------------------------------------- console


def _mask(value: str) -> str:
    return "" if not value else ("*" * max(0, len(value) - 4)) + value[-4:]


@pages.get("/wecom", response_class=HTMLResponse)
def connection_page(request: Request, viewer: AdminPageViewer) -> Response:
    settings = get_settings()
    rows = [("SIYU_WECOM_CORP_ID", settings.wecom_corp_id), ("SIYU_WECOM_TOKEN", _mask(settings.wecom_token)),
            ("SIYU_WECOM_AES_KEY", _mask(settings.wecom_aes_key)), ("SIYU_WECOM_SECRET", _mask(settings.wecom_secret)),
            ("SIYU_WECOM_API_BASE", settings.wecom_api_base)]
    configured = bool(settings.wecom_corp_id and settings.wecom_token and len(settings.wecom_aes_key) == 43)
    return render(request, "wecom/connection.html", nav_active="wecom", title=_("WeCom connection"), rows=rows,
                  configured=configured, callback_url=str(request.url_for("verify")))


@pages.get("/wecom/events", response_class=HTMLResponse)
def events_page(request: Request, session: SessionDep, viewer: AdminPageViewer,
                status: Annotated[str, Query()] = "", kind: Annotated[str, Query()] = "",
                before_id: Annotated[int | None, Query()] = None) -> Response:
    query = select(WecomEvent).order_by(WecomEvent.id.desc()).limit(51)
    if status in {s.value for s in EventStatus}:
        query = query.where(WecomEvent.status == status)
    if kind:
        query = query.where(WecomEvent.event_type == kind[:64])
    if before_id:
        query = query.where(WecomEvent.id < before_id)
    items = list(session.scalars(query))
    more = len(items) > 50
    items = items[:50]
    kinds = list(session.scalars(select(WecomEvent.event_type).distinct().order_by(WecomEvent.event_type)))
    return render(request, "wecom/events.html", nav_active="wecom", title=_("WeCom events"), items=items,
                  status=status, kind=kind, kinds=kinds, statuses=[s.value for s in EventStatus],
                  next_before=items[-1].id if more else None)


@pages.get("/wecom/events/{event_id}", response_class=HTMLResponse)
def event_page(request: Request, session: SessionDep, viewer: AdminPageViewer, event_id: int) -> Response:
    event = session.get(WecomEvent, event_id)
    if event is None:
        from siyu.core.errors import NotFound

        raise NotFound("Event not found")
    return render(request, "wecom/event.html", nav_active="wecom", title=_("WeCom event"), event=event)


@pages.get("/wecom/churn", response_class=HTMLResponse)
def churn_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    account_ids = None if viewer.sees_all_accounts else sorted(viewer.account_ids)
    from siyu.customers import service as customers_service

    return render(request, "wecom/churn.html", nav_active="wecom", title=_("Churn alerts"),
                  rows=events.churn(session, account_ids=account_ids),
                  account_names=customers_service.account_names(session))
