"""群规 in the console and the API: rules (edit, dry run), findings with evidence (feedback, pardon), the
blacklist (appeal, pardon), the whitelist, imports of personal groups' chat exports, and the page that maps
the rules onto WeCom's own 防骚扰 settings. Thin: every rule lives in ``service``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.core.viewer import Viewer
from siyu.groups import service as groups_service
from siyu.groups.moderation import service
from siyu.groups.moderation.models import BlacklistStatus, ModerationFinding, ModerationRule
from siyu.groups.moderation.schemas import (
    AppealIn,
    BlacklistOut,
    DryRunIn,
    EvidenceOut,
    FeedbackIn,
    FindingOut,
    FindingPage,
    IntakeCheckIn,
    IntakeCheckOut,
    PardonIn,
    RuleIn,
    RuleOut,
)
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["group moderation"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]
PAGE_SIZE = 50
MAX_EXPORT_BYTES = 20 * 1024 * 1024

# WeCom's own 防骚扰 rules (admin console › 客户联系 › 客户群 › 防骚扰; no API sets them, PLATFORM.md "Groups"):
# what each watches, and which of Siyu's rule types it matches. WeCom removes the member itself when the corp
# switches removal on — the automatic removal Siyu cannot do.
WECOM_SETTINGS = [
    ("link", "ad", N_("Sending links or mini programs"), "ad"),
    ("card", "ad", N_("Sending contact cards"), "ad"),
    ("image", "ad", N_("Sending images (a QR code in an image)"), "ad"),
    ("words", "banned_words", N_("Messages with sensitive words"), "banned_words"),
    ("frequency", "flood", N_("Sending too often"), "flood"),
    ("length", "flood", N_("Messages that are too long"), ""),
    ("blacklist", "blacklist", N_("The group blacklist (refused when joining)"), ""),
]


def _labels() -> dict[str, Any]:
    return {"kind_labels": {k: _(v) for k, v in service.RULE_KIND_LABELS.items()},
            "group_kinds": {k: _(v) for k, v in service.GROUP_KINDS.items()},
            "action_labels": {k: _(v) for k, v in service.ACTION_LABELS.items()},
            "status_labels": {k: _(v) for k, v in service.STATUS_LABELS.items()},
            "finding_labels": {k: _(v) for k, v in service.FINDING_STATUS_LABELS.items()}}


def _rule_out(rule: ModerationRule, counts: dict[int, tuple[int, int]]) -> RuleOut:
    out = RuleOut.model_validate(rule)
    out.findings, out.false_positives = counts.get(rule.id, (0, 0))
    return out


def _finding_out(finding: ModerationFinding, names: dict[int, str]) -> FindingOut:
    return FindingOut(id=finding.id, rule_id=finding.rule_id,
                      rule_name=names.get(finding.rule_id or 0, "") or _(service.RULE_KIND_LABELS.get(
                          finding.rule_kind, finding.rule_kind)),
                      rule_kind=finding.rule_kind, group_id=finding.group_chat_id,
                      member_userid=finding.member_userid, member_name=finding.member_name,
                      customer_id=finding.customer_id,
                      evidence_message_ids=[e.get("msgid", "") for e in finding.evidence if e.get("msgid")],
                      evidence=[EvidenceOut(msgid=str(e.get("msgid", "")), at=str(e.get("at", "")),
                                            type=str(e.get("type", "")), text=str(e.get("text", "")))
                                for e in finding.evidence],
                      detail=finding.detail, offence=finding.offence, actions=finding.actions,
                      task_id=finding.task_id, status=finding.status, occurred_at=finding.occurred_at)


# ---------------------------------------------------------------- API


@api.get("/group-rules", response_model=list[RuleOut])
def api_rules(session: SessionDep, viewer: ApiViewer) -> list[RuleOut]:
    counts = service.rule_counts(session)
    return [_rule_out(r, counts) for r in service.list_rules(session)]


@api.post("/group-rules", response_model=RuleOut, status_code=201)
def api_create_rule(session: SessionDep, viewer: ApiViewer, data: RuleIn) -> RuleOut:
    rule = service.save_rule(session, data=data, viewer=viewer)
    session.commit()
    return _rule_out(rule, {})


@api.put("/group-rules/{rule_id}", response_model=RuleOut)
def api_update_rule(session: SessionDep, viewer: ApiViewer, rule_id: Id, data: RuleIn) -> RuleOut:
    rule = service.save_rule(session, data=data, viewer=viewer, rule_id=rule_id)
    session.commit()
    return _rule_out(rule, service.rule_counts(session))


@api.post("/group-rules/{rule_id}/dry-run")
def api_dry_run(session: SessionDep, viewer: ApiViewer, rule_id: Id, data: DryRunIn | None = None
                ) -> dict[str, Any]:
    """What the rule would have found over the last N days (default 7), before it goes live."""
    summary = service.dry_run(session, rule_id=rule_id, days=(data or DryRunIn()).days, viewer=viewer)
    session.commit()
    return summary


@api.get("/groups/{group_id}/findings", response_model=FindingPage)
def api_group_findings(session: SessionDep, viewer: ApiViewer, group_id: Id, status: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
                       cursor: str | None = None) -> FindingPage:
    """The group's moderation findings, newest first: rule, evidence message ids, the actions taken."""
    page = service.list_findings(session, flt=service.FindingFilter(group_id=group_id, status=status or None),
                                 viewer=viewer, limit=limit, cursor=cursor)
    names = service.rule_names(session)
    return FindingPage(items=[_finding_out(f, names) for f in page.items], next_cursor=page.next_cursor)


