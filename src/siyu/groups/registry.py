"""The group registry: what each group is for, who runs it, what it should be called, how full it is.

Why it is shaped this way: the seed manual runs groups by kind (the five 社群种类) and tier
(金粉群 / 创富孵化群), with uniform names such as "金万家郑州中心创富孵化群3". WeCom has **no API to
rename a group** (PLATFORM.md), so a naming template never renames anything: it numbers new groups
and lists the groups whose name breaks it, with the expected name, as the owner's task. Personal
WeChat groups have no API at all; they are registered by hand or imported with the same fields.

Capacity follows the platform: a WeCom customer group holds 200 members once WeChat users are in
it and 500 with WeCom users only; a personal WeChat group holds 500. Utilisation at 90 % warns.

Every function works in the caller's transaction and never commits.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.db import utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound, validation_message
from siyu.core.i18n import N_
from siyu.core.viewer import Viewer
from siyu.groups.models import (
    GroupChat,
    GroupChatStatus,
    GroupHealth,
    GroupKind,
    GroupMember,
    GroupNamingTemplate,
    GroupPlatform,
    GroupTask,
    GroupTaskKind,
    MemberRole,
    MemberType,
)
from siyu.team import service as team_service

# Capacity (PLATFORM.md "Groups", from WeCom's own guide 客户群人数上限): 200 members when WeChat users
# are in the group, 500 when only WeCom users are.
WECOM_CAPACITY_WITH_WECHAT = 200
WECOM_CAPACITY_WECOM_ONLY = 500
# A personal WeChat group: 500 members (微信帮助中心 "群聊人数上限").
WECHAT_GROUP_CAPACITY = 500
WARN_PERCENT = 90  # utilisation that warns the owner (and moves a group code on, groups.codes)
EDITING_ROLES = ("admin", "planner", "operator")

KIND_LABELS = {GroupKind.product: N_("group_kind.product"), GroupKind.interest: N_("group_kind.interest"),
               GroupKind.knowledge: N_("group_kind.knowledge"), GroupKind.network: N_("group_kind.network"),
               GroupKind.marketing: N_("group_kind.marketing")}
HEALTH_LABELS = {GroupHealth.active: N_("group_health.active"), GroupHealth.silent: N_("group_health.silent"),
                 GroupHealth.dead: N_("group_health.dead")}
ROLE_LABELS = {MemberRole.owner: N_("member_role.owner"), MemberRole.admin: N_("member_role.admin"),
               MemberRole.service: N_("member_role.service"), MemberRole.colleague: N_("member_role.colleague"),
               MemberRole.partner: N_("member_role.partner"), MemberRole.member: N_("member_role.member")}
PLATFORM_LABELS = {GroupPlatform.wecom: N_("group_platform.wecom"),
                   GroupPlatform.personal: N_("group_platform.personal")}
TASK_LABELS = {GroupTaskKind.renew_qr: N_("Renew the group's QR image"),
               GroupTaskKind.apply_resources: N_("Apply for the operations centre's resources"),
               GroupTaskKind.codes_full: N_("Every group of the group code is full"),
               GroupTaskKind.rename: N_("Rename the group to its template"),
               GroupTaskKind.post: N_("Post to the group by hand")}
# Roles a person gives by hand; owner, admin and service follow the group's settings.
HAND_ROLES = (MemberRole.colleague.value, MemberRole.partner.value, MemberRole.member.value)

# The template variables (中文, as operators write them) → the group's field.
VARIABLES = {"品牌": "brand", "城市": "region", "门店": "store", "层级": "tier", "编号": "number"}
_VARIABLE = re.compile(r"\{([^{}]*)\}")


class TemplateNotFound(NotFound):
    pass


def require_editor(viewer: Viewer) -> None:
    if viewer.role not in EDITING_ROLES:
        raise Forbidden("Your role may not change groups")


# ---------------------------------------------------------------- naming templates


class TemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    pattern: str = Field(min_length=1, max_length=100)
    brand: str = Field(default="", max_length=32)
    kind: str = ""
    tier: str = Field(default="", max_length=32)
    next_number: int = Field(default=1, ge=1, le=1_000_000)

    @field_validator("name", "pattern", "brand", "tier")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def check_pattern(pattern: str) -> None:
    unknown = [v for v in _VARIABLE.findall(pattern) if v not in VARIABLES]
    if unknown:
        raise Invalid("Unknown variable {{{name}}} in the naming template", field="pattern", name=unknown[0])
    if "{编号}" not in pattern:
        raise Invalid("A naming template needs {{编号}} so every group gets its own name", field="pattern")


def save_template(session: Session, *, data: TemplateIn, viewer: Viewer,
                  template_id: int | None = None) -> GroupNamingTemplate:
    require_editor(viewer)
    check_pattern(data.pattern)
    if data.kind and data.kind not in {k.value for k in GroupKind}:
        raise Invalid("Unknown value {value}", field="kind", value=data.kind[:30])
    clash = session.scalar(select(GroupNamingTemplate).where(GroupNamingTemplate.name == data.name))
    template = session.get(GroupNamingTemplate, template_id) if template_id else GroupNamingTemplate()
    if template is None:
        raise TemplateNotFound("Naming template not found")
    if clash is not None and clash is not template:
        raise Invalid("A naming template called {name} exists", field="name", name=data.name)
    before = {"name": template.name, "pattern": template.pattern} if template_id else None
    for key, value in data.model_dump().items():
        setattr(template, key, value)
    if template_id is None:
        session.add(template)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="update" if template_id else "create",
                              entity_type="group_template", entity_id=template.id, entity_name=template.name,
                              before=before, after={"name": template.name, "pattern": template.pattern})
    return template


def list_templates(session: Session) -> list[GroupNamingTemplate]:
    return list(session.scalars(select(GroupNamingTemplate).order_by(GroupNamingTemplate.name)))


def render_name(pattern: str, values: dict[str, Any]) -> str:
    """The pattern with each {变量} replaced (an empty value leaves nothing)."""
    return _VARIABLE.sub(lambda m: str(values.get(VARIABLES.get(m.group(1), ""), "") or ""), pattern)


def _values(group: GroupChat, template: GroupNamingTemplate) -> dict[str, Any]:
    return {"brand": template.brand, "region": group.region, "store": group.store, "tier": group.tier,
            "number": group.number if group.number is not None else ""}


def expected_name(group: GroupChat, templates: dict[int, GroupNamingTemplate]) -> str:
    """What the group should be called under its template ("" without one)."""
    template = templates.get(group.naming_template_id or 0)
    return render_name(template.pattern, _values(group, template)) if template is not None else ""


def number_in_name(template: GroupNamingTemplate, group: GroupChat) -> int | None:
    """The {编号} an existing name already carries, when the rest of it follows the template."""
    values = _values(group, template)
    parts: list[str] = []
    last = 0
    for found in _VARIABLE.finditer(template.pattern):
        parts.append(re.escape(template.pattern[last:found.start()]))
        key = VARIABLES.get(found.group(1), "")
        parts.append(r"(?P<number>\d+)" if key == "number" else re.escape(str(values.get(key) or "")))
        last = found.end()
    parts.append(re.escape(template.pattern[last:]))
    matched = re.fullmatch("".join(parts), group.name.strip())
    return int(matched.group("number")) if matched else None


def apply_template(session: Session, *, group: GroupChat, template: GroupNamingTemplate | None) -> None:
    """Put the group under a template: it keeps the number its name carries, or gets the next one."""
    group.naming_template_id = template.id if template else None
    if template is None:
        group.number = None
        return
    number = number_in_name(template, group)
    if number is None:
        number = template.next_number
    template.next_number = max(template.next_number, number + 1)
    group.number = number


def templates_by_id(session: Session) -> dict[int, GroupNamingTemplate]:
    return {t.id: t for t in list_templates(session)}


def misnamed(session: Session, *, viewer: Viewer) -> list[tuple[GroupChat, str]]:
    """Active groups whose name breaks their template, with the name they should have."""
    from siyu.groups.queries import visible_group_clause

    templates = templates_by_id(session)
    query = select(GroupChat).where(GroupChat.naming_template_id.is_not(None),
                                    GroupChat.status == GroupChatStatus.active.value)
    scope = visible_group_clause(viewer)
    if scope is not None:
        query = query.where(scope)
    out = []
    for group in session.scalars(query.order_by(GroupChat.id)):
        want = expected_name(group, templates)
        if want and want != group.name.strip():
            out.append((group, want))
    return out


# ---------------------------------------------------------------- capacity


def external_counts(session: Session, group_ids: Iterable[int]) -> dict[int, int]:
    """Current external (WeChat) members per group."""
    ids = sorted(set(group_ids))
    if not ids:
        return {}
    rows = session.execute(select(GroupMember.group_chat_id, func.count()).where(
        GroupMember.group_chat_id.in_(ids), GroupMember.left_at.is_(None),
        GroupMember.member_type == MemberType.external.value).group_by(GroupMember.group_chat_id))
    return {gid: int(n) for gid, n in rows}


def capacity(group: GroupChat, externals: int) -> int:
    if group.platform == GroupPlatform.personal.value:
        return WECHAT_GROUP_CAPACITY
    return WECOM_CAPACITY_WITH_WECHAT if externals else WECOM_CAPACITY_WECOM_ONLY


def utilisation(member_count: int, cap: int) -> int:
    """Percent full, rounded down."""
    return member_count * 100 // cap if cap else 0


# ---------------------------------------------------------------- the registry fields


class RegistryIn(BaseModel):
    kind: str = ""
    tier: str = Field(default="", max_length=32)
    store: str = Field(default="", max_length=64)
    region: str = Field(default="", max_length=64)
    service_userids: list[str] = Field(default_factory=list, max_length=20)
    fan_owned: bool = False
    naming_template_id: int | None = None

    @field_validator("tier", "store", "region")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("service_userids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(v.strip()[:64] for v in value if v and v.strip()))


def _check_kind(kind: str) -> None:
    if kind and kind not in {k.value for k in GroupKind}:
        raise Invalid("Unknown value {value}", field="kind", value=kind[:30])


def update_registry(session: Session, *, group: GroupChat, data: RegistryIn, viewer: Viewer) -> GroupChat:
    require_editor(viewer)
    _check_kind(data.kind)
    template = None
    if data.naming_template_id is not None:
        template = session.get(GroupNamingTemplate, data.naming_template_id)
        if template is None:
            raise Invalid("Naming template not found", field="naming_template_id")
    fields = ("kind", "tier", "store", "region", "service_userids", "fan_owned", "naming_template_id")
    before = {f: getattr(group, f) for f in fields}
    for name in fields[:-1]:
        setattr(group, name, getattr(data, name))
    if template is None or template.id != before["naming_template_id"]:
        apply_template(session, group=group, template=template)
    assign_roles(group, list(session.scalars(select(GroupMember).where(
        GroupMember.group_chat_id == group.id, GroupMember.left_at.is_(None)))))
    group.updated_at = utcnow()
    session.flush()
    after = {f: getattr(group, f) for f in fields}
    if after != before:
        team_service.record_audit(session, actor=viewer, action="update", entity_type="group_chat",
                                  entity_id=group.id, entity_name=group.name, before=before, after=after)
    return group


def assign_roles(group: GroupChat, current: list[GroupMember]) -> None:
    """Owner, admins and 群客服 follow the group; other staff are colleagues; a hand-given role stays."""
    admins, service = set(group.admin_userids or []), set(group.service_userids or [])
    for member in current:
        if member.userid == group.owner_userid:
            role = MemberRole.owner.value
        elif member.userid in admins:
            role = MemberRole.admin.value
        elif member.userid in service:
            role = MemberRole.service.value
        elif member.role in HAND_ROLES and member.role != MemberRole.member.value:
            role = member.role
        else:
            role = MemberRole.colleague.value if member.member_type == MemberType.staff else MemberRole.member.value
        if member.role != role:
            member.role = role


def set_member_role(session: Session, *, group: GroupChat, member_id: int, role: str, viewer: Viewer) -> GroupMember:
    require_editor(viewer)
    if role not in HAND_ROLES:
        raise Invalid("Only colleague, partner or member can be given by hand", field="role")
    member = session.get(GroupMember, member_id)
    if member is None or member.group_chat_id != group.id or member.left_at is not None:
        raise NotFound("Member not found")
    before = member.role
    member.role = role
    assign_roles(group, [member])
    session.flush()
    if member.role != before:
        team_service.record_audit(session, actor=viewer, action="update", entity_type="group_chat",
                                  entity_id=group.id, entity_name=group.name,
                                  before={"member": member.name or member.userid, "role": before},
                                  after={"member": member.name or member.userid, "role": member.role})
    return member


# ---------------------------------------------------------------- personal WeChat groups


class PersonalGroupIn(RegistryIn):
    name: str = Field(min_length=1, max_length=255)
    owner_account_id: int
    member_count: int = Field(default=0, ge=0, le=WECHAT_GROUP_CAPACITY)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return value.strip()


def register_personal(session: Session, *, data: PersonalGroupIn, viewer: Viewer, audit: bool = True) -> GroupChat:
    """A personal-WeChat group (no API: the owner's account and the figures are typed in)."""
    require_editor(viewer)
    _check_kind(data.kind)
    account = session.get(Account, data.owner_account_id)
    if account is None or not viewer.can_see_account(account.id):
        raise Invalid("Unknown account", field="owner_account_id")
    if not data.name:
        raise Invalid("The group needs a name", field="name")
    now = utcnow()
    group = GroupChat(chat_id=f"personal:{secrets.token_hex(12)}", name=data.name, owner_userid="",
                      owner_account_id=account.id, notice="", admin_userids=[], status=GroupChatStatus.active.value,
                      member_count=data.member_count, customer_count=0, member_version="", created_at=now,
                      updated_at=now, platform=GroupPlatform.personal.value, kind=data.kind, tier=data.tier,
                      store=data.store, region=data.region, service_userids=data.service_userids,
                      fan_owned=data.fan_owned, health=GroupHealth.active.value)
    session.add(group)
    session.flush()
    if data.naming_template_id is not None:
        template = session.get(GroupNamingTemplate, data.naming_template_id)
        if template is None:
            raise Invalid("Naming template not found", field="naming_template_id")
        apply_template(session, group=group, template=template)
    if audit:
        team_service.record_audit(session, actor=viewer, action="create", entity_type="group_chat",
                                  entity_id=group.id, entity_name=group.name,
                                  after={"platform": group.platform, "kind": group.kind, "tier": group.tier})
    return group


def add_personal_member(session: Session, *, group: GroupChat, name: str, customer_id: int | None, role: str,
                        viewer: Viewer) -> GroupMember:
    """A member of a personal group, typed in (linked to a customer when known)."""
    from siyu.customers.models import Customer

    require_editor(viewer)
    if group.platform != GroupPlatform.personal.value:
        raise Invalid("Members of a WeCom group come from WeCom", field="name")
    if role not in {r.value for r in MemberRole}:
        raise Invalid("Unknown value {value}", field="role", value=role[:30])
    name = name.strip()[:128]
    if customer_id is not None:
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise Invalid("Customer not found", field="customer_id")
        name = name or customer.name
    if not name:
        raise Invalid("The member needs a name", field="name")
    member = GroupMember(group_chat_id=group.id, userid=f"p{secrets.token_hex(8)}", name=name,
                         member_type=MemberType.external.value, customer_id=customer_id, join_time=utcnow(),
                         role=role)
    session.add(member)
    session.flush()
    group.member_count = int(session.scalar(select(func.count()).select_from(GroupMember).where(
        GroupMember.group_chat_id == group.id, GroupMember.left_at.is_(None))) or 0)
    group.customer_count = int(session.scalar(select(func.count()).select_from(GroupMember).where(
        GroupMember.group_chat_id == group.id, GroupMember.left_at.is_(None),
        GroupMember.customer_id.is_not(None))) or 0)
    group.updated_at = utcnow()
    return member


# CSV import: the same all-or-nothing rigour as the other imports (every problem by row and column).
IMPORT_COLUMNS = {"群名称": "name", "群主账号": "owner", "类型": "kind", "层级": "tier", "门店": "store",
                  "城市": "region", "人数": "member_count", "命名规则": "template"}
IMPORT_MAX_ROWS = 5000
KIND_BY_LABEL = {"产品型": "product", "兴趣型": "interest", "知识型": "knowledge", "资源人脉型": "network",
                 "营销型": "marketing"}


@dataclass
class ImportProblem:
    row: int
    column: str
    message: str


@dataclass
class ImportResult:
    created: list[int] = field(default_factory=list)
    problems: list[ImportProblem] = field(default_factory=list)


def import_personal(session: Session, *, text: str, viewer: Viewer) -> ImportResult:
    """Personal groups from a CSV (header row in Chinese, ``IMPORT_COLUMNS``); nothing is created when any row is
    wrong, and every wrong cell is reported as row + column."""
    require_editor(viewer)
    result = ImportResult()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in ("群名称", "群主账号") if c not in header]
    if missing:
        result.problems.append(ImportProblem(1, missing[0], "missing column"))
        return result
    unknown = [h for h in header if h and h not in IMPORT_COLUMNS]
    if unknown:
        result.problems.append(ImportProblem(1, unknown[0], "unknown column"))
        return result
    accounts = {a.display_name: a.id for a in session.scalars(select(Account))}
    accounts.update({str(a.id): a.id for a in session.scalars(select(Account))})
    templates = {t.name: t.id for t in list_templates(session)}
    rows: list[PersonalGroupIn] = []
    for number, raw in enumerate(reader, start=2):
        if not any(cell.strip() for cell in raw):
            continue
        if number - 1 > IMPORT_MAX_ROWS:
            result.problems.append(ImportProblem(number, "", f"more than {IMPORT_MAX_ROWS} rows"))
            break
        cells = {IMPORT_COLUMNS[h]: (raw[i].strip() if i < len(raw) else "") for i, h in enumerate(header) if h}
        problems = len(result.problems)
        owner = accounts.get(cells.get("owner", ""))
        if owner is None or not viewer.can_see_account(owner):
            result.problems.append(ImportProblem(number, "群主账号", "unknown account"))
        kind = cells.get("kind", "")
        kind = KIND_BY_LABEL.get(kind, kind)
        if kind and kind not in {k.value for k in GroupKind}:
            result.problems.append(ImportProblem(number, "类型", "unknown kind"))
        template_id = None
        if cells.get("template"):
            template_id = templates.get(cells["template"])
            if template_id is None:
                result.problems.append(ImportProblem(number, "命名规则", "unknown naming template"))
        count = cells.get("member_count", "") or "0"
        if not count.isdigit() or int(count) > WECHAT_GROUP_CAPACITY:
            result.problems.append(ImportProblem(number, "人数", f"a number from 0 to {WECHAT_GROUP_CAPACITY}"))
        if len(result.problems) > problems:
            continue
        try:
            rows.append(PersonalGroupIn(name=cells.get("name", ""), owner_account_id=owner or 0, kind=kind,
                                        tier=cells.get("tier", ""), store=cells.get("store", ""),
                                        region=cells.get("region", ""), member_count=int(count),
                                        naming_template_id=template_id))
        except ValidationError as exc:
            error = exc.errors()[0]
            column = next((h for h, f in IMPORT_COLUMNS.items() if f == (error.get("loc") or ("",))[0]), "")
            result.problems.append(ImportProblem(number, column, validation_message(dict(error))))
    if result.problems:
        return result
    for data in rows:
        result.created.append(register_personal(session, data=data, viewer=viewer, audit=False).id)
    if result.created:
        team_service.record_audit(session, actor=viewer, action="import", entity_type="group_chat",
                                  summary=f"{len(result.created)}", after={"created": len(result.created)})
    return result


