from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from siyu.accounts import media, qr_renewal, service
from siyu.accounts.models import RAISED_CAPACITY, STANDARD_CAPACITY, AccountKind, AccountStatus
from siyu.accounts.schemas import AccountIn, AccountList, AccountOut, AccountUpdate
from siyu.accounts.service import AccountView
from siyu.core import storage
from siyu.core.deps import AdminApiViewer, AdminPageViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_id
from siyu.core.viewer import Viewer
from siyu.team import service as team_service
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render

api = APIRouter(tags=["accounts"])
pages = APIRouter(include_in_schema=False)


def account_out(view: AccountView) -> AccountOut:
    out = AccountOut.model_validate(view.account)
    out.friend_count = view.friend_count
    out.utilisation = round(view.utilisation, 4)
    out.near_capacity = view.near_capacity
    return out


@api.get("/accounts", response_model=AccountList)
def list_accounts(session: SessionDep, viewer: ApiViewer) -> AccountList:
    return AccountList(items=[account_out(v) for v in service.list_accounts(session, viewer=viewer)])


@api.get("/accounts/{account_id}", response_model=AccountOut)
def get_account(session: SessionDep, viewer: ApiViewer, account_id: Id) -> AccountOut:
    return account_out(service.get_account_view(session, account_id=account_id, viewer=viewer))


@api.post("/accounts", response_model=AccountOut, status_code=201)
def create_account(session: SessionDep, viewer: AdminApiViewer, data: AccountIn) -> AccountOut:
    account = service.create_account(session, data=data, actor=viewer)
    session.commit()
    return account_out(service.get_account_view(session, account_id=account.id, viewer=viewer))


@api.patch("/accounts/{account_id}", response_model=AccountOut)
def update_account(session: SessionDep, viewer: AdminApiViewer, account_id: Id, data: AccountUpdate) -> AccountOut:
    service.update_account(session, account_id=account_id, data=data, actor=viewer)
    session.commit()
    return account_out(service.get_account_view(session, account_id=account_id, viewer=viewer))


@pages.get("/accounts", response_class=HTMLResponse)
def accounts_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    accounts = service.list_accounts(session, viewer=viewer)
    owners = team_service.display_names(session, user_ids={v.account.owner_user_id for v in accounts
                                                           if v.account.owner_user_id})
    return render(request, "accounts/list.html", nav_active="accounts", accounts=accounts, owners=owners,
                  title=_("Accounts"))


# ---------------------------------------------------------------- console: create, edit, retire

FORM_LABELS = {
    "display_name": N_("Account name"), "kind": N_("Type"), "wechat_id": N_("WeChat ID"),
    "wecom_userid": N_("WeCom ID"),
    "open_kfid": N_("WeCom ID"), "store": N_("Store"), "brand": N_("Brand"), "tier_served": N_("Tier served"),
    "owner_user_id": N_("Owner"), "friend_capacity": N_("Capacity"), "positioning": N_("Positioning"),
    "signature": N_("Signature"), "greeting": N_("Greeting"), "avatar": N_("Avatar"),
    "moments_cover": N_("Moments cover"), "qr_image": N_("Own WeChat QR code"),
    "qr_expires_on": N_("QR code valid until"),
}
TEXT_FIELDS = ("display_name", "wechat_id", "store", "brand", "tier_served", "positioning", "signature", "greeting")
IMAGES = {"avatar": "avatar_url", "moments_cover": "moments_cover_url", "qr_image": "qr_image_url"}


def _form_text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _form_values(form: FormData) -> dict[str, Any]:
    """The account form as the model takes it; images are stored first and their paths taken."""
    values: dict[str, Any] = {key: _form_text(form, key) for key in TEXT_FIELDS}
    capacity = _form_text(form, "friend_capacity")
    if not capacity.isascii() or not capacity.isdigit() or len(capacity) > 9:
        raise Invalid("Capacity must be a whole number from 1 to {max}", field="friend_capacity", max=RAISED_CAPACITY)
    values["friend_capacity"] = int(capacity)
    owner = _form_text(form, "owner_user_id")
    values["owner_user_id"] = parse_id(owner) if owner else None
    if owner and values["owner_user_id"] is None:
        raise Invalid("Unknown user", field="owner_user_id")
    expires = _form_text(form, "qr_expires_on")
    try:
        values["qr_expires_on"] = date.fromisoformat(expires) if expires else None
    except ValueError as exc:
        raise Invalid("Invalid date {value}; use the form 2024-05-01", field="qr_expires_on",
                      value=expires[:40]) from exc
    for name, column in IMAGES.items():
        upload = form.get(name)
        if isinstance(upload, UploadFile) and upload.filename:
            values[column] = media.save_image(upload.file, field=name)
        elif form.get(f"{name}_remove") == "1":
            values[column] = ""
    return values


def _editor(request: Request, session: Session, viewer: Viewer, *, view: AccountView | None,
            values: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
            status_code: int = 200) -> Response:
    account = view.account if view else None
    if values is None:
        values = {c: getattr(account, c) for c in (*TEXT_FIELDS, "kind", "wecom_userid", "friend_capacity",
                                                   "owner_user_id", "qr_expires_on", *IMAGES.values())} \
            if account else {"kind": AccountKind.personal.value, "friend_capacity": STANDARD_CAPACITY}
    users = team_service.list_users(session)
    return render(request, "accounts/edit.html", status_code=status_code, nav_active="accounts", view=view,
                  account=account, values=values, errors=errors or {}, users=users,
                  kinds=[(AccountKind.wecom.value, _("WeCom")), (AccountKind.personal.value, _("Personal WeChat"))],
                  standard=STANDARD_CAPACITY, raised=RAISED_CAPACITY, labels=FORM_LABELS,
                  title=account.display_name if account else _("New account"))


