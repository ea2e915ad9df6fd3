"""公众号 jobs: stored pushes into the inbox (and the sweep of those left behind), the follower sync, profiles."""

from __future__ import annotations

import logging
from typing import Any

from huey import crontab

from siyu.core import jobs
from siyu.core.db import sqlite_writer_turn, transaction
from siyu.core.errors import Invalid
from siyu.core.i18n import _
from siyu.mp import client as mp_client
from siyu.mp import inbound, service

log = logging.getLogger(__name__)
# Pushes a task ingests together: one transaction, one customer and conversation lookup for them all.
BATCH_PUSHES = 50


@jobs.tracked_task(jobs.bulk_queue, retries=3, retry_delay=60)
def sync_followers(ctx: jobs.JobContext) -> dict[str, Any]:
    """user/get + user/info/batchget for one 公众号; a retry goes on from the stored cursor."""
    with ctx.transaction() as session:
        api = mp_client.api_for(session)
    if api is None:
        raise Invalid("Set the Official Account's appid and AppSecret first")
    result = service.sync_followers(transaction, api, int(ctx.params["account_id"]))
    return {"pages": result.pages, "seen": result.seen, "created": result.created,
            "unfollowed": result.unfollowed, "finished": result.finished}


def submit_sync(session: Any, *, account_id: int, actor: Any) -> int:
    job = jobs.submit(session, sync_followers, kind="mp.sync_followers",
                      title=_("Sync the Official Account's followers"), params={"account_id": account_id}, actor=actor)
    return job.id


@jobs.inbound_queue.task(retries=3, retry_delay=30)
def fetch_profiles(account_id: int, openids: list[str]) -> int:
    """New followers' nicknames, avatars and unionids (a push carries only the openid)."""
    with transaction() as session:
        api = mp_client.api_for(session)
    if api is None:
        return 0
    with transaction() as session:
        return service.fill_profiles(session, api, openids)


@jobs.inbound_queue.task()
def ingest_inbound(*row_ids: int) -> int:
    """Stored 公众号 pushes into the inbox, exactly once (each row is claimed in the ingesting transaction).

    When the batch fails as a whole, each push is tried alone, so one bad push holds up no other;
    the one that fails keeps its error and is tried again by the sweep (up to 5 times).
    """
    try:
        with sqlite_writer_turn(), transaction() as session:  # no longer than one batch: callbacks wait meanwhile
            inbound.ingest(session, list(row_ids))
        return len(row_ids)
    except Exception as exc:
        if len(row_ids) == 1:
            log.warning("公众号 push %s could not be ingested: %s", row_ids[0], exc, exc_info=True)
            with transaction() as session:
                inbound.record_failure(session, row_ids[0], f"{type(exc).__name__}: {exc}")
            return 0
    return sum(ingest_inbound.call_local(row_id) for row_id in row_ids)


# The callback hands its committed rows over here and answers without waiting for the enqueue.
# During a flood it holds them a while (``inbound.FLOOD_RATE``): the callbacks come first.
stored_pushes = jobs.Handover(ingest_inbound, per_task=BATCH_PUSHES, hold=inbound.give_way)


@jobs.inbound_queue.periodic_task(crontab(minute="*"))
def sweep_inbound() -> int:
    """Pushes stored but never ingested (the app died between its commit and the enqueue) get ingested;
    ingested ones are forgotten once no retry, replay or quiet period needs them."""
    with transaction() as session:
        stale = inbound.left_behind(session)
        inbound.forget_ingested(session)
    done = sum(ingest_inbound.call_local(*stale[first:first + BATCH_PUSHES])
               for first in range(0, len(stale), BATCH_PUSHES))
    if stale:
        log.info("ingested %s 公众号 pushes that were stored but left behind", len(stale))
    return done
