"""The 公众号 callback (served ahead of the console's stack) and its API: follower sync, QR codes of channels."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from siyu.core.db import transaction
from siyu.core.deps import AdminPageViewer, ApiViewer, CsrfChecked, SessionDep
from siyu.core.errors import DomainError, Forbidden, Invalid
from siyu.core.group_commit import GroupCommitter
from siyu.core.i18n import N_, _
from siyu.mp import callback, client, inbound, jobs, service, writer
from siyu.mp import config as mp_config
from siyu.mp.callback import CallbackRefused, MpQuery
from siyu.mp.config import MpConfig
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

log = logging.getLogger(__name__)
api = APIRouter(prefix="/mp", tags=["mp"])
pages = APIRouter(include_in_schema=False)
ACK = "success"  # 被动回复: "直接回复success（推荐方式）" when there is nothing to say

Received = tuple[MpQuery, bytes, float]  # the query, the body, when the request arrived (time.monotonic)
# The answer and the authenticated callback (kept, so a passive reply needs no second decryption).
Outcome = tuple[MpConfig, "inbound.Answer | CallbackRefused", "callback.Authenticated | None"]


def _late(started: float) -> bool:
    return time.monotonic() - started > service.PASSIVE_REPLY_BUDGET.total_seconds()


def _store_together(received: list[Received]) -> list[Outcome]:
    """Callbacks that arrived together: authenticated, then stored (one INSERT) and answered in one transaction."""
    try:
        outcomes = _store_and_answer(received)
    except Exception:
        service.forget_account_ids()
        raise
    stored = [answer.row_id for _config, answer, _callback in outcomes
              if isinstance(answer, inbound.Answer) and answer.pending]
    inbound.flood.add(len(stored))
    jobs.stored_pushes.hand_over(stored)
    return outcomes


def _store_and_answer(received: list[Received]) -> list[Outcome]:
    return writer.write(lambda session: _answers(session, received))


def _answers(session: Session, received: list[Received]) -> list[Outcome]:
    config = mp_config.effective(session, recent_ok=True)
    outcomes: list[inbound.Answer | CallbackRefused] = []
    authenticated: dict[int, callback.Authenticated] = {}
    for index, (query, body, _started) in enumerate(received):
        try:
            authenticated[index] = callback.authenticate(config, query=query, body=body)
            outcomes.append(inbound.Answer())
        except CallbackRefused as exc:
            outcomes.append(exc)
    if authenticated:
        account_id = service.account_id_for(session, config.appid)
        stored = inbound.store(session, account_id, list(authenticated.values()),
                               late=[_late(received[index][2]) for index in authenticated])
        for index, answer in zip(authenticated, stored, strict=True):
            outcomes[index] = answer
    return [(config, outcome, authenticated.get(index)) for index, outcome in enumerate(outcomes)]


_committer = GroupCommitter(_store_together)


def _too_late(row_id: int) -> None:
    with transaction() as session:
        inbound.make_late(session, row_id)


async def _answer(scope: Scope, receive: Receive) -> tuple[int, str, bytes]:
    started = time.monotonic()
    client_host = (scope.get("client") or ("?", 0))[0]
    declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
    if declared.isdigit() and int(declared) > callback.MAX_BODY_BYTES:
        return _refused(client_host, CallbackRefused(413, "body larger than 2 MB"))
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return 400, "text/plain", b"disconnected"
        body.extend(message.get("body", b""))
        if len(body) > callback.MAX_BODY_BYTES:
            return _refused(client_host, CallbackRefused(413, "body larger than 2 MB"))
        if not message.get("more_body", False):
            break
    query = MpQuery.of(dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))))
    if scope["method"] == "GET":
        try:
            with transaction() as session:
                config = mp_config.effective(session, recent_ok=True)
            return 200, "text/plain", callback.verify_url(config, query).encode()
        except CallbackRefused as exc:
            return _refused(client_host, exc)
    try:
        config, answer, authenticated = await _committer.submit((query, bytes(body), started))
    except Exception:  # nothing was committed: no `success`, so the platform sends it again
        log.exception("公众号 callbacks could not be stored; answered 503 so the platform retries")
        return 503, "text/plain", b"temporarily unavailable"
    if isinstance(answer, CallbackRefused):
        return _refused(client_host, answer)
    if answer.reply and answer.mode == inbound.PASSIVE and authenticated is not None:
        if not _late(started):
            text = callback.passive_answer(config, authenticated, answer.reply, timestamp=int(time.time()))
            return 200, "application/xml", text.encode()
        if not answer.duplicate:  # stored in time, but answered too late: the API sends it
            await run_in_threadpool(_too_late, answer.row_id)
    return 200, "text/plain", ACK.encode()


def _refused(host: str, exc: CallbackRefused) -> tuple[int, str, bytes]:
    log.warning("公众号 callback refused (%s) from %s: %s", exc.status, host, exc.reason)
    return exc.status, "text/plain", exc.reason.encode()


async def receive_callback(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET`` (the URL check) and ``POST /mp/callback`` as a plain ASGI endpoint, ahead of the console's stack."""
    status, content_type, body = await _answer(scope, receive)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", f"{content_type}; charset=utf-8".encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- API


