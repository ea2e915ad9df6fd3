"""Merging duplicate customers, and undoing a merge within 30 days.

The same person often arrives twice: added by two accounts, imported from a spreadsheet
and then added on WeCom. A merge keeps one customer (the *target*) and folds the others
(*sources*) into it: conflicting profile fields are chosen one by one, friendships (with
their remark names, phones and pictures), timeline, addresses, tags and custom fields move
over. Sources are not deleted — they are hidden (``merged_into_id``) — and every moved row
and overwritten value is written to a ``CustomerMerge`` record, which is what undo reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Conflict, Forbidden, Invalid, NotFound
from siyu.core.i18n import N_
from siyu.core.viewer import Viewer
from siyu.customers import service
from siyu.customers.models import (
    COMPUTED_GROUP_KINDS,
    Address,
    Attachment,
    Customer,
    CustomerMerge,
    CustomerTag,
    CustomFieldValue,
    Friendship,
    Phone,
    Tag,
    TagGroup,
    Touch,
    TouchKind,
)
from siyu.customers.search import index as search
from siyu.orders.models import Order, OrderLine
from siyu.team import service as team_service

UNDO_WINDOW = timedelta(days=30)
MAX_MERGE = 10
# The customer's own profile fields and their labels (forms, errors, merge, timeline).
PORTRAIT_LABELS: dict[str, str] = {
    "name": N_("Name"),
    "wechat_id": N_("WeChat ID"),
    "source": N_("Source"),
    "gender": N_("Gender"),
    "age_band": N_("Age band"),
    "city": N_("City"),
    "job": N_("Job"),
    "income_band": N_("Income band"),
    "family": N_("Family"),
    "objective_notes": N_("Objective facts"),
    "emotional_notes": N_("Emotional and sensory notes"),
}
# Profile fields chosen one by one when customers disagree, with their labels.
MERGE_FIELDS: dict[str, str] = {
    **PORTRAIT_LABELS,
    "wecom_external_userid": N_("WeCom external user ID"),
    "avatar_url": N_("Avatar"),
    "owner_id": N_("Owner"),
}
MERGING_ROLES = ("admin", "planner", "operator")


class MergeNotFound(NotFound):
    pass


@dataclass
class FieldChoice:
    name: str
    label: str
    values: dict[int, Any]
    chosen: int
    conflict: bool


@dataclass
class MergePreview:
    target: Customer
    sources: list[Customer]
    fields: list[FieldChoice]
    friendships: dict[int, list[Friendship]]
    tags: dict[int, list[Tag]]
    touch_counts: dict[int, int]

    @property
    def customers(self) -> list[Customer]:
        return [self.target, *self.sources]


@dataclass
class DuplicateGroup:
    reason: str  # phone / wechat_id / name_city
    key: str
    customer_ids: list[int] = field(default_factory=list)


def _empty(value: Any) -> bool:
    return value is None or value == ""


def _load(session: Session, *, target_id: int, source_ids: list[int], viewer: Viewer,
          ) -> tuple[Customer, list[Customer]]:
    if viewer.role not in MERGING_ROLES:
        raise Forbidden("Your role may not merge customers")
    sources_unique = list(dict.fromkeys(source_ids))
    if target_id in sources_unique:
        raise Invalid("A customer cannot be merged into itself", field="source_ids")
    if not sources_unique:
        raise Invalid("Choose at least one customer to merge into this one", field="source_ids")
    if len(sources_unique) + 1 > MAX_MERGE:
        raise Invalid("At most {n} customers can be merged at once", field="source_ids", n=MAX_MERGE)
    target = service.get_customer(session, customer_id=target_id, viewer=viewer)
    sources = [service.get_customer(session, customer_id=cid, viewer=viewer) for cid in sources_unique]
    return target, sources


def _default_choice(name: str, customers: list[Customer]) -> int:
    for customer in customers:  # the target first: it wins unless it has nothing
        if not _empty(getattr(customer, name)):
            return customer.id
    return customers[0].id


def preview_merge(session: Session, *, target_id: int, source_ids: list[int], viewer: Viewer) -> MergePreview:
    target, sources = _load(session, target_id=target_id, source_ids=source_ids, viewer=viewer)
    everyone = [target, *sources]
    ids = [c.id for c in everyone]
    fields = []
    for name, label in MERGE_FIELDS.items():
        values = {c.id: getattr(c, name) for c in everyone}
        distinct = {v for v in values.values() if not _empty(v)}
        fields.append(FieldChoice(name=name, label=label, values=values,
                                  chosen=_default_choice(name, everyone), conflict=len(distinct) > 1))
    touch_counts: dict[int, int] = {customer_id: count for customer_id, count in session.execute(
        select(Touch.customer_id, func.count()).where(Touch.customer_id.in_(ids)).group_by(Touch.customer_id))}
    return MergePreview(
        target=target, sources=sources, fields=fields,
        friendships=service.load_friendships(session, customer_ids=ids),
        tags=service.customer_tags(session, customer_ids=ids),
        touch_counts={cid: touch_counts.get(cid, 0) for cid in ids},
    )


def merge_customers(session: Session, *, target_id: int, source_ids: list[int], choices: dict[str, int],
                    viewer: Viewer) -> CustomerMerge:
    """Fold ``source_ids`` into ``target_id``; ``choices`` names, per field, whose value to keep."""
    target, sources = _load(session, target_id=target_id, source_ids=source_ids, viewer=viewer)
    everyone = [target, *sources]
    by_id = {c.id: c for c in everyone}
    unknown = sorted(set(choices) - set(MERGE_FIELDS))
    if unknown:
        raise Invalid("Unknown field: {name}", field="choices", name=unknown[0])
    for name, chosen in choices.items():
        if chosen not in by_id:
            raise Invalid("The value for {name} must come from one of the merged customers", field="choices",
                          name=name)
    source_id_list = [c.id for c in sources]
    moves: dict[str, Any] = {
        "target_before": {name: getattr(target, name) for name in MERGE_FIELDS},
        "sources_before": {str(c.id): {"wecom_external_userid": c.wecom_external_userid} for c in sources},
    }

    # Profile fields. The WeCom id is unique, so sources give theirs up before the target takes one.
    chosen_values = {name: getattr(by_id[choices.get(name) or _default_choice(name, everyone)], name)
                     for name in MERGE_FIELDS}
    from siyu.analytics import rollups  # the ladder's counts leave the merged customers out

    rollups.shift(session, [c.id for c in sources if c.merged_into_id is None], -1)
    for source in sources:
        source.wecom_external_userid = None
        source.merged_into_id = target.id
    session.flush()
    for name, value in chosen_values.items():
        setattr(target, name, value)

    moves.update(_move_friendships(session, target=target, source_ids=source_id_list))
    moves["touch"] = _repoint(session, Touch, source_id_list, target.id)
    moves["address"] = _repoint(session, Address, source_id_list, target.id)
    moves["order"] = _repoint(session, Order, source_id_list, target.id)
    _lines_follow_orders(session, [row[0] for row in moves["order"]])
    from siyu.groups import service as groups_service  # groups build on customers: imported when merging

    moves["group_member"] = groups_service.repoint_members(session, source_ids=source_id_list, target_id=target.id)
    from siyu.sends import service as sends_service  # the send-quota ledger and 客户SOP build on customers
    from siyu.sops import service as sops_service

    moves["send_ledger"] = sends_service.repoint_customers(session, source_ids=source_id_list, target_id=target.id)
    moves["sop_enrolment"] = sops_service.repoint_enrolments(session, source_ids=source_id_list, target_id=target.id)
    moves["tags_added"] = _carry_tags(session, target_id=target.id, source_ids=source_id_list)
    moves["custom_before"] = _carry_custom_values(session, target_id=target.id, source_ids=source_id_list)

    record = CustomerMerge(target_id=target.id, source_ids=source_id_list,
                           choices={k: v for k, v in choices.items()}, moves=moves, created_by_id=viewer.user_id)
    session.add(record)
    session.flush()
    session.add(Touch(customer_id=target.id, user_id=viewer.user_id, kind=TouchKind.system.value,
                      details={"event": "merged", "merge_id": record.id, "sources": source_id_list}))
    team_service.record_audit(
        session, actor=viewer, action="merge", entity_type="customer", entity_id=target.id, entity_name=target.name,
        summary=f"{target.name} ← {', '.join(f'#{c.id} {c.name}' for c in sources)}",
        before={"target": moves["target_before"], "sources": [{"id": c.id, "name": c.name} for c in sources]},
        after={"merge_id": record.id, "target_id": target.id, "source_ids": source_id_list,
               "fields": chosen_values})
    for customer in everyone:
        session.expire(customer, ["friendships", "addresses"])
    search.mark_dirty(session, [c.id for c in everyone])
    service.refresh_computed_many(session, customers=everyone)
    return record


def _lines_follow_orders(session: Session, order_ids: list[int]) -> None:
    """Order lines repeat their order's customer (orders.models): moved with the orders."""
    if order_ids:
        session.execute(update(OrderLine).where(OrderLine.order_id.in_(order_ids)).values(
            customer_id=select(Order.customer_id).where(Order.id == OrderLine.order_id).scalar_subquery()))


