"""Customer groups in the console and the API: the list with filters, one group's members and changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import QueryParams

from siyu.accounts import service as accounts_service
from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.groups import codes, registry, service
from siyu.groups import health as health_service
from siyu.groups import posts as group_posts
from siyu.groups.models import GroupChat, GroupChatStatus, GroupMember
from siyu.groups.schemas import (
    GroupChatOut,
    GroupCodeOut,
    GroupDetailOut,
    GroupMemberOut,
    GroupMembershipOut,
    GroupMessageOut,
    GroupMessagePage,
    GroupPage,
    GroupRegistryIn,
    GroupSnapshotOut,
    GroupTemplateOut,
)
from siyu.groups.service import GroupFilter
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render

api = APIRouter(tags=["groups"])
pages = APIRouter(include_in_schema=False)

LIST_LIMIT = 50
RECENT_CHANGES = 50
RECENT_MESSAGES = 50  # archived messages on the group page, newest first
STATUS_LABELS = {GroupChatStatus.active.value: N_("group_status.active"),
                 GroupChatStatus.dismissed.value: N_("group_status.dismissed")}
JOIN_SCENES = {1: N_("Invited by a member"), 2: N_("Invitation link"), 3: N_("Group QR code")}
QUIT_SCENES = {0: N_("Left"), 1: N_("Removed by the owner")}


def _registry_labels() -> dict[str, Any]:
    return {"kind_labels": {k.value: _(v) for k, v in registry.KIND_LABELS.items()},
            "health_labels": {k.value: _(v) for k, v in registry.HEALTH_LABELS.items()},
            "role_labels": {k.value: _(v) for k, v in registry.ROLE_LABELS.items()},
            "platform_labels": {k.value: _(v) for k, v in registry.PLATFORM_LABELS.items()},
            "suggestions": {k: _(v) for k, v in health_service.SUGGESTIONS.items()},
            "task_labels": {k.value: _(v) for k, v in registry.TASK_LABELS.items()},
            "warn_percent": registry.WARN_PERCENT}


def _labels() -> dict[str, Any]:
    return {"status_labels": {k: _(v) for k, v in STATUS_LABELS.items()},
            "join_scenes": {k: _(v) for k, v in JOIN_SCENES.items()},
            "quit_scenes": {k: _(v) for k, v in QUIT_SCENES.items()}}


# ---------------------------------------------------------------- API


@api.get("/groups", response_model=GroupPage)
def api_list(session: SessionDep, viewer: ApiViewer, account_id: Id | None = None, status: str | None = None,
             name: str = "", kind: str = "", tier: str = "", health: str = "", platform: str = "",
             limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None) -> GroupPage:
    flt = GroupFilter(account_id=account_id, status=status or None, name=name[:100], kind=kind[:30], tier=tier[:32],
                      health=health[:30], platform=platform[:30])
    page = service.list_groups(session, flt=flt, viewer=viewer, limit=limit, cursor=cursor)
    return GroupPage(items=_outs(session, page.items), next_cursor=page.next_cursor)


def _outs(session: Session, groups: list[GroupChat]) -> list[GroupChatOut]:
    figures = registry.figures(session, groups)
    out = []
    for group in groups:
        item = GroupChatOut.model_validate(group)
        fig = figures[group.id]
        item.capacity, item.utilisation, item.expected_name = fig.capacity, fig.utilisation, fig.expected_name
        out.append(item)
    return out


@api.get("/groups/{group_id:int}", response_model=GroupDetailOut)
def api_detail(session: SessionDep, viewer: ApiViewer, group_id: Id) -> GroupDetailOut:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    members = service.current_members(session, group=group)
    live = service.live_customer_ids(session, customer_ids=[m.customer_id for m in members if m.customer_id])
    visible = service.visible_customer_ids(session, customer_ids=live.values(), viewer=viewer)
    out = []
    for member in members:
        item = GroupMemberOut.model_validate(member)
        item.customer_id = live.get(member.customer_id) if member.customer_id else None
        if item.customer_id not in visible:
            item.customer_id = None  # another account's customer is not named to this viewer
        out.append(item)
    return GroupDetailOut(**_outs(session, [group])[0].model_dump(), admin_userids=group.admin_userids,
                          members=out)


@api.get("/groups/{group_id:int}/messages", response_model=GroupMessagePage)
def api_messages(session: SessionDep, viewer: ApiViewer, group_id: int,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None) -> GroupMessagePage:
    """The group's archived messages (会话存档), newest first, cursor-paged."""
    page = service.list_messages(session, group_id=group_id, viewer=viewer, limit=limit, cursor=cursor)
    return GroupMessagePage(items=[GroupMessageOut.model_validate(m) for m in page.items],
                            next_cursor=page.next_cursor)


