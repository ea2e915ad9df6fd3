"""话术库 and 素材库: every rule of the library, and the small API other domains call.

Why one library: quick replies, the sidebar, welcome messages, SOP steps, the moments calendar and
mass sends all send the same kinds of things. Kept in one place, a script is checked once for
customer-safe variables (``customers.variables``: never ``{备注名}``), a material once against the
platform's limits, and every use is counted on the item, so the team sees which texts work.

Other domains call ``render_script``, ``get_materials``, ``record_use`` (and ``welcome_attachments``);
the console and the API call the rest. The caller owns the transaction, file bytes included: a
material's files are written to the shared storage (``core.storage``, a kept area) in the same
transaction as its row, so a refused material leaves no file behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from siyu.core import storage
from siyu.core.db import utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import N_
from siyu.core.pagination import Page, decode_cursor, encode_cursor
from siyu.core.viewer import Viewer
from siyu.customers import variables
from siyu.customers.models import Customer, Friendship, FriendshipStatus
from siyu.library.models import (
    MATERIAL_KINDS,
    ItemKind,
    ItemStatus,
    LibraryItem,
    LibraryItemTag,
    LibraryUse,
    UsePlace,
)
from siyu.library.schemas import MaterialIn, ScriptIn
from siyu.team import service as team_service

MiB = 1024 * 1024
# Platform limits, each with its doc page. 企业群发 add_msg_template (W:92135) and 新客户欢迎语
# send_welcome_msg (W:92137) take one text and at most 9 attachments of these shapes.
SCRIPT_MAX_BYTES = 4000  # W:92135 text.content: 最长为 4000 个字节
MAX_ATTACHMENTS = 9  # W:92135 (PLATFORM.md): ≤ 9 attachments
LINK_TITLE_MAX_BYTES = 128  # W:92135 link.title: 最长为 128 字节
LINK_DESC_MAX_BYTES = 512  # W:92135 link.desc: 最长为 512 字节
URL_MAX_BYTES = 2048  # W:92135 link.url / picurl: 最长为 2048 字节
MINIPROGRAM_TITLE_MAX_BYTES = 64  # W:92135 miniprogram.title: 最长为 64 字节
MINIPROGRAM_PAGE_SUFFIX = ".html"  # W:92135 miniprogram.page: 必须以 .html 作为后缀
IMAGE_MAX_BYTES = 10 * MiB  # 上传临时素材 W:90253: 图片 10MB, JPG/PNG
FILE_MAX_BYTES = 20 * MiB  # 上传临时素材 W:90253: 普通文件 20MB (= storage.KEPT_MAX_BYTES)
# The library's own limits.
SCRIPT_TITLE_MAX = 64
TAGS_MAX = 10
TAG_MAX = 32
AREA = "library"  # the storage area (core.storage.KEPT_AREAS)
# An image is known by its first bytes, never by its name or the browser's word for it.
IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
# Images, mini-program cards and files in a welcome need WeCom's media upload, which Siyu does not use yet.
WELCOME_KINDS = (ItemKind.link.value, ItemKind.image.value, ItemKind.miniprogram.value)  # W:92137 attachments
WELCOME_LINKS_ONLY = N_(
    "A welcome message carries links, images and mini-program cards from the library; {title} is none of them")
_APPID = re.compile(r"^wx[0-9a-f]{16}$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)

KIND_LABELS = {ItemKind.script.value: N_("Script"), ItemKind.image.value: N_("Image"),
               ItemKind.link.value: N_("Link"), ItemKind.miniprogram.value: N_("Mini-program card"),
               ItemKind.file.value: N_("File")}
PLACE_LABELS = {UsePlace.inbox.value: N_("Service inbox"), UsePlace.sidebar.value: N_("Sidebar"),
                UsePlace.welcome.value: N_("Welcome message"), UsePlace.sop.value: N_("Customer SOP"),
                UsePlace.moments.value: N_("Moments"), UsePlace.mass_send.value: N_("Mass send"),
                UsePlace.api.value: N_("API")}


# ---------------------------------------------------------------- reading


@dataclass
class LibraryFilter:
    q: str = ""
    kinds: tuple[str, ...] = ()  # empty: every kind
    tag: str = ""
    status: str = ItemStatus.active.value  # "" for both


def without_nul(text: str) -> str:
    """PostgreSQL refuses NUL characters in text parameters (core.text)."""
    return text.replace("\x00", "")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def check_filter(flt: LibraryFilter) -> None:
    unknown = [k for k in flt.kinds if k not in KIND_LABELS]
    if unknown:
        raise Invalid("Unknown kind {kind}", field="kind", kind=unknown[0][:20])
    if flt.status and flt.status not in (ItemStatus.active.value, ItemStatus.retired.value):
        raise Invalid("Unknown status {status}", field="status", status=flt.status[:20])


def list_items(session: Session, *, flt: LibraryFilter, limit: int = 50,
               cursor: str | None = None) -> Page[LibraryItem]:
    """Newest first, ``limit`` a page; searched in title and text, narrowed by kind, tag and status."""
    check_filter(flt)
    query = select(LibraryItem)
    if flt.kinds:
        query = query.where(LibraryItem.kind.in_(flt.kinds))
    if flt.status:
        query = query.where(LibraryItem.status == flt.status)
    q = without_nul(flt.q).strip()[:100]
    if q:
        pattern = f"%{_escape_like(q)}%"
        query = query.where(or_(LibraryItem.title.ilike(pattern, escape="\\"),
                                LibraryItem.text.ilike(pattern, escape="\\")))
    tag = without_nul(flt.tag).strip()[:TAG_MAX]
    if tag:
        query = query.where(LibraryItem.id.in_(select(LibraryItemTag.item_id).where(LibraryItemTag.tag == tag)))
    if cursor:
        try:
            (last_id,) = decode_cursor(cursor)
            query = query.where(LibraryItem.id < int(last_id))
        except (ValueError, TypeError) as exc:
            raise Invalid("Invalid cursor", field="cursor") from exc
    rows = list(session.scalars(query.order_by(LibraryItem.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
    return Page(items=rows[:limit], next_cursor=next_cursor)


def tags_of(session: Session, item_ids: Iterable[int]) -> dict[int, list[str]]:
    ids = sorted(set(item_ids))
    found: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        for item_id, tag in session.execute(select(LibraryItemTag.item_id, LibraryItemTag.tag).where(
                LibraryItemTag.item_id.in_(ids)).order_by(LibraryItemTag.tag)):
            found[item_id].append(tag)
    return found


def all_tags(session: Session) -> list[str]:
    return list(session.scalars(select(LibraryItemTag.tag).distinct().order_by(LibraryItemTag.tag)))


def get_item(session: Session, *, item_id: int) -> LibraryItem:
    item = session.get(LibraryItem, item_id)
    if item is None:
        raise NotFound("Library item not found")
    return item


def get_materials(session: Session, ids: Iterable[int]) -> list[LibraryItem]:
    """The active materials among ``ids``, in the order given (a retired or missing one is left out)."""
    wanted = list(dict.fromkeys(int(i) for i in ids))
    if not wanted:
        return []
    found = {m.id: m for m in session.scalars(select(LibraryItem).where(
        LibraryItem.id.in_(wanted), LibraryItem.kind.in_([k.value for k in MATERIAL_KINDS]),
        LibraryItem.status == ItemStatus.active.value))}
    return [found[i] for i in wanted if i in found]


# ---------------------------------------------------------------- scripts for a customer


def _account_of(session: Session, customer_id: int) -> int | None:
    """The account a customer is talked to on when none is named: their earliest active friendship."""
    return session.scalar(select(Friendship.account_id).where(
        Friendship.customer_id == customer_id, Friendship.status == FriendshipStatus.active.value)
        .order_by(Friendship.added_at, Friendship.id).limit(1))


def render_script(session: Session, script_id: int, customer: Customer | int, *,
                  account_id: int | None = None) -> str:
    """The script's text for this customer, its customer-safe variables filled (``{称呼}`` → their
    salutation, ``{账号}`` → the account's name); a retired or unknown script is refused."""
    item = session.get(LibraryItem, script_id)
    if item is None or item.kind != ItemKind.script.value:
        raise NotFound("Script not found")
    if item.status != ItemStatus.active.value:
        raise Invalid("This script was retired; pick another", field="script_id")
    customer_id = customer if isinstance(customer, int) else customer.id
    account = account_id if account_id is not None else _account_of(session, customer_id)
    if account is None:
        return variables.render(item.text, variables.Values())
    return variables.fill(session, item.text, customer_id=customer_id, account_id=account)


