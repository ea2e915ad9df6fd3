"""朋友圈 calendar: the API (``GET/POST /api/v1/moments``) and the console's ``/moments`` pages.

Thin: parse, call ``moments.service``, render. An operator opening another account's post gets 404.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import FormData, UploadFile

from siyu.accounts import service as accounts_service
from siyu.accounts.models import Account
from siyu.core.deps import AdminPageViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.pagination import decode_cursor, encode_cursor
from siyu.core.settings import local_today, local_zone
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer, Tag
from siyu.moments import service
from siyu.moments.models import MODULE_LABELS, STATUS_LABELS, MomentInteraction, MomentModule, MomentPost, PostStatus
from siyu.moments.schemas import ColumnIn, ColumnOut, PostIn, PostOut, PostPage, PostUpdate, ScheduleIn
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["moments"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
PAGE_SIZE = 50


def _out(post: MomentPost) -> PostOut:
    return PostOut(id=post.id, account_id=post.account_id, module=post.module, column_id=post.column_id,
                   text=post.text, images=[{"name": i.get("name"), "size": i.get("size"), "url":
                                            f"/moments/{post.id}/images/{n}"} for n, i in enumerate(post.images or [])],
                   tag_ids=list(post.tag_ids or []), scheduled_at=post.scheduled_at, status=post.status,
                   moment_id=post.moment_id, published_at=post.published_at, error=post.error,
                   audience=post.audience, reach=post.reach, likes=post.likes, comments=post.comments)


# ---------------------------------------------------------------- API


@api.get("/moments", response_model=PostPage, responses={
    404: {"description": "account_id names an account that does not exist (or is not yours)"}})
def list_moments(session: SessionDep, viewer: ApiViewer, account_id: Annotated[int | None, Query(ge=1)] = None,
                 since: datetime | None = None, until: datetime | None = None, status: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE, cursor: str | None = None) -> PostPage:
    """The viewer's accounts' posts (of one account, scheduled in [since, until), of a status), by id."""
    after_id = None
    if cursor:
        try:
            after_id = int(decode_cursor(cursor)[0])
        except (ValueError, TypeError, IndexError) as exc:
            raise Invalid("Invalid cursor", field="cursor") from exc
    if status is not None and status not in {s.value for s in PostStatus}:
        raise Invalid("Unknown status {status}", field="status", status=status)
    posts = service.list_posts(session, viewer=viewer, account_id=account_id, since=since, until=until,
                               status=status, limit=limit + 1, after_id=after_id)
    next_cursor = encode_cursor([posts[limit - 1].id]) if len(posts) > limit else None
    return PostPage(items=[_out(p) for p in posts[:limit]], next_cursor=next_cursor)


@api.post("/moments", response_model=PostOut, status_code=201, responses={
    404: {"description": "account_id names an account that does not exist (or is not yours)"}})
def create_moment(session: SessionDep, viewer: ApiViewer, data: PostIn) -> PostOut:
    """Plan a post: text (≤ 2,000 characters) and up to 9 images (base64); with ``scheduled_at`` it goes out then."""
    uploads = service.decode_images(data.images)
    post = service.create_post(session, data=data, viewer=viewer, uploads=uploads)
    session.commit()
    return _out(post)


@api.get("/moments/columns", response_model=list[ColumnOut])
def list_columns(session: SessionDep, viewer: ApiViewer) -> list[ColumnOut]:
    return [ColumnOut.model_validate(c) for c in service.list_columns(session)]


@api.post("/moments/columns", response_model=ColumnOut, status_code=201)
def create_column(session: SessionDep, viewer: ApiViewer, data: ColumnIn) -> ColumnOut:
    """An admin-defined column (栏目) inside a module (product, user, personal)."""
    column = service.create_column(session, data=data, viewer=viewer)
    session.commit()
    return ColumnOut.model_validate(column)


@api.get("/moments/{post_id}", response_model=PostOut)
def get_moment(session: SessionDep, viewer: ApiViewer, post_id: Id) -> PostOut:
    return _out(service.get_post(session, post_id=post_id, viewer=viewer))


@api.patch("/moments/{post_id}", response_model=PostOut)
def update_moment(session: SessionDep, viewer: ApiViewer, post_id: Id, data: PostUpdate) -> PostOut:
    """Change a draft or scheduled post: text, module, column, visibility tags (the fields given)."""
    post = service.update_post(session, post_id=post_id, data=data, viewer=viewer)
    session.commit()
    return _out(post)


@api.post("/moments/{post_id}/schedule", response_model=PostOut)
def schedule_moment(session: SessionDep, viewer: ApiViewer, post_id: Id, data: ScheduleIn) -> PostOut:
    """Put a draft on the calendar at ``scheduled_at``, move it, or (null) take it back to the drafts."""
    post = service.schedule_post(session, post_id=post_id, scheduled_at=data.scheduled_at, viewer=viewer)
    session.commit()
    return _out(post)


@api.post("/moments/{post_id}/posted", response_model=PostOut)
def moment_posted(session: SessionDep, viewer: ApiViewer, post_id: Id) -> PostOut:
    """A personal account's post: the operator posted it by hand."""
    post = service.mark_posted(session, post_id=post_id, viewer=viewer)
    session.commit()
    return _out(post)


