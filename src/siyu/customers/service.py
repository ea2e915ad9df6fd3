"""Business rules of the customer portrait (用户全像).

Why it is shaped this way: operators enrich a customer at every touch, and lists must
filter a million customers by tags, stage and last touch. So every change goes through
``refresh_computed`` which keeps the stored computed facts (contact count, purchases,
level, stage, computed tags, completeness, last touch) current in the same
transaction, and list queries read only indexed columns and the tag-link index.

Scoping: an admin or planner sees every customer; an operator or service user sees a
customer only through a friendship with one of their accounts. A customer outside the
viewer's scope is reported as not found, never as forbidden.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    TextualSelect,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from siyu.accounts.models import Account
from siyu.analytics import transitions as stage_history
from siyu.core import viewer as viewer_masking
from siyu.core.db import UTCDateTime, dialect_insert, integers_of, update_from_values, utcnow
from siyu.core.errors import Invalid, NotFound, TooManyAttempts
from siyu.core.i18n import N_
from siyu.core.models import AppSetting
from siyu.core.pagination import Page, decode_cursor, encode_cursor
from siyu.core.ratelimit import SlidingWindow
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer
from siyu.customers.lifecycle import LifecycleRules
from siyu.customers.models import (
    COMPUTED_GROUP_KINDS,
    CONTACT_KINDS,
    Address,
    Attachment,
    Customer,
    CustomerTag,
    CustomField,
    CustomFieldValue,
    FieldType,
    Friendship,
    FriendshipStatus,
    Phone,
    Stage,
    Tag,
    TagGroup,
    TagGroupKind,
    Touch,
    TouchKind,
)
from siyu.customers.schemas import (
    AddressIn,
    AddressOut,
    AttachmentIn,
    AttachmentOut,
    CustomerIn,
    CustomerOut,
    CustomerSummary,
    CustomerUpdate,
    CustomFieldIn,
    FriendshipOut,
    TagGroupOut,
    TagOut,
    TouchIn,
)
from siyu.customers.search import index as search
from siyu.orders import facts as purchase_facts
from siyu.orders.models import CustomerPurchaseFacts
from siyu.segments import compiler
from siyu.segments import rfm as _rfm  # noqa: F401  (registers RFM rescoring after purchase facts change)
from siyu.segments import schemas as segment_schemas
from siyu.segments.models import CustomerRfm, RfmSegment, Segment, SegmentMember, SegmentMode
from siyu.team import service as team_service

DEFAULTS = json.loads((Path(__file__).with_name("defaults.json")).read_text(encoding="utf-8"))
RULES_KEY = "lifecycle_rules"
RECOMPUTE_BATCH = 500  # customers per batch: keeps IN lists and transactions small
TAG_SEPARATORS = (":", "：", "/")
NON_CONTACT_KINDS = (TouchKind.tag_change, TouchKind.field_change, TouchKind.system)
# Free text that may hold a phone number: masked for viewers who may not see phones.
NOTE_FIELDS = ("objective_notes", "emotional_notes")
PORTRAIT_FIELDS = ("gender", "age_band", "city", "job", "income_band", "family", "objective_notes",
                   "emotional_notes", "source", "wechat_id")


class CustomerNotFound(NotFound):
    pass


class UnknownTag(Invalid):
    pass


# ---------------------------------------------------------------- lifecycle rules


def get_rules(session: Session) -> LifecycleRules:
    row = session.get(AppSetting, RULES_KEY)
    return LifecycleRules.model_validate(row.value if row else DEFAULTS["lifecycle_rules"])


def save_rules(session: Session, *, rules: LifecycleRules, actor: Viewer) -> LifecycleRules:
    row = session.get(AppSetting, RULES_KEY)
    before = row.value if row else DEFAULTS["lifecycle_rules"]
    value = rules.model_dump(mode="json")
    if row is None:
        session.add(AppSetting(key=RULES_KEY, value=value))
    else:
        row.value = value
    team_service.record_audit(session, actor=actor, action="update", entity_type="lifecycle_rules",
                              before=before, after=value)
    session.flush()
    ensure_computed_tags(session, rules=rules)
    return rules


def recompute_all(session: Session, *, batch_size: int = RECOMPUTE_BATCH) -> int:
    """Re-derive every customer's computed facts (after the rules change), in batches."""
    last_id, done = 0, 0
    while True:
        last_id, count = recompute_batch(session, after_id=last_id, batch_size=batch_size)
        if not count:
            return done
        done += count


def recompute_batch(session: Session, *, after_id: int, batch_size: int = RECOMPUTE_BATCH) -> tuple[int, int]:
    """Recompute the next ``batch_size`` customers after ``after_id``: (last id, how many)."""
    batch = list(session.scalars(
        select(Customer.id).where(Customer.id > after_id).order_by(Customer.id).limit(batch_size)))
    if not batch:
        return after_id, 0
    refresh_computed_ids(session, customer_ids=batch, rules=get_rules(session))
    return batch[-1], len(batch)


def count_all_customers(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Customer)) or 0)


# ---------------------------------------------------------------- tags


def ensure_default_tag_groups(session: Session) -> None:
    """Create the seed's five tag groups (来源, 沟通次数, 购买, 人群, 等级) if missing."""
    existing = {g.kind: g for g in session.scalars(select(TagGroup))}
    for spec in DEFAULTS["tag_groups"]:
        if spec["kind"] in existing:
            continue
        group = TagGroup(name=spec["name"], kind=spec["kind"], multi_select=spec["multi_select"],
                         sort_order=spec["sort_order"])
        group.tags = [Tag(name=name, sort_order=i) for i, name in enumerate(spec["tags"])]
        session.add(group)
    session.flush()
    ensure_computed_tags(session, rules=get_rules(session))


def list_tag_groups(session: Session) -> list[TagGroup]:
    return list(session.scalars(
        select(TagGroup).options(selectinload(TagGroup.tags)).order_by(TagGroup.sort_order, TagGroup.id)))


def get_tag_group(session: Session, *, group_id: int) -> TagGroup:
    group = session.get(TagGroup, group_id)
    if group is None:
        raise NotFound("Tag group not found")
    return group


def create_tag_group(session: Session, *, name: str, multi_select: bool, actor: Viewer) -> TagGroup:
    name = name.strip()
    if session.scalar(select(TagGroup).where(TagGroup.name == name)):
        raise Invalid("Tag group {name} already exists", field="name", name=name)
    group = TagGroup(name=name, kind=TagGroupKind.custom.value, multi_select=multi_select, sort_order=100)
    session.add(group)
    session.flush()
    team_service.record_audit(session, actor=actor, action="create", entity_type="tag_group",
                              entity_id=group.id, summary=name)
    return group


def create_tag(session: Session, *, group_id: int, name: str, actor: Viewer) -> Tag:
    group = get_tag_group(session, group_id=group_id)
    if group.is_computed:
        raise Invalid("Tags of group {group} are computed and cannot be edited", field="group",
                      group=group.name)
    name = name.strip()
    if any(t.name == name for t in group.tags):
        raise Invalid("Tag {name} already exists in {group}", field="name", name=name, group=group.name)
    tag = Tag(group_id=group.id, name=name, sort_order=len(group.tags))
    session.add(tag)
    session.flush()
    team_service.record_audit(session, actor=actor, action="create", entity_type="tag",
                              entity_id=tag.id, summary=f"{group.name}:{name}")
    return tag


def _split_tag_name(text: str) -> tuple[str | None, str]:
    for sep in TAG_SEPARATORS:
        if sep in text:
            group, _sep, name = text.partition(sep)
            return group.strip(), name.strip()
    return None, text.strip()


def resolve_tags(session: Session, *, names: list[str], create_missing: bool = True) -> list[Tag]:
    """Tags for names written ``标签`` or ``组:标签``; a new tag needs its group named."""
    groups = {g.name: g for g in list_tag_groups(session)}
    by_name: dict[str, list[Tag]] = defaultdict(list)
    for group in groups.values():
        for tag in group.tags:
            by_name[tag.name].append(tag)
    resolved: list[Tag] = []
    for raw in names:
        group_name, tag_name = _split_tag_name(raw)
        if not tag_name:
            raise UnknownTag("Empty tag name in {value}", field="tags", value=raw)
        if group_name is None:
            matches = by_name.get(tag_name, [])
            if len(matches) != 1:
                message = (N_("Tag {name} is in several groups; write it as group:tag") if matches
                           else N_("Unknown tag {name}; write it as group:tag to create it"))
                raise UnknownTag(message, field="tags", name=tag_name)
            resolved.append(matches[0])
            continue
        named_group = groups.get(group_name)
        if named_group is None:
            raise UnknownTag("Unknown tag group {group}", field="tags", group=group_name)
        found = next((t for t in named_group.tags if t.name == tag_name), None)
        if found is None:
            if named_group.is_computed or not create_missing:
                raise UnknownTag("Unknown tag {name} in group {group}", field="tags", name=tag_name,
                                 group=group_name)
            found = Tag(group_id=named_group.id, name=tag_name, sort_order=len(named_group.tags))
            named_group.tags.append(found)
            session.flush()
        resolved.append(found)
    return resolved


def get_tags(session: Session, *, tag_ids: list[int]) -> list[Tag]:
    """Tags by id (the console's tag chips send ids); any unknown id is a clear error."""
    wanted = set(tag_ids)
    if not wanted:
        return []
    tags = list(session.scalars(select(Tag).where(Tag.id.in_(sorted(wanted))).options(selectinload(Tag.group))))
    if len(tags) != len(wanted):
        raise UnknownTag("Unknown tag", field="tags")
    return tags


