"""Background jobs as their starter sees them: progress while running, outcome after."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from siyu.core import jobs
from siyu.core.deps import ApiViewer, PageViewer, SessionDep
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.core.models import JobStatus
from siyu.jobs.schemas import JobOut
from siyu.web.render import render

api = APIRouter(tags=["jobs"])
pages = APIRouter(include_in_schema=False)

STATUS_LABELS = {
    JobStatus.queued: N_("Queued"),
    JobStatus.running: N_("Running"),
    JobStatus.retrying: N_("Waiting to retry"),
    JobStatus.succeeded: N_("Done"),
    JobStatus.failed: N_("Failed"),
}
# Result keys jobs report; anything else is shown under its own name.
RESULT_LABELS = {
    "created": N_("Created"),
    "updated": N_("Updated"),
    "skipped": N_("Skipped"),
    "rows": N_("Rows"),
    "matched": N_("Matched"),
    "changed": N_("Changed"),
    "unchanged": N_("Unchanged"),
    "exported": N_("Exported"),
}


def _labels() -> dict[str, Any]:
    return {
        "status_labels": {status.value: _(label) for status, label in STATUS_LABELS.items()},
        "result_labels": {key: _(label) for key, label in RESULT_LABELS.items()},
    }


@api.get("/jobs", response_model=dict[str, list[JobOut]])
def list_jobs(session: SessionDep, viewer: ApiViewer, status: str | None = None,
              before_id: Id | None = None) -> dict[str, list[JobOut]]:
    return {"items": [JobOut.model_validate(j) for j in jobs.list_jobs(session, viewer, status=status,
                                                                       before_id=before_id)]}


@api.get("/jobs/{job_id}", response_model=JobOut)
def get_job(session: SessionDep, viewer: ApiViewer, job_id: Id) -> JobOut:
    return JobOut.model_validate(jobs.get_job(session, job_id, viewer))


@pages.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, session: SessionDep, viewer: PageViewer,
              status: Annotated[str | None, Query()] = None,
              before_id: Annotated[Id | None, Query()] = None) -> Response:
    page_size = 50
    items = jobs.list_jobs(session, viewer, status=status or None, before_id=before_id, limit=page_size + 1)
    more = len(items) > page_size
    items = items[:page_size]
    return render(request, "jobs/list.html", nav_active="jobs", title=_("Background jobs"), items=items,
                  status=status or "", next_before=items[-1].id if more else None, **_labels())


@pages.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, session: SessionDep, viewer: PageViewer, job_id: Id) -> Response:
    job = jobs.get_job(session, job_id, viewer)
    return render(request, "jobs/detail.html", nav_active="jobs", title=job.title or _("Background job"), job=job,
                  **_labels())


@pages.get("/jobs/{job_id}/progress", response_class=HTMLResponse)
def job_progress(request: Request, session: SessionDep, viewer: PageViewer, job_id: Id) -> Response:
    job = jobs.get_job(session, job_id, viewer)
    return render(request, "jobs/_progress.html", job=job, **_labels())
