"""Bulk actions on every customer that matches a filter — not just the page on screen.

Add or remove tags, assign an owner, set (or release) the stage. The user sees the exact
count and what will happen, confirms, and a background job walks the matching customers in
id order, one transaction per batch, with progress. The filter is applied again to each
batch, so "every customer matching" means matching when the job reaches them, and a job
that stops halfway can simply be run again: each action is idempotent and only customers
that actually change get a timeline entry. One audit entry records the filter, the action
and the counts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Forbidden, Invalid
from siyu.core.i18n import _
from siyu.core.viewer import Viewer
from siyu.customers import service
from siyu.customers.models import Customer, CustomerTag, Stage, Tag, Touch, TouchKind
from siyu.team import service as team_service
from siyu.team.models import User

BATCH_SIZE = 1000
SAMPLE_NAMES = 5
OWNER_ROLES = ("admin", "planner", "operator")


class BulkKind(enum.StrEnum):
    add_tags = "add_tags"
    remove_tags = "remove_tags"
    assign_owner = "assign_owner"
    set_stage = "set_stage"


@dataclass(frozen=True)
class BulkAction:
    kind: BulkKind
    tag_ids: tuple[int, ...] = ()
    owner_id: int | None = None  # assign_owner: None takes the owner away
    stage: str | None = None  # set_stage: None hands the stage back to the lifecycle rules

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "tag_ids": list(self.tag_ids), "owner_id": self.owner_id,
                "stage": self.stage}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BulkAction:
        return cls(kind=BulkKind(data["kind"]), tag_ids=tuple(data.get("tag_ids") or ()),
                   owner_id=data.get("owner_id"), stage=data.get("stage"))


def ensure_may_bulk(viewer: Viewer) -> None:
    if viewer.role == "service":
        raise Forbidden("Service staff cannot change customers in bulk")


@dataclass
class Checked:
    """A validated action with what the confirmation shows."""

    action: BulkAction
    description: str
    tags: list[Tag] = field(default_factory=list)


def check_action(session: Session, *, action: BulkAction, viewer: Viewer) -> Checked:
    """Refuse what cannot be done before anything is counted or queued."""
    ensure_may_bulk(viewer)
    if action.kind in (BulkKind.add_tags, BulkKind.remove_tags):
        if not action.tag_ids:
            raise Invalid("Choose at least one tag", field="tag_ids")
        tags = service.get_tags(session, tag_ids=list(action.tag_ids))
        for tag in tags:
            if tag.group.is_computed:
                raise Invalid("Tags of group {group} are computed and cannot be edited", field="tag_ids",
                              group=tag.group.name)
        if action.kind is BulkKind.add_tags:
            groups = [t.group_id for t in tags if not t.group.multi_select]
            if len(groups) != len(set(groups)):
                raise Invalid("Only one tag of a single-choice group can be added", field="tag_ids")
        names = "、".join(f"{t.group.name}:{t.name}" for t in tags)
        message = "Add tags {tags}" if action.kind is BulkKind.add_tags else "Remove tags {tags}"
        return Checked(action=action, description=_(message, tags=names), tags=tags)
    if action.kind is BulkKind.assign_owner:
        if action.owner_id is None:
            return Checked(action=action, description=_("Take the owner away"))
        user = session.get(User, action.owner_id)
        if user is None or not user.is_active or user.role not in OWNER_ROLES:
            raise Invalid("User {user_id} cannot own customers", field="owner_id", user_id=action.owner_id)
        return Checked(action=action, description=_("Assign to {name}", name=user.display_name or user.username))
    if action.stage is None:
        return Checked(action=action, description=_("Hand the stage back to the lifecycle rules"))
    if action.stage not in {s.value for s in Stage}:
        raise Invalid("Unknown stage {stage}", field="stage", stage=action.stage)
    return Checked(action=action, description=_("Set the stage to {stage}", stage=_(f"stage.{action.stage}")))


@dataclass
class Preview:
    count: int
    description: str
    sample: list[str]


def preview(session: Session, *, flt: service.CustomerFilter, action: BulkAction, viewer: Viewer) -> Preview:
    """What the confirmation shows: the exact count, the action in words, a few names."""
    checked = check_action(session, action=action, viewer=viewer)
    count = service.count_matching(session, flt=flt, viewer=viewer)
    first = service.matching_ids(session, flt=flt, viewer=viewer, limit=SAMPLE_NAMES)
    names = {cid: name for cid, name in session.execute(select(Customer.id, Customer.name)
                                                        .where(Customer.id.in_(first)))}
    return Preview(count=count, description=checked.description, sample=[names[cid] for cid in first])


# ---------------------------------------------------------------- applying a batch


def apply_batch(session: Session, *, ids: list[int], checked: Checked, viewer: Viewer) -> list[int]:
    """Apply the action to these customers; the ids of the ones that changed."""
    if not ids:
        return []
    action = checked.action
    if action.kind is BulkKind.add_tags:
        changed = _add_tags(session, ids=ids, tags=checked.tags, viewer=viewer)
    elif action.kind is BulkKind.remove_tags:
        changed = _remove_tags(session, ids=ids, tags=checked.tags, viewer=viewer)
    elif action.kind is BulkKind.assign_owner:
        changed = _set_column(session, ids=ids, column="owner_id", value=action.owner_id, viewer=viewer)
    else:
        changed = _set_column(session, ids=ids, column="stage_override", value=action.stage, viewer=viewer)
    if changed and action.kind is not BulkKind.assign_owner:
        # Tags feed completeness and the stage feeds the stored stage: keep them current.
        customers = list(session.scalars(select(Customer).where(Customer.id.in_(changed))))
        service.refresh_computed_many(session, customers=customers)
    if changed and action.kind in (BulkKind.add_tags, BulkKind.remove_tags):
        service.notify_changed(session, changed, {"tags"})  # e.g. mirrored to WeCom's corp tags
    return changed


def _tag_touches(session: Session, changes: dict[int, tuple[list[str], list[str]]], viewer: Viewer) -> None:
    now = utcnow()
    if changes:
        session.execute(insert(Touch), [
            {"customer_id": cid, "account_id": None, "user_id": viewer.user_id, "kind": TouchKind.tag_change.value,
             "content": "", "amount": None, "details": {"added": added, "removed": removed, "via": "bulk"},
             "occurred_at": now, "created_at": now}
            for cid, (added, removed) in sorted(changes.items())])


def _add_tags(session: Session, *, ids: list[int], tags: list[Tag], viewer: Viewer) -> list[int]:
    changes = service.add_tags(session, customer_ids=ids, tags=tags)
    _tag_touches(session, changes, viewer)
    return sorted(changes)


def _remove_tags(session: Session, *, ids: list[int], tags: list[Tag], viewer: Viewer) -> list[int]:
    wanted = {t.id for t in tags}
    current = service.tag_links(session, ids, {t.group_id for t in tags})
    changes: dict[int, tuple[list[str], list[str]]] = {}
    for customer_id, have in current.items():
        removed = [service.tag_name(t) for tid, t in have.items() if tid in wanted]
        if removed:
            changes[customer_id] = ([], removed)
    if changes:
        session.execute(delete(CustomerTag).where(CustomerTag.customer_id.in_(sorted(changes)),
                                                  CustomerTag.tag_id.in_(sorted(wanted))))
    _tag_touches(session, changes, viewer)
    return sorted(changes)


def _set_column(session: Session, *, ids: list[int], column: str, value: Any, viewer: Viewer) -> list[int]:
    target = getattr(Customer, column)
    differs = target.is_(None) if value is not None else target.is_not(None)
    if value is not None:
        differs = differs | (target != value)
    changed = sorted(session.scalars(select(Customer.id).where(Customer.id.in_(ids), differs)))
    if not changed:
        return []
    now = utcnow()
    session.execute(update(Customer).where(Customer.id.in_(changed)).values({column: value, "updated_at": now}),
                    execution_options={"synchronize_session": False})
    session.execute(insert(Touch), [
        {"customer_id": cid, "account_id": None, "user_id": viewer.user_id, "kind": TouchKind.field_change.value,
         "content": "", "amount": None, "details": {"fields": [column], "via": "bulk"}, "occurred_at": now,
         "created_at": now} for cid in changed])
    return changed


# ---------------------------------------------------------------- the whole run


@dataclass
class BulkResult:
    matched: int
    changed: int

    def summary(self) -> dict[str, int]:
        return {"matched": self.matched, "changed": self.changed}


Transaction = Callable[[], AbstractContextManager[Session]]


def run(transaction: Transaction, *, flt: service.CustomerFilter, action: BulkAction, viewer: Viewer,
        progress: Callable[[int, int], None] | None = None, batch_size: int = BATCH_SIZE,
        checkpoint: Callable[[Session, dict[str, Any]], None] | None = None,
        resume: dict[str, Any] | None = None) -> BulkResult:
    """Walk every matching customer in id order, one transaction per batch, then audit once.

    ``checkpoint(session, state)`` runs inside each batch's transaction (and the audit's) with
    the position and counts; a run given that state as ``resume`` goes on after the last
    committed batch (a job whose worker died), with its counts, and audits once.
    """
    state = dict(resume or {})
    with transaction() as session:
        check_action(session, action=action, viewer=viewer)
        total = service.count_matching(session, flt=flt, viewer=viewer)
    matched, changed = int(state.get("matched", 0)), int(state.get("changed", 0))
    after_id = int(state.get("after_id", 0))
    if progress:
        progress(min(matched, max(total, matched)), max(total, matched))
    while True:
        with transaction() as session:
            checked = check_action(session, action=action, viewer=viewer)
            ids = service.matching_ids(session, flt=flt, viewer=viewer, after_id=after_id, limit=batch_size)
            if not ids:
                break
            changed_now = len(apply_batch(session, ids=ids, checked=checked, viewer=viewer))
            if checkpoint:
                checkpoint(session, {"after_id": ids[-1], "matched": matched + len(ids),
                                     "changed": changed + changed_now})
        changed += changed_now
        matched += len(ids)
        after_id = ids[-1]
        if progress:
            progress(min(matched, max(total, matched)), max(total, matched))
    if state.get("recorded"):
        return BulkResult(matched=matched, changed=changed)
    result = BulkResult(matched=matched, changed=changed)
    with transaction() as session:
        description = check_action(session, action=action, viewer=viewer).description
        team_service.record_audit(session, actor=viewer, action="bulk_update", entity_type="customers",
                                  summary=description,
                                  after={**result.summary(), "action": action.to_json(),
                                         "filter": flt.to_json()})
        if checkpoint:
            checkpoint(session, {"after_id": after_id, "matched": matched, "changed": changed, "recorded": True})
    return result
