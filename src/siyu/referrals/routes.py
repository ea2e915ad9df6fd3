"""老带新 / 任务宝: the API (``/api/v1/referrals``), the console's ``/referrals`` pages and the public invite link.

Thin: parse, call ``referrals.service``, render.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from siyu.accounts import service as accounts_service
from siyu.accounts.models import Account
from siyu.channels import images
from siyu.channels import service as channels_service
from siyu.channels.models import Channel
from siyu.core.db import utcnow
from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_id
from siyu.core.viewer import Viewer
from siyu.coupons import service as coupons_service
from siyu.customers.models import Customer
from siyu.referrals import service
from siyu.referrals.models import STATUS_LABELS, InviteCode, ReferralProgramme
from siyu.referrals.schemas import (
    EntryOut,
    InviteIn,
    InviteOut,
    ManualCreditIn,
    MpQrIn,
    ProgrammeIn,
    ProgrammeOut,
    StandingOut,
    TierIn,
)
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render, templates

api = APIRouter(tags=["referrals"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
FORM_TIERS = 3
LABELS = {"name": N_("Programme name"), "account_ids": N_("Accounts"), "reversal_days": N_("Reversal window (days)"),
          "tiers": N_("Tiers"), "first_order_gift": N_("First-order gift"), "poster_text": N_("Poster text"),
          "state": N_("Invite code"), "referee_id": N_("New friend"), "customer_id": N_("Customer")}


def _out(session: Session, programme: ReferralProgramme) -> ProgrammeOut:
    out = ProgrammeOut.model_validate(programme)
    out.referrers, out.credited = service.totals(session, [programme.id])[programme.id]
    return out


def _invite_out(request: Request, invite: InviteCode) -> InviteOut:
    out = InviteOut.model_validate(invite)
    out.link = str(request.url_for("referral_link", state=invite.state))
    return out


# ---------------------------------------------------------------- API


@api.get("/referrals", response_model=dict[str, list[ProgrammeOut]])
def api_list(session: SessionDep, viewer: ApiViewer) -> dict[str, list[ProgrammeOut]]:
    return {"items": [_out(session, p) for p in service.list_programmes(session, viewer=viewer)]}


@api.post("/referrals", response_model=ProgrammeOut, status_code=201)
def api_create(session: SessionDep, viewer: ApiViewer, data: ProgrammeIn) -> ProgrammeOut:
    """A referral programme: the accounts referees add, the 任务宝 tiers, the reversal window."""
    programme = service.create_programme(session, data=data, viewer=viewer)
    session.commit()
    return _out(session, programme)


@api.get("/referrals/{programme_id}", response_model=ProgrammeOut)
def api_get(session: SessionDep, viewer: ApiViewer, programme_id: Id) -> ProgrammeOut:
    return _out(session, service.get_programme(session, programme_id=programme_id, viewer=viewer))


@api.post("/referrals/{programme_id}/invites", response_model=InviteOut, status_code=201)
def api_invite(request: Request, session: SessionDep, viewer: ApiViewer, programme_id: Id,
               data: InviteIn) -> InviteOut:
    """The customer's personal invite code (a WeCom 「联系我」 code whose state names them, and a tracked link)."""
    invite = service.invite_for(session, programme_id=programme_id, customer_id=data.customer_id, viewer=viewer)
    session.commit()
    return _invite_out(request, invite)


def _mp_api(session: Session) -> Any:
    from siyu.mp import client as mp_client

    api_client = mp_client.api_for(session)
    if api_client is None:
        raise Invalid("referrals.mp_qr.not_connected",
                      field="account_id")
    return api_client


@api.post("/referrals/{programme_id}/invites/{customer_id}/mp-qrcode", response_model=InviteOut, status_code=201)
def api_mp_qrcode(request: Request, session: SessionDep, viewer: ApiViewer, programme_id: Id, customer_id: Id,
                  data: MpQrIn) -> InviteOut:
    """The customer's invite as a 公众号 parametric QR code (qrcode/create; scene = the invite's state)."""
    invite = service.make_mp_qrcode(session, programme_id=programme_id, customer_id=customer_id, viewer=viewer,
                                    api=_mp_api(session), account_id=data.account_id, permanent=data.permanent,
                                    expire_seconds=data.expire_seconds)
    session.commit()
    return _invite_out(request, invite)


