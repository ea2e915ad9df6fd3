"""Business rules of orders: writing them idempotently, matching buyers, refunds, the review queue.

Why it is shaped this way: every way in — a file import, ``POST /api/v1/orders``, a shop's webhook,
the console — hands ``upsert_orders`` a list of ``OrderData``; it is the one writer. An order is
``source`` + ``order_no``: the same pair again updates the order, never adds one, so a shop that
pushes an order twice and a file that carries it once more leave one order. Writes are set-based
(one query per lookup per batch, multi-row INSERTs), so a 500,000-row import is batches of this
same function.

Matching a buyer, in order: the customer id the sender names, the unionid, the WeCom external user
id, a phone on a customer's card, then the order's own buyer name + phone against customers'
addresses. An order nobody matches is kept with ``match_state = unmatched`` — the review queue —
never dropped. Every changed customer's purchase facts, stage, level and 购买 tag are re-derived in
the same transaction (``customers.service.refresh_computed_ids`` → ``orders.facts``).

Scoping: an admin or planner sees every order; an operator sees the orders of customers they see
(friends of their accounts) and the unmatched orders sold through their accounts. An operator's
orders are matched only to customers they see.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, delete, false, func, insert, or_, select, true, update
from sqlalchemy.orm import Session

from siyu.channels.models import ChannelAdd
from siyu.core.db import UTCDateTime, among, insert_ids, utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import N_
from siyu.core.pagination import Page, decode_cursor, encode_cursor
from siyu.core.settings import local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import Address, Customer, Friendship, FriendshipStatus, Phone, Touch, TouchKind
from siyu.customers.phones import normalise_mobile
from siyu.customers.schemas import CustomerIn
from siyu.orders.models import (
    CONSOLE_SOURCE,
    COUNTED_STATUSES,
    MatchedBy,
    MatchState,
    Order,
    OrderLine,
    OrderSource,
    OrderStatus,
    Product,
)
from siyu.team import service as team_service

MAX_AMOUNT = Decimal("100000000")  # 1 亿: above it is a typo (and Numeric(12, 2) holds no more)
MAX_ORDERS_PER_REQUEST = 1000
MAX_LINES_PER_ORDER = 200
CENT = Decimal("0.01")
STATUS_LABELS = {
    OrderStatus.paid.value: N_("order.paid"),
    OrderStatus.shipped.value: N_("order.shipped"),
    OrderStatus.completed.value: N_("order.completed"),
    OrderStatus.refunded.value: N_("order.refunded"),
    OrderStatus.partly_refunded.value: N_("order.partly_refunded"),
}


class OrderNotFound(NotFound):
    pass


# ---------------------------------------------------------------- what every way in hands over


@dataclass(frozen=True)
class Buyer:
    customer_id: int | None = None
    unionid: str = ""
    external_userid: str = ""
    phone: str = ""  # normalised mainland mobile, or as given
    name: str = ""


@dataclass(frozen=True)
class LineData:
    sku: str = ""
    name: str = ""
    quantity: int = 1
    price: Decimal = Decimal("0")
    category: str = ""


@dataclass
class OrderData:
    source: str
    order_no: str
    paid_at: datetime
    amount: Decimal
    buyer: Buyer = field(default_factory=Buyer)
    status: str = OrderStatus.paid.value
    discount: Decimal = Decimal("0")
    coupon_code: str = ""
    refunded_amount: Decimal = Decimal("0")
    store: str = ""
    account_id: int | None = None
    shipped_at: datetime | None = None
    completed_at: datetime | None = None
    refunded_at: datetime | None = None
    note: str = ""
    lines: list[LineData] = field(default_factory=list)


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    unmatched: int = 0
    order_ids: list[int] = field(default_factory=list)

    def add(self, other: UpsertResult) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unmatched += other.unmatched

    def summary(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated, "unmatched": self.unmatched}


def check_order(data: OrderData) -> list[tuple[str, str, dict[str, Any]]]:
    """Problems of one order as (field, message id, params): empty when it may be written.

    The refund rules live here so every way in refuses the same things: a refund larger than the
    order, a wholly refunded order with less refunded, a partly refunded one with none.
    """
    problems: list[tuple[str, str, dict[str, Any]]] = []
    if (data.source and data.order_no and data.status in _SIMPLE_STATUSES and 0 <= data.amount < MAX_AMOUNT
            and data.discount == 0 and data.refunded_amount == 0 and data.paid_at <= _soon()
            and not data.lines[MAX_LINES_PER_ORDER:]
            and all(1 <= line.quantity <= 100000 and 0 <= line.price < MAX_AMOUNT for line in data.lines)):
        return problems  # the common case, checked quickly (imports check every order twice)
    if not data.source or not data.order_no:
        problems.append(("order_no", N_("An order needs its order number"), {}))
    for name in ("amount", "discount", "refunded_amount"):
        value = getattr(data, name)
        if value < 0:
            problems.append((name, N_("Must not be negative"), {}))
        elif value >= MAX_AMOUNT:
            problems.append((name, N_("Must be less than {max}"), {"max": MAX_AMOUNT}))
    if data.refunded_amount > data.amount:
        problems.append(("refunded_amount", N_("The refund ({refund}) is larger than the order ({amount})"),
                         {"refund": data.refunded_amount, "amount": data.amount}))
    if data.status not in _STATUSES:
        problems.append(("status", N_("Unknown order status {status}"), {"status": data.status[:20]}))
    elif data.status == OrderStatus.partly_refunded.value and not 0 < data.refunded_amount < data.amount:
        problems.append(("refunded_amount", N_("A partly refunded order needs a refunded amount below the order's"),
                         {}))
    if data.paid_at > _soon():
        problems.append(("paid_at", N_("An order cannot be paid in the future"), {}))
    if len(data.lines) > MAX_LINES_PER_ORDER:
        problems.append(("lines", N_("At most {max} lines per order"), {"max": MAX_LINES_PER_ORDER}))
    for line in data.lines:
        if line.quantity < 1 or line.quantity > 100000:
            problems.append(("quantity", N_("A line's quantity must be between 1 and 100000"), {}))
            break
        if line.price < 0 or line.price >= MAX_AMOUNT:
            problems.append(("price", N_("A line's price must not be negative"), {}))
            break
    return problems


_STATUSES = frozenset(s.value for s in OrderStatus)
_SIMPLE_STATUSES = frozenset({OrderStatus.paid.value, OrderStatus.shipped.value, OrderStatus.completed.value})
FUTURE_SLACK = timedelta(minutes=10)  # a shop's clock may run a little ahead of ours


def _soon() -> datetime:
    return utcnow() + FUTURE_SLACK


def normalise_order(data: OrderData) -> OrderData:
    """A wholly refunded order without a refunded amount was refunded in full."""
    if data.status == OrderStatus.refunded.value and data.refunded_amount == 0:
        data.refunded_amount = data.amount
    return data


# ---------------------------------------------------------------- matching


def _phone_variants(phone: str) -> list[str]:
    return [phone, f"+86{phone}", f"86{phone}", f"0086{phone}"] if phone else []


def match_buyers(session: Session, buyers: list[Buyer], *, viewer: Viewer) -> list[tuple[int | None, str]]:
    """(customer id, how) for each buyer, or (None, "") — a handful of queries for the whole batch."""
    live: list[ColumnElement[bool]] = [Customer.merged_into_id.is_(None)]
    scope = customers_service.visible_customer_clause(viewer)
    if scope is not None:
        live.append(scope)
    ids = sorted({b.customer_id for b in buyers if b.customer_id})
    by_id: dict[int, int] = {}
    if ids:
        for customer_id, merged_into in session.execute(
                select(Customer.id, Customer.merged_into_id).where(Customer.id.in_(ids))):
            by_id[customer_id] = merged_into or customer_id
        if scope is not None:
            visible = set(session.scalars(select(Customer.id).where(Customer.id.in_(sorted(set(by_id.values()))),
                                                                    scope)))
            by_id = {k: v for k, v in by_id.items() if v in visible}
    unionids = sorted({b.unionid for b in buyers if b.unionid})
    by_unionid: dict[str | None, int] = {}
    if unionids:
        for customer_id, unionid in session.execute(select(Customer.id, Customer.unionid).where(
                among(session, Customer.unionid, unionids), *live).order_by(Customer.id)):
            by_unionid.setdefault(unionid, customer_id)
    externals = sorted({b.external_userid for b in buyers if b.external_userid})
    by_external: dict[str | None, int] = {}
    if externals:
        for customer_id, external in session.execute(select(Customer.id, Customer.wecom_external_userid).where(
                among(session, Customer.wecom_external_userid, externals), *live)):
            by_external[external] = customer_id
    variants = {v: b.phone for b in buyers for v in _phone_variants(b.phone)}
    by_phone: dict[str, int] = {}
    by_name_phone: dict[tuple[str, str], int] = {}
    if variants:
        for number, customer_id in session.execute(
                select(Phone.number, Phone.customer_id).join(Customer, Customer.id == Phone.customer_id)
                .where(among(session, Phone.number, sorted(variants)), *live).order_by(Phone.customer_id)):
            by_phone.setdefault(variants[number], customer_id)
        names = sorted({b.name for b in buyers if b.name and b.phone})
        if names:
            for recipient, number, customer_id in session.execute(
                    select(Address.recipient, Address.phone, Address.customer_id)
                    .join(Customer, Customer.id == Address.customer_id)
                    .where(among(session, Address.phone, sorted(variants)), among(session, Address.recipient, names),
                           *live)
                    .order_by(Address.customer_id)):
                by_name_phone.setdefault((recipient, variants[number]), customer_id)
    result: list[tuple[int | None, str]] = []
    for buyer in buyers:
        if buyer.customer_id and buyer.customer_id in by_id:
            result.append((by_id[buyer.customer_id], MatchedBy.customer_id.value))
        elif buyer.unionid and buyer.unionid in by_unionid:
            result.append((by_unionid[buyer.unionid], MatchedBy.unionid.value))
        elif buyer.external_userid and buyer.external_userid in by_external:
            result.append((by_external[buyer.external_userid], MatchedBy.external_userid.value))
        elif buyer.phone and buyer.phone in by_phone:
            result.append((by_phone[buyer.phone], MatchedBy.phone.value))
        elif buyer.name and buyer.phone and (buyer.name, buyer.phone) in by_name_phone:
            result.append((by_name_phone[(buyer.name, buyer.phone)], MatchedBy.name_phone.value))
        else:
            result.append((None, ""))
    return result


def _first_accounts(session: Session, customer_ids: list[int]) -> dict[int, int]:
    """Each customer's first active friendship's account: the account an order is credited to."""
    found: dict[int, int] = {}
    if customer_ids:
        for customer_id, account_id in session.execute(
                select(Friendship.customer_id, Friendship.account_id)
                .where(among(session, Friendship.customer_id, customer_ids),
                       Friendship.status == FriendshipStatus.active.value)
                .order_by(Friendship.customer_id, Friendship.added_at, Friendship.id)):
            found.setdefault(customer_id, account_id)
    return found


def _first_channels(session: Session, customer_ids: list[int]) -> dict[int, int]:
    """The channel each customer first came through (the channel report credits its orders to it)."""
    found: dict[int, int] = {}
    if customer_ids:
        for customer_id, channel_id in session.execute(
                select(ChannelAdd.customer_id, ChannelAdd.channel_id)
                .where(among(session, ChannelAdd.customer_id, customer_ids))
                .order_by(ChannelAdd.customer_id, ChannelAdd.first_touch.desc(), ChannelAdd.added_at, ChannelAdd.id)):
            found.setdefault(customer_id, channel_id)
    return found


# ---------------------------------------------------------------- writing


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


def _products(session: Session, lines: list[LineData]) -> dict[str, tuple[int, str]]:
    """sku → (product id, category); a SKU never seen before becomes a product (the catalogue grows)."""
    skus = sorted({line.sku for line in lines if line.sku})
    if not skus:
        return {}
    found = {sku: (pid, category) for pid, sku, category in session.execute(
        select(Product.id, Product.sku, Product.category).where(Product.sku.in_(skus)))}
    new: dict[str, LineData] = {}
    for line in lines:
        if line.sku and line.sku not in found and line.sku not in new:
            new[line.sku] = line
    if new:
        now = utcnow()
        session.execute(insert(_table(Product)), [
            {"sku": sku, "name": (line.name or sku)[:128], "category": line.category[:64], "price": line.price,
             "launched_at": None, "active": True, "created_at": now} for sku, line in new.items()])
        for pid, sku, category in session.execute(
                select(Product.id, Product.sku, Product.category).where(Product.sku.in_(sorted(new)))):
            found[sku] = (pid, category)
    return found


def upsert_orders(session: Session, *, orders: list[OrderData], viewer: Viewer, via: str,
                  audit: bool = True, write_touches: bool = True, refresh: bool = True,
                  checked: bool = False) -> UpsertResult:
    """Create or update these orders (same source + order_no: update), match buyers, refresh facts.

    Raises Invalid naming the order and field for the first order that may not be written; nothing
    is written then (the caller's transaction is rolled back by the caller). ``refresh=False`` leaves the
    buyers' facts to the caller, who must call ``refresh_since`` before it is done (file imports: once
    per customer at the end instead of once per batch the customer appears in). ``checked=True``: every
    order already passed ``check_order`` (an import checks each row as it reads it).
    """
    latest: dict[tuple[str, str], OrderData] = {}
    for position, data in enumerate(orders):
        problems = [] if checked else check_order(normalise_order(data))
        if data.account_id is not None and not viewer.can_see_account(data.account_id):
            problems.insert(0, ("account_id", N_("Account {account_id} not found"), {"account_id": data.account_id}))
        if problems:
            name, message, params = problems[0]
            raise Invalid(message, field=f"orders[{position}].{name}", **params)
        latest[(data.source, data.order_no)] = data  # the same order twice in one batch: the later wins
    items = list(latest.values())
    result = UpsertResult()
    if not items:
        return result
    matches = match_buyers(session, [d.buyer for d in items], viewer=viewer)
    existing: dict[tuple[str, str], Any] = {}
    by_source: dict[str, list[str]] = defaultdict(list)
    for data in items:
        by_source[data.source].append(data.order_no)
    for source, numbers in by_source.items():
        for row in session.execute(
                select(Order.id, Order.source, Order.order_no, Order.customer_id, Order.match_state, Order.matched_by,
                       Order.account_id, Order.channel_id, Order.touch_id)
                .where(Order.source == source, among(session, Order.order_no, numbers))):
            existing[(row.source, row.order_no)] = row
    matched_ids = sorted({cid for cid, _how in matches if cid is not None}
                         | {row.customer_id for row in existing.values() if row.customer_id})
    accounts = _first_accounts(session, matched_ids)
    channels = _first_channels(session, matched_ids)
    products = _products(session, [line for d in items for line in d.lines])
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    insert_data: list[OrderData] = []
    updates: list[tuple[int, dict[str, Any], OrderData]] = []
    touched: set[int] = set()
    for data, (customer_id, how) in zip(items, matches, strict=True):
        before = existing.get((data.source, data.order_no))
        state = MatchState.matched.value if customer_id else MatchState.unmatched.value
        if before is not None and customer_id is None and before.match_state != MatchState.unmatched.value:
            # Matched (or ignored) earlier, by an operator perhaps: a push that names nobody keeps that.
            customer_id, how, state = before.customer_id, before.matched_by, before.match_state
        values = {
            "customer_id": customer_id, "match_state": state, "matched_by": how,
            "account_id": data.account_id or (accounts.get(customer_id) if customer_id else None)
            or (before.account_id if before is not None else None),
            "channel_id": channels.get(customer_id) if customer_id else None,
            "store": data.store[:64], "status": data.status, "amount": data.amount, "discount": data.discount,
            "coupon_code": data.coupon_code[:64], "refunded_amount": data.refunded_amount,
            "buyer_name": data.buyer.name[:64], "buyer_phone": data.buyer.phone[:32],
            "buyer_unionid": data.buyer.unionid[:64], "buyer_external_userid": data.buyer.external_userid[:64],
            "paid_at": data.paid_at, "shipped_at": data.shipped_at, "completed_at": data.completed_at,
            "refunded_at": data.refunded_at or (now if data.refunded_amount > 0 and before is None else None),
            "note": data.note[:255], "updated_at": now,
        }
        if state == MatchState.unmatched.value:
            result.unmatched += 1
        if customer_id:
            touched.add(customer_id)
        if before is None:
            inserts.append({"source": data.source, "order_no": data.order_no, "touch_id": None, "created_at": now,
                            **values})
            insert_data.append(data)
        else:
            if before.customer_id:
                touched.add(before.customer_id)
            if values["refunded_at"] is None and data.refunded_amount > 0:
                values.pop("refunded_at")  # keep when it was first refunded
            updates.append((before.id, values, data))
    new_ids = _insert_ids(session, _table(Order), inserts) if inserts else []
    if updates:  # one executemany; a refund's first time is kept (refunded_at only when given)
        table = _table(Order)
        for keys in {tuple(sorted(values)) for _id, values, _data in updates}:
            rows = [{"o_id": order_id, **{f"v_{k}": v for k, v in values.items()}}
                    for order_id, values, _data in updates if tuple(sorted(values)) == keys]
            session.execute(update(table).where(table.c.id == bindparam("o_id"))
                            .values({k: bindparam(f"v_{k}", type_=table.c[k].type) for k in keys}), rows)
        session.execute(delete(_table(OrderLine)).where(_table(OrderLine).c.order_id.in_([u[0] for u in updates])))
    lines: list[dict[str, Any]] = []
    for order_id, values, data in [*zip(new_ids, inserts, insert_data, strict=True),
                                   *[(u[0], u[1], u[2]) for u in updates]]:
        for line in data.lines:
            product_id, category = products.get(line.sku, (None, ""))
            lines.append({"order_id": order_id, "product_id": product_id, "sku": line.sku[:64],
                          "name": line.name[:128], "category": (line.category or category)[:64],
                          "quantity": line.quantity, "price": line.price, "customer_id": values["customer_id"],
                          "paid_at": values["paid_at"]})
    if lines:
        _executemany(session, _table(OrderLine), lines)
    touched_at: dict[int, datetime] = {}
    if write_touches:
        written = [(oid, values) for oid, values in zip(new_ids, inserts, strict=True) if values["customer_id"]]
        _write_purchase_touches(session, orders=written, viewer=viewer)
        for _oid, values in written:
            at = touched_at.get(values["customer_id"])
            if at is None or values["paid_at"] > at:
                touched_at[values["customer_id"]] = values["paid_at"]
    result.created, result.updated = len(new_ids), len(updates)
    result.order_ids = [*new_ids, *[u[0] for u in updates]]
    _after_orders(session, [*zip(new_ids, inserts, strict=True), *[(u[0], u[1]) for u in updates]])
    if touched and refresh:
        customers_service.refresh_purchases(session, customer_ids=sorted(touched), touched_at=touched_at)
    if audit:
        team_service.record_audit(session, actor=viewer, action="upsert", entity_type="orders", summary=via,
                                  after={**result.summary(), "via": via, "orders": len(items)})
    return result


def _after_orders(session: Session, written: list[tuple[int, dict[str, Any]]]) -> None:
    """What orders set off elsewhere: a coupon code named is redeemed (coupons), a referred customer's
    first purchase rewards whoever invited them (referrals)."""
    from siyu.coupons import service as coupons_service
    from siyu.referrals import service as referrals_service

    counted = {s.value for s in COUNTED_STATUSES}
    coupons_service.redeem_orders(session, [
        coupons_service.OrderCoupon(order_id=order_id, customer_id=values["customer_id"],
                                    code=values["coupon_code"], paid_at=values["paid_at"])
        for order_id, values in written if values["coupon_code"] and values["status"] in counted])
    buyers = sorted({values["customer_id"] for _id, values in written
                     if values["customer_id"] and values["status"] in counted})
    if buyers:
        referrals_service.on_purchases(session, customer_ids=buyers)


def refresh_since(session: Session, *, since: datetime, after_id: int = 0, limit: int = 5000) -> int:
    """Re-derive the facts of customers whose orders changed since ``since`` (ids above ``after_id``, at most
    ``limit`` of them): the last id done, or 0 when none are left. Set-based, for the end of an import."""
    rows = session.execute(
        select(Order.customer_id, func.max(Order.paid_at).filter(Order.touch_id.is_not(None)))
        .where(Order.updated_at >= since, Order.customer_id > after_id)
        .group_by(Order.customer_id).order_by(Order.customer_id).limit(limit)).all()
    ids: list[int] = []
    touched_at: dict[int, datetime] = {}
    for customer_id, at in rows:
        if customer_id is None:
            continue
        ids.append(int(customer_id))
        if isinstance(at, str):  # SQLite aggregates hand back text
            at = datetime.fromisoformat(at)
        if at is not None:
            touched_at[int(customer_id)] = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    if not ids:
        return 0
    customers_service.refresh_purchases(session, customer_ids=ids, touched_at=touched_at)
    return ids[-1]


def _insert_ids(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows in one statement per batch and return their new ids, in the rows' order."""
    if session.get_bind().dialect.name != "sqlite":
        return insert_ids(session, table, rows)  # one INSERT … RETURNING per batch
    # SQLite: the first row's id is max + 1 and this INSERT holds the database's write lock until
    # commit, so the next ids are free: the rest go in with them, in one plain executemany.
    first = int(session.execute(insert(table).returning(table.c.id), rows[0]).scalar_one())
    ids = list(range(first, first + len(rows)))
    if len(rows) > 1:
        _executemany(session, table, rows[1:], ids=ids[1:])
    return ids


