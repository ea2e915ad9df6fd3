"""Chat exports of personal WeChat accounts onto a customer's timeline: the form's target and the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import FormData, UploadFile

from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import _
from siyu.core.ids import Id, parse_id
from siyu.customers import service
from siyu.customers.imports import chat as chat_imports
from siyu.customers.imports.routes import TRUE_WORDS, UploadForm
from siyu.web.render import render

api = APIRouter(tags=["customers"])
pages = APIRouter(include_in_schema=False)


def _file_and_options(form: FormData) -> tuple[UploadFile, int | None, bool]:
    uploaded = form.get("file")
    if not isinstance(uploaded, UploadFile) or not uploaded.filename:
        raise Invalid("Choose the chat export file (TXT or CSV)", field="file")
    raw = str(form.get("account_id") or "").strip()
    if raw and parse_id(raw) is None:
        raise Invalid("Account {account_id} not found", field="account_id", account_id=raw[:20])
    return uploaded, int(raw) if raw else None, str(form.get("dry_run") or "").lower() in TRUE_WORDS


def _read(uploaded: UploadFile) -> bytes:
    data = uploaded.file.read(chat_imports.MAX_BYTES + 1)
    if len(data) > chat_imports.MAX_BYTES:
        raise Invalid("The file is larger than {mb} MB; split it into smaller files",
                      mb=chat_imports.MAX_BYTES // (1024 * 1024))
    return data


@api.post("/customers/{customer_id}/chat-import")
def api_chat_import(session: SessionDep, viewer: ApiViewer, customer_id: Id, form: UploadForm) -> Response:
    """Add a chat export (multipart field ``file``: TXT or WeChatMsg CSV) to the customer's timeline."""
    uploaded, account_id, dry_run = _file_and_options(form)
    try:
        result = chat_imports.import_chat(session, customer_id=customer_id, data=_read(uploaded),
                                          filename=uploaded.filename or "", viewer=viewer, account_id=account_id,
                                          dry_run=dry_run)
    except chat_imports.ChatInvalid as exc:
        session.rollback()
        return JSONResponse({"detail": exc.message, "total": exc.total,
                             "errors": [e.as_dict() for e in exc.errors]}, status_code=422)
    session.commit()
    return JSONResponse(result.summary())


@pages.post("/customers/{customer_id}/chat-import", response_class=HTMLResponse)
def chat_import_submit(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                       form: UploadForm, _csrf: Annotated[None, CsrfChecked]) -> Response:
    customer = service.get_customer(session, customer_id=customer_id, viewer=viewer)
    context = {"customer": customer, "title": _("Import a chat"), "nav_active": "customers", "result": None,
               "errors": [], "total": 0, "error": None, "filename": ""}
    status_code = 200
    try:
        uploaded, account_id, dry_run = _file_and_options(form)
        context["filename"] = uploaded.filename or ""
        context["result"] = chat_imports.import_chat(
            session, customer_id=customer_id, data=_read(uploaded), filename=uploaded.filename or "",
            viewer=viewer, account_id=account_id, dry_run=dry_run)
        session.commit()
    except chat_imports.ChatInvalid as exc:
        session.rollback()
        context.update(errors=exc.errors, total=exc.total, error=exc.message)
        status_code = 422
    except DomainError as exc:
        session.rollback()
        context["error"] = exc.message
        status_code = 422 if exc.status_code < 500 else exc.status_code
    return render(request, "customers/chat_import.html", status_code=status_code, **context)
