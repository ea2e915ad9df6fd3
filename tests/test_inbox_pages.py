"""Agent workspace pages: queue, conversation, reply, status, transfer, presence, live stream, API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.viewer import SYSTEM as SYSTEM_VIEWER
from siyu.inbox import service
from siyu.inbox.models import CannedReply, Conversation, Message
from siyu.inbox.service import InboundMessage
from tests.test_pages import Console


def incoming(db: Session, account: Any, customer: Any, text: str, n: int = 1) -> Conversation:
    service.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"p{customer.id}-{n}",
                                       account_id=account.id, customer_id=customer.id,
                                       sent_at=utcnow() - timedelta(minutes=30 - n), text=text)])
    db.commit()
    conversation = db.scalar(select(Conversation).where(Conversation.customer_id == customer.id))
    assert conversation is not None
    return conversation


def test_agent_works_a_conversation_end_to_end(client: TestClient, db: Session, make: Any) -> None:
    account = make.account(display_name="茶小满", kind="personal")
    agent = make.user("service", accounts=[account])
    customer = make.customer(account, name="<b>王芳</b>", remark_name="王芳-红茶党-西湖自由职业", salutation="王姐")
    conversation = incoming(db, account, customer, "<script>alert(1)</script>优惠券用不了")
    db.add(CannedReply(shortcut="sorry", title="致歉", body="{称呼}您好，马上为您处理"))
    db.commit()
    console = Console(client).login(agent)

    queue = console.get("/inbox")
    assert queue.status_code == 200
    assert 'data-testid="conversation-row"' in queue.text
    assert "<script>alert(1)</script>" not in queue.text and "&lt;script&gt;" in queue.text
    assert "&lt;b&gt;王芳&lt;/b&gt;" in queue.text

    online = console.post("/inbox/presence", {"online": "1", "capacity": "5"})
    assert online.status_code == 303
    db.expire_all()
    assert db.get(Conversation, conversation.id).assignee_id == agent.id  # type: ignore[union-attr]

    page = console.get(f"/inbox/{conversation.id}")
    assert page.status_code == 200
    assert 'data-canned="王姐您好，马上为您处理"' in page.text
    assert f'src="/customers/{customer.id}?view=sidebar"' in page.text
    empty = console.post(f"/inbox/{conversation.id}/reply", {"text": "   "})
    assert empty.status_code == 422 and "请先输入内容" in empty.text
    sent = console.post(f"/inbox/{conversation.id}/reply", {"text": "王姐您好，马上为您处理"})
    assert sent.status_code == 303
    thread = console.get(f"/inbox/{conversation.id}").text
    assert "王姐您好，马上为您处理" in thread and 'data-direction="out"' in thread
    resolved = console.post(f"/inbox/{conversation.id}/status", {"status": "resolved"})
    assert resolved.status_code == 303
    db.expire_all()
    assert db.get(Conversation, conversation.id).status == "resolved"  # type: ignore[union-attr]
    assert 'data-testid="queue-empty"' in console.get("/inbox").text


def test_other_accounts_conversations_are_not_found(client: TestClient, db: Session, make: Any) -> None:
    mine, theirs = make.account(), make.account()
    agent = make.user("service", accounts=[mine])
    conversation = incoming(db, theirs, make.customer(theirs), "hi")
    console = Console(client).login(agent)
    assert console.get(f"/inbox/{conversation.id}").status_code == 404
    assert console.post(f"/inbox/{conversation.id}/reply", {"text": "x"}).status_code == 404
    assert 'data-testid="conversation-row"' not in console.get("/inbox").text


def test_transfer_to_a_colleague_of_another_account_is_refused(client: TestClient, db: Session, make: Any) -> None:
    mine, theirs = make.account(), make.account()
    agent = make.user("service", accounts=[mine])
    colleague = make.user("service", accounts=[mine])
    stranger = make.user("service", accounts=[theirs])
    conversation = incoming(db, mine, make.customer(mine), "hi")
    console = Console(client).login(agent)
    assert console.post(f"/inbox/{conversation.id}/assignee", {"assignee_id": stranger.id}).status_code == 403
    assert console.post(f"/inbox/{conversation.id}/assignee", {"assignee_id": colleague.id}).status_code == 303
    db.expire_all()
    assert db.get(Conversation, conversation.id).assignee_id == colleague.id  # type: ignore[union-attr]


def test_stream_announces_itself(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    agent = make.user("service", accounts=[account])
    Console(client).login(agent)
    with client.stream("GET", "/inbox-stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(response.iter_text())
        assert "event: ready" in first


def test_inbox_api(client: TestClient, db: Session, make: Any, token_for: Any, admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal")
    customer = make.customer(account)
    body = [{"source": "personal", "platform_msgid": "pc-1", "account_id": account.id, "customer_id": customer.id,
             "sent_at": utcnow().isoformat(), "text": "在吗"}] * 2
    stored = client.post("/api/v1/inbox/messages", json=body, headers=admin_headers)
    assert stored.status_code == 202 and stored.json() == {"stored": 1, "duplicates": 1, "assigned": 0}
    agent = make.user("service", accounts=[account])
    headers = token_for(agent)
    assert client.put("/api/v1/inbox/presence", json={"online": True, "capacity": 3}, headers=headers).json()[
        "online"] is True
    queue = client.get("/api/v1/inbox/conversations", headers=headers).json()
    (item,) = queue["items"]
    assert item["assignee_id"] == agent.id and item["unanswered"] == 1
    reply = client.post(f"/api/v1/inbox/conversations/{item['id']}/messages", json={"text": "在的"},
                        headers=headers)
    assert reply.status_code == 201 and reply.json()["status"] == "queued"
    detail = client.get(f"/api/v1/inbox/conversations/{item['id']}", headers=headers).json()
    assert [m["text"] for m in detail["messages"]] == ["在吗", "在的"]
    bad = client.post(f"/api/v1/inbox/conversations/{item['id']}/status", json={"status": "snoozed"},
                      headers=headers)
    assert bad.status_code == 422
    assert client.post("/api/v1/inbox/messages", json=body, headers=headers).status_code == 403
    assert db.scalar(select(Message).where(Message.platform_msgid == "pc-1")) is not None


def test_bulk_page_confirms_the_count_then_runs_a_job(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    agent = make.user("operator", accounts=[account])
    for i in range(3):
        incoming(db, account, make.customer(account), f"第{i}条", n=i)
    console = Console(client).login(agent)
    page = console.get("/inbox/bulk?view=unanswered")
    assert page.status_code == 200 and 'value="3"' in page.text
    stale = console.post("/inbox/bulk", {"view": "unanswered", "account_id": "", "expected_count": "2",
                                         "action": "resolve"})
    assert stale.status_code == 409 and "从 2 变为 3" in stale.text
    done = console.post("/inbox/bulk", {"view": "unanswered", "account_id": "", "expected_count": "3",
                                        "action": "resolve"})
    assert done.status_code == 303 and done.headers["location"].startswith("/jobs/")
    assert 'data-status="succeeded"' in console.get(done.headers["location"]).text
    assert 'data-testid="queue-empty"' in console.get("/inbox").text


def test_service_reports_and_csv_export(client: TestClient, db: Session, make: Any, connector: Any) -> None:
    account = make.account(display_name="=茶小满", kind="personal")
    agent = make.user("service", accounts=[account])
    service.set_online(db, user_id=agent.id, online=True)
    db.commit()
    first = incoming(db, account, make.customer(account), "在吗")
    incoming(db, account, make.customer(account), "优惠券")
    from tests.conftest import viewer_of

    service.reply(db, conversation_id=first.id, text="在的", viewer=viewer_of(agent))
    service.change_status(db, conversation_id=first.id, status="resolved", viewer=viewer_of(agent))
    db.commit()
    from siyu.core.viewer import SYSTEM
    from siyu.inbox import reports

    now = utcnow()
    report = reports.build(db, viewer=SYSTEM, since=now - timedelta(days=1), until=now + timedelta(minutes=1))
    assert report.totals == {"inbound": 2, "human": 1, "automatic": 0}
    (row,) = report.accounts
    assert (row.conversations, row.answered, row.resolved) == (2, 1, 1)
    assert row.first_response_minutes is not None and 25 <= row.first_response_minutes <= 35
    assert sum(report.waits) == 1 and report.waits[3] == 1  # answered after ~30 minutes: the 15–60 bucket

    console = Console(client).login(make.user("admin"))
    page = console.get("/inbox/reports?days=7")
    assert page.status_code == 200 and 'data-testid="chart-hourly"' in page.text
    tables = page.text.split('data-testid="report-table"')
    assert "<th>客服</th>" in tables[1] and "<th>账号</th>" in tables[2]  # each table names what its rows are
    exported = console.get("/inbox/reports.csv?days=7")
    assert exported.status_code == 200 and exported.text.startswith("\ufeff")
    assert "'=茶小满" in exported.text  # a name that looks like a formula is neutralised
    assert "客服,会话" in exported.text.replace("\ufeff", "") or "客服," in exported.text
    from siyu.team.models import AuditEntry

    assert db.scalar(select(AuditEntry).where(AuditEntry.entity_type == "service_report")) is not None


def test_quick_replies_are_managed_in_the_console(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    operator = make.user("operator", accounts=[account])
    console = Console(client).login(operator)
    every = console.post("/inbox/canned", {"shortcut": "hi", "title": "问候", "body": "您好", "account_id": ""})
    assert every.status_code == 403  # only planners and admins write for every account
    empty = console.post("/inbox/canned", {"shortcut": "hi", "title": "", "body": "", "account_id": account.id})
    assert empty.status_code == 422 and "请填写" in empty.text
    private = console.post("/inbox/canned", {"shortcut": "hi", "title": "问候", "body": "{备注名}您好",
                                             "account_id": account.id})
    assert private.status_code == 422 and "{备注名} 是内部字段" in private.text and "{称呼}" in private.text
    added = console.post("/inbox/canned", {"shortcut": "hi", "title": "<b>问候</b>", "body": "{称呼}您好",
                                           "account_id": account.id})
    assert added.status_code == 303
    page = console.get("/inbox/canned").text
    assert "&lt;b&gt;问候&lt;/b&gt;" in page
    reply = db.scalar(select(CannedReply))
    assert reply is not None
    assert console.post(f"/inbox/canned/{reply.id}/delete", {}).status_code == 303
    assert db.scalar(select(CannedReply).where(CannedReply.id == reply.id).execution_options(
        populate_existing=True)) is None


# ---------------------------------------------------------------- the workspace at flood scale


def _three_customers(db: Session, make: Any, account: Any) -> tuple[Any, Any, Any]:
    """王芳 (a 宝妈, level V3) asks about opening hours; 李娜 waits on 发货; 张伟 asked 发货 but was answered."""
    from sqlalchemy import update

    from siyu.customers.models import Customer

    wang = make.customer(account, name="王芳", remark_name="王芳-两娃宝妈", tags=["人群:宝妈"])
    li = make.customer(account, name="李娜", remark_name="李娜-白领")
    zhang = make.customer(account, name="张伟", remark_name="张伟-宝爸")
    db.execute(update(Customer).where(Customer.id == wang.id).values(level="V3"))
    db.commit()
    incoming(db, account, wang, "周末几点开门？")
    incoming(db, account, li, "我的快递发货了吗？")
    answered = incoming(db, account, zhang, "什么时候发货", n=1)
    service.reply(db, conversation_id=answered.id, text="今天发", viewer=SYSTEM_VIEWER)
    db.commit()
    incoming(db, account, zhang, "好的谢谢", n=2)
    return wang, li, zhang


def test_queue_search_keyword_tag_and_level_filters(db: Session, make: Any, connector: Any) -> None:
    from siyu.core.errors import Invalid
    from siyu.inbox.service import QueueFilter

    account = make.account(kind="personal")
    wang, li, zhang = _three_customers(db, make, account)

    def who(**parts: Any) -> set[int | None]:
        page = service.list_queue(db, flt=QueueFilter(view="unanswered", **parts), viewer=SYSTEM_VIEWER)
        assert service.count_matching(db, flt=QueueFilter(view="unanswered", **parts), viewer=SYSTEM_VIEWER) == \
            len(page.items)  # the count and the bulk job read the same filter as the queue
        return {c.customer_id for c in page.items}

    assert who() == {wang.id, li.id, zhang.id}
    assert who(asked="发货") == {li.id}  # 张伟's 发货 was answered; he now waits on 好的谢谢
    assert who(q="宝妈") == {wang.id}  # the remark name
    assert who(q="李娜") == {li.id}  # the name
    assert who(q="开门") == {wang.id}  # the last message
    assert who(q="100%_") == set()  # LIKE wildcards are plain text
    assert who(tag="人群:宝妈") == {wang.id}
    assert who(level="V3") == {wang.id}
    conversations = {c.customer_id: c.id for c in db.scalars(select(Conversation))}
    assert who(ids=(conversations[wang.id], conversations[zhang.id])) == {wang.id, zhang.id}
    with pytest.raises(Invalid):
        who(tag="人群:没有这个标签")


def test_bulk_reply_to_everyone_who_asked_a_keyword(client: TestClient, db: Session, make: Any,
                                                   connector: Any) -> None:
    from siyu.team.models import AuditEntry

    account = make.account(kind="personal")
    wang, li, zhang = _three_customers(db, make, account)
    operator = make.user("operator", accounts=[account])
    console = Console(client).login(operator)
    filtered = console.get("/inbox", params={"asked": "发货"}).text
    assert filtered.count('data-testid="conversation-row"') == 1 and "李娜" in filtered
    page = console.get("/inbox/bulk", params={"view": "unanswered", "asked": "发货"})
    assert page.status_code == 200 and 'name="expected_count" value="1"' in page.text
    assert "客户待回复的消息包含「发货」" in page.text
    private = console.post("/inbox/bulk", {"view": "unanswered", "asked": "发货", "expected_count": "1",
                                           "action": "reply", "text": "{备注名}您好"})
    assert private.status_code == 422 and "内部字段" in private.text
    done = console.post("/inbox/bulk", {"view": "unanswered", "asked": "发货", "expected_count": "1",
                                        "action": "reply", "text": "{称呼}您好，今天下午发出"})
    assert done.status_code == 303 and done.headers["location"].startswith("/jobs/")
    assert [(o.customer.id, o.text) for o in connector.sent if o.text.endswith("今天下午发出")] == [
        (li.id, "李娜您好，今天下午发出")]
    audit = db.scalar(select(AuditEntry).where(AuditEntry.entity_type == "conversations"))
    assert audit is not None and audit.after["filter"]["asked"] == "发货" and audit.after["count"] == 1
    # A selection: the two chosen conversations, and no other.
    chosen = [c.id for c in db.scalars(select(Conversation).where(Conversation.customer_id.in_([wang.id, zhang.id])))]
    picked = console.get("/inbox/bulk", params=[("view", "all")] + [("ids", str(i)) for i in chosen])
    assert "你选中的 2 个会话" in picked.text
    resolved = console.post("/inbox/bulk", {"view": "all", "ids": [str(i) for i in chosen], "expected_count": "2",
                                            "action": "resolve"})
    assert resolved.status_code == 303
    assert {c.customer_id for c in db.scalars(select(Conversation).where(Conversation.status == "resolved")
                                              .execution_options(populate_existing=True))} == {wang.id, zhang.id}


def test_the_workspace_keeps_the_queue_beside_the_open_conversation(client: TestClient, db: Session,
                                                                    make: Any) -> None:
    account = make.account(kind="personal")
    agent = make.user("service", accounts=[account])
    admin = make.user("admin")
    customer = make.customer(account, name="王芳")
    conversation = incoming(db, account, customer, "在吗")
    service.transfer(db, conversation_id=conversation.id, to_user_id=admin.id, viewer=SYSTEM_VIEWER)
    db.commit()
    console = Console(client).login(agent)
    full = console.get(f"/inbox/{conversation.id}").text
    assert 'data-testid="queue"' in full and 'data-testid="conversation-row"' in full  # the queue stays
    assert 'data-testid="reply-form"' in full and 'data-testid="portrait"' in full
    assert 'data-testid="count-unanswered"' in full and "未回复 1" in full and "我的 0" in full
    # The assignment menu shows who has it, even an admin who works on no account in particular.
    assert f'<option value="{admin.id}" selected>' in full
    pane = console.get(f"/inbox/{conversation.id}", headers={"HX-Request": "true", "HX-Target": "conversation-pane"})
    assert pane.status_code == 200 and "<html" not in pane.text and 'data-testid="reply-form"' in pane.text
    assert 'data-testid="queue"' not in pane.text  # only the middle and right panes are swapped
    assert 'hx-target="#conversation-pane"' in full and 'hx-push-url="true"' in full


def test_a_failed_reply_is_red_with_its_reason_and_retried_from_the_console(client: TestClient, db: Session,
                                                                           make: Any, connector: Any,
                                                                           token_for: Any) -> None:
    account = make.account(kind="personal")
    agent = make.user("service", accounts=[account])
    customer = make.customer(account)
    conversation = incoming(db, account, customer, "在吗")
    connector.unreachable = {customer.id}
    console = Console(client).login(agent)
    assert console.post(f"/inbox/{conversation.id}/reply", {"text": "在的"}).status_code == 303
    page = console.get(f"/inbox/{conversation.id}").text
    assert 'data-delivery="failed"' in page and "siyu-failed" in page and "not a contact" in page
    assert 'data-testid="retry"' in page
    unanswered = console.get("/inbox?view=unanswered").text
    assert f'data-conversation-id="{conversation.id}"' in unanswered  # not handled: still waiting
    failed = db.scalar(select(Message).where(Message.direction == "out"))
    assert failed is not None
    connector.unreachable = set()
    retried = console.post(f"/inbox/{conversation.id}/messages/{failed.id}/retry", {})
    assert retried.status_code == 303
    db.refresh(failed)
    assert failed.status == "sent"
    assert f'data-conversation-id="{conversation.id}"' not in console.get("/inbox?view=unanswered").text
    again = client.post(f"/api/v1/inbox/messages/{failed.id}/retry", headers=token_for(agent))
    assert again.status_code == 422  # only a failed message is sent again


def test_the_salutation_is_set_on_the_customer_page_and_used_by_quick_replies(client: TestClient, db: Session,
                                                                            make: Any) -> None:
    account = make.account(display_name="茶小满", kind="personal")
    customer = make.customer(account, name="悦欣", remark_name="刘悦欣-红茶党-杭州自由职业")
    conversation = incoming(db, account, customer, "在吗")
    db.add(CannedReply(shortcut="hi", title="问候", body="{称呼}您好，我是{账号}"))
    db.commit()
    console = Console(client).login(make.user("operator", accounts=[account]))
    assert 'data-canned="悦欣您好，我是茶小满"' in console.get(f"/inbox/{conversation.id}").text  # the nickname
    saved = console.post(f"/customers/{customer.id}", {"section": "remark", "account_id": account.id,
                                                        "remark_name": "刘悦欣-红茶党-杭州自由职业",
                                                        "salutation": " 刘姐 ", "description": ""})
    assert saved.status_code == 303
    detail = console.get(f"/customers/{customer.id}").text
    assert 'data-testid="salutation-input"' in detail and 'value="刘姐"' in detail
    page = console.get(f"/inbox/{conversation.id}").text
    assert 'data-canned="刘姐您好，我是茶小满"' in page and "刘悦欣-红茶党-杭州自由职业您好" not in page
    too_long = console.post(f"/customers/{customer.id}", {"section": "remark", "account_id": account.id,
                                                           "remark_name": "x", "salutation": "长" * 65,
                                                           "description": ""})
    assert too_long.status_code == 422 and "称呼" in too_long.text
