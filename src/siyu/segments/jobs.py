"""RFM refresh jobs: nightly for everyone, and on demand after the settings change."""

from __future__ import annotations

from typing import Any

from huey import crontab
from sqlalchemy.orm import Session

from siyu.core import jobs
from siyu.core.db import transaction
from siyu.core.i18n import _
from siyu.core.viewer import Viewer

# The worker's clock: after the WeCom sync (03:30), before the working day.
NIGHTLY_HOUR = 4
NIGHTLY_MINUTE = 20


@jobs.tracked_task(jobs.bulk_queue)
def refresh_rfm(ctx: jobs.JobContext) -> dict[str, Any]:
    from siyu.segments import rfm

    with ctx.transaction() as session:
        result = rfm.refresh_all(session)
    return {"customers": result.customers, "counts": result.counts, "seconds": round(result.seconds, 1)}


def submit_refresh(session: Session, *, actor: Viewer) -> int:
    job = jobs.submit(session, refresh_rfm, kind="segments.rfm", title=_("Refresh RFM segments"), params={},
                      actor=actor)
    return job.id


@jobs.bulk_queue.periodic_task(crontab(hour=str(NIGHTLY_HOUR), minute=str(NIGHTLY_MINUTE)))
def nightly_rfm() -> None:
    """Every night: every buyer's RFM scores and segment from their orders as they are now."""
    from siyu.core.viewer import SYSTEM

    with transaction() as session:
        submit_refresh(session, actor=SYSTEM)
