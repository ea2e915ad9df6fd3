"""公众号 jobs: the follower sync (resumable, tracked in the jobs page), old nonces forgotten."""

from __future__ import annotations

from typing import Any

from huey import crontab

from siyu.core import jobs
from siyu.core.db import transaction
from siyu.core.errors import Invalid
from siyu.core.i18n import _
from siyu.mp import client as mp_client
from siyu.mp import service


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


@jobs.inbound_queue.periodic_task(crontab(minute="*/5"))
def forget_old_nonces() -> int:
    with transaction() as session:
        return service.forget_old_nonces(session)
