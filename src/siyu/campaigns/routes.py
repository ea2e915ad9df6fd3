"""Campaigns (群发): the API (``/api/v1/campaigns``) and the console (``/campaigns``: list, new, detail).

Page and API share the service. Anyone signed in reads campaigns (the customers at each step only on
the viewer's accounts); administrators and planners create, remind, cancel and copy them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy import func, select

from siyu.campaigns import service
from siyu.campaigns.models import (
    CAMPAIGN_STATUS_LABELS,
    HOLDOUT_MAX,
    HOLDOUT_MIN,
    RECIPIENT_STATUS_LABELS,
    TASK_STATE_LABELS,
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    RecipientStatus,
)
from siyu.campaigns.schemas import (
    CampaignEdit,
    CampaignIn,
    CampaignItem,
    CampaignList,
    CouponsOut,
    OverQuotaOut,
    PlanOut,
)
from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid, validation_message
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["campaigns"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
OVER_QUOTA_SHOWN = 200


def _item(campaign: Campaign, figures: service.Figures) -> CampaignItem:
    return CampaignItem(id=campaign.id, name=campaign.name, status=campaign.status, targeted=figures.targeted,
                        over_quota=figures.over_quota, delivered=figures.delivered, engaged=figures.engaged,
                        buyers=figures.buyers, revenue=figures.revenue)


def _plan_out(plan: service.Plan, campaign: Campaign | None) -> PlanOut:
    return PlanOut(id=campaign.id if campaign else None, status=campaign.status if campaign else "dry_run",
                   segment_size=plan.segment_size, holdout=len(plan.holdout), over_quota=len(plan.over_quota),
                   unreachable=len(plan.unreachable), targeted=plan.targeted, variants=plan.variant_counts(),
                   wecom_tasks=sum(1 for a, _v, _n, _ids in plan.chunks() if plan.channels[a] == "wecom"),
                   personal_tasks=sum(1 for a, _v, _n, _ids in plan.chunks() if plan.channels[a] == "personal"),
                   over_quota_customers=[OverQuotaOut(customer_id=c, reason=r)
                                         for c, r in sorted(plan.over_quota.items())[:OVER_QUOTA_SHOWN]],
                   coupons=CouponsOut(batch_id=plan.coupons.batch_id, batch_name=plan.coupons.batch_name,
                                      needed=plan.coupons.needed, free=plan.coupons.free, error=plan.coupons.error)
                   if plan.coupons is not None else None)


@api.get("/campaigns", response_model=CampaignList)
def list_campaigns(session: SessionDep, viewer: ApiViewer) -> CampaignList:
    """Every campaign with its numbers: targeted, left out over quota, delivered, engaged, buyers, revenue."""
    campaigns = service.list_campaigns(session, viewer=viewer)
    figures = service.summary_counts(session, [c.id for c in campaigns])
    return CampaignList(items=[_item(c, figures[c.id]) for c in campaigns])


@api.post("/campaigns", response_model=PlanOut, responses={404: {"description": "The segment was not found"}})
def create_campaign(session: SessionDep, viewer: ApiViewer, data: CampaignIn) -> PlanOut:
    """Plan a mass send to a segment. ``dry_run``: the quota check and the split, nothing created."""
    campaign, plan = service.create_campaign(session, data=data, viewer=viewer)
    if data.dry_run:
        session.rollback()
    else:
        session.commit()
    return _plan_out(plan, campaign)


@api.get("/campaigns/{campaign_id}", response_model=CampaignItem)
def get_campaign(session: SessionDep, viewer: ApiViewer, campaign_id: Id) -> CampaignItem:
    campaign = service.get_campaign(session, campaign_id=campaign_id)
    return _item(campaign, service.numbers(session, campaign)["all"])


@api.patch("/campaigns/{campaign_id}", response_model=CampaignItem)
def edit_campaign(session: SessionDep, viewer: ApiViewer, campaign_id: Id, data: CampaignEdit) -> CampaignItem:
    """Name and copy of a campaign not sent yet; a sent one answers 409 (copy it instead)."""
    campaign = service.update_campaign(session, campaign_id=campaign_id, data=data, viewer=viewer)
    session.commit()
    return _item(campaign, service.numbers(session, campaign)["all"])


@api.post("/campaigns/{campaign_id}/remind")
def remind_campaign(session: SessionDep, viewer: ApiViewer, campaign_id: Id) -> dict[str, int]:
    check_action(session, service.get_campaign(session, campaign_id=campaign_id), "remind")
    reminded = service.remind(session, campaign_id=campaign_id, viewer=viewer)
    session.commit()
    return {"reminded": reminded}


@api.post("/campaigns/{campaign_id}/cancel")
def cancel_campaign(session: SessionDep, viewer: ApiViewer, campaign_id: Id) -> dict[str, int]:
    """Cancel a scheduled campaign, or stop one still going out; a finished one is refused (422)."""
    check_action(session, service.get_campaign(session, campaign_id=campaign_id), "cancel")
    stopped = service.cancel(session, campaign_id=campaign_id, viewer=viewer)
    session.commit()
    return {"stopped": stopped}


# ---------------------------------------------------------------- console


def _ids(text: str) -> list[int]:
    parts = [p.strip() for p in text.replace("，", ",").replace(" ", ",").split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise Invalid("Write ids as numbers separated by commas", field="material_ids")
    return [int(p) for p in parts]


def _form_values(form: Any) -> dict[str, Any]:
    return {name: str(form.get(name, "") or "") for name in
            ("name", "segment_id", "text", "text_b", "material_ids", "holdout_percent", "window_days",
             "scheduled_at", "coupon_batch_id")}


def form_to_campaign(values: dict[str, Any], *, dry_run: bool) -> CampaignIn:
    when = values["scheduled_at"].strip()
    scheduled: datetime | None = None
    if when:
        try:
            scheduled = datetime.fromisoformat(when).replace(tzinfo=local_zone())
        except ValueError as exc:
            raise Invalid("Write the time as YYYY-MM-DD HH:MM", field="scheduled_at") from exc
    try:
        return CampaignIn.model_validate({
            "name": values["name"], "segment_id": values["segment_id"] or 0, "text": values["text"],
            "text_b": values["text_b"], "material_ids": _ids(values["material_ids"]),
            "holdout_percent": values["holdout_percent"] or 0, "window_days": values["window_days"] or 7,
            "scheduled_at": scheduled, "dry_run": dry_run,
            "coupon_batch_id": values.get("coupon_batch_id") or None})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error.get("loc", ()))
        raise Invalid("{field}: {message}", field=where, message=validation_message(dict(error))) from exc


def _labels() -> dict[str, Any]:
    return {"status_labels": {k.value: _(v) for k, v in CAMPAIGN_STATUS_LABELS.items()},
            "recipient_labels": {k.value: _(v) for k, v in RECIPIENT_STATUS_LABELS.items()},
            "task_labels": {k.value: _(v) for k, v in TASK_STATE_LABELS.items()},
            "holdout_min": HOLDOUT_MIN, "holdout_max": HOLDOUT_MAX}


def _new_page(request: Request, session: Any, viewer: Viewer, values: dict[str, Any], *, error: str = "",
              plan: PlanOut | None = None, status_code: int = 200) -> Response:
    from siyu.coupons import service as coupons_service
    from siyu.segments import service as segments_service

    segments = segments_service.list_segments(session, viewer=viewer)
    batches = coupons_service.list_batches(session)
    return render(request, "campaigns/new.html", nav_active="campaigns", title=_("New mass send"), values=values,
                  error=error, plan=plan, segments=segments, batches=batches, status_code=status_code, **_labels())


@pages.get("/campaigns", response_class=HTMLResponse)
def campaigns_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    campaigns = service.list_campaigns(session, viewer=viewer)
    figures = service.summary_counts(session, [c.id for c in campaigns])
    return render(request, "campaigns/list.html", nav_active="campaigns", title=_("Mass sends"),
                  campaigns=campaigns, figures=figures, **_labels())


@pages.get("/campaigns/new", response_class=HTMLResponse)
def new_campaign_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    values = {"name": "", "segment_id": request.query_params.get("segment_id", ""), "text": "", "text_b": "",
              "material_ids": "", "holdout_percent": "0", "window_days": "7", "scheduled_at": "",
              "coupon_batch_id": request.query_params.get("coupon_batch_id", "")}
    copy_of = request.query_params.get("copy", "")
    if copy_of.isdigit():
        values = {k: str(v) for k, v in service.copy_values(
            service.get_campaign(session, campaign_id=int(copy_of))).items()}
    return _new_page(request, session, viewer, values)


@pages.post("/campaigns/new", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def new_campaign_post(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    """Save and send (or schedule) the campaign, or (the check button) show the quota check and split."""
    values = _form_values(form)
    dry_run = str(form.get("action", "") or "") == "dry_run"
    try:
        data = form_to_campaign(values, dry_run=dry_run)
        campaign, plan = service.create_campaign(session, data=data, viewer=viewer)
    except DomainError as exc:
        session.rollback()
        return _new_page(request, session, viewer, values, error=exc.message, status_code=exc.status_code)
    if dry_run or campaign is None:
        session.rollback()
        return _new_page(request, session, viewer, values, plan=_plan_out(plan, None))
    session.commit()
    return RedirectResponse(f"/campaigns/{campaign.id}", status_code=303)


def status_actions(session: Any, campaign: Campaign) -> frozenset[str]:
    """The console's actions for where the campaign stands, so a button is never offered that can do nothing:
    scheduled → edit or cancel; still going out (some tasks not created, or members who have not sent theirs)
    → remind and stop, and read the results; finished (every member sent or nothing is left) or cancelled →
    the results and a copy only."""
    if campaign.status == CampaignStatus.scheduled.value:
        return frozenset({"edit", "cancel", "copy"})
    if campaign.status == CampaignStatus.cancelled.value:
        return frozenset({"results", "copy"})
    open_rows = dict(session.execute(
        select(CampaignRecipient.status, func.count()).where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.status.in_([RecipientStatus.planned.value, RecipientStatus.waiting.value]))
        .group_by(CampaignRecipient.status)).tuples().all())
    if campaign.status == CampaignStatus.sending.value or open_rows:
        going = {"stop", "results", "copy"}
        return frozenset(going | ({"remind"} if open_rows.get(RecipientStatus.waiting.value) else set()))
    return frozenset({"results", "copy"})


def check_action(session: Any, campaign: Campaign, action: str) -> None:
    """Refuse a remind or a stop the campaign's status no longer allows (the page does not offer it)."""
    wanted = {"cancel", "stop"} if action == "cancel" else {action}
    if not wanted & status_actions(session, campaign):
        raise Invalid("Nothing is left to stop or remind: every member has sent it, or it was cancelled")