def customer_tags(session: Session, *, customer_ids: list[int]) -> dict[int, list[Tag]]:
    if not customer_ids:
        return {}
    rows = session.execute(
        select(CustomerTag.customer_id, Tag)
        .join(Tag, Tag.id == CustomerTag.tag_id)
        .join(TagGroup, TagGroup.id == Tag.group_id)
        .where(CustomerTag.customer_id.in_(customer_ids))
        .order_by(TagGroup.sort_order, TagGroup.id, Tag.sort_order, Tag.id)
    )
    result: dict[int, list[Tag]] = defaultdict(list)
    for customer_id, tag in rows:
        result[customer_id].append(tag)
    return result


def tag_name(tag: Tag) -> str:
    return f"{tag.group.name}:{tag.name}"


def tag_links(session: Session, customer_ids: list[int], group_ids: set[int]) -> dict[int, dict[int, Tag]]:
    """The tags these customers have in these groups: customer id → tag id → tag."""
    links: dict[int, dict[int, Tag]] = defaultdict(dict)
    query = (select(CustomerTag.customer_id, Tag).join(Tag, Tag.id == CustomerTag.tag_id)
             .where(CustomerTag.customer_id.in_(customer_ids), Tag.group_id.in_(sorted(group_ids))))
    for customer_id, tag in session.execute(query):
        links[customer_id][tag.id] = tag
    return links


def add_tags(session: Session, *, customer_ids: list[int], tags: list[Tag]) -> dict[int, tuple[list[str], list[str]]]:
    """Give these customers these manual tags, set-based; single-select groups keep only the new tag.

    Returns, for each customer that changed, the tag names added and removed. Timeline entries,
    change notifications and computed facts are the caller's (a bulk job and a channel's
    adds record them differently).
    """
    for tag in tags:
        if tag.group.is_computed:
            raise Invalid("Tags of group {group} are computed and cannot be edited", field="tags",
                          group=tag.group.name)
    if not customer_ids or not tags:
        return {}
    current = tag_links(session, customer_ids, {t.group_id for t in tags})
    stale: list[tuple[int, int]] = []
    new: list[dict[str, Any]] = []
    changes: dict[int, tuple[list[str], list[str]]] = {}
    now = utcnow()
    for customer_id in dict.fromkeys(customer_ids):
        have = current.get(customer_id, {})
        added: list[str] = []
        removed: list[str] = []
        for tag in tags:
            if tag.id in have:
                continue
            if not tag.group.multi_select:  # a single-choice group keeps only the new tag
                for other in [t for t in have.values() if t.group_id == tag.group_id]:
                    stale.append((customer_id, other.id))
                    removed.append(tag_name(other))
            new.append({"customer_id": customer_id, "tag_id": tag.id, "created_at": now})
            added.append(tag_name(tag))
        if added:
            changes[customer_id] = (added, removed)
    if stale:
        session.execute(delete(CustomerTag).where(tuple_(CustomerTag.customer_id, CustomerTag.tag_id).in_(stale)))
    if new:
        session.execute(insert(CustomerTag), new)
    return changes


def set_customer_tags(
    session: Session, *, customer_id: int, add: list[Tag], remove: list[Tag], viewer: Viewer,
    record_touch: bool = True,
) -> tuple[list[str], list[str]]:
    """Add and remove manual tags; single-select groups keep only the newest tag."""
    customer = get_customer(session, customer_id=customer_id, viewer=viewer)
    for tag in [*add, *remove]:
        if tag.group.is_computed:
            raise Invalid("Tags of group {group} are computed and cannot be edited", field="tags",
                          group=tag.group.name)
    current = {t.id: t for t in customer_tags(session, customer_ids=[customer.id]).get(customer.id, [])}
    wanted = dict(current)
    for tag in remove:
        wanted.pop(tag.id, None)
    for tag in add:
        if not tag.group.multi_select:
            for other in [t for t in wanted.values() if t.group_id == tag.group_id]:
                wanted.pop(other.id)
        wanted[tag.id] = tag
    added = [t for tid, t in wanted.items() if tid not in current]
    removed = [t for tid, t in current.items() if tid not in wanted]
    if removed:
        session.execute(delete(CustomerTag).where(
            CustomerTag.customer_id == customer.id, CustomerTag.tag_id.in_([t.id for t in removed])))
    for tag in added:
        session.add(CustomerTag(customer_id=customer.id, tag_id=tag.id))
    added_names = [f"{t.group.name}:{t.name}" for t in added]
    removed_names = [f"{t.group.name}:{t.name}" for t in removed]
    if (added or removed) and record_touch:
        session.add(Touch(customer_id=customer.id, user_id=viewer.user_id, kind=TouchKind.tag_change.value,
                          details={"added": added_names, "removed": removed_names}))
        team_service.record_audit(session, actor=viewer, action="update", entity_type="customer_tags",
                                  entity_id=customer.id, summary=customer.name,
                                  before={"tags": sorted(f"{t.group.name}:{t.name}" for t in current.values())},
                                  after={"tags": sorted(f"{t.group.name}:{t.name}" for t in wanted.values())})
    if added or removed:
        notify_changed(session, [customer.id], {"tags"})
    session.flush()
    refresh_computed(session, customer=customer)
    return added_names, removed_names


# ---------------------------------------------------------------- scope and lookup


def visible_customer_clause(viewer: Viewer) -> ColumnElement[bool] | None:
    """Customers this viewer may see: friends of their accounts (None: everyone)."""
    if viewer.sees_all_accounts:
        return None
    if not viewer.account_ids:
        return false()
    return exists().where(Friendship.customer_id == Customer.id,
                          Friendship.account_id.in_(sorted(viewer.account_ids)))


_scope_clause = visible_customer_clause


def get_customer(session: Session, *, customer_id: int, viewer: Viewer) -> Customer:
    query = select(Customer).where(Customer.id == customer_id, Customer.merged_into_id.is_(None))
    scope = _scope_clause(viewer)
    if scope is not None:
        query = query.where(scope)
    customer = session.scalar(query)
    if customer is None:
        raise CustomerNotFound("Customer not found")
    return customer


def _visible_account(session: Session, *, account_id: int, viewer: Viewer) -> Account:
    account = session.get(Account, account_id)
    if account is None or not viewer.can_see_account(account_id):
        raise Invalid("Account {account_id} not found", field="account_id", account_id=account_id)
    return account


# ---------------------------------------------------------------- create / update


def create_customer(session: Session, *, data: CustomerIn, viewer: Viewer) -> Customer:
    _visible_account(session, account_id=data.account_id, viewer=viewer)
    tags = resolve_tags(session, names=data.tags)
    customer = Customer(name=data.name)
    for key in PORTRAIT_FIELDS:
        value = getattr(data, key)
        if value is not None:
            setattr(customer, key, value)
    session.add(customer)
    session.flush()
    friendship = Friendship(customer_id=customer.id, account_id=data.account_id,
                            remark_name=data.remark_name, salutation=data.salutation.strip(),
                            description=data.description)
    session.add(friendship)
    session.flush()
    _replace_phones(session, friendship=friendship, phones=data.phones)
    if data.custom_fields:
        _set_custom_values(session, customer=customer, values=data.custom_fields)
    session.add(Touch(customer_id=customer.id, account_id=data.account_id, user_id=viewer.user_id,
                      kind=TouchKind.system.value, details={"event": "created"}))
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="customer",
                              entity_id=customer.id, summary=customer.name,
                              after=data.model_dump(mode="json"))
    if tags:
        set_customer_tags(session, customer_id=customer.id, add=tags, remove=[], viewer=viewer,
                          record_touch=False)
    else:
        refresh_computed(session, customer=customer)
    return customer


def add_friendship(session: Session, *, customer_id: int, account_id: int, viewer: Viewer,
                   remark_name: str = "", channel_state: str = "") -> Friendship:
    customer = get_customer(session, customer_id=customer_id, viewer=viewer)
    _visible_account(session, account_id=account_id, viewer=viewer)
    friendship = session.scalar(select(Friendship).where(
        Friendship.customer_id == customer.id, Friendship.account_id == account_id))
    if friendship is None:
        friendship = Friendship(customer_id=customer.id, account_id=account_id, remark_name=remark_name,
                                channel_state=channel_state)
        session.add(friendship)
    else:
        friendship.status = FriendshipStatus.active.value
        friendship.removed_at = None
    session.flush()
    refresh_computed(session, customer=customer)
    return friendship


def _friendship_for(session: Session, *, customer: Customer, account_id: int | None,
                    viewer: Viewer) -> Friendship:
    candidates = [f for f in customer.friendships if viewer.can_see_account(f.account_id)]
    if account_id is not None:
        candidates = [f for f in candidates if f.account_id == account_id]
        if not candidates:
            raise Invalid("This customer is not a friend of account {account_id}", field="account_id",
                          account_id=account_id)
    if not candidates:
        raise Invalid("This customer has no friendship with your accounts", field="account_id")
    return candidates[0]


def _replace_phones(session: Session, *, friendship: Friendship, phones: list[str]) -> None:
    session.execute(delete(Phone).where(Phone.friendship_id == friendship.id))
    search.mark_dirty(session, [friendship.customer_id])  # the numbers are search terms too
    seen: set[str] = set()
    for raw in phones:
        number = normalise_phone(raw)
        if number and number not in seen:
            seen.add(number)
            session.add(Phone(friendship_id=friendship.id, customer_id=friendship.customer_id, number=number))
    session.flush()
    session.expire(friendship, ["phones"])


def normalise_phone(raw: str) -> str:
    return "".join(ch for ch in raw if ch.isdigit() or ch == "+")


