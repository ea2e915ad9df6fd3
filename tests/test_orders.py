"""Orders: matching buyers, purchase facts and the ladder, refunds, the API, the webhook, imports, the console."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service
from siyu.customers.imports.service import open_source
from siyu.customers.models import Address, Customer
from siyu.orders import imports, service, webhook
from siyu.orders.models import CustomerPurchaseFacts, MatchState, Order, OrderSource, Product, SourceKind
from siyu.team.models import AuditEntry
from tests.conftest import viewer_of
from tests.test_pages import Console

NOW = datetime.now(UTC).replace(microsecond=0)


def order(order_no: str, amount: str = "100.00", *, source: str = "miniapp", days_ago: int = 1,
          **extra: Any) -> dict[str, Any]:
    return {"source": source, "order_no": order_no, "paid_at": (NOW - timedelta(days=days_ago)).isoformat(),
            "amount": amount, **extra}


def post_orders(client: TestClient, headers: dict[str, str], *orders: dict[str, Any]) -> Any:
    return client.post("/api/v1/orders", json={"orders": list(orders)}, headers=headers)


def facts(db: Session, customer_id: int) -> CustomerPurchaseFacts | None:
    db.expire_all()
    return db.get(CustomerPurchaseFacts, customer_id)


# ---------------------------------------------------------------- matching


def test_buyers_are_matched_by_unionid_then_wecom_id_then_phone_then_name_and_phone(db: Session, make: Any) -> None:
    account = make.account()
    by_union = make.customer(account)
    by_union.unionid = "o-union-1"
    by_external = make.customer(account)
    by_external.wecom_external_userid = "wm-ext-1"
    by_phone = make.customer(account, phones=["13800000001"])
    by_address = make.customer(account)
    db.add(Address(customer_id=by_address.id, recipient="李四", phone="13900000002"))
    db.commit()
    found = service.match_buyers(db, [
        service.Buyer(unionid="o-union-1", phone="13800000001"),
        service.Buyer(external_userid="wm-ext-1"),
        service.Buyer(phone="13800000001"),
        service.Buyer(name="李四", phone="13900000002"),
        service.Buyer(name="王五", phone="13700000000"),
    ], viewer=SYSTEM)
    assert found == [(by_union.id, "unionid"), (by_external.id, "external_userid"), (by_phone.id, "phone"),
                     (by_address.id, "name_phone"), (None, "")]


def test_an_operator_never_matches_a_customer_outside_their_accounts(db: Session, make: Any) -> None:
    mine, other = make.account(), make.account()
    stranger = make.customer(other, phones=["13800000009"])
    operator = make.user("operator", accounts=[mine])
    assert service.match_buyers(db, [service.Buyer(phone="13800000009")], viewer=viewer_of(operator)) == [(None, "")]
    assert service.match_buyers(db, [service.Buyer(phone="13800000009")], viewer=SYSTEM) == [(stranger.id, "phone")]


# ---------------------------------------------------------------- facts, ladder, refunds


def test_orders_give_the_purchase_facts_stage_level_and_purchase_tag(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account, phones=["13800000001"])
    service.upsert_orders(db, orders=[
        service.OrderData(source="shop", order_no="A1", paid_at=NOW - timedelta(days=30), amount=Decimal("200"),
                          buyer=service.Buyer(phone="13800000001"),
                          lines=[service.LineData(sku="LJ", name="龙井", quantity=2, price=Decimal("100"),
                                                  category="绿茶")]),
        service.OrderData(source="shop", order_no="A2", paid_at=NOW - timedelta(days=2), amount=Decimal("150"),
                          buyer=service.Buyer(phone="13800000001"),
                          lines=[service.LineData(sku="DHP", name="大红袍", quantity=1, price=Decimal("150"),
                                                  category="岩茶")]),
    ], viewer=SYSTEM, via="test")
    db.commit()
    got = facts(db, customer.id)
    assert got is not None
    assert (got.purchase_count, got.total_spent, got.avg_order_value) == (2, Decimal("350.00"), Decimal("175.00"))
    assert got.first_purchase_at == NOW - timedelta(days=30) and got.last_purchase_at == NOW - timedelta(days=2)
    assert got.favourite_category == "绿茶"  # two units against one
    db.refresh(customer)
    assert (customer.purchase_count, customer.purchase_total, customer.stage) == (2, Decimal("350.00"), "customer")
    assert customer.level == "V2 老朋友"
    tags = {t.name for t in customers_service.customer_tags(db, customer_ids=[customer.id])[customer.id]}
    assert "复购2-4次" in tags


def test_buying_a_new_launch_within_the_window_makes_a_fan(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account, phones=["13800000001"])
    db.add(Product(sku="NEW-1", name="2026 明前新茶", category="绿茶", price=Decimal("298"),
                   launched_at=NOW - timedelta(days=10)))
    db.commit()
    service.upsert_orders(db, orders=[service.OrderData(
        source="shop", order_no="N1", paid_at=NOW - timedelta(days=5), amount=Decimal("298"),
        buyer=service.Buyer(phone="13800000001"), lines=[service.LineData(sku="NEW-1", name="新茶")])],
        viewer=SYSTEM, via="test")
    db.commit()
    db.refresh(customer)
    assert customer.stage == "fan"
    rules = customers_service.get_rules(db).model_copy(update={"fan_new_launch_days": 3})
    customers_service.save_rules(db, rules=rules, actor=SYSTEM)
    customers_service.refresh_computed_ids(db, customer_ids=[customer.id])
    db.commit()
    db.refresh(customer)
    assert customer.stage == "customer"  # bought five days after launch: outside a three-day window


def test_a_refund_reverses_the_facts_and_a_larger_one_is_refused(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account, phones=["13800000001"])
    result = service.upsert_orders(db, orders=[service.OrderData(
        source="shop", order_no="R1", paid_at=NOW - timedelta(days=1), amount=Decimal("300"),
        buyer=service.Buyer(phone="13800000001"))], viewer=SYSTEM, via="test")
    db.commit()
    (order_id,) = result.order_ids
    service.refund(db, order_id=order_id, amount=Decimal("100"), viewer=SYSTEM)
    db.commit()
    got = facts(db, customer.id)
    assert got is not None and (got.purchase_count, got.total_spent, got.refunded_total) == (
        1, Decimal("200.00"), Decimal("100.00"))
    with pytest.raises(service.Invalid, match="larger than the order"):
        service.refund(db, order_id=order_id, amount=Decimal("200.01"), viewer=SYSTEM)
    db.rollback()
    service.refund(db, order_id=order_id, amount=Decimal("200"), viewer=SYSTEM)
    db.commit()
    got = facts(db, customer.id)
    db.refresh(customer)
    assert got is not None and (got.purchase_count, got.total_spent) == (0, Decimal("0.00"))
    assert (customer.purchase_count, customer.stage) == (0, "traffic")


def test_a_purchase_typed_on_the_timeline_becomes_an_order(db: Session, make: Any) -> None:
    customer = make.customer(make.account())
    make.touch(customer, "purchase", amount=Decimal("368"), content="明前龙井")
    orders = list(db.scalars(select(Order).where(Order.customer_id == customer.id)))
    assert [(o.source, o.amount, o.match_state) for o in orders] == [("console", Decimal("368.00"), "matched")]
    got = facts(db, customer.id)
    assert got is not None and got.purchase_count == 1


# ---------------------------------------------------------------- API


def test_api_upsert_is_idempotent_on_source_and_order_number(client: TestClient, db: Session, make: Any,
                                                             admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = make.customer(account, phones=["13800000001"])
    body = order("E1", "99.00", customer={"phone": "13800000001"},
                 lines=[{"sku": "LJ-250", "name": "明前龙井 250g", "quantity": 1, "price": "99.00"}])
    first = post_orders(client, admin_headers, body, order("E2", customer={"phone": "13911112222"}))
    assert first.status_code == 200, first.text
    assert first.json() == {"created": 2, "updated": 0, "unmatched": 1}
    again = post_orders(client, admin_headers, {**body, "status": "completed"})
    assert again.json() == {"created": 0, "updated": 1, "unmatched": 0}
    assert db.scalar(select(func.count()).select_from(Order).where(Order.order_no == "E1")) == 1
    detail = client.get(f"/api/v1/customers/{customer.id}", headers=admin_headers).json()
    assert (detail["purchase_count"], detail["total_spent"], detail["rfm_segment"]) == (1, "99.00", "general_develop")
    queue = client.get("/api/v1/orders?state=unmatched", headers=admin_headers).json()
    assert [o["order_no"] for o in queue["items"]] == ["E2"]  # an unknown buyer waits, not dropped


def test_api_refuses_a_refund_larger_than_the_order_and_negative_amounts(client: TestClient, make: Any,
                                                                        admin_headers: dict[str, str]) -> None:
    too_much = post_orders(client, admin_headers, order("X1", "50.00", status="partly_refunded",
                                                        refunded_amount="80.00"))
    assert too_much.status_code == 422 and "退款" in too_much.text
    negative = post_orders(client, admin_headers, order("X2", "-5"))
    assert negative.status_code == 422
    created = post_orders(client, admin_headers, order("X3", "50.00"))
    assert created.status_code == 200
    order_id = client.get("/api/v1/orders", headers=admin_headers).json()["items"][0]["id"]
    refused = client.post(f"/api/v1/orders/{order_id}/refund", json={"amount": "50.01"}, headers=admin_headers)
    assert refused.status_code == 422 and "50.01" in refused.text


def test_an_operator_sees_orders_of_their_accounts_customers_only(
        client: TestClient, db: Session, make: Any, token_for: Any, admin_headers: dict[str, str]) -> None:
    mine, other = make.account(), make.account()
    make.customer(mine, phones=["13800000001"])
    make.customer(other, phones=["13800000002"])
    post_orders(client, admin_headers, order("M1", customer={"phone": "13800000001"}),
                order("O1", customer={"phone": "13800000002"}))
    operator = make.user("operator", accounts=[mine])
    listed = client.get("/api/v1/orders", headers=token_for(operator)).json()
    assert [o["order_no"] for o in listed["items"]] == ["M1"]
    other_id = db.scalar(select(Order.id).where(Order.order_no == "O1"))
    assert client.get(f"/api/v1/orders/{other_id}", headers=token_for(operator)).status_code == 404
    # An operator's push never matches, nor files an order under, another account.
    pushed = post_orders(client, token_for(operator), order("P1", customer={"phone": "13800000002"}))
    assert pushed.json() == {"created": 1, "updated": 0, "unmatched": 1}
    foreign = post_orders(client, token_for(operator), order("P2", account_id=other.id))
    assert foreign.status_code == 422


def test_review_queue_match_create_and_ignore(client: TestClient, db: Session, make: Any,
                                              admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = make.customer(account)
    post_orders(client, admin_headers, order("Q1", customer={"phone": "13911110001", "name": "赵六"}),
                order("Q2", customer={"phone": "13911110002", "name": "钱七"}), order("Q3"))
    ids = {o.order_no: o.id for o in db.scalars(select(Order))}
    matched = client.post(f"/api/v1/orders/{ids['Q1']}/match", json={"customer_id": customer.id},
                          headers=admin_headers)
    assert matched.status_code == 200 and matched.json()["customer_id"] == customer.id
    created = client.post(f"/api/v1/orders/{ids['Q2']}/create-customer", json={"account_id": account.id},
                          headers=admin_headers)
    assert created.status_code == 200
    new_customer = db.get(Customer, created.json()["customer_id"])
    assert new_customer is not None and new_customer.name == "钱七" and new_customer.purchase_count == 1
    assert client.post(f"/api/v1/orders/{ids['Q3']}/ignore", headers=admin_headers).json()["match_state"] == "ignored"
    assert client.get("/api/v1/orders?state=unmatched", headers=admin_headers).json()["items"] == []
    db.expire_all()
    assert db.get(Customer, customer.id).purchase_count == 1  # type: ignore[union-attr]
    actions = set(db.scalars(select(AuditEntry.action).where(AuditEntry.entity_type == "order")))
    assert actions >= {"match", "ignore"}


def test_metrics_count_buyers_repeat_buyers_and_average_order_value(db: Session, make: Any) -> None:
    account = make.account()
    make.customer(account, phones=["13800000001"])
    make.customer(account, phones=["13800000002"])
    service.upsert_orders(db, orders=[
        service.OrderData(source="s", order_no=n, paid_at=NOW - timedelta(days=1), amount=Decimal(a),
                          buyer=service.Buyer(phone=p))
        for n, a, p in (("1", "100", "13800000001"), ("2", "200", "13800000001"), ("3", "60", "13800000002"))],
        viewer=SYSTEM, via="test")
    db.commit()
    (row,) = service.repurchase_metrics(db, viewer=SYSTEM, by="account")
    assert (row.key, row.buyers, row.orders, row.revenue, row.repurchase_rate, row.average_order_value) == (
        str(account.id), 2, 3, Decimal("360.00"), 0.5, Decimal("120.00"))
    (month,) = service.repurchase_metrics(db, viewer=SYSTEM, by="month")
    assert month.orders == 3


# ---------------------------------------------------------------- webhook


@pytest.fixture
def shop(db: Session) -> OrderSource:
    source = service.create_source(db, key="shop", name="小程序商城", kind="generic", viewer=SYSTEM)
    db.commit()
    return source


def signed(source: OrderSource, body: bytes, *, at: int | None = None) -> dict[str, str]:
    timestamp = str(at if at is not None else int(time.time()))
    return {"x-siyu-timestamp": timestamp, "x-siyu-signature": "sha256=" + webhook.sign(source.secret, timestamp, body),
            "content-type": "application/json"}


def test_same_order_pushed_twice_and_imported_once_is_one_order(client: TestClient, db: Session, make: Any,
                                                                shop: OrderSource, tmp_path: Path) -> None:
    make.customer(make.account(), phones=["13800000001"])
    body = json.dumps({"orders": [order("W1", "88.00", source="shop", customer={"phone": "13800000001"})]}).encode()
    first = client.post("/api/v1/orders/webhook/shop", content=body, headers=signed(shop, body))
    assert first.status_code == 200 and first.json() == {"created": 1, "updated": 0, "unmatched": 0}
    body2 = json.dumps({"orders": [order("W1", "88.00", source="shop", status="shipped")]}).encode()
    second = client.post("/api/v1/orders/webhook/shop", content=body2, headers=signed(shop, body2))
    assert second.json()["updated"] == 1
    path = tmp_path / "orders.csv"
    path.write_text(f"订单来源,订单号,付款时间,实付金额,手机号\nshop,W1,{NOW:%Y-%m-%d %H:%M:%S},88.00,13800000001\n",
                    encoding="utf-8")
    plan = imports.check_file(db, source=open_source(path), viewer=SYSTEM)
    imports.execute(db, plan=plan, viewer=SYSTEM, filename="orders.csv")
    db.commit()
    assert db.scalar(select(func.count()).select_from(Order)) == 1


def test_webhook_refuses_unsigned_wrong_stale_replayed_and_oversized_requests(client: TestClient, db: Session,
                                                                             shop: OrderSource) -> None:
    body = json.dumps({"orders": [order("W2", source="shop")]}).encode()
    url = "/api/v1/orders/webhook/shop"
    assert client.post(url, content=body, headers={"content-type": "application/json"}).status_code == 401
    wrong = signed(shop, body) | {"x-siyu-signature": "sha256=" + "0" * 64}
    assert client.post(url, content=body, headers=wrong).status_code == 401
    stale = client.post(url, content=body, headers=signed(shop, body, at=int(time.time()) - 3600))
    assert stale.status_code == 401 and "300" in stale.text
    tampered = client.post(url, content=body.replace(b"100.00", b"1.00"), headers=signed(shop, body))
    assert tampered.status_code == 401
    headers = signed(shop, body)
    assert client.post(url, content=body, headers=headers).status_code == 200
    replay = client.post(url, content=body, headers=headers)
    assert replay.status_code == 409
    huge = b'{"orders": [], "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    assert client.post(url, content=huge, headers=signed(shop, huge)).status_code == 413
    assert client.post("/api/v1/orders/webhook/nobody", content=body, headers=headers).status_code == 404
    assert db.scalar(select(func.count()).select_from(Order)) == 1


def test_youzan_trade_push_is_verified_and_becomes_an_order(client: TestClient, db: Session, make: Any) -> None:
    make.customer(make.account(), phones=["13800000001"])
    source = service.create_source(db, key="youzan", name="有赞", kind=SourceKind.youzan.value, viewer=SYSTEM)
    source.app_id = "client-123"
    db.commit()
    trade = {"full_order_info": {
        "order_info": {"tid": "E20260101000001", "status": "WAIT_SELLER_SEND_GOODS", "pay_time": "2026-01-01 10:00:00"},
        "buyer_info": {"buyer_phone": "13800000001", "fans_nickname": "$encrypted$"},
        "pay_info": {"payment": "188.00", "total_fee": "198.00", "post_fee": "0.00"},
        "address_info": {"receiver_name": "王芳", "receiver_tel": "13800000001"},
        "orders": [{"outer_sku_id": "BC-1", "title": "白茶饼", "num": 2, "price": "99.00"}]}}
    envelope = {"client_id": "client-123", "id": "E20260101000001", "kdt_id": 1, "kdt_name": "茶小满旗舰店",
                "msg": quote(json.dumps(trade, ensure_ascii=False)), "msg_id": "m-1", "type": "trade_TradeBuyerPay",
                "status": "WAIT_SELLER_SEND_GOODS", "version": 1}
    body = json.dumps(envelope).encode()
    sign = hashlib.md5(b"client-123" + body + source.secret.encode()).hexdigest()  # noqa: S324
    answer = client.post("/api/v1/orders/webhook/youzan", content=body, headers={"event-sign": sign})
    assert answer.status_code == 200 and answer.json()["code"] == 0
    assert client.post("/api/v1/orders/webhook/youzan", content=body, headers={"event-sign": sign}).status_code == 200
    forged = client.post("/api/v1/orders/webhook/youzan", content=body, headers={"event-sign": "0" * 32})
    assert forged.status_code == 401
    (saved,) = db.scalars(select(Order))
    assert (saved.order_no, saved.amount, saved.discount, saved.match_state, saved.store) == (
        "E20260101000001", Decimal("188.00"), Decimal("10.00"), MatchState.matched.value, "茶小满旗舰店")


# ---------------------------------------------------------------- imports


HEADER = "订单号,付款时间,实付金额,手机号,商品编码,商品名称,品类,数量,单价\n"


def test_a_negative_amount_at_row_40001_writes_nothing_and_names_row_and_column(db: Session, tmp_path: Path) -> None:
    rows = [f"N{i},2026-03-01 10:00:00,10.00,,T1,红茶,红茶,1,10.00\n" for i in range(40_000)]
    rows[39_999] = "N39999,2026-03-01 10:00:00,-10.00,,T1,红茶,红茶,1,10.00\n"  # spreadsheet row 40,001
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    with pytest.raises(imports.ImportInvalid) as caught:
        imports.check_file(db, source=open_source(path), viewer=SYSTEM)
    assert [(e.row, e.column) for e in caught.value.errors] == [(40_001, "实付金额")]
    assert db.scalar(select(func.count()).select_from(Order)) == 0


def test_gbk_and_bom_files_import_and_rows_of_one_order_become_its_lines(db: Session, make: Any,
                                                                         tmp_path: Path) -> None:
    customer = make.customer(make.account(), phones=["13800000001"])
    text = HEADER + ("G1,2026/3/1 10:00,300,13800000001,LJ,龙井,绿茶,2,100\n"
                     "G1,2026/3/1 10:00,300,13800000001,BC,白茶,白茶,1,100\n"
                     "G2,2026-03-02,50,13999999999,,,,,\n")
    for encoding, name in (("gbk", "gbk.csv"), ("utf-8-sig", "bom.csv")):
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        plan = imports.check_file(db, source=open_source(path), viewer=SYSTEM)
        result = imports.execute(db, plan=plan, viewer=SYSTEM, filename=name)
        db.commit()
        assert (plan.orders, result.counts.unmatched) == (2, 1)
    assert db.scalar(select(func.count()).select_from(Order)) == 2  # the second file updated the same orders
    got = facts(db, customer.id)
    assert got is not None and (got.purchase_count, got.favourite_category) == (1, "绿茶")
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.entity_type == "orders",
                                                                       AuditEntry.action == "import")) == 2


def test_an_order_number_further_down_the_file_is_an_error_naming_both_rows(db: Session, tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text(HEADER + "D1,2026-03-01,10,,,,,,\nD2,2026-03-01,10,,,,,,\nD1,2026-03-01,10,,,,,,\n",
                    encoding="utf-8")
    with pytest.raises(imports.ImportInvalid) as caught:
        imports.check_file(db, source=open_source(path), viewer=SYSTEM)
    (error,) = caught.value.errors
    assert (error.row, error.column) == (4, "订单号") and "2" in error.message


def test_upload_through_the_api_and_the_console_page(client: TestClient, db: Session, make: Any,
                                                     admin: Any, admin_headers: dict[str, str]) -> None:
    make.customer(make.account(), phones=["13800000001"])
    good = (HEADER + "U1,2026-03-01 10:00:00,120.00,13800000001,LJ,龙井,绿茶,1,120\n").encode()
    answer = client.post("/api/v1/orders/import", files={"file": ("orders.csv", good, "text/csv")},
                         headers=admin_headers)
    assert answer.status_code == 200 and answer.json()["created"] == 1
    bad = (HEADER + "U2,2026-03-01,abc,,,,,,\n").encode()
    refused = client.post("/api/v1/orders/import", files={"file": ("bad.csv", bad, "text/csv")},
                          headers=admin_headers)
    assert refused.status_code == 422 and refused.json()["errors"][0]["row"] == 2
    console = Console(client).login(admin)
    page = console.client.post("/orders/import", data={"csrf_token": console.token()},
                               files={"file": ("orders.csv", good.replace(b"U1", b"U3"), "text/csv")})
    assert page.status_code == 200 and 'data-testid="import-result"' in page.text
    shown = console.client.post("/orders/import", data={"csrf_token": console.token()},
                                files={"file": ("bad.csv", bad, "text/csv")})
    assert shown.status_code == 422 and "abc" in shown.text and 'data-row="2"' in shown.text
    assert db.scalar(select(func.count()).select_from(Order)) == 2


def test_console_review_queue_and_customer_orders_page(client: TestClient, db: Session, make: Any, admin: Any,
                                                       admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = make.customer(account)
    post_orders(client, admin_headers, order("C1", "66.00", customer={"phone": "13911110003", "name": "孙八"}))
    console = Console(client).login(admin)
    queue = console.get("/orders?state=unmatched")
    assert queue.status_code == 200 and "C1" in queue.text and "孙八" in queue.text
    order_id = db.scalar(select(Order.id).where(Order.order_no == "C1"))
    matched = console.post(f"/orders/{order_id}/match", {"customer_id": str(customer.id)})
    assert matched.status_code == 303
    page = console.get(f"/customers/{customer.id}/orders")
    assert page.status_code == 200 and "C1" in page.text and 'data-testid="facts-count">1' in page.text
    assert f'action="/orders/{order_id}/refund"' in page.text
    too_much = console.post(f"/orders/{order_id}/refund", {"amount": "70"})
    assert too_much.status_code == 422 and "70" in too_much.text
    refunded = console.post(f"/orders/{order_id}/refund", {"amount": "16"})
    assert refunded.status_code == 303
    assert 'data-testid="facts-total">¥50.00' in console.get(f"/customers/{customer.id}/orders").text
    assert console.get("/orders/metrics?by=channel").status_code == 200


def test_migration_turns_purchase_touches_into_orders_once(tmp_path: Path) -> None:
    import importlib.util
    import sqlite3

    import sqlalchemy as sa

    from siyu.core.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0023")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("INSERT INTO customer (id, name, wechat_id, avatar_url, source, gender, age_band, city, job,"
                     " income_band, family, objective_notes, emotional_notes, stage, level, contact_count,"
                     " purchase_count, purchase_total, completeness, created_at, updated_at) VALUES (1, '王芳', '', '',"
                     " '', '', '', '', '', '', '', '', '', 'customer', '', 0, 2, 300, 0, '2026-01-01', '2026-01-01')")
        conn.execute("INSERT INTO touch (customer_id, kind, content, amount, occurred_at, created_at) VALUES"
                     " (1, 'purchase', '红茶', 100, '2026-01-02', '2026-01-02'),"
                     " (1, 'purchase', '绿茶', 200, '2026-02-02', '2026-02-02')")
    upgrade(url)
    spec = importlib.util.spec_from_file_location("m0027", Path(service.__file__).parent.parent / "migrations"
                                                  / "versions" / "0027_orders_products_and_purchase_facts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        again = module.migrate_purchase_touches(conn)
        assert again == {"purchase_touches": 2, "orders_created": 0, "already_orders": 2,
                         "skipped_without_amount": 0}
        row = conn.execute(sa.text("SELECT purchase_count, total_spent FROM customer_purchase_facts")).one()
        assert tuple(row) == (2, 300)
    engine.dispose()


def big_file(tmp_path: Path, rows: int) -> bytes:
    lines = [f"B{i},2026-03-01 10:00:00,20.00,1380000{i % 3:04d},T{i % 4},红茶,红茶,1,20.00\n" for i in range(rows)]
    return (HEADER + "".join(lines)).encode()


def test_a_large_upload_runs_as_a_job_and_its_facts_land_when_it_ends(client: TestClient, db: Session, make: Any,
                                                                      admin_headers: dict[str, str]) -> None:
    customer = make.customer(make.account(), phones=["13800000001"])
    answer = client.post("/api/v1/orders/import", files={"file": ("big.csv", big_file(Path("."), 6000), "text/csv")},
                         headers=admin_headers)
    assert answer.status_code == 202, answer.text
    job = client.get(answer.json()["job_url"], headers=admin_headers).json()
    assert job["status"] == "succeeded", job
    assert db.scalar(select(func.count()).select_from(Order)) == 6000
    got = facts(db, customer.id)
    assert got is not None and (got.purchase_count, got.total_spent) == (2000, Decimal("40000.00"))
    db.refresh(customer)
    assert customer.purchase_count == 2000 and customer.stage == "customer"


def test_an_import_killed_midway_resumes_and_writes_each_order_once(db: Session, make: Any, tmp_path: Path) -> None:
    from siyu.core import db as core_db

    customer = make.customer(make.account(), phones=["13800000001"])
    path = tmp_path / "big.csv"
    path.write_bytes(big_file(tmp_path, 2500))
    saved: dict[str, Any] = {}

    def crash_after_two(session: Session, state: dict[str, Any]) -> None:
        if state["written"] >= 2000:
            raise RuntimeError("worker killed")  # the batch and this state roll back together
        saved.update(state)  # what the job row keeps (committed with the batch)

    with pytest.raises(RuntimeError):
        imports.run_in_batches(core_db.transaction, source=open_source(path), viewer=SYSTEM, filename="big.csv",
                               checkpoint=crash_after_two, size=1000)
    assert db.scalar(select(func.count()).select_from(Order)) == 1000  # the second batch rolled back with its state
    resumed = imports.run_in_batches(core_db.transaction, source=open_source(path), viewer=SYSTEM,
                                     filename="big.csv", resume=saved, size=1000)
    assert resumed.counts.created == 2500
    assert db.scalar(select(func.count()).select_from(Order)) == 2500
    got = facts(db, customer.id)
    assert got is not None and got.purchase_count == 833  # orders 1, 4, 7 … of 2,500: each counted once


def test_a_batched_import_writes_exactly_the_amounts_and_times_it_checked(db: Session, make: Any,
                                                                         tmp_path: Path) -> None:
    """The write pass reads the checked orders back from the spool: fen, refunds, line prices and the
    shop's local time arrive unchanged."""
    from siyu.core import db as core_db
    from siyu.core.settings import local_zone
    from siyu.orders.models import OrderLine

    customer = make.customer(make.account(), phones=["13800000001"])
    path = tmp_path / "fen.csv"
    path.write_text("订单号,付款时间,实付金额,订单状态,退款金额,手机号,商品名称,单价\n"
                    "F1,2026-03-01 23:59:58,0.10,部分退款,0.01,13800000001,桂花乌龙,0.05\n"
                    "F1,2026-03-01 23:59:58,0.10,部分退款,0.01,13800000001,龙井,0.05\n"
                    "F2,2026-03-02 00:00:01,1999.99,已完成,,13800000001,岩茶,1999.99\n", encoding="utf-8")
    result = imports.run_in_batches(core_db.transaction, source=open_source(path), viewer=SYSTEM, filename="fen.csv",
                                    size=1)
    assert result.counts.created == 2
    orders = {o.order_no: o for o in db.scalars(select(Order))}
    assert (orders["F1"].amount, orders["F1"].refunded_amount) == (Decimal("0.10"), Decimal("0.01"))
    assert orders["F2"].amount == Decimal("1999.99")
    assert orders["F1"].paid_at == datetime(2026, 3, 1, 23, 59, 58, tzinfo=local_zone())
    assert orders["F2"].paid_at == datetime(2026, 3, 2, 0, 0, 1, tzinfo=local_zone())
    prices = sorted(line.price for line in db.scalars(select(OrderLine).where(OrderLine.order_id == orders["F1"].id)))
    assert prices == [Decimal("0.05"), Decimal("0.05")]
    got = facts(db, customer.id)
    assert got is not None and got.total_spent == Decimal("2000.08")
