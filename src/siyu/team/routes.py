from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import OAuth2PasswordRequestForm

from siyu.accounts import service as accounts_service
from siyu.core.deps import (
    SESSION_STAMP_KEY,
    SESSION_USER_KEY,
    AdminApiViewer,
    AdminPageViewer,
    ApiUser,
    CsrfChecked,
    SessionDep,
)
from siyu.core.errors import DomainError
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.security import password_stamp
from siyu.team import service
from siyu.team.models import Role
from siyu.team.schemas import AuditOut, TokenOut, UserIn, UserOut, UserUpdate
from siyu.web.render import render

api = APIRouter(tags=["team"])
pages = APIRouter(include_in_schema=False)


# ---------------------------------------------------------------- API


@api.post("/auth/token", response_model=TokenOut, responses={
    401: {"description": "Wrong username or password"},
    429: {"description": "Too many failed logins: locked for a while"}})
def create_token(session: SessionDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenOut:
    user = service.authenticate(session, username=form.username, password=form.password)
    session.commit()
    issued = service.issue_token(user)
    return TokenOut(access_token=issued.token, expires_at=issued.expires_at)


@api.get("/users/me", response_model=UserOut)
def me(user: ApiUser) -> UserOut:
    return UserOut.model_validate(user)


@api.get("/users")
def list_users(session: SessionDep, viewer: AdminApiViewer) -> dict[str, list[UserOut]]:
    return {"items": [UserOut.model_validate(u) for u in service.list_users(session)]}


@api.post("/users", response_model=UserOut, status_code=201)
def create_user(session: SessionDep, viewer: AdminApiViewer, data: UserIn) -> UserOut:
    user = service.create_user(session, data=data, actor=viewer)
    session.commit()
    return UserOut.model_validate(user)


@api.patch("/users/{user_id}", response_model=UserOut)
def update_user(session: SessionDep, viewer: AdminApiViewer, user_id: Id, data: UserUpdate) -> UserOut:
    user = service.update_user(session, user_id=user_id, data=data, actor=viewer)
    session.commit()
    return UserOut.model_validate(user)


@api.get("/audit")
def list_audit(
    session: SessionDep,
    viewer: AdminApiViewer,
    entity_type: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, object]:
    page = service.list_audit(session, entity_type=entity_type, limit=limit, cursor=cursor)
    return {"items": [AuditOut.model_validate(e) for e in page.items], "next_cursor": page.next_cursor}


# ---------------------------------------------------------------- console pages


def _safe_next(target: str | None) -> str:
    # Only local paths: never an open redirect to another site.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


@pages.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "team/login.html", next=_safe_next(next), error=None, username="")


@pages.post("/login", response_class=HTMLResponse, dependencies=[CsrfChecked])
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        user = service.authenticate(session, username=username, password=password)
    except DomainError as exc:
        return render(request, "team/login.html", status_code=exc.status_code, next=_safe_next(next),
                      error=exc.message, username=username)
    service.record_audit(session, actor=service.viewer_for(user), action="login", entity_type="user",
                         entity_id=user.id, summary=user.username)
    session.commit()
    request.session.clear()  # a fresh session on login: no fixation
    request.session[SESSION_USER_KEY] = user.id
    request.session[SESSION_STAMP_KEY] = password_stamp(user.password_hash)
    return RedirectResponse(_safe_next(next), status_code=303)


@pages.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@pages.get("/users", response_class=HTMLResponse)
def users_page(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    accounts = accounts_service.visible_accounts(session, viewer=viewer)
    return render(request, "team/users.html", nav_active="users", users=service.list_users(session),
                  accounts=accounts, roles=list(Role), account_names={a.id: a.display_name for a in accounts},
                  error=None, title=_("Team"))


@pages.post("/users", response_class=HTMLResponse, dependencies=[CsrfChecked])
def users_create(
    request: Request,
    session: SessionDep,
    viewer: AdminPageViewer,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    role: Annotated[str, Form()],
    display_name: Annotated[str, Form()] = "",
    account_ids: Annotated[list[Id] | None, Form()] = None,
) -> Response:
    from pydantic import ValidationError

    try:
        data = UserIn(username=username, password=password, role=role, display_name=display_name,
                      account_ids=account_ids or [])
        service.create_user(session, data=data, actor=viewer)
        session.commit()
    except (DomainError, ValidationError) as exc:
        session.rollback()
        message = exc.message if isinstance(exc, DomainError) else _validation_summary(exc)
        accounts = accounts_service.visible_accounts(session, viewer=viewer)
        return render(request, "team/users.html", status_code=422, nav_active="users",
                      users=service.list_users(session), accounts=accounts, roles=list(Role),
                      account_names={a.id: a.display_name for a in accounts}, error=message, title=_("Team"))
    return RedirectResponse("/users", status_code=303)


def _validation_summary(exc: Exception) -> str:
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


@pages.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, session: SessionDep, viewer: AdminPageViewer, entity_type: str | None = None,
               cursor: str | None = None) -> Response:
    page = service.list_audit(session, entity_type=entity_type or None, limit=50, cursor=cursor)
    return render(request, "team/audit.html", nav_active="audit", page=page, entity_type=entity_type or "",
                  title=_("Audit log"))