@api.post("/group-findings/{finding_id}/false-positive", response_model=FindingOut)
def api_false_positive(session: SessionDep, viewer: ApiViewer, finding_id: Id,
                       data: FeedbackIn | None = None) -> FindingOut:
    finding = service.mark_false_positive(session, finding_id=finding_id, note=(data or FeedbackIn()).note,
                                          viewer=viewer)
    session.commit()
    return _finding_out(finding, service.rule_names(session))


@api.post("/group-findings/{finding_id}/pardon", response_model=FindingOut)
def api_pardon_finding(session: SessionDep, viewer: ApiViewer, finding_id: Id, data: PardonIn) -> FindingOut:
    finding = service.pardon_finding(session, finding_id=finding_id, reason=data.reason, viewer=viewer)
    session.commit()
    return _finding_out(finding, service.rule_names(session))


@api.get("/group-blacklist", response_model=list[BlacklistOut])
def api_blacklist(session: SessionDep, viewer: ApiViewer, status: str | None = None) -> list[BlacklistOut]:
    if status and status not in {s.value for s in BlacklistStatus}:
        raise Invalid("Unknown status {status}", field="status", status=status[:20])
    return [BlacklistOut.model_validate(e) for e in service.list_blacklist(session, viewer=viewer,
                                                                          status=status or None)]


@api.post("/group-blacklist/check", response_model=IntakeCheckOut)
def api_intake_check(session: SessionDep, viewer: ApiViewer, data: IntakeCheckIn) -> IntakeCheckOut:
    """Which of these people a group's intake must refuse (on the blacklist and not pardoned)."""
    return IntakeCheckOut(refused=sorted(service.refused(session, data.userids)))


@api.post("/group-blacklist/{entry_id}/appeal", response_model=BlacklistOut)
def api_appeal(session: SessionDep, viewer: ApiViewer, entry_id: Id, data: AppealIn) -> BlacklistOut:
    entry = service.appeal(session, entry_id=entry_id, text=data.text, viewer=viewer)
    session.commit()
    return BlacklistOut.model_validate(entry)


@api.post("/group-blacklist/{entry_id}/pardon", response_model=BlacklistOut)
def api_pardon_entry(session: SessionDep, viewer: ApiViewer, entry_id: Id, data: PardonIn) -> BlacklistOut:
    entry = service.pardon_entry(session, entry_id=entry_id, reason=data.reason, viewer=viewer)
    session.commit()
    return BlacklistOut.model_validate(entry)


@api.post("/groups/{group_id}/chat-export")
def api_import_export(session: SessionDep, viewer: ApiViewer, group_id: Id,
                      file: Annotated[UploadFile, File()]) -> dict[str, int]:
    """A personal group's chat export (TXT or CSV): stored as the group's messages and moderated."""
    data = file.file.read(MAX_EXPORT_BYTES + 1)
    result = service.import_group_export(session, group_id=group_id, data=data, viewer=viewer)
    session.commit()
    return result


# ---------------------------------------------------------------- console


def _rules_page(request: Request, session: Session, viewer: Viewer, *, error: str = "", message: str = "",
                rule: ModerationRule | None = None, status_code: int = 200) -> Response:
    counts = service.rule_counts(session)
    return render(request, "groups/moderation/rules.html", status_code=status_code, nav_active="group_rules",
                  title=_("Group rules"), rules=service.list_rules(session), counts=counts, error=error,
                  message=message, editing=rule, whitelist=service.whitelist(session),
                  manager=viewer.sees_all_accounts, evidence_time=service.evidence_time, **_labels())


@pages.get("/groups/rules", response_class=HTMLResponse)
def rules_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _rules_page(request, session, viewer)


