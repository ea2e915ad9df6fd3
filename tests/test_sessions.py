"""Console sessions end when they should, the company keeps an admin, failed logins are throttled
per username and address (issue 17, items 4, 6 and 8).

A "copied cookie" is the attacker's view: the same ``siyu_session`` value sent from another
client after the user logged out, changed their password, was deactivated or was logged out
everywhere by an admin.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.settings import get_settings
from siyu.team.models import AuditEntry, User, UserSession
from tests.conftest import TEST_PASSWORD
from tests.test_pages import HTML, csrf_from

COOKIE = "siyu_session"


def _client(app: Any, address: str = "10.0.0.1") -> TestClient:
    client = TestClient(app, base_url="http://testserver", raise_server_exceptions=False, client=(address, 50000))
    client.headers.update(HTML)
    return client


@pytest.fixture
def clients(app: Any) -> Iterator[list[TestClient]]:
    made: list[TestClient] = []
    yield made
    for client in made:
        client.close()


def _login(app: Any, clients: list[TestClient], user: Any, *, address: str = "10.0.0.1",
           password: str = TEST_PASSWORD) -> TestClient:
    client = _client(app, address)
    clients.append(client)
    token = csrf_from(client.get("/login").text)
    response = client.post("/login", data={"username": user.username, "password": password, "csrf_token": token,
                                           "next": "/"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


def _copy(app: Any, clients: list[TestClient], original: TestClient) -> TestClient:
    thief = _client(app, "203.0.113.9")
    clients.append(thief)
    thief.cookies.set(COOKIE, original.cookies[COOKIE])
    return thief


def _logged_in(client: TestClient) -> bool:
    response = client.get("/customers", follow_redirects=False)
    assert response.status_code in (200, 303), response.status_code
    return response.status_code == 200


def test_cookie_holds_an_opaque_id_not_the_user(app: Any, clients: list[TestClient], admin: Any) -> None:
    client = _login(app, clients, admin)
    payload = client.cookies[COOKIE].split(".")[0]
    data = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(data) <= {"sid", "csrf"}
    assert str(admin.id) != data["sid"] and len(data["sid"]) >= 40
    assert admin.password_hash[-12:] not in client.cookies[COOKIE]


def test_copied_cookie_is_refused_after_logout(app: Any, clients: list[TestClient], admin: Any) -> None:
    client = _login(app, clients, admin)
    thief = _copy(app, clients, client)
    assert _logged_in(thief)  # the copy works while the session lives
    token = csrf_from(client.get("/").text)
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert not _logged_in(thief)
    assert thief.get("/customers", follow_redirects=False).headers["location"].startswith("/login")


def test_copied_cookie_is_refused_after_a_password_change(app: Any, clients: list[TestClient], make: Any,
                                                          client: TestClient, admin_headers: dict[str, str]) -> None:
    planner = make.user("planner")
    thief = _copy(app, clients, _login(app, clients, planner))
    response = client.patch(f"/api/v1/users/{planner.id}", json={"password": "a-brand-new-password"},
                            headers=admin_headers)
    assert response.status_code == 200
    assert not _logged_in(thief)
    assert _logged_in(_login(app, clients, planner, password="a-brand-new-password"))


def test_copied_cookie_and_token_are_refused_after_deactivation_even_once_reactivated(
        app: Any, clients: list[TestClient], make: Any, client: TestClient, admin_headers: dict[str, str],
        token_for: Any) -> None:
    operator = make.user("operator")
    thief = _copy(app, clients, _login(app, clients, operator))
    token = token_for(operator)
    assert client.patch(f"/api/v1/users/{operator.id}", json={"is_active": False},
                        headers=admin_headers).status_code == 200
    assert not _logged_in(thief)
    assert client.get("/api/v1/users/me", headers=token).status_code == 401
    assert client.patch(f"/api/v1/users/{operator.id}", json={"is_active": True},
                        headers=admin_headers).status_code == 200
    assert not _logged_in(thief)
    assert client.get("/api/v1/users/me", headers=token).status_code == 401


def test_log_out_everywhere_ends_sessions_and_tokens_and_is_audited(
        app: Any, clients: list[TestClient], make: Any, client: TestClient, admin: Any,
        admin_headers: dict[str, str], token_for: Any, db: Session) -> None:
    planner = make.user("planner")
    first, second = _login(app, clients, planner), _login(app, clients, planner, address="10.0.0.2")
    token = token_for(planner)
    sessions = client.get(f"/api/v1/users/{planner.id}/sessions", headers=admin_headers).json()["items"]
    assert {s["ip"] for s in sessions} == {"10.0.0.1", "10.0.0.2"}
    assert all(s["user_agent"] and "token_hash" not in s for s in sessions)
    answer = client.post(f"/api/v1/users/{planner.id}/logout-everywhere", headers=admin_headers)
    assert answer.status_code == 200 and answer.json() == {"sessions_ended": 2}
    assert not _logged_in(first) and not _logged_in(second)
    assert client.get("/api/v1/users/me", headers=token).status_code == 401
    assert client.get("/api/v1/users/me", headers=token_for(planner)).status_code == 200  # a new login works
    assert client.get(f"/api/v1/users/{planner.id}/sessions", headers=admin_headers).json()["items"] == []
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "logout_everywhere")).one()
    assert entry.user_id == admin.id and entry.entity_id == str(planner.id) and entry.after == {"sessions_ended": 2}


def test_log_out_everywhere_from_the_team_page(app: Any, clients: list[TestClient], make: Any, admin: Any) -> None:
    operator = make.user("operator")
    victim = _login(app, clients, operator)
    console = _login(app, clients, admin, address="10.0.0.3")
    page = console.get("/users").text
    assert 'data-testid="logout-everywhere"' in page
    response = console.post(f"/users/{operator.id}/logout-everywhere", data={"csrf_token": csrf_from(page)},
                            follow_redirects=False)
    assert response.status_code == 303
    assert not _logged_in(victim)
    assert _logged_in(console)
    assert "全部下线" in console.get("/audit").text


def test_only_admins_log_others_out_or_unlock(client: TestClient, make: Any, token_for: Any) -> None:
    operator, planner = make.user("operator"), make.user("planner")
    headers = token_for(planner)
    assert client.post(f"/api/v1/users/{operator.id}/logout-everywhere", headers=headers).status_code == 403
    assert client.post(f"/api/v1/users/{operator.id}/unlock", headers=headers).status_code == 403
    assert client.get(f"/api/v1/users/{operator.id}/sessions", headers=headers).status_code == 403


def test_expired_session_is_refused(app: Any, clients: list[TestClient], admin: Any, db: Session) -> None:
    client = _login(app, clients, admin)
    assert _logged_in(client)
    db.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.commit()
    assert not _logged_in(client)


def test_session_lasts_session_ttl_hours(app: Any, clients: list[TestClient], admin: Any, db: Session) -> None:
    _login(app, clients, admin)
    row = db.scalars(select(UserSession)).one()
    assert row.expires_at - row.created_at == timedelta(hours=get_settings().session_ttl_hours)
    assert row.revoked_at is None and row.ip == "10.0.0.1"


def test_last_seen_is_written_only_every_few_minutes(app: Any, clients: list[TestClient], admin: Any,
                                                     db: Session) -> None:
    client = _login(app, clients, admin)
    first = db.scalars(select(UserSession)).one().last_seen_at
    assert _logged_in(client) and _logged_in(client)
    db.expire_all()
    assert db.scalars(select(UserSession)).one().last_seen_at == first
    db.execute(update(UserSession).values(last_seen_at=first - timedelta(minutes=10)))
    db.commit()
    assert _logged_in(client)
    db.expire_all()
    assert db.scalars(select(UserSession)).one().last_seen_at > first - timedelta(minutes=1)


def test_csrf_is_still_checked_with_server_side_sessions(app: Any, clients: list[TestClient], admin: Any) -> None:
    client = _login(app, clients, admin)
    refused = client.post("/logout", data={"csrf_token": "forged"}, follow_redirects=False)
    assert refused.status_code == 403
    assert _logged_in(client)
    missing = client.post("/users", data={"username": "eve1", "password": "long-enough-1", "role": "admin"})
    assert missing.status_code == 403
    token = csrf_from(client.get("/users").text)
    created = client.post("/users", data={"username": "eve1", "password": "long-enough-1", "role": "operator",
                                          "csrf_token": token}, follow_redirects=False)
    assert created.status_code == 303


# ---------------------------------------------------------------- the last admin


def test_last_admin_cannot_demote_themselves(client: TestClient, admin: Any, admin_headers: dict[str, str],
                                              db: Session) -> None:
    response = client.patch(f"/api/v1/users/{admin.id}", json={"role": "planner"}, headers=admin_headers)
    assert response.status_code == 409
    assert response.json()["detail"] == "admin 是最后一个启用的管理员，请先把另一位用户设为管理员"
    db.expire_all()
    assert db.get(User, admin.id).role == "admin"  # type: ignore[union-attr]


def test_last_active_admin_cannot_be_demoted_or_deactivated_by_another(
        client: TestClient, make: Any, admin: Any, admin_headers: dict[str, str], token_for: Any) -> None:
    second = make.user("admin", username="second")
    # Two admins: one may go.
    assert client.patch(f"/api/v1/users/{admin.id}", json={"is_active": False},
                        headers=token_for(second)).status_code == 200
    headers = token_for(second)
    refused = client.patch(f"/api/v1/users/{second.id}", json={"role": "operator"}, headers=headers)
    assert refused.status_code == 409 and refused.json()["field"] == "role"
    # A deactivated admin does not count, and changing one is allowed.
    assert client.patch(f"/api/v1/users/{admin.id}", json={"role": "planner"}, headers=headers).status_code == 200
    renamed = client.patch(f"/api/v1/users/{second.id}", json={"display_name": "第二位"}, headers=headers)
    assert renamed.status_code == 200


def test_last_admin_cannot_be_demoted_from_the_team_page(app: Any, clients: list[TestClient], admin: Any,
                                                         make: Any) -> None:
    console = _login(app, clients, admin)
    page = console.get("/users").text
    response = console.post(f"/users/{admin.id}", data={"role": "planner", "is_active": "on",
                                                        "csrf_token": csrf_from(page)})
    assert response.status_code == 422
    assert "admin 是最后一个启用的管理员" in response.text
    planner = make.user("planner")
    promoted = console.post(f"/users/{planner.id}", data={"role": "admin", "is_active": "on",
                                                          "csrf_token": csrf_from(page)}, follow_redirects=False)
    assert promoted.status_code == 303
    demoted = console.post(f"/users/{admin.id}", data={"role": "planner", "is_active": "on",
                                                       "csrf_token": csrf_from(page)}, follow_redirects=False)
    assert demoted.status_code == 303


# ---------------------------------------------------------------- throttling


def _fail(client: TestClient, username: str, times: int) -> None:
    for _ in range(times):
        answer = client.post("/api/v1/auth/token", data={"username": username, "password": "bad-guess"})
        assert answer.status_code in (401, 429)


def _token_status(client: TestClient, username: str) -> int:
    return client.post("/api/v1/auth/token", data={"username": username, "password": TEST_PASSWORD}).status_code


def test_failures_from_one_address_do_not_lock_the_user_out_elsewhere(app: Any, clients: list[TestClient],
                                                                       admin: Any) -> None:
    attacker, user = _client(app, "198.51.100.7"), _client(app, "10.0.0.1")
    clients.extend([attacker, user])
    _fail(attacker, "admin", get_settings().login_max_failures)
    assert _token_status(attacker, "admin") == 429
    assert _token_status(user, "admin") == 200


def test_failures_from_many_addresses_lock_the_username_except_known_addresses(
        app: Any, clients: list[TestClient], admin: Any) -> None:
    _login(app, clients, admin, address="10.0.0.1")  # the admin's own desk
    settings = get_settings()
    per_address = settings.login_max_failures - 1  # each attacker stays under its own address's limit
    for n in range(settings.login_max_failures_any_address // per_address + 1):
        attacker = _client(app, f"198.51.100.{n + 1}")
        clients.append(attacker)
        _fail(attacker, "admin", per_address)
    fresh = _client(app, "192.0.2.50")
    desk = _client(app, "10.0.0.1")
    clients.extend([fresh, desk])
    assert _token_status(fresh, "admin") == 429
    assert _token_status(desk, "admin") == 200


def test_admin_unlocks_a_locked_user_and_it_is_audited(app: Any, clients: list[TestClient], make: Any,
                                                       admin: Any, admin_headers: dict[str, str], db: Session) -> None:
    operator = make.user("operator")
    attacker = _client(app, "198.51.100.7")
    clients.append(attacker)
    _fail(attacker, operator.username, get_settings().login_max_failures)
    assert _token_status(attacker, operator.username) == 429
    console = _login(app, clients, admin)
    page = console.get("/users").text
    assert 'data-testid="locked"' in page
    response = console.post(f"/users/{operator.id}/unlock", data={"csrf_token": csrf_from(page)},
                            follow_redirects=False)
    assert response.status_code == 303
    assert _token_status(attacker, operator.username) == 200
    assert 'data-testid="locked"' not in console.get("/users").text
    _fail(attacker, operator.username, get_settings().login_max_failures)
    api = attacker.post(f"/api/v1/users/{operator.id}/unlock", headers=admin_headers)
    assert api.status_code == 200
    assert _token_status(attacker, operator.username) == 200
    entries = db.scalars(select(AuditEntry).where(AuditEntry.action == "unlock")).all()
    assert len(entries) == 2 and all(e.entity_id == str(operator.id) for e in entries)
    assert "已解锁" in console.get("/audit").text


def test_old_failures_are_forgotten_after_the_lock_window(app: Any, clients: list[TestClient], admin: Any,
                                                          db: Session) -> None:
    from siyu.team.models import LoginThrottle

    client = _client(app, "10.0.0.9")
    clients.append(client)
    _fail(client, "admin", get_settings().login_max_failures - 1)
    db.execute(update(LoginThrottle).values(last_failure_at=utcnow() - timedelta(hours=1)))
    db.commit()
    _fail(client, "admin", 1)  # a fresh count: one failure, no lock
    assert _token_status(client, "admin") == 200
