"""Order import from CSV and XLSX: a shop's order export, with the customer import's rigour.

One mechanism with ``customers.imports``: the same reading of files (format sniffed by content,
UTF-8 with or without BOM, GBK/GB18030, UTF-16, XLSX with formulas as text), the same uploads in
the shared storage, the same error report (spreadsheet row — the header is row 1 — and the
file's own column header), and the same shape of run:

- **The whole file is checked before anything is written.** A negative amount at row 40,001 and
  nothing changes; the report names the row and the column.
- **Parsed once.** The check reads the file once; when it is for a write (``run_in_batches``) each
  checked order is kept in compact form (plain tuples, pickled in chunks to a temporary file that
  is deleted afterwards), so the write pass reads back exactly what was checked — no second parse,
  no second check — and memory holds one chunk, never the whole file.
- **One order, several rows.** Shop exports list an order's items on consecutive rows with the
  same order number; those rows are one order with several lines (their order-level cells —
  amount, time — must agree). The same order number again further down is an error naming
  both rows: only the operator knows which is right.
- **Idempotent on the order number**: every order is written by ``orders.service.upsert_orders``,
  so importing the file again (or an order also pushed by a webhook under the same source)
  updates and never duplicates.
- Large files run as a background job, one transaction per batch, resumable after a crash
  (``customers.imports.run_in_batches``'s contract: the position commits with the rows).
"""

from __future__ import annotations

import pickle
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Forbidden
from siyu.core.i18n import N_, _
from siyu.core.ids import parse_id
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers.imports.service import (
    MAX_REPORTED_ERRORS,
    ImportInvalid,
    RowError,
    Source,
    _header_key,
    column_labels,
    iter_rows,
    normalise_mobile,
)
from siyu.customers.imports.service import _file_error as file_error
from siyu.orders import service
from siyu.orders.models import IMPORT_SOURCE, OrderStatus
from siyu.team import service as team_service

MAX_ROWS = 1_000_000
# Orders per transaction. Each batch dirties index pages spread over whole indexes (by customer, by
# time), so larger batches share pages: 500,000 orders on a quiet machine (benchmarks/orders.py,
# 2026-12-05) took 121.9 s at 5,000, 91.7 s at 20,000, 79.4 s at 30,000 (peak RSS 436 MB) and 77.9 s
# at 50,000 (526 MB, over the 500 MB bound). On SQLite a batch holds the write lock for its ~5 s; other
# writers wait for it within their busy timeout (core.db, 10 s).
BATCH_ORDERS = 30000
BACKGROUND_ROWS = 5000  # larger files are written by a background job
SPOOL_CHUNK = 2000  # checked orders pickled together in the spool


@dataclass(frozen=True)
class Column:
    key: str
    label: str  # message id
    aliases: tuple[str, ...]
    max_length: int = 64


