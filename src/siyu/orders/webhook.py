"""Orders pushed by shop systems: ``POST /api/v1/orders/webhook/{source}``.

Two kinds of source (``order_source.kind``):

**generic** — Siyu's own contract, for a shop system or a small relay a merchant runs. The body is
the JSON of ``POST /api/v1/orders`` (``orders.schemas.OrdersIn``; every order's ``source`` may be
left to the URL's). Two headers sign it with the source's secret::

    X-Siyu-Timestamp: 1767225600                       (Unix seconds when sent)
    X-Siyu-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

A request without them, with a signature that does not match, with a timestamp more than
``TOLERANCE`` away from now, or whose signature was already accepted (a replay) is refused
before the body is parsed. A body over the app's general limit (``core/body_limit.py``,
``SIYU_MAX_BODY_BYTES``, 1 MB by default) is refused with 413 before it is read.

**youzan** — 有赞云's own trade push, as its public documentation describes it (消息推送,
https://doc.youzanyun.com/detail/MSG/302 for ``trade_TradeBuyerPay``, /MSG/199 for
``trade_TradeSuccess``; the field list is also in the TsangJx/YouZanYunSDK C# models,
``Msg/TradeTradebuyerpayData.cs``): a JSON envelope ``{client_id, id, kdt_id, kdt_name, msg,
msg_id, type, status, version, sign}`` whose ``msg`` is the URL-encoded JSON of the trade
(``full_order_info`` with ``order_info``, ``buyer_info``, ``pay_info``, ``orders``,
``address_info``). 有赞 signs with the ``Event-Sign`` header = MD5(client_id + raw body +
client_secret) and sends no timestamp; it retries a message it did not get ``{"code": 0}`` for
(立即, 4m, 10m, 10m, 1h), so a message already taken (same ``msg_id``) is answered as taken
and not written twice. The source's ``app_id`` is the 有赞 client_id and its secret the
client_secret. 有赞 encrypts phones and names for apps without the decryption permission
(``$…$``); those fields are left empty and the order waits in the review queue.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import DomainError, Invalid, NotFound, Unauthorized
from siyu.core.settings import local_zone
from siyu.core.viewer import SYSTEM
from siyu.orders import service
from siyu.orders.models import OrderSource, OrderStatus, SourceKind, WebhookReceipt
from siyu.orders.schemas import OrdersIn

TIMESTAMP_HEADER = "x-siyu-timestamp"
SIGNATURE_HEADER = "x-siyu-signature"
TOLERANCE = 300  # seconds a signed request may be early or late (Stripe's default tolerance is 5 minutes too)
REPLAY_KEEP = timedelta(seconds=2 * TOLERANCE)  # a receipt older than this has a stale timestamp anyway
YOUZAN_SIGN_HEADER = "event-sign"
# 有赞's retry schedule ends about 1.5 h after the first try: msg_ids are remembered longer than that.
YOUZAN_KEEP = timedelta(days=2)


class Refused(Unauthorized):
    """A webhook request that is not from the source (or is a replay): 401, nothing read."""


class Replayed(DomainError):
    status_code = 409


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The generic contract's signature: hex HMAC-SHA256 over ``"<timestamp>." + body``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _source(session: Session, key: str) -> OrderSource:
    source = session.scalar(select(OrderSource).where(OrderSource.key == key))
    if source is None or not source.active or not source.secret:
        raise NotFound("Order source {key} not found", key=key[:32])
    return source


def _remember(session: Session, source: OrderSource, fingerprint: str, keep: timedelta) -> None:
    """Record a taken request; the same fingerprint again raises Replayed."""
    now = utcnow()
    session.execute(delete(WebhookReceipt).where(WebhookReceipt.source_id == source.id,
                                                 WebhookReceipt.received_at < now - keep))
    try:
        with session.begin_nested():
            session.add(WebhookReceipt(source_id=source.id, signature=fingerprint, received_at=now))
    except IntegrityError as exc:
        raise Replayed("This request was already received (replay refused)") from exc


def verify_generic(session: Session, source: OrderSource, headers: dict[str, str], body: bytes,
                   *, now: float | None = None) -> None:
    timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
    given = headers.get(SIGNATURE_HEADER, "").strip().removeprefix("sha256=")
    if not timestamp or not given:
        raise Refused("The request is not signed (X-Siyu-Timestamp and X-Siyu-Signature are required)")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise Refused("The signature timestamp is not Unix seconds")
    expected = sign(source.secret, timestamp, body)
    if not hmac.compare_digest(expected, given.lower()):
        raise Refused("The signature does not match")
    if abs((now if now is not None else time.time()) - int(timestamp)) > TOLERANCE:
        raise Refused("The signature timestamp is too old or in the future (more than {s} seconds off)",
                      s=TOLERANCE)
    _remember(session, source, expected, REPLAY_KEEP)


def verify_youzan(session: Session, source: OrderSource, headers: dict[str, str], body: bytes,
                  envelope: dict[str, Any]) -> bool:
    """有赞's Event-Sign check; False when this msg_id was already taken (answer taken, write nothing)."""
    given = headers.get(YOUZAN_SIGN_HEADER, "").strip().lower()
    if not given:
        raise Refused("The request is not signed (Event-Sign is required)")
    expected = hashlib.md5(source.app_id.encode() + body + source.secret.encode()).hexdigest()  # noqa: S324 (有赞's scheme)
    if not hmac.compare_digest(expected, given) or str(envelope.get("client_id", "")) != source.app_id:
        raise Refused("The signature does not match")
    msg_id = str(envelope.get("msg_id") or "")[:64]
    if not msg_id:
        raise Invalid("The push has no msg_id", field="msg_id")
    try:
        _remember(session, source, hashlib.sha256(msg_id.encode()).hexdigest(), YOUZAN_KEEP)
    except Replayed:
        return False
    return True


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise Invalid("Not valid JSON", field="body") from exc


