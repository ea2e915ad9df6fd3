"""Who may export customers, and with which phones: an admin setting kept in ``app_setting``.

Why a setting and not a rule in code: a company decides how far its customers' phone numbers
travel. The defaults follow the roles' work — 客服 answers chats and may not export; 运维 and
策划 export with phones masked (``136****4321``) unless an admin allows full phones;
administrators always export in full (an admin can never lock themselves out of it). The
export (``customers.exports.routes`` and the job in ``customers.jobs``) reads the viewer through
``export_viewer`` so a direct download and a background job apply the same right, as the
right stands when the file is written.
"""

from __future__ import annotations

import enum
from dataclasses import replace

from sqlalchemy.orm import Session

from siyu.core.errors import Forbidden, Invalid
from siyu.core.i18n import N_
from siyu.core.models import AppSetting
from siyu.core.viewer import Viewer
from siyu.team import service as team_service
from siyu.team.models import Role

POLICY_KEY = "customers.export_policy"


class ExportRight(enum.StrEnum):
    none = "none"  # may not export
    masked = "masked"  # exports, phones masked
    full = "full"  # exports with full phone numbers


RIGHT_LABELS = {ExportRight.none: N_("May not export"), ExportRight.masked: N_("Phones masked"),
                ExportRight.full: N_("Full phones")}
EDITABLE_ROLES = (Role.planner, Role.operator, Role.service)  # admins always export in full
DEFAULT_POLICY: dict[Role, ExportRight] = {
    Role.admin: ExportRight.full,
    Role.planner: ExportRight.masked,
    Role.operator: ExportRight.masked,
    Role.service: ExportRight.none,
}


def get_policy(session: Session) -> dict[Role, ExportRight]:
    """Each role's export right: the stored setting over the defaults."""
    policy = dict(DEFAULT_POLICY)
    row = session.get(AppSetting, POLICY_KEY)
    stored = row.value.get("roles", {}) if row is not None and isinstance(row.value, dict) else {}
    for role in EDITABLE_ROLES:
        value = stored.get(role.value)
        if isinstance(value, str) and value in ExportRight.__members__:
            policy[role] = ExportRight(value)
    return policy


def set_policy(session: Session, *, rights: dict[str, str], actor: Viewer) -> dict[Role, ExportRight]:
    """Store the rights of the editable roles (admins only; audited with before and after)."""
    if not actor.is_admin:
        raise Forbidden("Only administrators may change export permissions")
    before = get_policy(session)
    after = dict(before)
    for role in EDITABLE_ROLES:
        value = rights.get(role.value)
        if value is None:
            continue
        if value not in ExportRight.__members__:
            raise Invalid("Unknown export permission: {value}", field=role.value, value=str(value)[:20])
        after[role] = ExportRight(value)
    stored = {"roles": {role.value: after[role].value for role in EDITABLE_ROLES}}
    row = session.get(AppSetting, POLICY_KEY)
    if row is None:
        session.add(AppSetting(key=POLICY_KEY, value=stored))
    else:
        row.value = stored
    team_service.record_audit(session, actor=actor, action="update", entity_type="export_policy", entity_name="",
                              before={r.value: before[r].value for r in EDITABLE_ROLES},
                              after={r.value: after[r].value for r in EDITABLE_ROLES})
    session.flush()
    return after


def right_of(session: Session, viewer: Viewer) -> ExportRight:
    try:
        role = Role(viewer.role)
    except ValueError:
        return ExportRight.none
    return get_policy(session)[role]


def export_viewer(session: Session, viewer: Viewer) -> Viewer:
    """The viewer an export runs as: refused if their role may not export; phones masked unless
    their role exports in full (and they may see phones at all)."""
    right = right_of(session, viewer)
    if right is ExportRight.none:
        raise Forbidden("Your role may not export customers; an administrator can allow it")
    return replace(viewer, may_see_phones=viewer.may_see_phones and right is ExportRight.full)
