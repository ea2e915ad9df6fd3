"""群规 in the background: every minute, new group messages (archive pulls, imports) through the live rules,
and blacklisted members who joined a group. One run at a time (a lock); a second run is harmless anyway —
findings are unique per rule and trigger message, and the cursor only moves forward in the same transaction."""

from __future__ import annotations

from typing import Any

from huey import crontab
from huey.exceptions import TaskLockedException

from siyu.core import jobs
from siyu.core.db import transaction


@jobs.inbound_queue.periodic_task(crontab(minute="*"))
def moderate_new() -> dict[str, Any]:
    from siyu.groups.moderation import service

    try:
        with jobs.inbound_queue.lock_task("group-moderation"), transaction() as session:
            outcome = service.run_new(session)
    except TaskLockedException:
        return {"locked": True}
    return {"messages": outcome.messages, "findings": len(outcome.created), "pending": outcome.pending_groups}