def _form_errors(exc: ValidationError | DomainError) -> dict[str, str]:
    return field_errors(exc, labels=FORM_LABELS)


@pages.get("/accounts/new", response_class=HTMLResponse)
def account_new_page(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    return _editor(request, session, viewer, view=None)


@pages.post("/accounts/new", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def account_create(request: Request, session: SessionDep, viewer: AdminPageViewer, form: FormDep) -> Response:
    raw = {key: _form_text(form, key) for key in (*TEXT_FIELDS, "kind", "wecom_userid", "friend_capacity",
                                                  "owner_user_id", "qr_expires_on")}
    try:
        values = _form_values(form)
        kind = raw["kind"] if raw["kind"] in (AccountKind.wecom.value, AccountKind.personal.value) else ""
        if not kind:
            raise Invalid("Choose the account's type", field="kind")
        data = AccountIn(kind=AccountKind(kind), wecom_userid=raw["wecom_userid"] or None, **values)
        account = service.create_account(session, data=data, actor=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _editor(request, session, viewer, view=None, values=raw, errors=_form_errors(exc), status_code=422)
    return RedirectResponse(f"/accounts/{account.id}/edit?saved=1", status_code=303)


@pages.get("/accounts/{account_id}/edit", response_class=HTMLResponse)
def account_edit_page(request: Request, session: SessionDep, viewer: AdminPageViewer, account_id: Id) -> Response:
    return _editor(request, session, viewer, view=service.get_account_view(session, account_id=account_id,
                                                                           viewer=viewer))


@pages.post("/accounts/{account_id}/edit", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def account_update(request: Request, session: SessionDep, viewer: AdminPageViewer, account_id: Id,
                   form: FormDep) -> Response:
    view = service.get_account_view(session, account_id=account_id, viewer=viewer)
    try:
        values = _form_values(form)
        if not values["display_name"]:
            raise Invalid("Required", field="display_name")
        service.update_account(session, account_id=account_id, data=AccountUpdate(**values), actor=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        if isinstance(exc, NotFound):
            raise
        session.rollback()
        raw = {key: _form_text(form, key) for key in (*TEXT_FIELDS, "friend_capacity", "owner_user_id",
                                                      "qr_expires_on")}
        raw.update({"kind": view.account.kind, **{c: getattr(view.account, c) for c in IMAGES.values()}})
        return _editor(request, session, viewer, view=view, values=raw, errors=_form_errors(exc), status_code=422)
    return RedirectResponse(f"/accounts/{account_id}/edit?saved=1", status_code=303)


def _qr_page(request: Request, account: Any, *, errors: dict[str, str] | None = None,
             values: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    values = values if values is not None else {"qr_expires_on": account.qr_expires_on or ""}
    return render(request, "accounts/qr.html", status_code=status_code, nav_active="accounts", account=account,
                  values=values, errors=errors or {}, labels=FORM_LABELS, notice_days=qr_renewal.RENEWAL_NOTICE_DAYS,
                  title=_("Own WeChat QR code"))


@pages.get("/accounts/{account_id}/qr", response_class=HTMLResponse)
def account_qr_page(request: Request, session: SessionDep, viewer: PageViewer, account_id: Id) -> Response:
    """A personal account's own WeChat QR code and its expiry: its operators renew it here (the renewal task's link)."""
    return _qr_page(request, service.get_personal_account(session, account_id=account_id, viewer=viewer))


@pages.post("/accounts/{account_id}/qr", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def account_qr_save(request: Request, session: SessionDep, viewer: PageViewer, account_id: Id,
                    form: FormDep) -> Response:
    account = service.get_personal_account(session, account_id=account_id, viewer=viewer)
    expires = _form_text(form, "qr_expires_on")
    try:
        try:
            expires_on = date.fromisoformat(expires) if expires else None
        except ValueError as exc:
            raise Invalid("Invalid date {value}; use the form 2024-05-01", field="qr_expires_on",
                          value=expires[:40]) from exc
        upload = form.get("qr_image")
        image = media.save_image(upload.file, field="qr_image") \
            if isinstance(upload, UploadFile) and upload.filename else None
        service.update_qr(session, account_id=account.id, image_url=image, expires_on=expires_on, actor=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        if isinstance(exc, NotFound):
            raise
        session.rollback()
        return _qr_page(request, account, errors=_form_errors(exc), values={"qr_expires_on": expires},
                        status_code=422)
    return RedirectResponse(f"/accounts/{account.id}/qr?saved=1", status_code=303)


@pages.post("/accounts/{account_id}/status", dependencies=[CsrfChecked])
def account_status(session: SessionDep, viewer: AdminPageViewer, account_id: Id, form: FormDep) -> Response:
    """Retire an account (it keeps its customers and history, and leaves pickers and rotations) or bring it back."""
    status = AccountStatus.retired if form.get("status") == AccountStatus.retired.value else AccountStatus.active
    service.update_account(session, account_id=account_id, data=AccountUpdate(status=status), actor=viewer)
    session.commit()
    return RedirectResponse(f"/accounts/{account_id}/edit?saved=1", status_code=303)


@pages.get("/media/persona/{name}")
def persona_image(name: str) -> Response:
    """A persona image (avatar, moments cover, an account's QR code): public, by its unguessable name."""
    key = media.key_for(name)
    found = storage.info(key) if key else None
    if key is None or found is None:
        raise NotFound("This file is gone")
    return StreamingResponse(storage.iter_chunks(key), media_type=str(found.meta.get("content_type", "image/png")),
                             headers={"Cache-Control": "public, max-age=86400", "Content-Length": str(found.size),
                                      "X-Content-Type-Options": "nosniff"})
