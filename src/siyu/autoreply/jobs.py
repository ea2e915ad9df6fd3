"""Background work of auto-replies: sending an incident's correction to every recipient."""

from __future__ import annotations

from typing import Any

from siyu.autoreply import incidents
from siyu.core import jobs
from siyu.team import service as team_service


@jobs.tracked_task(jobs.bulk_queue)
def send_corrections(ctx: jobs.JobContext) -> dict[str, Any]:
    incident_id = int(ctx.params["incident_id"])
    with ctx.transaction() as session:
        viewer = team_service.viewer_for(team_service.get_user(session, user_id=int(ctx.params["user_id"])))
    while True:
        # A chunk per transaction; a restarted job skips recipients already corrected.
        with ctx.transaction() as session:
            done, total = incidents.correct_next(session, incident_id=incident_id, viewer=viewer)
        ctx.progress(done, total, force=True)
        if done >= total:
            return {"rows": total}