def _repoint(session: Session, model: type[Touch] | type[Address] | type[Order], source_ids: list[int],
             target_id: int) -> list[list[int]]:
    rows = session.execute(select(model.id, model.customer_id).where(model.customer_id.in_(source_ids))).all()
    if rows:
        session.execute(update(model).where(model.customer_id.in_(source_ids)).values(customer_id=target_id))
    return [[row_id, customer_id] for row_id, customer_id in rows if customer_id is not None]


def _move_friendships(session: Session, *, target: Customer, source_ids: list[int]) -> dict[str, Any]:
    target_friendships = {f.account_id: f for f in session.scalars(
        select(Friendship).where(Friendship.customer_id == target.id))}
    moved: list[list[int]] = []
    phones: list[list[int]] = []
    attachments: list[list[int]] = []
    friendship_before: dict[str, dict[str, str]] = {}
    for friendship in session.scalars(select(Friendship).where(Friendship.customer_id.in_(source_ids))
                                      .order_by(Friendship.id)):
        kept = target_friendships.get(friendship.account_id)
        if kept is None:
            # The same account had only the source as a friend: the friendship moves whole.
            moved.append([friendship.id, friendship.customer_id])
            for phone_id, in session.execute(select(Phone.id).where(Phone.friendship_id == friendship.id)):
                phones.append([phone_id, friendship.id, friendship.customer_id])
            session.execute(update(Phone).where(Phone.friendship_id == friendship.id)
                            .values(customer_id=target.id))
            friendship.customer_id = target.id
            target_friendships[friendship.account_id] = friendship
            continue
        # Both were friends of the same account: keep the target's card, fill its gaps.
        before = {"remark_name": kept.remark_name, "description": kept.description}
        if not kept.remark_name and friendship.remark_name:
            kept.remark_name = friendship.remark_name
        if friendship.description and friendship.description not in kept.description:
            # Free text: nothing either side wrote is dropped.
            kept.description = "\n".join(filter(None, [kept.description, friendship.description]))
        if before != {"remark_name": kept.remark_name, "description": kept.description}:
            friendship_before[str(kept.id)] = before
        have = set(session.scalars(select(Phone.number).where(Phone.friendship_id == kept.id)))
        for phone in session.scalars(select(Phone).where(Phone.friendship_id == friendship.id)):
            if phone.number in have:
                continue
            phones.append([phone.id, friendship.id, friendship.customer_id])
            phone.friendship_id, phone.customer_id = kept.id, target.id
            have.add(phone.number)
        for attachment in session.scalars(select(Attachment).where(Attachment.friendship_id == friendship.id)):
            attachments.append([attachment.id, friendship.id])
            attachment.friendship_id = kept.id
    session.flush()
    return {"friendship": moved, "phone": phones, "attachment": attachments, "friendship_before": friendship_before}


