"""朋友圈 calendar: the rules — who may plan what, the platform's limits, the calendar, posted by hand.

Why the WeCom limits apply to every post: an operator plans one calendar for all of a persona's
accounts, and a post written for a personal account today is published through WeCom tomorrow; so
a post is refused at once, with the limit named, when it could not be published anywhere — text
over 2,000 characters, a tenth image (W:96351). Images are kept in the one storage
(``core.storage``, area ``moments/``), uploaded to WeCom only when the post goes out (a media_id
lasts three days, W:96347).

Publishing and read-back (WeCom calls, the timeline) live in ``moments.publish``; the jobs call it.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind
from siyu.core import storage
from siyu.core.db import utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers import variables
from siyu.customers.models import CustomerTag, Friendship, FriendshipStatus, Tag
from siyu.library import service as library_service
from siyu.moments.models import MomentColumn, MomentModule, MomentPost, PostStatus
from siyu.moments.schemas import ColumnIn, PostIn, PostUpdate
from siyu.team import service as team_service

TEXT_MAX_CHARS = 2000  # W:96351 add_moment_task: text.content "最多支持传入2000个字符"
IMAGES_MAX = 9  # W:96351 add_moment_task: "最多支持9个图片类型"
IMAGE_MAX_BYTES = 10 * 1024 * 1024  # W:96351: image "图片大小不超过10M"
IMAGE_MIN_BYTES = 6  # W:90253 (the upload rules W:96347 follows): "所有文件size必须大于5个字节"
IMAGE_TYPES = ("image/jpeg", "image/png")  # W:90253: images "支持JPG,PNG格式"
# What the bytes must start with: the type is read from the file, never taken from the uploader's word.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
STORAGE_AREA = "moments"
PLANNABLE_KINDS = (AccountKind.wecom.value, AccountKind.personal.value)  # 微信客服 and 公众号 have no moments
EDITABLE = (PostStatus.draft.value, PostStatus.scheduled.value)
MAX_DAYS_SHOWN = 42  # a month view: six weeks


class PostNotFound(NotFound):
    """A post that does not exist or is on an account the viewer cannot see."""


# ---------------------------------------------------------------- columns (栏目)


def list_columns(session: Session) -> list[MomentColumn]:
    return list(session.scalars(select(MomentColumn).where(MomentColumn.active.is_(True))
                                .order_by(MomentColumn.module, MomentColumn.position, MomentColumn.id)))


def create_column(session: Session, *, data: ColumnIn, viewer: Viewer) -> MomentColumn:
    if not viewer.is_admin:
        raise NotFound("Not found")
    module = _module(data.module)
    name = data.name.strip()
    if not name:
        raise Invalid("Name the column", field="name")
    if session.scalar(select(MomentColumn.id).where(MomentColumn.name == name)) is not None:
        raise Invalid("A column named {name} exists already", field="name", name=name)
    column = MomentColumn(name=name, module=module.value, position=data.position)
    session.add(column)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="moment_column",
                              entity_id=column.id, summary=name, after={"name": name, "module": module.value})
    return column


def _module(value: str) -> MomentModule:
    try:
        return MomentModule(value)
    except ValueError as exc:
        raise Invalid("Unknown module {module}: choose product, user or personal", field="module",
                      module=value) from exc


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class Upload:
    name: str
    content_type: str
    data: bytes


def decode_images(images: list[Any]) -> list[Upload]:
    """The JSON API's base64 images as uploads (bad base64 is bad input, not a crash)."""
    uploads = []
    for image in images:
        try:
            data = base64.b64decode(image.data_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Invalid("An image is not valid base64", field="images") from exc
        uploads.append(Upload(name=image.name, content_type=image.content_type, data=data))
    return uploads


def check_images(uploads: list[Upload], *, already: int = 0) -> None:
    if already + len(uploads) > IMAGES_MAX:
        raise Invalid("A moment takes at most {limit} images; this one has {count}", field="images",
                      limit=IMAGES_MAX, count=already + len(uploads))
    for upload in uploads:
        if upload.content_type not in IMAGE_TYPES or _sniffed(upload.data) is None:
            raise Invalid("Images are JPG or PNG; {name} is not", field="images", name=upload.name)
        if len(upload.data) > IMAGE_MAX_BYTES:
            raise Invalid("An image may be at most {mb} MB; {name} is larger", field="images",
                          mb=IMAGE_MAX_BYTES // (1024 * 1024), name=upload.name)
        if len(upload.data) < IMAGE_MIN_BYTES:
            raise Invalid("The image {name} is empty", field="images", name=upload.name)


def _sniffed(data: bytes) -> str | None:
    return next((kind for signature, kind in SIGNATURES if data.startswith(signature)), None)


def _store(uploads: list[Upload], *, account_id: int) -> list[dict[str, Any]]:
    stored = []
    for upload in uploads:
        key = f"{STORAGE_AREA}/{secrets.token_urlsafe(18)}"
        kind = _sniffed(upload.data) or "application/octet-stream"
        info = storage.put_bytes(key, upload.data, meta={"account_id": account_id, "name": upload.name,
                                                         "content_type": kind})
        stored.append({"key": key, "name": upload.name[:128], "size": info.size, "content_type": kind})
    return stored


def image_of(post: MomentPost, index: int) -> dict[str, Any]:
    if not 0 <= index < len(post.images or []):
        raise NotFound("Image not found")
    return dict(post.images[index])


# ---------------------------------------------------------------- posts


def _scope(query: Any, viewer: Viewer) -> Any:
    if viewer.sees_all_accounts:
        return query
    return query.where(MomentPost.account_id.in_(sorted(viewer.account_ids)))


def get_post(session: Session, *, post_id: int, viewer: Viewer) -> MomentPost:
    post = session.get(MomentPost, post_id)
    if post is None or not viewer.can_see_account(post.account_id):
        raise PostNotFound("Moment not found")
    return post


def _account(session: Session, account_id: int, viewer: Viewer) -> Account:
    account = session.get(Account, account_id)
    if account is None or not viewer.can_see_account(account_id):
        raise NotFound("Account not found")
    if account.kind not in PLANNABLE_KINDS:
        raise Invalid("Only WeCom members and personal WeChat accounts post moments", field="account_id")
    return account


def _check_text(text: str) -> str:
    if len(text) > TEXT_MAX_CHARS:
        raise Invalid("A moment's text may be at most {limit} characters; this one has {count}", field="text",
                      limit=TEXT_MAX_CHARS, count=len(text))
    return text


def _check_tags(session: Session, tag_ids: list[int], account: Account) -> list[int]:
    ids = sorted(set(tag_ids))
    if not ids:
        return []
    tags = {t.id: t for t in session.scalars(select(Tag).where(Tag.id.in_(ids)))}
    missing = [i for i in ids if i not in tags]
    if missing:
        raise Invalid("Tag {tag_id} not found", field="tag_ids", tag_id=missing[0])
    if account.kind == AccountKind.wecom.value:
        local = [tags[i].name for i in ids if not tags[i].wecom_id]
        if local:  # W:96351: visibility "仅支持企业客户标签"
            raise Invalid("WeCom shows a moment by corp customer tags only; {tag} is not one", field="tag_ids",
                          tag=local[0])
    return ids


def audience(session: Session, *, account_id: int, tag_ids: list[int]) -> int:
    """Friends of the account the post would be visible to (any of the tags; everyone without tags)."""
    query = select(func.count(func.distinct(Friendship.customer_id))).where(
        Friendship.account_id == account_id, Friendship.status == FriendshipStatus.active.value)
    if tag_ids:
        query = query.join(CustomerTag, CustomerTag.customer_id == Friendship.customer_id).where(
            CustomerTag.tag_id.in_(tag_ids))
    return int(session.scalar(query) or 0)


def _column(session: Session, column_id: int | None, module: MomentModule) -> int | None:
    if column_id is None:
        return None
    column = session.get(MomentColumn, column_id)
    if column is None or not column.active:
        raise Invalid("Column {column_id} not found", field="column_id", column_id=column_id)
    if column.module != module.value:
        raise Invalid("The column {name} belongs to another module", field="column_id", name=column.name)
    return column.id


def _snapshot(post: MomentPost) -> dict[str, Any]:
    return {"account_id": post.account_id, "module": post.module, "column_id": post.column_id,
            "text": post.text[:200], "images": len(post.images or []), "tag_ids": list(post.tag_ids or []),
            "scheduled_at": post.scheduled_at.isoformat() if post.scheduled_at else None, "status": post.status}


def create_post(session: Session, *, data: PostIn, viewer: Viewer, uploads: list[Upload] | None = None,
                now: datetime | None = None) -> MomentPost:
    """A draft (no time) or a scheduled post; refused, with the limit named, past 2,000 characters or 9 images."""
    uploads = list(uploads or [])
    account = _account(session, data.account_id, viewer)
    text = data.text
    if not text.strip() and data.script_id is not None:
        text = _script_text(session, data.script_id, account)
    text = _check_text(text)
    picked = _library_images(session, data.material_ids)
    uploads += [Upload(name=m.filename or m.title, content_type=m.content_type, data=storage.get(m.file_key))
                for m in picked]
    check_images(uploads)
    if not text.strip() and not uploads:
        raise Invalid("A moment needs text or at least one image", field="text")
    module = _module(data.module)
    column_id = _column(session, data.column_id, module)
    tag_ids = _check_tags(session, data.tag_ids, account)
    scheduled_at = _future(data.scheduled_at, now=now)
    # Stored before this transaction writes anything (the storage commits its own writes; SQLite has one
    # writer), after every check: nothing is stored for a refusal.
    images = _store(uploads, account_id=account.id)
    post = MomentPost(account_id=account.id, module=module.value, column_id=column_id, text=text, images=images,
                      tag_ids=tag_ids, scheduled_at=scheduled_at,
                      status=PostStatus.scheduled.value if scheduled_at else PostStatus.draft.value,
                      audience=audience(session, account_id=account.id, tag_ids=tag_ids),
                      created_by_id=viewer.user_id)
    session.add(post)
    session.flush()
    uses = {m.id: 1 for m in picked}
    if data.script_id is not None and not data.text.strip():
        uses[data.script_id] = 1
    if uses:
        library_service.record_uses(session, uses, "moments")
    team_service.record_audit(session, actor=viewer, action="create", entity_type="moment_post", entity_id=post.id,
                              summary=_summary(post), after=_snapshot(post))
    return post


def _script_text(session: Session, script_id: int, account: Account) -> str:
    """A library script as a moment's text: a post is seen by many customers, so only ``{账号}`` (the account's
    name) is filled; a script naming a customer's own value (``{称呼}``, ``{券码}``) is refused."""
    text = library_service.script_text(session, script_id)
    if not text:
        raise Invalid("Script {id} not found or retired", field="script_id", id=script_id)
    personal = [name for name in variables.variables_in(text) if name != variables.ACCOUNT]
    if personal:
        raise Invalid("A moment is seen by many customers; the script uses {variable}, which is filled per customer",
                      field="script_id", variable="{" + personal[0] + "}")
    return variables.render(text, variables.Values(account=account.display_name))


def _library_images(session: Session, ids: list[int]) -> list[Any]:
    """The library images picked for a moment (copied into the post: the library keeps its own)."""
    wanted = list(dict.fromkeys(ids))
    if len(wanted) > IMAGES_MAX:
        raise Invalid("A moment takes at most {limit} images; this one has {count}", field="images",
                      limit=IMAGES_MAX, count=len(wanted))
    found = {m.id: m for m in library_service.get_materials(session, wanted)}
    for material_id in wanted:
        material = found.get(material_id)
        if material is None:
            raise Invalid("Material {id} not found or retired", field="material_ids", id=material_id)
        if material.kind != "image":
            raise Invalid("A moment takes images from the library; {title} is not one", field="material_ids",
                          title=material.title)
    return [found[i] for i in wanted]


def _future(value: datetime | None, *, now: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=local_zone())  # a time typed in the console is local time
    if value < (now or utcnow()) - timedelta(minutes=5):
        raise Invalid("A moment is scheduled for a time still to come", field="scheduled_at")
    return value


def _summary(post: MomentPost) -> str:
    first = (post.text or "").strip().splitlines()[0] if (post.text or "").strip() else ""
    return first[:40] or f"#{post.id}"


def schedule_post(session: Session, *, post_id: int, scheduled_at: datetime | None, viewer: Viewer,
                  now: datetime | None = None) -> MomentPost:
    """Put a draft on the calendar at a time, move it, or (None) take it back to drafts."""
    post = get_post(session, post_id=post_id, viewer=viewer)
    if post.status not in EDITABLE:
        raise Invalid("This moment has gone out already and cannot be moved", field="scheduled_at")
    before = _snapshot(post)
    post.scheduled_at = _future(scheduled_at, now=now)
    post.status = PostStatus.scheduled.value if post.scheduled_at else PostStatus.draft.value
    session.flush()
    team_service.record_audit(session, actor=viewer, action="update", entity_type="moment_post", entity_id=post.id,
                              summary=_summary(post), before=before, after=_snapshot(post))
    return post


def update_post(session: Session, *, post_id: int, data: PostUpdate, viewer: Viewer) -> MomentPost:
    """Change a post that has not gone out: text (≤ 2,000 characters), module, column, visibility tags."""
    post = get_post(session, post_id=post_id, viewer=viewer)
    if post.status not in EDITABLE:
        raise Invalid("This moment has gone out already and cannot be changed", field="status")
    account = _account(session, post.account_id, viewer)
    before = _snapshot(post)
    fields = data.model_fields_set
    text = _check_text(data.text) if "text" in fields and data.text is not None else post.text
    if not text.strip() and not post.images:
        raise Invalid("A moment needs text or at least one image", field="text")
    module = _module(data.module) if "module" in fields and data.module is not None else MomentModule(post.module)
    column_id = data.column_id if "column_id" in fields else post.column_id
    if column_id is not None:
        column = session.get(MomentColumn, column_id)
        if "column_id" not in fields and column is not None and column.module != module.value:
            column_id = None  # the module changed: the old column no longer fits
    post.text, post.module, post.column_id = text, module.value, _column(session, column_id, module)
    if "tag_ids" in fields and data.tag_ids is not None:
        post.tag_ids = _check_tags(session, data.tag_ids, account)
        post.audience = audience(session, account_id=account.id, tag_ids=post.tag_ids)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="update", entity_type="moment_post", entity_id=post.id,
                              summary=_summary(post), before=before, after=_snapshot(post))
    return post


def delete_post(session: Session, *, post_id: int, viewer: Viewer) -> None:
    post = get_post(session, post_id=post_id, viewer=viewer)
    if post.status not in EDITABLE:
        raise Invalid("This moment has gone out already and cannot be deleted", field="status")
    keys = [image["key"] for image in post.images or []]
    team_service.record_audit(session, actor=viewer, action="delete", entity_type="moment_post", entity_id=post.id,
                              summary=_summary(post), before=_snapshot(post))
    session.delete(post)
    session.flush()
    for key in keys:
        storage.delete_file(key)


def list_posts(session: Session, *, viewer: Viewer, account_id: int | None = None, since: datetime | None = None,
               until: datetime | None = None, limit: int = 50, after_id: int | None = None,
               status: str | None = None, by_time: bool = False) -> list[MomentPost]:
    """Posts of the viewer's accounts (one account's, a time range's, a status's): by id, or by time."""
    if account_id is not None and not viewer.can_see_account(account_id):
        raise NotFound("Account not found")
    query = _scope(select(MomentPost), viewer)
    if account_id is not None:
        query = query.where(MomentPost.account_id == account_id)
    if status:
        query = query.where(MomentPost.status == status)
    if since is not None:
        query = query.where(MomentPost.scheduled_at >= since)
    if until is not None:
        query = query.where(MomentPost.scheduled_at < until)
    if after_id is not None:
        query = query.where(MomentPost.id > after_id)
    order = (MomentPost.scheduled_at, MomentPost.id) if by_time else (MomentPost.id,)
    return list(session.scalars(query.order_by(*order).limit(limit)))


# ---------------------------------------------------------------- the calendar


@dataclass
class Day:
    day: date
    posts: list[MomentPost]
    in_month: bool = True

    @property
    def is_today(self) -> bool:
        return self.day == datetime.now(local_zone()).date()


@dataclass
class Calendar:
    view: str  # week or month
    start: date
    end: date  # exclusive
    weeks: list[list[Day]]
    drafts: list[MomentPost]
    previous: date
    following: date


def calendar(session: Session, *, viewer: Viewer, view: str, anchor: date, account_id: int | None = None) -> Calendar:
    """The week (Monday first) or the month (whole weeks) around ``anchor``, each day with its posts."""
    if view not in ("week", "month"):
        raise Invalid("The calendar shows a week or a month", field="view")
    if view == "week":
        start = anchor - timedelta(days=anchor.weekday())
        end = start + timedelta(days=7)
        previous, following = start - timedelta(days=7), end
    else:
        first = anchor.replace(day=1)
        start = first - timedelta(days=first.weekday())
        next_month = (first + timedelta(days=32)).replace(day=1)
        end = next_month + timedelta(days=(7 - next_month.weekday()) % 7)
        previous, following = (first - timedelta(days=1)).replace(day=1), next_month
    zone = local_zone()
    since = datetime.combine(start, time(), zone)
    until = datetime.combine(end, time(), zone)
    posts = list_posts(session, viewer=viewer, account_id=account_id, since=since, until=until, limit=2000,
                       by_time=True)
    by_day: dict[date, list[MomentPost]] = {}
    for post in posts:
        assert post.scheduled_at is not None
        by_day.setdefault(post.scheduled_at.astimezone(zone).date(), []).append(post)
    days = [start + timedelta(days=n) for n in range((end - start).days)][:MAX_DAYS_SHOWN]
    cells = [Day(day=d, posts=by_day.get(d, []), in_month=view == "week" or d.month == anchor.month) for d in days]
    drafts_query = _scope(select(MomentPost).where(MomentPost.status == PostStatus.draft.value,
                                                   MomentPost.scheduled_at.is_(None)), viewer)
    if account_id is not None:
        drafts_query = drafts_query.where(MomentPost.account_id == account_id)
    drafts = list(session.scalars(drafts_query.order_by(MomentPost.id.desc()).limit(50)))
    return Calendar(view=view, start=start, end=end, weeks=[cells[i:i + 7] for i in range(0, len(cells), 7)],
                    drafts=drafts, previous=previous, following=following)


# ---------------------------------------------------------------- personal accounts: posted by hand


def mark_posted(session: Session, *, post_id: int, viewer: Viewer, now: datetime | None = None) -> MomentPost:
    """The operator posted it on the personal account (from the post page or their task list)."""
    post = get_post(session, post_id=post_id, viewer=viewer)
    account = session.get(Account, post.account_id)
    if account is None or account.kind != AccountKind.personal.value:
        raise Invalid("Only a personal account's moment is marked posted by hand; WeCom reports its own",
                      field="status")
    if post.status == PostStatus.published.value:
        raise Invalid("This moment is marked posted already", field="status")
    now = now or utcnow()
    before = _snapshot(post)
    post.status, post.published_at, post.posted_by_id, post.error = PostStatus.published.value, now, viewer.user_id, ""
    if post.task_id is not None:
        from siyu.maintenance.models import Task, TaskStatus

        task = session.get(Task, post.task_id)
        if task is not None and task.status in (TaskStatus.open.value, TaskStatus.snoozed.value):
            task.status, task.finished_by_id, task.finished_at = TaskStatus.done.value, viewer.user_id, now
    session.flush()
    team_service.record_audit(session, actor=viewer, action="moment_posted", entity_type="moment_post",
                              entity_id=post.id, summary=_summary(post), before=before, after=_snapshot(post))
    return post


def task_done(session: Session, *, task: Any, viewer: Viewer) -> None:
    """A ``moment`` task finished from 今日任务: its post is marked posted."""
    if task.ref_id is None:
        raise Invalid("This task has no moment", field="status")
    mark_posted(session, post_id=int(task.ref_id), viewer=viewer)


def stored_image(post: MomentPost, index: int) -> tuple[dict[str, Any], bytes]:
    image = image_of(post, index)
    return image, storage.get(str(image["key"]))
