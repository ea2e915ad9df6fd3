"""The moments jobs: every minute, due posts go out and WeCom tasks are followed to their publication;
every fifteen minutes, likes and comments are read back onto customers' timelines.

Each is idempotent (see ``moments.publish``): a post goes out once (its status moves in the same
transaction as the call's answer), an interaction read twice is stored and put on a timeline once.
"""

from __future__ import annotations

import logging
from typing import Any

from huey import crontab

from siyu.core import jobs
from siyu.core.db import transaction

log = logging.getLogger(__name__)


@jobs.bulk_queue.periodic_task(crontab(minute="*"))
def moments_go_out() -> dict[str, Any]:
    """Scheduled posts whose time came: WeCom tasks created, personal accounts' reminders made; tasks followed."""
    from siyu.moments import publish

    out = publish.publish_due(transaction)
    followed = publish.follow_tasks(transaction)
    if out.published or out.reminded or out.failed or followed.made or followed.failed:
        log.info("moments: %s sent to WeCom, %s reminders, %s published, %s failed", out.published, out.reminded,
                 followed.made, out.failed + followed.failed)
    return {"out": out.as_dict(), "followed": followed.as_dict()}


@jobs.bulk_queue.periodic_task(crontab(minute="*/15"))
def moments_read_back() -> dict[str, Any]:
    """Likes and comments on the last 30 days' published WeCom posts, onto the customers' timelines."""
    from siyu.moments import publish

    run = publish.read_interactions(transaction)
    if run.interactions:
        log.info("moments: %s new likes and comments, %s touches", run.interactions, run.touches)
    return run.as_dict()