def scripts_for(session: Session, *, customer_id: int | None, account_id: int | None, q: str = "",
                limit: int = 30) -> list[tuple[LibraryItem, str]]:
    """The picker's scripts (most used first), each rendered for this customer on this account."""
    query = select(LibraryItem).where(LibraryItem.kind == ItemKind.script.value,
                                      LibraryItem.status == ItemStatus.active.value)
    q = without_nul(q).strip()[:100]
    if q:
        pattern = f"%{_escape_like(q)}%"
        query = query.where(or_(LibraryItem.title.ilike(pattern, escape="\\"),
                                LibraryItem.text.ilike(pattern, escape="\\")))
    items = list(session.scalars(query.order_by(LibraryItem.use_count.desc(), LibraryItem.id.desc()).limit(limit)))
    if account_id is None and customer_id is not None:
        account_id = _account_of(session, customer_id)
    if account_id is None:
        values = variables.Values()
    else:
        values = variables.values_for(session, [(customer_id, account_id)])[(customer_id, account_id)]
    return [(item, variables.render(item.text, values)) for item in items]


# ---------------------------------------------------------------- usage


def record_use(session: Session, item_id: int, where: str, *, viewer: Viewer | None = None,
               customer_id: int | None = None, count: int = 1) -> LibraryItem:
    """Count ``count`` uses of an item at ``where`` (``UsePlace``): on the item and in the use log."""
    if where not in PLACE_LABELS:
        raise Invalid("Unknown place {place}", field="place", place=where[:16])
    item = session.get(LibraryItem, item_id)
    if item is None:
        raise NotFound("Library item not found")
    now = utcnow()
    session.execute(update(LibraryItem).where(LibraryItem.id == item_id).values(
        use_count=LibraryItem.use_count + count, last_used_at=now).execution_options(synchronize_session=False))
    session.execute(insert(LibraryUse), [{"item_id": item_id, "place": where, "count": count, "used_at": now,
                                          "user_id": viewer.user_id if viewer else None,
                                          "customer_id": customer_id}])
    session.refresh(item)
    return item


