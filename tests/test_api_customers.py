from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_started_app_keeps_its_start_up_objects_out_of_full_collections(client: TestClient) -> None:
    import gc

    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] >= 10_000  # young passes every tens of thousands of allocations, not 700


def test_create_and_fetch_customer(client: TestClient, make: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    body = {"name": "王芳", "account_id": account.id, "remark_name": "王芳-爱喝岩茶",
            "tags": ["来源:门店", "人群:宝妈"], "phones": ["13812341234"], "description": "杭州，两个孩子"}
    response = client.post("/api/v1/customers", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] > 0
    fetched = client.get(f"/api/v1/customers/{created['id']}", headers=admin_headers).json()
    assert fetched["remark_name"] == "王芳-爱喝岩茶"
    assert {t["name"] for t in fetched["tags"]} >= {"门店", "宝妈"}
    assert fetched["friendships"][0]["phones"] == ["13812341234"]
    assert fetched["stage"] == "traffic"


def _create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/customers", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_operator_cannot_open_other_accounts_customer(client: TestClient, make: Any, token_for: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    other = make.customer(theirs, name="别人的客户")
    own = make.customer(mine, name="自己的客户")
    headers = token_for(operator)
    assert client.get(f"/api/v1/customers/{other.id}", headers=headers).status_code == 404
    assert client.patch(f"/api/v1/customers/{other.id}", json={"city": "上海"}, headers=headers).status_code == 404
    assert client.get(f"/api/v1/customers/{other.id}/touches", headers=headers).status_code == 404
    assert client.get(f"/api/v1/customers/{own.id}", headers=headers).status_code == 200
    listed = client.get("/api/v1/customers", headers=headers).json()["items"]
    assert [c["id"] for c in listed] == [own.id]
    accounts = client.get("/api/v1/accounts", headers=headers).json()["items"]
    assert [a["id"] for a in accounts] == [mine.id]


def test_operator_cannot_create_customer_on_foreign_account(client: TestClient, make: Any, token_for: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    response = client.post("/api/v1/customers", json={"name": "x", "account_id": theirs.id},
                           headers=token_for(operator))
    assert response.status_code == 422
    assert response.json()["field"] == "account_id"


def test_over_long_description_is_refused_with_the_field_named(client: TestClient, make: Any,
                                                                admin_headers: dict[str, str]) -> None:
    account = make.account()
    whole = client.post("/api/v1/customers", headers=admin_headers,
                        json={"name": "长文", "account_id": account.id, "description": "字" * 1_000_000})
    assert whole.status_code == 413  # a 6 MB body: refused unread, before the field could be checked
    response = client.post("/api/v1/customers", headers=admin_headers,
                           json={"name": "长文", "account_id": account.id, "description": "字" * 30_000})
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == "description"
    assert "description" in body["detail"]
    assert client.get("/api/v1/customers", headers=admin_headers).json()["items"] == []


def test_unknown_tag_group_is_a_clear_error(client: TestClient, make: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    response = client.post("/api/v1/customers", headers=admin_headers,
                           json={"name": "x", "account_id": account.id, "tags": ["星座:天蝎"]})
    assert response.status_code == 422
    assert "星座" in response.json()["detail"]
    assert response.json()["field"] == "tags"
    listing = client.get("/api/v1/customers", params={"tag": "不存在的标签"}, headers=admin_headers)
    assert listing.status_code == 422


def test_hostile_text_is_stored_and_returned_intact(client: TestClient, make: Any,
                                                     admin_headers: dict[str, str]) -> None:
    account = make.account()
    nasty = "<script>alert(1)</script><img src=x onerror=alert(1)> 🍵 مرحبا \u202egnp.exe"
    created = _create(client, admin_headers, name=nasty, account_id=account.id, remark_name=nasty, description=nasty)
    fetched = client.get(f"/api/v1/customers/{created['id']}", headers=admin_headers).json()
    assert fetched["name"] == nasty
    assert fetched["friendships"][0]["remark_name"] == nasty
    assert client.get("/api/v1/customers", params={"q": "<script>"}, headers=admin_headers).json()["items"]


def test_filters_combine_tags_and_across_groups_or_within(client: TestClient, make: Any,
                                                          admin_headers: dict[str, str]) -> None:
    account = make.account()
    a = _create(client, admin_headers, name="甲", account_id=account.id, tags=["来源:门店", "人群:宝妈"])
    b = _create(client, admin_headers, name="乙", account_id=account.id, tags=["来源:门店", "人群:白领"])
    c = _create(client, admin_headers, name="丙", account_id=account.id, tags=["来源:包裹卡", "人群:宝妈"])

    def ids(**params: Any) -> set[int]:
        response = client.get("/api/v1/customers", params=params, headers=admin_headers)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert ids(tag=["来源:门店", "人群:宝妈"]) == {a["id"]}
    assert ids(tag=["人群:白领", "来源:包裹卡"]) == set()
    assert ids(tag=["人群:宝妈", "人群:白领"]) == {a["id"], b["id"], c["id"]}
    assert ids(tag=["来源:门店", "人群:宝妈", "人群:白领"]) == {a["id"], b["id"]}
    assert ids(tag=["来源:门店", "来源:包裹卡", "人群:宝妈"]) == {a["id"], c["id"]}
    tag_id = next(t["id"] for t in a["tags"] if t["name"] == "宝妈")
    assert ids(tag=[str(tag_id)]) == {a["id"], c["id"]}


def test_search_finds_name_remark_phone_wechat_id_and_description(client: TestClient, make: Any,
                                                                   admin_headers: dict[str, str]) -> None:
    account = make.account()
    target = _create(client, admin_headers, name="李雷", account_id=account.id, remark_name="李雷-爱喝普洱",
                     phones=["139 0000 1234"], description="住在滨江，喜欢爬山", wechat_id="lilei_88")
    _create(client, admin_headers, name="韩梅梅", account_id=account.id)
    for q in ("李雷", "普洱", "00001234", "lilei_88", "爬山"):
        items = client.get("/api/v1/customers", params={"q": q}, headers=admin_headers).json()["items"]
        assert [i["id"] for i in items] == [target["id"]], q
    assert client.get("/api/v1/customers", params={"q": "%"}, headers=admin_headers).json()["items"] == []


def test_cursor_pagination_walks_every_customer_once(client: TestClient, make: Any,
                                                      admin_headers: dict[str, str]) -> None:
    account = make.account()
    created = {make.customer(account).id for _ in range(7)}
    for index, customer_id in enumerate(sorted(created)[:4]):
        make.touch(type("C", (), {"id": customer_id})(), content=f"聊天{index}")
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/customers", params=params, headers=admin_headers).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))
    bad = client.get("/api/v1/customers", params={"cursor": "not-a-cursor"}, headers=admin_headers)
    assert bad.status_code == 422


def test_touches_move_the_customer_up_the_ladder(client: TestClient, make: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = _create(client, admin_headers, name="周杰", account_id=account.id)
    url = f"/api/v1/customers/{customer['id']}"
    assert client.get(url, headers=admin_headers).json()["stage"] == "traffic"
    assert client.post(f"{url}/touches", json={"kind": "chat", "content": "问了新茶"},
                       headers=admin_headers).status_code == 201
    assert client.get(url, headers=admin_headers).json()["stage"] == "user"
    client.post(f"{url}/touches", json={"kind": "purchase", "content": "明前龙井", "amount": "368"},
                headers=admin_headers)
    portrait = client.get(url, headers=admin_headers).json()
    assert portrait["stage"] == "customer"
    assert portrait["purchase_count"] == 1
    assert portrait["last_touch_at"] is not None
    groups = {t["group"] for t in portrait["tags"]}
    assert {"沟通次数", "购买", "等级"} <= groups
    timeline = client.get(f"{url}/touches", headers=admin_headers).json()["items"]
    assert [t["kind"] for t in timeline[:2]] == ["purchase", "chat"]


def test_purchase_without_amount_is_refused(client: TestClient, make: Any, admin_headers: dict[str, str]) -> None:
    customer = make.customer(make.account())
    response = client.post(f"/api/v1/customers/{customer.id}/touches", json={"kind": "purchase"},
                           headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["field"] == "amount"


def test_patch_updates_remark_fields_and_is_audited(client: TestClient, make: Any,
                                                     admin_headers: dict[str, str]) -> None:
    customer = make.customer(make.account())
    response = client.patch(f"/api/v1/customers/{customer.id}", headers=admin_headers,
                            json={"remark_name": "新备注", "phones": ["13800001111"], "city": "苏州",
                                  "emotional_notes": "说话温柔，爱笑"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["remark_name"] == "新备注"
    assert body["city"] == "苏州"
    audit = client.get("/api/v1/audit", params={"entity_type": "customer"}, headers=admin_headers).json()["items"]
    update = next(e for e in audit if e["action"] == "update")
    assert update["after"]["remark_name"] == "新备注"
    assert update["before"]["city"] == ""


def test_service_role_sees_masked_phones(client: TestClient, make: Any, token_for: Any) -> None:
    account = make.account()
    customer = make.customer(account, phones=["13812345678"])
    service_user = make.user("service", accounts=[account])
    body = client.get(f"/api/v1/customers/{customer.id}", headers=token_for(service_user)).json()
    assert body["friendships"][0]["phones"] == ["138****5678"]


def test_computed_tags_cannot_be_set_by_hand(client: TestClient, make: Any, admin_headers: dict[str, str]) -> None:
    customer = make.customer(make.account())
    response = client.post(f"/api/v1/customers/{customer.id}/tags", json={"add": ["等级:V4 挚友"]},
                           headers=admin_headers)
    assert response.status_code == 422


def test_accounts_report_utilisation(client: TestClient, make: Any, admin_headers: dict[str, str]) -> None:
    account = make.account(friend_capacity=2)
    make.customer(account)
    make.customer(account)
    item = client.get("/api/v1/accounts", headers=admin_headers).json()["items"][0]
    assert item["friend_count"] == 2
    assert item["utilisation"] == 1.0
    assert item["near_capacity"] is True


def test_bad_paths_answer_json_without_traces(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.get("/api/v1/customers/abc", headers=admin_headers)
    assert response.status_code == 422
    assert "Traceback" not in response.text
    assert client.get("/api/v1/nothing-here", headers=admin_headers).status_code == 404


def test_openapi_docs_are_served_without_a_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    spec = client.get("/openapi.json").json()
    assert "/api/v1/customers" in spec["paths"]


def test_service_role_sees_address_phones_masked(client: TestClient, make: Any, token_for: Any,
                                                 admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = make.customer(account)
    client.post(f"/api/v1/customers/{customer.id}/addresses", headers=admin_headers,
                json={"recipient": "王芳", "phone": "13912345678", "region": "浙江 杭州", "detail": "文三路 1 号"})
    service_user = make.user("service", accounts=[account])
    body = client.get(f"/api/v1/customers/{customer.id}", headers=token_for(service_user)).json()
    assert body["addresses"][0]["phone"] == "139****5678"
