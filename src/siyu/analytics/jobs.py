"""Analytics jobs: WeCom member behaviour data fetched every morning, per member (W:96358)."""

from __future__ import annotations

from typing import Any

from huey import crontab
from sqlalchemy.orm import Session

from siyu.core import jobs
from siyu.core.db import transaction
from siyu.core.i18n import _
from siyu.core.viewer import Viewer

# The worker's clock: after the platform has closed yesterday's figures, before the working day.
BEHAVIOUR_HOUR = 6
BEHAVIOUR_MINUTE = 10


@jobs.tracked_task(jobs.bulk_queue)
def fetch_behaviour(ctx: jobs.JobContext) -> dict[str, Any]:
    from siyu.analytics import behaviour
    from siyu.wecom.client import client_for

    with ctx.transaction() as session:
        result = behaviour.fetch_recent(session, api=client_for(session))
    return {"members": result.members, "days": result.days, "unknown": result.unknown,
            "failed": result.failed}


def submit_behaviour(session: Session, *, actor: Viewer) -> int:
    job = jobs.submit(session, fetch_behaviour, kind="analytics.behaviour", title=_("Fetch WeCom member statistics"),
                      params={}, actor=actor)
    return job.id


@jobs.bulk_queue.periodic_task(crontab(hour=str(BEHAVIOUR_HOUR), minute=str(BEHAVIOUR_MINUTE)))
def daily_behaviour() -> None:
    """Every morning: each WeCom member's figures of the last days (one call per member)."""
    from siyu.core.viewer import SYSTEM
    from siyu.wecom import config

    with transaction() as session:
        cfg = config.effective(session)
        if cfg.corp_id and cfg.secret:
            submit_behaviour(session, actor=SYSTEM)
