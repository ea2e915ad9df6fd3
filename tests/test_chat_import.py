"""Personal-WeChat chat exports onto a customer's timeline: both layouts, broken lines, unknown senders, re-imports."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from siyu.core.errors import Invalid
from siyu.core.viewer import SYSTEM
from siyu.customers.imports import chat as chat_imports
from siyu.customers.models import Customer, Touch
from siyu.team.models import AuditEntry
from tests.conftest import viewer_of
from tests.test_pages import Console

TXT = """2026-03-01 10:23:45 王芳-宝妈
今天有新茶吗？
想给孩子外婆带一点

2026-03-01 10:25:01 我
有的，明前龙井到了 🍵
2026-03-02 09:00 茶小满1号
早上好，给您留了一罐
"""

CSV = """localId,TalkerId,Type,SubType,IsSender,CreateTime,Status,StrContent,StrTime,Remark,NickName,Sender
1,wangfang88,1,0,0,1772331825,2,今天有新茶吗？,2026-03-01 10:23:45,王芳-宝妈,王芳,wangfang88
2,wangfang88,1,0,1,1772331901,2,"有的，明前龙井到了",2026-03-01 10:25:01,王芳-宝妈,王芳,self
3,wangfang88,3,0,0,1772332000,2,<img/>,2026-03-01 10:26:40,王芳-宝妈,王芳,wangfang88
"""


@pytest.fixture
def chat(make: Any) -> tuple[Any, Any]:
    account = make.account(display_name="茶小满1号", wechat_id="chaxiaoman1")
    customer = make.customer(account, name="王芳", remark_name="王芳-宝妈", wechat_id="wangfang88")
    return account, customer


def chat_touches(db: Session, customer_id: int) -> list[Touch]:
    return list(db.scalars(select(Touch).where(Touch.customer_id == customer_id, Touch.kind == "chat")
                           .order_by(Touch.occurred_at)))


def test_plain_text_export_becomes_one_chat_touch_per_day(db: Session, chat: Any) -> None:
    account, customer = chat
    result = chat_imports.import_chat(db, customer_id=customer.id, data=TXT.encode(), filename="王芳.txt",
                                      viewer=SYSTEM)
    db.commit()
    assert (result.messages, result.new_messages, result.days) == (3, 3, 2)
    first, second = chat_touches(db, customer.id)
    assert first.account_id == account.id and first.details["messages"] == 2
    assert first.content == "10:23 王芳：今天有新茶吗？\n想给孩子外婆带一点\n10:25 茶小满1号：有的，明前龙井到了 🍵"
    assert second.content == "09:00 茶小满1号：早上好，给您留了一罐"
    db.expire_all()
    refreshed = db.get(Customer, customer.id)
    assert refreshed is not None and refreshed.contact_count == 2 and refreshed.stage == "user"
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.entity_type == "chat")) == 1


def test_wechatmsg_csv_in_gbk_is_read_with_direction_and_types(db: Session, chat: Any) -> None:
    _account, customer = chat
    result = chat_imports.import_chat(db, customer_id=customer.id, data=CSV.encode("gbk"), filename="王芳.csv",
                                      viewer=SYSTEM)
    db.commit()
    assert (result.messages, result.days) == (3, 1)
    (touch,) = chat_touches(db, customer.id)
    assert touch.content.splitlines() == ["10:23 王芳：今天有新茶吗？", "10:25 茶小满1号：有的，明前龙井到了",
                                          "10:26 王芳：[图片]"]


def test_the_same_export_twice_adds_nothing_and_a_longer_one_only_what_is_new(db: Session, chat: Any) -> None:
    _account, customer = chat
    chat_imports.import_chat(db, customer_id=customer.id, data=TXT.encode(), filename="a.txt", viewer=SYSTEM)
    db.commit()
    again = chat_imports.import_chat(db, customer_id=customer.id, data=TXT.encode(), filename="a.txt", viewer=SYSTEM)
    db.commit()
    assert (again.new_messages, again.duplicates) == (0, 3) and len(chat_touches(db, customer.id)) == 2
    longer = TXT + "2026-03-03 20:00:00 王芳\n收到啦，谢谢！\n"
    more = chat_imports.import_chat(db, customer_id=customer.id, data=longer.encode(), filename="b.txt",
                                    viewer=SYSTEM)
    db.commit()
    assert (more.new_messages, more.days) == (1, 1)
    assert chat_touches(db, customer.id)[-1].content == "20:00 王芳：收到啦，谢谢！"


def test_broken_lines_and_unknown_senders_are_listed_and_nothing_is_written(db: Session, chat: Any) -> None:
    _account, customer = chat
    broken = ("这一行前面没有时间\n"
              "2026-03-01 10:23:45 王芳\n你好\n"
              "2026-02-30 10:00:00 王芳\n二月三十日\n"
              "2026-03-01 11:00:00 李雷\n我是谁\n")
    with pytest.raises(chat_imports.ChatInvalid) as exc:
        chat_imports.import_chat(db, customer_id=customer.id, data=broken.encode(), filename="x.txt", viewer=SYSTEM)
    lines = [(e.line, e.message) for e in exc.value.errors]
    assert [line for line, _ in lines] == [1, 4, 6]
    assert "2026-02-30 10:00:00" in lines[1][1]
    assert "李雷" in lines[2][1] and "王芳-宝妈" in lines[2][1] and "茶小满1号" in lines[2][1]
    assert chat_touches(db, customer.id) == []


def test_csv_with_missing_columns_or_bad_rows(db: Session, chat: Any) -> None:
    _account, customer = chat
    with pytest.raises(chat_imports.ChatInvalid) as exc:
        data = b"StrTime,StrContent,IsSender\n2026-13-01 1:00:00,x,0\n2026-03-01 10:00:00,y,2\n"
        chat_imports.import_chat(db, customer_id=customer.id, data=data, filename="x.csv", viewer=SYSTEM)
    assert [e.line for e in exc.value.errors] == [2, 3]


@pytest.mark.parametrize("data", [b"", b"\xff\xfe\x00\x00binary\x00", b"   \n\n"])
def test_empty_or_binary_files_are_refused(db: Session, chat: Any, data: bytes) -> None:
    _account, customer = chat
    with pytest.raises(Invalid):
        chat_imports.import_chat(db, customer_id=customer.id, data=data, filename="x.txt", viewer=SYSTEM)


def test_account_must_be_one_of_the_customers_and_visible(db: Session, make: Any, chat: Any) -> None:
    _account, customer = chat
    other = make.account()
    with pytest.raises(Invalid):
        chat_imports.import_chat(db, customer_id=customer.id, data=TXT.encode(), filename="x.txt", viewer=SYSTEM,
                                 account_id=other.id)
    stranger = make.user("operator", accounts=[other])
    with pytest.raises(Exception):  # noqa: B017 - not found for someone who cannot see the customer
        chat_imports.import_chat(db, customer_id=customer.id, data=TXT.encode(), filename="x.txt",
                                 viewer=viewer_of(stranger))


def test_api_and_console(client: TestClient, make: Any, chat: Any, admin: Any, admin_headers: dict[str, str],
                         db: Session) -> None:
    _account, customer = chat
    bad = "2026-03-01 10:00:00 陌生人\n<script>alert(1)</script>\n".encode()
    response = client.post(f"/api/v1/customers/{customer.id}/chat-import", headers=admin_headers,
                           files={"file": ("x.txt", bad, "text/plain")})
    assert response.status_code == 422 and response.json()["errors"][0]["line"] == 1
    response = client.post(f"/api/v1/customers/{customer.id}/chat-import", headers=admin_headers,
                           data={"dry_run": "true"}, files={"file": ("x.txt", TXT.encode(), "text/plain")})
    assert response.json() == {"messages": 3, "new_messages": 3, "duplicates": 0, "days": 2, "dry_run": True}
    client.headers.pop("Authorization", None)
    console = Console(client).login(admin)
    page = console.get(f"/customers/{customer.id}")
    assert 'data-testid="chat-import-form"' in page.text
    shown = console.post(f"/customers/{customer.id}/chat-import", {},
                         files={"file": ("x.txt", io.BytesIO(bad), "text/plain")})
    assert shown.status_code == 422 and "陌生人" in shown.text and "<script>alert(1)" not in shown.text
    done = console.post(f"/customers/{customer.id}/chat-import", {},
                        files={"file": ("王芳.txt", io.BytesIO(TXT.encode()), "text/plain")})
    assert done.status_code == 200 and "新增 3 条消息" in done.text
    timeline = console.get(f"/customers/{customer.id}").text
    assert "明前龙井到了" in timeline


def test_cli(make: Any, chat: Any, tmp_path: Path, db: Session) -> None:
    from siyu.cli import app

    _account, customer = chat
    path = tmp_path / "chat.txt"
    path.write_text(TXT.replace(" 🍵", ""), encoding="gbk")
    runner = CliRunner()
    result = runner.invoke(app, ["customers", "import-chat", str(path), "--customer", str(customer.id)])
    assert result.exit_code == 0, result.output
    assert "3 条消息" in result.output
    path.write_text("乱码行\n", encoding="utf-8")
    result = runner.invoke(app, ["customers", "import-chat", str(path), "--customer", str(customer.id)])
    assert result.exit_code == 2 and "第 1 行" in result.output


def test_sidebar_finds_the_customer_in_one_search_and_opens_the_portrait(client: TestClient, make: Any, chat: Any,
                                                                        admin: Any, db: Session) -> None:
    _account, customer = chat
    customer.wecom_external_userid = "wmSIDEBAR1"
    db.commit()
    console = Console(client).login(admin)
    page = console.get("/sidebar", params={"q": "wangfang88"})
    assert page.status_code == 200 and f'href="/customers/{customer.id}?view=sidebar"' in page.text
    assert "siyu-sidebar" in page.text and "王芳-宝妈" in page.text
    assert "没有客户匹配" in console.get("/sidebar", params={"q": "<b>没有这个人</b>"}).text
    opened = console.get("/sidebar", params={"external_userid": "wmSIDEBAR1"}, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == f"/customers/{customer.id}?view=sidebar"
    unknown = console.get("/sidebar", params={"external_userid": "wmNOBODY"})
    assert unknown.status_code == 200 and "还不在私域系统里" in unknown.text
    portrait = console.get(f"/customers/{customer.id}?view=sidebar").text
    assert 'data-testid="sidebar-back"' in portrait and 'data-testid="touch-form"' in portrait
