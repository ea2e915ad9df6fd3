"""话术库 and 素材库: the JSON API and the console's ``/library`` pages (both over ``service``).

Everyone signed in may browse and use the library; administrators create, edit and retire. Files are
served from the shared storage to signed-in people only: an image with the type its first bytes
showed, any other file as a download (never rendered by the browser).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from siyu.core import storage
from siyu.core.deps import AdminApiViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Forbidden, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.core.pagination import Page
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.customers import variables
from siyu.library import service
from siyu.library.models import MATERIAL_KINDS, ItemKind, ItemStatus, LibraryItem
from siyu.library.schemas import ItemOut, ItemPage, MaterialIn, RenderedOut, ScriptIn, UseIn, UseOut
from siyu.web.render import render

api = APIRouter(tags=["library"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
PAGE_SIZE = 30
# A material's form carries a file and a cover image; the body may be a little larger than both.
MULTIPART_OVERHEAD = 64 * 1024
UPLOAD_BODY_BYTES = service.FILE_MAX_BYTES + service.IMAGE_MAX_BYTES + MULTIPART_OVERHEAD
MATERIAL_KIND_VALUES = tuple(k.value for k in MATERIAL_KINDS)


async def read_upload_form(request: Request) -> FormData:
    """A material's multipart form; a body declared larger than the limit is refused unread."""
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and (len(length) > 12 or int(length) > UPLOAD_BODY_BYTES):
        raise storage.FileTooLarge("The file is larger than {mb} MB (WeCom's limit for files)",
                                   mb=service.FILE_MAX_BYTES // service.MiB)
    try:
        return await request.form(max_files=3, max_fields=50, max_part_size=64 * 1024)
    except MultiPartException as exc:
        raise Invalid("The upload could not be read; send the file as multipart/form-data", field="file") from exc


UploadForm = Annotated[FormData, Depends(read_upload_form)]


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _tags(raw: str) -> list[str]:
    return [t for t in raw.replace("，", ",").split(",") if t.strip()]


def _upload(form: FormData, key: str) -> service.Upload | None:
    value = form.get(key)
    if isinstance(value, UploadFile) and value.filename:
        return service.Upload(stream=value.file, filename=value.filename, content_type=value.content_type or "")
    return None


FIELD_LABELS = {"title": N_("Title"), "text": N_("Text"), "description": N_("Description"),
                "url": N_("Link address"), "appid": N_("Mini-program AppID"), "pagepath": N_("Mini-program page"),
                "tags": N_("Tags")}


def _invalid(exc: ValidationError) -> Invalid:
    """A form's first wrong field, in the page's words."""
    first = exc.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    label = _(FIELD_LABELS[name]) if name in FIELD_LABELS else name
    if first["type"] == "string_too_short" and name in ("title", "text"):
        return Invalid("Fill in the title and the text", field=name)
    if first["type"] == "string_too_long":
        return Invalid("{name} is longer than {n} characters", field=name, name=label,
                       n=(first.get("ctx") or {}).get("max_length", ""))
    if first["type"] == "too_long":
        return Invalid("At most {n} tags", field=name, n=service.TAGS_MAX)
    return Invalid("Check {name}", field=name, name=label)


def _material_in(form: FormData, kind: str) -> MaterialIn:
    try:
        return MaterialIn(kind=kind, title=_text(form, "title"), description=_text(form, "description"),
                          url=_text(form, "url"), appid=_text(form, "appid"), pagepath=_text(form, "pagepath"),
                          tags=_tags(_text(form, "tags")))
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _out(item: LibraryItem, tags: list[str]) -> ItemOut:
    out = ItemOut.model_validate(item)
    out.tags = tags
    base = f"/api/v1/library/items/{item.id}/file"
    out.file_url = base if item.file_key else None
    out.cover_url = f"{base}?which=cover" if item.cover_key else None
    return out


def _page(session: Session, flt: service.LibraryFilter, limit: int, cursor: str | None) -> ItemPage:
    found = service.list_items(session, flt=flt, limit=limit, cursor=cursor)
    tags = service.tags_of(session, [i.id for i in found.items])
    return ItemPage(items=[_out(i, tags[i.id]) for i in found.items], next_cursor=found.next_cursor)


def _stream_file(session: Session, item_id: int, which: str) -> Response:
    key, content_type, filename = service.file_of(session, item_id=item_id, which=which)
    info = storage.info(key)
    if info is None:
        raise NotFound("This file is gone")
    image = content_type.startswith("image/")
    disposition = "inline" if image else f"attachment; filename*=UTF-8''{quote(filename)}"
    return StreamingResponse(storage.iter_chunks(key), media_type=content_type,
                             headers={"Content-Length": str(info.size), "Content-Disposition": disposition,
                                      "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"})


def _use(session: Session, viewer: Viewer, item_id: int, data: UseIn) -> LibraryItem:
    if data.customer_id is not None:
        customers_service.get_customer(session, customer_id=data.customer_id, viewer=viewer)  # 404 outside scope
    item = service.record_use(session, item_id, data.place, viewer=viewer, customer_id=data.customer_id)
    session.commit()
    return item


# ---------------------------------------------------------------- API


@api.get("/library/scripts", response_model=ItemPage)
def list_scripts(session: SessionDep, viewer: ApiViewer, q: str = "", tag: str = "",
                 status: str = ItemStatus.active.value, limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
                 cursor: str | None = None) -> ItemPage:
    """Scripts (话术), newest first; ``q`` searches title and text, ``tag`` narrows, ``status`` active|retired."""
    return _page(session, service.LibraryFilter(q=q, kinds=(ItemKind.script.value,), tag=tag, status=status),
                 limit, cursor)


@api.post("/library/scripts", response_model=ItemOut, status_code=201)
def create_script(session: SessionDep, viewer: AdminApiViewer, data: ScriptIn) -> ItemOut:
    """A new script; its text may use only the customer-safe variables (``{称呼}`` ``{账号}`` ``{券码}``)."""
    item = service.save_script(session, data=data, viewer=viewer)
    session.commit()
    return _out(item, service.tags_of(session, [item.id])[item.id])


@api.put("/library/scripts/{item_id}", response_model=ItemOut)
def update_script(session: SessionDep, viewer: AdminApiViewer, item_id: Id, data: ScriptIn) -> ItemOut:
    item = service.save_script(session, data=data, viewer=viewer, item_id=item_id)
    session.commit()
    return _out(item, service.tags_of(session, [item.id])[item.id])


@api.get("/library/scripts/{item_id}/render", response_model=RenderedOut)
def render_script(session: SessionDep, viewer: ApiViewer, item_id: Id, customer_id: Id,
                  account_id: Annotated[int | None, Query(ge=1)] = None) -> RenderedOut:
    """The script's text for one of the viewer's customers (404 for a customer outside their accounts)."""
    customer = customers_service.get_customer(session, customer_id=customer_id, viewer=viewer)
    if account_id is not None and not viewer.can_see_account(account_id):
        raise Invalid("Account {account_id} not found", field="account_id", account_id=account_id)
    return RenderedOut(id=item_id, text=service.render_script(session, item_id, customer, account_id=account_id))


@api.get("/library/materials", response_model=ItemPage)
def list_materials(session: SessionDep, viewer: ApiViewer, q: str = "", tag: str = "", kind: str = "",
                   status: str = ItemStatus.active.value, limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
                   cursor: str | None = None) -> ItemPage:
    """Materials (素材): images, links, mini-program cards and files; ``kind`` narrows to one of them."""
    if kind and kind not in MATERIAL_KIND_VALUES:
        raise Invalid("Unknown kind {kind}", field="kind", kind=kind[:20])
    return _page(session, service.LibraryFilter(q=q, kinds=(kind,) if kind else MATERIAL_KIND_VALUES, tag=tag,
                                                status=status), limit, cursor)


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["kind"],
    "properties": {
        "kind": {"type": "string", "enum": list(MATERIAL_KIND_VALUES)},
        "title": {"type": "string"}, "description": {"type": "string", "description": "A link's description"},
        "url": {"type": "string", "description": "A link's address"},
        "appid": {"type": "string", "description": "A mini-program card's AppID"},
        "pagepath": {"type": "string", "description": "A mini-program card's page (ends with .html)"},
        "tags": {"type": "string", "description": "Comma-separated library tags"},
        "file": {"type": "string", "format": "binary",
                 "description": "An image (JPG/PNG, ≤ 10 MB) or a file (≤ 20 MB)"},
        "cover": {"type": "string", "format": "binary", "description": "A link's or card's cover (JPG/PNG)"},
    }}}}}}


