"""Onboarding: 入群欢迎语 per group kind, and a group's intake plan in the seed's three batches.

Welcome templates are WeCom's 入群欢迎语素材 (``group_welcome_template/add|edit|del``, W:92366): at most
100 per corp, ``%NICKNAME%`` is the joiner's name; WeCom has no API to attach one to a group — the owner
picks it in the client — so Siyu keeps which template goes with which group kind and shows it on the group.

The intake plan (seed 002 §4.2): batch 1 old customers and the sales core, batch 2 invited prospects,
batch 3 applicants invited by members, each with a screening note. Every invitee carries a status; a
blacklisted customer is refused at intake (groups.moderation's blacklist). When a batch is through, the
rules announcement and the self-introduction prompt go out as scheduled posts (groups.posts).

Every function works in the caller's transaction and never commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import N_
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer
from siyu.groups import registry
from siyu.groups.models import (
    GroupChat,
    GroupInvitee,
    GroupKind,
    GroupMember,
    GroupWelcomeTemplate,
    InviteeStatus,
)
from siyu.team import service as team_service
from siyu.wecom import client as client_limits

WELCOME_TEMPLATES_MAX = client_limits.GROUP_WELCOME_TEMPLATES  # W:92366: ≤ 100 per corp
NICKNAME = client_limits.GROUP_WELCOME_NICKNAME  # W:92366: %NICKNAME%, the joiner's name
WELCOME_TEXT_MAX = 1000  # Siyu's own limit on a welcome text (characters)
INVITEES_PER_CALL = 500  # Siyu's own limit on one add to an intake plan

BATCH_LABELS = {1: N_("Batch 1: old customers and the sales core"),
                2: N_("Batch 2: invited prospects"),
                3: N_("Batch 3: applicants invited by members (screened)")}
INVITEE_LABELS = {InviteeStatus.invited.value: N_("invitee.invited"),
                  InviteeStatus.joined.value: N_("invitee.joined"),
                  InviteeStatus.declined.value: N_("invitee.declined"),
                  InviteeStatus.refused.value: N_("invitee.refused")}


class WelcomeTemplateNotFound(NotFound):
    pass


class InviteeNotFound(NotFound):
    pass


# ---------------------------------------------------------------- welcome templates


class WelcomeTemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    kind: str = Field(default="", max_length=24)
    text: str = Field(min_length=1, max_length=WELCOME_TEXT_MAX)

    @field_validator("name", "kind", "text")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def list_welcome_templates(session: Session) -> list[GroupWelcomeTemplate]:
    return list(session.scalars(select(GroupWelcomeTemplate).order_by(GroupWelcomeTemplate.kind,
                                                                      GroupWelcomeTemplate.id)))


def get_welcome_template(session: Session, *, template_id: int) -> GroupWelcomeTemplate:
    template = session.get(GroupWelcomeTemplate, template_id)
    if template is None:
        raise WelcomeTemplateNotFound("Welcome template not found")
    return template


def _check(session: Session, data: WelcomeTemplateIn, template: GroupWelcomeTemplate | None) -> None:
    if data.kind and data.kind not in {k.value for k in GroupKind}:
        raise Invalid("Unknown group kind", field="kind")
    if not data.name:
        raise Invalid("Give the template a name", field="name")
    if not data.text:
        raise Invalid("Write the welcome text", field="text")
    clash = session.scalar(select(GroupWelcomeTemplate).where(GroupWelcomeTemplate.name == data.name))
    if clash is not None and clash is not template:
        raise Invalid("Another welcome template is called {name}", field="name", name=data.name)
    if template is None:
        count = session.scalar(select(func.count()).select_from(GroupWelcomeTemplate)) or 0
        if count >= WELCOME_TEMPLATES_MAX:
            raise Invalid("WeCom keeps at most {n} group welcome templates per corp", field="name",
                          n=WELCOME_TEMPLATES_MAX)


def save_welcome_template(session: Session, *, data: WelcomeTemplateIn, viewer: Viewer,
                          template_id: int | None = None) -> GroupWelcomeTemplate:
    """Create or change a template; its WeCom copy follows after the commit (``jobs.sync_welcome_template``)."""
    registry.require_editor(viewer)
    template = get_welcome_template(session, template_id=template_id) if template_id else None
    _check(session, data, template)
    before = {"name": template.name, "kind": template.kind, "text": template.text} if template else None
    if template is None:
        template = GroupWelcomeTemplate(name=data.name, kind=data.kind, text=data.text)
        session.add(template)
    template.name, template.kind, template.text, template.updated_at = data.name, data.kind, data.text, utcnow()
    session.flush()
    team_service.record_audit(session, actor=viewer, action="update" if before else "create",
                              entity_type="group_welcome_template", entity_id=template.id,
                              entity_name=template.name, before=before,
                              after={"name": template.name, "kind": template.kind, "text": template.text})
    _queue(session, "groups.jobs.sync_welcome_template", template.id)
    return template


def delete_welcome_template(session: Session, *, template_id: int, viewer: Viewer) -> None:
    registry.require_editor(viewer)
    template = get_welcome_template(session, template_id=template_id)
    team_service.record_audit(session, actor=viewer, action="delete", entity_type="group_welcome_template",
                              entity_id=template.id, entity_name=template.name,
                              before={"name": template.name, "kind": template.kind, "text": template.text})
    if template.wecom_template_id:
        _queue(session, "groups.jobs.delete_welcome_template", template.wecom_template_id)
    session.delete(template)
    session.flush()


def _queue(session: Session, job: str, *args: Any) -> None:
    from siyu.core import jobs

    jobs.enqueue_after_commit(session, job, *args)


def sync_welcome_template(session: Session, *, template: GroupWelcomeTemplate, api: Any) -> str:
    """Make WeCom's copy match ("created" or "updated")."""
    if template.wecom_template_id:
        api.edit_group_welcome_template(template.wecom_template_id, template.text)
        template.sync_error = ""
        return "updated"
    template.wecom_template_id = api.add_group_welcome_template(template.text)
    template.sync_error = ""
    return "created"


