"""Segments (客户分群): the API and the console's builder, list and detail pages.

A segment's customers are read through the customer list itself
(``customers.service.list_customers`` with ``CustomerFilter(segment_id=…)``), so the API's
``/segments/{id}/customers`` has the customer list's shape and cursor, and the console's
"open list" and "export" links are the customer list's with ``?segment=<id>``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from siyu.accounts import service as accounts_service
from siyu.core.deps import AdminApiViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import Stage
from siyu.customers.schemas import CustomerPage
from siyu.segments import jobs as segments_jobs
from siyu.segments import rfm, service
from siyu.segments.compiler import SegmentBroken
from siyu.segments.models import RFM_LABELS, Segment, SegmentMode
from siyu.segments.schemas import (
    FIELD_NAMES,
    PreviewIn,
    PreviewOut,
    SegmentIn,
    SegmentOut,
    SegmentUpdate,
    describe_error,
    parse_tree,
)
from siyu.web.forms import FormDep, FormRead

api = APIRouter(tags=["segments"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]


def _out(segment: Segment) -> SegmentOut:
    return SegmentOut.model_validate(segment)


def _sample(session: Any, customers: list[Any], viewer: Viewer) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json", include={"id", "name", "remark_name", "stage", "level"})
            for s in customers_service.to_summaries(session, customers=customers, viewer=viewer)]


# ---------------------------------------------------------------- API


@api.get("/segments")
def list_segments(session: SessionDep, viewer: ApiViewer) -> dict[str, list[SegmentOut]]:
    return {"items": [_out(s) for s in service.list_segments(session, viewer=viewer)]}


@api.post("/segments", response_model=SegmentOut, status_code=201)
def create_segment(session: SessionDep, viewer: ApiViewer, data: SegmentIn) -> SegmentOut:
    segment = service.create_segment(session, data=data, viewer=viewer)
    session.commit()
    return _out(segment)


@api.post("/segments/preview", response_model=PreviewOut)
def preview_segment(session: SessionDep, viewer: ApiViewer, data: PreviewIn) -> PreviewOut:
    """The live count and a sample of unsaved conditions, as the builder shows them."""
    count, customers = service.preview(session, conditions=data.conditions, viewer=viewer)
    return PreviewOut(count=count.value, exact=count.exact, estimate=count.estimate,
                      sample=_sample(session, customers, viewer))


@api.get("/segments/{segment_id}", response_model=SegmentOut)
def get_segment(session: SessionDep, viewer: ApiViewer, segment_id: Id) -> SegmentOut:
    return _out(service.get_segment(session, segment_id=segment_id, viewer=viewer))


@api.patch("/segments/{segment_id}", response_model=SegmentOut)
def update_segment(session: SessionDep, viewer: ApiViewer, segment_id: Id, data: SegmentUpdate) -> SegmentOut:
    segment = service.update_segment(session, segment_id=segment_id, data=data, viewer=viewer)
    session.commit()
    return _out(segment)


@api.delete("/segments/{segment_id}", status_code=204)
def delete_segment(session: SessionDep, viewer: ApiViewer, segment_id: Id) -> None:
    service.delete_segment(session, segment_id=segment_id, viewer=viewer)
    session.commit()


@api.post("/segments/{segment_id}/snapshot", response_model=SegmentOut)
def snapshot_segment(session: SessionDep, viewer: ApiViewer, segment_id: Id) -> SegmentOut:
    """Take a static segment's members again, from its conditions as they match now."""
    segment = service.get_segment(session, segment_id=segment_id, viewer=viewer)
    if segment.mode != SegmentMode.static.value:
        raise Invalid("Only a static segment keeps a snapshot", field="mode")
    service.check_segment(session, segment=segment, viewer=viewer)
    service.take_snapshot(session, segment=segment, viewer=viewer)
    session.commit()
    return _out(segment)


@api.get("/segments/{segment_id}/customers", response_model=CustomerPage)
def segment_customers(session: SessionDep, viewer: ApiViewer, segment_id: Id,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None,
                      sort: str = "last_touch") -> CustomerPage:
    segment = service.get_segment(session, segment_id=segment_id, viewer=viewer)
    if segment.mode == SegmentMode.dynamic.value:
        service.check_segment(session, segment=segment, viewer=viewer)
    page = customers_service.list_customers(session, flt=service.segment_filter(segment, sort=sort), viewer=viewer,
                                            limit=limit, cursor=cursor)
    return CustomerPage(items=customers_service.to_summaries(session, customers=page.items, viewer=viewer),
                        next_cursor=page.next_cursor)


class RfmDistribution(BaseModel):
    counts: dict[str, int]
    labels: dict[str, str]


@api.get("/rfm/distribution", response_model=RfmDistribution)
def rfm_distribution(session: SessionDep, viewer: ApiViewer) -> RfmDistribution:
    counts = rfm.distribution(session, scope=customers_service.visible_customer_clause(viewer))
    return RfmDistribution(counts=counts, labels={k.value: _(v) for k, v in RFM_LABELS.items()})