def _detail(request: Request, session: Any, viewer: Viewer, campaign: Campaign, *, error: str = "",
            message: str = "", status_code: int = 200) -> Response:
    figures = service.numbers(session, campaign)
    total = figures["all"]
    step = request.query_params.get("step", "delivered")
    if step not in service.STEPS:
        step = "delivered"
    after_text = request.query_params.get("after", "0")
    rows = service.step_page(session, campaign, step, viewer, after=int(after_text) if after_text.isdigit() else 0)
    funnel = {"reached": _("Customers"), "current": _("Customers"),
              "items": [{"name": label, "value": value, "current": value} for label, value in (
                  (_("Targeted"), total.targeted), (_("Delivered"), total.delivered),
                  (_("Engaged within 48 h"), total.engaged), (_("Buyers"), total.buyers))]}
    steps = [("targeted", _("Targeted"), total.targeted), ("delivered", _("Delivered"), total.delivered),
             ("engaged", _("Engaged within 48 h"), total.engaged), ("buyers", _("Buyers"), total.buyers),
             ("deleted", _("Deleted us within 48 h"), total.deleted), ("holdout", _("Hold-out"), total.holdout),
             ("over_quota", _("Over quota, left out"), total.over_quota),
             ("unreachable", _("No account to send from"), total.unreachable)]
    variants = [(k, v) for k, v in figures.items() if k != "all"]
    tasks = service.tasks_of(session, campaign.id)
    from siyu.accounts.models import Account

    account_names = {a.id: a.display_name for a in session.query(Account).filter(
        Account.id.in_({t.account_id for t in tasks}))} if tasks else {}
    coupons = None
    if campaign.coupon_batch_id is not None:
        from siyu.campaigns import rewards
        from siyu.coupons import service as coupons_service

        batch = coupons_service.get_batch(session, batch_id=campaign.coupon_batch_id)
        coupons = (batch, *rewards.figures(session, campaign_id=campaign.id, batch_id=batch.id))
    return render(request, "campaigns/detail.html", nav_active="campaigns", title=campaign.name, campaign=campaign,
                  total=total, variants=variants, funnel=funnel, steps=steps, step=step, rows=rows,
                  tasks=tasks, account_names=account_names, error=error, coupons=coupons,
                  message=message or request.query_params.get("message", ""), status_code=status_code,
                  page_size=service.PAGE, actions=status_actions(session, campaign), **_labels())