def template_for_kind(session: Session, kind: str) -> GroupWelcomeTemplate | None:
    """The template of a group kind, or the one for any kind."""
    rows = list(session.scalars(select(GroupWelcomeTemplate).where(GroupWelcomeTemplate.kind.in_([kind, ""]))
                                .order_by(GroupWelcomeTemplate.id)))
    return next((t for t in rows if t.kind == kind and kind), None) or next((t for t in rows if not t.kind), None)


def render_welcome(text: str, nickname: str) -> str:
    """What a joiner sees: WeCom puts the joiner's name where ``%NICKNAME%`` stands."""
    return text.replace(NICKNAME, nickname)


# ---------------------------------------------------------------- the intake plan


class InviteesIn(BaseModel):
    batch: int = Field(ge=1, le=3)
    customer_ids: list[int] = Field(default_factory=list, max_length=INVITEES_PER_CALL)
    names: list[str] = Field(default_factory=list, max_length=INVITEES_PER_CALL)  # people not yet customers
    note: str = Field(default="", max_length=255)

    @field_validator("note")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def intake_plan(session: Session, *, group: GroupChat) -> dict[int, list[GroupInvitee]]:
    plan: dict[int, list[GroupInvitee]] = {1: [], 2: [], 3: []}
    for invitee in session.scalars(select(GroupInvitee).where(GroupInvitee.group_chat_id == group.id)
                                   .order_by(GroupInvitee.batch, GroupInvitee.id)):
        plan.setdefault(invitee.batch, []).append(invitee)
    return plan