@api.post("/referrals/{programme_id}/credits", response_model=dict[str, Any])
def api_credit(session: SessionDep, viewer: ApiViewer, programme_id: Id, data: ManualCreditIn) -> dict[str, Any]:
    """A personal account's referral, recorded by the operator (the same anti-fraud rules as a WeCom add)."""
    outcome = service.record_manual(session, programme_id=programme_id, referee_id=data.referee_id,
                                    state=data.state, viewer=viewer)
    session.commit()
    return {"credited": outcome.credited, "reason": outcome.reason,
            "message": _(service.REFUSED[outcome.reason]) if outcome.reason else "", "invites": outcome.invites}


@api.get("/referrals/{programme_id}/leaderboard", response_model=list[StandingOut])
def api_leaderboard(session: SessionDep, viewer: ApiViewer, programme_id: Id) -> list[StandingOut]:
    service.get_programme(session, programme_id=programme_id, viewer=viewer)
    return [StandingOut(rank=p.rank, customer_id=p.customer_id, name=viewer.text(p.name), invites=p.invites)
            for p in service.leaderboard(session, programme_id=programme_id)]


@api.get("/referrals/{programme_id}/ledger", response_model=dict[str, Any])
def api_ledger(session: SessionDep, viewer: ApiViewer, programme_id: Id) -> dict[str, Any]:
    """The latest credits and reversals, and whether every referrer's count equals their ledger sum."""
    service.get_programme(session, programme_id=programme_id, viewer=viewer)
    return {"items": [EntryOut.model_validate(e).model_dump(mode="json")
                      for e in service.ledger(session, programme_id=programme_id)],
            "balanced": not service.balance(session, programme_id=programme_id)}


# ---------------------------------------------------------------- console


def _form_context(session: Session, viewer: Viewer) -> dict[str, Any]:
    return {"accounts": accounts_service.visible_accounts(session, viewer=viewer),
            "batches": coupons_service.list_batches(session), "form_tiers": range(FORM_TIERS),
            "status_labels": {k.value: _(v) for k, v in STATUS_LABELS.items()}}


@pages.get("/referrals", response_class=HTMLResponse)
def list_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _list(request, session, viewer, errors={}, values={})


def _list(request: Request, session: Session, viewer: Viewer, *, errors: dict[str, str], values: dict[str, Any],
          status_code: int = 200) -> Response:
    programmes = service.list_programmes(session, viewer=viewer)
    return render(request, "referrals/list.html", status_code=status_code, nav_active="referrals",
                  title=_("Referrals"), programmes=programmes,
                  totals=service.totals(session, [p.id for p in programmes]), errors=errors, values=values,
                  **_form_context(session, viewer))


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _int(form: FormData, key: str) -> int | None:
    return parse_id(_text(form, key))


def _programme_in(form: FormData) -> ProgrammeIn:
    tiers = []
    for n in range(FORM_TIERS):
        invites = _int(form, f"tier_{n}_invites")
        if invites:
            tiers.append(TierIn(invites=invites, coupon_batch_id=_int(form, f"tier_{n}_batch"),
                                gift=_text(form, f"tier_{n}_gift")))
    return ProgrammeIn(name=_text(form, "name"), reversal_days=_int(form, "reversal_days") or 0,
                       account_ids=[i for a in form.getlist("account_ids") if isinstance(a, str)
                                    and (i := parse_id(a)) is not None],
                       tiers=tiers, first_order_batch_id=_int(form, "first_order_batch_id"),
                       first_order_gift=_text(form, "first_order_gift"), poster_text=_text(form, "poster_text"))


@pages.post("/referrals", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def create_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}
    try:
        programme = service.create_programme(session, data=_programme_in(form), viewer=viewer)
    except (ValidationError, DomainError) as exc:
        session.rollback()
        if isinstance(exc, DomainError) and exc.status_code in (403, 404):
            raise
        return _list(request, session, viewer, errors=field_errors(exc, labels=LABELS), values=values,
                     status_code=422)
    session.commit()
    return RedirectResponse(f"/referrals/{programme.id}", status_code=303)


