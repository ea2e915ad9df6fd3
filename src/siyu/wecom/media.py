"""Temporary material (临时素材): library files as WeCom media_ids, for welcome messages' attachments.

``send_welcome_msg`` (W:92137) takes an image — or a mini-program card's cover — only as the
``media_id`` of a file uploaded through ``media/upload`` (W:90253), which WeCom keeps for 3 days.
A welcome must go out within 20 seconds of the add event, so the media_id of each stored file is kept
(``WecomMedia``) and reused until ``REFRESH_BEFORE`` ahead of its expiry; only then is the file
uploaded again. The cache row is written in the caller's transaction (the event's): an event rolled
back only costs one more upload next time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from siyu.core import storage
from siyu.core.db import utcnow
from siyu.library.models import ItemKind, LibraryItem
from siyu.wecom.client import MEDIA_SECONDS
from siyu.wecom.models import WecomMedia

log = logging.getLogger(__name__)

REFRESH_BEFORE = timedelta(hours=6)  # a cached media_id this close to WeCom's 3-day expiry is uploaded again
MEDIA_LIFETIME = timedelta(seconds=MEDIA_SECONDS)


def _corp_of(api: Any) -> str:
    client = getattr(api, "client", None)
    return str(getattr(client, "corp_id", "") or "")[:64]


def media_id_for(session: Session, api: Any, *, file_key: str, filename: str, content_type: str,
                 media_type: str = "image", now: datetime | None = None) -> str:
    """The media_id of a stored file: the cached one while it has more than ``REFRESH_BEFORE`` left,
    else uploaded now (and cached). Raises ``WecomApiError`` / ``ValueError`` as ``upload_media`` does."""
    now = now or utcnow()
    corp = _corp_of(api)
    cached = session.scalar(select(WecomMedia).where(WecomMedia.corp_id == corp, WecomMedia.file_key == file_key,
                                                     WecomMedia.media_type == media_type))
    if cached is not None and cached.expires_at - REFRESH_BEFORE > now:
        return cached.media_id
    answer = api.upload_media(media_type, filename or file_key.rsplit("/", 1)[-1], storage.get(file_key),
                              content_type)
    uploaded = datetime.fromtimestamp(int(answer["created_at"]), UTC) if answer.get("created_at") else now
    if cached is None:
        cached = WecomMedia(corp_id=corp, file_key=file_key, media_type=media_type)
        session.add(cached)
    cached.media_id, cached.uploaded_at, cached.expires_at = (str(answer["media_id"]), uploaded,
                                                              uploaded + MEDIA_LIFETIME)
    session.flush()
    return cached.media_id


def welcome_attachments(session: Session, api: Any, items: Sequence[LibraryItem], *,
                        now: datetime | None = None) -> list[dict[str, Any]]:
    """Library materials as ``send_welcome_msg`` attachments (W:92137), in order: links as they are, images
    by media_id, mini-program cards with their cover's media_id. An item whose file cannot be uploaded
    is left out (logged): the welcome still goes out with the rest."""
    from siyu.library import service as library_service
    from siyu.wecom.client import WecomApiError

    attachments: list[dict[str, Any]] = []
    for item in items:
        try:
            if item.kind == ItemKind.link.value:
                attachments.append(library_service.link_attachment(item))
            elif item.kind == ItemKind.image.value and item.file_key:
                media_id = media_id_for(session, api, file_key=item.file_key, filename=item.filename,
                                        content_type=item.content_type, now=now)
                attachments.append({"msgtype": "image", "image": {"media_id": media_id}})
            elif item.kind == ItemKind.miniprogram.value and item.cover_key:
                media_id = media_id_for(session, api, file_key=item.cover_key, filename=f"{item.id}-cover",
                                        content_type=item.cover_type, now=now)
                attachments.append({"msgtype": "miniprogram", "miniprogram": {
                    "title": item.title, "pic_media_id": media_id, "appid": item.appid, "page": item.pagepath}})
        except WecomApiError as exc:
            if exc.retryable:
                raise
            log.warning("library item %s not attached to the welcome: %s", item.id, exc)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            log.warning("library item %s not attached to the welcome: %s", item.id, exc)
    return attachments


def forget_expired(session: Session, *, now: datetime | None = None) -> int:
    """Drop cached media_ids WeCom no longer keeps."""
    result = session.execute(delete(WecomMedia).where(WecomMedia.expires_at <= (now or utcnow())))
    return int(getattr(result, "rowcount", 0) or 0)
