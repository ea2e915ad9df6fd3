"""客户SOP: the API (``/api/v1/sops``) and the console (``/sops``: list, builder, dry run, pause/stop/edit).

Page and API share the service. Anyone signed in reads SOPs; only administrators and planners write
them; enrolments are shown on the viewer's accounts only (another account's enrolment is 404).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from siyu.core.deps import AdminApiViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid, validation_message
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.pagination import decode_cursor, encode_cursor
from siyu.core.viewer import Viewer
from siyu.customers.models import Stage
from siyu.sends import service as sends_service
from siyu.sends.models import QUOTA_MODE_LABELS, QuotaMode
from siyu.sops import service
from siyu.sops.models import (
    EXIT_LABELS,
    OUTCOME_LABELS,
    SOP_STATUS_LABELS,
    STEP_KIND_LABELS,
    TRIGGER_LABELS,
    ExitKind,
    Sop,
    SopEnrolment,
    SopStatus,
    SopVersion,
    StepKind,
    TriggerKind,
)
from siyu.sops.schemas import (
    DryRunCustomer,
    DryRunOut,
    DryRunStep,
    EnrolmentOut,
    EnrolmentPage,
    SopIn,
    SopList,
    SopOut,
)
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["sops"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
PAGE_SIZE = 50
FORM_STEPS = 8  # step rows on the builder form


def _sop_out(session: Any, sop: Sop, counts: dict[str, int]) -> SopOut:
    version = service.current_version(session, sop)
    return SopOut(id=sop.id, name=sop.name, status=sop.status, version=version.number, trigger=version.trigger,
                  conditions=version.conditions, steps=version.steps, exits=version.exits,
                  enrolled=counts.get("active", 0), completed=counts.get("completed", 0),
                  exited=counts.get("exited", 0), created_at=sop.created_at)


def _one(session: Any, sop: Sop, viewer: Viewer) -> SopOut:
    counts = service.enrolment_counts(session, viewer=viewer, sop_ids=[sop.id]).get(sop.id, {})
    return _sop_out(session, sop, counts)


def _dry_out(result: service.DryRun) -> DryRunOut:
    return DryRunOut(entering=result.entering, message=result.message, items=[
        DryRunCustomer(customer_id=e.customer_id, name=e.name, account_id=e.account_id,
                       steps=[DryRunStep(step=s.step, kind=s.kind, due_at=s.due_at, text=s.text, outcome=s.outcome,
                                         reason=s.reason) for s in e.steps]) for e in result.items])


def _enrolment_out(session: Any, enrolment: SopEnrolment, runs: list[Any] | None = None) -> EnrolmentOut:
    version = session.get(SopVersion, enrolment.version_id)
    return EnrolmentOut(id=enrolment.id, sop_id=enrolment.sop_id, version=version.number if version else 0,
                        customer_id=enrolment.customer_id, account_id=enrolment.account_id, status=enrolment.status,
                        exit_reason=enrolment.exit_reason, anchor_at=enrolment.anchor_at,
                        created_at=enrolment.created_at,
                        steps=[{"step": r.step_index + 1, "seq": r.seq, "due_at": r.due_at.isoformat(),
                                "status": r.status, "outcome": r.outcome, "detail": r.detail, "task_id": r.task_id}
                               for r in runs or []])


# ---------------------------------------------------------------- API


@api.get("/sops", response_model=SopList)
def list_sops(session: SessionDep, viewer: ApiViewer) -> SopList:
    """Every SOP with its status and enrolments (on the viewer's accounts)."""
    sops = service.list_sops(session)
    counts = service.enrolment_counts(session, viewer=viewer, sop_ids=[s.id for s in sops])
    return SopList(items=[_sop_out(session, s, counts.get(s.id, {})) for s in sops])


@api.post("/sops", response_model=SopOut, status_code=201)
def create_sop(session: SessionDep, viewer: ApiViewer, data: SopIn) -> SopOut:
    """A running SOP (administrators and planners); triggers from now on enrol customers."""
    sop = service.create_sop(session, data=data, viewer=viewer)
    session.commit()
    return _one(session, sop, viewer)


@api.post("/sops/dry-run", response_model=DryRunOut)
def dry_run_new(session: SessionDep, viewer: ApiViewer, data: SopIn) -> DryRunOut:
    """Who an unsaved SOP would enrol today and what each would get; nothing is written."""
    result = service.dry_run(session, data=data, viewer=viewer)
    session.rollback()
    return _dry_out(result)


@api.get("/sops/{sop_id}", response_model=SopOut)
def get_sop(session: SessionDep, viewer: ApiViewer, sop_id: Id) -> SopOut:
    return _one(session, service.get_sop(session, sop_id=sop_id), viewer)


@api.put("/sops/{sop_id}", response_model=SopOut)
def update_sop(session: SessionDep, viewer: ApiViewer, sop_id: Id, data: SopIn) -> SopOut:
    """An edit is a new version: running enrolments finish on the version they entered with."""
    sop = service.update_sop(session, sop_id=sop_id, data=data, viewer=viewer)
    session.commit()
    return _one(session, sop, viewer)


def _status(session: Any, viewer: Viewer, sop_id: int, status: SopStatus) -> SopOut:
    sop = service.set_status(session, sop_id=sop_id, status=status, viewer=viewer)
    session.commit()
    return _one(session, sop, viewer)


@api.post("/sops/{sop_id}/pause", response_model=SopOut)
def pause_sop(session: SessionDep, viewer: ApiViewer, sop_id: Id) -> SopOut:
    return _status(session, viewer, sop_id, SopStatus.paused)


@api.post("/sops/{sop_id}/resume", response_model=SopOut)
def resume_sop(session: SessionDep, viewer: ApiViewer, sop_id: Id) -> SopOut:
    return _status(session, viewer, sop_id, SopStatus.running)


@api.post("/sops/{sop_id}/stop", response_model=SopOut)
def stop_sop(session: SessionDep, viewer: ApiViewer, sop_id: Id) -> SopOut:
    """Stop for good: running enrolments end and their pending steps are cancelled."""
    return _status(session, viewer, sop_id, SopStatus.stopped)


@api.get("/sops/{sop_id}/dry-run", response_model=DryRunOut)
def dry_run_saved(session: SessionDep, viewer: ApiViewer, sop_id: Id) -> DryRunOut:
    result = service.dry_run(session, sop_id=sop_id, viewer=viewer)
    session.rollback()
    return _dry_out(result)


def _after(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return int(decode_cursor(cursor)[0])
    except (ValueError, TypeError, IndexError) as exc:
        raise Invalid("Invalid cursor", field="cursor") from exc


@api.get("/sops/{sop_id}/enrolments", response_model=EnrolmentPage)
def list_enrolments(session: SessionDep, viewer: ApiViewer, sop_id: Id, status: str = "",
                    limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
                    cursor: str | None = None) -> EnrolmentPage:
    """The SOP's enrolments on the viewer's accounts, newest first."""
    found = service.list_enrolments(session, sop_id=sop_id, viewer=viewer, status=status, limit=limit + 1,
                                    after_id=_after(cursor))
    next_cursor = encode_cursor([found[limit - 1].id]) if len(found) > limit else None
    return EnrolmentPage(items=[_enrolment_out(session, e) for e in found[:limit]], next_cursor=next_cursor)


@api.get("/sops/{sop_id}/enrolments/{enrolment_id}", response_model=EnrolmentOut)
def get_enrolment(session: SessionDep, viewer: ApiViewer, sop_id: Id, enrolment_id: Id) -> EnrolmentOut:
    """One enrolment with each step's run (when, what happened, why); another account's: 404."""
    enrolment = service.get_enrolment(session, enrolment_id=enrolment_id, viewer=viewer)
    if enrolment.sop_id != sop_id:
        raise service.EnrolmentNotFound("Enrolment not found")
    return _enrolment_out(session, enrolment, service.step_runs(session, [enrolment.id]).get(enrolment.id, []))


class QuotaOut(BaseModel):
    quota_mode: QuotaMode
    limit_this_period: int


class QuotaIn(BaseModel):
    quota_mode: QuotaMode


def _quota_out(session: Any) -> QuotaOut:
    from siyu.core.db import utcnow

    mode = sends_service.get_settings_row(session).quota_mode
    return QuotaOut(quota_mode=QuotaMode(mode),
                    limit_this_period=sends_service.period_of(mode, sends_service.local_day(utcnow())).limit)


@api.get("/sends/quota", response_model=QuotaOut)
def get_quota(session: SessionDep, viewer: ApiViewer) -> QuotaOut:
    """The corp's per-customer mass-send rule (W:92135) the ledger counts by, and this period's limit."""
    return _quota_out(session)


@api.put("/sends/quota", response_model=QuotaOut)
def put_quota(session: SessionDep, viewer: AdminApiViewer, data: QuotaIn) -> QuotaOut:
    """Set the rule to match the corp's setting in WeCom: month (days of the month), week (7) or day (1)."""
    sends_service.set_quota_mode(session, mode=data.quota_mode, viewer=viewer)
    session.commit()
    return _quota_out(session)


# ---------------------------------------------------------------- console


def _picked(form: Any, name: str) -> list[int]:
    """A picker's checked ids (the library's materials, the trigger's tags or channels; anything else is
    passed over)."""
    return list(dict.fromkeys(int(v) for v in form.getlist(name) if str(v).strip().isdigit()))


def _library(session: Any) -> dict[str, Any]:
    """The library picker's choices for the steps: scripts, and materials (a WeCom message takes links,
    images and mini-program cards; the service refuses a file there)."""
    from siyu.coupons import service as coupons_service
    from siyu.library import service as library_service

    return {"library": library_service.picker_choices(session, material_kinds=library_service.WELCOME_KINDS),
            "coupon_batches": [(b.id, b.name) for b in coupons_service.list_batches(session)]}


def _choices(session: Any, viewer: Viewer) -> dict[str, Any]:
    """The builder's pickers by name: tags by group (the trigger's and the tag step's), channels, segments."""
    from siyu.channels import service as channels_service
    from siyu.customers import service as customers_service
    from siyu.segments import service as segments_service

    groups = [(g.name, [(t.id, t.name) for t in g.tags]) for g in customers_service.list_tag_groups(session)]
    return {"tag_groups": [(name, tags) for name, tags in groups if tags],
            "channel_choices": [(c.id, c.name) for c in channels_service.list_channels(session, viewer=viewer)],
            "segment_choices": [(s.id, s.name) for s in segments_service.list_segments(session, viewer=viewer)]}


def _audience(form: Any, *, session: Any, viewer: Viewer) -> Any:
    """The audience: a picked segment's conditions (as the segment stands when the SOP is saved), or the
    advanced JSON condition, or none (everyone the trigger fires for)."""
    from siyu.segments import service as segments_service

    segment_text = str(form.get("audience_segment", "") or "").strip()
    raw = str(form.get("conditions", "") or "").strip()
    if segment_text and raw:
        raise Invalid("Choose a segment or write the condition, not both", field="conditions")
    if segment_text:
        if not segment_text.isdigit():
            raise Invalid("Unknown segment", field="audience_segment")
        return segments_service.get_segment(session, segment_id=int(segment_text), viewer=viewer).conditions
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise Invalid("The audience condition is not valid JSON", field="conditions") from exc


def form_to_sop(form: Any, *, session: Any, viewer: Viewer) -> SopIn:
    """The builder form as a ``SopIn``; anything unreadable is refused in the viewer's language."""
    kind = str(form.get("trigger_kind", "") or "")
    days_text = str(form.get("trigger_days", "") or "").strip()
    steps = []
    for index in range(FORM_STEPS):
        at = str(form.get(f"step_at_{index}", "") or "").strip()
        if not at:
            continue
        tag_text = str(form.get(f"step_tag_{index}", "") or "").strip()
        coupon_text = str(form.get(f"step_coupon_{index}", "") or "").strip()
        script_text = str(form.get(f"step_script_{index}", "") or "").strip()
        steps.append({"at": at, "kind": str(form.get(f"step_kind_{index}", "task") or "task"),
                      "text": str(form.get(f"step_text_{index}", "") or ""),
                      "tag_id": int(tag_text) if tag_text.isdigit() else None,
                      "coupon_batch_id": int(coupon_text) if coupon_text.isdigit() else None,
                      "script_id": int(script_text) if script_text.isdigit() else None,
                      "material_ids": _picked(form, f"step_materials_{index}"),
                      "times": int(str(form.get(f"step_times_{index}", "4") or "4"))
                      if str(form.get(f"step_times_{index}", "4") or "4").isdigit() else 4})
    conditions = _audience(form, session=session, viewer=viewer)
    trigger: dict[str, Any] = {"kind": kind}
    if kind == TriggerKind.channel.value:
        trigger["channel_ids"] = _picked(form, "trigger_channels")
    elif kind == TriggerKind.tag.value:
        trigger["tag_ids"] = _picked(form, "trigger_tags")
    elif kind == TriggerKind.stage.value:
        trigger["stages"] = [str(s) for s in form.getlist("trigger_stages")]
    elif kind == TriggerKind.no_touch.value:
        trigger["days"] = int(days_text) if days_text.isdigit() else None
    try:
        return SopIn.model_validate({"name": str(form.get("name", "") or ""), "trigger": trigger,
                                     "conditions": conditions, "steps": steps,
                                     "exits": [str(e) for e in form.getlist("exits")]})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error.get("loc", ()))
        raise Invalid("{field}: {message}", field=where, message=validation_message(dict(error))) from exc


def _labels() -> dict[str, Any]:
    return {"trigger_labels": {k.value: _(v) for k, v in TRIGGER_LABELS.items()},
            "step_labels": {k.value: _(v) for k, v in STEP_KIND_LABELS.items()},
            "exit_labels": {k.value: _(v) for k, v in EXIT_LABELS.items()},
            "status_labels": {k.value: _(v) for k, v in SOP_STATUS_LABELS.items()},
            "outcome_labels": {k.value: _(v) for k, v in OUTCOME_LABELS.items()},
            "quota_labels": {k.value: _(v) for k, v in QUOTA_MODE_LABELS.items()},
            "stages": [s.value for s in Stage], "form_steps": FORM_STEPS,
            "trigger_kinds": [k.value for k in TriggerKind], "step_kinds": [k.value for k in StepKind],
            "exit_kinds": [k.value for k in ExitKind]}


def _list_context(session: Any, viewer: Viewer) -> dict[str, Any]:
    sops = service.list_sops(session)
    counts = service.enrolment_counts(session, viewer=viewer, sop_ids=[s.id for s in sops])
    versions = {s.id: service.current_version(session, s) for s in sops}
    return {"sops": sops, "counts": counts, "versions": versions,
            "quota_mode": sends_service.get_settings_row(session).quota_mode, **_labels(), **_library(session),
            **_choices(session, viewer)}


def _default_form() -> dict[str, Any]:
    return {"name": "", "trigger_kind": "tag", "trigger_channels": [], "trigger_tags": [], "trigger_days": "",
            "trigger_stages": [], "audience_segment": "", "conditions": "", "exits": ["purchase"],
            "steps": [{"at": "day 0 09:00", "kind": "task", "text": "", "tag_id": "", "coupon_batch_id": "",
                       "times": 4, "script_id": "",
                       "material_ids": []}]}


def _form_values(form: Any) -> dict[str, Any]:
    steps = [{"at": str(form.get(f"step_at_{i}", "") or ""), "kind": str(form.get(f"step_kind_{i}", "task") or ""),
              "text": str(form.get(f"step_text_{i}", "") or ""), "tag_id": str(form.get(f"step_tag_{i}", "") or ""),
              "coupon_batch_id": str(form.get(f"step_coupon_{i}", "") or ""),
              "times": str(form.get(f"step_times_{i}", "4") or "4"),
              "script_id": str(form.get(f"step_script_{i}", "") or ""),
              "material_ids": _picked(form, f"step_materials_{i}")} for i in range(FORM_STEPS)]
    return {"name": str(form.get("name", "") or ""), "trigger_kind": str(form.get("trigger_kind", "") or ""),
            "trigger_channels": _picked(form, "trigger_channels"), "trigger_tags": _picked(form, "trigger_tags"),
            "trigger_days": str(form.get("trigger_days", "") or ""),
            "trigger_stages": [str(s) for s in form.getlist("trigger_stages")],
            "audience_segment": str(form.get("audience_segment", "") or ""),
            "conditions": str(form.get("conditions", "") or ""), "exits": [str(e) for e in form.getlist("exits")],
            "steps": [s for s in steps if s["at"]]}


def _version_values(session: Any, viewer: Viewer, version: SopVersion, name: str) -> dict[str, Any]:
    """The builder's values for a saved version: an audience equal to a segment's conditions shows as that
    segment; any other condition in the advanced JSON field."""
    from siyu.segments import service as segments_service

    trigger = version.trigger
    segment = next((s for s in segments_service.list_segments(session, viewer=viewer)
                    if version.conditions and s.conditions == version.conditions), None)
    conditions = json.dumps(version.conditions, ensure_ascii=False) if version.conditions and segment is None \
        else ""
    return {"name": name, "trigger_kind": trigger.get("kind", ""),
            "trigger_channels": list(trigger.get("channel_ids") or []),
            "trigger_tags": list(trigger.get("tag_ids") or []),
            "trigger_days": str(trigger.get("days") or ""), "trigger_stages": trigger.get("stages") or [],
            "audience_segment": str(segment.id) if segment is not None else "", "conditions": conditions,
            "exits": list(version.exits),
            "steps": [{"at": s.get("at", ""), "kind": s.get("kind", ""), "text": s.get("text", ""),
                       "tag_id": s.get("tag_id") or "", "coupon_batch_id": s.get("coupon_batch_id") or "",
                       "times": s.get("times", 4),
                       "script_id": s.get("script_id") or "", "material_ids": s.get("material_ids") or []}
                      for s in version.steps]}


@pages.get("/sops", response_class=HTMLResponse)
def sops_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return render(request, "sops/list.html", nav_active="sops", title=_("Customer SOPs"),
                  values=_default_form(), error="", dry=None, message=request.query_params.get("message", ""),
                  **_list_context(session, viewer))


@pages.post("/sops", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def sops_create(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    """Save the builder's SOP, or (the dry-run button) show who would enter today without saving."""
    values = _form_values(form)
    try:
        data = form_to_sop(form, session=session, viewer=viewer)
        if str(form.get("action", "") or "") == "dry_run":
            dry = service.dry_run(session, data=data, viewer=viewer)
            session.rollback()
            return render(request, "sops/list.html", nav_active="sops", title=_("Customer SOPs"), values=values,
                          error="", dry=dry, message="", **_list_context(session, viewer))
        sop = service.create_sop(session, data=data, viewer=viewer)
    except DomainError as exc:
        session.rollback()
        return render(request, "sops/list.html", nav_active="sops", title=_("Customer SOPs"), values=values,
                      error=exc.message, dry=None, message="", status_code=exc.status_code,
                      **_list_context(session, viewer))
    session.commit()
    return RedirectResponse(f"/sops/{sop.id}", status_code=303)


@pages.post("/sops/quota", dependencies=[FormRead, CsrfChecked])
def quota_mode(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    """The corp's mass-send rule, as its admin set it in WeCom (administrators only)."""
    value = str(form.get("quota_mode", "") or "")
    if value not in {m.value for m in QuotaMode}:
        raise Invalid("Unknown quota rule", field="quota_mode")
    sends_service.set_quota_mode(session, mode=QuotaMode(value), viewer=viewer)
    session.commit()
    return RedirectResponse("/sops?message=quota", status_code=303)


def _detail(request: Request, session: Any, viewer: Viewer, sop: Sop, *, values: dict[str, Any] | None = None,
            error: str = "", dry: Any = None, status_code: int = 200) -> Response:
    version = service.current_version(session, sop)
    enrolments = service.list_enrolments(session, sop_id=sop.id, viewer=viewer, limit=PAGE_SIZE)
    runs = service.step_runs(session, [e.id for e in enrolments])
    from siyu.customers.models import Customer

    names = {c.id: c.name for c in session.query(Customer).filter(
        Customer.id.in_([e.customer_id for e in enrolments]))} if enrolments else {}
    version_numbers = {v.id: v.number for v in session.query(SopVersion).filter(SopVersion.sop_id == sop.id)}
    counts = service.enrolment_counts(session, viewer=viewer, sop_ids=[sop.id]).get(sop.id, {})
    return render(request, "sops/detail.html", nav_active="sops", title=sop.name, sop=sop, version=version,
                  enrolments=enrolments, runs=runs, names=names, version_numbers=version_numbers, counts=counts,
                  values=values or _version_values(session, viewer, version, sop.name), error=error, dry=dry,
                  status_code=status_code, **_labels(), **_library(session), **_choices(session, viewer))


@pages.get("/sops/{sop_id}", response_class=HTMLResponse)
def sop_page(request: Request, session: SessionDep, viewer: PageViewer, sop_id: Id) -> Response:
    return _detail(request, session, viewer, service.get_sop(session, sop_id=sop_id))


@pages.post("/sops/{sop_id}", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def sop_edit(request: Request, session: SessionDep, viewer: PageViewer, sop_id: Id, form: FormDep) -> Response:
    """Save an edit as a new version, or dry-run the SOP as it stands."""
    sop = service.get_sop(session, sop_id=sop_id)
    values = _form_values(form)
    try:
        if str(form.get("action", "") or "") == "dry_run":
            dry = service.dry_run(session, sop_id=sop.id, viewer=viewer)
            session.rollback()
            return _detail(request, session, viewer, sop, dry=dry)
        data = form_to_sop(form, session=session, viewer=viewer)
        service.update_sop(session, sop_id=sop.id, data=data, viewer=viewer)
    except DomainError as exc:
        session.rollback()
        return _detail(request, session, viewer, service.get_sop(session, sop_id=sop_id), values=values,
                       error=exc.message, status_code=exc.status_code)
    session.commit()
    return RedirectResponse(f"/sops/{sop.id}", status_code=303)


@pages.post("/sops/{sop_id}/status", dependencies=[FormRead, CsrfChecked])
def sop_status(request: Request, session: SessionDep, viewer: PageViewer, sop_id: Id, form: FormDep) -> Response:
    value = str(form.get("status", "") or "")
    if value not in {s.value for s in SopStatus}:
        raise Invalid("Unknown status", field="status")
    service.set_status(session, sop_id=sop_id, status=SopStatus(value), viewer=viewer)
    session.commit()
    return RedirectResponse(f"/sops/{sop_id}", status_code=303)