@pages.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(request: Request, session: SessionDep, viewer: PageViewer, campaign_id: Id) -> Response:
    return _detail(request, session, viewer, service.get_campaign(session, campaign_id=campaign_id))


@pages.post("/campaigns/{campaign_id}", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def campaign_edit(request: Request, session: SessionDep, viewer: PageViewer, campaign_id: Id,
                  form: FormDep) -> Response:
    data = CampaignEdit(name=str(form.get("name", "") or "") or None, text=form.get("text"),
                        text_b=form.get("text_b"))
    try:
        service.update_campaign(session, campaign_id=campaign_id, data=data, viewer=viewer)
    except DomainError as exc:
        session.rollback()
        return _detail(request, session, viewer, service.get_campaign(session, campaign_id=campaign_id),
                       error=exc.message, status_code=exc.status_code)
    session.commit()
    return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)


@pages.post("/campaigns/{campaign_id}/{action}", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def campaign_action(request: Request, session: SessionDep, viewer: PageViewer, campaign_id: Id, action: str,
                    form: FormDep) -> Response:
    """Remind the members, cancel, send a due campaign now, or read back the results."""
    campaign = service.get_campaign(session, campaign_id=campaign_id)
    try:
        if action in ("remind", "cancel"):
            check_action(session, campaign, action)
        if action == "remind":
            message = _("Reminded {n} members", n=service.remind(session, campaign_id=campaign.id, viewer=viewer))
        elif action == "cancel":
            message = _("Stopped: {n} customers will not get it",
                        n=service.cancel(session, campaign_id=campaign.id, viewer=viewer))
        elif action == "results":
            if campaign.status in (CampaignStatus.sending.value, CampaignStatus.scheduled.value):
                service.send_campaign(session, campaign.id)
            run = service.read_results(session, campaign.id)
            message = _("Results read: {n} newly delivered", n=run.delivered)
        else:
            raise Invalid("Unknown action")
    except DomainError as exc:
        session.rollback()
        return _detail(request, session, viewer, service.get_campaign(session, campaign_id=campaign_id),
                       error=exc.message, status_code=exc.status_code)
    session.commit()
    return RedirectResponse(f"/campaigns/{campaign_id}?{urlencode({'message': message})}", status_code=303)


@pages.get("/campaigns/{campaign_id}/export.csv")
def campaign_export(request: Request, session: SessionDep, viewer: PageViewer, campaign_id: Id) -> Response:
    """The customers at one step of the funnel as CSV (the viewer's accounts only)."""
    campaign = service.get_campaign(session, campaign_id=campaign_id)
    step = request.query_params.get("step", "delivered")
    service.step_query(session, campaign, step, viewer)  # refuses an unknown step before streaming
    name = f"campaign-{campaign.id}-{step}.csv"
    return StreamingResponse(service.export_rows(session, campaign, step, viewer), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