def add_invitees(session: Session, *, group: GroupChat, data: InviteesIn, viewer: Viewer) -> list[GroupInvitee]:
    """Invite people in one batch; a blacklisted customer is written down as refused, with the reason."""
    from siyu.groups import queries
    from siyu.groups.moderation import service as moderation

    registry.require_editor(viewer)
    if not group.is_active:
        raise Invalid("The group was dismissed", field="batch")
    names = [n.strip()[:128] for n in data.names if n.strip()]
    ids = list(dict.fromkeys(data.customer_ids))
    if not ids and not names:
        raise Invalid("Choose at least one customer or write a name", field="customer_ids")
    if data.batch == 3 and not data.note:
        raise Invalid("Batch 3 applicants need a screening note", field="note")
    visible = queries.visible_customer_ids(session, customer_ids=ids, viewer=viewer)
    unknown = [i for i in ids if i not in visible]
    if unknown:
        raise Invalid("Customer {id} not found", field="customer_ids", id=unknown[0])
    customers = {c.id: c for c in session.scalars(select(Customer).where(Customer.id.in_(ids)))} if ids else {}
    already = set(session.scalars(select(GroupInvitee.customer_id).where(
        GroupInvitee.group_chat_id == group.id, GroupInvitee.customer_id.in_(ids or [-1]))))
    userids = {c.id: c.wecom_external_userid or "" for c in customers.values()}
    refused = moderation.refused(session, userids.values())
    members = set(session.scalars(select(GroupMember.userid).where(
        GroupMember.group_chat_id == group.id, GroupMember.left_at.is_(None))))
    now = utcnow()
    made: list[GroupInvitee] = []
    for customer_id in ids:
        if customer_id in already:
            continue
        customer, userid = customers[customer_id], userids[customer_id]
        status, reason = InviteeStatus.invited.value, ""
        if userid and userid in refused:
            status, reason = InviteeStatus.refused.value, "blacklist"
        elif userid and userid in members:
            status = InviteeStatus.joined.value
        made.append(GroupInvitee(group_chat_id=group.id, batch=data.batch, customer_id=customer_id, userid=userid,
                                 name=customer.name[:128], note=data.note, status=status, reason=reason,
                                 created_at=now, updated_at=now))
    made.extend(GroupInvitee(group_chat_id=group.id, batch=data.batch, name=name, note=data.note,
                             status=InviteeStatus.invited.value, created_at=now, updated_at=now) for name in names)
    session.add_all(made)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="invite", entity_type="group_chat", entity_id=group.id,
                              entity_name=group.name, after={"batch": data.batch, "invitees": len(made),
                                                             "refused": sum(i.status == "refused" for i in made)})
    return made


def set_invitee_status(session: Session, *, group: GroupChat, invitee_id: int, status: str,
                       viewer: Viewer) -> GroupInvitee:
    registry.require_editor(viewer)
    invitee = session.get(GroupInvitee, invitee_id)
    if invitee is None or invitee.group_chat_id != group.id:
        raise InviteeNotFound("Invitee not found")
    if status not in {InviteeStatus.invited.value, InviteeStatus.joined.value, InviteeStatus.declined.value}:
        raise Invalid("Unknown invitee status", field="status")
    if invitee.status == InviteeStatus.refused.value:
        raise Invalid("A blacklisted customer is refused at intake; pardon them first", field="status")
    before = invitee.status
    invitee.status, invitee.updated_at = status, utcnow()
    team_service.record_audit(session, actor=viewer, action="update", entity_type="group_invitee",
                              entity_id=invitee.id, entity_name=invitee.name, before={"status": before},
                              after={"status": status})
    return invitee


def mark_joined(session: Session, *, group: GroupChat, userids: list[str], at: datetime | None = None) -> int:
    """Invitees who appeared among the group's members (a sync) have joined."""
    if not userids:
        return 0
    found = list(session.scalars(select(GroupInvitee).where(
        GroupInvitee.group_chat_id == group.id, GroupInvitee.userid.in_(sorted(set(userids))),
        GroupInvitee.status.in_([InviteeStatus.invited.value, InviteeStatus.declined.value]))))
    for invitee in found:
        invitee.status, invitee.updated_at = InviteeStatus.joined.value, at or utcnow()
    return len(found)


def finish_batch(session: Session, *, group: GroupChat, batch: int, viewer: Viewer,
                 now: datetime | None = None) -> list[Any]:
    """A batch is in: the rules announcement and the self-introduction prompt are scheduled for the group."""
    from siyu.groups import posts

    registry.require_editor(viewer)
    if batch not in BATCH_LABELS:
        raise Invalid("Unknown batch", field="batch")
    if not group.is_active:
        raise Invalid("The group was dismissed", field="batch")
    made = posts.schedule_intake_posts(session, group=group, batch=batch, now=now)
    team_service.record_audit(session, actor=viewer, action="finish_batch", entity_type="group_chat",
                              entity_id=group.id, entity_name=group.name, after={"batch": batch, "posts": len(made)})
    return made
