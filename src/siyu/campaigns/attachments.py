"""A campaign's library materials as ``add_msg_template`` attachments (W:92135 创建企业群发).

Why it is shaped this way: add_msg_template takes an image attachment as ``image.media_id`` — a
temporary material uploaded through ``media/upload`` (W:90253), which WeCom keeps 3 days — or as a
``pic_url`` returned by 上传图片 (uploadimg); a mini-program card needs its cover's ``pic_media_id``;
a video or file its ``media_id``. A library image has neither URL, so it is uploaded, and the
media_id is taken from the one cache the welcomes use (``wecom.media``): reused while it has more
than ``REFRESH_BEFORE`` left, uploaded again when older, so a campaign that waited days (scheduled,
or WeCom busy) never sends an expired media_id. The attachments are built when the first WeCom task
of a send run is created, not when the campaign is saved.

An upload WeCom could not take now (busy, unreachable) leaves the tasks pending for the next run,
like a busy add_msg_template; a file WeCom refuses (or one missing from storage) fails the tasks
with the reason — a mass send never goes out quietly without the image its copy speaks of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from siyu.library import service as library
from siyu.library.models import ItemKind

# W:92135: attachments "最多支持添加9个附件"; image by media_id (or pic_url), link, miniprogram
# (pic_media_id), video and file by media_id.
MAX_ATTACHMENTS = 9
MEDIA_TYPES = {ItemKind.image.value: "image", ItemKind.file.value: "file"}


@dataclass
class AttachmentUnavailable(Exception):
    """A material could not become an attachment: ``retryable`` when WeCom was only busy or unreachable."""

    message: str
    retryable: bool

    def __str__(self) -> str:
        return self.message


def for_wecom(session: Session, api: Any, material_ids: Sequence[int], *,
              now: datetime | None = None) -> list[dict[str, Any]]:
    """The materials, in order, as add_msg_template attachments: links as links, images and files by the
    media_id of their stored file, mini-program cards with their cover's media_id."""
    from siyu.core.i18n import _
    from siyu.wecom import media
    from siyu.wecom.client import WecomApiError

    out: list[dict[str, Any]] = []
    for item in library.get_materials(session, material_ids)[:MAX_ATTACHMENTS]:
        try:
            if item.kind == ItemKind.link.value or (item.url and not item.file_key and not item.cover_key):
                out.append(library.link_attachment(item))
            elif item.kind in MEDIA_TYPES and item.file_key:
                kind = MEDIA_TYPES[item.kind]
                media_id = media.media_id_for(session, api, file_key=item.file_key, filename=item.filename,
                                              content_type=item.content_type, media_type=kind, now=now)
                out.append({"msgtype": kind, kind: {"media_id": media_id}})
            elif item.kind == ItemKind.miniprogram.value and item.cover_key:
                media_id = media.media_id_for(session, api, file_key=item.cover_key, filename=f"{item.id}-cover",
                                              content_type=item.cover_type, now=now)
                out.append({"msgtype": "miniprogram", "miniprogram": {
                    "title": item.title, "pic_media_id": media_id, "appid": item.appid, "page": item.pagepath}})
        except WecomApiError as exc:
            raise AttachmentUnavailable(
                _("campaign.attachment.refused {title}: {reason}", title=item.title, reason=exc.display()),
                retryable=exc.retryable or exc.errcode is None) from exc
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise AttachmentUnavailable(
                _("campaign.attachment.refused {title}: {reason}", title=item.title, reason=str(exc)),
                retryable=False) from exc
    return out
