"""Auto-reply rules in the console and the API: list, edit (new version), dry run, switches."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from siyu.accounts import service as accounts_service
from siyu.autoreply import incidents, service
from siyu.autoreply.incidents import IncidentIn
from siyu.autoreply.models import AutoReplyRule, AutoReplyRuleVersion, MatchKind
from siyu.autoreply.service import RuleIn
from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_id
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render

api = APIRouter(tags=["auto-reply"])
pages = APIRouter(include_in_schema=False)

KIND_LABELS = {
    MatchKind.contains.value: N_("Message contains a keyword"),
    MatchKind.exact.value: N_("Message is exactly a keyword"),
    MatchKind.regex.value: N_("Regular expression"),
    MatchKind.outside_hours.value: N_("Outside service hours"),
}
INCIDENT_LABELS = {"title": N_("Title"), "rule_version_id": N_("Rule version"), "message_id": N_("Message"),
                   "since": N_("From"), "until": N_("To"), "correction": N_("Correction")}
FIELD_LABELS = {"name": N_("Item name"), "account_id": N_("Account"), "match_kind": N_("Match"),
                "keywords": N_("Keywords"), "pattern": N_("Pattern"), "hours": N_("Service hours"),
                "priority": N_("Priority"), "reply": N_("Reply"), "hourly_cap": N_("At most per hour")}


class RuleOut(BaseModel):
    id: int
    name: str
    account_id: int | None
    enabled: bool
    paused_at: datetime | None
    paused_reason: str
    version_id: int | None
    version: int | None
    match_kind: str | None
    keywords: list[str]
    pattern: str
    priority: int | None
    reply: str
    menu: dict[str, Any] | None = None
    hourly_cap: int | None
    dry_run_seen: bool


class DryRunOut(BaseModel):
    scanned: int
    matched: int
    customers: int
    days: int
    examples: list[dict[str, Any]]


def _rule_out(rule: AutoReplyRule, version: AutoReplyRuleVersion | None) -> RuleOut:
    return RuleOut(id=rule.id, name=rule.name, account_id=rule.account_id, enabled=rule.enabled,
                   paused_at=rule.paused_at, paused_reason=rule.paused_reason,
                   version_id=version.id if version else None, version=version.version if version else None,
                   match_kind=version.match_kind if version else None,
                   keywords=version.keywords if version else [], pattern=version.pattern if version else "",
                   priority=version.priority if version else None, reply=version.reply if version else "",
                   menu=version.menu if version else None, hourly_cap=version.hourly_cap if version else None,
                   dry_run_seen=rule.dry_run_version_id is not None
                   and rule.dry_run_version_id == rule.current_version_id)


# ---------------------------------------------------------------- API


@api.get("/autoreply/rules", response_model=dict[str, list[RuleOut]])
def api_rules(session: SessionDep, viewer: ApiViewer) -> dict[str, list[RuleOut]]:
    return {"items": [_rule_out(r, v) for r, v in service.list_rules(session, viewer=viewer)]}


@api.post("/autoreply/rules", response_model=RuleOut, status_code=201)
def api_create(session: SessionDep, viewer: ApiViewer, data: RuleIn) -> RuleOut:
    rule = service.save_rule(session, data=data, viewer=viewer)
    session.commit()
    return _rule_out(rule, service.current_version(session, rule))


@api.put("/autoreply/rules/{rule_id}", response_model=RuleOut)
def api_update(session: SessionDep, viewer: ApiViewer, rule_id: Id, data: RuleIn) -> RuleOut:
    rule = service.save_rule(session, data=data, viewer=viewer, rule_id=rule_id)
    session.commit()
    return _rule_out(rule, service.current_version(session, rule))


@api.post("/autoreply/rules/{rule_id}/dry-run", response_model=DryRunOut)
def api_dry_run(session: SessionDep, viewer: ApiViewer, rule_id: Id, days: int = service.DRY_RUN_DAYS) -> DryRunOut:
    result = service.dry_run(session, rule_id=rule_id, viewer=viewer, days=max(1, min(days, 30)))
    session.commit()
    return DryRunOut(scanned=result.scanned, matched=result.matched, customers=result.customers, days=result.days,
                     examples=[{"message_id": h.message_id, "customer_id": h.customer_id, "text": h.text,
                                "reply": h.reply, "sent_at": h.sent_at.isoformat()} for h in result.hits])


@api.post("/autoreply/rules/{rule_id}/enabled", response_model=RuleOut)
def api_enable(session: SessionDep, viewer: ApiViewer, rule_id: Id, enabled: bool) -> RuleOut:
    rule = service.set_enabled(session, rule_id=rule_id, enabled=enabled, viewer=viewer)
    session.commit()
    return _rule_out(rule, service.current_version(session, rule))


@api.post("/autoreply/accounts/{account_id}/enabled", response_model=dict[str, Any])
def api_account_switch(session: SessionDep, viewer: ApiViewer, account_id: Id, enabled: bool) -> dict[str, Any]:
    switch = service.set_account_switch(session, account_id=account_id, enabled=enabled, viewer=viewer)
    session.commit()
    return {"account_id": account_id, "enabled": switch.enabled}


# ---------------------------------------------------------------- console


def _list_page(request: Request, session: Session, viewer: Viewer, *, notice: str = "") -> Response:
    rules = service.list_rules(session, viewer=viewer)
    accounts = accounts_service.visible_accounts(session, viewer=viewer)
    return render(request, "autoreply/rules.html", nav_active="autoreply", title=_("Auto-replies"), rules=rules,
                  accounts=accounts, off=service.switched_off_accounts(session), notice=notice,
                  kind_labels={k: _(v) for k, v in KIND_LABELS.items()},
                  sends={r.id: service.sends_last_hour(session, rule_id=r.id) for r, _v in rules},
                  account_names={a.id: a.display_name for a in accounts})


@pages.get("/autoreply", response_class=HTMLResponse)
def rules_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _list_page(request, session, viewer)


def _form_values(form: Any) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


def _rule_in(values: dict[str, str]) -> RuleIn:
    keywords = [k for line in values.get("keywords", "").splitlines() for k in line.replace("，", ",").split(",")]
    hours = None
    if values.get("match_kind") == MatchKind.outside_hours.value:
        hours = {"start": values.get("hours_start", ""), "end": values.get("hours_end", "")}
    account = values.get("account_id", "")
    return RuleIn.model_validate({
        "name": values.get("name", "").strip(), "account_id": parse_id(account),
        "match_kind": values.get("match_kind", ""), "keywords": keywords, "pattern": values.get("pattern", ""),
        "hours": hours, "priority": values.get("priority") or 100, "reply": values.get("reply", "").strip(),
        "hourly_cap": values.get("hourly_cap") or 100,
    })


def _editor(request: Request, session: Session, viewer: Viewer, *, rule: AutoReplyRule | None,
            values: dict[str, str], errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return render(request, "autoreply/edit.html", status_code=status_code, nav_active="autoreply",
                  title=_("Edit auto-reply") if rule else _("New auto-reply"), rule=rule, values=values,
                  errors=errors or {}, accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  kind_labels={k: _(v) for k, v in KIND_LABELS.items()},
                  labels={k: _(v) for k, v in FIELD_LABELS.items()})


# ---------------------------------------------------------------- incidents


def _local_input(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=local_zone()) if value else None
    except ValueError:
        return None


def _incident_in(values: dict[str, str]) -> IncidentIn:
    version = values.get("rule_version_id", "")
    message = values.get("message_id", "")
    return IncidentIn.model_validate({
        "title": values.get("title", "").strip() or _("Correction"),
        "rule_version_id": parse_id(version),
        "message_id": parse_id(message),
        "since": _local_input(values.get("since", "")), "until": _local_input(values.get("until", "")),
        "correction": values.get("correction", "").strip() or "-"})


@pages.get("/autoreply/incidents", response_class=HTMLResponse)
def incidents_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    values = {k: v for k, v in request.query_params.items()}
    preview = None
    error = None
    start = values.get("from_message", "")
    if start:  # "this reply is wrong" on a bubble in the inbox
        try:
            values = incidents.prefill_from_message(
                session, message_id=int(start) if start.isdigit() else 0, viewer=viewer)
        except DomainError as exc:
            error = exc.message
    if values.get("since") and (values.get("rule_version_id") or values.get("message_id")):
        try:
            data = _incident_in(values)
            preview = (*incidents.recipients_preview(session, data=data, viewer=viewer),
                       incidents.unreached(session, data=data, viewer=viewer))
        except (ValidationError, DomainError) as exc:
            error = "; ".join(field_errors(exc, labels=INCIDENT_LABELS).values())
    return _incidents_page(request, session, viewer, values=values, preview=preview, error=error)


def _incidents_page(request: Request, session: Session, viewer: Viewer, *, values: dict[str, str],
                    preview: Any = None, error: str | None = None, status_code: int = 200) -> Response:
    versions = [(rule, v) for rule, _current in service.list_rules(session, viewer=viewer)
                for v in service.versions_of(session, rule)]
    now = datetime.now(local_zone())
    values.setdefault("until", now.strftime("%Y-%m-%dT%H:%M"))
    values.setdefault("since", (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    return render(request, "autoreply/incidents.html", status_code=status_code, nav_active="autoreply",
                  title=_("Incidents"), versions=versions, values=values, preview=preview, error=error,
                  items=incidents.list_incidents(session))


@pages.post("/autoreply/incidents", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def incident_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = _form_values(form)
    try:
        incident = incidents.open_incident(session, data=_incident_in(values), viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _incidents_page(request, session, viewer, values=values, status_code=422,
                               error="; ".join(field_errors(exc, labels=INCIDENT_LABELS).values()))
    return RedirectResponse(f"/autoreply/incidents/{incident.id}", status_code=303)


@pages.get("/autoreply/incidents/{incident_id}", response_class=HTMLResponse)
def incident_page(request: Request, session: SessionDep, viewer: PageViewer, incident_id: Id) -> Response:
    incident, counts, rows = incidents.incident_report(session, incident_id=incident_id, viewer=viewer)
    from siyu.customers.models import Customer

    ids = [r[0].customer_id for r in rows if r[0].customer_id]
    names = {c.id: c.name for c in session.query(Customer).filter(Customer.id.in_(ids))} if ids else {}
    return render(request, "autoreply/incident.html", nav_active="autoreply", title=incident.title,
                  incident=incident, counts=counts, rows=rows, names=names)


@pages.get("/autoreply/new", response_class=HTMLResponse)
def new_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _editor(request, session, viewer, rule=None, values={"match_kind": "contains", "priority": "100",
                                                               "hourly_cap": "100"})


@pages.get("/autoreply/{rule_id}", response_class=HTMLResponse)
def edit_page(request: Request, session: SessionDep, viewer: PageViewer, rule_id: Id) -> Response:
    rule = service.get_rule(session, rule_id=rule_id, viewer=viewer)
    version = service.current_version(session, rule)
    hours = version.hours or {}
    values = {"name": rule.name, "account_id": str(rule.account_id or ""), "match_kind": version.match_kind,
              "keywords": "\n".join(version.keywords), "pattern": version.pattern, "priority": str(version.priority),
              "reply": version.reply, "hourly_cap": str(version.hourly_cap),
              "hours_start": str(hours.get("start", "")), "hours_end": str(hours.get("end", ""))}
    return _editor(request, session, viewer, rule=rule, values=values)


@pages.post("/autoreply/save", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def save_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = _form_values(form)
    rule_id = parse_id(values.get("rule_id", ""))
    rule = service.get_rule(session, rule_id=rule_id, viewer=viewer) if rule_id else None
    try:
        saved = service.save_rule(session, data=_rule_in(values), viewer=viewer, rule_id=rule_id)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _editor(request, session, viewer, rule=rule, values=values, status_code=422,
                       errors=field_errors(exc, labels=FIELD_LABELS))
    return RedirectResponse(f"/autoreply/{saved.id}/dry-run", status_code=303)


@pages.get("/autoreply/{rule_id}/dry-run", response_class=HTMLResponse)
def dry_run_page(request: Request, session: SessionDep, viewer: PageViewer, rule_id: Id) -> Response:
    result = service.dry_run(session, rule_id=rule_id, viewer=viewer)
    session.commit()  # records that this version's dry run has been seen
    rule = service.get_rule(session, rule_id=rule_id, viewer=viewer)
    from siyu.customers.models import Customer

    ids = [h.customer_id for h in result.hits if h.customer_id]
    names = {c.id: c.name for c in session.query(Customer).filter(Customer.id.in_(ids))} if ids else {}
    return render(request, "autoreply/dry_run.html", nav_active="autoreply", title=_("Dry run"), rule=rule,
                  version=service.current_version(session, rule), result=result, names=names)


@pages.post("/autoreply/{rule_id}/enabled", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def enable_submit(request: Request, session: SessionDep, viewer: PageViewer, rule_id: Id,
                  form: FormDep) -> Response:
    service.set_enabled(session, rule_id=rule_id, enabled=form.get("enabled") == "1", viewer=viewer)
    session.commit()
    return RedirectResponse("/autoreply", status_code=303)


@pages.post("/autoreply/accounts/{account_id}/enabled", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def account_switch_submit(request: Request, session: SessionDep, viewer: PageViewer, account_id: Id,
                          form: FormDep) -> Response:
    service.set_account_switch(session, account_id=account_id, enabled=form.get("enabled") == "1", viewer=viewer)
    session.commit()
    return RedirectResponse("/autoreply", status_code=303)