# Domains that mirror customers elsewhere (the WeCom write-back) hear which fields an edit
# changed; the customers domain never imports them.
ChangeListener = Callable[[Session, list[int], set[str]], None]
_change_listeners: list[ChangeListener] = []


def on_customer_changed(listener: ChangeListener) -> ChangeListener:
    if listener not in _change_listeners:
        _change_listeners.append(listener)
    return listener


def notify_changed(session: Session, customer_ids: list[int], fields: set[str]) -> None:
    """Tell the listeners that these customers' ``fields`` changed (one call for a whole bulk batch)."""
    if not customer_ids:
        return
    for listener in _change_listeners:
        listener(session, customer_ids, fields)


# Domains that keep something derived from the timeline (用户维系's next-due day) hear which customers'
# touches were written: called after every touch write that refreshes the computed facts
# (refresh_computed_ids: the console, bulk, sync, imports) and after the inbox flood's set-based
# count_new_contacts — one call per batch, in the same transaction.
TouchListener = Callable[[Session, list[int]], None]
_touch_listeners: list[TouchListener] = []


def on_touches_written(listener: TouchListener) -> TouchListener:
    if listener not in _touch_listeners:
        _touch_listeners.append(listener)
    return listener


# 订单 build on customers: a purchase typed on a timeline becomes an order through the listener
# ``orders.service`` registers when it is imported (by the app and the worker, as every domain is).
PurchaseListener = Callable[[Session, Touch, Viewer], object]
_purchase_listeners: list[PurchaseListener] = []


def on_purchase_touch(listener: PurchaseListener) -> PurchaseListener:
    if listener not in _purchase_listeners:
        _purchase_listeners.append(listener)
    return listener


def touches_written(session: Session, customer_ids: list[int]) -> None:
    if not customer_ids:
        return
    for listener in _touch_listeners:
        listener(session, customer_ids)


def update_customer(session: Session, *, customer_id: int, data: CustomerUpdate, viewer: Viewer) -> Customer:
    customer = get_customer(session, customer_id=customer_id, viewer=viewer)
    changes = data.model_dump(exclude_unset=True)
    if not viewer.may_see_phones:  # they edited masked text: the masks they kept are the numbers again
        for key in NOTE_FIELDS:
            if changes.get(key) is not None:
                changes[key] = viewer_masking.restore_masked(changes[key], getattr(customer, key))
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key in ("name", *PORTRAIT_FIELDS):
        if key in changes and changes[key] is not None and getattr(customer, key) != changes[key]:
            before[key] = getattr(customer, key)
            after[key] = changes[key]
            setattr(customer, key, changes[key])
    if changes.get("salutation") is not None:
        changes["salutation"] = changes["salutation"].strip()
    remark_keys = {"remark_name", "salutation", "description", "phones"} & {
        k for k, v in changes.items() if v is not None}
    if remark_keys:
        friendship = _friendship_for(session, customer=customer, account_id=data.account_id, viewer=viewer)
        if not viewer.may_see_phones and changes.get("description") is not None:
            changes["description"] = viewer_masking.restore_masked(changes["description"], friendship.description)
        for key in ("remark_name", "salutation", "description"):
            if key in remark_keys and getattr(friendship, key) != changes[key]:
                before[key] = getattr(friendship, key)
                after[key] = changes[key]
                setattr(friendship, key, changes[key])
        if "phones" in remark_keys:
            old = [p.number for p in friendship.phones]
            new = [normalise_phone(p) for p in changes["phones"]]
            if old != new:
                before["phones"], after["phones"] = old, new
                _replace_phones(session, friendship=friendship, phones=changes["phones"])
        if remark_keys & set(after) - {"salutation"}:  # the salutation is Siyu's own: WeCom has no such field
            friendship.siyu_edited_at = utcnow()
    if data.custom_fields:
        before_fields, after_fields = _set_custom_values(session, customer=customer, values=data.custom_fields)
        before.update(before_fields)
        after.update(after_fields)
    if data.tags is not None:
        wanted = resolve_tags(session, names=data.tags)
        manual_now = [t for t in customer_tags(session, customer_ids=[customer.id]).get(customer.id, [])
                      if not t.group.is_computed]
        wanted_ids = {t.id for t in wanted}
        set_customer_tags(session, customer_id=customer.id, add=wanted,
                          remove=[t for t in manual_now if t.id not in wanted_ids], viewer=viewer)
    if after:
        customer.updated_at = utcnow()
        session.add(Touch(customer_id=customer.id, user_id=viewer.user_id, kind=TouchKind.field_change.value,
                          details={"fields": sorted(after)}))
        team_service.record_audit(session, actor=viewer, action="update", entity_type="customer",
                                  entity_id=customer.id, summary=customer.name, before=_jsonable(before),
                                  after=_jsonable(after))
    session.flush()
    refresh_computed(session, customer=customer)
    if after:
        notify_changed(session, [customer.id], set(after))
    return customer


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=str))


# ---------------------------------------------------------------- custom fields


def list_custom_fields(session: Session, *, include_retired: bool = False) -> list[CustomField]:
    """The fields forms, imports and filters offer; retired ones (kept with their values) only when asked."""
    query = select(CustomField).order_by(CustomField.sort_order, CustomField.id)
    if not include_retired:
        query = query.where(CustomField.retired_at.is_(None))
    return list(session.scalars(query))


def create_custom_field(session: Session, *, data: CustomFieldIn, actor: Viewer) -> CustomField:
    if session.scalar(select(CustomField).where(CustomField.key == data.key)):
        raise Invalid("Field {key} already exists", field="key", key=data.key)
    if data.field_type is FieldType.choice and not data.choices:
        raise Invalid("A choice field needs at least one choice", field="choices")
    item = CustomField(key=data.key, label=data.label, field_type=data.field_type.value, choices=data.choices)
    session.add(item)
    session.flush()
    team_service.record_audit(session, actor=actor, action="create", entity_type="custom_field",
                              entity_id=item.id, summary=data.label, after=data.model_dump(mode="json"))
    return item


def _coerce_custom_value(spec: CustomField, value: Any) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    if spec.field_type == FieldType.number.value:
        try:
            Decimal(text)
        except InvalidOperation as exc:
            raise Invalid("{label} must be a number", field=f"custom_fields.{spec.key}", label=spec.label) from exc
    elif spec.field_type == FieldType.date.value:
        try:
            datetime.strptime(text, "%Y-%m-%d")
        except ValueError as exc:
            raise Invalid("{label} must be a date like 2024-05-01", field=f"custom_fields.{spec.key}",
                          label=spec.label) from exc
    elif spec.field_type == FieldType.choice.value and text not in spec.choices:
        raise Invalid("{label} must be one of: {choices}", field=f"custom_fields.{spec.key}",
                      label=spec.label, choices="、".join(spec.choices))
    if len(text) > 2000:
        raise Invalid("{label} is too long", field=f"custom_fields.{spec.key}", label=spec.label)
    return text


def _set_custom_values(session: Session, *, customer: Customer,
                       values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    specs = {f.key: f for f in list_custom_fields(session)}
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, raw in values.items():
        spec = specs.get(key)
        if spec is None:
            raise Invalid("Unknown custom field {key}", field=f"custom_fields.{key}", key=key)
        value = _coerce_custom_value(spec, raw)
        row = session.get(CustomFieldValue, (customer.id, spec.id))
        old = row.value if row else ""
        if old == value:
            continue
        before[f"custom.{key}"], after[f"custom.{key}"] = old, value
        if row is None:
            session.add(CustomFieldValue(customer_id=customer.id, field_id=spec.id, value=value))
        else:
            row.value = value
    session.flush()
    return before, after


def custom_values(session: Session, *, customer_id: int) -> dict[str, str]:
    rows = session.execute(
        select(CustomField.key, CustomFieldValue.value)
        .join(CustomFieldValue, CustomFieldValue.field_id == CustomField.id)
        .where(CustomFieldValue.customer_id == customer_id))
    return {key: value for key, value in rows}


# ---------------------------------------------------------------- addresses and attachments


def add_address(session: Session, *, customer_id: int, data: AddressIn, viewer: Viewer) -> Address:
    customer = get_customer(session, customer_id=customer_id, viewer=viewer)
    address = Address(customer_id=customer.id, **data.model_dump())
    session.add(address)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="address",
                              entity_id=address.id, summary=customer.name, after=data.model_dump())
    refresh_computed(session, customer=customer)
    return address


def delete_address(session: Session, *, customer_id: int, address_id: int, viewer: Viewer) -> None:
    customer = get_customer(session, customer_id=customer_id, viewer=viewer)
    address = session.get(Address, address_id)
    if address is None or address.customer_id != customer.id:
        raise NotFound("Address not found")
    before = AddressIn.model_validate(address, from_attributes=True).model_dump()
    session.delete(address)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="delete", entity_type="address",
                              entity_id=address_id, summary=customer.name, before=before)
    refresh_computed(session, customer=customer)


def add_attachment(session: Session, *, customer_id: int, data: AttachmentIn, viewer: Viewer) -> Attachment:
    customer = get_customer(session, customer_id=customer_id, viewer=viewer)
    friendship = _friendship_for(session, customer=customer, account_id=data.account_id, viewer=viewer)
    attachment = Attachment(friendship_id=friendship.id, kind=data.kind, title=data.title, url=data.url)
    session.add(attachment)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="attachment",
                              entity_id=attachment.id, summary=customer.name, after=data.model_dump())
    refresh_computed(session, customer=customer)
    return attachment


# ---------------------------------------------------------------- touches (timeline)


