"""Auto-reply console and API: write a rule, see its dry run, switch it on, see it pause."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.autoreply.models import AutoReplyRule
from siyu.core.db import utcnow
from siyu.inbox import service as inbox
from siyu.inbox.models import Message
from siyu.inbox.service import InboundMessage
from tests.test_pages import Console


def test_operator_writes_checks_and_switches_on_a_rule(client: TestClient, db: Session, make: Any) -> None:
    account = make.account(display_name="茶小满")
    operator = make.user("operator", accounts=[account])
    customer = make.customer(account, remark_name="王芳-爱喝红茶-自由职业", salutation="<i>王姐</i>")
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid="old-1", account_id=account.id,
                                     customer_id=customer.id, sent_at=utcnow(), text="<b>优惠券</b>用不了")])
    db.commit()
    console = Console(client).login(operator)
    assert 'data-testid="new-rule"' in console.get("/autoreply").text

    bad = console.post("/autoreply/save", {"name": "券", "account_id": account.id, "match_kind": "regex",
                                           "pattern": "(a+)+$", "reply": "x"})
    assert bad.status_code == 422 and "嵌套的重复量词" in bad.text
    empty = console.post("/autoreply/save", {"name": "", "account_id": account.id, "match_kind": "contains",
                                             "keywords": "优惠券", "reply": "x"})
    # A rule has a 名称, not a 姓名.
    assert empty.status_code == 422 and "名称" in empty.text and "姓名" not in empty.text
    private = console.post("/autoreply/save", {"name": "优惠券", "account_id": account.id, "match_kind": "contains",
                                               "keywords": "优惠券", "reply": "{备注名}您好"})
    assert private.status_code == 422 and "{备注名} 是内部字段" in private.text

    saved = console.post("/autoreply/save", {"name": "优惠券", "account_id": account.id, "match_kind": "contains",
                                             "keywords": "优惠券\n券用不了", "reply": "{称呼}您好，券在卡包里",
                                             "priority": "10", "hourly_cap": "50"})
    assert saved.status_code == 303 and saved.headers["location"].endswith("/dry-run")
    preview = console.get(saved.headers["location"])
    assert preview.status_code == 200
    assert "&lt;b&gt;优惠券&lt;/b&gt;用不了" in preview.text and "&lt;i&gt;王姐&lt;/i&gt;您好" in preview.text
    rule = db.scalar(select(AutoReplyRule))
    assert rule is not None
    on = console.post(f"/autoreply/{rule.id}/enabled", {"enabled": "1"})
    assert on.status_code == 303
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid="new-1", account_id=account.id,
                                     customer_id=customer.id, sent_at=utcnow(), text="优惠券在哪")])
    db.commit()
    assert db.scalar(select(Message).where(Message.automatic.is_(True))) is not None
    listing = console.get("/autoreply").text
    assert 'data-testid="rule-row"' in listing and "1 / 50" in listing

    off = console.post(f"/autoreply/accounts/{account.id}/enabled", {"enabled": "0"})
    assert off.status_code == 303
    assert "自动回复已关闭" in console.get("/autoreply").text


def test_a_rule_for_another_account_is_not_found(client: TestClient, db: Session, make: Any,
                                                 token_for: Any, admin_headers: dict[str, str]) -> None:
    mine, theirs = make.account(), make.account()
    created = client.post("/api/v1/autoreply/rules", headers=admin_headers, json={
        "name": "他们的", "account_id": theirs.id, "match_kind": "exact", "keywords": ["在吗"], "reply": "在的"})
    assert created.status_code == 201 and created.json()["enabled"] is False
    rule_id = created.json()["id"]
    refused = client.post(f"/api/v1/autoreply/rules/{rule_id}/enabled?enabled=true", headers=admin_headers)
    assert refused.status_code == 409
    dry = client.post(f"/api/v1/autoreply/rules/{rule_id}/dry-run", headers=admin_headers)
    assert dry.status_code == 200 and dry.json()["matched"] == 0
    assert client.post(f"/api/v1/autoreply/rules/{rule_id}/enabled?enabled=true",
                       headers=admin_headers).json()["enabled"] is True
    operator = token_for(make.user("operator", accounts=[mine]))
    assert client.post(f"/api/v1/autoreply/rules/{rule_id}/dry-run", headers=operator).status_code == 404
    assert client.get("/api/v1/autoreply/rules", headers=operator).json() == {"items": []}
