"""Group operations in the console and the API: 入群欢迎语 per kind, a group's intake plan, the posts calendar."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.core.settings import local_today, local_zone
from siyu.core.viewer import Viewer
from siyu.groups import onboarding, posts, registry, service
from siyu.groups.models import GroupChat, GroupKind
from siyu.groups.schemas import (
    BatchIn,
    GroupPostOut,
    InviteeOut,
    InviteeStatusIn,
    PostPlanOut,
    WelcomeTemplateOut,
)
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render

api = APIRouter(tags=["groups"])
pages = APIRouter(include_in_schema=False)

FIELD_LABELS = {"name": N_("Name"), "kind": N_("Group kind"), "text": N_("Text"), "slot": N_("Kind of post"),
                "at_time": N_("Time"), "weekdays": N_("Weekdays"), "script_id": N_("Script"),
                "batch": N_("Batch"), "customer_ids": N_("Customers"), "names": N_("Names"),
                "note": N_("Screening note"), "status": N_("Status")}
WEEKDAY_LABELS = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))


def _labels() -> dict[str, Any]:
    return {"kind_labels": {k.value: _(v) for k, v in registry.KIND_LABELS.items()},
            "slot_labels": {k: _(v) for k, v in posts.SLOT_LABELS.items()},
            "post_status_labels": {k: _(v) for k, v in posts.POST_STATUS_LABELS.items()},
            "batch_labels": {k: _(v) for k, v in onboarding.BATCH_LABELS.items()},
            "invitee_labels": {k: _(v) for k, v in onboarding.INVITEE_LABELS.items()},
            "weekday_labels": [_(d) for d in WEEKDAY_LABELS],
            "calendar_slots": [s.value for s in posts.CALENDAR_SLOTS]}


def _text(form: Any, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _ints(raw: str, key: str) -> list[int]:
    values = [p for p in raw.replace("，", ",").replace(" ", ",").split(",") if p.strip()]
    if any(not p.strip().isdigit() for p in values):
        raise Invalid("Enter whole numbers separated by commas", field=key)
    return [int(p) for p in values]


# ---------------------------------------------------------------- API


@api.get("/group-welcome-templates", response_model=list[WelcomeTemplateOut])
def api_welcome_templates(session: SessionDep, viewer: ApiViewer) -> list[WelcomeTemplateOut]:
    return [WelcomeTemplateOut.model_validate(t) for t in onboarding.list_welcome_templates(session)]


@api.post("/group-welcome-templates", response_model=WelcomeTemplateOut, status_code=201)
def api_welcome_create(session: SessionDep, viewer: ApiViewer,
                       data: onboarding.WelcomeTemplateIn) -> WelcomeTemplateOut:
    template = onboarding.save_welcome_template(session, data=data, viewer=viewer)
    session.commit()
    return WelcomeTemplateOut.model_validate(template)


@api.put("/group-welcome-templates/{template_id:int}", response_model=WelcomeTemplateOut)
def api_welcome_update(session: SessionDep, viewer: ApiViewer, template_id: Id,
                       data: onboarding.WelcomeTemplateIn) -> WelcomeTemplateOut:
    template = onboarding.save_welcome_template(session, data=data, viewer=viewer, template_id=template_id)
    session.commit()
    return WelcomeTemplateOut.model_validate(template)


@api.delete("/group-welcome-templates/{template_id:int}", status_code=204)
def api_welcome_delete(session: SessionDep, viewer: ApiViewer, template_id: Id) -> Response:
    onboarding.delete_welcome_template(session, template_id=template_id, viewer=viewer)
    session.commit()
    return Response(status_code=204)


@api.get("/groups/{group_id:int}/invitees", response_model=list[InviteeOut])
def api_invitees(session: SessionDep, viewer: ApiViewer, group_id: Id) -> list[InviteeOut]:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    return [InviteeOut.model_validate(i) for rows in onboarding.intake_plan(session, group=group).values()
            for i in rows]


@api.post("/groups/{group_id:int}/invitees", response_model=list[InviteeOut], status_code=201)
def api_invite(session: SessionDep, viewer: ApiViewer, group_id: Id,
               data: onboarding.InviteesIn) -> list[InviteeOut]:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    made = onboarding.add_invitees(session, group=group, data=data, viewer=viewer)
    session.commit()
    return [InviteeOut.model_validate(i) for i in made]


@api.patch("/groups/{group_id:int}/invitees/{invitee_id:int}", response_model=InviteeOut)
def api_invitee_status(session: SessionDep, viewer: ApiViewer, group_id: Id, invitee_id: Id,
                       data: InviteeStatusIn) -> InviteeOut:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    invitee = onboarding.set_invitee_status(session, group=group, invitee_id=invitee_id, status=data.status,
                                            viewer=viewer)
    session.commit()
    return InviteeOut.model_validate(invitee)


@api.post("/groups/{group_id:int}/intake/finish", response_model=list[GroupPostOut], status_code=201)
def api_finish_batch(session: SessionDep, viewer: ApiViewer, group_id: Id, data: BatchIn) -> list[GroupPostOut]:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    made = onboarding.finish_batch(session, group=group, batch=data.batch, viewer=viewer)
    session.commit()
    return [GroupPostOut.model_validate(p) for p in made]


@api.get("/group-post-plans", response_model=list[PostPlanOut])
def api_plans(session: SessionDep, viewer: ApiViewer, kind: str | None = None) -> list[PostPlanOut]:
    return [PostPlanOut.model_validate(p) for p in posts.list_plans(session, kind=kind)]


@api.post("/group-post-plans", response_model=PostPlanOut, status_code=201)
def api_plan_create(session: SessionDep, viewer: ApiViewer, data: posts.PlanIn) -> PostPlanOut:
    plan = posts.save_plan(session, data=data, viewer=viewer)
    session.commit()
    return PostPlanOut.model_validate(plan)


@api.delete("/group-post-plans/{plan_id:int}", status_code=204)
def api_plan_retire(session: SessionDep, viewer: ApiViewer, plan_id: Id) -> Response:
    posts.retire_plan(session, plan_id=plan_id, viewer=viewer)
    session.commit()
    return Response(status_code=204)


@api.get("/group-posts", response_model=list[GroupPostOut])
def api_posts(session: SessionDep, viewer: ApiViewer, since: date | None = None, until: date | None = None,
              kind: str | None = None, group_id: Id | None = None) -> list[GroupPostOut]:
    since = since or local_today()
    until = until or since + timedelta(days=7)
    if until <= since or (until - since).days > 62:
        raise Invalid("Choose a span of at most 62 days", field="until")
    zone = local_zone()
    found = posts.list_posts(session, viewer=viewer, kind=kind, group_id=group_id,
                             since=datetime.combine(since, datetime.min.time(), tzinfo=zone),
                             until=datetime.combine(until, datetime.min.time(), tzinfo=zone))
    return [GroupPostOut.model_validate(p) for p in found]


# ---------------------------------------------------------------- the posts calendar (console)


@pages.get("/groups/posts", response_class=HTMLResponse)
def posts_page(request: Request, session: SessionDep, viewer: PageViewer, kind: str = GroupKind.marketing.value,
               day: Annotated[date | None, Query()] = None) -> Response:
    return _posts(request, session, viewer, kind=kind, day=day)


def _posts(request: Request, session: Session, viewer: Viewer, *, kind: str, day: date | None,
           errors: dict[str, str] | None = None, values: dict[str, Any] | None = None,
           status_code: int = 200) -> Response:
    from siyu.library import service as library

    if kind not in {k.value for k in GroupKind}:
        kind = GroupKind.marketing.value
    day = day or local_today()
    grid = posts.calendar(session, viewer=viewer, kind=kind, day=day)
    zone = local_zone()
    week = grid["days"]
    listed = posts.list_posts(session, viewer=viewer, kind=kind, limit=300,
                              since=datetime.combine(week[0], datetime.min.time(), tzinfo=zone),
                              until=datetime.combine(week[-1] + timedelta(days=1), datetime.min.time(), tzinfo=zone))
    names = {g.id: g.name for g in service.groups_by_ids(session, {p.group_chat_id for p in listed})}
    scripts = library.scripts_for(session, customer_id=None, account_id=None)
    return render(request, "groups/posts.html", status_code=status_code, nav_active="groups",
                  title=_("Group posts calendar"), kind=kind, grid=grid, week=week, today=local_today(),
                  prev_day=week[0] - timedelta(days=7), next_day=week[0] + timedelta(days=7), posts=listed,
                  group_names=names, reasons={p.id: posts.reason_text(p.reason) for p in listed if p.reason},
                  scripts=scripts, errors=errors or {}, values=values or {},
                  can_edit=viewer.role in registry.EDITING_ROLES, **_labels())


@pages.post("/groups/posts/plans", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def plan_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    kind = _text(form, "kind")
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    values["weekdays"] = [str(v) for v in form.getlist("weekdays")]
    try:
        weekdays = [int(v) for v in form.getlist("weekdays") if isinstance(v, str) and v.isdigit()]
        script = _text(form, "script_id")
        data = posts.PlanIn(kind=kind, slot=_text(form, "slot"), at_time=_text(form, "at_time"),
                            weekdays=weekdays, text=_text(form, "text"),
                            script_id=int(script) if script.isdigit() else None)
        posts.save_plan(session, data=data, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _posts(request, session, viewer, kind=kind, day=None, values=values, status_code=422,
                      errors=field_errors(exc, labels=FIELD_LABELS))
    return RedirectResponse(f"/groups/posts?kind={kind}", status_code=303)


@pages.post("/groups/posts/plans/{plan_id:int}/retire", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def plan_retire(request: Request, session: SessionDep, viewer: PageViewer, plan_id: Id, form: FormDep) -> Response:
    posts.retire_plan(session, plan_id=plan_id, viewer=viewer)
    session.commit()
    return RedirectResponse(f"/groups/posts?kind={_text(form, 'kind')}", status_code=303)


@pages.post("/groups/posts/{post_id:int}/done", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def post_done(request: Request, session: SessionDep, viewer: PageViewer, post_id: Id, form: FormDep) -> Response:
    posts.mark_done(session, post_id=post_id, viewer=viewer)
    session.commit()
    back = _text(form, "next")
    return RedirectResponse(back if back.startswith("/") and not back.startswith("//") else "/groups/posts",
                            status_code=303)


# ---------------------------------------------------------------- welcome templates (console)


@pages.get("/groups/welcome", response_class=HTMLResponse)
def welcome_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _welcome(request, session, viewer)


def _welcome(request: Request, session: Session, viewer: Viewer, *, errors: dict[str, str] | None = None,
             values: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return render(request, "groups/welcome.html", status_code=status_code, nav_active="groups",
                  title=_("Group welcome messages"), templates_list=onboarding.list_welcome_templates(session),
                  limit=onboarding.WELCOME_TEMPLATES_MAX, nickname=onboarding.NICKNAME, errors=errors or {},
                  values=values or {}, can_edit=viewer.role in registry.EDITING_ROLES, **_labels())


@pages.post("/groups/welcome", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def welcome_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    raw_id = _text(form, "template_id")
    try:
        data = onboarding.WelcomeTemplateIn(name=_text(form, "name"), kind=_text(form, "kind"),
                                            text=_text(form, "text"))
        onboarding.save_welcome_template(session, data=data, viewer=viewer,
                                         template_id=int(raw_id) if raw_id.isdigit() else None)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _welcome(request, session, viewer, errors=field_errors(exc, labels=FIELD_LABELS), values=values,
                        status_code=422)
    return RedirectResponse("/groups/welcome", status_code=303)


@pages.post("/groups/welcome/{template_id:int}/delete", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def welcome_delete(request: Request, session: SessionDep, viewer: PageViewer, template_id: Id) -> Response:
    onboarding.delete_welcome_template(session, template_id=template_id, viewer=viewer)
    session.commit()
    return RedirectResponse("/groups/welcome", status_code=303)


# ---------------------------------------------------------------- a group's intake plan (console)


@pages.get("/groups/{group_id:int}/intake", response_class=HTMLResponse)
def intake_page(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    return _intake(request, session, viewer, group)


def _intake(request: Request, session: Session, viewer: Viewer, group: GroupChat, *,
            errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
            status_code: int = 200) -> Response:
    plan = onboarding.intake_plan(session, group=group)
    intake_posts = [p for p in posts.list_posts(session, viewer=viewer, group_id=group.id, limit=50,
                                                since=datetime(2000, 1, 1, tzinfo=local_zone()),
                                                until=datetime(2100, 1, 1, tzinfo=local_zone()))
                    if p.batch is not None]
    return render(request, "groups/intake.html", status_code=status_code, nav_active="groups",
                  title=_("Intake plan"), group=group, plan=plan, welcome=onboarding.template_for_kind(
                      session, group.kind), intake_posts=intake_posts,
                  reasons={p.id: posts.reason_text(p.reason) for p in intake_posts if p.reason},
                  errors=errors or {}, values=values or {}, can_edit=viewer.role in registry.EDITING_ROLES,
                  **_labels())


@pages.post("/groups/{group_id:int}/intake", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def intake_submit(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id,
                  form: FormDep) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        batch = _text(form, "batch")
        data = onboarding.InviteesIn(batch=int(batch) if batch.isdigit() else 0,
                                     customer_ids=_ints(_text(form, "customer_ids"), "customer_ids"),
                                     names=_text(form, "names").splitlines(), note=_text(form, "note"))
        onboarding.add_invitees(session, group=group, data=data, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _intake(request, session, viewer, group, errors=field_errors(exc, labels=FIELD_LABELS),
                       values=values, status_code=422)
    return RedirectResponse(f"/groups/{group.id}/intake", status_code=303)


@pages.post("/groups/{group_id:int}/intake/{invitee_id:int}/status", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def invitee_status_submit(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id, invitee_id: Id,
                          form: FormDep) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    try:
        onboarding.set_invitee_status(session, group=group, invitee_id=invitee_id, status=_text(form, "status"),
                                      viewer=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _intake(request, session, viewer, group, errors=field_errors(exc, labels=FIELD_LABELS),
                       status_code=422)
    return RedirectResponse(f"/groups/{group.id}/intake", status_code=303)


@pages.post("/groups/{group_id:int}/intake/finish", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def intake_finish(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id,
                  form: FormDep) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    batch = _text(form, "batch")
    try:
        onboarding.finish_batch(session, group=group, batch=int(batch) if batch.isdigit() else 0, viewer=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _intake(request, session, viewer, group, errors=field_errors(exc, labels=FIELD_LABELS),
                       status_code=422)
    return RedirectResponse(f"/groups/{group.id}/intake", status_code=303)