ADMIN_ROLES = ("admin", "planner")


class QrCodeIn(BaseModel):
    channel_id: int
    account_id: int
    permanent: bool = False
    expire_seconds: int = Field(service.TEMPORARY_QR_MAX_SECONDS, ge=60, le=service.TEMPORARY_QR_MAX_SECONDS)


class QrCodeOut(BaseModel):
    id: int
    channel_id: int
    account_id: int
    scene: str
    permanent: bool
    ticket: str
    url: str
    expires_at: str | None


def _editor(viewer: Any) -> None:
    if viewer.role not in ADMIN_ROLES:
        raise Forbidden("Your role may not change the Official Account")


@api.post("/qrcodes", response_model=QrCodeOut, status_code=201)
def create_qrcode(data: Annotated[QrCodeIn, Body()], session: SessionDep, viewer: ApiViewer) -> QrCodeOut:
    """A parametric QR code (temporary or permanent string scene) for a channel: follows through it are the
    channel's."""
    _editor(viewer)
    mp_api = client.api_for(session)
    if mp_api is None:
        raise Invalid("Set the Official Account's appid and AppSecret first")
    code = service.create_qrcode(session, api=mp_api, channel_id=data.channel_id, account_id=data.account_id,
                                 permanent=data.permanent, expire_seconds=data.expire_seconds)
    session.commit()
    return QrCodeOut(id=code.id, channel_id=code.channel_id, account_id=code.account_id, scene=code.scene,
                     permanent=code.permanent, ticket=code.ticket, url=code.url,
                     expires_at=code.expires_at.isoformat() if code.expires_at else None)


@api.post("/accounts/{account_id}/sync-followers", status_code=202)
def sync_followers(account_id: int, session: SessionDep, viewer: ApiViewer) -> dict[str, int]:
    """Start the follower sync (user/get + user/info/batchget) as a job."""
    _editor(viewer)
    from siyu.accounts.models import Account, AccountKind

    account = session.get(Account, account_id)
    if account is None or account.kind != AccountKind.mp.value:
        raise Invalid("Account {account_id} is not an Official Account", field="account_id", account_id=account_id)
    job_id = jobs.submit_sync(session, account_id=account_id, actor=viewer)
    session.commit()
    return {"job_id": job_id}


# ---------------------------------------------------------------- console


LABELS = {"appid": N_("AppID"), "token": N_("Token"), "aes_key": N_("EncodingAESKey"), "secret": N_("AppSecret"),
          "api_base": N_("API base")}


def _connection(request: Request, session: SessionDep, *, status_code: int = 200, error: str = "",
                notice: str = "") -> Response:
    from sqlalchemy import func, select

    from siyu.accounts.models import Account, AccountKind
    from siyu.mp.models import MpFollower, MpSyncState
    from siyu.wecom.config import mask

    current = mp_config.effective(session)
    rows = [(name, _(label), mask(getattr(current, name)) if name in mp_config.SECRET_FIELDS
             else getattr(current, name), current.source.get(name, "")) for name, label in LABELS.items()]
    following: dict[int, int] = {a: int(n) for a, n in session.execute(select(MpFollower.account_id, func.count())
                                 .where(MpFollower.subscribed.is_(True)).group_by(MpFollower.account_id))}
    synced = {s.account_id: s.finished_at for s in session.scalars(select(MpSyncState))}
    accounts = [(a, following.get(a.id, 0), synced.get(a.id)) for a in session.scalars(
        select(Account).where(Account.kind == AccountKind.mp.value).order_by(Account.id))]
    return render(request, "mp/connection.html", status_code=status_code, nav_active="wecom",
                  title=_("Official Account connection"), rows=rows, configured=current.can_receive, error=error,
                  notice=notice, callback_url=str(request.base_url).rstrip("/") + "/mp/callback",
                  secret_fields=mp_config.SECRET_FIELDS, accounts=accounts)


@pages.get("/mp", response_class=HTMLResponse)
def connection_page(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    return _connection(request, session, notice=_("Saved.") if request.query_params.get("saved") else "")


@pages.post("/mp", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def connection_save(request: Request, session: SessionDep, viewer: AdminPageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str) and k in mp_config.FIELDS}
    try:
        mp_config.save(session, values=values, actor=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _connection(request, session, status_code=exc.status_code, error=exc.message)
    return RedirectResponse("/mp?saved=1", status_code=303)