@pages.get("/groups/rules/wecom", response_class=HTMLResponse)
def wecom_settings_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    live = [r for r in service.list_rules(session) if r.status == "live"]
    rows = [{"key": key, "label": _(label), "matches": [r for r in live if r.kind == kind], "kind": kind}
            for key, kind, label, _k in WECOM_SETTINGS]
    return render(request, "groups/moderation/wecom.html", nav_active="group_rules",
                  title=_("WeCom's anti-harassment settings"), rows=rows, **_labels())


@pages.get("/groups/rules/{rule_id}", response_class=HTMLResponse)
def rule_page(request: Request, session: SessionDep, viewer: PageViewer, rule_id: Id) -> Response:
    return _rules_page(request, session, viewer, rule=service.get_rule(session, rule_id=rule_id))


def _rule_from_form(form: Any) -> RuleIn:
    kind = str(form.get("kind", "") or "")
    params: dict[str, Any] = {}
    for name in ("minutes", "min_yuan", "min_people", "count", "seconds", "parts"):
        raw = str(form.get(name, "") or "").strip()
        if raw:
            params[name] = raw
    for name in ("words", "ad_words", "pattern", "example"):
        raw = str(form.get(name, "") or "")
        if raw.strip():
            params[name] = raw
    params["images"] = form.get("images") == "on"
    params["urls"] = form.get("urls", "on") == "on"
    ladder = [[a.strip() for a in line.replace("，", ",").split(",") if a.strip()]
              for line in str(form.get("ladder", "") or "").splitlines() if line.strip()]
    return RuleIn(name=str(form.get("name", "") or "").strip(), kind=kind,
                  group_kind=str(form.get("group_kind", "") or "") or None, params=params, ladder=ladder,
                  warn_text=str(form.get("warn_text", "") or ""), status=str(form.get("status", "draft") or "draft"))


