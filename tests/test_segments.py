"""Segments (客户分群): the one compiler, saved segments, broken conditions, scope, list/export/bulk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, CustomField, Tag
from siyu.orders.models import CustomerPurchaseFacts, Order, OrderLine
from siyu.segments import compiler, rfm
from siyu.segments.models import CustomerRfm, Segment, SegmentMember
from siyu.segments.schemas import parse_tree
from tests.test_pages import tag_id

NOW = datetime.now(UTC)


def order(db: Session, customer_id: int, *, days_ago: int, amount: str = "100", category: str = "绿茶",
          status: str = "paid", refunded: str = "0", n: list[int] = [0]) -> Order:  # noqa: B006
    n[0] += 1
    at = NOW - timedelta(days=days_ago)
    row = Order(source="test", order_no=f"T{n[0]}", customer_id=customer_id, status=status, amount=Decimal(amount),
                refunded_amount=Decimal(refunded), paid_at=at)
    db.add(row)
    db.flush()
    db.add(OrderLine(order_id=row.id, sku="SKU", name="龙井", category=category, quantity=1, price=Decimal(amount),
                     customer_id=customer_id, paid_at=at))
    db.commit()
    return row


def ids_of(db: Session, tree: dict[str, Any], viewer: Any = SYSTEM) -> set[int]:
    flt = customers_service.CustomerFilter(conditions=tree)
    return set(customers_service.matching_ids(db, flt=flt, viewer=viewer, limit=10_000))


def tag(db: Session, customer: Any, group: str, name: str) -> int:
    tid = tag_id(db, group, name)
    customers_service.set_customer_tags(db, customer_id=customer.id, viewer=SYSTEM,
                                        add=customers_service.get_tags(db, tag_ids=[tid]), remove=[])
    db.commit()
    return tid


def test_and_or_groups_over_tags_stage_and_fields_match_exactly(db: Session, make: Any) -> None:
    account = make.account()
    hz = make.customer(account, name="杭州白领", city="杭州")
    sh = make.customer(account, name="上海白领", city="上海")
    bj = make.customer(account, name="北京学生", city="北京")
    white = tag(db, hz, "人群", "白领")
    tag(db, sh, "人群", "白领")
    tree = {"kind": "and", "conditions": [
        {"kind": "tag", "tag_ids": [white]},
        {"kind": "or", "conditions": [{"kind": "field", "field": "city", "op": "eq", "value": "杭州"},
                                      {"kind": "field", "field": "name", "op": "contains", "value": "上海"}]}]}
    assert ids_of(db, tree) == {hz.id, sh.id}
    tree["conditions"][1]["conditions"].pop()
    assert ids_of(db, tree) == {hz.id}
    assert ids_of(db, {"kind": "tag", "tag_ids": [white], "match": "none"}) == {bj.id}
    assert ids_of(db, {"kind": "stage", "stages": ["traffic"]}) == {hz.id, sh.id, bj.id}


def test_four_condition_segment_tag_rfm_bought_category_and_no_touch(db: Session, make: Any) -> None:
    account = make.account()
    match, touched, other_category, untagged = (make.customer(account) for _ in range(4))
    white = 0
    for c in (match, touched, other_category):
        white = tag(db, c, "人群", "白领")
    for c in (match, touched, untagged):
        order(db, c.id, days_ago=10, category="绿茶")
    order(db, other_category.id, days_ago=10, category="红茶")
    order(db, other_category.id, days_ago=200, category="绿茶")  # too long ago
    make.touch(touched, "chat", content="聊了新茶")
    rfm.refresh_all(db)
    db.commit()
    segments = sorted({s for s in db.scalars(select(CustomerRfm.segment))})
    tree = {"kind": "and", "conditions": [
        {"kind": "tag", "tag_ids": [white]},
        {"kind": "rfm", "segments": segments},
        {"kind": "bought", "category": "绿茶", "days": 90},
        {"kind": "no_touch", "days": 30}]}
    assert ids_of(db, tree) == {match.id}
    page = customers_service.list_customers(db, flt=customers_service.CustomerFilter(conditions=tree), viewer=SYSTEM)
    assert [c.id for c in page.items] == [match.id]


def test_spent_and_no_purchase_read_orders_net_of_refunds(db: Session, make: Any) -> None:
    account = make.account()
    big, refunded, lapsed = (make.customer(account) for _ in range(3))
    order(db, big.id, days_ago=5, amount="800")
    order(db, refunded.id, days_ago=5, amount="800", status="partly_refunded", refunded="700")
    order(db, lapsed.id, days_ago=400, amount="900")
    db.add_all([CustomerPurchaseFacts(customer_id=big.id, purchase_count=1, total_spent=800, last_purchase_at=NOW),
                CustomerPurchaseFacts(customer_id=lapsed.id, purchase_count=1, total_spent=900,
                                      last_purchase_at=NOW - timedelta(days=400))])
    db.commit()
    assert ids_of(db, {"kind": "spent", "min_amount": "500", "days": 30}) == {big.id}
    assert ids_of(db, {"kind": "no_purchase", "days": 180}) == {refunded.id, lapsed.id}


def test_compiled_conditions_carry_user_text_as_bound_parameters(db: Session, make: Any) -> None:
    tree = parse_tree({"kind": "field", "field": "city", "op": "contains", "value": "x' OR 1=1 --"})
    compiled = compiler.compile_tree(db, tree, viewer=SYSTEM)
    sql = str(compiled.clause.compile())
    assert "OR 1=1" not in sql and "x'" not in sql
    make.customer(make.account(), city="杭州")
    assert ids_of(db, tree.model_dump(mode="json")) == set()


def test_condition_on_a_deleted_custom_field_is_a_clear_error_and_marks_the_segment_broken(
        client: TestClient, db: Session, make: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    make.customer(account)
    field = CustomField(key="tea", label="爱喝的茶", field_type="text")
    db.add(field)
    db.commit()
    body = {"name": "爱喝龙井", "conditions": {"kind": "and", "conditions": [
        {"kind": "custom_field", "field_id": field.id, "op": "eq", "value": "龙井"}]}}
    created = client.post("/api/v1/segments", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    segment_id = created.json()["id"]
    db.execute(delete(CustomField).where(CustomField.id == field.id))
    db.commit()
    response = client.get(f"/api/v1/segments/{segment_id}/customers", headers=admin_headers)
    assert response.status_code == 422
    assert f"条件中的自定义字段 {field.id} 已被删除" in response.text
    db.expire_all()
    segment = db.get(Segment, segment_id)
    assert segment is not None and segment.broken and "已被删除" in segment.broken_reason
    # The customer list with ?segment= refuses it too, never an empty page.
    listed = client.get(f"/api/v1/customers?segment={segment_id}", headers=admin_headers)
    assert listed.status_code == 422


def test_saving_a_segment_on_a_deleted_tag_is_refused(client: TestClient, db: Session, make: Any,
                                                      admin_headers: dict[str, str]) -> None:
    gone = tag_id(db, "人群", "白领")
    db.execute(delete(Tag).where(Tag.id == gone))
    db.commit()
    body = {"name": "白领", "conditions": {"kind": "tag", "tag_ids": [gone]}}
    response = client.post("/api/v1/segments", json={**body, "conditions": {"kind": "and",
                                                                          "conditions": [body["conditions"]]}},
                           headers=admin_headers)
    assert response.status_code == 422 and f"条件中的标签 {gone} 已被删除" in response.text
    assert db.scalar(select(Segment.id)) is None


def test_an_operators_segment_never_counts_customers_outside_their_accounts(
        client: TestClient, db: Session, make: Any, token_for: Any) -> None:
    mine, theirs = make.account(), make.account()
    own = [make.customer(mine, city="杭州") for _ in range(2)]
    make.customer(theirs, city="杭州")
    operator = make.user("operator", accounts=[mine])
    headers = token_for(operator)
    conditions = {"kind": "and", "conditions": [{"kind": "field", "field": "city", "op": "eq", "value": "杭州"}]}
    preview = client.post("/api/v1/segments/preview", json={"conditions": conditions}, headers=headers)
    assert preview.status_code == 200 and preview.json()["count"] == 2
    created = client.post("/api/v1/segments", json={"name": "杭州", "conditions": conditions}, headers=headers)
    listed = client.get(f"/api/v1/segments/{created.json()['id']}/customers", headers=headers)
    assert {c["id"] for c in listed.json()["items"]} == {c.id for c in own}
    # Naming the other account is refused, not answered with its customers.
    other = {"kind": "and", "conditions": [{"kind": "account", "account_ids": [theirs.id]}]}
    refused = client.post("/api/v1/segments/preview", json={"conditions": other}, headers=headers)
    assert refused.status_code == 422
    # A static snapshot taken by the operator holds only their customers.
    static = client.post("/api/v1/segments", json={"name": "杭州快照", "conditions": conditions, "mode": "static"},
                         headers=headers)
    assert static.json()["snapshot_count"] == 2


def test_static_segment_keeps_its_snapshot_until_taken_again(client: TestClient, db: Session, make: Any,
                                                             admin_headers: dict[str, str]) -> None:
    account = make.account()
    first = make.customer(account, city="杭州")
    conditions = {"kind": "and", "conditions": [{"kind": "field", "field": "city", "op": "eq", "value": "杭州"}]}
    created = client.post("/api/v1/segments", json={"name": "快照", "conditions": conditions, "mode": "static"},
                          headers=admin_headers).json()
    later = make.customer(account, city="杭州")
    url = f"/api/v1/segments/{created['id']}/customers"
    assert [c["id"] for c in client.get(url, headers=admin_headers).json()["items"]] == [first.id]
    again = client.post(f"/api/v1/segments/{created['id']}/snapshot", headers=admin_headers)
    assert again.json()["snapshot_count"] == 2
    assert {c["id"] for c in client.get(url, headers=admin_headers).json()["items"]} == {first.id, later.id}
    assert db.scalar(select(SegmentMember.customer_id).where(SegmentMember.customer_id == later.id)) == later.id


def test_a_saved_segment_drives_the_customer_list_export_and_bulk_action(
        client: TestClient, db: Session, make: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    hz = [make.customer(account, city="杭州", name=f"杭州{i}") for i in range(3)]
    make.customer(account, city="上海")
    conditions = {"kind": "and", "conditions": [{"kind": "field", "field": "city", "op": "eq", "value": "杭州"}]}
    segment = client.post("/api/v1/segments", json={"name": "杭州客户", "conditions": conditions},
                          headers=admin_headers).json()
    listed = client.get(f"/api/v1/customers?segment={segment['id']}&limit=2", headers=admin_headers).json()
    assert len(listed["items"]) == 2 and listed["next_cursor"]
    rest = client.get(f"/api/v1/segments/{segment['id']}/customers?limit=2&cursor={listed['next_cursor']}",
                      headers=admin_headers).json()
    assert {c["id"] for c in listed["items"] + rest["items"]} == {c.id for c in hz}
    exported = client.get(f"/api/v1/customers/export?segment={segment['id']}&format=csv", headers=admin_headers)
    assert exported.status_code == 200, exported.text
    text = exported.content.decode("utf-8-sig")
    assert all(c.name in text for c in hz) and "上海" not in text
    bulk = client.post("/api/v1/customers/bulk", headers=admin_headers, json={
        "filter": {"segment": segment["id"]}, "action": "set_stage", "stage": "user", "dry_run": True})
    assert bulk.status_code == 200 and bulk.json()["count"] == 3


def test_bad_conditions_are_answered_in_chinese_not_500(client: TestClient, admin_headers: dict[str, str]) -> None:
    for conditions in ({"kind": "and", "conditions": [{"kind": "no_touch", "days": 0}]},
                       {"kind": "and", "conditions": [{"kind": "tea", "x": 1}]},
                       {"kind": "and", "conditions": []}):
        response = client.post("/api/v1/segments", json={"name": "x", "conditions": conditions},
                               headers=admin_headers)
        assert response.status_code == 422, response.text
    unknown = client.get("/api/v1/customers?rfm=vip", headers=admin_headers)
    assert unknown.status_code == 422 and "未知的 RFM 分层" in unknown.text
    missing = client.get("/api/v1/segments/999/customers", headers=admin_headers)
    assert missing.status_code == 404 and "分群不存在" in missing.text


def test_only_the_owner_or_an_admin_changes_a_segment(client: TestClient, make: Any, token_for: Any,
                                                      admin_headers: dict[str, str]) -> None:
    account = make.account()
    conditions = {"kind": "and", "conditions": [{"kind": "stage", "stages": ["traffic"]}]}
    segment = client.post("/api/v1/segments", json={"name": "流量", "conditions": conditions},
                          headers=admin_headers).json()
    operator = make.user("operator", accounts=[account])
    response = client.patch(f"/api/v1/segments/{segment['id']}", json={"name": "改名"}, headers=token_for(operator))
    assert response.status_code == 403
    assert client.patch(f"/api/v1/segments/{segment['id']}", json={"name": "改名"},
                        headers=admin_headers).json()["name"] == "改名"


@pytest.mark.parametrize("tree", [{"kind": "and", "conditions": [{"kind": "level", "levels": ["VIP"]}]}])
def test_console_count_endpoint_answers_count_and_sample(client: TestClient, make: Any, admin: Any,
                                                         tree: dict[str, Any], db: Session) -> None:
    import json

    from tests.test_pages import Console

    account = make.account()
    vip = make.customer(account)
    db.execute(Customer.__table__.update().where(Customer.id == vip.id).values(level="VIP"))
    db.commit()
    console = Console(client).login(admin)
    answer = console.get("/segments/count", params={"conditions": json.dumps(tree)})
    assert answer.status_code == 200 and answer.json()["count"] == 1
    assert answer.json()["sample"][0]["id"] == vip.id
    bad = console.get("/segments/count", params={"conditions": "{"})
    assert bad.status_code == 422 and "JSON" in bad.json()["error"]
    saved = console.post("/segments", {"name": "VIP", "mode": "dynamic", "conditions": json.dumps(tree)})
    assert saved.status_code == 303
    page = console.get(saved.headers["location"])
    assert page.status_code == 200 and "1 位客户符合" in page.text and "VIP" in page.text
    listed = console.get(f"/customers?segment={saved.headers['location'].rsplit('/', 1)[1]}")
    assert listed.status_code == 200 and vip.name in listed.text



def test_the_console_shows_a_broken_segment_with_its_reason_not_an_empty_list(
        client: TestClient, db: Session, make: Any, admin: Any) -> None:
    import json

    from tests.test_pages import Console

    make.customer(make.account())
    white = tag_id(db, "人群", "白领")
    console = Console(client).login(admin)
    tree = {"kind": "and", "conditions": [{"kind": "tag", "tag_ids": [white]}]}
    saved = console.post("/segments", {"name": "白领", "mode": "dynamic", "conditions": json.dumps(tree)})
    assert saved.status_code == 303
    db.execute(delete(Tag).where(Tag.id == white))
    db.commit()
    page = console.get(saved.headers["location"])
    assert page.status_code == 422 and "这个分群已失效" in page.text and f"标签 {white} 已被删除" in page.text
    listing = console.get("/segments")
    assert "已失效" in listing.text
    segment_id = saved.headers["location"].rsplit("/", 1)[1]
    customers = console.get(f"/customers?segment={segment_id}")
    assert customers.status_code == 422 and "已被删除" in customers.text
