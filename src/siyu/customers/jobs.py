"""Background jobs of the customers domain (Huey tasks: thin — load, call the service, save)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from siyu.core import jobs
from siyu.core.i18n import _
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import bulk, imports, service


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


@jobs.tracked_task(jobs.bulk_queue)
def import_customers(ctx: jobs.JobContext) -> dict[str, Any]:
    """Write a large import file: validated again, then one transaction per batch with progress."""
    params = ctx.params
    with ctx.transaction() as session:
        viewer = imports.viewer_for_user(session, user_id=params["user_id"])
    options = imports.ImportOptions(mapping=tuple(params["mapping"]), account_id=params.get("account_id"),
                                    mode=imports.ImportMode(params["mode"]))
    source = imports.Source.from_description(params["source"])
    try:
        result = imports.run_in_batches(ctx.transaction, source=source, options=options, viewer=viewer,
                                        filename=params["filename"], progress=ctx.progress)
    except imports.ImportInvalid as exc:
        # The database changed since the file was checked (an account removed …): say what and where.
        lines = [f"{e.row}/{e.column}: {e.message}" for e in exc.errors[:20]]
        raise RuntimeError("\n".join([exc.message, *lines])) from exc
    imports.discard_upload(params["token"])
    link = f"/customers?account_id={options.account_id}" if options.account_id else "/customers"
    return {**result.summary(), "link": link, "link_label": _("Open the customer list")}


def submit_import(session: Session, *, upload: imports.StoredUpload, plan: imports.ImportPlan, actor: Viewer) -> int:
    """Record the import of a checked upload; its job runs once the session commits."""
    job = jobs.submit(session, import_customers, kind="customers.import",
                      title=_("Import {file}", file=upload.filename),
                      params={"token": upload.token, "user_id": actor.user_id, "filename": upload.filename,
                              "source": upload.source.describe(), "mapping": list(plan.mapping),
                              "account_id": plan.account_id, "mode": plan.mode.value},
                      actor=actor, total=plan.rows)
    return job.id


# ---------------------------------------------------------------- bulk actions (customers.bulk)


@jobs.tracked_task(jobs.bulk_queue)
def bulk_update_customers(ctx: jobs.JobContext) -> dict[str, Any]:
    """Apply a confirmed bulk action to every customer matching its filter, batch by batch."""
    params = ctx.params
    with ctx.transaction() as session:
        viewer = imports.viewer_for_user(session, user_id=params["user_id"]) if params.get("user_id") else SYSTEM
    result = bulk.run(ctx.transaction, flt=bulk.filter_from_json(params["filter"]),
                      action=bulk.BulkAction.from_json(params["action"]), viewer=viewer,
                      progress=lambda done, total: ctx.progress(done, total))
    return {**result.summary(), "link": params.get("link") or "/customers", "link_label": _("Open the customer list")}


def submit_bulk(session: Session, *, flt: service.CustomerFilter, action: bulk.BulkAction, actor: Viewer,
                link: str = "/customers") -> tuple[int, int]:
    """Check and count a bulk action, then queue it (its job runs once the session commits): job id, count."""
    preview = bulk.preview(session, flt=flt, action=action, viewer=actor)
    job = jobs.submit(session, bulk_update_customers, kind="customers.bulk",
                      title=_("Bulk: {action}", action=preview.description),
                      params={"user_id": actor.user_id, "filter": bulk.filter_to_json(flt),
                              "action": action.to_json(), "link": link},
                      actor=actor, total=preview.count)
    return job.id, preview.count
