"""Background work of the chat archive: pulling after msgaudit_notify, and a sweep for lost callbacks.

One pull at a time (a lock); a callback that arrives while a pull runs finds the lock taken —
the running pull looks again before it lets go when a callback came after it started, and the
minutely sweep pulls when the last callback is newer than the last pull. Correctness never rests
on the lock: the seq's compare-and-set and the unique msgid make a second puller harmless.
"""

from __future__ import annotations

import logging
from typing import Any

from huey import crontab
from huey.exceptions import TaskLockedException

from siyu.core import jobs
from siyu.core.db import transaction, utcnow
from siyu.wecom import archive

log = logging.getLogger(__name__)
BUSY_RETRY_SECONDS = 15  # msgaudit_notify comes at most every 15 s (W:95039): a failed pull waits as long
MAX_ROUNDS = 20


def _source_and_api() -> tuple[Any, Any]:
    from siyu.wecom.client import WecomNotConfigured, client_for

    with transaction() as session:
        source = archive.configured_source(session)
        try:
            api = client_for(session)
        except WecomNotConfigured:
            api = None
    return source, api


@jobs.inbound_queue.task()
def pull_archive(attempt: int = 1) -> dict[str, Any]:
    """GetChatData after the stored seq until the archive has nothing more (see ``archive.pull``)."""
    from siyu.wecom.client import WecomApiError

    try:
        source, api = _source_and_api()
    except archive.ArchiveError as exc:
        log.warning("msgaudit_notify, but the archive source cannot be loaded: %s", exc)
        return {}
    if source is None:
        log.warning("msgaudit_notify, but SIYU_WECOM_ARCHIVE_SOURCE is not set: nothing pulled")
        return {}
    totals: dict[str, Any] = {"pages": 0, "stored": 0}
    try:
        with jobs.inbound_queue.lock_task("archive-pull"):
            for _round in range(MAX_ROUNDS):
                started = utcnow()
                result = archive.pull(transaction, source, api=api)
                totals["pages"] += result.pages
                totals["stored"] += result.private + result.group
                with transaction() as session:
                    row = archive.cursor_row(session)
                    again = row.notified_at is not None and row.notified_at >= started
                if not again:
                    break
    except TaskLockedException:
        return {"locked": True}
    except (archive.ArchiveError, WecomApiError) as exc:
        if attempt < 6:
            pull_archive.schedule((attempt + 1,), delay=BUSY_RETRY_SECONDS * attempt)
        log.warning("chat archive pull failed (attempt %s): %s", attempt, exc)
    return totals


@jobs.inbound_queue.periodic_task(crontab(minute="*"))
def sweep_archive() -> None:
    """A callback newer than the last pull (one lost between a pull and its lock)."""
    from siyu.wecom.models import ArchiveCursor

    with transaction() as session:
        row = session.get(ArchiveCursor, archive.CURSOR)
        due = row is not None and row.notified_at is not None and (
            row.pulled_at is None or row.pulled_at < row.notified_at)
    if due:
        pull_archive()
