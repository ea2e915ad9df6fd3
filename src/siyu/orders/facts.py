"""Customers' purchase facts, derived from their orders (the one implementation).

Why here and not in ``orders.service``: ``customers.service.refresh_computed_ids`` — the one
place that keeps every computed fact of a customer current, called by everything that changes a
customer (an order, a refund, a merge, an import) — derives the purchase facts through
``compute`` before it works out the stage, level and 购买 tag, so the facts and what reads them
change in the same transaction. This module imports only models, so the customers domain can
call it without a cycle.

Rules: an order counts when it is matched to the customer and not wholly refunded; what it adds
to the total is what was paid less what was refunded. The favourite category is the one with the
most units bought (ties: the name first in order). A "new launch" purchase is an order holding a
product bought within ``fan_new_launch_days`` of the product's ``launched_at``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from siyu.core.db import among, utcnow
from siyu.orders.models import CustomerPurchaseFacts, MatchState, Order, OrderLine, OrderStatus, Product

CENT = Decimal("0.01")
FactsListener = Callable[[Session, list[int]], None]
_listeners: list[FactsListener] = []


def on_facts_changed(listener: FactsListener) -> FactsListener:
    """Register ``listener(session, customer_ids)``, called in the same transaction after these customers'
    purchase facts were written (RFM scores, segments). Usable as a decorator."""
    _listeners.append(listener)
    return listener


@dataclass(frozen=True)
class Facts:
    purchase_count: int = 0
    total_spent: Decimal = Decimal("0")
    avg_order_value: Decimal = Decimal("0")
    refunded_total: Decimal = Decimal("0")
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    favourite_category: str = ""
    new_launch_purchases: int = 0

    def as_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FACT_COLUMNS}


FACT_COLUMNS = ("purchase_count", "total_spent", "avg_order_value", "refunded_total", "first_purchase_at",
                "last_purchase_at", "favourite_category", "new_launch_purchases")
NONE = Facts()


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite aggregates hand back text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(CENT)


def compute(session: Session, ids: list[int], *, new_launch_days: int) -> dict[int, Facts]:
    """The facts of these customers from their orders (customers without orders are absent)."""
    if not ids:
        return {}
    refunded = OrderStatus.refunded.value
    counted = Order.status != refunded
    totals = session.execute(
        select(Order.customer_id, func.count().filter(counted),
               func.coalesce(func.sum(Order.amount - Order.refunded_amount), 0),
               func.coalesce(func.sum(Order.refunded_amount), 0),
               func.min(Order.paid_at).filter(counted), func.max(Order.paid_at).filter(counted))
        .where(among(session, Order.customer_id, ids), Order.match_state == MatchState.matched.value)
        .group_by(Order.customer_id)).all()
    if not totals:
        return {}
    units: dict[Any, dict[str, int]] = defaultdict(dict)
    for customer_id, category, quantity in session.execute(
            select(OrderLine.customer_id, OrderLine.category, func.sum(OrderLine.quantity))
            .join(Order, Order.id == OrderLine.order_id)
            .where(among(session, OrderLine.customer_id, ids), OrderLine.category != "", counted,
                   Order.match_state == MatchState.matched.value)
            .group_by(OrderLine.customer_id, OrderLine.category)):
        units[customer_id][category] = int(quantity or 0)
    launches: dict[Any, set[int]] = defaultdict(set)
    if new_launch_days > 0 and session.scalar(select(Product.id).where(Product.launched_at.is_not(None)).limit(1)):
        window = timedelta(days=new_launch_days)
        for customer_id, order_id, paid_at, launched_at in session.execute(
                select(OrderLine.customer_id, OrderLine.order_id, OrderLine.paid_at, Product.launched_at)
                .join(Product, Product.id == OrderLine.product_id)
                .join(Order, Order.id == OrderLine.order_id)
                .where(OrderLine.customer_id.in_(ids), Product.launched_at.is_not(None), counted,
                       Order.match_state == MatchState.matched.value)):
            paid, launched = _aware(paid_at), _aware(launched_at)
            if paid is not None and launched is not None and launched <= paid <= launched + window:
                launches[customer_id].add(order_id)
    result: dict[int, Facts] = {}
    for customer_id, count, total, refunded_total, first_at, last_at in totals:
        assert customer_id is not None  # filtered by IN
        count = int(count)
        spent = _money(total)
        favourite = ""
        if units.get(customer_id):
            favourite = min(units[customer_id].items(), key=lambda item: (-item[1], item[0]))[0]
        result[customer_id] = Facts(
            purchase_count=count, total_spent=spent,
            avg_order_value=(spent / count).quantize(CENT) if count else Decimal("0.00"),
            refunded_total=_money(refunded_total), first_purchase_at=_aware(first_at), last_purchase_at=_aware(last_at),
            favourite_category=favourite, new_launch_purchases=len(launches.get(customer_id, ())))
    return result


_FACTS = cast(Table, CustomerPurchaseFacts.__table__)
_WRITE = (update(_FACTS).where(_FACTS.c.customer_id == bindparam("v_customer_id"))
          .values({name: bindparam(f"v_{name}") for name in (*FACT_COLUMNS, "updated_at")}))


def _same(stored: Any, value: Any) -> bool:
    if isinstance(value, Decimal):
        return stored is not None and Decimal(str(stored)) == value
    if isinstance(value, datetime) or value is None:
        return _aware(stored) == value
    return bool(stored == value)


def store(session: Session, ids: list[int], facts: dict[int, Facts]) -> list[int]:
    """Write these customers' facts (rows only where they changed); the ids whose facts changed."""
    stored = {row[0]: row[1:] for row in session.execute(
        select(_FACTS.c.customer_id, *[_FACTS.c[name] for name in FACT_COLUMNS])
        .where(among(session, _FACTS.c.customer_id, ids)))}
    now = utcnow()
    changed: list[int] = []
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    gone = [customer_id for customer_id in stored if customer_id not in facts]
    for customer_id, value in facts.items():
        row = value.as_row()
        before = stored.get(customer_id)
        if before is None:
            inserts.append({"customer_id": customer_id, **row, "updated_at": now})
        elif not all(_same(old, row[name]) for old, name in zip(before, FACT_COLUMNS, strict=True)):
            updates.append({f"v_{k}": v for k, v in row.items()} | {"v_customer_id": customer_id, "v_updated_at": now})
        else:
            continue
        changed.append(customer_id)
    if inserts:
        session.execute(insert(_FACTS), inserts)
    if updates:
        session.execute(_WRITE, updates)
    if gone:
        session.execute(delete(_FACTS).where(_FACTS.c.customer_id.in_(gone)))
        changed.extend(gone)
    if changed:
        for listener in list(_listeners):
            listener(session, changed)
    return changed
