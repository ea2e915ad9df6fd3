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


# ---------------------------------------------------------------- the ladder's rollups (analytics.rollups)

# The worker's clock (UTC): 03:40 in Asia/Shanghai, after the nightly RFM and sync jobs.
ROLLUP_HOUR = 19
ROLLUP_MINUTE = 40


@jobs.tracked_task(jobs.bulk_queue)
def rebuild_rollups(ctx: jobs.JobContext) -> dict[str, Any]:
    from siyu.analytics import rollups

    with ctx.transaction() as session:
        return rollups.rebuild(session)


@jobs.bulk_queue.periodic_task(crontab(hour=str(ROLLUP_HOUR), minute=str(ROLLUP_MINUTE)))
def nightly_rollups() -> None:
    """Every night: the funnel's and the cohorts' rollups rebuilt from the transitions (appended rows folded)."""
    from siyu.core.viewer import SYSTEM

    with transaction() as session:
        jobs.submit(session, rebuild_rollups, kind="analytics.rollups", title=_("Rebuild the ladder's rollups"),
                    params={}, actor=SYSTEM)


# Saved segments' funnel counts (analytics.segment_rollups): every hour, so a kept funnel is at most ~2 h old.
SEGMENT_ROLLUP_MINUTE = 25


@jobs.tracked_task(jobs.bulk_queue)
def refresh_segment_rollups(ctx: jobs.JobContext) -> dict[str, Any]:
    from siyu.analytics import segment_rollups

    with ctx.transaction() as session:
        ids = segment_rollups.saved_segment_ids(session)
    done = skipped = 0
    for index, segment_id in enumerate(ids):  # one transaction each: writers wait for one segment at most
        with ctx.transaction() as session:
            if segment_rollups.refresh(session, segment_id) < 0:
                skipped += 1
            else:
                done += 1
        ctx.progress(index + 1, len(ids))
    return {"segments": done, "skipped": skipped}


@jobs.bulk_queue.task(retries=2, retry_delay=30)
def refresh_segment_rollup(segment_id: int) -> None:
    """A saved segment just created or changed (``segments.service`` enqueues this after the commit): its
    funnel counts now rather than at the next :25, so its funnel is a lookup again seconds later."""
    from siyu.analytics import segment_rollups

    with transaction() as session:
        segment_rollups.refresh(session, segment_id)


CLEARED_RETRY_SECONDS = 30  # a merge while the refresh of cleared counts runs: look again this much later
CLEARED_PASSES = 5  # merges keep coming: at most this many passes, the next merge's job takes over


@jobs.bulk_queue.task()
def refresh_cleared_segment_rollups() -> int:
    """The saved segments' counts a merge or its undo cleared (``rollups.forget_segments`` enqueues this after
    the commit), one transaction each, until none is cleared; a burst of merges is one run. Another run
    holding the lock: look again shortly (its last look may have come before this merge committed)."""
    from huey.exceptions import TaskLockedException

    from siyu.analytics import segment_rollups

    done = 0
    try:
        with jobs.bulk_queue.lock_task("analytics:cleared-segment-rollups"):
            for _pass in range(CLEARED_PASSES):
                with transaction() as session:
                    cleared = segment_rollups.cleared_segment_ids(session)
                if not cleared:
                    break
                for segment_id in cleared:
                    with transaction() as session:
                        segment_rollups.refresh(session, segment_id)
                    done += 1
    except TaskLockedException:
        refresh_cleared_segment_rollups.schedule(delay=CLEARED_RETRY_SECONDS)
    return done


@jobs.bulk_queue.periodic_task(crontab(minute=str(SEGMENT_ROLLUP_MINUTE)))
def hourly_segment_rollups() -> None:
    """Every hour: each saved segment's funnel counts from its members now."""
    from siyu.core.viewer import SYSTEM

    with transaction() as session:
        jobs.submit(session, refresh_segment_rollups, kind="analytics.segment_rollups",
                    title=_("Refresh the saved segments' funnel counts"), params={}, actor=SYSTEM)


# ---------------------------------------------------------------- weekly reports (analytics.reports)

REPORT_CHECK_MINUTES = "*/15"  # due from Monday 09:00 local; a worker that was down sends when it is back


@jobs.tracked_task(jobs.bulk_queue)
def send_weekly_reports(ctx: jobs.JobContext) -> dict[str, Any]:
    from datetime import date

    from siyu.analytics import reports
    from siyu.core.settings import get_settings
    from siyu.wecom.client import client_for

    agent = get_settings().wecom_agent_id.strip()
    with ctx.transaction() as session:
        api = client_for(session)
    result = reports.deliver_week(api=api, week=date.fromisoformat(ctx.params["week"]),
                                  agent_id=int(agent) if agent.isdigit() else None)
    return {"sent": result.sent, "skipped": len(result.skipped), "failed": result.failed,
            "no_owner": result.no_owner}


def submit_weekly_reports(session: Session, *, week: Any, actor: Viewer) -> int:
    job = jobs.submit(session, send_weekly_reports, kind="analytics.weekly_reports",
                      title=_("Send the weekly reports"), params={"week": week.isoformat()}, actor=actor)
    return job.id


@jobs.bulk_queue.periodic_task(crontab(minute=REPORT_CHECK_MINUTES))
def weekly_reports_due() -> None:
    """From Monday 09:00 local: last week's reports, each scope's once, to their owners through WeCom."""
    from siyu.analytics import reports
    from siyu.core.db import utcnow
    from siyu.core.viewer import SYSTEM
    from siyu.wecom import config

    with transaction() as session:
        cfg = config.effective(session)
        week = reports.due_week(utcnow())
        if cfg.corp_id and cfg.secret and reports.pending(session, week):
            submit_weekly_reports(session, week=week, actor=SYSTEM)
