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


@jobs.bulk_queue.task(retries=5, retry_delay=30)
def sync_welcome_template(template_id: int) -> None:
    """Create or edit the 入群欢迎语素材 on WeCom (W:92366); a refusal retrying cannot fix is kept on the template."""
    from siyu.groups import onboarding
    from siyu.groups.models import GroupWelcomeTemplate
    from siyu.wecom.client import WecomApiError, WecomNotConfigured, client_for

    with transaction() as session:
        template = session.get(GroupWelcomeTemplate, template_id)
        if template is None:
            return
        try:
            done = onboarding.sync_welcome_template(session, template=template, api=client_for(session))
        except WecomNotConfigured:
            return
        except WecomApiError as exc:
            if exc.retryable:
                raise
            template.sync_error = exc.display()[:255]
            return
        log.info("group welcome template %s: %s", template_id, done)


@jobs.bulk_queue.task(retries=5, retry_delay=30)
def delete_welcome_template(wecom_template_id: str) -> None:
    from siyu.wecom.client import WecomApiError, WecomNotConfigured, client_for

    with transaction() as session:
        try:
            client_for(session).delete_group_welcome_template(wecom_template_id)
        except WecomNotConfigured:
            return
        except WecomApiError as exc:
            if exc.retryable:
                raise
            log.warning("group welcome template %s not deleted: %s", wecom_template_id, exc)


def run_posts(session: Any, *, api: Any, now: datetime | None = None) -> dict[str, Any]:
    """群SOP: today's and tomorrow's calendar lines become posts, due posts go out, confirmations are read."""
    from datetime import timedelta

    from siyu.core.db import utcnow
    from siyu.core.settings import local_zone
    from siyu.groups import posts

    now = now or utcnow()
    today = now.astimezone(local_zone()).date()
    scheduled = posts.schedule_day(session, day=today, now=now) + posts.schedule_day(
        session, day=today + timedelta(days=1), now=now)
    outcome = posts.send_due(session, api=api, now=now) if api is not None else posts.SendOutcome()
    confirmed = posts.check_results(session, api=api, now=now) if api is not None else 0
    return {"scheduled": scheduled, "sent": outcome.sent, "refused": outcome.refused, "cancelled": outcome.cancelled,
            "failed": outcome.failed, "tasks": outcome.tasks, "confirmed": confirmed}


@jobs.bulk_queue.periodic_task(crontab(minute="*/5"))
def groups_posts() -> None:
    """Every five minutes: the posts calendar (群SOP)."""
    from siyu.wecom.client import WecomNotConfigured, client_for

    with transaction() as session:
        try:
            api: Any = client_for(session)
        except WecomNotConfigured:
            api = None
        log.info("group posts: %s", run_posts(session, api=api))
