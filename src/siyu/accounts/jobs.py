"""Background jobs of the accounts domain: staff hand-overs (accounts.handover)."""

from __future__ import annotations

import logging
from typing import Any

from huey import crontab
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts import handover
from siyu.accounts.models import HandoverItem, HandoverItemStatus, HandoverMode
from siyu.core import jobs
from siyu.core.db import transaction
from siyu.core.i18n import _
from siyu.core.viewer import Viewer

log = logging.getLogger(__name__)


def _api(session: Session) -> Any:
    from siyu.wecom.client import client_for

    return client_for(session)


def _fail_batch(handover_id: int, message: str, errcode: int | None) -> None:
    """A call the platform refused for the whole batch: those customers are failed with its words."""
    with transaction() as session:
        for item in session.scalars(select(HandoverItem).where(
                HandoverItem.handover_id == handover_id, HandoverItem.status == HandoverItemStatus.pending.value)
                .order_by(HandoverItem.id).limit(handover.BATCH)):
            item.status, item.errcode, item.error = HandoverItemStatus.failed.value, errcode, message[:255]


def advance(handover_id: int, progress: Any = None) -> dict[str, int]:
    """Work through a hand-over's pending items, then collect what the platform has decided."""
    from siyu.wecom.client import WecomApiError

    while True:
        with transaction() as session:
            record = handover.get(session, handover_id=handover_id)
            try:
                if record.mode == HandoverMode.owner.value:
                    done = handover.reassign_batch(session, handover=record)
                else:
                    done = handover.send_batch(session, handover=record, api=_api(session))
            except WecomApiError as exc:
                if exc.retryable:
                    raise  # the platform is busy: the job runs again later, nothing is lost
                session.rollback()
                _fail_batch(handover_id, exc.display(), exc.errcode)
                continue
            counted = handover.counts(session, handover_id=handover_id)
        if progress is not None:
            total = sum(counted.values())
            progress(total - counted["pending"], total)
        if not done:
            break
    with transaction() as session:
        record = handover.get(session, handover_id=handover_id)
        if record.mode != HandoverMode.owner.value and handover.counts(session, handover_id=handover_id)["sent"]:
            handover.collect_results(session, handover=record, api=_api(session))
        handover.finish_if_done(session, handover=record)
        return handover.counts(session, handover_id=handover_id)


@jobs.tracked_task(jobs.bulk_queue)
def run_handover(ctx: jobs.JobContext) -> dict[str, Any]:
    handover_id = int(ctx.params["handover_id"])
    result = advance(handover_id, progress=lambda done, total: ctx.progress(done, total))
    return {**result, "link": f"/handovers/{handover_id}", "link_label": _("Open the hand-over")}


def submit(session: Session, *, handover_id: int, title: str, actor: Viewer, total: int) -> int:
    job = jobs.submit(session, run_handover, kind="accounts.handover", title=title,
                      params={"handover_id": handover_id}, actor=actor, total=total)
    return job.id


@jobs.bulk_queue.periodic_task(crontab(minute="17"))
def recheck_waiting_handovers() -> None:
    """Customers handed to WeCom are taken over within 24 hours: look again every hour."""
    with transaction() as session:
        waiting = handover.waiting_handovers(session)
    for handover_id in waiting:
        try:
            advance(handover_id)
        except Exception:  # one hand-over's trouble must not stop the others; the next hour tries again
            log.exception("hand-over %s could not be checked", handover_id)