def record_uses(session: Session, counts: dict[int, int], where: str) -> None:
    """Many items' uses at once (a flood of welcomes): one UPDATE and one log row per item."""
    for item_id, count in sorted(counts.items()):
        if count > 0 and session.get(LibraryItem, item_id) is not None:
            record_use(session, item_id, where, count=count)


def record_picked(session: Session, item_ids: Iterable[int], where: str, *, viewer: Viewer | None = None,
                  customer_id: int | None = None) -> int:
    """Count one use of each item a picker sent along (an id that is gone is passed over: a reply is never
    refused for its count); how many were counted."""
    wanted = list(dict.fromkeys(item_ids))
    found = set(session.scalars(select(LibraryItem.id).where(LibraryItem.id.in_(wanted)))) if wanted else set()
    for item_id in wanted:
        if item_id in found:
            record_use(session, item_id, where, viewer=viewer, customer_id=customer_id)
    return len(found)


def uses_by_place(session: Session, *, item_id: int) -> dict[str, int]:
    return {place: int(total) for place, total in session.execute(
        select(LibraryUse.place, func.sum(LibraryUse.count)).where(LibraryUse.item_id == item_id)
        .group_by(LibraryUse.place))}


# ---------------------------------------------------------------- writing


def _require_editor(viewer: Viewer) -> None:
    if not viewer.is_admin:
        raise Forbidden("Only administrators may change the library; everyone may use it")


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def _clean_tags(tags: Iterable[str]) -> list[str]:
    cleaned = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
    if len(cleaned) > TAGS_MAX:
        raise Invalid("At most {n} tags", field="tags", n=TAGS_MAX)
    long = [t for t in cleaned if len(t) > TAG_MAX]
    if long:
        raise Invalid("Tag {tag} is longer than {n} characters", field="tags", tag=long[0][:40], n=TAG_MAX)
    return cleaned


def _set_tags(session: Session, item: LibraryItem, tags: list[str]) -> None:
    session.execute(delete(LibraryItemTag).where(LibraryItemTag.item_id == item.id))
    if tags:
        session.execute(insert(LibraryItemTag), [{"item_id": item.id, "tag": t} for t in tags])


