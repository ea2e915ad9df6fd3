"""The daily task job: at the configured local time, put customers on their cadences and make today's tasks.

The worker checks every five minutes whether the day's list is due (``TaskSettings.generate_hour`` /
``generate_minute``, local time) and not yet made; the generation itself is idempotent (see
``service.generate_tasks``), so a second run — by hand, or after a restart — creates nothing twice.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from huey import crontab
from sqlalchemy.orm import Session

from siyu.core import jobs
from siyu.core.db import transaction, utcnow
from siyu.core.i18n import _
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer


@jobs.tracked_task(jobs.bulk_queue)
def make_today(ctx: jobs.JobContext) -> dict[str, Any]:
    from siyu.maintenance import service

    with ctx.transaction() as session:
        return run_daily(session, service=service)


def run_daily(session: Session, *, service: Any, now: datetime | None = None) -> dict[str, Any]:
    from siyu.accounts import qr_renewal
    from siyu.maintenance import pool

    matched = service.apply_all_policies(session)
    # Personal accounts' own QR codes first: a renewal task counts against the operator's cap like any other.
    day = (now or utcnow()).astimezone(local_zone()).date()
    renewals = qr_renewal.make_renewal_tasks(session, today=day, now=now)
    swept = pool.sweep(session, now=now)  # 公海: unworked claims return, departed owners' and untouched customers enter
    result = service.generate_tasks(session, now=now)
    service.get_settings_row(session).last_generated_on = result.day
    return {"day": result.day.isoformat(), "created": result.created, "due_customers": result.due_customers,
            "by_kind": result.by_kind, "policies": {str(k): v for k, v in matched.items()},
            "pool": {"returned": swept.returned, "owner_left": swept.owner_left, "untouched": swept.untouched},
            "qr_renewal": {"created": renewals.created, "carried": renewals.carried}}


def submit_today(session: Session, *, actor: Viewer) -> int:
    job = jobs.submit(session, make_today, kind="maintenance.today", title=_("Make today's tasks"), params={},
                      actor=actor)
    return job.id


def is_due(*, now: datetime, hour: int, minute: int, last_generated_on: Any) -> bool:
    local = now.astimezone(local_zone())
    return local.time() >= time(hour, minute) and last_generated_on != local.date()


@jobs.bulk_queue.periodic_task(crontab(minute="*/5"))
def today_when_due() -> None:
    from siyu.core.viewer import SYSTEM
    from siyu.maintenance import service

    with transaction() as session:
        row = service.get_settings_row(session)
        if is_due(now=utcnow(), hour=row.generate_hour, minute=row.generate_minute,
                  last_generated_on=row.last_generated_on):
            row.last_generated_on = utcnow().astimezone(local_zone()).date()  # one submission per day
            submit_today(session, actor=SYSTEM)
