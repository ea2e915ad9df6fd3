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
        if channel.qr_url and not channel.qr_image_key:
            jobs.enqueue_after_commit(session, keep_contact_way_image, channel_id)


@jobs.bulk_queue.task(retries=5, retry_delay=30)
def keep_contact_way_image(channel_id: int) -> None:
    """Fetch the channel's 「联系我」 QR image from WeCom once and keep it (posters, the landing page).

    The fetch runs outside any transaction; an image host that is down is retried later.
    """
    from siyu.wecom.client import WecomApiError, WecomNotConfigured, client_for

    with transaction() as session:
        channel = session.get(Channel, channel_id)
        if channel is None or not channel.qr_url or channel.qr_image_key:
            return
        url = channel.qr_url
        try:
            api = client_for(session)
        except WecomNotConfigured:
            return
    try:
        body = api.contact_way_image(url)
    except WecomApiError as exc:
        if exc.retryable:
            raise
        log.warning("QR image of channel %s not kept: %s", channel_id, exc)
        return
    with transaction() as session:
        channel = session.get(Channel, channel_id)
        if channel is not None and channel.qr_url == url:
            service.keep_qr_image(session, channel=channel, body=body)
