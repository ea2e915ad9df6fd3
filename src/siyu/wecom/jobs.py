"""Processing stored WeCom events on the inbound queue; sweeping up anything left behind."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from huey import crontab
from sqlalchemy import select

from siyu.core import jobs
from siyu.core.db import transaction, utcnow
from siyu.wecom import callback, events
from siyu.wecom.models import EventStatus, WecomEvent

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
STALE_AFTER = timedelta(seconds=30)


@jobs.inbound_queue.task()
def process_event(event_id: int) -> None:
    """Apply one stored event; a failure is retried with a growing delay, then shown as failed."""
    with transaction() as session:
        event = session.get(WecomEvent, event_id, with_for_update=True)
        if event is None or event.status in (EventStatus.processed.value, EventStatus.ignored.value):
            return  # already done (a sweep and a retry may both ask): processing stays exactly once
        event.attempts += 1
        attempt = event.attempts
    try:
        with transaction() as session:
            event = session.get(WecomEvent, event_id)
            assert event is not None
            status = events.process(session, event)
            event.status, event.error, event.processed_at = status, "", utcnow()
        if status == EventStatus.ignored.value:
            log.info("wecom event %s (%s) stored and acknowledged; Siyu does not act on it", event_id,
                     event.event_type)
    except Exception as exc:
        log.warning("wecom event %s failed on attempt %s: %s", event_id, attempt, exc)
        with transaction() as session:
            event = session.get(WecomEvent, event_id)
            if event is not None:
                event.error = f"{type(exc).__name__}: {exc}"[:2000]
                if attempt >= MAX_ATTEMPTS:
                    event.status = EventStatus.failed.value
        if attempt < MAX_ATTEMPTS:
            process_event.schedule((event_id,), delay=10 * 2 ** (attempt - 1))


def enqueue(session: Any, event_id: int) -> None:
    jobs.enqueue_after_commit(session, process_event, event_id)


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
