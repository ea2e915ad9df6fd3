"""Background jobs of the groups domain: a group code's WeCom config, and the daily health run."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from huey import crontab

from siyu.core import jobs
from siyu.core.db import transaction

log = logging.getLogger(__name__)


@jobs.bulk_queue.task(retries=5, retry_delay=30)
def sync_group_code(code_id: int) -> None:
    """Create or update the code's 「加入群聊」 config on WeCom; a busy platform is retried later, a refusal
    that retrying cannot fix is the code's alert."""
    from siyu.groups import codes
    from siyu.groups.models import GroupCode
    from siyu.wecom.client import WecomApiError, WecomNotConfigured, client_for

    with transaction() as session:
        code = session.get(GroupCode, code_id)
        if code is None:
            return
        try:
            done = codes.sync_join_way(session, code=code, api=client_for(session))
        except WecomNotConfigured:
            return
        except WecomApiError as exc:
            if exc.retryable:
                raise
            code.alert = exc.display()[:255]
            log.warning("join way of group code %s refused: %s", code_id, exc)
            return
        log.info("join way of group code %s: %s", code_id, done)


def run_daily(session: Any, *, now: datetime | None = None, api: Any = None) -> dict[str, Any]:
    """Yesterday's snapshot of every group, the QR renewals, and WeCom's owner figures when connected."""
    from siyu.groups import codes, health

    result = health.snapshot(session, now=now)
    renewals = codes.renewal_tasks(session, now=now)
    pulled = 0
    if api is not None:
        from siyu.wecom.client import WecomApiError

        try:
            with session.begin_nested():  # a refused pull keeps the snapshot
                pulled = health.pull_owner_stats(session, api=api, days=2)
        except WecomApiError as exc:
            log.warning("group statistics not pulled: %s", exc)
    return {"day": result.day.isoformat(), "groups": result.groups, "silent": result.silent, "dead": result.dead,
            "resource_tasks": result.tasks, "qr_renewals": renewals, "owner_stats": pulled}


@jobs.bulk_queue.periodic_task(crontab(minute="20", hour="*"))
def groups_daily() -> None:
    """Hourly check, runs once a local day (the snapshot of a day already taken is simply replaced)."""
    from siyu.core.db import utcnow
    from siyu.core.settings import local_zone
    from siyu.groups.models import GroupDaySnapshot
    from siyu.wecom.client import WecomNotConfigured, client_for

    now = utcnow()
    yesterday = now.astimezone(local_zone()).date().toordinal() - 1
    with transaction() as session:
        from sqlalchemy import select

        taken = session.scalar(select(GroupDaySnapshot.id).where(
            GroupDaySnapshot.day == datetime.fromordinal(yesterday).date()).limit(1))
        if taken is not None:
            return
        try:
            api: Any = client_for(session)
        except WecomNotConfigured:
            api = None
        log.info("groups daily: %s", run_daily(session, now=now, api=api))