def check_script(title: str, text: str) -> None:
    if not title.strip() or not text.strip():
        raise Invalid("Fill in the title and the text", field="text")
    if len(title) > SCRIPT_TITLE_MAX:
        raise Invalid("The title is longer than {n} characters", field="title", n=SCRIPT_TITLE_MAX)
    if _utf8(text) > SCRIPT_MAX_BYTES:
        raise Invalid("The text is longer than {n} bytes (WeCom's limit for a message text)", field="text",
                      n=SCRIPT_MAX_BYTES)
    variables.check_outgoing(text, field="text")


def _snapshot(item: LibraryItem, tags: list[str]) -> dict[str, Any]:
    return {"kind": item.kind, "title": item.title, "text": item.text, "url": item.url, "appid": item.appid,
            "pagepath": item.pagepath, "file": item.filename, "tags": tags, "status": item.status}


def save_script(session: Session, *, data: ScriptIn, viewer: Viewer, item_id: int | None = None) -> LibraryItem:
    _require_editor(viewer)
    title, text = data.title.strip(), data.text.strip()
    check_script(title, text)
    tags = _clean_tags(data.tags)
    if item_id is None:
        item = LibraryItem(kind=ItemKind.script.value, title=title, text=text, created_by=viewer.user_id)
        session.add(item)
        before = None
    else:
        item = get_item(session, item_id=item_id)
        if item.kind != ItemKind.script.value:
            raise NotFound("Script not found")
        before = _snapshot(item, tags_of(session, [item.id])[item.id])
        item.title, item.text = title, text
    session.flush()
    _set_tags(session, item, tags)
    team_service.record_audit(session, actor=viewer, action="update" if before else "create",
                              entity_type="library_item", entity_id=item.id, summary=item.title,
                              before=before, after=_snapshot(item, tags))
    return item


@dataclass
class Upload:
    """A file that came with a form: its bytes (seekable), its name and what the browser called it."""

    stream: IO[bytes]
    filename: str = ""
    content_type: str = ""

    def __post_init__(self) -> None:
        self.filename = without_nul(self.filename).replace("/", "_").replace("\\", "_").strip()[:255]


def sniff_image(stream: IO[bytes]) -> str | None:
    """``image/png`` or ``image/jpeg`` by the first bytes (the stream is left at its start), else None."""
    head = stream.read(16)
    stream.seek(0)
    return next((kind for magic, kind in IMAGE_MAGIC if head.startswith(magic)), None)


def _store_image(session: Session, upload: Upload, *, field_name: str) -> tuple[str, str, int]:
    content_type = sniff_image(upload.stream)
    if content_type is None:
        raise Invalid("{name} is not a JPG or PNG image (WeCom takes only these)", field=field_name,
                      name=upload.filename[:80] or field_name)
    stored = storage.put_kept(AREA, upload.stream, meta={"filename": upload.filename[:255]},
                              max_bytes=IMAGE_MAX_BYTES, session=session,
                              too_large="The image is larger than {mb} MB (WeCom's limit for images)")
    return stored.key, content_type, stored.size


def _store_file(session: Session, upload: Upload) -> tuple[str, int]:
    if not upload.stream.read(1):
        raise Invalid("The file is empty", field="file")
    upload.stream.seek(0)
    stored = storage.put_kept(AREA, upload.stream, meta={"filename": upload.filename[:255]},
                              max_bytes=FILE_MAX_BYTES, session=session,
                              too_large="The file is larger than {mb} MB (WeCom's limit for files)")
    return stored.key, stored.size


def _check_material_fields(kind: str, data: MaterialIn) -> None:
    if kind == ItemKind.link.value:
        if not data.title.strip():
            raise Invalid("A link needs a title", field="title")
        if _utf8(data.title) > LINK_TITLE_MAX_BYTES:
            raise Invalid("The title is longer than {n} bytes (WeCom's limit for a link title)", field="title",
                          n=LINK_TITLE_MAX_BYTES)
        if _utf8(data.description) > LINK_DESC_MAX_BYTES:
            raise Invalid("The description is longer than {n} bytes (WeCom's limit for a link)",
                          field="description", n=LINK_DESC_MAX_BYTES)
        if not _URL.match(data.url.strip()):
            raise Invalid("The address must start with http:// or https://", field="url")
        if _utf8(data.url) > URL_MAX_BYTES:
            raise Invalid("The address is longer than {n} bytes (WeCom's limit)", field="url", n=URL_MAX_BYTES)
    elif kind == ItemKind.miniprogram.value:
        if not data.title.strip():
            raise Invalid("A mini-program card needs a title", field="title")
        if _utf8(data.title) > MINIPROGRAM_TITLE_MAX_BYTES:
            raise Invalid("The title is longer than {n} bytes (WeCom's limit for a mini-program card)",
                          field="title", n=MINIPROGRAM_TITLE_MAX_BYTES)
        if not _APPID.match(data.appid.strip()):
            raise Invalid("A mini-program AppID looks like wx followed by 16 letters and digits", field="appid")
        page = data.pagepath.strip()
        if not page or not page.split("?")[0].endswith(MINIPROGRAM_PAGE_SUFFIX):
            raise Invalid("The page path must end with {suffix} (WeCom's rule for mini-program cards)",
                          field="pagepath", suffix=MINIPROGRAM_PAGE_SUFFIX)
    if len(data.title.strip()) > 128:
        raise Invalid("The title is longer than {n} characters", field="title", n=128)


