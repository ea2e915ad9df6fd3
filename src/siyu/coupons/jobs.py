"""Background jobs of coupons: the daily expiry reminders (今日任务)."""

from __future__ import annotations

from huey import crontab

from siyu.core import jobs
from siyu.core.db import transaction
from siyu.coupons import service


@jobs.bulk_queue.periodic_task(crontab(minute="20", hour="7"))
def remind_expiring() -> None:
    """Each morning: tasks for the codes about to expire unused."""
    with transaction() as session:
        service.remind_expiring(session)