@api.get("/rfm/settings", response_model=rfm.RfmSettings)
def get_rfm_settings(session: SessionDep, viewer: ApiViewer) -> rfm.RfmSettings:
    return rfm.get_settings(session)


@api.put("/rfm/settings")
def put_rfm_settings(session: SessionDep, viewer: AdminApiViewer, settings: rfm.RfmSettings) -> dict[str, Any]:
    """Save quintiles or thresholds, and queue a full refresh (follow it at job_url)."""
    rfm.save_settings(session, settings=settings, actor=viewer)
    job_id = segments_jobs.submit_refresh(session, actor=viewer)
    session.commit()
    return {"settings": settings.model_dump(mode="json"), "job_id": job_id, "job_url": f"/api/v1/jobs/{job_id}"}


# ---------------------------------------------------------------- console


FIELD_LABELS = {
    "name": N_("Nickname"), "wechat_id": N_("WeChat ID"), "source": N_("Source"), "gender": N_("Gender"),
    "age_band": N_("Age band"), "city": N_("City"), "job": N_("Job"), "income_band": N_("Income band"),
    "family": N_("Family"),
}
KIND_LABELS = {
    "tag": N_("Has tag"), "rfm": N_("RFM segment"), "stage": N_("Stage"), "level": N_("Level"),
    "field": N_("Portrait field"), "custom_field": N_("Custom field"),
    "bought": N_("Bought a category within N days"), "spent": N_("Spent at least"),
    "no_purchase": N_("No purchase for N days"), "no_touch": N_("No private chat for N days"),
    "channel": N_("Came through channel"), "group_chat": N_("Member of group"), "account": N_("Friend of account"),
    "group_kind": N_("In a group of kind"),
}
OP_LABELS = {"eq": N_("equals"), "contains": N_("contains"), "gte": N_("at least"), "lte": N_("at most"),
             "empty": N_("is empty"), "not_empty": N_("is filled")}


def _pairs(items: Any, label: Any) -> list[dict[str, Any]]:
    return [{"id": item.id, "name": label(item)} for item in items]


def _builder_context(session: Any, viewer: Viewer) -> dict[str, Any]:
    """What the builder's script offers in its selects, translated, as one JSON document."""
    from sqlalchemy import select

    from siyu.channels import service as channels_service
    from siyu.groups.models import GroupChat

    groups = session.execute(select(GroupChat.id, GroupChat.name).order_by(GroupChat.id).limit(500)).all()
    builder = {
        "tags": [{"id": t.id, "name": f"{g.name}:{t.name}"} for g in customers_service.list_tag_groups(session)
                 for t in g.tags],
        "rfm": [{"id": key.value, "name": _(label)} for key, label in RFM_LABELS.items()],
        "stages": [{"id": s.value, "name": _(f"stage.{s.value}")} for s in Stage],
        "fields": [{"id": key, "name": _(FIELD_LABELS[key])} for key in FIELD_NAMES],
        "custom_fields": _pairs(customers_service.list_custom_fields(session), lambda f: f.label),
        "accounts": _pairs(accounts_service.visible_accounts(session, viewer=viewer), lambda a: a.display_name),
        "channels": _pairs(channels_service.list_channels(session, viewer=viewer), lambda c: c.name),
        "groups": [{"id": g.id, "name": g.name or f"#{g.id}"} for g in groups],
        **_group_kind_options(),
        "kinds": [{"id": key, "name": _(label)} for key, label in KIND_LABELS.items()],
        "ops": {key: _(label) for key, label in OP_LABELS.items()},
        "text": {"days": _("Days"), "category": _("Category"), "amount": _("Amount (yuan)"), "value": _("Value"),
                 "remove": _("Remove"), "counting": _("Counting…"), "count": _("{n} customers match"),
                 "about": _("About {n} customers match"), "none": _("Add a condition to see who matches")},
    }
    return {"builder": builder, "nav_active": "segments"}


def _group_kind_options() -> dict[str, Any]:
    from siyu.groups import registry

    return {"group_kinds": [{"id": k.value, "name": _(v)} for k, v in registry.KIND_LABELS.items()],
            "group_roles": [{"id": k.value, "name": _(v)} for k, v in registry.ROLE_LABELS.items()]}