# ---------------------------------------------------------------- console


@dataclass
class ListQuery:
    """The list's query string as typed, so the form shows exactly what was asked."""

    account_id: str = ""
    status: str = ""
    name: str = ""
    cursor: str = ""
    kind: str = ""
    tier: str = ""
    health: str = ""
    platform: str = ""

    @classmethod
    def from_params(cls, params: QueryParams) -> ListQuery:
        return cls(account_id=params.get("account_id", "").strip(), status=params.get("status", "").strip(),
                   name=params.get("name", "").strip()[:100], cursor=params.get("cursor", "").strip(),
                   kind=params.get("kind", "").strip()[:30], tier=params.get("tier", "").strip()[:32],
                   health=params.get("health", "").strip()[:30], platform=params.get("platform", "").strip()[:30])

    def to_filter(self) -> GroupFilter:
        account_id: Id | None = None
        if self.account_id:
            try:
                account_id = int(self.account_id)
            except ValueError as exc:
                raise Invalid("Unknown account", field="account_id") from exc
        return GroupFilter(account_id=account_id, status=self.status or None, name=self.name, kind=self.kind,
                           tier=self.tier, health=self.health, platform=self.platform)

    def url(self, *, cursor: str | None = None) -> str:
        pairs = [(k, v) for k, v in (("account_id", self.account_id), ("status", self.status), ("name", self.name),
                                     ("kind", self.kind), ("tier", self.tier), ("health", self.health),
                                     ("platform", self.platform), ("cursor", cursor or "")) if v]
        return f"/groups?{urlencode(pairs)}" if pairs else "/groups"

    @property
    def filtered(self) -> bool:
        return bool(self.account_id or self.status or self.name or self.kind or self.tier or self.health
                    or self.platform)


@pages.get("/groups", response_class=HTMLResponse)
def groups_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    query = ListQuery.from_params(request.query_params)
    error: str | None = None
    items: list[Any] = []
    count = 0
    next_cursor: str | None = None
    try:
        flt = query.to_filter()
        count = service.count_groups(session, flt=flt, viewer=viewer)
        page = service.list_groups(session, flt=flt, viewer=viewer, limit=LIST_LIMIT, cursor=query.cursor or None)
        items, next_cursor = page.items, page.next_cursor
    except DomainError as exc:
        session.rollback()
        error = exc.message
    return render(request, "groups/list.html", status_code=422 if error else 200, nav_active="groups",
                  title=_("Groups"), query=query, items=items, count=count, error=error,
                  figures=registry.figures(session, items), **_registry_labels(),
                  next_url=query.url(cursor=next_cursor) if next_cursor else None,
                  first_url=query.url() if query.cursor else None,
                  accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  account_names=customers_service.account_names(session), **_labels())


@dataclass
class MemberRow:
    member: GroupMember
    customer_id: int | None  # the customer as they are now (after any merge)
    customer_name: str
    linked: bool  # the viewer may open the customer's page
    account_name: str  # a corp member who is one of Siyu's accounts


