from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from siyu.core import security
from siyu.core.settings import get_settings
from tests.conftest import TEST_PASSWORD


def test_token_for_correct_password(client: TestClient, admin: Any) -> None:
    response = client.post("/api/v1/auth/token", data={"username": "admin", "password": TEST_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["username"] == "admin"


def test_wrong_password_is_401_with_a_clear_message(client: TestClient, admin: Any) -> None:
    response = client.post("/api/v1/auth/token", data={"username": "admin", "password": "nope-nope"})
    assert response.status_code == 401
    assert response.json()["detail"] in ("用户名或密码错误", "Wrong username or password")


def test_unknown_user_is_401_like_a_wrong_password(client: TestClient, admin: Any) -> None:
    response = client.post("/api/v1/auth/token", data={"username": "ghost", "password": "whatever1"})
    assert response.status_code == 401


def test_forged_token_is_refused(client: TestClient, admin: Any) -> None:
    forged = URLSafeTimedSerializer("another-secret", salt=security.TOKEN_SALT).dumps({"uid": admin.id, "stamp": ""})
    response = client.get("/api/v1/customers", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert client.get("/api/v1/customers", headers={"Authorization": "Bearer garbage"}).status_code == 401
    assert client.get("/api/v1/customers").status_code == 401


def test_expired_token_is_refused(client: TestClient, admin: Any, monkeypatch: Any) -> None:
    issued = security.issue_token(admin.id, security.password_stamp(admin.password_hash))
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    ttl = get_settings().token_ttl_minutes
    real_time = TimestampSigner.get_timestamp
    later = timedelta(minutes=ttl + 1).total_seconds()
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(real_time(self) + later))
    assert client.get("/api/v1/users/me", headers=headers).status_code == 401


def test_token_dies_when_the_password_changes(client: TestClient, make: Any, admin_headers: dict[str, str],
                                              token_for: Any) -> None:
    user = make.user("planner")
    headers = token_for(user)
    response = client.patch(f"/api/v1/users/{user.id}", json={"password": "a-brand-new-password"},
                            headers=admin_headers)
    assert response.status_code == 200
    assert client.get("/api/v1/users/me", headers=headers).status_code == 401


def test_login_is_throttled_after_repeated_failures(client: TestClient, admin: Any) -> None:
    limit = get_settings().login_max_failures
    for _ in range(limit):
        assert client.post("/api/v1/auth/token", data={"username": "admin", "password": "bad-guess"}).status_code == 401
    locked = client.post("/api/v1/auth/token", data={"username": "admin", "password": TEST_PASSWORD})
    assert locked.status_code == 429


def test_only_admins_manage_users(client: TestClient, make: Any, token_for: Any) -> None:
    operator = make.user("operator")
    response = client.post("/api/v1/users", json={"username": "x1", "password": "long-enough-1"},
                           headers=token_for(operator))
    assert response.status_code == 403


def test_passwords_are_argon2_hashed(admin: Any) -> None:
    assert admin.password_hash.startswith("$argon2")
    assert TEST_PASSWORD not in admin.password_hash


def test_audit_never_contains_password_hashes(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.post("/api/v1/users", json={"username": "newbie", "password": "long-enough-1", "role": "service"},
                headers=admin_headers)
    entries = client.get("/api/v1/audit", headers=admin_headers).json()["items"]
    created = [e for e in entries if e["entity_type"] == "user" and e["action"] == "create"]
    assert created and "password" not in str(created[0]["after"])
