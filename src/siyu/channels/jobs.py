"""Background jobs of the channels domain: keeping each channel's WeCom contact way in step."""

from __future__ import annotations

import logging

from siyu.channels import service
from siyu.channels.models import Channel
from siyu.core import jobs
from siyu.core.db import transaction

log = logging.getLogger(__name__)


@jobs.bulk_queue.task(retries=5, retry_delay=30)
def sync_contact_way(channel_id: int) -> None:
    """Create or update the channel's 「联系我」 code on WeCom; a busy platform is retried later.

    A refusal that retrying cannot fix is shown on the channel as its alert.
    """
    from siyu.wecom.client import WecomApiError, WecomNotConfigured, client_for

    with transaction() as session:
        channel = session.get(Channel, channel_id)
        if channel is None:
            return
        try:
            done = service.sync_contact_way(session, channel=channel, api=client_for(session))
        except WecomNotConfigured:
            return  # no corp connected: the channel works with its link and a later save creates the code
        except WecomApiError as exc:
            if exc.retryable:
                raise
            channel.alert = exc.display()[:255]
            log.warning("contact way of channel %s refused: %s", channel_id, exc)
            return
        log.info("contact way of channel %s: %s", channel_id, done)
