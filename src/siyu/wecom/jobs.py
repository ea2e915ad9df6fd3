"""Processing stored WeCom events on the inbound queue; sweeping up anything left behind."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from huey import crontab
from sqlalchemy import select, update

from siyu.core import jobs
from siyu.core.db import transaction, utcnow
from siyu.core.i18n import _
from siyu.customers.models import Customer
from siyu.customers.service import refresh_computed_many
from siyu.wecom import archive_jobs as archive_jobs  # the chat archive's tasks load with the domain's jobs
from siyu.wecom import callback, events
from siyu.wecom import kf_jobs as kf_jobs  # 微信客服's tasks load with the domain's jobs
from siyu.wecom.models import EventStatus, WecomEvent
from siyu.wecom.sync import NIGHTLY_HOUR, NIGHTLY_MINUTE

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
STALE_AFTER = timedelta(seconds=30)
DONE = (EventStatus.processed.value, EventStatus.ignored.value)


# A worker that picks up one event takes up to this many other waiting events along with it:
# one claim, one transaction and one recompute of the customers they touched, instead of one
# each. Their own tasks then find them done and return at once.
BATCH_EVENTS = 50


def _claim(session: Any, event_ids: list[int], *, retry: bool) -> list[int]:
    """Mark an attempt on these events and on waiting events nobody has started; the ids claimed.

    ``attempts`` goes up before any work, so an event whose processing kills the worker is
    still counted. A first attempt is claimed only where ``attempts = 0`` still holds, which
    makes the claim atomic between workers; a later attempt only by the retry scheduled for it
    (an event another worker took along has attempts > 0 too, and is not this task's to redo).
    """
    rows = session.execute(select(WecomEvent.id, WecomEvent.attempts).where(
        WecomEvent.id.in_(event_ids), WecomEvent.status.not_in(DONE))).all()
    first_tries = [event_id for event_id, attempts in rows if attempts == 0]
    retries = [event_id for event_id, attempts in rows if attempts > 0] if retry else []
    claimed = _mark_attempt(session, first_tries, first_try=True) + _mark_attempt(session, retries, first_try=False)
    if not claimed:
        return []  # done or taken by another worker: processing stays exactly once
    room = BATCH_EVENTS - len(claimed)
    waiting = list(session.scalars(select(WecomEvent.id).where(
        WecomEvent.status == EventStatus.received.value, WecomEvent.attempts == 0, WecomEvent.id.not_in(claimed))
        .order_by(WecomEvent.id).limit(room))) if room > 0 else []
    return sorted(claimed + _mark_attempt(session, waiting, first_try=True))


def _mark_attempt(session: Any, event_ids: list[int], *, first_try: bool) -> list[int]:
    if not event_ids:
        return []
    condition = WecomEvent.attempts == 0 if first_try else WecomEvent.status.not_in(DONE)
    return list(session.scalars(
        update(WecomEvent).where(WecomEvent.id.in_(event_ids), condition)
        .values(attempts=WecomEvent.attempts + 1).returning(WecomEvent.id),
        execution_options={"synchronize_session": False}))


@jobs.inbound_queue.task()
def process_event(event_id: int, *more_ids: int, retry: bool = False) -> None:
    """Apply stored events (and waiting ones they can take along); failures retry with a growing delay."""
    with transaction() as session:
        claimed = _claim(session, [event_id, *more_ids], retry=retry)
    if not claimed:
        return
    failed: dict[int, str] = {}
    try:
        with transaction() as session:
            # Before the batch: a token fetch must not wait on its lock. Only when an event needs
            # the API, so a flood of customer messages never waits on an unreachable WeCom.
            kinds = session.scalars(select(WecomEvent.event_type).where(WecomEvent.id.in_(claimed)))
            api = events.connected_api(session) if events.needs_api(kinds) else None
        with transaction() as session:
            # Write first: on SQLite this takes the write lock (waiting its turn) before any read,
            # so a callback committing meanwhile cannot invalidate the batch's snapshot halfway.
            session.execute(update(WecomEvent).where(WecomEvent.id.in_(claimed)).values(error=""),
                            execution_options={"synchronize_session": False})
            touched: list[Customer] = []
            loaded = {event.id: event for event in session.scalars(select(WecomEvent).where(
                WecomEvent.id.in_(claimed)))}
            # Finished by a worker that held them before this one's claim: skipped.
            pending = [loaded[claimed_id] for claimed_id in claimed if loaded[claimed_id].status not in DONE]
            for run in events.runs(pending, api=api):
                _apply(session, run, touched=touched, api=api, failed=failed)
            refresh_computed_many(session, customers=list({c.id: c for c in touched}.values()))
    except Exception as exc:  # the batch as a whole could not be saved: every event is retried
        log.warning("wecom events %s failed together: %s", claimed, exc)
        failed = {claimed_id: f"{type(exc).__name__}: {exc}" for claimed_id in claimed}
    if failed:
        _record_failures(failed)


def _apply(session: Any, run: list[WecomEvent], *, touched: list[Customer], api: Any | None,
           failed: dict[int, str]) -> None:
    """Apply a run in a savepoint, so one bad event never undoes the others; a failed run of several
    events is applied again one event at a time, to find the one that failed."""
    kept = len(touched)
    try:
        with session.begin_nested():
            status = events.process_run(session, run, touched=touched, api=api)
    except Exception as exc:
        del touched[kept:]
        if len(run) > 1:
            for event in run:
                _apply(session, [event], touched=touched, api=api, failed=failed)
            return
        failed[run[0].id] = f"{type(exc).__name__}: {exc}"
        log.warning("wecom event %s failed: %s", run[0].id, exc)
        return
    for event in run:
        event.status, event.error, event.processed_at = status, "", utcnow()
        if status == EventStatus.ignored.value:
            log.info("wecom event %s (%s) stored and acknowledged; Siyu does not act on it", event.id,
                     event.event_type)


def _record_failures(failed: dict[int, str]) -> None:
    with transaction() as session:
        for event_id, error in failed.items():
            event = session.get(WecomEvent, event_id)
            if event is None:
                continue
            event.error = error[:2000]
            if event.attempts >= MAX_ATTEMPTS:
                event.status = EventStatus.failed.value
            else:
                process_event.schedule((event_id,), {"retry": True}, delay=10 * 2 ** (event.attempts - 1))


def enqueue(session: Any, event_id: int) -> None:
    jobs.enqueue_after_commit(session, process_event, event_id)


# Callbacks hand their committed events over here and answer without waiting for the enqueue.
stored_events = jobs.Handover(process_event, per_task=BATCH_EVENTS)


@jobs.inbound_queue.periodic_task(crontab(minute="*"))
def sweep_events() -> None:
    """Events stored but never picked up (the app died between commit and enqueue) get processed."""
    with transaction() as session:
        stale = list(session.scalars(select(WecomEvent.id).where(
            WecomEvent.status == EventStatus.received.value, WecomEvent.attempts == 0,
            WecomEvent.received_at < utcnow() - STALE_AFTER).order_by(WecomEvent.id).limit(5000)))
        callback.forget_old_nonces(session)
    for event_id in stale:
        process_event(event_id)
    if stale:
        log.info("re-enqueued %s WeCom events that were stored but not processed", len(stale))


# ---------------------------------------------------------------- the full sync (wecom.sync)


@jobs.tracked_task(jobs.bulk_queue, retries=3, retry_delay=60)
def sync_corp(ctx: jobs.JobContext) -> dict[str, Any]:
    """Pull the corp into Siyu; a failure leaves the position saved, so the retry resumes."""
    from siyu.wecom import sync
    from siyu.wecom.client import WecomApiError, client_for

    with ctx.transaction() as session:
        api = client_for(session)

    def report(state: dict[str, Any]) -> None:
        ctx.progress(int(state["counts"].get("contacts", 0)), None)

    state = sync.run(transaction, api, restart=bool(ctx.params.get("restart")), progress=report)
    try:  # the 微信客服 accounts too, when the Secret may list them
        state["counts"]["kf_accounts_created"] = kf_jobs.sync_accounts()
    except WecomApiError as exc:
        if exc.retryable:
            raise
        log.info("微信客服 accounts not listed: %s", exc)
    return {**state["counts"], "link": "/wecom", "link_label": _("WeCom")}


def sync_job_active(session: Any) -> bool:
    """A sync job is queued or running (one at a time: two would fight over the position)."""
    from siyu.core.models import Job, JobStatus

    return session.scalar(select(Job.id).where(Job.kind == "wecom.sync", Job.status.in_(
        [JobStatus.queued.value, JobStatus.running.value, JobStatus.retrying.value])).limit(1)) is not None


def submit_sync(session: Any, *, actor: Any, restart: bool = False) -> int:
    job = jobs.submit(session, sync_corp, kind="wecom.sync", title=_("Sync the WeCom corp"),
                      params={"restart": restart}, actor=actor)
    return job.id


@jobs.bulk_queue.periodic_task(crontab(hour=str(NIGHTLY_HOUR), minute=str(NIGHTLY_MINUTE)))
def nightly_sync() -> None:
    """Every night at 03:30 (the worker's clock): a full sync — or the rest of one a crash stopped."""
    from siyu.core.viewer import SYSTEM
    from siyu.wecom import config

    with transaction() as session:
        cfg = config.effective(session)
        if not (cfg.corp_id and cfg.secret) or sync_job_active(session):
            return
        submit_sync(session, actor=SYSTEM)


# ---------------------------------------------------------------- write-back (wecom.writeback)


WRITE_BACK_CHUNK = 100
WRITE_BACK_ATTEMPTS = 5


@jobs.bulk_queue.task(retries=3, retry_delay=60)  # anything but WeCom's answers (e.g. a locked database)
def write_back_customers(customer_ids: list[int], fields: list[str], attempt: int = 1) -> None:
    """Write customers' Siyu edits to WeCom, one transaction each.

    A busy WeCom puts the customers not yet written into a later task (1, 2, 3, 4 minutes);
    when it stays busy, or refuses, the refusal goes on the customer's timeline — never dropped.
    """
    from siyu.wecom import writeback
    from siyu.wecom.client import WecomApiError, WecomNotConfigured, client_for

    with transaction() as session:
        try:
            api = client_for(session)
        except WecomNotConfigured:
            return
    for position, customer_id in enumerate(customer_ids):
        with transaction() as session:
            try:
                writeback.write_back(session, customer_id=customer_id, api=api, fields=set(fields))
                continue
            except WecomApiError as exc:
                session.rollback()
                if not exc.retryable or attempt >= WRITE_BACK_ATTEMPTS:
                    writeback.record_refusal(session, customer_id=customer_id, message=exc.display(),
                                             errcode=exc.errcode)
                    log.warning("write-back of customer %s refused: %s", customer_id, exc)
                    continue
        later = customer_ids[position:]
        write_back_customers.schedule((later, fields, attempt + 1), delay=60 * attempt)
        log.info("WeCom busy: write-back of %s customers again in %s s", len(later), 60 * attempt)
        return


def _queue_write_back(session: Any, customer_ids: list[int], fields: set[str]) -> None:
    from siyu.wecom import writeback

    if not writeback.wants_write_back(fields):
        return
    on_wecom = writeback.customers_on_wecom(session, customer_ids)
    for first in range(0, len(on_wecom), WRITE_BACK_CHUNK):
        jobs.enqueue_after_commit(session, write_back_customers, on_wecom[first:first + WRITE_BACK_CHUNK],
                                  sorted(fields & writeback.FIELDS))


def _register_write_back() -> None:
    from siyu.customers import service as customers_service

    customers_service.on_customer_changed(_queue_write_back)


_register_write_back()


# ---------------------------------------------------------------- replies' fates (wecom.send_results)


@jobs.bulk_queue.periodic_task(crontab(minute="*"))
def check_sends() -> dict[str, int]:
    """Whether the replies WeCom accepted were sent by their member and reached the customer."""
    from siyu.wecom import send_results
    from siyu.wecom.client import WecomNotConfigured, client_for

    with transaction() as session:
        if not send_results.due_tasks(session, limit=1):
            return {}
        try:
            api = client_for(session, policy=send_results.ONE_TRY)
        except WecomNotConfigured:
            return {}  # the connection was removed: the replies wait until it is back
    run = send_results.check_due(transaction, api)
    if run.delivered or run.failed:
        log.info("WeCom send results: %s delivered, %s failed, %s still waiting for their member", run.delivered,
                 run.failed, run.waiting)
    return {"delivered": run.delivered, "failed": run.failed, "waiting": run.waiting}
