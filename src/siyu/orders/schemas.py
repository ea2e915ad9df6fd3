"""API shapes of orders: ``POST /api/v1/orders`` and the generic webhook take the same ``OrdersIn``.

The documented JSON shape (also the webhook's, see ``orders.webhook``)::

    {"orders": [{"source": "miniapp", "order_no": "E2026…", "paid_at": "2026-05-01T10:00:00+08:00",
                 "amount": "368.00", "status": "paid",
                 "customer": {"phone": "13800138000", "external_userid": "wm…", "unionid": "o…",
                              "customer_id": 12, "name": "王芳"},
                 "discount": "20.00", "coupon_code": "TEA20", "refunded_amount": "0", "store": "西湖店",
                 "account_id": 3,
                 "lines": [{"sku": "LJ-250", "name": "明前龙井 250g", "quantity": 1, "price": "388.00",
                            "category": "绿茶"}]}]}

``status``: paid / shipped / completed / refunded / partly_refunded. Amounts are yuan as decimal
strings or numbers. A time without an offset is read as the company's time zone.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from siyu.core.ids import Id
from siyu.core.settings import local_zone
from siyu.core.text import NoNul
from siyu.orders import service
from siyu.orders.models import OrderStatus

Text64 = Annotated[str, NoNul, StringConstraints(strip_whitespace=True, max_length=64)]
Key = Annotated[str, NoNul, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Money = Annotated[Decimal, Field(ge=0, lt=service.MAX_AMOUNT, max_digits=14, decimal_places=2)]


class BuyerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Id | None = None
    unionid: Text64 = ""
    external_userid: Text64 = ""
    phone: Annotated[str, NoNul, StringConstraints(strip_whitespace=True, max_length=32)] = ""
    name: Text64 = ""


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Text64 = ""
    name: Annotated[str, NoNul, StringConstraints(strip_whitespace=True, max_length=128)] = ""
    quantity: int = Field(1, ge=1, le=100000)
    price: Money = Decimal("0")
    category: Text64 = ""


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Annotated[str, NoNul, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
    order_no: Key
    customer: BuyerIn = Field(default_factory=BuyerIn)
    paid_at: datetime
    amount: Money
    status: OrderStatus = OrderStatus.paid
    discount: Money = Decimal("0")
    coupon_code: Text64 = ""
    refunded_amount: Money = Decimal("0")
    store: Text64 = ""
    account_id: Id | None = None
    shipped_at: datetime | None = None
    completed_at: datetime | None = None
    refunded_at: datetime | None = None
    note: Annotated[str, NoNul, StringConstraints(max_length=255)] = ""
    lines: list[LineIn] = Field(default_factory=list, max_length=service.MAX_LINES_PER_ORDER)

    def to_data(self) -> service.OrderData:
        from siyu.customers.phones import normalise_mobile

        def aware(value: datetime | None) -> datetime | None:
            if value is None:
                return None
            return value.replace(tzinfo=local_zone()) if value.tzinfo is None else value

        buyer = self.customer
        phone = normalise_mobile(buyer.phone) or buyer.phone if buyer.phone else ""
        paid_at = aware(self.paid_at)
        assert paid_at is not None
        return service.OrderData(
            source=self.source, order_no=self.order_no, paid_at=paid_at, amount=self.amount,
            buyer=service.Buyer(customer_id=buyer.customer_id, unionid=buyer.unionid,
                                external_userid=buyer.external_userid, phone=phone, name=buyer.name),
            status=self.status.value, discount=self.discount, coupon_code=self.coupon_code,
            refunded_amount=self.refunded_amount, store=self.store, account_id=self.account_id,
            shipped_at=aware(self.shipped_at), completed_at=aware(self.completed_at),
            refunded_at=aware(self.refunded_at), note=self.note,
            lines=[service.LineData(sku=line.sku, name=line.name, quantity=line.quantity, price=line.price,
                                    category=line.category) for line in self.lines])


class OrdersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    orders: list[OrderIn] = Field(min_length=1, max_length=service.MAX_ORDERS_PER_REQUEST)


class UpsertOut(BaseModel):
    created: int
    updated: int
    unmatched: int


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str
    category: str
    quantity: int
    price: Decimal


class OrderOut(BaseModel):
    id: int
    source: str
    order_no: str
    customer_id: int | None
    match_state: str
    matched_by: str
    account_id: int | None
    channel_id: int | None
    store: str
    status: str
    amount: Decimal
    discount: Decimal
    coupon_code: str
    refunded_amount: Decimal
    buyer_name: str
    buyer_phone: str
    paid_at: datetime
    lines: list[LineOut]


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Money


class MatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Id


class MetricsOut(BaseModel):
    key: str
    buyers: int
    orders: int
    revenue: Decimal
    repeat_buyers: int
    repurchase_rate: float | None
    average_order_value: Decimal | None