def add_touch(session: Session, *, customer_id: int, data: TouchIn, viewer: Viewer) -> Touch:
    customer = get_customer(session, customer_id=customer_id, viewer=viewer)
    if data.kind in NON_CONTACT_KINDS:
        raise Invalid("Touches of kind {kind} are recorded by the system", field="kind", kind=data.kind.value)
    if data.account_id is not None:
        _friendship_for(session, customer=customer, account_id=data.account_id, viewer=viewer)
    if data.kind is TouchKind.purchase and data.amount is None:
        raise Invalid("A purchase needs an amount", field="amount")
    if data.kind is not TouchKind.purchase and data.amount is not None:
        raise Invalid("Only a purchase has an amount", field="amount")
    occurred_at = data.occurred_at or utcnow()
    if occurred_at > utcnow():
        raise Invalid("A touch cannot happen in the future", field="occurred_at")
    touch = Touch(customer_id=customer.id, account_id=data.account_id, user_id=viewer.user_id,
                  kind=data.kind.value, content=data.content, amount=data.amount, occurred_at=occurred_at)
    session.add(touch)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="touch", entity_id=touch.id,
                              summary=customer.name, after={"kind": data.kind.value, "content": data.content[:200]})
    if data.kind is TouchKind.purchase:  # a purchase is an order (orders.service listens: it builds on customers)
        for listener in _purchase_listeners:
            listener(session, touch, viewer)
    refresh_computed(session, customer=customer)
    return touch


def touch_content(touch: Touch, viewer: Viewer) -> str:
    """A timeline entry's text as this viewer may see it."""
    return viewer.text(touch.content or "")


# Timeline details that quote free text: the values of a WeCom sync conflict (描述 in both versions).
QUOTED_DETAILS = ("siyu", "wecom")


def touch_details(touch: Touch, viewer: Viewer) -> dict[str, Any] | None:
    """A timeline entry's details as this viewer may see them (quoted text masked)."""
    details = touch.details
    if viewer.may_see_phones or not isinstance(details, dict):
        return details
    shown = dict(details)
    for key in QUOTED_DETAILS:
        if isinstance(shown.get(key), dict):
            shown[key] = {name: viewer.text(value) if isinstance(value, str) else value
                          for name, value in shown[key].items()}
    return shown


def list_touches(session: Session, *, customer_id: int, viewer: Viewer, limit: int = 50,
                 cursor: str | None = None) -> Page[Touch]:
    customer = get_customer(session, customer_id=customer_id, viewer=viewer)
    query = select(Touch).where(Touch.customer_id == customer.id)
    if cursor:
        try:
            at_text, last_id = decode_cursor(cursor)
            at, last_id = datetime.fromisoformat(str(at_text)), int(last_id)
        except (ValueError, TypeError) as exc:  # a hand-edited cursor is bad input, not a crash
            raise Invalid("Invalid cursor", field="cursor") from exc
        query = query.where(or_(Touch.occurred_at < at, and_(Touch.occurred_at == at, Touch.id < last_id)))
    rows = list(session.scalars(query.order_by(Touch.occurred_at.desc(), Touch.id.desc()).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.occurred_at.isoformat(), last.id])
    return Page(items=rows[:limit], next_cursor=next_cursor)


# ---------------------------------------------------------------- computed facts


# Completeness: the share of these parts that are filled — the customer's own text fields, then
# what other rows give them (a remark name, a manual tag, a phone, a description, an address, a picture).
COMPLETENESS_OWN = ("gender", "age_band", "city", "job", "objective_notes", "emotional_notes")
COMPLETENESS_LINKED = ("remark_name", "tags", "phone", "description", "address", "picture")
COMPLETENESS_PARTS = COMPLETENESS_LINKED + COMPLETENESS_OWN


def refresh_computed(session: Session, *, customer: Customer, rules: LifecycleRules | None = None) -> None:
    refresh_computed_many(session, customers=[customer], rules=rules)


def ensure_computed_tags(session: Session, *, rules: LifecycleRules) -> dict[tuple[str, str], Tag]:
    """Every bucket and level tag the rules can give, created in the rules' order."""
    wanted = {
        TagGroupKind.contact_count.value: [b.label for b in sorted(rules.contact_buckets, key=lambda b: b.min)],
        TagGroupKind.purchase.value: [b.label for b in sorted(rules.purchase_buckets, key=lambda b: b.min)],
        TagGroupKind.level.value: [lv.label for lv in sorted(rules.levels, key=lambda lv: lv.min_total)],
    }
    groups = session.scalars(
        select(TagGroup).where(TagGroup.kind.in_(list(wanted))).options(selectinload(TagGroup.tags)))
    result: dict[tuple[str, str], Tag] = {}
    for group in groups:
        existing = {t.name: t for t in group.tags}
        for position, label in enumerate(wanted[group.kind]):
            tag = existing.get(label)
            if tag is None:
                tag = Tag(group_id=group.id, name=label, sort_order=position)
                group.tags.append(tag)
            result[(group.kind, label)] = tag
    session.flush()
    return result


def refresh_computed_many(session: Session, *, customers: list[Customer],
                          rules: LifecycleRules | None = None) -> None:
    """Re-derive the stored computed facts of these customers (loaded objects stay current)."""
    refresh_computed_ids(session, customer_ids=[c.id for c in customers], rules=rules)


# Stored computed facts: what refresh_computed_ids writes, and compares before writing.
COMPUTED_COLUMNS = ("contact_count", "purchase_count", "purchase_total", "last_touch_at", "stage", "level",
                    "completeness")


