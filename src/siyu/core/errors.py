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
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from siyu.core.i18n import N_, _

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


def database_refusal(exc: Exception) -> DomainError:
    """What a write the database refused means for the caller.

    Services check what they can (referenced ids exist, unique values are free); this is the
    net under them, so a reference that vanished meanwhile, a duplicate that slipped in by a
    concurrent request or a number the column cannot hold is a clear 4xx and never a 500.
    """
    if isinstance(exc, IntegrityError):
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or ""  # PostgreSQL (psycopg)
        text = str(orig)  # SQLite: "FOREIGN KEY constraint failed", "UNIQUE constraint failed: …"
        if state == "23503" or text.startswith("FOREIGN KEY"):
            return Invalid("This refers to something that does not exist (it may have just been deleted)")
        if state == "23505" or text.startswith("UNIQUE"):
            return Conflict("This already exists; reload and try again")
    # DataError: PostgreSQL's "integer out of range", "value too long"; OverflowError: SQLite cannot
    # bind an integer above 2^63 − 1.
    return Invalid("A value is out of range or too long for where it is stored")


# Pydantic's own English messages, in the caller's language, by error type.
VALIDATION_MESSAGES = {
    "missing": N_("Field required"),
    "int_parsing": N_("Must be a whole number"),
    "int_type": N_("Must be a whole number"),
    "int_from_float": N_("Must be a whole number"),
    "float_parsing": N_("Must be a number"),
    "bool_parsing": N_("Must be true or false"),
    "greater_than_equal": N_("Must be at least {ge}"),
    "less_than_equal": N_("Must be at most {le}"),
    "greater_than": N_("Must be more than {gt}"),
    "less_than": N_("Must be less than {lt}"),
    "string_too_long": N_("At most {max_length} characters"),
    "string_too_short": N_("At least {min_length} characters"),
    "too_long": N_("At most {max_length} items"),
    "too_short": N_("At least {min_length} items"),
    "string_type": N_("Must be text"),
    "list_type": N_("Must be a list"),
    "dict_type": N_("Must be an object"),
    "model_type": N_("Must be an object"),
    "enum": N_("Must be one of: {expected}"),
    "literal_error": N_("Must be one of: {expected}"),
    "json_invalid": N_("Not valid JSON"),
    "datetime_parsing": N_("Not a valid date and time"),
    "datetime_from_date_parsing": N_("Not a valid date and time"),
    "date_parsing": N_("Not a valid date"),
    "date_from_datetime_parsing": N_("Not a valid date"),
    "extra_forbidden": N_("Unknown field"),
}


def validation_message(error: dict[str, Any]) -> str:
    kind = str(error.get("type"))
    if kind in ("too_short", "too_long") and isinstance(error.get("input"), str):
        kind = f"string_{kind}"  # an Annotated str (core.text.Name) reports its length as a collection's
    template = VALIDATION_MESSAGES.get(kind)
    if template is None:
        return str(error.get("msg", ""))
    ctx = {key: str(value) for key, value in (error.get("ctx") or {}).items()}
    try:
        return _(template, **ctx)
    except (KeyError, IndexError):
        return str(error.get("msg", ""))


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


def _people_detail(errors: Any) -> str:
    """A console page's validation failure for people: a bad link or address parameter is named as
    such (nobody typed ``customer_id``), a form field by its name, every message in their language."""
    parts: list[str] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        where = loc[0] if loc else ""
        if where == "path":
            text = _("The link is not valid: {message}", message=validation_message(err))
        elif where == "query":
            text = _("The address has a bad value ({name}): {message}", name=_field_name(loc),
                     message=validation_message(err))
        else:
            text = f"{_field_name(loc)}: {validation_message(err)}"
        if text not in parts:
            parts.append(text)
    return _("Invalid input") + " — " + "；".join(parts)


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
            {"field": _field_name(err.get("loc", ())), "message": validation_message(err), "type": err.get("type")}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        detail = _("Invalid input") + f" — {summary}"
        if wants_html(request):
            return render_error(request, 422, _people_detail(exc.errors()))
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: _("Not found"), 405: _("Method not allowed")}.get(exc.status_code, str(exc.detail))
        if exc.status_code not in (404, 405):
            message = _(str(exc.detail))
        if wants_html(request):
            return render_error(request, exc.status_code, message)
        return JSONResponse({"detail": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(IntegrityError)
    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def database_refused(request: Request, exc: Exception) -> Response:
        log.warning("database refused %s %s: %s", request.method, request.url.path, exc)
        return await domain_error(request, database_refusal(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = _("Something went wrong on our side; the error has been logged.")
        if wants_html(request):
            return render_error(request, 500, message)
        return JSONResponse({"detail": message}, status_code=500)