@pages.get("/groups/{group_id:int}", response_class=HTMLResponse)
def group_page(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    members = service.current_members(session, group=group)
    changes = service.recent_changes(session, group=group, limit=RECENT_CHANGES)
    everyone = [*members, *(m for _c, m in changes)]
    live = service.live_customer_ids(session, customer_ids=[m.customer_id for m in everyone if m.customer_id])
    names = service.customer_names(session, customer_ids=live.values())
    visible = service.visible_customer_ids(session, customer_ids=live.values(), viewer=viewer)
    staff = service.staff_accounts(session, userids=[m.userid for m in everyone if m.member_type == 1])

    def row(member: GroupMember) -> MemberRow:
        account = staff.get(member.userid) if member.member_type == 1 else None
        customer_id = live.get(member.customer_id) if member.customer_id else None
        return MemberRow(member=member, customer_id=customer_id, customer_name=names.get(customer_id or 0, ""),
                         linked=customer_id in visible, account_name=account.display_name if account else "")

    messages = service.list_messages(session, group_id=group.id, viewer=viewer, limit=RECENT_MESSAGES,
                                     cursor=request.query_params.get("messages_cursor") or None)
    return _detail(request, session, viewer, group, members=[row(m) for m in members],
                   changes=[(c, row(m)) for c, m in changes], messages=messages)


def _detail(request: Request, session: Session, viewer: Viewer, group: GroupChat, *, members: list[MemberRow],
            changes: list[Any], messages: Any, errors: dict[str, str] | None = None,
            status_code: int = 200) -> Response:
    snapshots = health_service.series(session, group=group)
    chart = health_service.chart(snapshots, {"member_count": _("Members"), "joins": _("Joined"),
                                             "leaves": _("Left the group"), "messages": _("Messages sent")})
    return render(request, "groups/detail.html", status_code=status_code, nav_active="groups",
                  title=group.name or _("Unnamed group"), group=group,
                  account_names=customers_service.account_names(session), messages=messages, members=members,
                  changes=changes, figures=registry.figures(session, [group])[group.id],
                  templates_list=registry.list_templates(session), chart=chart, snapshots=snapshots,
                  qr=codes.current_qr(session, group=group), errors=errors or {},
                  channel_names=customers_service.channel_names(
                      session, states={r.member.state for r in members if r.member.state}),
                  tasks=[t for t in registry.open_tasks(session, viewer=viewer) if t.group_chat_id == group.id],
                  group_posts=group_posts.around(session, group=group),
                  post_labels={k: _(v) for k, v in group_posts.SLOT_LABELS.items()},
                  post_status_labels={k: _(v) for k, v in group_posts.POST_STATUS_LABELS.items()},
                  can_edit=viewer.role in registry.EDITING_ROLES, **_labels(), **_registry_labels())


# ---------------------------------------------------------------- the registry, templates, codes, health (API)


@api.put("/groups/{group_id:int}/registry", response_model=GroupChatOut)
def api_registry(session: SessionDep, viewer: ApiViewer, group_id: Id, data: GroupRegistryIn) -> GroupChatOut:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    registry.update_registry(session, group=group, data=registry.RegistryIn(**data.model_dump()), viewer=viewer)
    session.commit()
    return _outs(session, [group])[0]


@api.post("/groups/personal", response_model=GroupChatOut, status_code=201)
def api_register_personal(session: SessionDep, viewer: ApiViewer, data: registry.PersonalGroupIn) -> GroupChatOut:
    group = registry.register_personal(session, data=data, viewer=viewer)
    session.commit()
    return _outs(session, [group])[0]


@api.get("/groups/{group_id:int}/health", response_model=list[GroupSnapshotOut])
def api_health(session: SessionDep, viewer: ApiViewer, group_id: Id,
               days: Annotated[int, Query(ge=1, le=3650)] = 30) -> list[GroupSnapshotOut]:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    return [GroupSnapshotOut.model_validate(s) for s in health_service.series(session, group=group, days=days)]


@api.get("/customers/{customer_id:int}/groups", response_model=list[GroupMembershipOut])
def api_customer_groups(session: SessionDep, viewer: ApiViewer, customer_id: Id) -> list[GroupMembershipOut]:
    customers_service.get_customer(session, customer_id=customer_id, viewer=viewer)  # 404 for another's customer
    return [GroupMembershipOut(group_id=g.id, name=g.name, kind=g.kind, role=m.role, joined_at=m.join_time,
                               left_at=m.left_at)
            for g, m in registry.memberships(session, customer_id=customer_id, viewer=viewer)]


@api.get("/group-templates", response_model=list[GroupTemplateOut])
def api_templates(session: SessionDep, viewer: ApiViewer) -> list[GroupTemplateOut]:
    return [GroupTemplateOut.model_validate(t) for t in registry.list_templates(session)]


@api.post("/group-templates", response_model=GroupTemplateOut, status_code=201)
def api_template_create(session: SessionDep, viewer: ApiViewer, data: registry.TemplateIn) -> GroupTemplateOut:
    template = registry.save_template(session, data=data, viewer=viewer)
    session.commit()
    return GroupTemplateOut.model_validate(template)


@api.get("/group-codes", response_model=list[GroupCodeOut])
def api_codes(session: SessionDep, viewer: ApiViewer) -> list[GroupCodeOut]:
    return [GroupCodeOut.model_validate(c) for c in codes.list_codes(session, viewer=viewer)]


@api.post("/group-codes", response_model=GroupCodeOut, status_code=201)
def api_code_create(session: SessionDep, viewer: ApiViewer, data: codes.GroupCodeIn) -> GroupCodeOut:
    code = codes.save_code(session, data=data, viewer=viewer)
    session.commit()
    return GroupCodeOut.model_validate(code)


@api.get("/group-codes/{code_id:int}", response_model=GroupCodeOut)
def api_code(session: SessionDep, viewer: ApiViewer, code_id: Id) -> GroupCodeOut:
    return GroupCodeOut.model_validate(codes.get_code(session, code_id=code_id, viewer=viewer))


# ---------------------------------------------------------------- the registry, templates, codes, health (console)

REGISTRY_LABELS = {"kind": N_("Group kind"), "tier": N_("Tier"), "store": N_("Store"), "region": N_("City"),
                   "service_userids": N_("Group customer service"), "naming_template_id": N_("Naming template"),
                   "name": N_("Group name"), "pattern": N_("Pattern"), "brand": N_("Brand"),
                   "next_number": N_("Next number"), "group_ids": N_("Groups in turn"), "state": N_("State"),
                   "room_base_name": N_("New groups' base name"), "room_base_id": N_("First number"),
                   "rotate_percent": N_("Move on at (%)"), "owner_account_id": N_("Owner account"),
                   "member_count": N_("Members"), "file": N_("QR image"), "role": N_("Role")}


def _text(form: Any, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _opt_int(form: Any, key: str) -> int | None:
    value = _text(form, key)
    if not value:
        return None
    if not value.isdigit():
        raise Invalid("Enter a whole number", field=key)
    return int(value)


def _page_group(request: Request, session: Session, viewer: Viewer, group_id: int, *,
                errors: dict[str, str]) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    members = service.current_members(session, group=group)
    rows = [MemberRow(member=m, customer_id=m.customer_id, customer_name="", linked=False, account_name="")
            for m in members]
    messages = service.list_messages(session, group_id=group.id, viewer=viewer, limit=RECENT_MESSAGES)
    return _detail(request, session, viewer, group, members=rows, changes=[], messages=messages, errors=errors,
                   status_code=422)


@pages.post("/groups/{group_id:int}/registry", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def registry_submit(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id,
                    form: FormDep) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    try:
        data = registry.RegistryIn(
            kind=_text(form, "kind"), tier=_text(form, "tier"), store=_text(form, "store"),
            region=_text(form, "region"), fan_owned=bool(_text(form, "fan_owned")),
            service_userids=[u for u in _text(form, "service_userids").replace("，", ",").split(",") if u.strip()],
            naming_template_id=_opt_int(form, "naming_template_id"))
        registry.update_registry(session, group=group, data=data, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _page_group(request, session, viewer, group_id,
                           errors=field_errors(exc, labels=REGISTRY_LABELS, default_field="registry"))
    return RedirectResponse(f"/groups/{group_id}", status_code=303)


@pages.post("/groups/{group_id:int}/members/{member_id:int}/role", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def role_submit(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id, member_id: Id,
                form: FormDep) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    registry.set_member_role(session, group=group, member_id=member_id, role=_text(form, "role"), viewer=viewer)
    session.commit()
    return RedirectResponse(f"/groups/{group_id}#members", status_code=303)


@pages.post("/groups/{group_id:int}/members", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def member_submit(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id,
                  form: FormDep) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    try:
        registry.add_personal_member(session, group=group, name=_text(form, "name"),
                                     customer_id=_opt_int(form, "customer_id"),
                                     role=_text(form, "role") or "member", viewer=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _page_group(request, session, viewer, group_id,
                           errors=field_errors(exc, labels=REGISTRY_LABELS, default_field="member"))
    return RedirectResponse(f"/groups/{group_id}#members", status_code=303)


@pages.post("/groups/{group_id:int}/qr", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def qr_submit(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id, form: FormDep) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    upload = form.get("file")
    try:
        if upload is None or isinstance(upload, str):
            raise Invalid("Upload the QR code as a PNG or JPEG image", field="file")
        codes.upload_qr(session, group=group, stream=upload.file, viewer=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _page_group(request, session, viewer, group_id,
                           errors=field_errors(exc, labels=REGISTRY_LABELS, default_field="file"))
    return RedirectResponse(f"/groups/{group_id}#qr", status_code=303)


@pages.get("/groups/{group_id:int}/qr.png")
def qr_file(session: SessionDep, viewer: PageViewer, group_id: Id) -> Response:
    from siyu.core import storage
    from siyu.core.errors import NotFound

    group = service.get_group(session, group_id=group_id, viewer=viewer)
    qr = codes.current_qr(session, group=group)
    if qr is None or not storage.exists(qr.storage_key):
        raise NotFound("No QR image yet")
    media = "image/png" if qr.storage_key.endswith(".png") else "image/jpeg"
    return Response(storage.get(qr.storage_key), media_type=media)


@pages.get("/groups/templates", response_class=HTMLResponse)
def templates_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _templates(request, session, viewer)


def _templates(request: Request, session: Session, viewer: Viewer, *, errors: dict[str, str] | None = None,
               values: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return render(request, "groups/templates.html", status_code=status_code, nav_active="groups",
                  title=_("Naming templates"), templates_list=registry.list_templates(session),
                  misnamed=registry.misnamed(session, viewer=viewer), errors=errors or {}, values=values or {},
                  variables=list(registry.VARIABLES), can_edit=viewer.role in registry.EDITING_ROLES,
                  **_registry_labels())


@pages.post("/groups/templates", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def template_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        data = registry.TemplateIn(name=_text(form, "name"), pattern=_text(form, "pattern"),
                                   brand=_text(form, "brand"), kind=_text(form, "kind"), tier=_text(form, "tier"),
                                   next_number=_opt_int(form, "next_number") or 1)
        registry.save_template(session, data=data, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _templates(request, session, viewer, errors=field_errors(exc, labels=REGISTRY_LABELS),
                          values=values, status_code=422)
    return RedirectResponse("/groups/templates", status_code=303)


@pages.get("/groups/health", response_class=HTMLResponse)
def health_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return render(request, "groups/health.html", nav_active="groups", title=_("Group health"),
                  rows=health_service.by_kind(session, viewer=viewer),
                  unhealthy=health_service.unhealthy(session, viewer=viewer),
                  account_names=customers_service.account_names(session), **_registry_labels())


@pages.get("/groups/tasks", response_class=HTMLResponse)
def tasks_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    tasks = registry.open_tasks(session, viewer=viewer)
    names = {g.id: g.name for g in service.groups_by_ids(session, [t.group_chat_id for t in tasks
                                                                   if t.group_chat_id])}
    return render(request, "groups/tasks.html", nav_active="groups", title=_("Group tasks"), tasks=tasks,
                  group_names=names, **_registry_labels())


@pages.post("/groups/tasks/{task_id:int}/done", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def task_done(request: Request, session: SessionDep, viewer: PageViewer, task_id: Id, form: FormDep) -> Response:
    registry.finish_task(session, task_id=task_id, viewer=viewer)
    session.commit()
    back = "/today" if _text(form, "next") == "/today" else "/groups/tasks"  # 今日任务 lists group tasks too
    return RedirectResponse(back, status_code=303)


@pages.get("/groups/personal/new", response_class=HTMLResponse)
def personal_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _personal(request, session, viewer)


def _personal(request: Request, session: Session, viewer: Viewer, *, errors: dict[str, str] | None = None,
              values: dict[str, str] | None = None, problems: list[Any] | None = None,
              status_code: int = 200) -> Response:
    return render(request, "groups/personal.html", status_code=status_code, nav_active="groups",
                  title=_("Personal WeChat groups"), errors=errors or {}, values=values or {},
                  problems=problems or [], accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  templates_list=registry.list_templates(session), columns=list(registry.IMPORT_COLUMNS),
                  **_registry_labels())


@pages.post("/groups/personal", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def personal_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        data = registry.PersonalGroupIn(
            name=_text(form, "name"), owner_account_id=_opt_int(form, "owner_account_id") or 0,
            kind=_text(form, "kind"), tier=_text(form, "tier"), store=_text(form, "store"),
            region=_text(form, "region"), member_count=_opt_int(form, "member_count") or 0,
            fan_owned=bool(_text(form, "fan_owned")), naming_template_id=_opt_int(form, "naming_template_id"))
        group = registry.register_personal(session, data=data, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _personal(request, session, viewer, errors=field_errors(exc, labels=REGISTRY_LABELS), values=values,
                         status_code=422)
    return RedirectResponse(f"/groups/{group.id}", status_code=303)


@pages.post("/groups/personal/import", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def personal_import(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    upload = form.get("file")
    raw = upload.file.read(IMPORT_MAX_BYTES + 1) if upload is not None and not isinstance(upload, str) else b""
    if len(raw) > IMPORT_MAX_BYTES:
        raise Invalid("The file is larger than {mb} MB; split it into smaller files", field="file",
                      mb=IMPORT_MAX_BYTES // (1024 * 1024))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030", errors="replace")
    result = registry.import_personal(session, text=text, viewer=viewer)
    if result.problems:
        session.rollback()
        return _personal(request, session, viewer, problems=result.problems, status_code=422)
    session.commit()
    return RedirectResponse("/groups?platform=personal", status_code=303)


@pages.get("/groups/codes", response_class=HTMLResponse)
def codes_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _codes(request, session, viewer)


def _codes(request: Request, session: Session, viewer: Viewer, *, errors: dict[str, str] | None = None,
           values: dict[str, str] | None = None, status_code: int = 200) -> Response:
    from siyu.channels import service as channels_service

    groups = service.list_groups(session, flt=GroupFilter(status="active", platform="wecom"), viewer=viewer,
                                 limit=200).items
    return render(request, "groups/codes.html", status_code=status_code, nav_active="groups",
                  title=_("Group codes"), codes_list=codes.list_codes(session, viewer=viewer), groups=groups,
                  channels=channels_service.list_channels(session, viewer=viewer), errors=errors or {},
                  values=values or {}, can_edit=viewer.role in registry.EDITING_ROLES)


@pages.post("/groups/codes", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def code_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        group_ids = [int(v) for v in form.getlist("group_ids") if isinstance(v, str) and v.isdigit()]
        data = codes.GroupCodeIn(name=_text(form, "name"), group_ids=group_ids,
                                 channel_id=_opt_int(form, "channel_id"), state=_text(form, "state"),
                                 auto_create=bool(_text(form, "auto_create")),
                                 room_base_name=_text(form, "room_base_name"),
                                 room_base_id=_opt_int(form, "room_base_id") or 1,
                                 rotate_percent=_opt_int(form, "rotate_percent") or registry.WARN_PERCENT)
        code = codes.save_code(session, data=data, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _codes(request, session, viewer, errors=field_errors(exc, labels=REGISTRY_LABELS), values=values,
                      status_code=422)
    return RedirectResponse(f"/groups/codes/{code.id}", status_code=303)


@pages.get("/groups/codes/{code_id:int}", response_class=HTMLResponse)
def code_page(request: Request, session: SessionDep, viewer: PageViewer, code_id: Id) -> Response:
    code = codes.get_code(session, code_id=code_id, viewer=viewer)
    groups = service.groups_by_ids(session, code.group_ids or [])
    by_id = {g.id: g for g in groups}
    ordered = [by_id[i] for i in code.group_ids or [] if i in by_id]
    return render(request, "groups/code.html", nav_active="groups", title=code.name, code=code, groups=ordered,
                  figures=registry.figures(session, ordered), joins=codes.joins_by_group(session, code=code),
                  **_registry_labels(), **_labels())


@pages.get("/groups/codes/{code_id:int}/poster.png")
def code_poster(session: SessionDep, viewer: PageViewer, code_id: Id) -> Response:
    from siyu.channels import images
    from siyu.core.errors import NotFound

    code = codes.get_code(session, code_id=code_id, viewer=viewer)
    if not code.qr_url:
        raise NotFound("The group code has no QR yet: WeCom makes it once the code is connected")
    try:
        body = images.poster_png(title=code.name, incentive=_("Scan to join the group"), qr_data=code.qr_url)
    except images.FontMissing as exc:
        raise NotFound("No Chinese font is installed on the server (fonts-noto-cjk); the poster cannot be drawn") \
            from exc
    return Response(body, media_type="image/png",
                    headers={"Content-Disposition": f'inline; filename="group-code-{code.id}.png"'})


IMPORT_MAX_BYTES = 2 * 1024 * 1024