def save_material(session: Session, *, data: MaterialIn, viewer: Viewer, file: Upload | None = None,
                  cover: Upload | None = None, item_id: int | None = None) -> LibraryItem:
    """Create (or, with ``item_id``, change) a material; new files replace the old ones."""
    _require_editor(viewer)
    kind = data.kind
    if kind not in [k.value for k in MATERIAL_KINDS]:
        raise Invalid("Unknown kind {kind}", field="kind", kind=kind[:20])
    item = None
    if item_id is not None:
        item = get_item(session, item_id=item_id)
        if item.kind != kind:
            raise Invalid("The kind of a material cannot change", field="kind")
    _check_material_fields(kind, data)
    tags = _clean_tags(data.tags)
    needs_file = kind in (ItemKind.image.value, ItemKind.file.value)
    if needs_file and file is None and (item is None or not item.file_key):
        raise Invalid("Choose the file to upload", field="file")
    if kind == ItemKind.miniprogram.value and cover is None and (item is None or not item.cover_key):
        raise Invalid("A mini-program card needs a cover image", field="cover")
    values: dict[str, Any] = {}
    replaced: list[str] = []
    # The files are written in the caller's transaction: the row and its files are saved, or refused, together.
    if needs_file and file is not None:
        if kind == ItemKind.image.value:
            key, content_type, size = _store_image(session, file, field_name="file")
        else:
            key, size = _store_file(session, file)
            content_type = "application/octet-stream"  # served as a download, whatever it is
        values.update(file_key=key, content_type=content_type, size=size, filename=file.filename[:255])
        if item is not None and item.file_key:
            replaced.append(item.file_key)
    if kind in (ItemKind.link.value, ItemKind.miniprogram.value) and cover is not None:
        key, content_type, _size = _store_image(session, cover, field_name="cover")
        values.update(cover_key=key, cover_type=content_type)
        if item is not None and item.cover_key:
            replaced.append(item.cover_key)
    title = data.title.strip() or (file.filename[:128] if file is not None else "")
    if not title:
        raise Invalid("Fill in the title", field="title")
    values.update(title=title, text=data.description.strip(),
                  url=data.url.strip() if kind == ItemKind.link.value else "",
                  appid=data.appid.strip() if kind == ItemKind.miniprogram.value else "",
                  pagepath=data.pagepath.strip() if kind == ItemKind.miniprogram.value else "")
    before = None
    if item is None:
        item = LibraryItem(kind=kind, created_by=viewer.user_id)
        session.add(item)
    else:
        before = _snapshot(item, tags_of(session, [item.id])[item.id])
    for name, value in values.items():
        setattr(item, name, value)
    session.flush()
    _set_tags(session, item, tags)
    for key in replaced:  # the row names the new file now
        storage.delete_file(key, session=session)
    team_service.record_audit(session, actor=viewer, action="update" if before else "create",
                              entity_type="library_item", entity_id=item.id, summary=item.title,
                              before=before, after=_snapshot(item, tags))
    return item


def set_status(session: Session, *, item_id: int, status: str, viewer: Viewer) -> LibraryItem:
    """Retire an item (hidden from the pickers; places that name it keep it) or bring it back."""
    _require_editor(viewer)
    if status not in (ItemStatus.active.value, ItemStatus.retired.value):
        raise Invalid("Unknown status {status}", field="status", status=status[:20])
    item = get_item(session, item_id=item_id)
    if item.status != status:
        before = item.status
        item.status = status
        session.flush()
        team_service.record_audit(session, actor=viewer,
                                  action="retire" if status == ItemStatus.retired.value else "restore",
                                  entity_type="library_item", entity_id=item.id, summary=item.title,
                                  before={"status": before}, after={"status": status})
    return item


