"""Campaign jobs: create a campaign's tasks once it is due (and again after a busy WeCom), and read
back the results of the campaigns sent in the last three days, every minute. ``service.send_campaign``
is idempotent (each chunk claimed with a conditional UPDATE, committed before WeCom is asked), so the
periodic task, the task enqueued by "send now" and a run by hand never create a chunk twice."""

from __future__ import annotations

import logging

from huey import crontab

from siyu.core import jobs
from siyu.core.db import get_sessionmaker

log = logging.getLogger(__name__)


def _run(campaign_ids: list[int] | None = None) -> None:
    from siyu.campaigns import service

    session = get_sessionmaker()()
    try:
        for campaign_id in campaign_ids if campaign_ids is not None else service.due_campaigns(session):
            service.send_campaign(session, campaign_id)
            session.commit()
        if campaign_ids is None:
            for campaign_id in service.results_due(session):
                service.read_results(session, campaign_id)
                session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@jobs.bulk_queue.task()
def send_campaign(campaign_id: int) -> None:
    _run([campaign_id])


@jobs.bulk_queue.periodic_task(crontab(minute="*"))
def campaigns_when_due() -> None:
    _run()
