"""Customer export: the console's download links, the API endpoint and stored-export downloads.

The console links take exactly the list page's query string (``pages.ListQuery``); the API
takes the API list's parameters (``routes.filter_from_params``). Up to
``exports.DIRECT_ROWS`` customers come back as the file itself; more start a background
job: the console goes to the job's page, the API answers 202 with the job, and the job's
result links to the stored file, which only the exporting user may download.

Mounted before the customers routers so ``/customers/export.csv`` is never read as a customer id.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from siyu.core import storage
from siyu.core.deps import AdminPageViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError
from siyu.core.i18n import _
from siyu.core.viewer import Viewer
from siyu.customers import jobs as customers_jobs
from siyu.customers import service
from siyu.customers.exports import policy as export_policy
from siyu.customers.exports import service as exports
from siyu.customers.exports.service import ExportFormat
from siyu.customers.filters import FilterDep
from siyu.customers.pages import ListQuery
from siyu.customers.service import CustomerFilter
from siyu.web.render import render

api = APIRouter(tags=["customers"])
pages = APIRouter(include_in_schema=False)

# A direct export is built before it is sent (the request's session is closed once the
# route returns); up to this size in memory, beyond it in a temporary file.
SPOOL_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


def _disposition(filename: str) -> str:
    return f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"


def _file_headers(filename: str) -> dict[str, str]:
    # Personal data: never kept by a browser or proxy cache.
    return {"Content-Disposition": _disposition(filename), "Cache-Control": "no-store"}


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := spool.read(CHUNK_BYTES):
            yield chunk
    finally:
        spool.close()


def _start(session: Session, *, flt: CustomerFilter, viewer: Viewer, fmt: ExportFormat,
           via: str) -> Response | int:
    """The file of a small export (audited, committed), or the id of the job of a large one."""
    exports.checked_filter(flt)  # a large export's job must not be the first to find the filter bad
    viewer = export_policy.export_viewer(session, viewer)  # refused, or phones masked, by the admin's setting
    count = service.count_customers(session, flt=flt, viewer=viewer, cap=exports.DIRECT_ROWS)
    if not count.exact:
        job_id = customers_jobs.submit_export(session, flt=flt, fmt=fmt, actor=viewer, total=count.estimate,
                                              via=via)
        session.commit()
        return job_id
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    try:
        rows = exports.write_export(session, flt=flt, viewer=viewer, fmt=fmt, out=spool)
        exports.record_export(session, viewer=viewer, flt=flt, fmt=fmt, rows=rows, via=via)
        session.commit()
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return StreamingResponse(_chunks(spool), media_type=fmt.media_type,
                             headers=_file_headers(exports.download_name(fmt)))


def _download(stored: exports.StoredExport) -> Response:
    # From the shared storage, a chunk at a time: the export may have been written on another host.
    return StreamingResponse(storage.iter_chunks(stored.key), media_type=stored.fmt.media_type,
                             headers={**_file_headers(stored.filename), "Content-Length": str(stored.size)})


# ---------------------------------------------------------------- API


EXPORT_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The file (up to 500 customers).",
          "content": {"text/csv": {}, ExportFormat.xlsx.media_type: {}}},
    202: {"description": "More customers: a background job writes the file. Poll job_url; its result's "
                         "api_download_url downloads it (only for you, for 24 hours)."},
    404: {"description": "The saved segment named by `segment` does not exist."},
    422: {"description": "A filter the customer list refuses (an account that is not yours, an unknown tag …)."},
}


@api.get("/customers/export", responses=EXPORT_RESPONSES)
def api_export(
    session: SessionDep,
    viewer: ApiViewer,
    flt: FilterDep,
    fmt: Annotated[ExportFormat, Query(alias="format", description="csv (UTF-8 with BOM) or xlsx")] = ExportFormat.csv,
) -> Response:
    """Export the customers of a filter (the parameters of ``GET /customers``) as CSV or XLSX.

    Phones are masked for roles that may not see them; cells that a spreadsheet would read
    as a formula start with ``'``. Rows are newest added first.
    """
    started = _start(session, flt=flt, viewer=viewer, fmt=fmt, via="api")
    if isinstance(started, Response):
        return started
    return JSONResponse({"job_id": started, "job_url": f"/api/v1/jobs/{started}"}, status_code=202)


@api.get("/customers/exports/{token}", responses={200: {"description": "A stored export (yours only)."}})
def api_download(viewer: ApiViewer, token: str) -> Response:
    """Download the file a background export wrote."""
    return _download(exports.get_export(token, viewer=viewer))


# ---------------------------------------------------------------- console


def _page_export(request: Request, session: Session, viewer: Viewer, fmt: ExportFormat) -> Response:
    flt = ListQuery.from_params(request.query_params).to_filter()
    started = _start(session, flt=flt, viewer=viewer, fmt=fmt, via="console")
    if isinstance(started, Response):
        return started
    return RedirectResponse(f"/jobs/{started}", status_code=303)


@pages.get("/customers/export.csv")
def export_csv(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _page_export(request, session, viewer, ExportFormat.csv)


@pages.get("/customers/export.xlsx")
def export_xlsx(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _page_export(request, session, viewer, ExportFormat.xlsx)


@pages.get("/customers/exports/{token}")
def download(viewer: PageViewer, token: str) -> Response:
    return _download(exports.get_export(token, viewer=viewer))


# ---------------------------------------------------------------- who may export (admin setting)


def _policy_page(request: Request, session: Session, *, error: str | None = None, status_code: int = 200,
                 saved: bool = False) -> Response:
    policy = export_policy.get_policy(session)
    return render(request, "customers/export_settings.html", status_code=status_code, nav_active="users",
                  roles=export_policy.EDITABLE_ROLES, policy=policy, rights=list(export_policy.ExportRight),
                  right_labels=export_policy.RIGHT_LABELS, direct_rows=exports.DIRECT_ROWS, error=error,
                  saved=saved, title=_("Export permissions"))


@pages.get("/settings/exports", response_class=HTMLResponse)
def export_settings(request: Request, session: SessionDep, viewer: AdminPageViewer, saved: str = "") -> Response:
    return _policy_page(request, session, saved=saved == "1")


@pages.post("/settings/exports", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def export_settings_save(request: Request, session: SessionDep, viewer: AdminPageViewer) -> Response:
    form = await request.form()
    rights = {role.value: str(form[role.value]) for role in export_policy.EDITABLE_ROLES if role.value in form}
    try:
        export_policy.set_policy(session, rights=rights, actor=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        if exc.status_code != 422:
            raise
        return _policy_page(request, session, error=exc.message, status_code=422)
    return RedirectResponse("/settings/exports?saved=1", status_code=303)