def _carry_tags(session: Session, *, target_id: int, source_ids: list[int]) -> list[int]:
    """Manual tags of the sources the target lacks; computed tags are derived afterwards."""
    computed = [k.value for k in COMPUTED_GROUP_KINDS]
    have = set(session.scalars(select(CustomerTag.tag_id).where(CustomerTag.customer_id == target_id)))
    wanted = set(session.scalars(
        select(CustomerTag.tag_id).join(Tag, Tag.id == CustomerTag.tag_id).join(TagGroup, TagGroup.id == Tag.group_id)
        .where(CustomerTag.customer_id.in_(source_ids), TagGroup.kind.notin_(computed))))
    added = sorted(wanted - have)
    for tag_id in added:
        session.add(CustomerTag(customer_id=target_id, tag_id=tag_id))
    session.flush()
    return added


def _carry_custom_values(session: Session, *, target_id: int, source_ids: list[int]) -> dict[str, str | None]:
    """Custom field values the target lacks, from the first source that has one."""
    have = {v.field_id: v for v in session.scalars(
        select(CustomFieldValue).where(CustomFieldValue.customer_id == target_id))}
    before: dict[str, str | None] = {}
    for source_id in source_ids:
        for value in session.scalars(select(CustomFieldValue).where(CustomFieldValue.customer_id == source_id)):
            current = have.get(value.field_id)
            if not value.value or (current is not None and current.value):
                continue
            if current is None:
                before[str(value.field_id)] = None
                current = CustomFieldValue(customer_id=target_id, field_id=value.field_id, value=value.value)
                session.add(current)
                have[value.field_id] = current
            else:
                before.setdefault(str(value.field_id), current.value)
                current.value = value.value
    session.flush()
    return before