def refresh_computed_ids(session: Session, *, customer_ids: list[int], rules: LifecycleRules | None = None) -> None:
    """Re-derive the stored computed facts of these customers with four set-based queries.

    Contact and purchase counts, spend, last touch, stage, level, the computed tags of
    沟通次数 / 购买 / 等级, and completeness — the one implementation of these rules. Nothing is
    loaded as ORM objects: one query reads each customer's stored facts and what completeness
    asks about (as EXISTS tests), one the touch aggregates, one the computed tags; only the
    customers whose facts changed are written, in one executemany UPDATE. Objects of these
    customers already in the session are given the new values.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return
    rules = rules or get_rules(session)
    session.flush()
    computed_tags = ensure_computed_tags(session, rules=rules)
    for start in range(0, len(ids), RECOMPUTE_BATCH):
        _refresh_chunk(session, ids[start:start + RECOMPUTE_BATCH], rules, computed_tags)
    touches_written(session, ids)


def _refresh_chunk(session: Session, ids: list[int], rules: LifecycleRules,
                   computed_tags: dict[tuple[str, str], Tag]) -> None:
    contact_kinds = [k.value for k in CONTACT_KINDS]
    stats = {row[0]: row[1:] for row in session.execute(
        select(
            Touch.customer_id,
            func.count().filter(Touch.kind.in_(contact_kinds)),
            func.max(Touch.occurred_at).filter(Touch.kind.notin_([k.value for k in NON_CONTACT_KINDS])),
        ).where(Touch.customer_id.in_(ids)).group_by(Touch.customer_id))}
    # Purchases come from orders (orders.facts): written first, then read by the stage, level and 购买 tag.
    purchases = purchase_facts.compute(session, ids, new_launch_days=rules.fan_new_launch_days)
    purchase_facts.store(session, ids, purchases)
    computed_kinds = [k.value for k in COMPUTED_GROUP_KINDS]
    friend = Friendship.customer_id == Customer.id
    facts = select(
        Customer.id, Customer.stage_override, *[getattr(Customer, c) for c in COMPUTED_COLUMNS],
        *[getattr(Customer, part) != "" for part in COMPLETENESS_OWN],
        exists().where(friend, Friendship.remark_name != ""),
        exists().where(CustomerTag.customer_id == Customer.id, CustomerTag.tag_id.in_(
            select(Tag.id).join(TagGroup, TagGroup.id == Tag.group_id).where(TagGroup.kind.notin_(computed_kinds)))),
        exists().where(Phone.customer_id == Customer.id),
        exists().where(friend, Friendship.description != ""),
        exists().where(Address.customer_id == Customer.id),
        exists().where(friend, Attachment.friendship_id == Friendship.id),
    ).where(Customer.id.in_(ids))
    current: dict[int, set[int]] = defaultdict(set)
    for customer_id, tag_id in session.execute(
        select(CustomerTag.customer_id, CustomerTag.tag_id).join(Tag, Tag.id == CustomerTag.tag_id)
        .join(TagGroup, TagGroup.id == Tag.group_id)
        .where(CustomerTag.customer_id.in_(ids), TagGroup.kind.in_(computed_kinds))
    ):
        current[customer_id].add(tag_id)
    stale: list[tuple[int, int]] = []
    missing: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    moved: list[tuple[int, str, str]] = []  # stage changes, recorded as transitions (analytics)
    own_count = len(COMPLETENESS_OWN)
    # The rules' buckets for each distinct value, worked out once per chunk (most customers share a few).
    stage_of = _memo(lambda pair: override_free_stage(rules, *pair))
    contact_bucket, purchase_bucket = _memo(rules.contact_bucket), _memo(rules.purchase_bucket)
    level_of = _memo(rules.level_for)
    loaded_objects = {obj.id: obj for obj in session.identity_map.values() if isinstance(obj, Customer)}
    for row in session.execute(facts):
        customer_id, override = row[0], row[1]
        stored = dict(zip(COMPUTED_COLUMNS, row[2:2 + len(COMPUTED_COLUMNS)], strict=True))
        filled = row[2 + len(COMPUTED_COLUMNS):]
        contacts, last_at = stats.get(customer_id, (0, None))
        bought = purchases.get(customer_id, purchase_facts.NONE)
        if isinstance(last_at, str):  # SQLite aggregates hand back text
            last_at = datetime.fromisoformat(last_at)
        if last_at is not None and last_at.tzinfo is None:
            last_at = last_at.replace(tzinfo=UTC)
        value: dict[str, Any] = {"contact_count": int(contacts), "purchase_count": bought.purchase_count,
                                 "purchase_total": bought.total_spent, "last_touch_at": last_at}
        value["stage"] = override or stage_of((value["contact_count"], value["purchase_count"],
                                               bought.new_launch_purchases))
        value["level"] = level_of(value["purchase_total"])
        value["completeness"] = round(100 * sum(bool(f) for f in filled) / (own_count + len(COMPLETENESS_LINKED)))
        labels = (
            (TagGroupKind.contact_count.value, contact_bucket(value["contact_count"])),
            (TagGroupKind.purchase.value, purchase_bucket(value["purchase_count"])),
            (TagGroupKind.level.value, value["level"]),
        )
        wanted = {computed_tags[pair].id for pair in labels if pair[1] and pair in computed_tags}
        have = current.get(customer_id, set())
        stale.extend((customer_id, tag_id) for tag_id in have - wanted)
        missing.extend({"customer_id": customer_id, "tag_id": tag_id} for tag_id in wanted - have)
        if any(_differs(stored[key], value[key]) for key in COMPUTED_COLUMNS):
            changes.append({"id": customer_id, **value})
        if stored["stage"] != value["stage"]:
            moved.append((customer_id, stored["stage"], value["stage"]))
        loaded = loaded_objects.get(customer_id)
        if loaded is not None:
            for key in COMPUTED_COLUMNS:
                set_committed_value(loaded, key, value[key])
    now = utcnow()
    if changes:  # Core executemany: no ORM bookkeeping per row
        session.execute(_WRITE_COMPUTED, [{f"v_{k}": v for k, v in change.items()} | {"v_updated_at": now}
                                          for change in changes])
    stage_history.record(session, moved, at=now)
    if stale:
        session.execute(delete(CustomerTag).where(tuple_(CustomerTag.customer_id, CustomerTag.tag_id).in_(stale)))
    if missing:
        session.execute(insert(_CUSTOMER_TAG_TABLE), [row | {"created_at": now} for row in missing])


_CUSTOMER_TABLE = cast(Table, Customer.__table__)
_CUSTOMER_TAG_TABLE = cast(Table, CustomerTag.__table__)
_WRITE_COMPUTED = (update(_CUSTOMER_TABLE).where(_CUSTOMER_TABLE.c.id == bindparam("v_id"))
                   .values({key: bindparam(f"v_{key}") for key in (*COMPUTED_COLUMNS, "updated_at")}))


def override_free_stage(rules: LifecycleRules, contacts: int, purchases: int, new_launch: int = 0) -> str:
    return rules.stage_for(contacts=contacts, purchases=purchases, new_launch=new_launch).value


def _memo(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    known: dict[Any, Any] = {}

    def cached(value: Any) -> Any:
        if value not in known:
            known[value] = function(value)
        return known[value]

    return cached


def _differs(stored: Any, value: Any) -> bool:
    if isinstance(stored, str) and isinstance(value, datetime):  # SQLite text from a raw column read
        stored = datetime.fromisoformat(stored)
    if isinstance(stored, datetime) and stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    if isinstance(value, Decimal) and stored is not None:
        return Decimal(str(stored)) != value
    return bool(stored != value)


_WRITE_PURCHASES = (update(_CUSTOMER_TABLE).where(_CUSTOMER_TABLE.c.id == bindparam("v_id")).values(
    purchase_count=bindparam("v_purchase_count"), purchase_total=bindparam("v_purchase_total"),
    stage=bindparam("v_stage"), level=bindparam("v_level"),
    last_touch_at=bindparam("v_last_touch_at", type_=UTCDateTime()), updated_at=bindparam("v_updated_at")))


def refresh_purchases(session: Session, *, customer_ids: list[int], touched_at: dict[int, datetime] | None = None,
                      rules: LifecycleRules | None = None) -> None:
    """What orders change, for many customers at once (order imports, pushes): set-based, no ORM.

    The purchase facts (orders.facts), then what reads them — purchase count and total, stage, level,
    the 购买 and 等级 tags — and the last touch when new purchase entries reached the timeline
    (``touched_at``). The same rules as ``refresh_computed_ids``, which re-derives everything else too.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return
    rules = rules or get_rules(session)
    touched_at = touched_at or {}
    session.flush()
    computed_tags = ensure_computed_tags(session, rules=rules)
    kinds = (TagGroupKind.purchase.value, TagGroupKind.level.value)
    tag_ids = {pair: tag.id for pair, tag in computed_tags.items() if pair[0] in kinds}
    stage_of = _memo(lambda triple: override_free_stage(rules, *triple))
    purchase_bucket, level_of = _memo(rules.purchase_bucket), _memo(rules.level_for)
    now = utcnow()
    for start in range(0, len(ids), RECOMPUTE_BATCH):
        chunk = ids[start:start + RECOMPUTE_BATCH]
        purchases = purchase_facts.compute(session, chunk, new_launch_days=rules.fan_new_launch_days)
        purchase_facts.store(session, chunk, purchases)
        table = _CUSTOMER_TABLE.c
        current: dict[int, set[int]] = defaultdict(set)
        for customer_id, tag_id in session.execute(
                select(CustomerTag.customer_id, CustomerTag.tag_id)
                .where(CustomerTag.customer_id.in_(chunk), CustomerTag.tag_id.in_(sorted(set(tag_ids.values()))))):
            current[customer_id].add(tag_id)
        changes: list[dict[str, Any]] = []
        moved: list[tuple[int, str, str]] = []
        stale: list[tuple[int, int]] = []
        missing: list[dict[str, Any]] = []
        for row in session.execute(select(table.id, table.contact_count, table.purchase_count, table.purchase_total,
                                          table.stage, table.stage_override, table.level, table.last_touch_at)
                                   .where(table.id.in_(chunk))):
            bought = purchases.get(row.id, purchase_facts.NONE)
            stage = row.stage_override or stage_of((int(row.contact_count), bought.purchase_count,
                                                    bought.new_launch_purchases))
            level = level_of(bought.total_spent)
            last = row.last_touch_at
            if isinstance(last, str):
                last = datetime.fromisoformat(last)
            if last is not None and last.tzinfo is None:
                last = last.replace(tzinfo=UTC)
            latest = touched_at.get(row.id)
            if latest is not None and (last is None or latest > last):
                last = latest
            if (row.purchase_count != bought.purchase_count or _differs(row.purchase_total, bought.total_spent)
                    or row.stage != stage or row.level != level or last != row.last_touch_at):
                changes.append({"v_id": row.id, "v_purchase_count": bought.purchase_count,
                                "v_purchase_total": bought.total_spent, "v_stage": stage, "v_level": level,
                                "v_last_touch_at": last, "v_updated_at": now})
            if row.stage != stage:
                moved.append((row.id, row.stage, stage))
            wanted = {tag_ids[pair] for pair in ((TagGroupKind.purchase.value, purchase_bucket(bought.purchase_count)),
                                                 (TagGroupKind.level.value, level)) if pair in tag_ids}
            have = current.get(row.id, set())
            stale.extend((row.id, tag_id) for tag_id in have - wanted)
            missing.extend({"customer_id": row.id, "tag_id": tag_id, "created_at": now} for tag_id in wanted - have)
        if changes:
            session.execute(_WRITE_PURCHASES, changes)
        stage_history.record(session, moved, at=now)
        if stale:
            session.execute(delete(CustomerTag).where(tuple_(CustomerTag.customer_id, CustomerTag.tag_id).in_(stale)))
        if missing:
            session.execute(insert(_CUSTOMER_TAG_TABLE), missing)
    loaded = [obj for obj in session.identity_map.values() if isinstance(obj, Customer) and obj.id in set(ids)]
    for obj in loaded:
        session.expire(obj)


_CONTACT_FIGURES = (("id", "INTEGER"), ("contact_count", "INTEGER"), ("last_touch_at", "TIMESTAMP"), ("stage", "TEXT"))


def count_new_contacts(session: Session, *, contacts: dict[int, int], last_at: dict[int, datetime],
                       rules: LifecycleRules | None = None) -> None:
    """New two-way contacts of many customers (touches already written), set-based for floods.

    What a contact can change — the contact count, last touch, stage and the 沟通次数 tag — moved
    with a few plain statements instead of re-deriving every fact (refresh_computed_many) through
    the ORM; the same rules decide.
    """
    ids = sorted(contacts)
    if not ids:
        return
    rules = rules or get_rules(session)
    table = Customer.__table__.c
    launches = func.coalesce(CustomerPurchaseFacts.new_launch_purchases, 0).label("launches")
    wanted = integers_of(session, ids)  # from the list, each customer by primary key (a plan stale statistics keep)
    rows = session.connection().execute(select(
        table.id, table.contact_count, table.purchase_count, table.stage, table.stage_override, table.last_touch_at,
        launches).select_from(wanted).join(Customer, table.id == wanted.c.value)
        .outerjoin(CustomerPurchaseFacts, CustomerPurchaseFacts.customer_id == table.id)).all()
    bucket_tags = {label: tag for (kind, label), tag in ensure_computed_tags(session, rules=rules).items()
                   if kind == TagGroupKind.contact_count.value}
    changes: list[dict[str, Any]] = []
    moved: list[tuple[int, str, str]] = []
    stale: list[tuple[int, int]] = []
    missing: list[dict[str, Any]] = []
    for row in rows:
        count = int(row.contact_count) + contacts[row.id]
        latest = last_at.get(row.id)
        if row.last_touch_at is not None and (latest is None or row.last_touch_at > latest):
            latest = row.last_touch_at
        stage = row.stage_override or rules.stage_for(contacts=count, purchases=int(row.purchase_count),
                                                      new_launch=int(row.launches)).value
        changes.append({"id": row.id, "contact_count": count, "last_touch_at": latest, "stage": stage})
        if row.stage != stage:
            moved.append((row.id, row.stage, stage))
        before, after = rules.contact_bucket(int(row.contact_count)), rules.contact_bucket(count)
        if before != after:
            if before in bucket_tags:
                stale.append((row.id, bucket_tags[before].id))
            if after in bucket_tags:
                missing.append({"customer_id": row.id, "tag_id": bucket_tags[after].id, "created_at": utcnow()})
    customer_table = cast(Table, Customer.__table__)
    connection = session.connection()
    # One computed UPDATE per 1,000 customers (an executemany bound every value of every row in Python).
    update_from_values(session, customer_table, changes, key="id", figures=_CONTACT_FIGURES,
                       sets={name: f"v.{name}" for name, _kind in _CONTACT_FIGURES if name != "id"})
    stage_history.record(session, moved)
    if stale:
        connection.execute(delete(CustomerTag).where(tuple_(CustomerTag.customer_id, CustomerTag.tag_id).in_(stale)))
    if missing:
        connection.execute(dialect_insert(session, CustomerTag.__table__).on_conflict_do_nothing(), missing)
    touches_written(session, ids)