def _memo(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A time column's processor remembering its answers: a batch repeats its times (now, each paid_at)."""
    seen: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        found = seen.get(value, seen)
        if found is seen:
            found = seen[value] = process(value)
        return found

    return remembered


def _executemany(session: Session, table: Table, rows: list[dict[str, Any]], *, ids: list[int] | None = None) -> None:
    """INSERT these rows (all with the same keys) in one DB-API executemany of plain tuples.

    What ``session.execute(insert(table), rows)`` does, without SQLAlchemy's per-row parameter
    bookkeeping (most of an import's CPU time): the columns' own bind processors convert the values
    (so what is stored is the same), Python-side column defaults are evaluated once for the batch,
    and the values are bound parameters as ever. ``ids``: the rows' ids, one per row.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    keys = list(rows[0])
    columns = [table.c[key] for key in keys]
    if ids is not None:
        columns.append(table.c.id)
    constants: list[Any] = []
    for column in table.columns:
        default = column.default
        if column.key in rows[0] or column.key == "id" or default is None or not (
                getattr(default, "is_scalar", False) or getattr(default, "is_callable", False)):
            continue
        columns.append(column)
        constants.append(default.arg if default.is_scalar else default.arg(None))  # type: ignore[attr-defined]
    processors = [(i, _memo(p) if isinstance(c.type, UTCDateTime) else p)
                  for i, (c, p) in enumerate((c, c.type._cached_bind_processor(dialect)) for c in columns) if p]
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    quote = dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) "  # noqa: S608 - names from the model
           f"VALUES ({', '.join([marker] * len(columns))})")
    tail = tuple(constants)
    params: list[tuple[Any, ...]] = []
    get = itemgetter(*keys) if len(keys) > 1 else lambda row: (row[keys[0]],)
    for position, row in enumerate(rows):
        values = list(get(row))
        if ids is not None:
            values.append(ids[position])
        values.extend(tail)
        for i, process in processors:
            values[i] = process(values[i])
        params.append(tuple(values))
    connection.exec_driver_sql(sql, params)


def _touch_text(order_no: str, amount: Decimal) -> str:
    return f"{order_no} ¥{amount}"


def _write_purchase_touches(session: Session, *, orders: list[tuple[int, dict[str, Any]]], viewer: Viewer) -> None:
    """A purchase entry on each buyer's timeline for each new order (the order links back to it)."""
    if not orders:
        return
    now = utcnow()
    touch_ids = _insert_ids(session, _table(Touch), [
        {"customer_id": values["customer_id"], "account_id": values["account_id"], "user_id": viewer.user_id,
         "kind": TouchKind.purchase.value,
         "content": values.get("note") or _touch_text(values["order_no"], values["amount"]),
         "amount": values["amount"], "details": {"order_id": order_id, "source": values["source"]},
         "occurred_at": values["paid_at"], "created_at": now, "dedupe_key": f"order:{order_id}"}
        for order_id, values in orders])
    connection = session.connection()
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    connection.exec_driver_sql(  # one executemany of plain pairs (no per-row parameter bookkeeping)
        f"UPDATE customer_order SET touch_id = {marker} WHERE id = {marker}",  # noqa: S608 - no user text
        [(touch_id, order_id) for (order_id, _values), touch_id in zip(orders, touch_ids, strict=True)])


def order_from_touch(session: Session, *, touch: Touch, viewer: Viewer) -> Order:
    """A purchase typed on the console's timeline becomes an order of the source "console"."""
    accounts = _first_accounts(session, [touch.customer_id])
    channels = _first_channels(session, [touch.customer_id])
    order = Order(source=CONSOLE_SOURCE, order_no=f"touch-{touch.id}", customer_id=touch.customer_id,
                  match_state=MatchState.matched.value, matched_by=MatchedBy.touch.value,
                  account_id=touch.account_id or accounts.get(touch.customer_id),
                  channel_id=channels.get(touch.customer_id), status=OrderStatus.paid.value,
                  amount=Decimal(touch.amount or 0), paid_at=touch.occurred_at, note=(touch.content or "")[:255],
                  touch_id=touch.id)
    session.add(order)
    session.flush()
    touch.details = {**(touch.details or {}), "order_id": order.id, "source": CONSOLE_SOURCE}
    return order


# ---------------------------------------------------------------- reading, scoped


def _order_from_purchase(session: Session, touch: Touch, viewer: Viewer) -> None:
    order_from_touch(session, touch=touch, viewer=viewer)


customers_service.on_purchase_touch(_order_from_purchase)


def visible_order_clause(viewer: Viewer) -> ColumnElement[bool]:
    """Orders this viewer may see: of customers they see, or unmatched ones sold through their accounts."""
    if viewer.sees_all_accounts:
        return true()
    if not viewer.account_ids:
        return false()
    mine = sorted(viewer.account_ids)
    friend = select(Friendship.customer_id).where(Friendship.account_id.in_(mine))
    return or_(Order.customer_id.in_(friend),
               and_(Order.customer_id.is_(None), Order.account_id.in_(mine)))


def get_order(session: Session, *, order_id: int, viewer: Viewer) -> Order:
    order = session.scalar(select(Order).where(Order.id == order_id, visible_order_clause(viewer)))
    if order is None:
        raise OrderNotFound("Order {order_id} not found", order_id=order_id)
    return order


@dataclass
class OrderFilter:
    customer_id: int | None = None
    state: str | None = None  # matched / unmatched / ignored
    status: str | None = None
    source: str | None = None
    q: str = ""  # order number


def list_orders(session: Session, *, viewer: Viewer, flt: OrderFilter | None = None, limit: int = 50,
                cursor: str | None = None) -> Page[Order]:
    """Newest paid first, with a cursor."""
    flt = flt or OrderFilter()
    query = select(Order).where(visible_order_clause(viewer))
    if flt.customer_id is not None:
        customers_service.get_customer(session, customer_id=flt.customer_id, viewer=viewer)
        query = query.where(Order.customer_id == flt.customer_id)
    if flt.state:
        query = query.where(Order.match_state == flt.state)
    if flt.status:
        query = query.where(Order.status == flt.status)
    if flt.source:
        query = query.where(Order.source == flt.source)
    if flt.q:
        query = query.where(Order.order_no == flt.q.strip())
    if cursor:
        try:
            at_text, last_id = decode_cursor(cursor)
            at, last_id = datetime.fromisoformat(str(at_text)), int(last_id)
        except (ValueError, TypeError) as exc:
            raise Invalid("Invalid cursor", field="cursor") from exc
        query = query.where(or_(Order.paid_at < at, and_(Order.paid_at == at, Order.id < last_id)))
    rows = list(session.scalars(query.order_by(Order.paid_at.desc(), Order.id.desc()).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.paid_at.isoformat(), last.id])
    return Page(items=rows[:limit], next_cursor=next_cursor)


def load_lines(session: Session, order_ids: list[int]) -> dict[int, list[OrderLine]]:
    found: dict[int, list[OrderLine]] = defaultdict(list)
    if order_ids:
        for line in session.scalars(select(OrderLine).where(OrderLine.order_id.in_(order_ids)).order_by(OrderLine.id)):
            found[line.order_id].append(line)
    return found


def count_unmatched(session: Session, *, viewer: Viewer) -> int:
    return int(session.scalar(select(func.count()).select_from(Order).where(
        Order.match_state == MatchState.unmatched.value, visible_order_clause(viewer))) or 0)


# ---------------------------------------------------------------- changes an operator makes


def _audit_order(session: Session, viewer: Viewer, action: str, order: Order, before: dict[str, Any],
           after: dict[str, Any]) -> None:
    team_service.record_audit(session, actor=viewer, action=action, entity_type="order", entity_id=order.id,
                              summary=f"{order.source}/{order.order_no}", before=before, after=after)


def refund(session: Session, *, order_id: int, amount: Decimal, viewer: Viewer) -> Order:
    """Refund part or all of an order; the buyer's facts, stage and level follow at once."""
    order = get_order(session, order_id=order_id, viewer=viewer)
    if amount <= 0 or amount != amount.quantize(CENT):
        raise Invalid("A refund must be more than 0, in yuan and fen", field="amount")
    refunded = Decimal(order.refunded_amount) + amount
    if refunded > Decimal(order.amount):
        raise Invalid("The refund ({refund}) is larger than the order ({amount})", field="amount",
                      refund=refunded, amount=order.amount)
    before = {"status": order.status, "refunded_amount": str(order.refunded_amount)}
    order.refunded_amount = refunded
    order.status = (OrderStatus.refunded.value if refunded == Decimal(order.amount)
                    else OrderStatus.partly_refunded.value)
    order.refunded_at = utcnow()
    session.flush()
    _audit_order(session, viewer, "refund", order, before, {"status": order.status, "refunded_amount": str(refunded)})
    if order.customer_id:
        customers_service.refresh_purchases(session, customer_ids=[order.customer_id])
    return order


def _set_customer(session: Session, order: Order, customer_id: int | None, state: MatchState, how: str) -> None:
    old = order.customer_id
    order.customer_id, order.match_state, order.matched_by = customer_id, state.value, how
    if customer_id:
        order.account_id = order.account_id or _first_accounts(session, [customer_id]).get(customer_id)
        order.channel_id = _first_channels(session, [customer_id]).get(customer_id)
    session.flush()
    session.execute(update(OrderLine).where(OrderLine.order_id == order.id).values(customer_id=customer_id))
    if customer_id and order.touch_id is None:
        values = {"customer_id": customer_id, "account_id": order.account_id, "order_no": order.order_no,
                  "amount": order.amount, "paid_at": order.paid_at, "source": order.source, "note": order.note}
        _write_purchase_touches(session, orders=[(order.id, values)], viewer=SYSTEM)
    elif order.touch_id is not None:
        session.execute(update(Touch).where(Touch.id == order.touch_id).values(customer_id=customer_id)
                        if customer_id else delete(Touch).where(Touch.id == order.touch_id))
    session.expire(order)
    changed = sorted({c for c in (old, customer_id) if c})
    if changed:
        customers_service.refresh_computed_ids(session, customer_ids=changed)


def _queued(session: Session, order_id: int, viewer: Viewer) -> Order:
    order = get_order(session, order_id=order_id, viewer=viewer)
    if order.match_state == MatchState.matched.value:
        raise Invalid("This order is already matched to a customer", field="order_id")
    return order


def match_order(session: Session, *, order_id: int, customer_id: int, viewer: Viewer) -> Order:
    """Review queue: this order is this customer's."""
    order = _queued(session, order_id, viewer)
    customer = customers_service.get_customer(session, customer_id=customer_id, viewer=viewer)
    _audit_order(session, viewer, "match", order, {"match_state": order.match_state}, {"customer_id": customer.id})
    _set_customer(session, order, customer.id, MatchState.matched, MatchedBy.manual.value)
    return order


def create_customer_for(session: Session, *, order_id: int, account_id: int, viewer: Viewer) -> Customer:
    """Review queue: the buyer is new — a customer from the order's buyer name and phone."""
    order = _queued(session, order_id, viewer)
    phone = normalise_mobile(order.buyer_phone) if order.buyer_phone else None
    customer = customers_service.create_customer(session, data=CustomerIn(
        name=order.buyer_name or order.buyer_phone or order.order_no, account_id=account_id,
        phones=[phone] if phone else [], source=order.store or order.source), viewer=viewer)
    if order.buyer_unionid and not customer.unionid:
        customer.unionid = order.buyer_unionid
    _audit_order(session, viewer, "match", order, {"match_state": order.match_state},
           {"customer_id": customer.id, "created": True})
    _set_customer(session, order, customer.id, MatchState.matched, MatchedBy.created.value)
    return customer


def ignore_order(session: Session, *, order_id: int, viewer: Viewer) -> Order:
    """Review queue: the order belongs to nobody Siyu follows; it leaves the queue and counts for no one."""
    order = _queued(session, order_id, viewer)
    _audit_order(session, viewer, "ignore", order, {"match_state": order.match_state}, {"match_state": "ignored"})
    _set_customer(session, order, None, MatchState.ignored, "")
    return order


# ---------------------------------------------------------------- order sources (webhook secrets)


def list_sources(session: Session) -> list[OrderSource]:
    return list(session.scalars(select(OrderSource).order_by(OrderSource.id)))


def get_source(session: Session, *, key: str) -> OrderSource | None:
    return session.scalar(select(OrderSource).where(OrderSource.key == key))


def create_source(session: Session, *, key: str, name: str, kind: str, viewer: Viewer) -> OrderSource:
    import re
    import secrets

    from siyu.orders.models import IMPORT_SOURCE, SourceKind

    key = key.strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{1,31}", key) or key in (IMPORT_SOURCE, CONSOLE_SOURCE):
        raise Invalid("A source key is 2–32 lowercase letters, digits, - or _ (not import or console)", field="key")
    if kind not in {k.value for k in SourceKind}:
        raise Invalid("Unknown source kind {kind}", field="kind", kind=kind[:20])
    if get_source(session, key=key) is not None:
        raise Invalid("Source {key} already exists", field="key", key=key)
    source = OrderSource(key=key, name=name.strip()[:64] or key, kind=kind, secret=secrets.token_hex(32))
    session.add(source)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="order_source",
                              entity_id=source.id, summary=key, after={"key": key, "kind": kind})
    return source


