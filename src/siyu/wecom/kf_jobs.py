"""Background work of 微信客服: pulling waiting messages, mirroring session state, listing accounts.

One pull at a time per 客服账号 (a lock); a callback that arrives while a pull runs finds the
lock taken and returns — the running pull looks again before it lets go (a callback newer
than its start means more is waiting), and the minutely sweep pulls any account whose last
callback is newer than its last pull. Correctness never rests on the lock: the cursor's
compare-and-set and the message table's unique key make a second puller harmless.
"""

from __future__ import annotations

import logging
from typing import Any

from huey import crontab
from huey.exceptions import TaskLockedException
from sqlalchemy import or_, select

from siyu.core import jobs
from siyu.core.db import transaction, utcnow
from siyu.inbox.models import Conversation
from siyu.wecom import kf
from siyu.wecom.models import KfCursor

log = logging.getLogger(__name__)
BUSY_RETRY_SECONDS = 10
MAX_ROUNDS = 20  # pulls started again for callbacks that came during a pull, before leaving it to the sweep


def _api() -> Any | None:
    from siyu.wecom.client import WecomNotConfigured, client_for

    with transaction() as session:
        try:
            return client_for(session, kf=True)
        except WecomNotConfigured:
            return None


@jobs.inbound_queue.task()
def pull_messages(open_kfid: str, attempt: int = 1) -> dict[str, Any]:
    """kf/sync_msg for one 客服账号 until nothing is waiting (see ``kf.pull``)."""
    from siyu.wecom.client import WecomApiError

    api = _api()
    if api is None:
        log.warning("kf_msg_or_event for %s, but no WeCom Secret is configured: nothing pulled", open_kfid)
        return {}
    totals: dict[str, Any] = {"pages": 0, "stored": 0}
    try:
        with jobs.inbound_queue.lock_task(f"kf-pull:{open_kfid}"):
            for _round in range(MAX_ROUNDS):
                started = utcnow()
                result = kf.pull(transaction, api, open_kfid)
                totals["pages"] += result.pages
                totals["stored"] += result.stored
                if result.wait_seconds > 0:
                    pull_messages.schedule((open_kfid,), delay=result.wait_seconds)
                    break
                with transaction() as session:
                    row = session.get(KfCursor, open_kfid)
                    again = row is not None and row.token_at is not None and row.token_at >= started
                if not again:
                    break
    except TaskLockedException:
        return {"locked": True}  # the running pull looks again before it ends
    except WecomApiError as exc:
        if exc.retryable and attempt < 6:
            pull_messages.schedule((open_kfid, attempt + 1), delay=BUSY_RETRY_SECONDS * attempt)
        else:
            log.warning("kf/sync_msg for %s failed: %s", open_kfid, exc)
    return totals


@jobs.inbound_queue.periodic_task(crontab(minute="*"))
def sweep_kf() -> None:
    """Accounts with a callback newer than their last pull (one lost between a pull and its lock)."""
    with transaction() as session:
        due = list(session.scalars(select(KfCursor.open_kfid).where(
            KfCursor.token_at.is_not(None),
            or_(KfCursor.pulled_at.is_(None), KfCursor.pulled_at < KfCursor.token_at))))
    for open_kfid in due:
        pull_messages(open_kfid)


@jobs.inbound_queue.task()
def take_session(conversation_id: int) -> None:
    """Mirror an agent taking a 微信客服 conversation in Siyu onto WeCom's session state."""
    from siyu.wecom.client import WecomApiError

    api = _api()
    if api is None:
        return
    with transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return
        try:
            kf.take_session(session, api, conversation)
        except WecomApiError as exc:
            log.warning("kf session state of conversation %s not mirrored: %s", conversation_id, exc)


def sync_accounts() -> int:
    """kf/account/list into Siyu's accounts (the WeCom sync calls it; ``siyu wecom kf-accounts`` too)."""
    from siyu.wecom.client import client_for

    with transaction() as session:
        api = client_for(session, kf=True)
    accounts = api.kf_accounts()
    with transaction() as session:
        return kf.sync_accounts(session, accounts)