@pages.get("/segments", response_class=HTMLResponse)
def segment_list(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    from siyu.web.render import render

    return render(request, "segments/list.html", segments=service.list_segments(session, viewer=viewer),
                  title=_("Segments"), nav_active="segments")


@pages.get("/segments/count")
def segment_count(session: SessionDep, viewer: PageViewer,
                  conditions: Annotated[str, Query(max_length=20_000)] = "") -> Response:
    """The builder's live count and sample: ``conditions`` is the tree as JSON text."""
    try:
        tree = parse_tree(json.loads(conditions or "null"))
        count, customers = service.preview(session, conditions=tree, viewer=viewer)
    except json.JSONDecodeError:
        return JSONResponse({"error": _("The conditions are not valid JSON")}, status_code=422)
    except ValidationError as exc:
        return JSONResponse({"error": _("Invalid conditions: {detail}", detail=describe_error(exc))},
                            status_code=422)
    except DomainError as exc:
        session.rollback()
        return JSONResponse({"error": exc.message}, status_code=exc.status_code)
    return JSONResponse({"count": count.value, "exact": count.exact, "estimate": count.estimate,
                         "sample": _sample(session, customers, viewer)})


@pages.get("/segments/new", response_class=HTMLResponse)
def segment_new(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    from siyu.web.render import render

    return render(request, "segments/builder.html", segment=None, name="", mode="dynamic",
                  conditions={"kind": "and", "conditions": []}, error=None, title=_("New segment"),
                  **_builder_context(session, viewer))


def _save_form(form: Any) -> tuple[str, str, Any]:
    name = str(form.get("name") or "").strip()
    mode = str(form.get("mode") or "dynamic")
    try:
        conditions = json.loads(str(form.get("conditions") or "null"))
    except json.JSONDecodeError as exc:
        raise Invalid("The conditions are not valid JSON", field="conditions") from exc
    return name, mode, conditions


@pages.post("/segments", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def segment_create(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    return _save(request, session, viewer, form, segment_id=None)


@pages.post("/segments/{segment_id}", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def segment_update(request: Request, session: SessionDep, viewer: PageViewer, segment_id: Id,
                   form: FormDep) -> Response:
    return _save(request, session, viewer, form, segment_id=segment_id)


def _save(request: Request, session: Any, viewer: Viewer, form: Any, *, segment_id: int | None) -> Response:
    from siyu.web.render import render

    name, mode, conditions = str(form.get("name") or ""), str(form.get("mode") or "dynamic"), None
    try:
        name, mode, conditions = _save_form(form)
        try:
            tree = parse_tree(conditions)
            if segment_id is None:
                data = SegmentIn(name=name, conditions=tree, mode=mode)
                segment = service.create_segment(session, data=data, viewer=viewer)
            else:
                update = SegmentUpdate(name=name, conditions=tree, mode=mode)
                segment = service.update_segment(session, segment_id=segment_id, data=update, viewer=viewer)
        except ValidationError as exc:
            raise Invalid("Invalid conditions: {detail}", field="conditions", detail=describe_error(exc)) from exc
        session.commit()
        return RedirectResponse(f"/segments/{segment.id}", status_code=303)
    except DomainError as exc:
        session.rollback()
        existing = service.get_segment(session, segment_id=segment_id, viewer=viewer) if segment_id else None
        return render(request, "segments/builder.html", status_code=422, segment=existing, name=name, mode=mode,
                      conditions=conditions if isinstance(conditions, dict) else {"kind": "and", "conditions": []},
                      error=exc.message, title=_("New segment"), **_builder_context(session, viewer))


@pages.get("/segments/{segment_id}", response_class=HTMLResponse)
def segment_detail(request: Request, session: SessionDep, viewer: PageViewer, segment_id: Id) -> Response:
    from siyu.web.render import render

    segment = service.get_segment(session, segment_id=segment_id, viewer=viewer)
    error: str | None = None
    count: customers_service.CountResult | None = None
    try:
        if segment.mode == SegmentMode.dynamic.value:
            service.check_segment(session, segment=segment, viewer=viewer)
        elif segment.broken:
            error = service.broken_message(segment)
        count = customers_service.count_customers(session, flt=service.segment_filter(segment), viewer=viewer,
                                                  cap=get_settings().list_exact_count_limit)
    except SegmentBroken:
        session.refresh(segment)
        error = service.broken_message(segment)
    except DomainError as exc:
        session.rollback()
        error = exc.message
    return render(request, "segments/builder.html", status_code=200 if error is None else 422, segment=segment,
                  name=segment.name, mode=segment.mode, conditions=segment.conditions, error=error, count=count,
                  title=segment.name, **_builder_context(session, viewer))


@pages.post("/segments/{segment_id}/snapshot", dependencies=[FormRead, CsrfChecked])
def segment_snapshot(session: SessionDep, viewer: PageViewer, segment_id: Id) -> Response:
    segment = service.get_segment(session, segment_id=segment_id, viewer=viewer)
    service.check_segment(session, segment=segment, viewer=viewer)
    service.take_snapshot(session, segment=segment, viewer=viewer)
    session.commit()
    return RedirectResponse(f"/segments/{segment.id}", status_code=303)


@pages.post("/segments/{segment_id}/delete", dependencies=[FormRead, CsrfChecked])
def segment_delete(session: SessionDep, viewer: PageViewer, segment_id: Id) -> Response:
    service.delete_segment(session, segment_id=segment_id, viewer=viewer)
    session.commit()
    return RedirectResponse("/segments", status_code=303)
