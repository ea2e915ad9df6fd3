"""The WeCom callback endpoint and the console's view of the connection and its events."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.types import Receive, Scope, Send

from siyu.core.db import transaction
from siyu.core.deps import AdminPageViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError
from siyu.core.group_commit import GroupCommitter
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.core.settings import local_zone
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render
from siyu.wecom import callback, config, jobs, sync
from siyu.wecom import client as wecom_client
from siyu.wecom.callback import CallbackRefused
from siyu.wecom.models import EventStatus, WecomEvent

log = logging.getLogger(__name__)
callbacks = APIRouter(include_in_schema=False)
pages = APIRouter(include_in_schema=False)


def _query(params: Mapping[str, str]) -> callback.Query:
    return callback.Query(msg_signature=params.get("msg_signature", ""), timestamp=params.get("timestamp", ""),
                          nonce=params.get("nonce", ""), echostr=params.get("echostr", ""))


def _refused(request: Request, exc: CallbackRefused) -> Response:
    status, text = _refused_answer(request.client.host if request.client else "?", exc)
    return PlainTextResponse(text, status_code=status)


@callbacks.get("/wecom/callback")
def verify(request: Request) -> Response:
    try:
        with transaction() as session:
            return PlainTextResponse(callback.verify_url(session, _query(request.query_params)))
    except CallbackRefused as exc:
        return _refused(request, exc)


def _store_together(received: list[tuple[callback.Query, bytes]]) -> list[int | CallbackRefused | None]:
    with transaction() as session:
        answers = callback.accept_many(session, received)
    jobs.stored_events.hand_over([answer for answer in answers if isinstance(answer, int)])
    return answers


# Callbacks arriving together are stored in one transaction: `success` still means committed.
_committer = GroupCommitter(_store_together)


async def receive_callback(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /wecom/callback`` as a plain ASGI endpoint, served ahead of the console's stack.

    The platform's callbacks are the hottest path there is and need none of what the console's
    requests go through (middleware, session cookie, dependency injection, HTML error pages):
    that stack cost more than storing the event. ``siyu.app.SiyuApp`` sends them here first.
    """
    status, text = await _stored_answer(scope, receive)
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _stored_answer(scope: Scope, receive: Receive) -> tuple[int, str]:
    client = scope.get("client") or ("?", 0)
    declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
    if declared.isdigit() and int(declared) > callback.MAX_BODY_BYTES:
        return _refused_answer(client[0], CallbackRefused(413, "body larger than 2 MB"))
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return 400, "disconnected"
        body.extend(message.get("body", b""))
        if len(body) > callback.MAX_BODY_BYTES:
            return _refused_answer(client[0], CallbackRefused(413, "body larger than 2 MB"))
        if not message.get("more_body", False):
            break
    query = _query(dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))))
    try:
        answer = await _committer.submit((query, bytes(body)))
    except Exception:  # the batch could not be saved: no `success`, so the platform sends it again
        log.exception("WeCom callbacks could not be stored; answered 503 so the platform retries")
        return 503, "temporarily unavailable"
    if isinstance(answer, CallbackRefused):
        return _refused_answer(client[0], answer)
    return 200, "success"


def _refused_answer(host: str, exc: CallbackRefused) -> tuple[int, str]:
    log.warning("WeCom callback refused (%s) from %s: %s", exc.status, host, exc.reason)
    return exc.status, exc.reason


# ---------------------------------------------------------------- console


STATUS_LABELS = {EventStatus.received: N_("Waiting to be processed"), EventStatus.processed: N_("Processed"),
                 EventStatus.ignored: N_("Kept, not acted on"), EventStatus.failed: N_("Failed")}
# What each kind of callback means to an operator; a kind not listed shows its own name.
KIND_LABELS = {
    "change_external_contact/add_external_contact": N_("Customer added a member"),
    "change_external_contact/add_half_external_contact": N_("Customer added a member (not yet accepted)"),
    "change_external_contact/edit_external_contact": N_("Customer edited"),
    "change_external_contact/del_external_contact": N_("Member deleted a customer"),
    "change_external_contact/del_follow_user": N_("Customer deleted a member"),
    "change_external_contact/transfer_fail": N_("Hand-over failed"),
    "change_external_chat/create": N_("Customer group created"),
    "change_external_chat/update": N_("Customer group changed"),
    "change_external_chat/dismiss": N_("Customer group dismissed"),
    "change_external_tag/create": N_("Corp tag created"),
    "change_external_tag/update": N_("Corp tag changed"),
    "change_external_tag/delete": N_("Corp tag deleted"),
    "change_external_tag/shuffle": N_("Corp tags reordered"),
}