def receive(session: Session, *, key: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """Verify, parse and write a push; the answer for the shop system. The caller commits."""
    source = _source(session, key)
    if source.kind == SourceKind.youzan.value:
        envelope = _json(body)
        if not isinstance(envelope, dict):
            raise Invalid("Not a 有赞 push", field="body")
        if not verify_youzan(session, source, headers, body, envelope):
            return {"code": 0, "msg": "success"}  # taken before: 有赞 stops retrying
        data = youzan_order(envelope, source=source.key)
        if data is not None:
            service.upsert_orders(session, orders=[data], viewer=SYSTEM, via=f"webhook:{source.key}")
        source.last_received_at = utcnow()
        return {"code": 0, "msg": "success"}
    verify_generic(session, source, headers, body)
    raw = _json(body)
    if isinstance(raw, dict) and isinstance(raw.get("orders"), list):
        for order in raw["orders"]:
            if isinstance(order, dict):
                order.setdefault("source", source.key)
    try:
        parsed = OrdersIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise Invalid("The order push is invalid at {where}: {reason}", field=where, where=where,
                      reason=str(first.get("msg", ""))[:200]) from exc
    for order in parsed.orders:
        if order.source != source.key:
            raise Invalid("A source may push only its own orders ({key})", field="source", key=source.key)
    result = service.upsert_orders(session, orders=[o.to_data() for o in parsed.orders], viewer=SYSTEM,
                                   via=f"webhook:{source.key}")
    source.last_received_at = utcnow()
    return result.summary()


# ---------------------------------------------------------------- 有赞 trade push → OrderData

# 有赞 main-order states (order_info.status, documented with trade_TradeBuyerPay) → Siyu's.
YOUZAN_STATUS = {
    "TRADE_PAID": OrderStatus.paid, "WAIT_CONFIRM": OrderStatus.paid, "WAIT_SELLER_SEND_GOODS": OrderStatus.paid,
    "WAIT_BUYER_CONFIRM_GOODS": OrderStatus.shipped, "TRADE_SUCCESS": OrderStatus.completed,
}
YOUZAN_TRADE_TYPES = ("trade_TradeBuyerPay", "trade_TradePaid", "trade_TradeSellerShip",
                      "trade_TradePartlySellerShip", "trade_TradeSuccess")


def _plain(value: Any) -> str:
    """A 有赞 text field, or "" when it is encrypted for apps without the decryption permission."""
    text = str(value or "").strip()
    return "" if text.startswith("$") and text.endswith("$") else text


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str(value or "0")).quantize(Decimal("0.01"))
    except InvalidOperation as exc:
        raise Invalid("Not an amount: {value}", field="payment", value=str(value)[:20]) from exc


def _local_time(value: Any) -> datetime | None:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError as exc:
        raise Invalid("Not a time: {value}", field="pay_time", value=text[:30]) from exc
    return moment.replace(tzinfo=local_zone()).astimezone(UTC)  # 有赞 writes Beijing time


def youzan_order(envelope: dict[str, Any], *, source: str) -> service.OrderData | None:
    """The order in a 有赞 trade push, or None for a message type that carries no paid order."""
    if envelope.get("type") not in YOUZAN_TRADE_TYPES:
        return None
    raw = envelope.get("msg")
    if not isinstance(raw, str):
        raise Invalid("The push has no msg", field="msg")
    message = _json(unquote(raw).encode())
    info = message.get("full_order_info") if isinstance(message, dict) else None
    if not isinstance(info, dict):
        raise Invalid("The push has no full_order_info", field="msg")
    order_info = info.get("order_info") or {}
    buyer = info.get("buyer_info") or {}
    pay = info.get("pay_info") or {}
    address = info.get("address_info") or {}
    tid = str(order_info.get("tid") or envelope.get("id") or "").strip()
    if not tid:
        raise Invalid("The push has no order number (tid)", field="tid")
    paid_at = _local_time(order_info.get("pay_time")) or _local_time(order_info.get("created")) or utcnow()
    status = YOUZAN_STATUS.get(str(order_info.get("status") or envelope.get("status") or ""), OrderStatus.paid)
    lines = [service.LineData(sku=str(item.get("outer_sku_id") or item.get("outer_item_id") or "")[:64],
                              name=str(item.get("title") or "")[:128], quantity=max(1, int(item.get("num") or 1)),
                              price=_money(item.get("price")))
             for item in (info.get("orders") or []) if isinstance(item, dict)]
    phone = _plain(buyer.get("buyer_phone")) or _plain(address.get("receiver_tel"))
    from siyu.customers.phones import normalise_mobile

    return service.OrderData(
        source=source, order_no=tid[:64], paid_at=paid_at, amount=_money(pay.get("payment")), status=status.value,
        discount=max(Decimal("0"), _money(pay.get("total_fee")) + _money(pay.get("post_fee"))
                     - _money(pay.get("payment"))),
        store=_plain(envelope.get("kdt_name"))[:64],
        buyer=service.Buyer(phone=normalise_mobile(phone) or "" if phone else "",
                            name=_plain(address.get("receiver_name")) or _plain(buyer.get("fans_nickname"))),
        lines=lines)
