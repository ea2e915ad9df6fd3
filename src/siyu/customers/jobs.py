"""Background jobs of the customers domain (Huey tasks: thin — load, call the service, save)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from siyu.core import jobs
from siyu.core.i18n import _
from siyu.core.viewer import Viewer
from siyu.customers import service


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
