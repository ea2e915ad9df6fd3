"""群活码: one QR that fills groups in turn, and the QR images of personal-WeChat groups.

Why it is shaped this way: WeCom's 「加入群聊」 config (``groupchat/add_join_way``, W:92229) holds at
most five chat ids and sends a scanning customer to the first with room; with ``auto_create_room``
it makes a new group from ``room_base_name`` + ``room_base_id`` once all are full. Siyu keeps the
whole rotation (``GroupCode.group_ids``) and moves the platform's window on to the next groups
*before* one is full (``rotate_percent`` of its capacity), so nobody meets a full group. When every
group is past the mark and auto-create is off, the code says so (alert + a task for its owner).
Joiners carry the code's ``state`` (groupchat/get returns it per member), which is the linked
channel's key when the code belongs to a channel, so joins are attributed to that channel.

A personal WeChat group has no API: its owner uploads the group's QR image, which WeChat keeps
valid for 7 days; a daily check raises the renewal task the day before it expires.

Every function works in the caller's transaction and never commits (the storage writes its own).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import IO, Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import storage
from siyu.core.db import utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.settings import local_today
from siyu.core.viewer import Viewer
from siyu.groups import registry
from siyu.groups.models import (
    GroupChat,
    GroupChatStatus,
    GroupCode,
    GroupMember,
    GroupPlatform,
    GroupQrImage,
    GroupTaskKind,
)
from siyu.team import service as team_service
from siyu.wecom import client as client_limits

# The platform's limits (W:92229), kept once in the client: 5 chat ids, state ≤ 30, room_base_name ≤ 40.
JOIN_WAY_CHATS = client_limits.JOIN_WAY_CHATS
STATE_MAX = client_limits.JOIN_WAY_STATE
ROOM_BASE_NAME_MAX = client_limits.JOIN_WAY_ROOM_BASE_NAME
MAX_GROUPS = 100  # groups in one code's rotation (Siyu's own limit)
QR_VALID_DAYS = 7  # a WeChat group's QR code is valid for 7 days (微信 "该二维码7天内有效")
QR_RENEW_BEFORE = timedelta(days=1)  # the renewal task comes a day ahead
QR_MAX_BYTES = 2 * 1024 * 1024
QR_TYPES = {b"\x89PNG": "png", b"\xff\xd8\xff": "jpg"}


class GroupCodeNotFound(NotFound):
    pass


class GroupCodeIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    group_ids: list[int] = Field(min_length=1, max_length=MAX_GROUPS)
    channel_id: int | None = None
    state: str = Field(default="", max_length=STATE_MAX)
    auto_create: bool = False
    room_base_name: str = Field(default="", max_length=ROOM_BASE_NAME_MAX)
    room_base_id: int = Field(default=1, ge=1, le=100_000)
    rotate_percent: int = Field(default=registry.WARN_PERCENT, ge=50, le=100)

    @field_validator("name", "state", "room_base_name")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def _visible(code: GroupCode, viewer: Viewer) -> bool:
    return viewer.sees_all_accounts or (code.account_id is not None and viewer.can_see_account(code.account_id))


def get_code(session: Session, *, code_id: int, viewer: Viewer) -> GroupCode:
    code = session.get(GroupCode, code_id)
    if code is None or not _visible(code, viewer):
        raise GroupCodeNotFound("Group code not found")
    return code


def list_codes(session: Session, *, viewer: Viewer) -> list[GroupCode]:
    query = select(GroupCode).order_by(GroupCode.id.desc())
    if not viewer.sees_all_accounts:
        query = query.where(GroupCode.account_id.in_(sorted(viewer.account_ids) or [-1]))
    return list(session.scalars(query))


def save_code(session: Session, *, data: GroupCodeIn, viewer: Viewer, code_id: int | None = None) -> GroupCode:
    """Create or change a group code; its WeCom config follows after the commit (``jobs.sync_group_code``)."""
    from siyu.channels.models import Channel
    from siyu.groups.queries import get_group

    registry.require_editor(viewer)
    groups: list[GroupChat] = []
    for group_id in dict.fromkeys(data.group_ids):
        try:
            group = get_group(session, group_id=group_id, viewer=viewer)
        except NotFound as exc:  # another account's group is as unknown as a missing one
            raise Invalid("Group {group_id} not found", field="group_ids", group_id=group_id) from exc
        if group.platform != GroupPlatform.wecom.value:
            raise Invalid("A group code fills WeCom customer groups only", field="group_ids")
        if not group.is_active:
            raise Invalid("Group {name} was dismissed", field="group_ids", name=group.name or group.chat_id)
        groups.append(group)
    channel = None
    if data.channel_id is not None:
        channel = session.get(Channel, data.channel_id)
        if channel is None:
            raise Invalid("Channel not found", field="channel_id")
    if data.auto_create and not data.room_base_name:
        raise Invalid("Auto-create needs the new groups' base name", field="room_base_name")
    code = get_code(session, code_id=code_id, viewer=viewer) if code_id else GroupCode()
    state = data.state or (channel.key if channel is not None else "") or code.state or f"gc{secrets.token_hex(6)}"
    clash = session.scalar(select(GroupCode).where(GroupCode.state == state))
    if clash is not None and clash is not code:
        raise Invalid("Another group code uses the state {state}", field="state", state=state)
    before = {"name": code.name, "group_ids": list(code.group_ids or []), "state": code.state} if code_id else None
    code.name, code.state, code.channel_id = data.name, state, data.channel_id
    code.group_ids = [g.id for g in groups]
    code.account_id = groups[0].owner_account_id
    code.auto_create, code.room_base_name, code.room_base_id = data.auto_create, data.room_base_name, data.room_base_id
    code.rotate_percent = data.rotate_percent
    code.updated_at = utcnow()
    if code_id is None:
        session.add(code)
    session.flush()
    refresh_window(session, code=code)
    team_service.record_audit(session, actor=viewer, action="update" if code_id else "create",
                              entity_type="group_code", entity_id=code.id, entity_name=code.name, before=before,
                              after={"name": code.name, "group_ids": code.group_ids, "state": code.state})
    _queue_sync(session, code.id)
    return code


def _queue_sync(session: Session, code_id: int) -> None:
    from siyu.core import jobs

    jobs.enqueue_after_commit(session, "groups.jobs.sync_group_code", code_id)


def fill(session: Session, groups: Iterable[GroupChat]) -> dict[int, tuple[int, int]]:
    """Each group's (members, capacity)."""
    groups = list(groups)
    externals = registry.external_counts(session, [g.id for g in groups])
    return {g.id: (g.member_count, registry.capacity(g, externals.get(g.id, 0))) for g in groups}