def _detail(request: Request, session: Session, viewer: Viewer, programme_id: int, *,
            errors: dict[str, str] | None = None, notice: str = "", status_code: int = 200) -> Response:
    programme = service.get_programme(session, programme_id=programme_id, viewer=viewer)
    entries = service.ledger(session, programme_id=programme.id, limit=50)
    invites = service.invites_of(session, programme_id=programme.id, limit=100)
    ids = {e.referrer_id for e in entries} | {e.referee_id for e in entries} | {i.customer_id for i in invites}
    names = dict(session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids))).all())
    batches = {b.id: b.name for b in coupons_service.list_batches(session)}
    return render(request, "referrals/detail.html", status_code=status_code, nav_active="referrals",
                  title=programme.name, programme=programme, tiers=service.tier_progress(session, programme=programme),
                  board=service.leaderboard(session, programme_id=programme.id), entries=entries, invites=invites,
                  rewards=service.rewards(session, programme_id=programme.id, limit=50), names=names,
                  batches=batches, balanced=not service.balance(session, programme_id=programme.id),
                  totals=service.totals(session, [programme.id])[programme.id], errors=errors or {}, notice=notice,
                  has_mp=bool(service.mp_accounts(session, programme)), now=utcnow(),
                  status_labels={k.value: _(v) for k, v in STATUS_LABELS.items()})


@pages.get("/referrals/{programme_id}", response_class=HTMLResponse)
def detail_page(request: Request, session: SessionDep, viewer: PageViewer, programme_id: Id) -> Response:
    """The programme's 任务宝 page: the tiers and who reached them, the leaderboard, the ledger."""
    return _detail(request, session, viewer, programme_id)