COLUMNS: tuple[Column, ...] = (
    Column("order_no", N_("Order number"), ("订单号", "订单编号", "订单id", "单号", "orderno", "order", "tid")),
    Column("paid_at", N_("Paid at"), ("付款时间", "支付时间", "下单时间", "成交时间", "paidat", "paytime")),
    Column("amount", N_("Amount paid"), ("实付金额", "实付", "实收金额", "订单金额", "金额", "amount", "payment")),
    Column("status", N_("Status"), ("订单状态", "状态", "status")),
    Column("refunded_amount", N_("Refunded"), ("退款金额", "已退款金额", "refund", "refundedamount")),
    Column("discount", N_("Discount"), ("优惠金额", "优惠", "折扣金额", "discount")),
    Column("coupon_code", N_("Coupon"), ("优惠券", "券码", "优惠券码", "coupon", "couponcode")),
    Column("store", N_("Store or channel"), ("门店", "店铺", "销售渠道", "渠道", "store")),
    Column("source", N_("Order source"), ("订单来源", "来源", "source")),
    Column("buyer_name", N_("Buyer"), ("收货人", "买家", "买家姓名", "客户姓名", "姓名", "buyer", "buyername")),
    Column("phone", N_("Phone"), ("手机号", "手机", "电话", "买家手机", "收货人手机", "联系电话", "phone", "mobile")),
    Column("external_userid", N_("WeCom external user ID"), ("企业微信id", "外部联系人id", "externaluserid")),
    Column("unionid", N_("Unionid"), ("unionid",)),
    Column("customer_id", N_("Customer ID"), ("客户id", "客户编号", "customerid")),
    Column("sku", N_("SKU"), ("商品编码", "sku", "规格编码", "商家编码")),
    Column("product", N_("Product"), ("商品名称", "商品", "product", "商品标题"), 128),
    Column("category", N_("Category"), ("品类", "商品分类", "类目", "分类", "category")),
    Column("quantity", N_("Quantity"), ("数量", "购买数量", "quantity", "qty")),
    Column("price", N_("Unit price"), ("单价", "商品单价", "price")),
)
COLUMN_BY_KEY = {column.key: column for column in COLUMNS}
ALIASES = {_header_key(alias): column.key for column in COLUMNS for alias in column.aliases}
REQUIRED = ("order_no", "paid_at", "amount")
# Order states as shop exports write them.
STATUS_WORDS = {
    "paid": OrderStatus.paid, "已付款": OrderStatus.paid, "已支付": OrderStatus.paid, "待发货": OrderStatus.paid,
    "shipped": OrderStatus.shipped, "已发货": OrderStatus.shipped, "待收货": OrderStatus.shipped,
    "completed": OrderStatus.completed, "已完成": OrderStatus.completed, "交易成功": OrderStatus.completed,
    "已签收": OrderStatus.completed, "refunded": OrderStatus.refunded, "已退款": OrderStatus.refunded,
    "全额退款": OrderStatus.refunded, "partly_refunded": OrderStatus.partly_refunded,
    "部分退款": OrderStatus.partly_refunded,
}
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9_\-]+")
TIME_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%Y-%m-%d %H:%M", "%Y年%m月%d日 %H:%M:%S",
                "%Y年%m月%d日")


def ensure_may_import(viewer: Viewer) -> None:
    if viewer.role == "service":
        raise Forbidden("Service staff cannot import orders")


def detect_mapping(header: list[str]) -> list[str]:
    taken: set[str] = set()
    mapping = []
    for text in header:
        key = ALIASES.get(_header_key(text[:200]), "")
        if key in taken:
            key = ""
        if key:
            taken.add(key)
        mapping.append(key)
    return mapping


def parse_time(text: str, zone: tzinfo | None = None) -> datetime | None:
    """A time as shop exports and Excel write it; without an offset it is the company's local time."""
    value: datetime | None = None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        for fmt in TIME_FORMATS:
            try:
                value = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if value is None:
        return None
    # Stored in UTC: converted once here rather than for each column it is written to.
    return (value.replace(tzinfo=zone or local_zone()) if value.tzinfo is None else value).astimezone(UTC)


def parse_money(text: str) -> Decimal | None:
    try:
        value = Decimal(text)  # the common case: a plain number
    except InvalidOperation:
        cleaned = text.replace(",", "").replace("¥", "").replace("￥", "").replace("元", "").strip()
        try:
            value = Decimal(cleaned)
        except InvalidOperation:
            return None
    return value if value.is_finite() else None


def _mobile(text: str) -> str | None:
    if len(text) == 11 and text.isascii() and text.isdigit() and text[0] == "1":
        return text  # the common case
    return normalise_mobile(text)


@dataclass
class ImportPlan:
    source: Source
    headers: list[str]
    mapping: list[str]
    rows: int = 0
    orders: int = 0
    spool: IO[bytes] | None = None  # the checked orders in compact form (see ``check_file``)


# An order in the spool: (source, order_no, paid_at, amount, status, discount, coupon_code,
# refunded_amount, store, customer_id, unionid, external_userid, phone, buyer name,
# ((sku, name, quantity, price, category), …)). Money travels as its exact text and the paid time
# as a naive UTC datetime: pickling a Decimal or an aware datetime goes through ``__reduce__`` per
# value, several times slower than a string or a naive datetime (500,000 orders: seconds of CPU).
Packed = tuple[Any, ...]


