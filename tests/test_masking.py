"""Masked phones stay masked: a role that may not see phones cannot search, read or export them.

Issue 17: a 客服 (service) user saw ``136****4321`` but recovered the number by searching
candidates for the hidden digits, and descriptions holding numbers were exported in full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from siyu.core.viewer import hide_phones_in, mask_phone, mask_phones_in, restore_masked
from siyu.customers import service
from siyu.customers.exports import policy as export_policy
from siyu.customers.models import Friendship
from siyu.customers.service import CustomerFilter
from tests.conftest import Factory, viewer_of
from tests.test_customer_export import COL, by_name, csv_rows
from tests.test_pages import Console

NUMBER = "13612344321"
SHOWN = "136****4321"
DESCRIPTION = f"老客，电话{NUMBER}，生日1990-03-15"
Headers = Callable[[Any], dict[str, str]]


@pytest.fixture
def shop(make: Factory) -> dict[str, Any]:
    account = make.account()
    customer = make.customer(account, name="林晓", phones=[NUMBER], description=DESCRIPTION,
                             objective_notes=f"备用号 {NUMBER[:3]} {NUMBER[3:7]} {NUMBER[7:]}")
    make.touch(customer, "chat", content=f"她说换号了：{NUMBER}")
    make.customer(account, name="王芳", phones=["13900001111"], description="普通客户")
    return {"account": account, "customer": customer, "service": make.user("service", accounts=[account]),
            "admin": make.user("admin")}


def _api_names(client: TestClient, headers: dict[str, str], q: str) -> set[str]:
    response = client.get("/api/v1/customers", params={"q": q}, headers=headers)
    assert response.status_code == 200, response.text
    return {item["name"] for item in response.json()["items"]}


def test_phone_like_text_is_masked_as_phones_are_and_dates_stay() -> None:
    assert mask_phone("+86 136-1234-4321") == "861****4321"
    assert mask_phones_in(DESCRIPTION) == f"老客，电话{SHOWN}，生日1990-03-15"
    assert (mask_phones_in("座机 0571-8888-6666 或 88886666，编号 123456")
            == "座机 057****6666 或 888****6666，编号 123456")
    assert NUMBER[3:7] not in hide_phones_in(DESCRIPTION)
    # An edit of the masked text keeps the number where the mask was left, drops it where it was deleted.
    assert restore_masked(f"老客，电话{SHOWN}，已加微信", DESCRIPTION) == f"老客，电话{NUMBER}，已加微信"
    assert restore_masked("老客，已加微信", DESCRIPTION) == "老客，已加微信"
    assert restore_masked("新号 139****0000", DESCRIPTION) == "新号 139****0000"


def test_guessing_the_hidden_digits_of_a_masked_phone_finds_nothing(
        client: TestClient, token_for: Headers, shop: dict[str, Any]) -> None:
    """The recovery attempt: the service user sees 136****4321 and tries every middle."""
    headers = token_for(shop["service"])
    detail = client.get(f"/api/v1/customers/{shop['customer'].id}", headers=headers).json()
    assert detail["friendships"][0]["phones"] == [SHOWN]
    guesses = [f"136{middle:04d}4321" for middle in range(1230, 1240)]
    assert NUMBER in guesses
    assert all(_api_names(client, headers, guess) == set() for guess in guesses)
    # Fragments of the hidden part find nothing either: neither in phones nor in the description.
    assert _api_names(client, headers, NUMBER[:7]) == set()
    assert _api_names(client, headers, NUMBER[3:7]) == set()
    assert _api_names(client, headers, NUMBER[-4:]) == set()  # phone digits are no key at all
    # The rest of the text still is; the admin finds the number itself.
    assert _api_names(client, headers, "老客") == {"林晓"}
    admin = token_for(shop["admin"])
    assert _api_names(client, admin, NUMBER) == {"林晓"}
    assert _api_names(client, admin, NUMBER[3:7]) == {"林晓"}


def test_phone_digits_are_no_search_key_on_the_list_page_its_count_and_the_sidebar(
        db: Session, client: TestClient, shop: dict[str, Any]) -> None:
    viewer = viewer_of(shop["service"])
    flt = CustomerFilter(q=NUMBER)
    assert service.list_customers(db, flt=flt, viewer=viewer).items == []
    assert service.count_customers(db, flt=flt, viewer=viewer, cap=100).value == 0
    assert service.count_customers(db, flt=flt, viewer=viewer_of(shop["admin"]), cap=100).value == 1
    console = Console(client).login(shop["service"])
    listing = console.get("/customers", params={"q": NUMBER})
    assert listing.status_code == 200
    assert "林晓" not in listing.text
    sidebar = console.get("/sidebar", params={"q": NUMBER[3:]})
    assert sidebar.status_code == 200
    assert "林晓" not in sidebar.text
    assert "林晓" in console.get("/sidebar", params={"q": "老客"}).text


def test_descriptions_notes_and_timeline_are_masked_on_pages_api_and_exports(
        db: Session, client: TestClient, token_for: Headers, shop: dict[str, Any]) -> None:
    # Service staff export only once an admin allows it (and then masked, whatever the setting says).
    export_policy.set_policy(db, rights={"service": "full"}, actor=viewer_of(shop["admin"]))
    db.commit()
    customer_id = shop["customer"].id
    headers = token_for(shop["service"])
    detail = client.get(f"/api/v1/customers/{customer_id}", headers=headers).json()
    assert detail["friendships"][0]["description"] == f"老客，电话{SHOWN}，生日1990-03-15"
    assert detail["objective_notes"] == f"备用号 {SHOWN}"
    touches = client.get(f"/api/v1/customers/{customer_id}/touches", headers=headers).json()["items"]
    assert [t["content"] for t in touches if t["kind"] == "chat"] == [f"她说换号了：{SHOWN}"]

    console = Console(client).login(shop["service"])
    page = console.get(f"/customers/{customer_id}")
    sidebar_view = console.get(f"/customers/{customer_id}", params={"view": "sidebar"})
    exported = console.get("/customers/export.csv")
    for text in (page.text, sidebar_view.text, exported.content.decode("utf-8-sig")):
        assert NUMBER not in text and f"{NUMBER[3:7]} {NUMBER[7:]}" not in text
    assert SHOWN in page.text
    assert by_name(csv_rows(exported.content))["林晓"][COL["描述"]] == f"老客，电话{SHOWN}，生日1990-03-15"
    # The admin still reads every digit.
    admin_detail = client.get(f"/api/v1/customers/{customer_id}", headers=token_for(shop["admin"])).json()
    assert admin_detail["friendships"][0]["description"] == DESCRIPTION


def test_editing_masked_text_keeps_the_numbers_it_hides(
        db: Session, client: TestClient, token_for: Headers, shop: dict[str, Any]) -> None:
    customer_id = shop["customer"].id
    headers = token_for(shop["service"])
    shown = client.get(f"/api/v1/customers/{customer_id}", headers=headers).json()["friendships"][0]["description"]
    response = client.patch(f"/api/v1/customers/{customer_id}", headers=headers,
                            json={"description": shown + "；已寄样品"})
    assert response.status_code == 200, response.text
    assert response.json()["friendships"][0]["description"].endswith(f"{SHOWN}，生日1990-03-15；已寄样品")
    db.expire_all()
    stored = db.get(Friendship, shop["customer"].friendships[0].id)
    assert stored is not None
    assert stored.description == DESCRIPTION + "；已寄样品"


def test_search_is_rate_limited_per_user_with_a_chinese_message(
        client: TestClient, token_for: Headers, shop: dict[str, Any], make: Factory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.core.settings import get_settings

    monkeypatch.setenv("SIYU_SEARCH_RATE_PER_MINUTE", "3")
    get_settings.cache_clear()
    headers = token_for(shop["service"])
    assert [client.get("/api/v1/customers", params={"q": f"老客{n}"}, headers=headers).status_code
            for n in range(3)] == [200, 200, 200]
    refused = client.get("/api/v1/customers", params={"q": "老客"}, headers=headers)
    assert refused.status_code == 429
    assert "搜索太频繁，请一分钟后再试" in refused.text
    assert client.get("/api/v1/customers", headers=headers).status_code == 200  # the list without a search
    # Another user has their own allowance; the console answers 429 with the message too.
    other = make.user("service", accounts=[shop["account"]])
    assert client.get("/api/v1/customers", params={"q": "老客"}, headers=token_for(other)).status_code == 200
    console = Console(client).login(shop["service"])
    page = console.get("/customers", params={"q": "老客"})
    assert page.status_code == 429
    assert "搜索太频繁" in page.text