# ---------------------------------------------------------------- repurchase and value metrics


@dataclass
class Metrics:
    key: str  # account id / channel id / "YYYY-MM"
    buyers: int
    orders: int
    revenue: Decimal
    repeat_buyers: int

    @property
    def repurchase_rate(self) -> float | None:
        return round(self.repeat_buyers / self.buyers, 4) if self.buyers else None

    @property
    def average_order_value(self) -> Decimal | None:
        return (self.revenue / self.orders).quantize(CENT) if self.orders else None


GROUPINGS = ("account", "channel", "month")


def _month(session: Session) -> Any:
    offset = datetime.now(local_zone()).utcoffset() or timedelta(0)
    hours = int(offset.total_seconds() // 3600)
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone(str(local_zone()), Order.paid_at), "YYYY-MM")
    return func.strftime("%Y-%m", Order.paid_at, f"{hours:+d} hours")


def repurchase_metrics(session: Session, *, viewer: Viewer, by: str, since: date | None = None,
                       until: date | None = None) -> list[Metrics]:
    """Buyers, orders, revenue (paid − refunded), repurchase rate (buyers with ≥ 2 orders / buyers) and
    average order value, per account, channel or month, over matched orders not wholly refunded."""
    if by not in GROUPINGS:
        raise Invalid("Group by account, channel or month", field="by")
    key: Any = {"account": Order.account_id, "channel": Order.channel_id}.get(by) if by != "month" else _month(session)
    zone = local_zone()
    where = [Order.match_state == MatchState.matched.value, Order.status.in_([s.value for s in COUNTED_STATUSES]),
             visible_order_clause(viewer)]
    if since is not None:
        where.append(Order.paid_at >= datetime.combine(since, datetime.min.time(), zone))
    if until is not None:
        where.append(Order.paid_at < datetime.combine(until + timedelta(days=1), datetime.min.time(), zone))
    per_buyer = (select(key.label("k"), Order.customer_id, func.count().label("n"),
                        func.sum(Order.amount - Order.refunded_amount).label("s"))
                 .where(*where).group_by(key, Order.customer_id).subquery())
    rows = session.execute(
        select(per_buyer.c.k, func.count(), func.sum(per_buyer.c.n), func.sum(per_buyer.c.s),
               func.count().filter(per_buyer.c.n >= 2))
        .group_by(per_buyer.c.k).order_by(per_buyer.c.k))
    return [Metrics(key="" if k is None else str(k), buyers=int(buyers), orders=int(orders or 0),
                    revenue=Decimal(str(revenue or 0)).quantize(CENT), repeat_buyers=int(repeat))
            for k, buyers, orders, revenue, repeat in rows]