# ---------------------------------------------------------------- lists


SORTS = ("last_touch", "created", "name")


@dataclass
class CustomerFilter:
    """One filter object drives the console list, the API list, exports and bulk actions."""

    q: str = ""
    tag_ids: list[int] = field(default_factory=list)
    tag_names: list[str] = field(default_factory=list)
    stage: str | None = None
    account_id: int | None = None
    source: str | None = None
    last_touch_before: datetime | None = None
    last_touch_after: datetime | None = None
    sort: str = "last_touch"
    rfm: str | None = None  # an RFM segment (segments.models.RfmSegment)
    # A saved segment (its conditions, or a static one's snapshot), and/or an unsaved condition tree
    # (segments.schemas.ConditionGroup as JSON): compiled by segments.compiler beside the rest.
    segment_id: int | None = None
    conditions: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """As job parameters and audit entries keep it (times as ISO text)."""
        data = asdict(self)
        for key in ("last_touch_before", "last_touch_after"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CustomerFilter:
        values = dict(data)
        for key in ("last_touch_before", "last_touch_after"):
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        return cls(**values)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class _Driver:
    """A filter that can also be read from its own index: "the customers with these tags"."""

    kind: str  # "tags", "accounts", "rfm", "segment" (a static segment's members) or "search"
    ids: tuple[int, ...] = ()
    terms: tuple[str, ...] = ()
    postgres: bool = False
    phones: tuple[str, ...] = ()  # a search's phone terms, when its digits may match phone numbers

    def customer_ids(self) -> Select[Any] | TextualSelect:
        if self.kind == "tags":
            return select(CustomerTag.customer_id).where(CustomerTag.tag_id.in_(self.ids))
        if self.kind == "search":
            return search.candidate_ids(self.terms, postgres=self.postgres, phones=self.phones)
        if self.kind == "rfm":
            return select(CustomerRfm.customer_id).where(CustomerRfm.segment.in_(self.terms))
        if self.kind == "segment":
            return select(SegmentMember.customer_id).where(SegmentMember.segment_id.in_(self.ids))
        return select(Friendship.customer_id).where(Friendship.account_id.in_(self.ids))

    def size(self) -> Select[Any]:
        return select(func.count()).select_from(self.customer_ids().subquery())

    def holds(self, customer_id: Any) -> ColumnElement[bool]:
        """This driver's index holds that customer id (a probe, for narrowing another driver's read)."""
        # SELECT of key columns only: each probe is answered from the index alone.
        if self.kind == "tags":
            return select(CustomerTag.customer_id).where(CustomerTag.customer_id == customer_id,
                                                         CustomerTag.tag_id.in_(self.ids)).exists()
        if self.kind == "rfm":
            return select(CustomerRfm.customer_id).where(CustomerRfm.customer_id == customer_id,
                                                         CustomerRfm.segment.in_(self.terms)).exists()
        if self.kind == "segment":
            return select(SegmentMember.customer_id).where(SegmentMember.segment_id.in_(self.ids),
                                                           SegmentMember.customer_id == customer_id).exists()
        return select(Friendship.customer_id).where(Friendship.customer_id == customer_id,
                                                    Friendship.account_id.in_(self.ids)).exists()


def _filter_clauses(session: Session, flt: CustomerFilter, viewer: Viewer) -> list[ColumnElement[bool]]:
    return _filter_parts(session, flt, viewer)[0]


def _filter_parts(session: Session, flt: CustomerFilter,
                  viewer: Viewer) -> tuple[list[ColumnElement[bool]], list[_Driver]]:
    clauses: list[ColumnElement[bool]] = [Customer.merged_into_id.is_(None)]
    drivers: list[_Driver] = []
    scope = _scope_clause(viewer)
    if scope is not None:
        clauses.append(scope)
        if viewer.account_ids:
            drivers.append(_Driver("accounts", tuple(sorted(viewer.account_ids))))
    if flt.account_id is not None:
        if not viewer.can_see_account(flt.account_id):
            raise Invalid("Account {account_id} not found", field="account_id", account_id=flt.account_id)
        clauses.append(compiler.friend_of([flt.account_id]))
        drivers.append(_Driver("accounts", (flt.account_id,)))
    if flt.stage:
        if flt.stage not in {s.value for s in Stage}:
            raise Invalid("Unknown stage {stage}", field="stage", stage=flt.stage)
        clauses.append(compiler.in_stages([flt.stage]))
    if flt.rfm:
        if flt.rfm not in {s.value for s in RfmSegment}:
            raise Invalid("Unknown RFM segment {segment}", field="rfm", segment=flt.rfm)
        clauses.append(compiler.in_rfm_segments([flt.rfm]))
        drivers.append(_Driver("rfm", terms=(flt.rfm,)))
    if flt.source:
        clauses.append(Customer.source == flt.source)
    if flt.last_touch_before is not None:
        clauses.append(Customer.last_touch_at < flt.last_touch_before)
    if flt.last_touch_after is not None:
        clauses.append(Customer.last_touch_at >= flt.last_touch_after)
    tag_groups: list[tuple[int, int]] = []  # (tag id, group id)
    if flt.tag_ids:
        rows = session.execute(select(Tag.id, Tag.group_id).where(Tag.id.in_(flt.tag_ids)))
        tag_groups.extend((tag_id, group_id) for tag_id, group_id in rows)
        if len(tag_groups) != len(set(flt.tag_ids)):
            raise UnknownTag("Unknown tag in filter", field="tag")
    if flt.tag_names:
        tag_groups.extend((t.id, t.group_id) for t in resolve_tags(session, names=flt.tag_names, create_missing=False))
    # AND across tag groups, OR within one group.
    by_group: dict[int, set[int]] = defaultdict(set)
    for tag_id, group_id in tag_groups:
        by_group[group_id].add(tag_id)
    for tag_ids in by_group.values():
        clauses.append(compiler.has_any_tag(sorted(tag_ids)))
        drivers.append(_Driver("tags", tuple(sorted(tag_ids))))
    if flt.segment_id is not None:
        _segment_parts(session, flt.segment_id, viewer, clauses, drivers)
    if flt.conditions is not None:
        _tree_parts(session, flt.conditions, viewer, clauses, drivers)
    q = flt.q.strip()
    if q:
        clauses.append(_text_match(session, q, viewer, drivers))
    return clauses, drivers


def _tree_parts(session: Session, conditions: dict[str, Any], viewer: Viewer,
                clauses: list[ColumnElement[bool]], drivers: list[_Driver]) -> None:
    try:
        tree = segment_schemas.parse_tree(conditions)
    except ValidationError as exc:
        raise Invalid("Invalid conditions: {detail}", field="conditions",
                      detail=segment_schemas.describe_error(exc)) from exc
    compiled = compiler.compile_tree(session, tree, viewer=viewer)
    clauses.append(compiled.clause)
    drivers.extend(_Driver(d.kind, d.ids, d.terms) for d in compiled.drivers)


def _plan_key(session: Session, flt: CustomerFilter, viewer: Viewer) -> str | None:
    """When a condition tree is part of this filter: the filter and scope as text (its plan's cache key)."""
    if flt.conditions is None:
        if flt.segment_id is None:
            return None
        segment = session.get(Segment, flt.segment_id)
        if segment is None or segment.mode != SegmentMode.dynamic.value:
            return None
    scope = "all" if viewer.sees_all_accounts else ",".join(map(str, sorted(viewer.account_ids)))
    return json.dumps([flt.to_json(), scope], sort_keys=True, default=str)


def _segment_parts(session: Session, segment_id: int, viewer: Viewer,
                   clauses: list[ColumnElement[bool]], drivers: list[_Driver]) -> None:
    """A saved segment: a static one's snapshot members, a dynamic one's conditions compiled now."""
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise NotFound("Segment not found")
    if segment.mode == SegmentMode.static.value:
        clauses.append(select(SegmentMember.customer_id).where(
            SegmentMember.segment_id == segment.id, SegmentMember.customer_id == Customer.id).exists())
        drivers.append(_Driver("segment", (segment.id,)))
        return
    _tree_parts(session, segment.conditions, viewer, clauses, drivers)


SEARCH_RATE = SlidingWindow(seconds=60.0)  # per user id, in this process


def check_search_rate(viewer: Viewer, q: str) -> None:
    """Refuse a user's search past ``SIYU_SEARCH_RATE_PER_MINUTE`` (guessing numbers needs many)."""
    limit = get_settings().search_rate_per_minute
    if not q.strip() or viewer.user_id is None or limit <= 0:
        return
    if not SEARCH_RATE.allow(viewer.user_id, limit):
        raise TooManyAttempts("Too many searches; wait a minute and try again")


def _text_match(session: Session, q: str, viewer: Viewer, drivers: list[_Driver]) -> ColumnElement[bool]:
    """The search box: fragments of name, WeChat ID, remark name and description; digits also phones.

    For a viewer who may not see phones, what they cannot see is not a search key: phone
    numbers are not searched, and phone-like text in remarks and descriptions is hidden before
    the fragment is looked for (``siyu_hide_phones``), so trying numbers recovers nothing. A
    scoped viewer's search reads only the remarks of their own accounts, as they see them.
    """
    pattern = f"%{_escape_like(q)}%"
    hide = not viewer.may_see_phones and any(ch.isdigit() for ch in q)
    postgres = search.is_postgres(session)

    def contains(column: Any) -> ColumnElement[bool]:
        # SQLite's LIKE already ignores ASCII case (its lower() knows no more); PostgreSQL needs ILIKE.
        return column.ilike(pattern, escape="\\") if postgres else column.like(pattern, escape="\\")

    def remark(column: Any) -> ColumnElement[bool]:
        return contains(search.hide_phones(column) if hide else column)

    friendship = [Friendship.customer_id == Customer.id]
    if not viewer.sees_all_accounts:
        friendship.append(Friendship.account_id.in_(sorted(viewer.account_ids)))
    text_match = or_(
        contains(Customer.name),
        contains(Customer.wechat_id),
        exists().where(*friendship, or_(remark(Friendship.remark_name), remark(Friendship.description))),
    )
    terms = search.query_terms(q)
    digits = normalise_phone(q)
    phones = viewer.may_see_phones and len(digits) >= PHONE_QUERY_MIN_DIGITS and digits == q
    if phones:
        text_match = or_(text_match, exists().where(
            Phone.customer_id == Customer.id, Phone.number.like(f"%{_escape_like(digits)}%", escape="\\")))
    if terms:
        # The index finds the candidates (customers holding every character pair, or every digit
        # triple of a phone number when digits may match phones); the substring test confirms them.
        drivers.append(_Driver("search", terms=tuple(terms), postgres=postgres,
                               phones=tuple(search.phone_terms(digits)) if phones else ()))
    return text_match


# Digits typed into the search box are looked up in phone numbers from this many on.
PHONE_QUERY_MIN_DIGITS = 3


# A list walks its sort index and tests each customer against the filters, so it reads
# about (limit + 1) / (share of customers passing every filter) rows: instant for broad
# filters, a walk down the whole index for narrow ones. When one filter matches fewer
# customers than that walk would read, reading that filter's own index and sorting the
# matches is far cheaper. Sizes only steer the plan, never the result, so they are
# estimates cached for a few minutes.
PLAN_SIZE_TTL_SECONDS = 300.0
PLAN_SIZE_CACHE_ENTRIES = 2000
_plan_sizes: dict[tuple[Any, _Driver | None], tuple[float, int]] = {}


def _estimated_size(session: Session, driver: _Driver | None) -> int:
    """Customers matching the driver (None: all customers), cached per database."""
    cache_key = (session.get_bind(), driver)
    now = time.monotonic()
    hit = _plan_sizes.get(cache_key)
    if hit is not None and now - hit[0] < PLAN_SIZE_TTL_SECONDS:
        return hit[1]
    query = driver.size() if driver is not None else select(func.max(Customer.id))
    size = int(session.scalar(query) or 0)
    if len(_plan_sizes) >= PLAN_SIZE_CACHE_ENTRIES:
        _plan_sizes.clear()
    _plan_sizes[cache_key] = (now, size)
    return size


# A search drives the list (its candidates are confirmed, then sorted) when the index gives
# fewer candidates than this. With more, a sample of them shows how many are real matches:
# when enough are, the list walks its sort order and stops at a full page; when few are
# (pairs that occur apart, "送礼盒"), confirming the candidates is cheaper than a walk that
# would test every customer. A count always reads candidates: it stops at its cap.
SEARCH_DRIVE_LIMIT = 20_000
SEARCH_SAMPLE = 500
SEARCH_DENSE_SHARE = 0.05


def _search_size(session: Session, driver: _Driver) -> int:
    """Candidates of a search, counted only up to SEARCH_DRIVE_LIMIT so common words stay cheap."""
    capped = select(func.count()).select_from(
        select(literal_column("1")).select_from(driver.customer_ids().subquery()).limit(SEARCH_DRIVE_LIMIT)
        .subquery())
    return int(session.scalar(capped) or 0)


def _search_drives(session: Session, driver: _Driver, clauses: list[ColumnElement[bool]]) -> bool:
    if _search_size(session, driver) < SEARCH_DRIVE_LIMIT:
        return True
    first = select(driver.customer_ids().subquery().c.id).limit(SEARCH_SAMPLE).subquery()
    confirmed = select(func.count()).select_from(Customer).where(Customer.id.in_(select(first.c.id)), *clauses)
    return int(session.scalar(confirmed) or 0) < SEARCH_DENSE_SHARE * SEARCH_SAMPLE


Driving = Select[Any] | TextualSelect


def _driving_ids(session: Session, drivers: list[_Driver], clauses: list[ColumnElement[bool]], *,
                 limit: int, plan_key: str | None = None) -> Driving | None:
    searches = [d for d in drivers if d.kind == "search"]
    drivers = [d for d in drivers if d.kind != "search"]
    for driver in searches:
        if _search_drives(session, driver, clauses):
            return driver.customer_ids()
    if not drivers:
        return None
    total = _estimated_size(session, None)
    if total <= 0:
        return None
    sizes = [(_estimated_size(session, d), d) for d in drivers]
    if plan_key is not None:
        return _condition_driving_ids(session, sizes, clauses, total=total, limit=limit, plan_key=plan_key)
    share = 1.0
    for size, _driver in sizes:
        share *= min(1.0, max(size, 1) / total)
    walk = (limit + 1) / share
    smallest, driver = min(sizes, key=lambda pair: pair[0])
    # A driven row costs a lookup plus its share of the sort: about twice a walked row.
    return driver.customer_ids() if 2 * smallest < walk else None


# A segment's conditions beyond its drivers (bought in N days, no chat for N days, …) have no size
# to read, so a sample of the smallest driver's customers shows what share passes them all. A
# second driver of comparable size narrows that read inside the indexes (a probe of its index per
# id) before any customer row is read.
CONDITION_SAMPLE = 500
INTERSECT_RATIO = 10


_plan_shares: dict[tuple[Any, str, _Driver], tuple[float, int, int]] = {}


def _condition_driving_ids(session: Session, sizes: list[tuple[int, _Driver]], clauses: list[ColumnElement[bool]],
                           *, total: int, limit: int, plan_key: str) -> Driving | None:
    sizes = sorted(sizes, key=lambda pair: pair[0])
    size, first = sizes[0]
    candidates: Any = first.customer_ids()
    # The sample: the first customers of the smallest driver, each tested against every condition.
    sample = select(candidates.subquery().c[0]).limit(CONDITION_SAMPLE)
    sampled = select(func.count()).select_from(Customer).where(Customer.id.in_(sample))
    passed = select(func.count()).select_from(Customer).where(Customer.id.in_(sample), *clauses)
    cache_key = (session.get_bind(), plan_key, first)
    now = time.monotonic()
    hit = _plan_shares.get(cache_key)
    if hit is not None and now - hit[0] < PLAN_SIZE_TTL_SECONDS:
        seen, hits = hit[1], hit[2]
    else:
        seen, hits = (int(v or 0) for v in session.execute(select(sampled.scalar_subquery(),
                                                                  passed.scalar_subquery())).one())
        if len(_plan_shares) >= PLAN_SIZE_CACHE_ENTRIES:
            _plan_shares.clear()
        _plan_shares[cache_key] = (now, seen, hits)
    if seen == 0:
        return candidates  # nobody to drive from: an empty read
    share = max(size, 1) / total * (hits + 0.5) / seen
    walk = (limit + 1) / min(1.0, share)
    if len(sizes) > 1 and sizes[1][0] <= INTERSECT_RATIO * max(size, 1):
        # The smallest driver's read, each id probed in the next driver's index (index-only).
        candidates = candidates.where(sizes[1][1].holds(candidates.selected_columns[0]))
    # A driven row costs a lookup plus its share of the sort: about twice a walked row.
    return candidates if 2 * size < walk else None


def _keyset(sort: str, cursor: str | None) -> tuple[list[Any], ColumnElement[bool] | None]:
    if sort not in SORTS:
        raise Invalid("Unknown sort {sort}", field="sort", sort=sort)
    if sort == "created":
        order = [Customer.created_at.desc(), Customer.id.desc()]
    elif sort == "name":
        order = [Customer.name.asc(), Customer.id.asc()]
    else:
        order = [Customer.last_touch_at.desc().nulls_last(), Customer.id.desc()]
    if not cursor:
        return order, None
    values = decode_cursor(cursor)
    if len(values) != 3 or values[0] != sort:
        raise Invalid("Invalid cursor", field="cursor")
    _sort, value, last_id = values
    try:  # a hand-edited cursor is bad input, not a crash
        last_id = int(last_id)
        at = datetime.fromisoformat(value) if sort != "name" and value is not None else None
    except (ValueError, TypeError) as exc:
        raise Invalid("Invalid cursor", field="cursor") from exc
    if sort == "name":
        if not isinstance(value, str):
            raise Invalid("Invalid cursor", field="cursor")
        return order, or_(Customer.name > value, and_(Customer.name == value, Customer.id > last_id))
    column = Customer.created_at if sort == "created" else Customer.last_touch_at
    if at is None:  # already into the customers never touched (sorted last)
        return order, and_(column.is_(None), Customer.id < last_id)
    after = or_(column < at, and_(column == at, Customer.id < last_id))
    if sort == "last_touch":
        after = or_(after, column.is_(None))
    return order, after


def _cursor_for(sort: str, customer: Customer) -> str:
    if sort == "name":
        value: Any = customer.name
    else:
        at = customer.created_at if sort == "created" else customer.last_touch_at
        value = at.isoformat() if at else None
    return encode_cursor([sort, value, customer.id])


def list_customers(session: Session, *, flt: CustomerFilter, viewer: Viewer, limit: int = 50,
                   cursor: str | None = None) -> Page[Customer]:
    limit = max(1, min(limit, 200))
    order, after = _keyset(flt.sort, cursor)
    clauses, drivers = _filter_parts(session, flt, viewer)
    query = select(Customer).where(*clauses)
    driving_ids = _driving_ids(session, drivers, clauses, limit=limit, plan_key=_plan_key(session, flt, viewer))
    if driving_ids is not None:
        query = query.where(Customer.id.in_(driving_ids))
    if after is not None:
        query = query.where(after)
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    next_cursor = _cursor_for(flt.sort, rows[limit - 1]) if len(rows) > limit else None
    return Page(items=rows[:limit], next_cursor=next_cursor)


def matching_ids(session: Session, *, flt: CustomerFilter, viewer: Viewer, after_id: int = 0,
                 limit: int = 1000) -> list[int]:
    """The next ids (in id order, after ``after_id``) of the customers this filter matches.

    Bulk actions and exports walk "every customer that matches" with this: the filter is read
    again for each batch, so customers changed meanwhile are judged as they are now.
    """
    clauses = _filter_clauses(session, flt, viewer)
    query = select(Customer.id).where(*clauses, Customer.id > after_id).order_by(Customer.id).limit(limit)
    return list(session.scalars(query))


def count_matching(session: Session, *, flt: CustomerFilter, viewer: Viewer) -> int:
    """The exact number of customers a filter matches (for a confirmation, not for every list page)."""
    clauses = _filter_clauses(session, flt, viewer)
    return int(session.scalar(select(func.count()).select_from(Customer).where(*clauses)) or 0)


@dataclass
class CountResult:
    value: int
    exact: bool
    # Past the cap: matches in evenly spread samples of the id range, scaled up.
    estimate: int | None = None


# Samples for estimating a large count: this many windows of consecutive ids across the range.
ESTIMATE_WINDOWS = 20
ESTIMATE_WINDOW_IDS = 1000


def count_customers(session: Session, *, flt: CustomerFilter, viewer: Viewer, cap: int) -> CountResult:
    """Exact up to ``cap``; past it an estimate ("约 12 万") instead of scanning everything."""
    clauses, drivers = _filter_parts(session, flt, viewer)
    searched = next((d for d in drivers if d.kind == "search"), None)
    if searched is not None:
        # Candidates in the index's order, each confirmed as it is read, until the cap.
        candidates = searched.customer_ids().subquery()
        query = select(Customer.id).join_from(candidates, Customer, Customer.id == candidates.c.id).where(*clauses)
    else:
        query = select(Customer.id).where(*clauses)
        driving_ids = _driving_ids(session, drivers, clauses, limit=cap, plan_key=_plan_key(session, flt, viewer))
        if driving_ids is not None:
            query = query.where(Customer.id.in_(driving_ids))
    inner = query.limit(cap + 1).subquery()
    value, reached = session.execute(select(func.count(), func.max(inner.c.id)).select_from(inner)).one()
    value = int(value or 0)
    if value <= cap:
        return CountResult(value=value, exact=True)
    if searched is not None:
        # The candidates came in id order: the matches found up to the id reached, scaled to all ids.
        highest = int(session.scalar(select(func.max(Customer.id))) or 0)
        return CountResult(value=cap, exact=False, estimate=max(cap + 1, round(value * highest / max(reached, 1))))
    return CountResult(value=cap, exact=False, estimate=max(cap + 1, _estimate_count(session, clauses)))


def _estimate_count(session: Session, clauses: list[ColumnElement[bool]]) -> int:
    highest = int(session.scalar(select(func.max(Customer.id))) or 0)
    step = highest // ESTIMATE_WINDOWS
    if step <= ESTIMATE_WINDOW_IDS:  # small enough to count outright
        return int(session.scalar(select(func.count()).select_from(Customer).where(*clauses)) or 0)
    windows = [Customer.id.between(i * step + 1, i * step + ESTIMATE_WINDOW_IDS) for i in range(ESTIMATE_WINDOWS)]
    hits = int(session.scalar(select(func.count()).select_from(Customer).where(or_(*windows), *clauses)) or 0)
    return round(hits * highest / (ESTIMATE_WINDOWS * ESTIMATE_WINDOW_IDS))


# ---------------------------------------------------------------- presentation helpers


mask_phone = viewer_masking.mask_phone


def load_friendships(session: Session, *, customer_ids: list[int]) -> dict[int, list[Friendship]]:
    if not customer_ids:
        return {}
    rows = session.scalars(
        select(Friendship).where(Friendship.customer_id.in_(customer_ids))
        .options(selectinload(Friendship.phones), selectinload(Friendship.attachments))
        .order_by(Friendship.id))
    result: dict[int, list[Friendship]] = defaultdict(list)
    for friendship in rows:
        result[friendship.customer_id].append(friendship)
    return result


def channel_names(session: Session, *, states: set[str]) -> dict[str, str]:
    """Channel names by their contact-way ``state`` (a code nobody should have to read)."""
    from siyu.channels.models import Channel

    if not states:
        return {}
    rows = session.execute(select(Channel.key, Channel.name).where(Channel.key.in_(sorted(states))))
    return {key: name for key, name in rows}


def account_names(session: Session) -> dict[int, str]:
    return {a.id: a.display_name for a in session.scalars(select(Account))}


def stage_counts(session: Session, *, viewer: Viewer) -> dict[str, int]:
    query = select(Customer.stage, func.count()).where(Customer.merged_into_id.is_(None)).group_by(Customer.stage)
    scope = _scope_clause(viewer)
    if scope is not None:
        query = query.where(scope)
    counts = {stage.value: 0 for stage in Stage}
    counts.update({stage: count for stage, count in session.execute(query)})
    return counts


# ---------------------------------------------------------------- API shapes


def _tag_out(tag: Tag) -> TagOut:
    return TagOut(id=tag.id, name=tag.name, group_id=tag.group_id, group=tag.group.name)


def _visible_friendships(friendships: list[Friendship], viewer: Viewer) -> list[Friendship]:
    return [f for f in friendships if viewer.can_see_account(f.account_id)]


def to_summaries(session: Session, *, customers: list[Customer], viewer: Viewer) -> list[CustomerSummary]:
    ids = [c.id for c in customers]
    tags = customer_tags(session, customer_ids=ids)
    friendships = load_friendships(session, customer_ids=ids)
    result = []
    for customer in customers:
        mine = _visible_friendships(friendships.get(customer.id, []), viewer)
        result.append(CustomerSummary(
            id=customer.id, name=customer.name, remark_name=next((f.remark_name for f in mine if f.remark_name), ""),
            wechat_id=customer.wechat_id, stage=customer.stage, level=customer.level,
            contact_count=customer.contact_count, purchase_count=customer.purchase_count,
            last_touch_at=customer.last_touch_at, completeness=customer.completeness,
            account_ids=[f.account_id for f in mine], tags=[_tag_out(t) for t in tags.get(customer.id, [])],
            created_at=customer.created_at))
    return result


def to_detail(session: Session, *, customer: Customer, viewer: Viewer) -> CustomerOut:
    (summary,) = to_summaries(session, customers=[customer], viewer=viewer)
    names = account_names(session)
    friendships = _visible_friendships(load_friendships(session, customer_ids=[customer.id]).get(customer.id, []),
                                       viewer)
    show = viewer.phone
    portrait = {key: getattr(customer, key) for key in PORTRAIT_FIELDS if key != "wechat_id"}
    for key in NOTE_FIELDS:
        portrait[key] = viewer.text(portrait[key])
    return CustomerOut(
        **summary.model_dump(),
        **portrait,
        purchase_total=customer.purchase_total,
        total_spent=customer.purchase_total,
        friendships=[FriendshipOut(
            id=f.id, account_id=f.account_id, account_name=names.get(f.account_id, ""), remark_name=f.remark_name,
            salutation=f.salutation, description=viewer.text(f.description), phones=[show(p.number) for p in f.phones],
            status=f.status, channel_state=f.channel_state, added_at=f.added_at,
            attachments=[AttachmentOut.model_validate(a) for a in f.attachments]) for f in friendships],
        addresses=[AddressOut.model_validate(a).model_copy(update={"phone": show(a.phone) if a.phone else ""})
                   for a in customer.addresses],
        custom_fields=custom_values(session, customer_id=customer.id),
        updated_at=customer.updated_at,
        rfm_segment=session.scalar(select(CustomerRfm.segment).where(CustomerRfm.customer_id == customer.id)),
    )


def to_tag_groups(groups: list[TagGroup]) -> list[TagGroupOut]:
    return [TagGroupOut(id=g.id, name=g.name, kind=TagGroupKind(g.kind), multi_select=g.multi_select,
                        computed=g.is_computed, tags=[_tag_out(t) for t in g.tags]) for g in groups]