# ---------------------------------------------------------------- console


def _day(value: str) -> date:
    if not value:
        return local_today()
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise Invalid("Dates are written like 2026-12-05", field="day") from exc


def _labels() -> dict[str, Any]:
    return {"modules": {m.value: _(label) for m, label in MODULE_LABELS.items()},
            "statuses": {s.value: _(label) for s, label in STATUS_LABELS.items()}}


def _account_names(session: Any, viewer: Viewer) -> dict[int, str]:
    return {a.id: a.display_name for a in accounts_service.visible_accounts(session, viewer=viewer)}


@pages.get("/moments", response_class=HTMLResponse)
def calendar_page(request: Request, session: SessionDep, viewer: PageViewer, view: str = "week", day: str = "",
                  account: Annotated[int | None, Query(ge=1)] = None) -> Response:
    """The calendar: a week (default) or a month, each day with its posts; drafts beside it."""
    cal = service.calendar(session, viewer=viewer, view=view, anchor=_day(day), account_id=account)
    columns = {c.id: c.name for c in service.list_columns(session)}
    return render(request, "moments/calendar.html", nav_active="moments", title=_("Moments calendar"), cal=cal,
                  account_id=account, accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  account_names=_account_names(session, viewer), columns=columns, **_labels())


def _form_context(session: Any, viewer: Viewer) -> dict[str, Any]:
    accounts = [a for a in accounts_service.visible_accounts(session, viewer=viewer)
                if a.kind in service.PLANNABLE_KINDS]
    tags = list(session.scalars(select(Tag).order_by(Tag.group_id, Tag.sort_order, Tag.id)))
    from siyu.library import service as library_service

    return {"accounts": accounts, "columns": service.list_columns(session), "tags": tags,
            "text_max": service.TEXT_MAX_CHARS, "images_max": service.IMAGES_MAX,
            "library": library_service.picker_choices(session, material_kinds=("image",)), **_labels()}


@pages.get("/moments/new", response_class=HTMLResponse)
def new_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return render(request, "moments/new.html", nav_active="moments", title=_("Plan a moment"), error="", values={},
                  **_form_context(session, viewer))


def _form_text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _local_time(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip()).replace(tzinfo=local_zone())
    except ValueError as exc:
        raise Invalid("Times are written like 2026-12-05 09:30", field="scheduled_at") from exc


@pages.post("/moments/new", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
async def new_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values: dict[str, Any] = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}
    values["material_ids"] = [int(m) for m in form.getlist("material_ids") if isinstance(m, str) and m.isdigit()]
    files = [f for f in form.getlist("images") if isinstance(f, UploadFile) and f.filename]
    try:
        uploads = [service.Upload(name=f.filename or "image", content_type=f.content_type or "",
                                  data=await f.read(service.IMAGE_MAX_BYTES + 1)) for f in files]
        account_text = _form_text(form, "account_id")
        column_text = _form_text(form, "column_id")
        script_text = _form_text(form, "script_id")
        data = PostIn(script_id=int(script_text) if script_text.isdigit() else None,
                      material_ids=[int(m) for m in form.getlist("material_ids") if isinstance(m, str) and m.isdigit()],
                      account_id=int(account_text) if account_text.isdigit() else 0,
                      module=_form_text(form, "module") or MomentModule.product.value,
                      column_id=int(column_text) if column_text.isdigit() else None,
                      text=_form_text(form, "text"), scheduled_at=_local_time(_form_text(form, "scheduled_at")),
                      tag_ids=[int(t) for t in form.getlist("tag_ids") if isinstance(t, str) and t.isdigit()])
        post = service.create_post(session, data=data, viewer=viewer, uploads=uploads)
    except (ValidationError, DomainError) as exc:
        session.rollback()
        error = exc.message if isinstance(exc, DomainError) else _("Choose an account and check the form")
        status = exc.status_code if isinstance(exc, DomainError) else 422
        if status == 404:
            raise
        return render(request, "moments/new.html", nav_active="moments", title=_("Plan a moment"), error=error,
                      values=values, status_code=422, **_form_context(session, viewer))
    session.commit()
    return RedirectResponse(f"/moments/{post.id}", status_code=303)


