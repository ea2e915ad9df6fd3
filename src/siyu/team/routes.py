from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy.orm import Session

from siyu.accounts import service as accounts_service
from siyu.core.deps import (
    SESSION_ID_KEY,
    AdminApiViewer,
    AdminPageViewer,
    ApiUser,
    CsrfChecked,
    SessionDep,
    client_address,
)
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.settings import local_today
from siyu.core.viewer import Viewer
from siyu.team import audit_labels, service
from siyu.team.models import Role
from siyu.team.schemas import AuditOut, SessionOut, TokenOut, UserIn, UserOut, UserUpdate
from siyu.web.render import render

api = APIRouter(tags=["team"])
USER_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such user."}}
pages = APIRouter(include_in_schema=False)
AUDIT_PAGE_SIZE = 50


# ---------------------------------------------------------------- API


@api.post("/auth/token", response_model=TokenOut, responses={
    401: {"description": "Wrong username or password"},
    429: {"description": "Too many failed logins: locked for a while"}})
def create_token(request: Request, session: SessionDep,
                 form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenOut:
    user = service.authenticate(session, username=form.username, password=form.password,
                                address=client_address(request))
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


@api.patch("/users/{user_id}", response_model=UserOut, responses={
    **USER_NOT_FOUND, 409: {"description": "The change would leave the company without an active administrator."}})
def update_user(session: SessionDep, viewer: AdminApiViewer, user_id: Id, data: UserUpdate) -> UserOut:
    user = service.update_user(session, user_id=user_id, data=data, actor=viewer)
    session.commit()
    return UserOut.model_validate(user)


@api.get("/users/{user_id}/sessions", responses=USER_NOT_FOUND)
def list_sessions(session: SessionDep, viewer: AdminApiViewer, user_id: Id) -> dict[str, list[SessionOut]]:
    """The user's live console sessions (where and when they logged in, when last seen)."""
    service.get_user(session, user_id=user_id)
    return {"items": [SessionOut.model_validate(s) for s in service.live_sessions(session, user_id=user_id)]}


@api.post("/users/{user_id}/logout-everywhere", responses=USER_NOT_FOUND)
def logout_everywhere(session: SessionDep, viewer: AdminApiViewer, user_id: Id) -> dict[str, int]:
    """End every console session and API token of the user (audited)."""
    ended = service.log_out_everywhere(session, user_id=user_id, actor=viewer)
    session.commit()
    return {"sessions_ended": ended}


@api.post("/users/{user_id}/unlock", response_model=UserOut, responses=USER_NOT_FOUND)
def unlock(session: SessionDep, viewer: AdminApiViewer, user_id: Id) -> UserOut:
    """Lift a lock left by failed logins, from every address (audited)."""
    user = service.unlock_user(session, user_id=user_id, actor=viewer)
    session.commit()
    return UserOut.model_validate(user)


def _audit_filter(user_id: str | None = None, entity_type: str | None = None, action: str | None = None,
                  since: str | None = None, until: str | None = None) -> service.AuditFilter:
    """The audit filters from query text; a bad date or user is a Chinese message, never a 500."""
    def day(value: str | None, field: str) -> date | None:
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise Invalid("Not a date: {value}", field=field, value=value[:20]) from exc

    who: int | None = None
    if user_id:
        if not user_id.isdigit() or len(user_id) > 12:
            raise Invalid("Unknown user", field="user_id")
        who = int(user_id)
    return service.AuditFilter(user_id=who, entity_type=entity_type or None, action=action or None,
                               since=day(since, "since"), until=day(until, "until"))


AuditFilterDep = Annotated[service.AuditFilter, Depends(_audit_filter)]


@api.get("/audit")
def list_audit(
    session: SessionDep,
    viewer: AdminApiViewer,
    flt: AuditFilterDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, object]:
    """The audit log, newest first; filter by ``user_id``, ``entity_type``, ``action`` and local
    dates ``since``/``until`` (YYYY-MM-DD, inclusive). Each item carries its labels in words."""
    page = service.list_audit(session, flt=flt, limit=limit, cursor=cursor)
    names = service.audit_actor_names(session, page.items)
    items = []
    for entry in page.items:
        described = audit_labels.describe(entry, actor_names=names)
        items.append({**AuditOut.model_validate(entry).model_dump(mode="json"), "actor_display": described.actor,
                      "action_label": described.action, "entity_label": described.kind, "url": described.url})
    return {"items": items, "next_cursor": page.next_cursor}


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
        user = service.authenticate(session, username=username, password=password, address=client_address(request))
    except DomainError as exc:
        return render(request, "team/login.html", status_code=exc.status_code, next=_safe_next(next),
                      error=exc.message, username=username)
    service.record_audit(session, actor=service.viewer_for(user), action="login", entity_type="user",
                         entity_id=user.id, summary=user.username)
    session_id = service.start_session(session, user=user, user_agent=request.headers.get("user-agent", ""),
                                       ip=client_address(request))
    session.commit()
    request.session.clear()  # a fresh session on login: no fixation
    request.session[SESSION_ID_KEY] = session_id
    return RedirectResponse(_safe_next(next), status_code=303)


@pages.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request, session: SessionDep) -> Response:
    session_id = request.session.get(SESSION_ID_KEY)
    if isinstance(session_id, str):
        service.end_session(session, session_id=session_id)  # a copy of the cookie is worthless from now on
        session.commit()
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _users_page(request: Request, session: SessionDep, viewer: Viewer, *, error: str | None = None,
                status_code: int = 200, new_password: tuple[Any, str] | None = None) -> Response:
    accounts = accounts_service.visible_accounts(session, viewer=viewer)
    live: dict[int, int] = {}
    for row in service.live_sessions(session):
        live[row.user_id] = live.get(row.user_id, 0) + 1
    return render(request, "team/users.html", status_code=status_code, nav_active="users",
                  users=service.list_users(session), accounts=accounts, roles=list(Role),
                  account_names={a.id: a.display_name for a in accounts}, live_sessions=live,
                  locked=service.locked_usernames(session), error=error, new_password=new_password,
                  title=_("Team"))