def kind_label(kind: str) -> str:
    if kind in KIND_LABELS:
        return _(KIND_LABELS[kind])
    return _("Customer message") if kind.startswith("message/") else kind


def status_label(status: str) -> str:
    return _(STATUS_LABELS[EventStatus(status)]) if status in EventStatus.__members__ else status


LABELS = {"corp_id": N_("Corp ID"), "token": N_("Token"), "aes_key": N_("EncodingAESKey"),
          "secret": N_("Secret"), "kf_secret": N_("WeChat customer service Secret"), "api_base": N_("API base")}


def _connection(request: Request, session: Session, *, status_code: int = 200, error: str | None = None,
                notice: str = "", check: wecom_client.ConnectionCheck | None = None) -> Response:
    current = config.effective(session)
    rows = [(name, _(label), config.mask(getattr(current, name)) if name in config.SECRET_FIELDS
             else getattr(current, name), current.source.get(name, "")) for name, label in LABELS.items()]
    return render(request, "wecom/connection.html", status_code=status_code, nav_active="wecom",
                  title=_("WeCom connection"), rows=rows, configured=current.can_receive, error=error, notice=notice,
                  callback_url=str(request.url_for("verify")), check=check,
                  can_call=bool(current.corp_id and current.secret), sync=_sync_shown(session),
                  sync_active=jobs.sync_job_active(session), next_sync=sync.next_nightly_run())


def _sync_shown(session: Session) -> dict[str, Any]:
    """The sync's saved state with its times as datetimes (for the local-time filter)."""
    state = sync.read_state(session)
    if not state:
        return state
    for key in ("started_at", "finished_at"):
        state[key] = datetime.fromisoformat(state[key]) if state.get(key) else None
    return state


@pages.get("/wecom", response_class=HTMLResponse)
def connection_page(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    return _connection(request, session, notice=_("Saved.") if request.query_params.get("saved") else "")


@pages.post("/wecom", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def connection_save(request: Request, session: SessionDep, viewer: AdminPageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str) and k in config.FIELDS}
    try:
        config.save(session, values=values, actor=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _connection(request, session, status_code=exc.status_code, error=exc.message)
    return RedirectResponse("/wecom?saved=1", status_code=303)


@pages.post("/wecom/test", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def connection_test(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    """gettoken and a cheap call with the effective settings: success, or WeCom's exact errcode and errmsg."""
    check = wecom_client.check_connection(session, actor=viewer)
    session.commit()
    return _connection(request, session, check=check)


@pages.post("/wecom/sync", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def sync_start(request: Request, session: SessionDep, viewer: AdminPageViewer, form: FormDep) -> Response:
    """Start (or resume) the full sync as a job; one at a time."""
    if jobs.sync_job_active(session):
        return _connection(request, session, status_code=409, error=_("A sync is already running"))
    job_id = jobs.submit_sync(session, actor=viewer, restart=form.get("restart") == "1")
    session.commit()
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@pages.get("/wecom/events", response_class=HTMLResponse)
def events_page(request: Request, session: SessionDep, viewer: AdminPageViewer,
                status: Annotated[str, Query()] = "", kind: Annotated[str, Query()] = "",
                day: Annotated[str, Query()] = "", before_id: Annotated[Id | None, Query()] = None) -> Response:
    query = select(WecomEvent).order_by(WecomEvent.id.desc()).limit(51)
    if day:
        try:
            start = datetime.combine(date.fromisoformat(day), time.min, tzinfo=local_zone())
        except ValueError:
            start = None
        if start is not None:
            query = query.where(WecomEvent.received_at >= start, WecomEvent.received_at < start + timedelta(days=1))
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
                  status=status, kind=kind, day=day, kinds=kinds, statuses=[s.value for s in EventStatus],
                  next_before=items[-1].id if more else None, kind_label=kind_label, status_label=status_label)


@pages.get("/wecom/events/{event_id}", response_class=HTMLResponse)
def event_page(request: Request, session: SessionDep, viewer: AdminPageViewer, event_id: Id) -> Response:
    event = session.get(WecomEvent, event_id)
    if event is None:
        from siyu.core.errors import NotFound

        raise NotFound("Event not found")
    return render(request, "wecom/event.html", nav_active="wecom", title=_("WeCom event"), event=event,
                  kind_label=kind_label, status_label=status_label)


@pages.get("/wecom/churn")
def churn_page(request: Request, viewer: PageViewer) -> Response:
    """The churn list moved to 用户维系 (filters, paging, the review): /customers/churn."""
    return RedirectResponse("/customers/churn", status_code=307)