@api.post("/library/materials", response_model=ItemOut, status_code=201, openapi_extra=UPLOAD_BODY)
def create_material(session: SessionDep, viewer: AdminApiViewer, form: UploadForm) -> ItemOut:
    """Upload a material (multipart): its files go to the shared storage, checked by type and size."""
    item = service.save_material(session, data=_material_in(form, _text(form, "kind")), viewer=viewer,
                                 file=_upload(form, "file"), cover=_upload(form, "cover"))
    session.commit()
    return _out(item, service.tags_of(session, [item.id])[item.id])


@api.post("/library/items/{item_id}/retire", response_model=ItemOut)
def retire_item(session: SessionDep, viewer: AdminApiViewer, item_id: Id) -> ItemOut:
    item = service.set_status(session, item_id=item_id, status=ItemStatus.retired.value, viewer=viewer)
    session.commit()
    return _out(item, service.tags_of(session, [item.id])[item.id])


@api.post("/library/items/{item_id}/restore", response_model=ItemOut)
def restore_item(session: SessionDep, viewer: AdminApiViewer, item_id: Id) -> ItemOut:
    item = service.set_status(session, item_id=item_id, status=ItemStatus.active.value, viewer=viewer)
    session.commit()
    return _out(item, service.tags_of(session, [item.id])[item.id])


