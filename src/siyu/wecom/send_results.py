"""Reading back what happened to replies WeCom accepted as mass-send tasks.

``add_msg_template`` only creates a task: the member confirms it in their WeCom app, and WeCom
then sends it — or not, when the customer is no longer the member's contact or has reached
the platform's receive limit. ``get_groupmsg_send_result`` tells which, per customer (or group).
Each accepted reply has a ``SendCheck`` row; a periodic job reads the results of the due rows,
one call per task and member, marks each reply delivered or failed with the reason, and
looks again later — sooner at first, then less often — while the member has not sent it yet.
A reply still unsent after ``GIVE_UP_AFTER`` is failed with that reason: whatever it answered
is stale by then, and the agent should see it was never sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.i18n import N_, _
from siyu.inbox import delivery
from siyu.inbox.models import Message
from siyu.wecom.client import RetryPolicy, WecomApi, WecomApiError
from siyu.wecom.models import SendCheck

log = logging.getLogger(__name__)

BATCH = 200
# How long to wait before looking again, by how many looks came before (then the last, again and again).
RECHECK_AFTER = (timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=5), timedelta(minutes=15),
                 timedelta(minutes=30), timedelta(hours=1))
GIVE_UP_AFTER = timedelta(days=3)
# One try per call: a busy WeCom is simply asked again on the next run, a minute later.
ONE_TRY = RetryPolicy(attempts=1)

# get_groupmsg_send_result: 0 not sent yet, 1 sent, 2 not a contact of the member, 3 receive limit reached
NOT_SENT_YET, SENT, NOT_A_FRIEND, RECEIVE_LIMIT = 0, 1, 2, 3
NOT_A_CONTACT = N_("WeCom did not send it: the customer is no longer a contact of this account's member")
LIMIT_REACHED = N_("WeCom did not send it: the customer has already received as many mass messages as WeCom allows for now")  # noqa: E501
NEVER_SENT = N_("The member did not send it in WeCom within 3 days; it was never sent")
TASK_GONE = N_("WeCom no longer knows this send task: {detail}")


@dataclass
class CheckRun:
    delivered: int = 0
    failed: int = 0
    waiting: int = 0


def track(session: Session, *, message_id: int, msgid: str, sender: str, target: str) -> None:
    """Remember to read back the result of a reply WeCom accepted (in the delivery's transaction)."""
    now = utcnow()
    session.add(SendCheck(message_id=message_id, msgid=msgid, sender=sender, target=target, created_at=now,
                          next_check_at=now + RECHECK_AFTER[0], checks=0))


Task = tuple[str, str]  # (msgid, the sending member's userid): one results call each


def due_tasks(session: Session, *, now: datetime | None = None, limit: int = BATCH) -> list[Task]:
    """The send tasks with replies due for a look, oldest first."""
    rows = session.execute(select(SendCheck.msgid, SendCheck.sender).where(
        SendCheck.next_check_at <= (now or utcnow())).order_by(SendCheck.next_check_at, SendCheck.id)
        .limit(limit)).all()
    return list(dict.fromkeys((str(msgid), str(sender)) for msgid, sender in rows))


def read(api: WecomApi, tasks: list[Task]) -> dict[Task, list[dict[str, Any]] | WecomApiError]:
    """WeCom's per-customer results of each task — outside any transaction, so no lock waits on WeCom.

    A busy or unreachable WeCom (retryable) stops the reading: the rest waits for the next run.
    """
    results: dict[Task, list[dict[str, Any]] | WecomApiError] = {}
    for msgid, sender in tasks:
        try:
            results[(msgid, sender)] = api.mass_send_results(msgid, sender)
        except WecomApiError as exc:
            if exc.retryable or exc.errcode is None:
                log.info("WeCom send results not readable now (%s); the next run tries again", exc.display())
                break
            results[(msgid, sender)] = exc
    return results


def settle(session: Session, results: dict[Task, list[dict[str, Any]] | WecomApiError], *,
           now: datetime | None = None) -> CheckRun:
    """Mark each tracked reply of these tasks delivered or failed, or look again later."""
    moment = now or utcnow()
    run = CheckRun()
    for (msgid, sender), answer in results.items():
        items = session.scalars(select(SendCheck).where(SendCheck.msgid == msgid, SendCheck.sender == sender))
        if isinstance(answer, WecomApiError):
            for item in items:
                _settle(session, item, failure=_(TASK_GONE, detail=answer.display()), run=run)
            continue
        by_target = {str(row.get("external_userid") or row.get("chat_id") or ""): row for row in answer}
        for item in items:
            row = by_target.get(item.target, {})
            status = int(row.get("status", 0) or 0)
            if status == SENT:
                sent_at = int(row.get("send_time", 0) or 0)
                _settle(session, item, delivered_at=datetime.fromtimestamp(sent_at, UTC) if sent_at else moment,
                        run=run)
            elif status == NOT_A_FRIEND:
                _settle(session, item, failure=NOT_A_CONTACT, run=run)
            elif status == RECEIVE_LIMIT:
                _settle(session, item, failure=LIMIT_REACHED, run=run)
            elif moment - item.created_at >= GIVE_UP_AFTER:
                _settle(session, item, failure=NEVER_SENT, run=run)
            else:
                item.checks += 1
                item.next_check_at = moment + RECHECK_AFTER[min(item.checks, len(RECHECK_AFTER) - 1)]
                run.waiting += 1
    session.flush()
    return run


def check_due(session_scope: Callable[[], AbstractContextManager[Session]], api: WecomApi, *,
              now: datetime | None = None, budget: timedelta = timedelta(seconds=50)) -> CheckRun:
    """Batches of due tasks until none is left or ``budget`` is spent (the next run is a minute away).

    Each batch: which tasks are due (a short read), WeCom's answers (outside any transaction),
    then the updates in one transaction.
    """
    total = CheckRun()
    stop_at = time.monotonic() + budget.total_seconds()
    while time.monotonic() < stop_at:
        with session_scope() as session:
            tasks = due_tasks(session, now=now)
        if not tasks:
            break
        results = read(api, tasks)
        with session_scope() as session:
            run = settle(session, results, now=now)
        total.delivered, total.failed, total.waiting = (total.delivered + run.delivered, total.failed + run.failed,
                                                        total.waiting + run.waiting)
        if len(results) < len(tasks):
            break  # WeCom is busy: the rest waits for the next run
    return total


def _settle(session: Session, item: SendCheck, *, run: CheckRun, delivered_at: datetime | None = None,
            failure: str = "") -> None:
    message = session.get(Message, item.message_id)
    if message is not None:
        if failure:
            delivery.fail_after_acceptance(message, failure)
            run.failed += 1
        else:
            delivery.confirm(message, delivered_at=delivered_at)
            run.delivered += 1
    session.delete(item)
