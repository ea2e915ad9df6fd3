"""Console pages where an admin manages one tag, one tag group or one custom field (thin: rules in tag_settings)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from siyu.core.deps import AdminPageViewer, CsrfChecked, SessionDep
from siyu.core.errors import DomainError, NotFound
from siyu.core.i18n import _
from siyu.core.ids import Id, parse_count
from siyu.core.viewer import Viewer
from siyu.customers import tag_settings
from siyu.customers.pages import FormDep, FormRead, field_errors
from siyu.customers.schemas import CustomFieldUpdate
from siyu.web.render import render

pages = APIRouter(include_in_schema=False)


def _text(form: Any, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _tag_page(request: Request, session: Session, viewer: Viewer, *, tag_id: int, error: str = "",
              status_code: int = 200) -> Response:
    tag = tag_settings.get_tag(session, tag_id=tag_id)
    others = sorted((t for t in tag.group.tags if t.id != tag.id), key=lambda t: (t.sort_order, t.id))
    return render(request, "customers/tag_manage.html", status_code=status_code, nav_active="tags", tag=tag,
                  group=tag.group, others=others, count=tag_settings.tag_customer_count(session, tag_id=tag.id),
                  error=error, title=_("Tag {name}", name=tag.name))


def _tag_action(request: Request, session: Session, viewer: Viewer, tag_id: int, action: Any) -> Response:
    """Run one change; a refusal shows the tag's page again with the reason, a success goes back to the list."""
    try:
        target = action()
        session.commit()
    except (DomainError, ValidationError) as exc:
        if isinstance(exc, NotFound):
            raise
        session.rollback()
        message = exc.message if isinstance(exc, DomainError) else "；".join(field_errors(exc).values())
        return _tag_page(request, session, viewer, tag_id=tag_id, error=message,
                         status_code=getattr(exc, "status_code", 422))
    return RedirectResponse(target, status_code=303)


@pages.get("/settings/tags/{tag_id}", response_class=HTMLResponse)
def tag_page(request: Request, session: SessionDep, viewer: AdminPageViewer, tag_id: Id) -> Response:
    return _tag_page(request, session, viewer, tag_id=tag_id)


