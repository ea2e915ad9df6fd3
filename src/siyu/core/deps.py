"""FastAPI dependencies: every route states in its signature what it needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from siyu.core.db import get_session
from siyu.core.errors import Forbidden, Unauthorized
from siyu.core.security import csrf_matches
from siyu.core.viewer import Viewer
from siyu.team import service as team_service
from siyu.team.models import User

SessionDep = Annotated[Session, Depends(get_session)]
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)

# The signed cookie holds only this random id (and the CSRF token); the user_session row decides.
SESSION_ID_KEY = "sid"
CSRF_SESSION_KEY = "csrf"
CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class ShownUser:
    """Who is logged in, as the page layout shows it."""

    id: int
    username: str
    display_name: str
    role: str


class LoginRequired(Unauthorized):
    """A console page was opened without a session: the handler redirects to /login."""


def api_user(session: SessionDep, token: Annotated[str | None, Depends(oauth2_scheme)]) -> User:
    if not token:
        raise Unauthorized("Not authenticated")
    return team_service.user_for_token(session, token=token)


def client_address(request: Request) -> str:
    """The caller's address (behind a proxy: as the server was told to trust, e.g. uvicorn's --proxy-headers)."""
    return request.client.host if request.client else ""


def page_user(request: Request, session: SessionDep) -> User:
    session_id = request.session.get(SESSION_ID_KEY)
    user = team_service.user_for_session(session, session_id=session_id) if isinstance(session_id, str) else None
    if user is None:
        request.session.clear()
        raise LoginRequired("Please log in")
    # The layout shows who is logged in even on an error page, which renders after this
    # request's session is closed: give templates a plain copy, not the ORM object.
    request.state.user = ShownUser(id=user.id, username=user.username, display_name=user.display_name,
                                   role=user.role)
    return user


ApiUser = Annotated[User, Depends(api_user)]
PageUser = Annotated[User, Depends(page_user)]


def api_viewer(user: ApiUser) -> Viewer:
    return team_service.viewer_for(user)


def page_viewer(user: PageUser) -> Viewer:
    return team_service.viewer_for(user)


ApiViewer = Annotated[Viewer, Depends(api_viewer)]
PageViewer = Annotated[Viewer, Depends(page_viewer)]


def require_admin_api(viewer: ApiViewer) -> Viewer:
    if not viewer.is_admin:
        raise Forbidden("Only administrators may do this")
    return viewer


def require_admin_page(viewer: PageViewer) -> Viewer:
    if not viewer.is_admin:
        raise Forbidden("Only administrators may do this")
    return viewer


AdminApiViewer = Annotated[Viewer, Depends(require_admin_api)]
AdminPageViewer = Annotated[Viewer, Depends(require_admin_page)]


async def csrf_protect(request: Request) -> None:
    """Every state-changing console request carries the session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = request.session.get(CSRF_SESSION_KEY)
    given = request.headers.get(CSRF_HEADER)
    if not given:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FORM_FIELD)
            given = value if isinstance(value, str) else None
    if not csrf_matches(expected, given):
        raise Forbidden("The form has expired or was not sent by Siyu (CSRF check failed); reload and retry")


CsrfChecked = Depends(csrf_protect)