def _pack(data: service.OrderData, lines: list[service.LineData]) -> Packed:
    buyer = data.buyer
    return (data.source, data.order_no, data.paid_at.astimezone(UTC).replace(tzinfo=None), str(data.amount),
            data.status, str(data.discount), data.coupon_code, str(data.refunded_amount), data.store,
            buyer.customer_id, buyer.unionid, buyer.external_userid, buyer.phone, buyer.name,
            tuple((line.sku, line.name, line.quantity, str(line.price), line.category) for line in lines))


def _unpack(packed: Packed) -> service.OrderData:
    (source, order_no, paid_at, amount, status, discount, coupon_code, refunded_amount, store, customer_id, unionid,
     external_userid, phone, name, lines) = packed
    return service.OrderData(
        source=source, order_no=order_no, paid_at=paid_at.replace(tzinfo=UTC), amount=Decimal(amount), status=status,
        discount=Decimal(discount), coupon_code=coupon_code, refunded_amount=Decimal(refunded_amount), store=store,
        buyer=service.Buyer(customer_id=customer_id, unionid=unionid, external_userid=external_userid, phone=phone,
                            name=name),
        lines=[service.LineData(sku=sku, name=line_name, quantity=quantity, price=Decimal(price), category=category)
               for sku, line_name, quantity, price, category in lines])


@dataclass
class _Row:
    row: int
    key: tuple[str, str]
    data: service.OrderData
    line: service.LineData | None


class _Checker:
    def __init__(self, plan: ImportPlan) -> None:
        self.plan = plan
        self.index = {key: i for i, key in enumerate(plan.mapping) if key}
        self.fields = [(key, position, COLUMN_BY_KEY[key].max_length) for key, position in self.index.items()]
        self.zone = local_zone()

    def column(self, key: str) -> str:
        position = self.index.get(key)
        return self.plan.headers[position] if position is not None else ""

    def parse(self, number: int, cells: list[str]) -> tuple[_Row | None, list[RowError]]:
        values: dict[str, str] = {}
        errors: list[RowError] = []
        width = len(cells)
        for key, position, max_length in self.fields:
            cell = cells[position].strip() if position < width else ""
            if cell:
                if len(cell) > max_length:
                    errors.append(RowError(number, self.plan.headers[position],
                                           _("Too long: at most {max} characters (this has {n})",
                                             max=max_length, n=len(cell))))
                    continue
                values[key] = cell
        if not values:
            return None, []  # an empty line
        column = self.column
        for key in REQUIRED:
            if key not in values and not any(e.column == column(key) for e in errors):
                errors.append(RowError(number, column(key), _("This cell is required")))
        order_no, paid_text = values.get("order_no", ""), values.get("paid_at", "")
        amount_text = values.get("amount", "")
        paid_at = parse_time(paid_text, self.zone) if paid_text else None
        if paid_text and paid_at is None:
            errors.append(RowError(number, column("paid_at"), _("Not a date and time: {value}", value=paid_text[:40])))
        money: dict[str, Decimal] = {}
        for key in ("amount", "refunded_amount", "discount", "price"):
            text = values.get(key, "") if key != "amount" else amount_text
            if not text:
                continue
            amount = parse_money(text)
            if amount is None:
                errors.append(RowError(number, column(key), _("Not an amount: {value}", value=text[:40])))
            elif amount < 0:
                errors.append(RowError(number, column(key), _("Must not be negative: {value}", value=text[:40])))
            elif amount >= service.MAX_AMOUNT or int(amount.as_tuple().exponent) < -2:
                errors.append(RowError(number, column(key), _("Not an amount in yuan and fen: {value}",
                                                              value=text[:40])))
            else:
                money[key] = amount
        status = OrderStatus.paid
        if "status" in values:
            found = STATUS_WORDS.get(values["status"].lower()) or STATUS_WORDS.get(values["status"])
            if found is None:
                errors.append(RowError(number, column("status"), _("Unknown order status {value}",
                                                                    value=values["status"][:20])))
            else:
                status = found
        phone = ""
        if "phone" in values:
            phone = _mobile(values["phone"]) or ""
            if not phone:
                errors.append(RowError(number, column("phone"), _("Not a mainland mobile number: {value}",
                                                                  value=values["phone"][:40])))
        if "external_userid" in values and not _EXTERNAL_ID.fullmatch(values["external_userid"]):
            errors.append(RowError(number, column("external_userid"),
                                   _("Not a WeCom external user ID: {value}", value=values["external_userid"][:40])))
        customer_id = None
        if "customer_id" in values:
            customer_id = parse_id(values["customer_id"])
            if customer_id is None:
                errors.append(RowError(number, column("customer_id"), _("Not a customer ID: {value}",
                                                                        value=values["customer_id"][:20])))
        quantity = 1
        if "quantity" in values:
            parsed = parse_id(values["quantity"].removesuffix(".0"))
            if parsed is None or parsed > 100000:
                errors.append(RowError(number, column("quantity"), _("Not a quantity: {value}",
                                                                     value=values["quantity"][:20])))
            else:
                quantity = parsed
        if errors or paid_at is None or "amount" not in money:
            return None, errors
        data = service.OrderData(
            source=values.get("source", IMPORT_SOURCE)[:32], order_no=order_no, paid_at=paid_at,
            amount=money["amount"], status=status.value, discount=money.get("discount", Decimal("0")),
            coupon_code=values.get("coupon_code", ""), refunded_amount=money.get("refunded_amount", Decimal("0")),
            store=values.get("store", ""),
            buyer=service.Buyer(customer_id=customer_id, unionid=values.get("unionid", ""),
                                external_userid=values.get("external_userid", ""), phone=phone,
                                name=values.get("buyer_name", "")))
        for _field, message, params in service.check_order(service.normalise_order(data)):
            target = {"refunded_amount": "refunded_amount", "amount": "amount", "discount": "discount",
                      "paid_at": "paid_at", "status": "status"}.get(_field, "order_no")
            errors.append(RowError(number, column(target) or column("amount"), _(message, **params)))
        if errors:
            return None, errors
        line = None
        if values.get("sku") or values.get("product"):
            line = service.LineData(sku=values.get("sku", ""), name=values.get("product", ""), quantity=quantity,
                                    price=money.get("price", Decimal("0")), category=values.get("category", ""))
        return _Row(row=number, key=(data.source, order_no), data=data, line=line), []


