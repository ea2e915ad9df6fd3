"""Background jobs of the customers domain (Huey tasks: thin — load, call the service, save)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from huey.exceptions import RetryTask
from sqlalchemy.orm import Session

from siyu.core import db as core_db
from siyu.core import jobs
from siyu.core.errors import DomainError
from siyu.core.i18n import _
from siyu.core.models import Job
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import bulk, service
from siyu.customers.exports import service as exports
from siyu.customers.imports import service as imports
from siyu.team import service as team_service


@jobs.tracked_task(jobs.bulk_queue)
def recompute_customers(ctx: jobs.JobContext) -> dict[str, Any]:
    """Re-derive every customer's computed facts after the lifecycle rules changed."""
    with ctx.transaction() as session:
        total = service.count_all_customers(session)
    ctx.progress(0, total, force=True)
    last_id, done = 0, 0
    while True:
        # One transaction per batch: progress is visible and a crash loses one batch at most.
        with ctx.transaction() as session:
            last_id, count = service.recompute_batch(session, after_id=last_id)
        if not count:
            return {"rows": done}
        done += count
        ctx.progress(done, max(total, done))


def submit_recompute(session: Session, *, actor: Viewer) -> int:
    job = jobs.submit(session, recompute_customers, kind="customers.recompute",
                      title=_("Recompute stages, levels and computed tags"), params={}, actor=actor,
                      total=service.count_all_customers(session))
    return job.id


# ---------------------------------------------------------------- import (customers.imports)


@jobs.tracked_task(jobs.bulk_queue, retries=4)
def import_customers(ctx: jobs.JobContext) -> dict[str, Any]:
    """Write a large import file: validated again, then one transaction per batch with progress.

    The position is kept on the job with each batch (``ctx.remember``), so an attempt after a
    crash — a retry, or the sweep's after a worker died — writes only the rest of the file.
    """
    params = ctx.params
    options = imports.ImportOptions(mapping=tuple(params["mapping"]), account_id=params.get("account_id"),
                                    mode=imports.ImportMode(params["mode"]))
    link = f"/customers?account_id={options.account_id}" if options.account_id else "/customers"
    resume = params.get("resume") or {}
    if resume.get("recorded"):  # everything written and audited; the worker died before saying so
        imports.discard_upload(params["token"])
        return {**{key: resume[key] for key in ("created", "updated", "skipped")}, "rows": resume["written"],
                "dry_run": False, "link": link, "link_label": _("Open the customer list")}
    with ctx.transaction() as session:  # the CLI imports as the system
        viewer = team_service.active_viewer(session, user_id=params["user_id"]) if params["user_id"] else SYSTEM
    source = imports.Source.from_description(params["source"])
    try:
        result = imports.run_in_batches(
            ctx.transaction, source=source, options=options, viewer=viewer, filename=params["filename"],
            progress=ctx.progress, resume=resume,
            checkpoint=lambda session, state: ctx.remember(session, resume=state))
    except imports.ImportInvalid as exc:
        # The database changed since the file was checked (an account removed …): say what and where.
        lines = [f"{e.row}/{e.column}: {e.message}" for e in exc.errors[:20]]
        raise RuntimeError("\n".join([exc.message, *lines])) from exc
    imports.discard_upload(params["token"])
    return {**result.summary(), "link": link, "link_label": _("Open the customer list")}


def submit_import(session: Session, *, upload: imports.StoredUpload, plan: imports.ImportPlan, actor: Viewer,
                  enqueue: bool = True) -> int:
    """Record the import of a checked upload; its job runs once the session commits."""
    job = jobs.submit(session, import_customers, kind="customers.import", enqueue=enqueue,
                      title=_("Import {file}", file=upload.filename),
                      params={"token": upload.token, "user_id": actor.user_id, "filename": upload.filename,
                              "source": upload.source.describe(), "mapping": list(plan.mapping),
                              "account_id": plan.account_id, "mode": plan.mode.value},
                      actor=actor, total=plan.rows)
    return job.id