@pages.get("/moments/{post_id}", response_class=HTMLResponse)
def detail_page(request: Request, session: SessionDep, viewer: PageViewer, post_id: Id) -> Response:
    post = service.get_post(session, post_id=post_id, viewer=viewer)
    account = session.get(Account, post.account_id)
    interactions = list(session.scalars(select(MomentInteraction).where(MomentInteraction.post_id == post.id)
                                        .order_by(MomentInteraction.occurred_at.desc()).limit(200)))
    tags = list(session.scalars(select(Tag).where(Tag.id.in_(post.tag_ids or []))))
    ids = sorted({i.customer_id for i in interactions if i.customer_id is not None})
    names = dict(session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids))).all()) if ids else {}
    column = next((c.name for c in service.list_columns(session) if c.id == post.column_id), "")
    return render(request, "moments/detail.html", nav_active="moments", title=_("Moment"), post=post,
                  account=account, interactions=interactions, names=names, tags=tags, column=column,
                  **_labels())


@pages.post("/moments/{post_id}/posted", dependencies=[FormRead, CsrfChecked])
def posted_submit(request: Request, session: SessionDep, viewer: PageViewer, post_id: Id) -> Response:
    service.mark_posted(session, post_id=post_id, viewer=viewer)
    session.commit()
    return RedirectResponse(f"/moments/{post_id}", status_code=303)


@pages.post("/moments/{post_id}/schedule", dependencies=[FormRead, CsrfChecked])
def schedule_submit(request: Request, session: SessionDep, viewer: PageViewer, post_id: Id, form: FormDep) -> Response:
    service.schedule_post(session, post_id=post_id, scheduled_at=_local_time(_form_text(form, "scheduled_at")),
                          viewer=viewer)
    session.commit()
    return RedirectResponse(f"/moments/{post_id}", status_code=303)


@pages.post("/moments/{post_id}/edit", dependencies=[FormRead, CsrfChecked])
def edit_submit(request: Request, session: SessionDep, viewer: PageViewer, post_id: Id, form: FormDep) -> Response:
    column_text = _form_text(form, "column_id")
    service.update_post(session, post_id=post_id, viewer=viewer, data=PostUpdate(
        text=_form_text(form, "text"), column_id=int(column_text) if column_text.isdigit() else None))
    session.commit()
    return RedirectResponse(f"/moments/{post_id}", status_code=303)


@pages.post("/moments/{post_id}/delete", dependencies=[FormRead, CsrfChecked])
def delete_submit(request: Request, session: SessionDep, viewer: PageViewer, post_id: Id) -> Response:
    service.delete_post(session, post_id=post_id, viewer=viewer)
    session.commit()
    return RedirectResponse("/moments", status_code=303)


@pages.get("/moments/{post_id}/images/{index}")
def image_file(session: SessionDep, viewer: PageViewer, post_id: Id, index: Annotated[int, PathParam(ge=0, le=8)]
               ) -> Response:
    """One of the post's images, to look at or save and copy into WeChat."""
    post = service.get_post(session, post_id=post_id, viewer=viewer)
    image, data = service.stored_image(post, index)
    return Response(data, media_type=str(image.get("content_type") or "application/octet-stream"),
                    headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})


@pages.post("/moments/columns", dependencies=[FormRead, CsrfChecked])
def column_submit(request: Request, session: SessionDep, viewer: AdminPageViewer, form: FormDep) -> Response:
    try:
        data = ColumnIn(name=_form_text(form, "name"), module=_form_text(form, "module"))
    except ValidationError as exc:
        raise Invalid("Name the column", field="name") from exc
    service.create_column(session, data=data, viewer=viewer)
    session.commit()
    return RedirectResponse("/moments/new", status_code=303)