# ---------------------------------------------------------------- tasks for a group's owner


def raise_task(session: Session, *, kind: GroupTaskKind, key: str, detail: str, group: GroupChat | None = None,
               group_code_id: int | None = None, account_id: int | None = None) -> GroupTask | None:
    """One open task per ``key`` (raising it again changes nothing); None when it exists already."""
    key = f"{kind.value}:{key}"[:64]
    existing = session.scalar(select(GroupTask).where(GroupTask.key == key))
    if existing is not None:
        return None
    task = GroupTask(kind=kind.value, key=key, detail=detail[:255], group_chat_id=group.id if group else None,
                     group_code_id=group_code_id,
                     account_id=account_id if account_id is not None else (group.owner_account_id if group else None))
    session.add(task)
    session.flush()
    return task


def open_tasks(session: Session, *, viewer: Viewer, limit: int = 200) -> list[GroupTask]:
    query = select(GroupTask).where(GroupTask.status == "open")
    if not viewer.sees_all_accounts:
        query = query.where(GroupTask.account_id.in_(sorted(viewer.account_ids) or [-1]))
    return list(session.scalars(query.order_by(GroupTask.id.desc()).limit(limit)))


def finish_task(session: Session, *, task_id: int, viewer: Viewer) -> GroupTask:
    task = session.get(GroupTask, task_id)
    if task is None or not (viewer.sees_all_accounts or (task.account_id is not None
                                                           and viewer.can_see_account(task.account_id))):
        raise NotFound("Task not found")
    if task.status == "open":
        task.status, task.done_at = "done", utcnow()
        # done: the key is freed so the same thing can be raised again later
        task.key = f"done:{task.id}:{task.key}"[:64]
    return task