@api.post("/library/items/{item_id}/use", response_model=UseOut)
def use_item(session: SessionDep, viewer: ApiViewer, item_id: Id, data: UseIn) -> UseOut:
    """Count one use of an item at ``place`` (inbox, sidebar, welcome, sop, moments, mass_send, api)."""
    item = _use(session, viewer, item_id, data)
    return UseOut(id=item.id, use_count=item.use_count)


FILE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The image (by its first bytes) or the file (always as a download).",
          "content": {"image/png": {}, "image/jpeg": {}, "application/octet-stream": {}}},
    404: {"description": "No such item, or it has no file of that kind."},
}


@api.get("/library/items/{item_id}/file", responses=FILE_RESPONSES)
def item_file(session: SessionDep, viewer: ApiViewer, item_id: Id, which: str = "file") -> Response:
    """An image, file or cover of a material (``which=cover`` for the cover)."""
    return _stream_file(session, item_id, which)


# ---------------------------------------------------------------- console


def _filter_from(params: Any) -> service.LibraryFilter:
    kind = str(params.get("kind", "") or "")
    if kind == "materials":
        kinds: tuple[str, ...] = MATERIAL_KIND_VALUES
    else:
        kinds = (kind,) if kind else ()
    return service.LibraryFilter(q=str(params.get("q", "") or "")[:100], kinds=kinds,
                                 tag=str(params.get("tag", "") or "")[:service.TAG_MAX],
                                 status=str(params.get("status", ItemStatus.active.value) or ""))


def _labels() -> dict[str, Any]:
    return {"kind_labels": {k: _(v) for k, v in service.KIND_LABELS.items()},
            "place_labels": {k: _(v) for k, v in service.PLACE_LABELS.items()}}


@pages.get("/library", response_class=HTMLResponse)
def library_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    params = request.query_params
    flt = _filter_from(params)
    error, status_code = None, 200
    try:
        found = service.list_items(session, flt=flt, limit=PAGE_SIZE, cursor=params.get("cursor") or None)
    except DomainError as exc:
        session.rollback()
        found, error, status_code = Page(items=[], next_cursor=None), exc.message, exc.status_code
    tags = service.tags_of(session, [i.id for i in found.items])
    query = {k: v for k, v in params.items() if k != "cursor" and v}
    return render(request, "library/list.html", status_code=status_code, nav_active="library",
                  title=_("Scripts & materials"), items=found.items, tags=tags, next_cursor=found.next_cursor,
                  flt=flt, kind=str(params.get("kind", "")), query=query, all_tags=service.all_tags(session),
                  error=error, may_edit=viewer.is_admin, **_labels())