@pages.post("/referrals/{programme_id}/invites", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def invite_submit(request: Request, session: SessionDep, viewer: PageViewer, programme_id: Id,
                  form: FormDep) -> Response:
    customer_id = _int(form, "customer_id")

    def make() -> None:
        if customer_id is None:
            raise Invalid("Give the customer's number", field="customer_id")
        service.invite_for(session, programme_id=programme_id, customer_id=customer_id, viewer=viewer)

    return _invite_action(request, session, viewer, programme_id, make)


@pages.post("/referrals/{programme_id}/invites/{invite_id}/mp-qrcode", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def mp_qrcode_submit(request: Request, session: SessionDep, viewer: PageViewer, programme_id: Id, invite_id: Id,
                     form: FormDep) -> Response:
    invite = session.get(InviteCode, invite_id)
    if invite is None or invite.programme_id != programme_id:
        raise NotFound("Invite code not found")
    return _invite_action(request, session, viewer, programme_id, lambda: service.make_mp_qrcode(
        session, programme_id=programme_id, customer_id=invite.customer_id, viewer=viewer, api=_mp_api(session),
        permanent=form.get("permanent") == "1"))


def _invite_action(request: Request, session: Session, viewer: Viewer, programme_id: int,
                   action: Callable[[], object]) -> Response:
    """An invite made from the programme page: committed and back to the invites, or the page with the reason."""
    try:
        action()
    except DomainError as exc:
        session.rollback()
        if isinstance(exc, service.ProgrammeNotFound):
            raise
        return _detail(request, session, viewer, programme_id, errors=field_errors(exc, labels=LABELS),
                       status_code=422)
    session.commit()
    return RedirectResponse(f"/referrals/{programme_id}#invites", status_code=303)


@pages.post("/referrals/{programme_id}/credits", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def credit_submit(request: Request, session: SessionDep, viewer: PageViewer, programme_id: Id,
                  form: FormDep) -> Response:
    referee_id = _int(form, "referee_id")
    try:
        if referee_id is None:
            raise Invalid("Give the customer's number", field="referee_id")
        outcome = service.record_manual(session, programme_id=programme_id, referee_id=referee_id,
                                        state=_text(form, "state"), viewer=viewer)
    except DomainError as exc:
        session.rollback()
        return _detail(request, session, viewer, programme_id, errors=field_errors(exc, labels=LABELS),
                       status_code=422)
    session.commit()
    notice = _("Credited") if outcome.credited else _("Not credited: {reason}",
                                                       reason=_(service.REFUSED[outcome.reason]))
    return _detail(request, session, viewer, programme_id, notice=notice)


@pages.post("/referrals/{programme_id}/end", dependencies=[FormRead, CsrfChecked])
def end_submit(session: SessionDep, viewer: PageViewer, programme_id: Id) -> Response:
    service.end_programme(session, programme_id=programme_id, viewer=viewer)
    session.commit()
    return RedirectResponse(f"/referrals/{programme_id}", status_code=303)


def _stand_in(programme: ReferralProgramme) -> Channel:
    """The programme as channels' public face sees a channel (never stored): accounts and what is promised."""
    return Channel(account_ids=list(programme.account_ids or []), qr_image_key="",
                   incentive_text=programme.poster_text)


def _face(session: Session, invite: InviteCode) -> tuple[channels_service.PublicFace, Account | None]:
    programme = session.get_one(ReferralProgramme, invite.programme_id)
    account = session.get(Account, programme.account_ids[0]) if programme.account_ids else None
    face = channels_service.public_face(_stand_in(programme), account)
    if invite.qr_url.startswith("https://"):  # WeCom's own 「联系我」 QR of this invite
        face = replace(face, qr_image_url=invite.qr_url)
    return face, account


def _qr_data(request: Request, invite: InviteCode) -> str:
    """What the invite's QR encodes: its live 公众号 parametric code (a scan follows the 公众号 with the
    invite's scene), else the tracked link."""
    if service.mp_qr_live(invite):
        return invite.mp_qr_url
    return str(request.url_for("referral_link", state=invite.state))


@pages.get("/referrals/invites/{invite_id}/poster.png")
def poster_image(request: Request, session: SessionDep, viewer: PageViewer, invite_id: Id) -> Response:
    """The customer's invite poster: what the programme promises and a QR of their tracked link."""
    invite = session.get(InviteCode, invite_id)
    if invite is None:
        raise NotFound("Invite code not found")
    service.get_programme(session, programme_id=invite.programme_id, viewer=viewer)
    face, _account = _face(session, invite)
    try:
        body = images.poster_png(title=face.title, incentive=face.incentive,
                                 qr_data=_qr_data(request, invite),
                                 badge=(face.persona or face.brand)[:1],
                                 footer=_("Press and hold the QR code to add us"))
    except images.FontMissing as exc:
        raise NotFound("No Chinese font is installed on the server (fonts-noto-cjk); the poster cannot be drawn") \
            from exc
    return Response(body, media_type="image/png",
                    headers={"Content-Disposition": f'inline; filename="invite-{invite.state}.png"'})


@pages.get("/r/{state}", response_class=HTMLResponse, name="referral_link")
def referral_link(request: Request, session: SessionDep, state: str) -> Response:
    """The public page behind an invite code: who to add (the programme's account), never who invited."""
    invite = service.invite_by_state(session, state[:30])
    if invite is None:
        raise NotFound("This code is not valid")
    face, account = _face(session, invite)
    live = service.mp_qr_live(invite)
    return templates.TemplateResponse(request, "channels/link.html", {
        "face": face, "account": account, "has_qr": live,
        "qr_src": str(request.url_for("referral_mp_qr", state=invite.state)) if live else "",
        "qr_caption": _("referrals.mp_qr.caption") if live else ""})


@pages.get("/r/{state}/mp-qr.png", name="referral_mp_qr")
def referral_mp_qr(session: SessionDep, state: str) -> Response:
    """The invite's 公众号 parametric QR code as an image (public, like the link page it is shown on)."""
    invite = service.invite_by_state(session, state[:30])
    if invite is None or not service.mp_qr_live(invite):
        raise NotFound("This code is not valid")
    return Response(images.qr_png(invite.mp_qr_url), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})