def _mapping_errors(plan: ImportPlan) -> list[RowError]:
    errors = []
    for key in REQUIRED:
        if key not in plan.mapping:
            errors.append(RowError(1, "", _("The file needs a column for {field}", field=_(COLUMN_BY_KEY[key].label))))
    for column, key in zip(plan.headers, plan.mapping, strict=True):
        if key and key not in COLUMN_BY_KEY:
            errors.append(RowError(1, column, _("Unknown field {field}", field=key[:40])))
    return errors


def _orders(plan: ImportPlan, on_error: Callable[[list[RowError]], None] | None = None) -> Iterator[service.OrderData]:
    """The file's orders, rows of one order (consecutive, same number) joined as its lines."""
    checker = _Checker(plan)
    rows = iter_rows(plan.source)
    next(rows, None)
    current: _Row | None = None
    lines: list[service.LineData] = []
    for number, cells in rows:
        parsed, errors = checker.parse(number, cells)
        if errors:
            if on_error is None:
                raise ImportInvalid(errors)  # the file changed since it was checked
            on_error(errors)
            continue
        if parsed is None:
            continue
        if current is not None and parsed.key == current.key:
            if parsed.data.amount != current.data.amount or parsed.data.paid_at != current.data.paid_at:
                problem = [RowError(number, checker.column("amount"),
                                    _("Same order as row {other} with a different amount or time", other=current.row))]
                if on_error is None:
                    raise ImportInvalid(problem)
                on_error(problem)
            if parsed.line is not None:
                lines.append(parsed.line)
            continue
        if current is not None:
            current.data.lines = lines
            yield current.data
        current, lines = parsed, [parsed.line] if parsed.line is not None else []
    if current is not None:
        current.data.lines = lines
        yield current.data


