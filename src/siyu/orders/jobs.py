"""Background jobs of the orders domain (Huey tasks: thin — load, call the service, save)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from siyu.core import jobs
from siyu.core.i18n import _
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers.imports import service as customer_imports
from siyu.orders import imports
from siyu.team import service as team_service


@jobs.tracked_task(jobs.bulk_queue, retries=4)
def import_orders(ctx: jobs.JobContext) -> dict[str, Any]:
    """Write a large order file: checked again, then one transaction per batch of orders.

    The position is kept on the job with each batch (``ctx.remember``), so an attempt after a crash —
    a retry, or the sweep's after a worker died — writes only the rest of the file.
    """
    params = ctx.params
    link = "/orders"
    resume = params.get("resume") or {}
    if resume.get("recorded"):
        customer_imports.discard_upload(params["token"])
        return {**{key: resume[key] for key in ("created", "updated", "unmatched")}, "orders": resume["written"],
                "link": link, "link_label": _("Open the order list")}
    with ctx.transaction() as session:
        viewer = team_service.active_viewer(session, user_id=params["user_id"]) if params["user_id"] else SYSTEM
    source = customer_imports.Source.from_description(params["source"])
    try:
        result = imports.run_in_batches(
            ctx.transaction, source=source, viewer=viewer, filename=params["filename"], mapping=params["mapping"],
            progress=ctx.progress, resume=resume, checkpoint=lambda session, state: ctx.remember(session, resume=state))
    except customer_imports.ImportInvalid as exc:
        lines = [f"{e.row}/{e.column}: {e.message}" for e in exc.errors[:20]]
        raise RuntimeError("\n".join([exc.message, *lines])) from exc
    customer_imports.discard_upload(params["token"])
    return {**result.summary(), "link": link, "link_label": _("Open the order list")}


def submit_import(session: Session, *, upload: customer_imports.StoredUpload, plan: imports.ImportPlan,
                  actor: Viewer) -> int:
    """Record the import of a checked upload; its job runs once the session commits."""
    job = jobs.submit(session, import_orders, kind="orders.import",
                      title=_("Import orders {file}", file=upload.filename),
                      params={"token": upload.token, "user_id": actor.user_id, "filename": upload.filename,
                              "source": upload.source.describe(), "mapping": list(plan.mapping)},
                      actor=actor, total=plan.orders)
    return job.id
