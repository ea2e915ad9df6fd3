"""Background work of the inbox: bulk actions on a filter, snoozed conversations, SLA alerts."""

from __future__ import annotations

import logging
from typing import Any

from huey import crontab
from sqlalchemy.orm import Session

from siyu.core import jobs
from siyu.core.db import transaction
from siyu.core.errors import Conflict
from siyu.core.i18n import _
from siyu.core.models import Job
from siyu.core.viewer import Viewer
from siyu.inbox import delivery, service
from siyu.inbox.service import QueueFilter
from siyu.team import service as team_service

log = logging.getLogger(__name__)
BULK_CHUNK = 200


@jobs.tracked_task(jobs.bulk_queue)
def bulk_conversations(ctx: jobs.JobContext) -> dict[str, Any]:
    params = ctx.params
    flt = QueueFilter.from_json(params)
    with ctx.transaction() as session:
        viewer = team_service.viewer_for(team_service.get_user(session, user_id=params["user_id"]))
        total = service.count_matching(session, flt=flt, viewer=viewer)
    ctx.progress(0, total, force=True)
    done, totals, last_id = 0, {"changed": 0, "skipped": 0}, int(params.get("after_id", 0))
    while True:
        # One transaction per chunk: a restart resumes after the last finished chunk.
        with ctx.transaction() as session:
            ids = service.matching_ids(session, flt=flt, viewer=viewer, after_id=last_id, limit=BULK_CHUNK)
            if not ids:
                break
            counts = service.apply_bulk(session, conversation_ids=ids, action=params["action"],
                                        args=params.get("args", {}), viewer=viewer)
            job = session.get(Job, ctx.job_id)
            if job is not None:  # remember where we are, for a retry after a crash
                job.params = {**job.params, "after_id": ids[-1]}
        last_id = ids[-1]
        done += len(ids)
        for key in totals:
            totals[key] += counts[key]
        ctx.progress(done, max(total, done))
    return {"matched": done, **totals}


def submit_bulk(session: Session, *, flt: QueueFilter, action: str, args: dict[str, Any], viewer: Viewer,
                expected: int) -> int:
    service.validate_bulk(session, action=action, args=args)
    total = service.count_matching(session, flt=flt, viewer=viewer)
    if total != expected:
        raise Conflict("The number of matching conversations changed from {expected} to {total}; confirm again",
                       expected=expected, total=total)
    job = jobs.submit(session, bulk_conversations, kind="inbox.bulk", title=_("Bulk action on conversations"),
                      params={**flt.to_json(), "action": action, "args": args, "user_id": viewer.user_id},
                      actor=viewer, total=total)
    team_service.record_audit(session, actor=viewer, action="bulk", entity_type="conversations", entity_id=job.id,
                              summary=f"{action} × {total}",
                              after={"filter": flt.to_json(), "action": action, "args": args, "count": total})
    return job.id


@jobs.inbound_queue.task(context=True)
def deliver_message(message_id: int, attempt: int = 1, task: Any = None) -> None:
    """Send one outbound message; a transient failure comes back later (10 s, 20 s, 40 s …)."""
    with transaction() as session:
        outcome = delivery.deliver(session, message_id=message_id, attempt=attempt)
    if outcome.retry:
        deliver_message.schedule((message_id, attempt + 1), delay=10 * 2 ** (attempt - 1))


@jobs.inbound_queue.periodic_task(crontab(minute="*"))
def inbox_minutely() -> None:
    """Wake snoozed conversations and flag new SLA breaches."""
    with transaction() as session:
        woken = service.wake_snoozed(session)
        breached = service.sweep_sla(session)
    if woken or breached:
        log.info("inbox: %s snoozed conversations reopened, %s new SLA breaches", woken, len(breached))
