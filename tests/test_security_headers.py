"""Every answer carries the security headers — error pages included — and nothing with data is cached."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.test_pages import HTML, Console

HEADERS = ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy")


def _assert_secured(response: Any) -> None:
    for name in HEADERS:
        assert name in response.headers, (response.status_code, name)
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


@pytest.fixture
def console(client: TestClient) -> Console:
    return Console(client)


def test_authenticated_pages_and_api_answers_are_not_stored(console: Console, admin: Any,
                                                            admin_headers: dict[str, str]) -> None:
    console.login(admin)
    for path in ("/", "/customers", "/users"):
        response = console.get(path)
        assert response.status_code == 200
        _assert_secured(response)
    _assert_secured(console.client.get("/api/v1/users/me", headers={**admin_headers, "accept": "application/json"}))


def test_static_assets_may_be_cached(client: TestClient) -> None:
    response = client.get("/static/siyu.css")
    assert response.status_code == 200, "a static asset to check"
    assert response.headers.get("cache-control") != "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_error_pages_carry_the_security_headers(app: Any, client: TestClient, console: Console, admin: Any,
                                                make: Any) -> None:
    @app.get("/boom-for-test")
    def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/api/v1/boom-for-test")
    def api_boom() -> None:
        raise RuntimeError("a bug")

    for path, status in (("/no-such-page", 404), ("/api/v1/no-such-thing", 404), ("/boom-for-test", 500),
                         ("/api/v1/boom-for-test", 500), ("/api/v1/users", 401)):
        response = client.get(path, headers=HTML)
        assert response.status_code == status, path
        _assert_secured(response)
    operator = make.user("operator")
    console.login(operator)
    forbidden = console.get("/users")
    assert forbidden.status_code == 403
    _assert_secured(forbidden)
    too_large = client.post("/api/v1/customers", content=b"x" * (2 * 1024 * 1024),
                            headers={"content-type": "application/json"})
    assert too_large.status_code == 413
    _assert_secured(too_large)
    page = client.post("/login", content=b"x" * (2 * 1024 * 1024),
                       headers={**HTML, "content-type": "application/x-www-form-urlencoded"})
    assert page.status_code == 413 and "<html" in page.text
    _assert_secured(page)