# ---------------------------------------------------------------- files and attachments


def file_of(session: Session, *, item_id: int, which: str) -> tuple[str, str, str]:
    """(storage key, content type, download name) of an item's file or cover; NotFound when it has none."""
    item = get_item(session, item_id=item_id)
    if which == "cover" and item.cover_key:
        return item.cover_key, item.cover_type or "application/octet-stream", f"cover-{item.id}"
    if which == "file" and item.file_key:
        return item.file_key, item.content_type or "application/octet-stream", item.filename or f"file-{item.id}"
    raise NotFound("This file is gone")


def check_welcome_materials(session: Session, ids: Iterable[int], *, field_name: str) -> list[int]:
    """Materials a welcome message may carry: links, images and mini-program cards (images and covers go
    as temporary material, W:90253), at most ``MAX_ATTACHMENTS`` (W:92137)."""
    wanted = list(dict.fromkeys(int(i) for i in ids))
    if len(wanted) > MAX_ATTACHMENTS:
        raise Invalid("At most {n} attachments (WeCom's limit)", field=field_name, n=MAX_ATTACHMENTS)
    found = {m.id: m for m in get_materials(session, wanted)}
    for material_id in wanted:
        material = found.get(material_id)
        if material is None:
            raise Invalid("Material {id} not found or retired", field=field_name, id=material_id)
        if material.kind not in WELCOME_KINDS:
            raise Invalid(WELCOME_LINKS_ONLY, field=field_name, title=material.title)
    return wanted


def welcome_links(session: Session, ids: Iterable[int]) -> list[LibraryItem]:
    """The active link materials among ``ids``, in order, at most ``MAX_ATTACHMENTS``."""
    return [m for m in get_materials(session, ids) if m.kind == ItemKind.link.value][:MAX_ATTACHMENTS]


def welcome_materials(session: Session, ids: Iterable[int]) -> list[LibraryItem]:
    """The active links, images and mini-program cards among ``ids``, in order, at most ``MAX_ATTACHMENTS``."""
    return [m for m in get_materials(session, ids) if m.kind in WELCOME_KINDS][:MAX_ATTACHMENTS]


def link_attachment(item: LibraryItem) -> dict[str, Any]:
    """A link material as an attachment of send_welcome_msg / add_msg_template (W:92137, W:92135)."""
    return {"msgtype": "link", "link": {"title": item.title, "desc": item.text, "url": item.url}}


def welcome_attachments(session: Session, ids: Iterable[int]) -> list[dict[str, Any]]:
    """The link materials among ``ids`` as send_welcome_msg attachments (W:92137), at most 9."""
    return [link_attachment(m) for m in welcome_links(session, ids)]


def picker_choices(session: Session, *, material_kinds: tuple[str, ...], limit: int = 200) -> dict[str, Any]:
    """What the library picker (``library/_picker.html``) offers a form: active scripts and materials of
    these kinds, most used first, with the kinds' labels."""
    materials = list(session.scalars(
        select(LibraryItem).where(LibraryItem.kind.in_(list(material_kinds)),
                                  LibraryItem.status == ItemStatus.active.value)
        .order_by(LibraryItem.use_count.desc(), LibraryItem.id.desc()).limit(limit))) if material_kinds else []
    scripts = list(session.scalars(
        select(LibraryItem).where(LibraryItem.kind == ItemKind.script.value,
                                  LibraryItem.status == ItemStatus.active.value)
        .order_by(LibraryItem.use_count.desc(), LibraryItem.id.desc()).limit(limit)))
    return {"scripts": scripts, "materials": materials, "kind_labels": KIND_LABELS}


def script_text(session: Session, script_id: int | None) -> str:
    """An active script's raw text (variables unfilled), or "" (a welcome falls back to its own text)."""
    if script_id is None:
        return ""
    item = session.get(LibraryItem, script_id)
    if item is None or item.kind != ItemKind.script.value or item.status != ItemStatus.active.value:
        return ""
    return item.text


def check_script_choice(session: Session, script_id: int | None, *, field_name: str) -> None:
    if script_id is None:
        return
    if not script_text(session, script_id):
        raise Invalid("Script {id} not found or retired", field=field_name, id=script_id)