def _form_page(request: Request, session: Session, viewer: Viewer, *, item: LibraryItem | None, kind: str,
               values: dict[str, str] | None = None, error: str | None = None, error_field: str | None = None,
               status_code: int = 200) -> Response:
    if values is None:
        values = {}
        if item is not None:
            values = {"title": item.title, "text": item.text, "description": item.text, "url": item.url,
                      "appid": item.appid, "pagepath": item.pagepath,
                      "tags": ", ".join(service.tags_of(session, [item.id])[item.id])}
    uses = service.uses_by_place(session, item_id=item.id) if item is not None else {}
    return render(request, "library/form.html", status_code=status_code, nav_active="library",
                  title=item.title if item else _("New library item"), item=item, kind=kind, values=values,
                  error=error, error_field=error_field, may_edit=viewer.is_admin, uses=uses,
                  safe_variables={k: _(v) for k, v in variables.SAFE_VARIABLES.items()},
                  limits={"image_mb": service.IMAGE_MAX_BYTES // service.MiB,
                          "file_mb": service.FILE_MAX_BYTES // service.MiB, "script_bytes": service.SCRIPT_MAX_BYTES},
                  **_labels())


@pages.get("/library/new", response_class=HTMLResponse)
def new_page(request: Request, session: SessionDep, viewer: PageViewer, kind: str = "script") -> Response:
    if not viewer.is_admin:
        raise Forbidden("Only administrators may change the library; everyone may use it")
    if kind not in service.KIND_LABELS:
        raise Invalid("Unknown kind {kind}", field="kind", kind=kind[:20])
    return _form_page(request, session, viewer, item=None, kind=kind)


def _save_from_form(session: Session, viewer: Viewer, form: FormData, *, kind: str,
                    item_id: int | None) -> LibraryItem:
    if kind == ItemKind.script.value:
        try:
            data = ScriptIn(title=_text(form, "title"), text=_text(form, "text"), tags=_tags(_text(form, "tags")))
        except ValidationError as exc:
            raise _invalid(exc) from exc
        return service.save_script(session, data=data, viewer=viewer, item_id=item_id)
    return service.save_material(session, data=_material_in(form, kind), viewer=viewer, file=_upload(form, "file"),
                                 cover=_upload(form, "cover"), item_id=item_id)


def _form_values(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


@pages.post("/library/new", response_class=HTMLResponse, dependencies=[CsrfChecked])
def new_submit(request: Request, session: SessionDep, viewer: PageViewer, form: UploadForm) -> Response:
    kind = _text(form, "kind") or ItemKind.script.value
    try:
        if kind not in service.KIND_LABELS:
            raise Invalid("Unknown kind {kind}", field="kind", kind=kind[:20])
        item = _save_from_form(session, viewer, form, kind=kind, item_id=None)
        session.commit()
    except DomainError as exc:
        session.rollback()
        if exc.status_code == 403:
            raise
        return _form_page(request, session, viewer, item=None, kind=kind if kind in service.KIND_LABELS else "script",
                          values=_form_values(form), error=exc.message, error_field=exc.field,
                          status_code=exc.status_code)
    return RedirectResponse(f"/library/{item.id}?saved=1", status_code=303)


@pages.get("/library/{item_id}", response_class=HTMLResponse)
def item_page(request: Request, session: SessionDep, viewer: PageViewer, item_id: Id) -> Response:
    item = service.get_item(session, item_id=item_id)
    return _form_page(request, session, viewer, item=item, kind=item.kind)


@pages.post("/library/{item_id}", response_class=HTMLResponse, dependencies=[CsrfChecked])
def item_submit(request: Request, session: SessionDep, viewer: PageViewer, item_id: Id, form: UploadForm) -> Response:
    item = service.get_item(session, item_id=item_id)
    kind = item.kind
    try:
        _save_from_form(session, viewer, form, kind=kind, item_id=item_id)
        session.commit()
    except DomainError as exc:
        session.rollback()
        if exc.status_code == 403:
            raise
        return _form_page(request, session, viewer, item=service.get_item(session, item_id=item_id), kind=kind,
                          values=_form_values(form), error=exc.message, error_field=exc.field,
                          status_code=exc.status_code)
    return RedirectResponse(f"/library/{item_id}?saved=1", status_code=303)


@pages.post("/library/{item_id}/status", response_class=HTMLResponse, dependencies=[CsrfChecked])
def status_submit(request: Request, session: SessionDep, viewer: PageViewer, item_id: Id,
                  form: UploadForm) -> Response:
    service.set_status(session, item_id=item_id, status=_text(form, "status"), viewer=viewer)
    session.commit()
    return RedirectResponse(f"/library/{item_id}", status_code=303)


@pages.get("/library/{item_id}/file/{which}")
def page_file(session: SessionDep, viewer: PageViewer, item_id: Id, which: str) -> Response:
    return _stream_file(session, item_id, which)


@pages.post("/library/{item_id}/use", dependencies=[CsrfChecked])
def page_use(session: SessionDep, viewer: PageViewer, item_id: Id, data: UseIn) -> JSONResponse:
    """The sidebar's picker tells the server a script went into a chat (JSON, with the CSRF header)."""
    item = _use(session, viewer, item_id, data)
    return JSONResponse({"id": item.id, "use_count": item.use_count})
