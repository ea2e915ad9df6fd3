"""Bad input answers 4xx with a clear message, never 500: huge and unknown ids, odd digits, empty ids.

Each case was found by hand or by the fuzzer (issue 17, item 7) and failed with a 500 before its fix.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

HUGE = 2**64  # above what SQLite can bind (2^63 − 1) and PostgreSQL's INTEGER (2^31 − 1)


def _refused(response: Any, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize("path", [
    f"/api/v1/customers/{HUGE}",
    f"/api/v1/customers/{HUGE}/touches",
    f"/api/v1/accounts/{HUGE}",
    f"/api/v1/jobs/{HUGE}",
    f"/api/v1/groups/{HUGE}",
    f"/api/v1/inbox/conversations/{HUGE}",
    f"/api/v1/handovers/{HUGE}",
    f"/api/v1/customers?account_id={HUGE}",
    f"/api/v1/customers/export?account_id={HUGE}",
    f"/api/v1/customers/merge/preview?target_id={HUGE}&source_ids=1",
    f"/api/v1/inbox/conversations?account_id={HUGE}",
    f"/api/v1/jobs?before_id={HUGE}",
])
def test_an_id_above_what_the_database_holds_is_refused_with_the_field_named(
        client: TestClient, admin_headers: dict[str, str], path: str) -> None:
    body = _refused(client.get(path, headers=admin_headers))
    assert body["errors"][0]["message"] == "不能大于 2147483647"
    assert "不能大于" in body["detail"]


def test_a_huge_id_in_a_body_is_refused(client: TestClient, make: Any, admin_headers: dict[str, str]) -> None:
    account = make.account()
    customer = make.customer(account)
    for path, body in [
        ("/api/v1/customers", {"name": "x", "account_id": HUGE}),
        (f"/api/v1/customers/{customer.id}/friendships", {"account_id": HUGE}),
        ("/api/v1/users", {"username": "huge", "password": "abcdefgh12345", "role": "operator",
                           "account_ids": [HUGE]}),
        ("/api/v1/accounts", {"display_name": "大号", "owner_user_id": HUGE}),
        ("/api/v1/customers/bulk", {"filter": {}, "action": "assign_owner", "owner_id": HUGE, "dry_run": True}),
    ]:
        refused = _refused(client.post(path, json=body, headers=admin_headers))
        assert refused["errors"][0]["field"] in ("account_id", "account_ids.0", "owner_user_id", "owner_id")


def test_a_huge_id_or_odd_digit_in_a_console_page_is_refused(client: TestClient, admin: Any) -> None:
    from tests.test_pages import Console

    console = Console(client).login(admin)
    response = console.get(f"/customers/{HUGE}")
    assert response.status_code == 422
    assert "不能大于 2147483647" in response.text
    listed = console.get("/customers", params={"tag": "²"})
    assert listed.status_code == 422
    assert "²" in listed.text
    assert console.get("/customers", params={"account_id": "²"}).status_code == 422


def test_a_user_for_an_account_that_does_not_exist_is_refused(client: TestClient,
                                                              admin_headers: dict[str, str]) -> None:
    body = _refused(client.post("/api/v1/users", headers=admin_headers, json={
        "username": "ghost", "password": "abcdefgh12345", "role": "operator", "account_ids": [999999]}))
    assert body["field"] == "account_ids"
    assert "999999" in body["detail"]
    users = client.get("/api/v1/users", headers=admin_headers).json()
    assert "ghost" not in str(users)


def test_moving_a_user_to_an_account_that_does_not_exist_is_refused(client: TestClient, make: Any,
                                                                    admin_headers: dict[str, str]) -> None:
    operator = make.user("operator", accounts=[make.account()])
    body = _refused(client.patch(f"/api/v1/users/{operator.id}", headers=admin_headers,
                                 json={"account_ids": [999999]}))
    assert body["field"] == "account_ids"


def test_an_account_owned_by_a_user_who_does_not_exist_is_refused(client: TestClient, make: Any,
                                                                  admin_headers: dict[str, str]) -> None:
    body = _refused(client.post("/api/v1/accounts", headers=admin_headers,
                                json={"display_name": "无主号", "owner_user_id": 999999}))
    assert body["field"] == "owner_user_id"
    account = make.account()
    body = _refused(client.patch(f"/api/v1/accounts/{account.id}", headers=admin_headers,
                                 json={"owner_user_id": 999999}))
    assert body["field"] == "owner_user_id"


def test_a_rule_for_an_account_that_does_not_exist_is_refused(client: TestClient,
                                                              admin_headers: dict[str, str]) -> None:
    body = _refused(client.post("/api/v1/autoreply/rules", headers=admin_headers, json={
        "name": "问价", "account_id": 999999, "match_kind": "contains", "keywords": ["价格"], "reply": "稍等"}))
    assert body["field"] == "account_id"
    assert "999999" in body["detail"]
    assert client.get("/api/v1/autoreply/rules", headers=admin_headers).json() == {"items": []}


def test_switching_auto_replies_of_an_account_that_does_not_exist_is_refused(
        client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/autoreply/accounts/16426/enabled?enabled=true", headers=admin_headers)
    assert response.status_code == 404, response.text
    assert "16426" in response.json()["detail"]


def test_inbound_messages_for_an_account_or_customer_that_does_not_exist_are_refused(
        client: TestClient, make: Any, admin_headers: dict[str, str]) -> None:
    body = _refused(client.post("/api/v1/inbox/messages", headers=admin_headers, json=[{
        "source": "personal", "platform_msgid": "m-1", "account_id": 999999, "sent_at": "2026-05-01T10:00:00Z",
        "text": "你好"}]))
    assert body["field"] == "account_id"
    account = make.account()
    body = _refused(client.post("/api/v1/inbox/messages", headers=admin_headers, json=[{
        "source": "personal", "platform_msgid": "m-2", "account_id": account.id, "customer_id": 999999,
        "sent_at": "2026-05-01T10:00:00Z", "text": "你好"}]))
    assert body["field"] == "customer_id"
    assert "999999" in body["detail"]


def test_a_channel_for_an_account_that_does_not_exist_is_refused(client: TestClient,
                                                                 admin_headers: dict[str, str]) -> None:
    body = _refused(client.post("/api/v1/channels", headers=admin_headers, json={
        "name": "门店海报", "account_ids": [999999]}))
    assert body["field"] == "account_ids"


@pytest.mark.parametrize("tag", ["²", "٣", "0", str(HUGE)])
def test_a_tag_filter_of_unusual_digits_is_an_unknown_tag(client: TestClient, make: Any,
                                                          admin_headers: dict[str, str], tag: str) -> None:
    make.customer(make.account())
    body = _refused(client.get("/api/v1/customers", params={"tag": tag}, headers=admin_headers))
    assert body["field"] == "tags"
    assert tag in body["detail"]


def test_ids_typed_into_console_forms_are_ascii_digits_the_database_holds() -> None:
    from siyu.core.ids import parse_count, parse_id

    assert parse_id("²") is None
    assert parse_id("٣") is None
    assert parse_id(" 42 ") == 42
    assert parse_id("0") is None
    assert parse_id(str(HUGE)) is None
    assert parse_id("9" * 5000) is None
    assert parse_count("0", default=-1) == 0
    assert parse_count("²", default=-1) == -1


def test_two_accounts_without_a_wecom_user_id_are_both_created(client: TestClient,
                                                               admin_headers: dict[str, str]) -> None:
    for name in ("门店一号", "门店二号"):
        response = client.post("/api/v1/accounts", headers=admin_headers,
                               json={"display_name": name, "kind": "wecom", "wecom_userid": ""})
        assert response.status_code == 201, response.text
        assert response.json()["wecom_userid"] is None


def test_an_account_with_a_taken_wecom_user_id_is_a_conflict(client: TestClient,
                                                             admin_headers: dict[str, str]) -> None:
    first = client.post("/api/v1/accounts", headers=admin_headers,
                        json={"display_name": "门店一号", "kind": "wecom", "wecom_userid": "zhangsan"})
    assert first.status_code == 201
    body = _refused(client.post("/api/v1/accounts", headers=admin_headers,
                                json={"display_name": "门店二号", "kind": "wecom", "wecom_userid": " zhangsan "}),
                    409)
    assert body["field"] == "wecom_userid"


def test_a_large_export_with_an_unknown_sort_is_refused_before_a_job_is_queued(
        client: TestClient, make: Any, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.customers.exports import service as exports

    monkeypatch.setattr(exports, "DIRECT_ROWS", 2)
    make.bulk_customers(make.account(), 4)
    body = _refused(client.get("/api/v1/customers/export", params={"sort": "bogus"}, headers=admin_headers))
    assert body["field"] == "sort"
    assert client.get("/api/v1/jobs", headers=admin_headers).json()["items"] == []


def test_a_write_the_database_refuses_is_a_clear_4xx(client: TestClient, make: Any,
                                                     admin_headers: dict[str, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The net under the services' own checks: a foreign key that fails anyway is a 422, not a 500."""
    from siyu.team import service as team_service

    monkeypatch.setattr(team_service, "missing_ids", lambda *args, **kwargs: [])  # as if the check raced a delete
    response = client.post("/api/v1/users", headers=admin_headers, json={
        "username": "ghost", "password": "abcdefgh12345", "role": "operator", "account_ids": [999999]})
    body = _refused(response)
    assert body["detail"] == "引用的对象不存在（可能刚被删除）"


def test_a_body_that_is_not_json_is_a_documented_400_in_chinese(client: TestClient,
                                                                admin_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/accounts", content=b"\xcd{", headers={
        **admin_headers, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"] == "无法读取请求内容（不是有效的 JSON、表单或文件上传）"
    documented = client.get("/openapi.json").json()["paths"]["/api/v1/accounts"]["post"]["responses"]
    assert {"400", "401", "403", "409", "422"} <= set(documented)
    assert documented["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}


def test_validation_errors_name_the_field_in_chinese(client: TestClient, admin_headers: dict[str, str]) -> None:
    body = _refused(client.post("/api/v1/accounts", headers=admin_headers, json={"display_name": ""}))
    assert body["errors"] == [{"field": "display_name", "message": "至少 1 个字符", "type": "string_too_short"}]
    assert body["detail"] == "输入有误 — display_name: 至少 1 个字符"
