"""Small holes found by trying bad input (issue 17, item 8): NUL characters in names, an empty
WeCom callback, formulas hidden behind leading blanks in exports."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.spreadsheet import neutralise, unneutralise
from siyu.core.viewer import SYSTEM
from siyu.customers.exports.service import ExportFormat
from siyu.wecom.models import WecomEvent
from tests.test_customer_export import COL, csv_rows, export_bytes, xlsx_rows
from tests.test_wecom_callback import post, wecom_settings  # noqa: F401 (the fixture, used by name)

# ---------------------------------------------------------------- NUL characters in names


def test_nul_characters_are_stripped_from_names(client: TestClient, admin_headers: dict[str, str]) -> None:
    user = client.post("/api/v1/users", headers=admin_headers, json={
        "username": "nul1", "password": "long-enough-1", "display_name": "小\x00王"})
    assert user.status_code == 201 and user.json()["display_name"] == "小王"
    account = client.post("/api/v1/accounts", headers=admin_headers, json={"display_name": "门店\x00一号"})
    assert account.status_code == 201 and account.json()["display_name"] == "门店一号"
    account_id = account.json()["id"]
    group = client.post("/api/v1/tag-groups", headers=admin_headers, json={"name": "意\x00向"})
    assert group.status_code == 201 and group.json()["name"] == "意向"
    tag = client.post(f"/api/v1/tag-groups/{group.json()['id']}/tags", headers=admin_headers, json={"name": "A\x00级"})
    assert tag.status_code == 201 and tag.json()["name"] == "A级"
    customer = client.post("/api/v1/customers", headers=admin_headers, json={
        "name": "张\x00三", "account_id": account_id, "remark_name": "老\x00客户", "tags": ["意向:高\x00意向", "A级"]})
    assert customer.status_code == 201, customer.text
    body = customer.json()
    assert body["name"] == "张三"
    assert "\\u0000" not in customer.text and "高意向" in customer.text
    renamed = client.patch(f"/api/v1/customers/{body['id']}", headers=admin_headers, json={"name": "李\x00四"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "李四"
    rule = client.post("/api/v1/autoreply/rules", headers=admin_headers, json={
        "name": "问\x00候", "account_id": account_id, "match_kind": "exact", "keywords": ["在吗"], "reply": "在的"})
    assert rule.status_code == 201 and rule.json()["name"] == "问候"
    channel = client.post("/api/v1/channels", headers=admin_headers, json={
        "name": "门店\x00海报", "account_ids": [account_id], "tag_names": ["A\x00级"]})
    assert channel.status_code == 201, channel.text
    assert channel.json()["name"] == "门店海报"


def test_a_name_of_nul_characters_only_is_refused_as_empty(client: TestClient, admin_headers: dict[str, str],
                                                           make: Any) -> None:
    account = make.account()
    response = client.post("/api/v1/customers", headers=admin_headers,
                           json={"name": "\x00\x00", "account_id": account.id})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "name"


# ---------------------------------------------------------------- an empty WeCom callback


def test_an_empty_callback_is_refused_and_not_stored(client: TestClient, db: Session) -> None:
    for xml in ("<xml></xml>", "<xml><ToUserName>x</ToUserName></xml>"):
        answer = post(client, xml)
        assert answer.status_code == 400, answer.text
        assert "MsgType" in answer.text
    assert db.scalar(select(func.count()).select_from(WecomEvent)) == 0


# ---------------------------------------------------------------- formulas behind blanks


@pytest.mark.parametrize("text", [" =1+1", "  +1", "\t=1", "\n=1", "\r\n@SUM(A1)", " \t-2+3", "\u3000=1"])
def test_a_formula_behind_leading_blanks_is_neutralised(text: str) -> None:
    assert neutralise(text) == "'" + text
    assert unneutralise(neutralise(text)) == text


@pytest.mark.parametrize("text", ["张三", " 张三", "1+1", "a=b"])
def test_plain_text_is_left_alone(text: str) -> None:
    assert neutralise(text) == text
    assert unneutralise(text) == text


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_exports_neutralise_a_formula_behind_a_space(db: Session, make: Any, fmt: ExportFormat) -> None:
    account = make.account()
    make.customer(account, name="王五", description=" =1+1", city="  =HYPERLINK(1)", source="\t=1")
    data, _count = export_bytes(db, SYSTEM, fmt)
    row = (csv_rows(data) if fmt is ExportFormat.csv else xlsx_rows(data))[1]
    assert row[COL["描述"]] == "' =1+1"
    assert row[COL["地区"]] == "'  =HYPERLINK(1)"
    assert row[COL["来源"]] == "'\t=1"
