"""Domain errors and the one place that turns them into HTTP answers.

Services raise these with an English message id; the handler translates it for the
caller's locale. API callers get JSON, console pages get a rendered error page —
never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from siyu.core.i18n import _

log = logging.getLogger(__name__)


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str, /, *, field: str | None = None, **params: Any) -> None:
        super().__init__(message)
        self.message_id = message
        self.field = field
        self.params = params

    @property
    def message(self) -> str:
        return _(self.message_id, **self.params)


class NotFound(DomainError):
    status_code = 404


class Invalid(DomainError):
    status_code = 422


class Conflict(DomainError):
    status_code = 409


class Forbidden(DomainError):
    status_code = 403


class Unauthorized(DomainError):
    status_code = 401


class TooManyAttempts(DomainError):
    status_code = 429


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/wecom/")) or path in ("/healthz", "/docs", "/openapi.json"):
        return False
    # Console paths answer with a page unless the caller asks for JSON only.
    accept = request.headers.get("accept", "")
    return not ("application/json" in accept and "text/html" not in accept)


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    from siyu.web.render import render_error  # local: web depends on core, not the reverse at import

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Response:
        if wants_html(request):
            return render_error(request, exc.status_code, exc.message)
        body: dict[str, Any] = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": _field_name(err.get("loc", ())), "message": err.get("msg", ""), "type": err.get("type")}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        detail = _("Invalid input") + f" — {summary}"
        if wants_html(request):
            return render_error(request, 422, detail)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: _("Not found"), 405: _("Method not allowed")}.get(exc.status_code, str(exc.detail))
        if exc.status_code not in (404, 405):
            message = _(str(exc.detail))
        if wants_html(request):
            return render_error(request, exc.status_code, message)
        return JSONResponse({"detail": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = _("Something went wrong on our side; the error has been logged.")
        if wants_html(request):
            return render_error(request, 500, message)
        return JSONResponse({"detail": message}, status_code=500)