def window(session: Session, *, code: GroupCode) -> list[GroupChat]:
    """The next groups with room (below the rotation mark), in the code's order, at most five."""
    by_id = {g.id: g for g in session.scalars(select(GroupChat).where(GroupChat.id.in_(code.group_ids or [])))}
    groups = [by_id[i] for i in code.group_ids or [] if i in by_id and by_id[i].is_active]
    figures = fill(session, groups)
    room = [g for g in groups if figures[g.id][0] * 100 < figures[g.id][1] * code.rotate_percent]
    return room[:JOIN_WAY_CHATS]


def refresh_window(session: Session, *, code: GroupCode) -> bool:
    """Move the platform's window on; raise the alert (and the owner's task) when no group has room.

    Returns whether the platform's config has to change. With auto-create on, a code whose groups are
    all past the mark keeps its last groups: WeCom makes the next group itself when they fill up.
    """
    chats = [g.chat_id for g in window(session, code=code)]
    if chats:
        changed = chats != list(code.chat_ids or [])
        code.chat_ids = chats
        code.alert = ""
        return changed
    if code.auto_create:
        code.alert = ""
        return False
    if not code.alert:
        code.alert = "all_full"
        team_service.record_audit(session, actor=_system(), action="alert", entity_type="group_code",
                                  entity_id=code.id, entity_name=code.name, after={"alert": "all_full"})
        registry.raise_task(session, kind=GroupTaskKind.codes_full, key=f"{code.id}:{local_today().isoformat()}",
                            detail=code.name, group_code_id=code.id, account_id=code.account_id)
    return False


def _system() -> Viewer:
    from siyu.core.viewer import SYSTEM

    return SYSTEM


def after_group_changed(session: Session, *, group: GroupChat) -> None:
    """A group's members changed (a sync): codes holding it move on; a group WeCom auto-created for a code
    (its joiners carry the code's state) joins that code's rotation."""
    codes = [c for c in session.scalars(select(GroupCode)) if group.id in (c.group_ids or [])]
    if group.platform == GroupPlatform.wecom.value and group.is_active:
        states = set(session.scalars(select(GroupMember.state).where(
            GroupMember.group_chat_id == group.id, GroupMember.state != "").distinct()))
        if states:
            for code in session.scalars(select(GroupCode).where(GroupCode.state.in_(sorted(states)))):
                if group.id not in (code.group_ids or []):
                    code.group_ids = [*(code.group_ids or []), group.id]
                    codes.append(code)
    for code in codes:
        if refresh_window(session, code=code):
            _queue_sync(session, code.id)


