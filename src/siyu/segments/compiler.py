"""The one compiler from customer conditions to SQL: segments, the list's filter, exports, bulk.

Why one: a segment that drives a mass send must select exactly the customers the list showed
when it was built. So the customer list's flat filter (``customers.service.CustomerFilter``)
builds its tag, account and stage conditions with the leaf functions here, and a saved or
unsaved segment (``CustomerFilter.segment_id`` / ``.conditions``) is compiled into the same
WHERE clause beside them — one query path, one scope rule (``visible_customer_clause`` is
added by the list, never by a caller), bound parameters only.

Every leaf is a correlated ``EXISTS`` (or a column test) on ``customer``, so any AND/OR tree
composes; the top-level AND's tag, account and RFM leaves are also returned as *drivers*:
indexes the list may read first when they are narrow (``customers.service._driving_ids``).

A leaf naming a tag, custom field, product, channel or group that no longer exists raises
``SegmentBroken`` (the segment is marked broken with that reason) instead of matching nobody.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, and_, cast, exists, false, func, not_, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from siyu.core.errors import Invalid
from siyu.core.viewer import Viewer
from siyu.customers.models import (
    Customer,
    CustomerTag,
    CustomField,
    CustomFieldValue,
    FieldType,
    Friendship,
    Tag,
    Touch,
    TouchKind,
)
from siyu.segments import schemas as s
from siyu.segments.models import CustomerRfm

# "No private touch": the kinds of touch that are a 1:1 conversation with the customer (私聊).
PRIVATE_TOUCH_KINDS = (TouchKind.chat.value,)


class SegmentBroken(Invalid):
    """The conditions name something that was deleted: the segment cannot be read as it was meant."""


@dataclass(frozen=True)
class DriverSpec:
    """An index a top-level AND leaf can be read from: tags, accounts or RFM segments."""

    kind: str  # "tags", "accounts" or "rfm"
    ids: tuple[int, ...] = ()
    terms: tuple[str, ...] = ()


@dataclass
class Compiled:
    clause: ColumnElement[bool]
    drivers: list[DriverSpec]


# ---------------------------------------------------------------- leaves shared with the flat filter


def has_any_tag(tag_ids: list[int] | tuple[int, ...]) -> ColumnElement[bool]:
    """Holds one of these tags. SELECT of the key columns only: answered from the (customer, tag) index."""
    ids = sorted(set(tag_ids))
    condition = CustomerTag.tag_id == ids[0] if len(ids) == 1 else CustomerTag.tag_id.in_(ids)
    return select(CustomerTag.customer_id).where(CustomerTag.customer_id == Customer.id, condition).exists()


def friend_of(account_ids: list[int] | tuple[int, ...]) -> ColumnElement[bool]:
    ids = sorted(set(account_ids))
    condition = Friendship.account_id == ids[0] if len(ids) == 1 else Friendship.account_id.in_(ids)
    return exists().where(Friendship.customer_id == Customer.id, condition)


def in_stages(stages: list[str]) -> ColumnElement[bool]:
    return Customer.stage == stages[0] if len(stages) == 1 else Customer.stage.in_(sorted(set(stages)))


def in_rfm_segments(segments: list[str]) -> ColumnElement[bool]:
    ids = sorted(set(segments))
    condition = CustomerRfm.segment == ids[0] if len(ids) == 1 else CustomerRfm.segment.in_(ids)
    return select(CustomerRfm.customer_id).where(CustomerRfm.customer_id == Customer.id, condition).exists()


# ---------------------------------------------------------------- the tree


def compile_tree(session: Session, tree: s.ConditionGroup, *, viewer: Viewer,
                 now: datetime | None = None) -> Compiled:
    """The tree as one WHERE condition on ``customer``, and the drivers of its top-level AND."""
    compiler = _Compiler(session, viewer, now or datetime.now(UTC))
    clause = compiler.node(tree)
    drivers: list[DriverSpec] = []
    if tree.kind == "and":
        for leaf in tree.conditions:
            if isinstance(leaf, s.TagCondition) and leaf.match == "any":
                drivers.append(DriverSpec("tags", tuple(sorted(set(leaf.tag_ids)))))
            elif isinstance(leaf, s.AccountCondition):
                drivers.append(DriverSpec("accounts", tuple(sorted(set(leaf.account_ids)))))
            elif isinstance(leaf, s.RfmCondition):
                drivers.append(DriverSpec("rfm", terms=tuple(sorted({v.value for v in leaf.segments}))))
    return Compiled(clause=clause, drivers=drivers)


class _Compiler:
    def __init__(self, session: Session, viewer: Viewer, now: datetime) -> None:
        self.session = session
        self.viewer = viewer
        self.now = now

    def since(self, days: int) -> datetime:
        return self.now - timedelta(days=days)

    def node(self, node: Any) -> ColumnElement[bool]:
        if isinstance(node, s.ConditionGroup):
            parts = [self.node(child) for child in node.conditions]
            if len(parts) == 1:
                return parts[0]
            return and_(*parts) if node.kind == "and" else or_(*parts)
        method = getattr(self, f"leaf_{node.kind}")
        result: ColumnElement[bool] = method(node)
        return result

    # -- the portrait

    def leaf_tag(self, leaf: s.TagCondition) -> ColumnElement[bool]:
        ids = sorted(set(leaf.tag_ids))
        found = set(self.session.scalars(select(Tag.id).where(Tag.id.in_(ids))))
        missing = [i for i in ids if i not in found]
        if missing:
            raise SegmentBroken("Tag {tag_id} in the conditions was deleted", field="tag_ids", tag_id=missing[0])
        if leaf.match == "any":
            return has_any_tag(ids)
        if leaf.match == "none":
            return not_(has_any_tag(ids))
        return and_(*[has_any_tag([i]) for i in ids])

    def leaf_field(self, leaf: s.FieldCondition) -> ColumnElement[bool]:
        column = getattr(Customer, leaf.field)
        return _text_test(column, leaf.op, leaf.value)

    def leaf_custom_field(self, leaf: s.CustomFieldCondition) -> ColumnElement[bool]:
        spec = self.session.get(CustomField, leaf.field_id)
        if spec is None:
            raise SegmentBroken("Custom field {field_id} in the conditions was deleted", field="field_id",
                                field_id=leaf.field_id)
        mine = [CustomFieldValue.customer_id == Customer.id, CustomFieldValue.field_id == spec.id]
        if leaf.op == "empty":
            return not_(exists().where(*mine, CustomFieldValue.value != ""))
        if leaf.op == "not_empty":
            return exists().where(*mine, CustomFieldValue.value != "")
        if leaf.op in ("gte", "lte"):
            value: Any = leaf.value.strip()
            column: Any = CustomFieldValue.value
            if spec.field_type == FieldType.number.value:
                try:
                    value = float(Decimal(value))
                except ArithmeticError as exc:
                    raise Invalid("Not a number: {value}", field="value", value=leaf.value) from exc
                column = cast(CustomFieldValue.value, Float)
            test = column >= value if leaf.op == "gte" else column <= value
            return exists().where(*mine, CustomFieldValue.value != "", test)
        return exists().where(*mine, _text_test(CustomFieldValue.value, leaf.op, leaf.value))

    def leaf_stage(self, leaf: s.StageCondition) -> ColumnElement[bool]:
        return in_stages([v.value for v in leaf.stages])

    def leaf_level(self, leaf: s.LevelCondition) -> ColumnElement[bool]:
        levels = sorted(set(leaf.levels))
        return Customer.level == levels[0] if len(levels) == 1 else Customer.level.in_(levels)

    def leaf_rfm(self, leaf: s.RfmCondition) -> ColumnElement[bool]:
        return in_rfm_segments([v.value for v in leaf.segments])

    # -- orders

    def leaf_bought(self, leaf: s.BoughtCondition) -> ColumnElement[bool]:
        from siyu.orders.models import Order, OrderLine, OrderStatus, Product

        tests: list[ColumnElement[bool]] = [OrderLine.customer_id == Customer.id,
                                            OrderLine.paid_at >= self.since(leaf.days)]
        if leaf.product_ids:
            ids = sorted(set(leaf.product_ids))
            found = set(self.session.scalars(select(Product.id).where(Product.id.in_(ids))))
            missing = [i for i in ids if i not in found]
            if missing:
                raise SegmentBroken("Product {product_id} in the conditions was deleted", field="product_ids",
                                    product_id=missing[0])
            tests.append(OrderLine.product_id.in_(ids))
        if leaf.category.strip():
            tests.append(OrderLine.category == leaf.category.strip())
        # A wholly refunded order is no purchase.
        counted = select(Order.id).where(Order.id == OrderLine.order_id,
                                         Order.status != OrderStatus.refunded.value).exists()
        return select(OrderLine.id).where(*tests, counted).exists()

    def leaf_spent(self, leaf: s.SpentCondition) -> ColumnElement[bool]:
        from siyu.orders.models import COUNTED_STATUSES, Order

        if leaf.days is None:
            return Customer.purchase_total >= leaf.min_amount
        spent = (select(func.coalesce(func.sum(Order.amount - Order.refunded_amount), 0))
                 .where(Order.customer_id == Customer.id, Order.paid_at >= self.since(leaf.days),
                        Order.status.in_([v.value for v in COUNTED_STATUSES]))
                 .scalar_subquery())
        return spent >= leaf.min_amount

    def leaf_no_purchase(self, leaf: s.NoPurchaseCondition) -> ColumnElement[bool]:
        from siyu.orders.models import CustomerPurchaseFacts as Facts

        return not_(select(Facts.customer_id).where(Facts.customer_id == Customer.id,
                                                    Facts.last_purchase_at >= self.since(leaf.days)).exists())

    # -- touches, channels, groups, accounts

    def leaf_no_touch(self, leaf: s.NoTouchCondition) -> ColumnElement[bool]:
        kind = (Touch.kind == PRIVATE_TOUCH_KINDS[0] if len(PRIVATE_TOUCH_KINDS) == 1
                else Touch.kind.in_(PRIVATE_TOUCH_KINDS))
        # (kind, customer, occurred_at) is the touch's own index: a range probe per customer.
        return not_(select(Touch.customer_id).where(kind, Touch.customer_id == Customer.id,
                                                    Touch.occurred_at >= self.since(leaf.days)).exists())

    def leaf_channel(self, leaf: s.ChannelCondition) -> ColumnElement[bool]:
        from siyu.channels.models import Channel, ChannelAdd

        ids = sorted(set(leaf.channel_ids))
        found = set(self.session.scalars(select(Channel.id).where(Channel.id.in_(ids))))
        missing = [i for i in ids if i not in found]
        if missing:
            raise SegmentBroken("Channel {channel_id} in the conditions was deleted", field="channel_ids",
                                channel_id=missing[0])
        return exists().where(ChannelAdd.customer_id == Customer.id, ChannelAdd.channel_id.in_(ids))

    def leaf_group_chat(self, leaf: s.GroupChatCondition) -> ColumnElement[bool]:
        from siyu.groups.models import GroupChat, GroupMember

        ids = sorted(set(leaf.group_ids))
        found = set(self.session.scalars(select(GroupChat.id).where(GroupChat.id.in_(ids))))
        missing = [i for i in ids if i not in found]
        if missing:
            raise SegmentBroken("Group {group_id} in the conditions was deleted", field="group_ids",
                                group_id=missing[0])
        return exists().where(GroupMember.customer_id == Customer.id, GroupMember.group_chat_id.in_(ids),
                              GroupMember.left_at.is_(None))

    def leaf_group_kind(self, leaf: s.GroupKindCondition) -> ColumnElement[bool]:
        from siyu.groups.models import GroupChat, GroupMember

        member = exists().where(GroupMember.customer_id == Customer.id, GroupMember.left_at.is_(None),
                                GroupMember.group_chat_id == GroupChat.id, GroupChat.status == "active",
                                GroupChat.kind.in_(sorted(set(leaf.group_kinds))))
        if leaf.roles:
            member = member.where(GroupMember.role.in_(sorted(set(leaf.roles))))
        return member

    def leaf_account(self, leaf: s.AccountCondition) -> ColumnElement[bool]:
        for account_id in leaf.account_ids:
            if not self.viewer.can_see_account(account_id):
                raise Invalid("Account {account_id} not found", field="account_ids", account_id=account_id)
        return friend_of(leaf.account_ids)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _text_test(column: Any, op: str, value: str) -> ColumnElement[bool]:
    if op == "empty":
        return or_(column.is_(None), column == "")
    if op == "not_empty":
        return and_(column.is_not(None), column != "")
    if op == "contains":
        if not value:
            return true()
        return column.like(f"%{_escape_like(value)}%", escape="\\")
    return column == value if value else false()