@pages.get("/users", response_class=HTMLResponse)
def users_page(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    return _users_page(request, session, viewer)


@pages.post("/users/{user_id}", response_class=HTMLResponse, dependencies=[CsrfChecked])
def users_update(
    request: Request,
    session: SessionDep,
    viewer: AdminPageViewer,
    user_id: Id,
    role: Annotated[str, Form()],
    is_active: Annotated[str, Form()] = "",
    display_name: Annotated[str | None, Form()] = None,
    account_ids: Annotated[list[Id] | None, Form()] = None,
    accounts_in_form: Annotated[str, Form()] = "",
) -> Response:
    from pydantic import ValidationError

    try:
        # The full edit form carries the accounts (none ticked is none); the table's quick form does not.
        accounts = (account_ids or []) if accounts_in_form else None
        data = UserUpdate(role=role, is_active=is_active == "on", account_ids=accounts,
                          display_name=(display_name or "").strip() or None)
        service.update_user(session, user_id=user_id, data=data, actor=viewer)
        session.commit()
    except (DomainError, ValidationError) as exc:
        session.rollback()
        if isinstance(exc, DomainError) and exc.status_code == 404:
            raise
        message = exc.message if isinstance(exc, DomainError) else _validation_summary(exc)
        return _users_page(request, session, viewer, error=message, status_code=422)
    return RedirectResponse("/users", status_code=303)


@pages.post("/users/{user_id}/logout-everywhere", dependencies=[CsrfChecked])
def users_logout_everywhere(session: SessionDep, viewer: AdminPageViewer, user_id: Id) -> Response:
    service.log_out_everywhere(session, user_id=user_id, actor=viewer)
    session.commit()
    return RedirectResponse("/users", status_code=303)


@pages.post("/users/{user_id}/reset-password", response_class=HTMLResponse, dependencies=[CsrfChecked])
def users_reset_password(request: Request, session: SessionDep, viewer: AdminPageViewer, user_id: Id) -> Response:
    """A generated password, shown once on this answer (never stored in clear, not in any link)."""
    try:
        password = service.reset_password(session, user_id=user_id, actor=viewer)
        session.commit()
    except Invalid as exc:
        session.rollback()
        return _users_page(request, session, viewer, error=exc.message, status_code=422)
    user = service.get_user(session, user_id=user_id)
    response = _users_page(request, session, viewer, new_password=(user, password))
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.post("/users/{user_id}/unlock", dependencies=[CsrfChecked])
def users_unlock(session: SessionDep, viewer: AdminPageViewer, user_id: Id) -> Response:
    service.unlock_user(session, user_id=user_id, actor=viewer)
    session.commit()
    return RedirectResponse("/users", status_code=303)


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
        return _users_page(request, session, viewer, error=message, status_code=422)
    return RedirectResponse("/users", status_code=303)


def _validation_summary(exc: Exception) -> str:
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


@pages.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, session: SessionDep, viewer: AdminPageViewer, cursor: str | None = None,
               user_id: str | None = None, entity_type: str | None = None, action: str | None = None,
               since: str | None = None, until: str | None = None) -> Response:
    try:
        flt = _audit_filter(user_id, entity_type, action, since, until)
        page = service.list_audit(session, flt=flt, limit=AUDIT_PAGE_SIZE, cursor=cursor)
        error = None
    except DomainError as exc:
        if exc.status_code != 422:
            raise
        flt, error = service.AuditFilter(), exc.message
        page = service.list_audit(session, flt=flt, limit=AUDIT_PAGE_SIZE)
    names = service.audit_actor_names(session, page.items)
    entries = [(entry, audit_labels.describe(entry, actor_names=names)) for entry in page.items]
    return render(request, "team/audit.html", status_code=422 if error else 200, nav_active="audit", page=page,
                  entries=entries, flt=flt, params=flt.params(), error=error,
                  actors=service.audit_actors(session),
                  kinds=sorted(((k, audit_labels.kind_label(k)) for k in audit_labels.KINDS), key=lambda kv: kv[1]),
                  actions=[(a, audit_labels.action_label(a)) for a in audit_labels.ACTIONS],
                  export_max=service.AUDIT_EXPORT_MAX_ROWS, title=_("Audit log"))


@pages.get("/audit/export.csv")
def audit_export(session: SessionDep, viewer: AdminPageViewer, flt: AuditFilterDep) -> Response:
    """The filtered log as CSV, streamed in batches from a session of its own; the export is audited
    (with its filter and row count) before the first byte goes out."""
    rows = service.count_audit(session, flt=flt)
    service.record_audit(session, actor=viewer, action="export", entity_type="audit", entity_name="",
                         summary=_("{n} audit entries exported as CSV", n=rows),
                         after={"filter": flt.params(), "rows": rows, "format": "csv"})
    session.commit()
    bind = session.get_bind()

    def body() -> Iterator[bytes]:
        with Session(bind=bind) as own:
            yield from service.iter_audit_csv(own, flt=flt)

    filename = f"audit-{local_today():%Y%m%d}.csv"
    return StreamingResponse(body(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Cache-Control": "no-store"})
