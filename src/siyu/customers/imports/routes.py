"""Customer import: the API endpoint and the console wizard.

The wizard: upload → columns (each column's field, prefilled from its header, changeable)
→ check (every error of the whole file, or a preview of what will happen) → confirm →
result, or the job's progress page for a large file. The uploaded file is kept in the shared
storage (``core/storage.py``, in the database) between the steps and for the worker, so each
step may reach another app host; it is filed under a random token that only its uploader can use.

Mounted before the customers routers so ``/customers/import`` is never read as a customer id.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from siyu.accounts import service as accounts_service
from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import Invalid
from siyu.core.i18n import _
from siyu.core.ids import parse_id
from siyu.core.viewer import Viewer
from siyu.customers import jobs as customers_jobs
from siyu.customers.imports import service as imports
from siyu.web.render import render

api = APIRouter(tags=["customers"])
pages = APIRouter(include_in_schema=False)

# The multipart body may be a little larger than the file it carries.
MULTIPART_OVERHEAD = 64 * 1024
TRUE_WORDS = ("1", "true", "yes", "on")


async def read_upload_form(request: Request) -> FormData:
    """The multipart form of an upload; a body declared larger than the limit is refused unread."""
    length = request.headers.get("content-length", "")
    limit = imports.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD
    if length.isascii() and length.isdigit() and (len(length) > len(str(limit)) or int(length) > limit):
        raise imports.UploadTooLarge("The file is larger than {mb} MB; split it into smaller files",
                                     mb=imports.MAX_UPLOAD_BYTES // (1024 * 1024))
    try:
        return await request.form(max_files=2, max_fields=200)
    except MultiPartException as exc:
        raise Invalid("The upload could not be read; send the file as multipart/form-data", field="file") from exc


UploadForm = Annotated[FormData, Depends(read_upload_form)]


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _account_id(form: FormData) -> int | None:
    raw = _text(form, "account_id")
    if not raw:
        return None
    if parse_id(raw) is None:
        raise Invalid("Account {account_id} not found", field="account_id", account_id=raw[:20])
    return int(raw)


def _mode(form: FormData) -> imports.ImportMode:
    raw = _text(form, "mode") or imports.ImportMode.update.value
    try:
        return imports.ImportMode(raw)
    except ValueError as exc:
        raise Invalid("Unknown import mode {mode}; use update or skip", field="mode", mode=raw[:20]) from exc


def _errors_json(exc: imports.ImportInvalid) -> JSONResponse:
    return JSONResponse({"detail": exc.message, "total": exc.total, "errors": [e.as_dict() for e in exc.errors]},
                        status_code=422)


# ---------------------------------------------------------------- API


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "CSV (UTF-8, UTF-8 with BOM, GBK) "
                         "or XLSX; the first row is the header."},
                "account_id": {"type": "integer", "description": "Account of rows without an account column."},
                "dry_run": {"type": "boolean", "description": "Validate and count only; write nothing."},
                "mode": {"type": "string", "enum": ["update", "skip"],
                         "description": "Existing customers: fill empty fields and add tags, or leave them."},
                "columns": {"type": "string", "description": 'Optional JSON {"header": "field"} overriding the '
                            "recognised columns; fields: " + ", ".join(imports.FIELD_BY_KEY) + '; "" ignores.'},
            },
        }}},
    },
    "responses": {
        "202": {"description": "A large file: validated, then written by a background job (job_id, job_url)."},
        "413": {"description": "The file is larger than the upload limit."},
        "422": {"description": 'The file is invalid: {"errors": [{"row", "column", "message"}]}; nothing written.'},
    },
}


def _api_mapping(form: FormData, upload: imports.StoredUpload) -> tuple[str, ...] | None:
    raw = _text(form, "columns")
    if not raw:
        return None
    try:
        columns = json.loads(raw)
    except ValueError as exc:
        raise Invalid("columns must be a JSON object of header → field", field="columns") from exc
    if not isinstance(columns, dict):
        raise Invalid("columns must be a JSON object of header → field", field="columns")
    # Columns not named keep the field recognised from their header.
    shown = imports.preview(upload.source)
    return tuple(str(columns[h]) if columns.get(h) is not None else key
                 for h, key in zip(shown.headers, shown.mapping, strict=True))


@api.post("/customers/import", openapi_extra=UPLOAD_BODY)
def api_import(session: SessionDep, viewer: ApiViewer, form: UploadForm) -> Response:
    """Import customers from a CSV or XLSX file (multipart field ``file``)."""
    imports.ensure_may_import(viewer)
    uploaded = form.get("file")
    if not isinstance(uploaded, UploadFile):
        raise Invalid("Attach the file in the multipart field file", field="file")
    dry_run = _text(form, "dry_run").lower() in TRUE_WORDS
    account_id, mode = _account_id(form), _mode(form)
    keep = False
    try:
        upload = imports.store_upload(uploaded.file, filename=uploaded.filename or "", viewer=viewer)
    except imports.ImportInvalid as exc:
        return _errors_json(exc)
    try:
        options = imports.ImportOptions(mapping=_api_mapping(form, upload), account_id=account_id, mode=mode)
        plan = imports.check_file(session, source=upload.source, options=options, viewer=viewer)
        if dry_run or plan.rows <= imports.BACKGROUND_ROWS:
            result = imports.execute(session, plan=plan, viewer=viewer, filename=upload.filename, dry_run=dry_run)
            session.commit()
            return JSONResponse(result.summary())
        job_id = customers_jobs.submit_import(session, upload=upload, plan=plan, actor=viewer)
        keep = True  # the worker reads the file
        session.commit()
        return JSONResponse({"job_id": job_id, "job_url": f"/api/v1/jobs/{job_id}", "rows": plan.rows,
                             "dry_run": False}, status_code=202)
    except imports.ImportInvalid as exc:
        session.rollback()
        return _errors_json(exc)
    finally:
        if not keep:
            imports.discard_upload(upload.token)


# ---------------------------------------------------------------- console wizard


def _field_choices() -> list[tuple[str, str]]:
    return [("", _("Ignore this column")), *[(spec.key, _(spec.label)) for spec in imports.FIELDS]]


def _render_upload(request: Request, session: Session, viewer: Viewer, *, errors: list[imports.RowError] | None = None,
                   total: int = 0, account_id: int | None = None, mode: str = "update",
                   status_code: int = 200) -> Response:
    return render(request, "customers/import_upload.html", status_code=status_code, nav_active="customers",
                  title=_("Import customers"), accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  errors=errors or [], total=total, account_id=account_id, mode=mode,
                  max_mb=imports.MAX_UPLOAD_BYTES // (1024 * 1024), fields=imports.FIELDS)


def _render_mapping(request: Request, session: Session, viewer: Viewer, *, upload: imports.StoredUpload,
                    mapping: list[str] | None = None, account_id: int | None = None, mode: str = "update",
                    errors: list[imports.RowError] | None = None, status_code: int = 200) -> Response:
    shown = imports.preview(upload.source)
    return render(request, "customers/import_mapping.html", status_code=status_code, nav_active="customers",
                  title=_("Import customers"), upload=upload, headers=shown.headers, samples=shown.samples,
                  mapping=mapping or shown.mapping, choices=_field_choices(),
                  accounts=accounts_service.visible_accounts(session, viewer=viewer), account_id=account_id,
                  mode=mode, errors=errors or [])


def _options(form: FormData, upload: imports.StoredUpload) -> imports.ImportOptions:
    headers = imports.preview(upload.source).headers
    mapping = tuple(_text(form, f"map_{i}") for i in range(len(headers)))
    return imports.ImportOptions(mapping=mapping, account_id=_account_id(form), mode=_mode(form))


@pages.get("/customers/import", response_class=HTMLResponse)
def upload_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    imports.ensure_may_import(viewer)
    return _render_upload(request, session, viewer)


@pages.post("/customers/import", response_class=HTMLResponse)
def upload_submit(request: Request, session: SessionDep, viewer: PageViewer, form: UploadForm,
                  _csrf: Annotated[None, CsrfChecked]) -> Response:
    imports.ensure_may_import(viewer)
    uploaded = form.get("file")
    account_id, mode = _account_id(form), _mode(form)
    if not isinstance(uploaded, UploadFile) or not uploaded.filename:
        return _render_upload(request, session, viewer, account_id=account_id, mode=mode.value, status_code=422,
                              errors=[imports.RowError(0, "", _("Choose a CSV or XLSX file to upload"))])
    try:
        upload = imports.store_upload(uploaded.file, filename=uploaded.filename, viewer=viewer)
        return _render_mapping(request, session, viewer, upload=upload, account_id=account_id, mode=mode.value)
    except imports.ImportInvalid as exc:
        return _render_upload(request, session, viewer, errors=exc.errors, total=exc.total, account_id=account_id,
                              mode=mode.value, status_code=422)


@pages.get("/customers/import/{token}", response_class=HTMLResponse)
def mapping_page(request: Request, session: SessionDep, viewer: PageViewer, token: str) -> Response:
    upload = imports.get_upload(token, viewer=viewer)
    return _render_mapping(request, session, viewer, upload=upload)


def _checked(request: Request, session: Session, viewer: Viewer, *, upload: imports.StoredUpload,
             form: FormData) -> tuple[imports.ImportPlan, imports.ImportOptions] | Response:
    """The whole file checked with the chosen columns, or the page listing every error."""
    options = _options(form, upload)
    try:
        return imports.check_file(session, source=upload.source, options=options, viewer=viewer), options
    except imports.ImportInvalid as exc:
        return render(request, "customers/import_report.html", status_code=422, nav_active="customers",
                      title=_("Import customers"), upload=upload, errors=exc.errors, total=exc.total,
                      options=options)


@pages.post("/customers/import/{token}/check", response_class=HTMLResponse)
def check_submit(request: Request, session: SessionDep, viewer: PageViewer, token: str, form: UploadForm,
                 _csrf: Annotated[None, CsrfChecked]) -> Response:
    upload = imports.get_upload(token, viewer=viewer)
    checked = _checked(request, session, viewer, upload=upload, form=form)
    if isinstance(checked, Response):
        return checked
    plan, options = checked
    outcome = None
    if plan.rows <= imports.BACKGROUND_ROWS:  # a large file is only counted; its job reports the outcome
        outcome = imports.execute(session, plan=plan, viewer=viewer, filename=upload.filename, dry_run=True)
    accounts = accounts_service.visible_accounts(session, viewer=viewer)
    return render(request, "customers/import_confirm.html", nav_active="customers", title=_("Import customers"),
                  upload=upload, plan=plan, outcome=outcome, options=options,
                  account_names={a.id: a.display_name for a in accounts},
                  field_labels={spec.key: _(spec.label) for spec in imports.FIELDS})


@pages.post("/customers/import/{token}/run", response_class=HTMLResponse)
def run_submit(request: Request, session: SessionDep, viewer: PageViewer, token: str, form: UploadForm,
               _csrf: Annotated[None, CsrfChecked]) -> Response:
    upload = imports.get_upload(token, viewer=viewer)
    checked = _checked(request, session, viewer, upload=upload, form=form)
    if isinstance(checked, Response):
        return checked
    plan, _options_used = checked
    if plan.rows > imports.BACKGROUND_ROWS:
        job_id = customers_jobs.submit_import(session, upload=upload, plan=plan, actor=viewer)
        session.commit()
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)
    result = imports.execute(session, plan=plan, viewer=viewer, filename=upload.filename)
    session.commit()
    imports.discard_upload(upload.token)
    return render(request, "customers/import_result.html", nav_active="customers", title=_("Import customers"),
                  upload=upload, result=result, account_id=plan.account_id)