def import_here(path: Path, *, options: imports.ImportOptions, actor: Viewer) -> Job:
    """The CLI's import of a local file, run in this process as a job like any other.

    The file goes to the shared storage and the job row keeps the position, so if this process
    is killed, a worker's sweep finishes the import (on any host) — never half of it. Raises
    ImportInvalid, before anything is written, for a file with errors. The job as it ended.
    """
    with path.open("rb") as handle:
        upload = imports.store_upload(handle, filename=path.name, viewer=actor, max_bytes=None)
    try:
        with core_db.transaction() as session:
            plan = imports.check_file(session, source=upload.source, options=options, viewer=actor)
            job_id = submit_import(session, upload=upload, plan=plan, actor=actor, enqueue=False)
    except BaseException:
        imports.discard_upload(upload.token)
        raise
    with contextlib.suppress(RetryTask):  # the job row says why; a worker's sweep retries it when it is due
        import_customers.call_local(job_id)
    with core_db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


# ---------------------------------------------------------------- bulk actions (customers.bulk)


@jobs.tracked_task(jobs.bulk_queue)
def bulk_update_customers(ctx: jobs.JobContext) -> dict[str, Any]:
    """Apply a confirmed bulk action to every customer matching its filter, batch by batch."""
    params = ctx.params
    with ctx.transaction() as session:
        viewer = team_service.active_viewer(session, user_id=params["user_id"]) if params.get("user_id") else SYSTEM
    # The position is kept on the job with each batch: after a crash the next attempt goes on from there.
    result = bulk.run(ctx.transaction, flt=service.CustomerFilter.from_json(params["filter"]),
                      action=bulk.BulkAction.from_json(params["action"]), viewer=viewer,
                      progress=lambda done, total: ctx.progress(done, total), resume=params.get("resume"),
                      checkpoint=lambda session, state: ctx.remember(session, resume=state))
    return {**result.summary(), "link": params.get("link") or "/customers", "link_label": _("Open the customer list")}


def submit_bulk(session: Session, *, flt: service.CustomerFilter, action: bulk.BulkAction, actor: Viewer,
                link: str = "/customers") -> tuple[int, int]:
    """Check and count a bulk action, then queue it (its job runs once the session commits): job id, count."""
    preview = bulk.preview(session, flt=flt, action=action, viewer=actor)
    job = jobs.submit(session, bulk_update_customers, kind="customers.bulk",
                      title=_("Bulk: {action}", action=preview.description),
                      params={"user_id": actor.user_id, "filter": flt.to_json(),
                              "action": action.to_json(), "link": link},
                      actor=actor, total=preview.count)
    return job.id, preview.count
# ---------------------------------------------------------------- export (customers.exports)


@jobs.tracked_task(jobs.bulk_queue)
def export_customers(ctx: jobs.JobContext) -> dict[str, Any]:
    """Write a large export into the shared storage; the result links to it (for its owner only).

    After a crash it simply runs again: nothing is stored or audited until the file is complete.
    """
    params = ctx.params
    total = params.get("total") or 0
    ctx.progress(0, total or None, force=True)
    try:
        with ctx.transaction() as session:
            # As the user is now: a user moved to other accounts or roles exports what they see now.
            viewer = team_service.active_viewer(session, user_id=params["user_id"])
        with ctx.transaction() as session:
            stored = exports.store_export(
                session, flt=service.CustomerFilter.from_json(params["filter"]), viewer=viewer,
                fmt=exports.ExportFormat(params["format"]), via=params.get("via", "console"),
                progress=lambda done: ctx.progress(done, max(total, done)))
    except DomainError as exc:  # the user or filter no longer fits (an account taken away …): say so
        raise RuntimeError(exc.message) from exc
    return {"exported": stored.rows, "download_url": stored.download_url,
            "api_download_url": stored.api_download_url}


def submit_export(session: Session, *, flt: exports.CustomerFilter, fmt: exports.ExportFormat, actor: Viewer,
                  total: int | None, via: str) -> int:
    """Record an export job; it runs once the session commits."""
    job = jobs.submit(session, export_customers, kind="customers.export",
                      title=_("Export customers ({format})", format=fmt.value.upper()),
                      params={"user_id": actor.user_id, "filter": flt.to_json(), "format": fmt.value,
                              "total": total, "via": via},
                      actor=actor, total=total)
    return job.id