def sync_join_way(session: Session, *, code: GroupCode, api: Any) -> str:
    """Make the code's WeCom config match its window ("created", "updated" or "none")."""
    if not code.chat_ids:
        return "none"  # nothing with room: the platform's config keeps its groups (auto-create, or the alert)
    fields = {"chat_ids": list(code.chat_ids), "state": code.state, "remark": code.name[:30],
              "auto_create": code.auto_create, "room_base_name": code.room_base_name,
              "room_base_id": code.room_base_id if code.auto_create else None}
    if code.wecom_config_id:
        api.update_join_way(code.wecom_config_id, **fields)
        return "updated"
    made = api.add_join_way(**fields)
    code.wecom_config_id = str(made.get("config_id", ""))
    code.qr_url = str(api.join_way(code.wecom_config_id).get("qr_code", "")) if code.wecom_config_id else ""
    return "created"


def joins_by_group(session: Session, *, code: GroupCode) -> dict[int, int]:
    """Members who joined through this code (its state), per group, current or since left."""
    rows = session.execute(select(GroupMember.group_chat_id, func.count()).where(
        GroupMember.state == code.state).group_by(GroupMember.group_chat_id))
    return {gid: int(n) for gid, n in rows}


# ---------------------------------------------------------------- personal groups' QR images


def upload_qr(session: Session, *, group: GroupChat, stream: IO[bytes], viewer: Viewer,
              made_at: datetime | None = None) -> GroupQrImage:
    """Keep a personal group's QR image (PNG or JPEG, ≤ 2 MB) with the day it stops working."""
    registry.require_editor(viewer)
    if group.platform != GroupPlatform.personal.value:
        raise Invalid("A WeCom group's QR comes from its group code", field="file")
    if group.status != GroupChatStatus.active.value:
        raise Invalid("The group was dismissed", field="file")
    data = stream.read(QR_MAX_BYTES + 1)
    if len(data) > QR_MAX_BYTES:
        raise Invalid("The image is larger than {mb} MB", field="file", mb=QR_MAX_BYTES // (1024 * 1024))
    kind = next((ext for magic, ext in QR_TYPES.items() if data.startswith(magic)), None)
    if kind is None:
        raise Invalid("Upload the QR code as a PNG or JPEG image", field="file")
    made = made_at or utcnow()
    key = f"group-qr/{group.id}-{secrets.token_hex(6)}.{kind}"
    storage.put_bytes(key, data, meta={"group_chat_id": group.id})
    image = GroupQrImage(group_chat_id=group.id, storage_key=key, uploaded_at=utcnow(),
                         expires_at=made + timedelta(days=QR_VALID_DAYS), uploaded_by_id=viewer.user_id)
    session.add(image)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="group_qr_image",
                              entity_id=image.id, entity_name=group.name,
                              after={"expires_at": image.expires_at.isoformat()})
    return image


def current_qr(session: Session, *, group: GroupChat) -> GroupQrImage | None:
    return session.scalar(select(GroupQrImage).where(GroupQrImage.group_chat_id == group.id)
                          .order_by(GroupQrImage.expires_at.desc(), GroupQrImage.id.desc()).limit(1))


def renewal_tasks(session: Session, *, now: datetime | None = None) -> int:
    """Raise the renewal task for each active personal group whose newest QR expires within a day."""
    now = now or utcnow()
    newest = (select(GroupQrImage.group_chat_id, func.max(GroupQrImage.expires_at).label("expires_at"))
              .group_by(GroupQrImage.group_chat_id).subquery())
    rows = session.execute(select(GroupChat, newest.c.expires_at).join(newest, newest.c.group_chat_id == GroupChat.id)
                           .where(GroupChat.status == GroupChatStatus.active.value,
                                  newest.c.expires_at <= now + QR_RENEW_BEFORE))
    raised = 0
    for group, expires_at in rows:
        task = registry.raise_task(session, kind=GroupTaskKind.renew_qr, key=f"{group.id}:{expires_at.isoformat()}",
                                   detail=expires_at.isoformat()[:16], group=group)
        raised += task is not None
    return raised