def check_file(session: Session | None, *, source: Source, viewer: Viewer,
               mapping: list[str] | None = None, spool: IO[bytes] | None = None) -> ImportPlan:
    """Read the whole file and check every row; ImportInvalid lists every problem (nothing written).

    With ``spool`` (an empty binary temporary file) every checked order is also written there in compact
    form, and ``iter_batches`` then reads the orders back from it instead of parsing the file again.
    """
    ensure_may_import(viewer)
    rows = iter_rows(source)
    first = next(rows, None)
    rows.close()
    if first is None or not any(c.strip() for c in first[1]):
        raise file_error(N_("The first row must be the header (订单号, 付款时间, 实付金额 …)"))
    headers = column_labels(first[1])
    chosen = mapping if mapping is not None else detect_mapping(first[1])
    plan = ImportPlan(source=source, headers=headers, mapping=(list(chosen) + [""] * len(headers))[:len(headers)])
    errors = _mapping_errors(plan)
    if errors:
        raise ImportInvalid(errors)
    reported: list[RowError] = []
    total = 0
    seen: dict[int, int] = {}  # hash of (source, order number) → its first row

    def collect(found: list[RowError]) -> None:
        nonlocal total
        total += len(found)
        reported.extend(found[:max(0, MAX_REPORTED_ERRORS - len(reported))])

    checker = _Checker(plan)
    rows = iter_rows(source)
    next(rows, None)
    previous: tuple[str, str] | None = None
    previous_row = 0
    previous_data: service.OrderData | None = None
    lines: list[service.LineData] = []
    chunk: list[Packed] = []

    def keep() -> None:  # the previous order, whole, into the spool
        if spool is not None and previous_data is not None and not total:
            chunk.append(_pack(previous_data, lines))
            if len(chunk) >= SPOOL_CHUNK:
                pickle.dump(chunk, spool, protocol=pickle.HIGHEST_PROTOCOL)
                chunk.clear()

    try:
        for number, cells in rows:
            parsed, row_errors = checker.parse(number, cells)
            if row_errors:
                collect(row_errors)
                continue
            if parsed is None:
                continue
            plan.rows += 1
            if plan.rows > MAX_ROWS:
                collect([RowError(number, "", _("Too many rows: at most {max} per file", max=MAX_ROWS))])
                break
            if parsed.key == previous and previous_data is not None:  # another line of the same order
                if parsed.data.amount != previous_data.amount or parsed.data.paid_at != previous_data.paid_at:
                    collect([RowError(number, checker.column("amount"), _(
                        "Same order as row {other} with a different amount or time", other=previous_row))])
                if parsed.line is not None:
                    lines.append(parsed.line)
                continue
            digest = hash(parsed.key)
            other = seen.get(digest)
            if other is not None and other != previous_row:
                collect([RowError(number, checker.column("order_no"),
                                  _("Same order number as row {other}; an order's rows must be next to each other",
                                    other=other))])
                continue
            seen[digest] = number
            keep()
            previous, previous_row, previous_data = parsed.key, number, parsed.data
            lines = [parsed.line] if parsed.line is not None else []
            plan.orders += 1
        keep()
        if spool is not None and chunk and not total:
            pickle.dump(chunk, spool, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        rows.close()
    if total:
        raise ImportInvalid(reported, total=total)
    if not plan.orders:
        raise file_error(N_("The file has a header but no orders"))
    plan.spool = spool
    return plan


def _spooled(spool: IO[bytes]) -> Iterator[service.OrderData]:
    spool.seek(0)
    while True:
        try:
            chunk: list[Packed] = pickle.load(spool)  # noqa: S301 - our own temporary file, written above
        except EOFError:
            return
        for packed in chunk:
            yield _unpack(packed)


def iter_batches(plan: ImportPlan, *, size: int = BATCH_ORDERS) -> Iterator[list[service.OrderData]]:
    batch: list[service.OrderData] = []
    for order in (_spooled(plan.spool) if plan.spool is not None else _orders(plan)):
        batch.append(order)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class ImportResult:
    rows: int
    orders: int
    counts: service.UpsertResult = field(default_factory=service.UpsertResult)

    def summary(self) -> dict[str, Any]:
        return {**self.counts.summary(), "rows": self.rows, "orders": self.orders}


def record_import(session: Session, *, viewer: Viewer, filename: str, result: ImportResult) -> None:
    team_service.record_audit(session, actor=viewer, action="import", entity_type="orders", summary=filename,
                              after={**result.summary(), "file": filename})


def execute(session: Session, *, plan: ImportPlan, viewer: Viewer, filename: str) -> ImportResult:
    """Write a checked file in the caller's transaction (small files)."""
    result = ImportResult(rows=plan.rows, orders=plan.orders)
    for batch in iter_batches(plan):
        result.counts.add(service.upsert_orders(session, orders=batch, viewer=viewer, via="import", audit=False,
                                                checked=True))
    # (small files: each batch's buyers are refreshed with the batch, in this one transaction)
    record_import(session, viewer=viewer, filename=filename, result=result)
    return result


Transaction = Callable[[], AbstractContextManager[Session]]


def run_in_batches(transaction: Transaction, *, source: Source, viewer: Viewer, filename: str,
                   mapping: list[str] | None = None, progress: Callable[[int, int], None] | None = None,
                   checkpoint: Callable[[Session, dict[str, Any]], None] | None = None,
                   resume: dict[str, Any] | None = None, size: int = BATCH_ORDERS) -> ImportResult:
    """Check the whole file, then write it one batch of ``size`` orders per transaction — resumable.

    ``checkpoint(session, state)`` runs inside each batch's transaction, so the position (orders
    written, counts) commits with the orders it counts; ``resume`` skips exactly those. The buyers'
    purchase facts (and stage, level, 购买 tag) are derived once per customer after the last batch —
    not once per batch a customer appears in — from every order changed since the import started (kept
    in the state, so a resumed run covers the orders an earlier attempt wrote); the import is done, and
    its audit entry written, only after that.
    """
    with tempfile.TemporaryFile(prefix="siyu-orders-") as spool:
        return _run(transaction, source=source, viewer=viewer, filename=filename, mapping=mapping, progress=progress,
                    checkpoint=checkpoint, state=dict(resume or {}), size=size, spool=spool)


def _run(transaction: Transaction, *, source: Source, viewer: Viewer, filename: str, mapping: list[str] | None,
         progress: Callable[[int, int], None] | None, checkpoint: Callable[[Session, dict[str, Any]], None] | None,
         state: dict[str, Any], size: int, spool: IO[bytes]) -> ImportResult:
    written = int(state.get("written", 0))
    since = datetime.fromisoformat(state["since"]) if state.get("since") else utcnow() - timedelta(seconds=1)
    with transaction() as session:
        plan = check_file(session, source=source, viewer=viewer, mapping=mapping, spool=spool)
    result = ImportResult(rows=plan.rows, orders=plan.orders, counts=service.UpsertResult(
        created=int(state.get("created", 0)), updated=int(state.get("updated", 0)),
        unmatched=int(state.get("unmatched", 0))))
    if progress:
        progress(written, plan.orders)
    skip = written
    for batch in iter_batches(plan, size=size):
        if skip >= len(batch):
            skip -= len(batch)
            continue
        batch, skip = batch[skip:], 0
        with transaction() as session:
            counts = service.upsert_orders(session, orders=batch, viewer=viewer, via="import", audit=False,
                                           refresh=False, checked=True)
            result.counts.add(counts)
            written += len(batch)
            if checkpoint:
                checkpoint(session, {"written": written, "since": since.isoformat(), **result.counts.summary()})
        if progress:
            progress(written, plan.orders)
    after_id = 0
    while True:
        with transaction() as session:
            after_id = service.refresh_since(session, since=since, after_id=after_id)
        if not after_id:
            break
    if not state.get("recorded"):
        with transaction() as session:
            record_import(session, viewer=viewer, filename=filename, result=result)
            if checkpoint:
                checkpoint(session, {"written": written, **result.counts.summary(), "recorded": True})
    return result
