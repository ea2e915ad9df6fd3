from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


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