@pages.post("/groups/rules", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def rules_save(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    raw_id = str(form.get("rule_id", "") or "").strip()
    try:
        rule_id = int(raw_id) if raw_id else None
        rule = service.save_rule(session, data=_rule_from_form(form), viewer=viewer, rule_id=rule_id)
    except (ValidationError, ValueError, DomainError) as exc:
        session.rollback()
        error = exc.message if isinstance(exc, DomainError) else _("Check the name, the type and the numbers")
        return _rules_page(request, session, viewer, error=error,
                           status_code=exc.status_code if isinstance(exc, DomainError) else 422)
    session.commit()
    return RedirectResponse(f"/groups/rules/{rule.id}", status_code=303)


@pages.post("/groups/rules/{rule_id}/status", dependencies=[FormRead, CsrfChecked])
def rules_status(request: Request, session: SessionDep, viewer: PageViewer, rule_id: Id, form: FormDep) -> Response:
    service.set_status(session, rule_id=rule_id, status=str(form.get("status", "") or ""), viewer=viewer)
    session.commit()
    return RedirectResponse(f"/groups/rules/{rule_id}", status_code=303)


@pages.post("/groups/rules/{rule_id}/dry-run", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def rules_dry_run(request: Request, session: SessionDep, viewer: PageViewer, rule_id: Id, form: FormDep) -> Response:
    try:
        days = int(str(form.get("days", "7") or "7"))
        service.dry_run(session, rule_id=rule_id, days=days, viewer=viewer)
    except (ValueError, DomainError) as exc:
        session.rollback()
        error = exc.message if isinstance(exc, DomainError) else _("A dry run covers 1 to 30 days")
        return _rules_page(request, session, viewer, rule=service.get_rule(session, rule_id=rule_id), error=error,
                           status_code=422)
    session.commit()
    return RedirectResponse(f"/groups/rules/{rule_id}#dry-run", status_code=303)


@pages.post("/groups/whitelist", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def whitelist_add(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    try:
        service.add_whitelisted(session, userid=str(form.get("userid", "") or ""),
                                note=str(form.get("note", "") or ""), viewer=viewer)
    except DomainError as exc:
        session.rollback()
        return _rules_page(request, session, viewer, error=exc.message, status_code=exc.status_code)
    session.commit()
    return RedirectResponse("/groups/rules#whitelist", status_code=303)


@pages.post("/groups/whitelist/{entry_id}/delete", dependencies=[FormRead, CsrfChecked])
def whitelist_remove(request: Request, session: SessionDep, viewer: PageViewer, entry_id: Id) -> Response:
    service.remove_whitelisted(session, entry_id=entry_id, viewer=viewer)
    session.commit()
    return RedirectResponse("/groups/rules#whitelist", status_code=303)


def _findings_page(request: Request, session: Session, viewer: Viewer, *, error: str = "", message: str = "",
                   status_code: int = 200) -> Response:
    params = request.query_params
    flt = service.FindingFilter(admin_only=params.get("alerts") == "1", status=params.get("status") or None)
    group = None
    items: list[ModerationFinding] = []
    next_url = None
    try:
        if params.get("group_id"):
            flt.group_id = int(params["group_id"])
            group = groups_service.get_group(session, group_id=flt.group_id, viewer=viewer)
        if params.get("rule_id"):
            flt.rule_id = int(params["rule_id"])
        page = service.list_findings(session, flt=flt, viewer=viewer, limit=PAGE_SIZE,
                                     cursor=params.get("cursor") or None)
        items = page.items
        if page.next_cursor:
            next_url = "/groups/findings?" + urlencode({**dict(params), "cursor": page.next_cursor})
    except ValueError:
        error, status_code = _("Check the filters"), 422
    except DomainError as exc:
        if exc.status_code == 404:
            raise
        error, status_code = exc.message, exc.status_code
    groups = {f.group_chat_id for f in items}
    names = {g: (groups_service.get_group(session, group_id=g, viewer=viewer).name or str(g)) for g in groups}
    return render(request, "groups/moderation/findings.html", status_code=status_code, nav_active="group_findings",
                  title=_("Findings"), items=items, rule_names=service.rule_names(session), group_names=names,
                  group=group, flt=flt, error=error, message=message, next_url=next_url,
                  is_admin=viewer.is_admin, evidence_time=service.evidence_time, **_labels())


@pages.get("/groups/findings", response_class=HTMLResponse)
def findings_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _findings_page(request, session, viewer)


def _back(form: Any) -> str:
    target = str(form.get("next", "") or "")
    return target if target.startswith("/groups/findings") else "/groups/findings"


@pages.post("/groups/findings/{finding_id}/false-positive", dependencies=[FormRead, CsrfChecked])
def finding_false_positive(request: Request, session: SessionDep, viewer: PageViewer, finding_id: Id,
                           form: FormDep) -> Response:
    service.mark_false_positive(session, finding_id=finding_id, note=str(form.get("note", "") or ""), viewer=viewer)
    session.commit()
    return RedirectResponse(_back(form), status_code=303)


@pages.post("/groups/findings/{finding_id}/pardon", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def finding_pardon(request: Request, session: SessionDep, viewer: PageViewer, finding_id: Id,
                   form: FormDep) -> Response:
    try:
        service.pardon_finding(session, finding_id=finding_id, reason=str(form.get("reason", "") or ""),
                               viewer=viewer)
    except DomainError as exc:
        session.rollback()
        if exc.status_code == 404:
            raise
        return _findings_page(request, session, viewer, error=exc.message, status_code=exc.status_code)
    session.commit()
    return RedirectResponse(_back(form), status_code=303)


@pages.post("/groups/{group_id}/chat-export", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def group_export_upload(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id) -> Response:
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise Invalid("Choose a file", field="file")
    data = await upload.read(MAX_EXPORT_BYTES + 1)
    result = service.import_group_export(session, group_id=group_id, data=data, viewer=viewer)
    session.commit()
    query = urlencode({"group_id": group_id, "imported": result["new_messages"], "found": result["findings"]})
    return RedirectResponse(f"/groups/findings?{query}", status_code=303)


@pages.get("/groups/blacklist", response_class=HTMLResponse)
def blacklist_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return render(request, "groups/moderation/blacklist.html", nav_active="group_blacklist", title=_("Blacklist"),
                  entries=service.list_blacklist(session, viewer=viewer), is_admin=viewer.is_admin,
                  statuses={k: _(v) for k, v in service.BLACKLIST_LABELS.items()})


@pages.post("/groups/blacklist/{entry_id}/appeal", dependencies=[FormRead, CsrfChecked])
def blacklist_appeal(request: Request, session: SessionDep, viewer: PageViewer, entry_id: Id,
                     form: FormDep) -> Response:
    service.appeal(session, entry_id=entry_id, text=str(form.get("text", "") or ""), viewer=viewer)
    session.commit()
    return RedirectResponse("/groups/blacklist", status_code=303)


@pages.post("/groups/blacklist/{entry_id}/pardon", dependencies=[FormRead, CsrfChecked])
def blacklist_pardon(request: Request, session: SessionDep, viewer: PageViewer, entry_id: Id,
                     form: FormDep) -> Response:
    service.pardon_entry(session, entry_id=entry_id, reason=str(form.get("reason", "") or ""), viewer=viewer)
    session.commit()
    return RedirectResponse("/groups/blacklist", status_code=303)