# ---------------------------------------------------------------- undo


def get_merge(session: Session, *, merge_id: int, viewer: Viewer) -> CustomerMerge:
    record = session.get(CustomerMerge, merge_id)
    if record is None:
        raise MergeNotFound("Merge not found")
    target = session.get(Customer, record.target_id)
    if target is None or not _visible(session, target.id, viewer):
        raise MergeNotFound("Merge not found")
    return record


def _visible(session: Session, customer_id: int, viewer: Viewer) -> bool:
    if viewer.sees_all_accounts:
        return True
    return session.scalar(select(Friendship.id).where(
        Friendship.customer_id == customer_id, Friendship.account_id.in_(sorted(viewer.account_ids))).limit(1)
    ) is not None


def can_undo(record: CustomerMerge) -> bool:
    return record.undone_at is None and utcnow() - record.created_at <= UNDO_WINDOW


def undo_merge(session: Session, *, merge_id: int, viewer: Viewer) -> CustomerMerge:
    if viewer.role not in MERGING_ROLES:
        raise Forbidden("Your role may not merge customers")
    record = get_merge(session, merge_id=merge_id, viewer=viewer)
    if record.undone_at is not None:
        raise Conflict("This merge has already been undone")
    if not can_undo(record):
        raise Invalid("Merges can only be undone within 30 days")
    target = session.get(Customer, record.target_id)
    assert target is not None  # get_merge checked it
    if target.merged_into_id is not None:
        raise Conflict("The kept customer was merged again since; undo that merge first")
    moves = record.moves
    sources = list(session.scalars(select(Customer).where(Customer.id.in_(record.source_ids))))

    for friendship_id, customer_id in moves.get("friendship", []):
        session.execute(update(Friendship).where(
            Friendship.id == friendship_id, Friendship.customer_id == target.id).values(customer_id=customer_id))
    for phone_id, friendship_id, customer_id in moves.get("phone", []):
        session.execute(update(Phone).where(Phone.id == phone_id).values(
            friendship_id=friendship_id, customer_id=customer_id))
    for attachment_id, friendship_id in moves.get("attachment", []):
        session.execute(update(Attachment).where(Attachment.id == attachment_id).values(friendship_id=friendship_id))
    for friendship_id, before in moves.get("friendship_before", {}).items():
        session.execute(update(Friendship).where(Friendship.id == int(friendship_id)).values(**before))
    for model, key in ((Touch, "touch"), (Address, "address"), (Order, "order")):
        for row_id, customer_id in moves.get(key, []):
            session.execute(update(model).where(and_(model.id == row_id, model.customer_id == target.id))
                            .values(customer_id=customer_id))
    _lines_follow_orders(session, [row[0] for row in moves.get("order", [])])
    from siyu.groups import service as groups_service

    groups_service.restore_members(session, moved=moves.get("group_member", []), target_id=target.id)
    from siyu.sends import service as sends_service
    from siyu.sops import service as sops_service

    sends_service.restore_customers(session, moved=moves.get("send_ledger", []), target_id=target.id)
    sops_service.restore_enrolments(session, moved=moves.get("sop_enrolment", []), target_id=target.id)
    for tag_id in moves.get("tags_added", []):
        session.execute(delete(CustomerTag).where(
            CustomerTag.customer_id == target.id, CustomerTag.tag_id == tag_id))
    for field_id, value in moves.get("custom_before", {}).items():
        row = session.get(CustomFieldValue, (target.id, int(field_id)))
        if value is None and row is not None:
            session.delete(row)
        elif row is not None:
            row.value = value
    session.flush()

    # The WeCom id is unique: the target gives up what it took before sources get theirs back.
    for name, value in moves.get("target_before", {}).items():
        setattr(target, name, value)
    session.flush()
    from siyu.analytics import rollups  # the ladder's counts take the customers back

    rollups.shift(session, [c.id for c in sources if c.merged_into_id is not None], 1)
    for source in sources:
        source.merged_into_id = None
        source.wecom_external_userid = moves.get("sources_before", {}).get(str(source.id), {}).get(
            "wecom_external_userid")
    record.undone_at = utcnow()
    record.undone_by_id = viewer.user_id
    session.add(Touch(customer_id=target.id, user_id=viewer.user_id, kind=TouchKind.system.value,
                      details={"event": "merge_undone", "merge_id": record.id, "sources": record.source_ids}))
    team_service.record_audit(session, actor=viewer, action="unmerge", entity_type="customer", entity_id=target.id,
                              entity_name=target.name,
                              summary=f"{target.name} → {', '.join(f'#{c.id}' for c in sources)}",
                              after={"merge_id": record.id, "source_ids": record.source_ids})
    session.flush()
    everyone = [target, *sources]
    for customer in everyone:
        session.expire(customer, ["friendships", "addresses"])
    search.mark_dirty(session, [c.id for c in everyone])  # rows moved back by plain UPDATEs
    service.refresh_computed_many(session, customers=everyone)
    return record


