"""Background jobs of referrals: each invite code's WeCom 「联系我」 code."""

from __future__ import annotations

import logging

from siyu.core import jobs
from siyu.core.db import transaction
from siyu.referrals import service
from siyu.referrals.models import InviteCode

log = logging.getLogger(__name__)


@jobs.bulk_queue.task(retries=5, retry_delay=30)
def make_contact_way(invite_id: int) -> None:
    """Create the invite's 「联系我」 code on WeCom; a busy platform is retried, a refusal shown on the invite."""
    from siyu.wecom.client import WecomApiError, WecomNotConfigured, client_for

    with transaction() as session:
        invite = session.get(InviteCode, invite_id)
        if invite is None:
            return
        try:
            service.make_contact_way(session, invite=invite, api=client_for(session))
        except WecomNotConfigured:
            return  # no corp connected: the invite works with its tracked link
        except WecomApiError as exc:
            if exc.retryable:
                raise
            invite.alert = exc.display()[:255]
            log.warning("contact way of invite %s refused: %s", invite_id, exc)