# ---------------------------------------------------------------- what the list and the API show


@dataclass
class GroupFigures:
    capacity: int
    utilisation: int  # percent
    expected_name: str

    @property
    def warn(self) -> bool:
        return self.utilisation >= WARN_PERCENT


def figures(session: Session, groups: Iterable[GroupChat]) -> dict[int, GroupFigures]:
    """Capacity, utilisation and expected name of each group (two queries for a page)."""
    groups = list(groups)
    externals = external_counts(session, [g.id for g in groups if g.platform == GroupPlatform.wecom.value])
    templates = templates_by_id(session) if any(g.naming_template_id for g in groups) else {}
    out: dict[int, GroupFigures] = {}
    for group in groups:
        cap = capacity(group, externals.get(group.id, 0))
        out[group.id] = GroupFigures(capacity=cap, utilisation=utilisation(group.member_count, cap),
                                     expected_name=expected_name(group, templates))
    return out


def memberships(session: Session, *, customer_id: int, viewer: Viewer) -> list[tuple[GroupChat, GroupMember]]:
    """A customer's groups (current first, then those they left) that the viewer may see."""
    from siyu.groups.queries import visible_group_clause

    query = (select(GroupChat, GroupMember).join(GroupMember, GroupMember.group_chat_id == GroupChat.id)
             .where(GroupMember.customer_id == customer_id))
    scope = visible_group_clause(viewer)
    if scope is not None:
        query = query.where(scope)
    rows = [(g, m) for g, m in session.execute(query.order_by(GroupMember.left_at.is_not(None),
                                                               GroupMember.join_time.desc(), GroupMember.id.desc()))]
    return rows