def list_merges(session: Session, *, viewer: Viewer, limit: int = 50) -> list[CustomerMerge]:
    query = select(CustomerMerge).order_by(CustomerMerge.id.desc()).limit(limit)
    if not viewer.sees_all_accounts:
        query = query.where(select(Friendship.id).where(
            Friendship.customer_id == CustomerMerge.target_id,
            Friendship.account_id.in_(sorted(viewer.account_ids))).exists())
    return list(session.scalars(query))


# ---------------------------------------------------------------- suggestions


def suggest_duplicates(session: Session, *, viewer: Viewer, limit: int = 30) -> list[DuplicateGroup]:
    """Likely duplicates for review: the same phone, the same WeChat id, the same name in the same city."""
    scope = service.visible_customer_clause(viewer)
    live = [Customer.merged_into_id.is_(None), *([scope] if scope is not None else [])]
    groups: list[DuplicateGroup] = []

    by_phone = (select(Phone.number).join(Customer, Customer.id == Phone.customer_id).where(*live)
                .group_by(Phone.number).having(func.count(func.distinct(Phone.customer_id)) > 1)
                .order_by(Phone.number).limit(limit))
    for number in session.scalars(by_phone):
        ids = session.scalars(select(Phone.customer_id).join(Customer, Customer.id == Phone.customer_id)
                              .where(Phone.number == number, *live).distinct().order_by(Phone.customer_id))
        groups.append(DuplicateGroup("phone", number, list(ids)))

    by_wechat = (select(Customer.wechat_id).where(Customer.wechat_id != "", *live)
                 .group_by(Customer.wechat_id).having(func.count() > 1).order_by(Customer.wechat_id).limit(limit))
    for wechat_id in session.scalars(by_wechat):
        ids = session.scalars(select(Customer.id).where(Customer.wechat_id == wechat_id, *live).order_by(Customer.id))
        groups.append(DuplicateGroup("wechat_id", wechat_id, list(ids)))

    by_name = (select(Customer.name, Customer.city).where(Customer.city != "", *live)
               .group_by(Customer.name, Customer.city).having(func.count() > 1)
               .order_by(Customer.name, Customer.city).limit(limit))
    for name, city in session.execute(by_name):
        ids = session.scalars(select(Customer.id).where(Customer.name == name, Customer.city == city, *live)
                              .order_by(Customer.id))
        groups.append(DuplicateGroup("name_city", f"{name} · {city}", list(ids)))

    # One person found by two reasons is shown once, under the strongest reason.
    seen: set[tuple[int, ...]] = set()
    unique = []
    for group in groups:
        key = tuple(group.customer_ids)
        if key not in seen and len(key) > 1:
            seen.add(key)
            unique.append(group)
    return unique