@pages.post("/settings/tags/{tag_id}/rename", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def tag_rename(request: Request, session: SessionDep, viewer: AdminPageViewer, tag_id: Id, form: FormDep) -> Response:
    def run() -> str:
        tag = tag_settings.rename_tag(session, tag_id=tag_id, name=_text(form, "name"), actor=viewer)
        return f"/settings/tags?done=tag_saved#group-{tag.group_id}"
    return _tag_action(request, session, viewer, tag_id, run)


@pages.post("/settings/tags/{tag_id}/merge", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def tag_merge(request: Request, session: SessionDep, viewer: AdminPageViewer, tag_id: Id, form: FormDep) -> Response:
    def run() -> str:
        target = parse_count(_text(form, "target_id"), default=0)
        group_id = tag_settings.get_tag(session, tag_id=tag_id).group_id
        tag_settings.merge_tags(session, source_id=tag_id, target_id=target, actor=viewer)
        return f"/settings/tags?done=tag_merged#group-{group_id}"
    return _tag_action(request, session, viewer, tag_id, run)


@pages.post("/settings/tags/{tag_id}/delete", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def tag_delete(request: Request, session: SessionDep, viewer: AdminPageViewer, tag_id: Id, form: FormDep) -> Response:
    def run() -> str:
        group_id = tag_settings.get_tag(session, tag_id=tag_id).group_id
        tag_settings.delete_tag(session, tag_id=tag_id, expected_count=parse_count(_text(form, "count"), default=-1),
                                actor=viewer)
        return f"/settings/tags?done=tag_deleted#group-{group_id}"
    return _tag_action(request, session, viewer, tag_id, run)


@pages.post("/settings/tags/{tag_id}/move", dependencies=[FormRead, CsrfChecked])
def tag_move(request: Request, session: SessionDep, viewer: AdminPageViewer, tag_id: Id, form: FormDep) -> Response:
    def run() -> str:
        tag_settings.move_tag(session, tag_id=tag_id, direction=_text(form, "direction"), actor=viewer)
        return f"/settings/tags#group-{tag_settings.get_tag(session, tag_id=tag_id).group_id}"
    return _tag_action(request, session, viewer, tag_id, run)


# ---------------------------------------------------------------- groups


def _group_page(request: Request, session: Session, *, group_id: int, error: str = "",
                status_code: int = 200) -> Response:
    group = tag_settings._group(session, group_id)
    return render(request, "customers/tag_group_manage.html", status_code=status_code, nav_active="tags",
                  group=group, count=tag_settings.group_customer_count(session, group_id=group.id), error=error,
                  title=_("Tag group {name}", name=group.name))


def _group_action(request: Request, session: Session, group_id: int, action: Any) -> Response:
    try:
        target = action()
        session.commit()
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        session.rollback()
        return _group_page(request, session, group_id=group_id, error=exc.message, status_code=exc.status_code)
    return RedirectResponse(target, status_code=303)


@pages.get("/settings/tag-groups/{group_id}", response_class=HTMLResponse)
def group_page(request: Request, session: SessionDep, viewer: AdminPageViewer, group_id: Id) -> Response:
    return _group_page(request, session, group_id=group_id)


@pages.post("/settings/tag-groups/{group_id}/rename", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def group_rename(request: Request, session: SessionDep, viewer: AdminPageViewer, group_id: Id,
                 form: FormDep) -> Response:
    def run() -> str:
        tag_settings.rename_group(session, group_id=group_id, name=_text(form, "name"), actor=viewer)
        return f"/settings/tags?done=group_saved#group-{group_id}"
    return _group_action(request, session, group_id, run)


@pages.post("/settings/tag-groups/{group_id}/move", dependencies=[FormRead, CsrfChecked])
def group_move(request: Request, session: SessionDep, viewer: AdminPageViewer, group_id: Id,
               form: FormDep) -> Response:
    def run() -> str:
        tag_settings.move_group(session, group_id=group_id, direction=_text(form, "direction"), actor=viewer)
        return f"/settings/tags#group-{group_id}"
    return _group_action(request, session, group_id, run)


@pages.post("/settings/tag-groups/{group_id}/delete", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def group_delete(request: Request, session: SessionDep, viewer: AdminPageViewer, group_id: Id,
                 form: FormDep) -> Response:
    def run() -> str:
        tag_settings.delete_group(session, group_id=group_id,
                                  expected_count=parse_count(_text(form, "count"), default=-1), actor=viewer)
        return "/settings/tags?done=group_deleted#groups"
    return _group_action(request, session, group_id, run)


# ---------------------------------------------------------------- custom fields


def _field_page(request: Request, session: Session, *, field_id: int, errors: dict[str, str] | None = None,
                values: dict[str, str] | None = None, status_code: int = 200) -> Response:
    item = tag_settings.get_field(session, field_id=field_id)
    values = values or {"label": item.label, "choices": "，".join(item.choices or [])}
    return render(request, "customers/field_manage.html", status_code=status_code, nav_active="tags", field=item,
                  values=values, errors=errors or {}, title=_("Custom field {name}", name=item.label))


@pages.get("/settings/fields/{field_id}", response_class=HTMLResponse)
def field_page(request: Request, session: SessionDep, viewer: AdminPageViewer, field_id: Id) -> Response:
    return _field_page(request, session, field_id=field_id)


@pages.post("/settings/fields/{field_id}", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def field_save(request: Request, session: SessionDep, viewer: AdminPageViewer, field_id: Id,
               form: FormDep) -> Response:
    values = {"label": _text(form, "label").strip(), "choices": _text(form, "choices")}
    item = tag_settings.get_field(session, field_id=field_id)
    try:
        choices = None
        if item.field_type == "choice":
            raw = values["choices"].replace("，", ",").replace("、", ",")
            choices = [c.strip() for c in raw.split(",") if c.strip()]
        data = CustomFieldUpdate(label=values["label"], choices=choices)
        tag_settings.update_field(session, field_id=field_id, data=data, actor=viewer)
        session.commit()
    except (DomainError, ValidationError) as exc:
        if isinstance(exc, NotFound):
            raise
        session.rollback()
        return _field_page(request, session, field_id=field_id, values=values, errors=field_errors(exc),
                           status_code=exc.status_code if isinstance(exc, DomainError) else 422)
    return RedirectResponse("/settings/tags?done=field_saved#fields", status_code=303)


@pages.post("/settings/fields/{field_id}/retire", dependencies=[FormRead, CsrfChecked])
def field_retire(session: SessionDep, viewer: AdminPageViewer, field_id: Id, form: FormDep) -> Response:
    tag_settings.retire_field(session, field_id=field_id, retired=_text(form, "retired") != "0", actor=viewer)
    session.commit()
    return RedirectResponse("/settings/tags?done=field_saved#fields", status_code=303)
