"""Service inbox: exactly-once ingestion, platform order, assignment, hand-back, queue, SLA."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.viewer import SYSTEM
from siyu.customers import variables
from siyu.customers.models import Customer, Touch
from siyu.inbox import service
from siyu.inbox.models import CannedReply, Conversation, Message, ServiceLevel
from siyu.inbox.service import InboundMessage, QueueFilter
from tests.conftest import viewer_of

T0 = utcnow() - timedelta(hours=1)


def msg(account: Any, customer: Any, n: int, *, seconds: int | None = None, text: str | bytes = "你好",
        msg_type: str = "text", source: str = "simulator") -> InboundMessage:
    return InboundMessage(source=source, platform_msgid=f"m{n}", account_id=account.id, customer_id=customer.id,
                          sent_at=T0 + timedelta(seconds=n if seconds is None else seconds), text=text,
                          msg_type=msg_type, sender=f"wm{customer.id}")


def agent(make: Any, db: Session, account: Any, *, online: bool = True, capacity: int = 20) -> Any:
    user = make.user("service", accounts=[account])
    service.set_online(db, user_id=user.id, online=online)
    service.set_capacity(db, user_id=user.id, capacity=capacity)
    db.commit()
    return user


def count(db: Session, model: Any) -> int:
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_the_same_message_delivered_three_times_is_stored_once(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    first = service.ingest(db, [msg(account, customer, 1)] * 3)
    again = service.ingest(db, [msg(account, customer, 1)])
    db.commit()
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (1, 2, 0, 1)
    assert count(db, Message) == 1
    (conversation,) = db.scalars(select(Conversation))
    assert conversation.unanswered == 1


def test_a_batch_larger_than_one_statement_stores_each_message_once_with_its_values(db: Session, make: Any) -> None:
    account = make.account()
    customers = [make.customer(account) for _ in range(3)]
    batch = [InboundMessage(source="simulator", platform_msgid=f"big{n}", account_id=account.id,
                            customer_id=customers[n % 3].id, sent_at=T0 + timedelta(seconds=n // 7),
                            text=f"第{n}条", sender=f"wm{n % 3}", payload={"n": n, "文字": "好"} if n % 2 else None)
             for n in range(2_500)]
    first = service.ingest(db, batch[:1_200])
    again = service.ingest(db, batch[1_000:])  # 200 repeats of the first batch, across the statement boundary
    db.commit()
    assert (first.stored, again.stored, again.duplicates) == (1_200, 1_300, 200)
    assert len(first.ids) + len(again.ids) == count(db, Message) == 2_500
    stored = {m.platform_msgid: m for m in db.scalars(select(Message))}
    for n in (0, 999, 1_000, 1_001, 1_999, 2_499):
        message = stored[f"big{n}"]
        assert (message.text, message.sender) == (f"第{n}条", f"wm{n % 3}")
        assert message.sent_at == T0 + timedelta(seconds=n // 7)
        assert message.payload == ({"n": n, "文字": "好"} if n % 2 else None)
        assert (message.direction, message.status, message.automatic, message.internal) == ("in", "received", False,
                                                                                               False)
        assert message.received_at is not None and message.received_at.tzinfo is not None
    assert first.ids[("simulator", "big5")] == stored["big5"].id
    conversations = {c.customer_id: c for c in db.scalars(select(Conversation))}
    last = conversations[customers[2499 % 3].id]
    assert (last.unanswered, last.last_message_at, last.last_message_preview) == (
        len(range(2499 % 3, 2_500, 3)), T0 + timedelta(seconds=2499 // 7), "第2499条")
    assert conversations[customers[0].id].waiting_since == T0


def test_messages_arriving_out_of_order_are_shown_in_platform_order(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 3, text="第三"), msg(account, customer, 1, text="第一")])
    service.ingest(db, [msg(account, customer, 2, text="第二")])
    db.commit()
    (conversation,) = db.scalars(select(Conversation))
    assert [m.text for m in service.messages_of(db, conversation=conversation)] == ["第一", "第二", "第三"]
    assert conversation.last_message_preview == "第三"  # a late older message does not replace the latest
    assert conversation.waiting_since == T0 + timedelta(seconds=1)


def test_long_invalid_and_unknown_messages_are_kept(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    big = "茶" * (64 * 1024)
    service.ingest(db, [
        msg(account, customer, 1, text=big),
        msg(account, customer, 2, text=b"caf\xe9 \xff\x00ok"),
        msg(account, customer, 3, msg_type="hongbao_v9", text="?"),
        msg(account, customer, 4, text="<script>alert(1)</script>"),
    ])
    db.commit()
    rows = {m.platform_msgid: m for m in db.scalars(select(Message))}
    assert len(rows["m1"].text) == service.MAX_TEXT
    assert rows["m2"].text == "caf\ufffd \ufffd\ufffdok"
    assert rows["m3"].msg_type == "unknown" and rows["m3"].payload == {"original_type": "hongbao_v9"}
    assert rows["m4"].text == "<script>alert(1)</script>"  # stored as written; escaped where shown


def test_a_message_from_an_unknown_contact_creates_the_customer(db: Session, make: Any) -> None:
    account = make.account()
    result = service.ingest(db, [InboundMessage(source="wecom", platform_msgid="x1", account_id=account.id,
                                                external_userid="wmNEWPERSON01", sent_at=T0, text="在吗")])
    db.commit()
    assert result.stored == 1
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == "wmNEWPERSON01"))
    assert customer is not None and [f.account_id for f in customer.friendships] == [account.id]


def test_round_robin_respects_capacity_and_presence(db: Session, make: Any) -> None:
    account = make.account()
    a = agent(make, db, account, capacity=2)
    b = agent(make, db, account, capacity=2)
    away = agent(make, db, account, online=False)
    customers = [make.customer(account) for _ in range(5)]
    service.ingest(db, [msg(account, c, i) for i, c in enumerate(customers)])
    db.commit()
    assignees = [c.assignee_id for c in db.scalars(select(Conversation).order_by(Conversation.waiting_since))]
    assert assignees[:4].count(a.id) == 2 and assignees[:4].count(b.id) == 2
    assert assignees[4] is None  # everyone is at capacity: it waits
    assert away.id not in assignees


def test_a_waiting_conversation_is_assigned_the_moment_capacity_frees(db: Session, make: Any) -> None:
    account = make.account()
    only = agent(make, db, account, capacity=1)
    first, second = make.customer(account), make.customer(account)
    service.ingest(db, [msg(account, first, 1), msg(account, second, 2)])
    db.commit()
    busy = db.scalar(select(Conversation).where(Conversation.assignee_id == only.id))
    waiting = db.scalar(select(Conversation).where(Conversation.assignee_id.is_(None)))
    assert busy is not None and waiting is not None
    service.change_status(db, conversation_id=busy.id, status="resolved", viewer=viewer_of(only))
    db.commit()
    db.refresh(waiting)
    assert waiting.assignee_id == only.id


def test_agent_going_offline_hands_back_thirty_open_conversations(db: Session, make: Any) -> None:
    account = make.account()
    leaving = agent(make, db, account, capacity=30)
    customers = [make.customer(account) for _ in range(30)]
    service.ingest(db, [msg(account, c, i) for i, c in enumerate(customers)])
    db.commit()
    assert count(db, Conversation) == 30
    staying = agent(make, db, account, capacity=10)
    moved = service.set_online(db, user_id=leaving.id, online=False)
    db.commit()
    assert moved == 30
    owners = [c.assignee_id for c in db.scalars(select(Conversation))]
    assert owners.count(staying.id) == 10 and owners.count(None) == 20 and leaving.id not in owners


def test_a_reopened_conversation_never_goes_to_an_offline_agent(db: Session, make: Any) -> None:
    account = make.account()
    first = agent(make, db, account)
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1)])
    db.commit()
    (conversation,) = db.scalars(select(Conversation))
    assert conversation.assignee_id == first.id
    service.change_status(db, conversation_id=conversation.id, status="resolved", viewer=viewer_of(first))
    service.set_online(db, user_id=first.id, online=False)
    other = agent(make, db, account)
    service.ingest(db, [msg(account, customer, 2)])
    db.commit()
    db.refresh(conversation)
    assert conversation.status == "open" and conversation.assignee_id == other.id


def test_reply_answers_the_customer_and_lands_on_the_timeline(db: Session, make: Any, connector: Any) -> None:
    account = make.account(kind="personal")  # a WeCom member's own chat is read-only
    me = agent(make, db, account)
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1)])
    db.commit()
    (conversation,) = db.scalars(select(Conversation))
    with pytest.raises(Invalid):
        service.reply(db, conversation_id=conversation.id, text="   ", viewer=viewer_of(me))
    sent = service.reply(db, conversation_id=conversation.id, text="您好，在的", viewer=viewer_of(me))
    note = service.reply(db, conversation_id=conversation.id, text="老客户，优先处理", viewer=viewer_of(me),
                         internal=True)
    db.commit()
    db.refresh(conversation)
    db.refresh(sent)
    assert (sent.status, note.status, note.internal) == ("sent", "sent", True)
    assert [o.text for o in connector.sent] == ["您好，在的"]  # the internal note never leaves
    assert conversation.waiting_since is None and conversation.unanswered == 0
    assert conversation.first_response_at is not None
    touch = db.scalar(select(Touch).where(Touch.dedupe_key == service.reply_touch_key(sent.id)))
    assert touch is not None and touch.content == "您好，在的" and touch.kind == "chat" and touch.user_id == me.id


def test_queue_is_longest_waiting_first_and_scoped(db: Session, make: Any) -> None:
    mine, theirs = make.account(), make.account()
    early, late, other = make.customer(mine), make.customer(mine), make.customer(theirs)
    service.ingest(db, [msg(mine, late, 1, seconds=300), msg(mine, early, 2, seconds=10),
                        msg(theirs, other, 3, seconds=5)])
    db.commit()
    operator = viewer_of(make.user("operator", accounts=[mine]))
    page = service.list_queue(db, flt=QueueFilter(view="unanswered"), viewer=operator, limit=1)
    assert [c.customer_id for c in page.items] == [early.id]
    assert page.next_cursor is not None
    second = service.list_queue(db, flt=QueueFilter(view="unanswered"), viewer=operator, limit=1,
                                cursor=page.next_cursor)
    assert [c.customer_id for c in second.items] == [late.id] and second.next_cursor is None
    everyone = service.list_queue(db, flt=QueueFilter(view="unanswered"), viewer=SYSTEM)
    assert [c.customer_id for c in everyone.items] == [other.id, early.id, late.id]
    theirs_conversation = db.scalar(select(Conversation).where(Conversation.account_id == theirs.id))
    assert theirs_conversation is not None
    with pytest.raises(NotFound):
        service.get_conversation(db, conversation_id=theirs_conversation.id, viewer=operator)
    assert service.queue_counts(db, viewer=operator)["unanswered"] == 2


def test_snoozed_conversations_wake_up(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1)])
    (conversation,) = db.scalars(select(Conversation))
    with pytest.raises(Invalid):
        service.change_status(db, conversation_id=conversation.id, status="snoozed", viewer=SYSTEM,
                              snooze_until=utcnow() - timedelta(minutes=1))
    service.change_status(db, conversation_id=conversation.id, status="snoozed", viewer=SYSTEM,
                          snooze_until=utcnow() + timedelta(minutes=30))
    assert service.wake_snoozed(db) == 0
    assert service.wake_snoozed(db, now=utcnow() + timedelta(hours=1)) == 1
    assert conversation.status == "open"


def test_sla_breaches_are_flagged_once(db: Session, make: Any) -> None:
    account = make.account()
    db.add(ServiceLevel(account_id=account.id, first_response_minutes=10, resolution_minutes=600))
    slow, fresh = make.customer(account), make.customer(account)
    service.ingest(db, [msg(account, slow, 1, seconds=0),
                        InboundMessage(source="simulator", platform_msgid="now", account_id=account.id,
                                       customer_id=fresh.id, sent_at=utcnow(), text="刚到")])
    db.commit()
    breached = service.sweep_sla(db)
    assert len(breached) == 1
    conversation = db.get(Conversation, breached[0])
    assert conversation is not None and conversation.customer_id == slow.id
    assert service.sweep_sla(db) == []


def test_canned_replies_fill_in_the_salutation_never_the_remark_name(db: Session, make: Any) -> None:
    account = make.account(display_name="茶小满")
    customer = make.customer(account, name="悦欣", remark_name="刘悦欣-红茶党-杭州自由职业", salutation="刘姐")
    plain = make.customer(account, name="小满", remark_name="张小满-宝妈-上海")
    nameless = make.customer(account, name=variables.unnamed("wmXyZ0123456789abcdef"))
    service.ingest(db, [msg(account, customer, 1), msg(account, plain, 2), msg(account, nameless, 3)])
    chats = {c.customer_id: c for c in db.scalars(select(Conversation))}
    canned = CannedReply(shortcut="hi", title="问候", body="{称呼}您好，我是{账号}，有什么可以帮您？")
    db.add(canned)
    db.flush()
    assert service.render_canned(db, reply=canned, conversation=chats[customer.id]) == \
        "刘姐您好，我是茶小满，有什么可以帮您？"
    assert service.render_canned(db, reply=canned, conversation=chats[plain.id]) == \
        "小满您好，我是茶小满，有什么可以帮您？"  # no salutation set: the nickname
    assert service.render_canned(db, reply=canned, conversation=chats[nameless.id]) == \
        "您好，我是茶小满，有什么可以帮您？"  # the platform gave no name: no id in the greeting either
    # A quick reply saved before the rule, still naming the remark: filled with the salutation.
    legacy = CannedReply(shortcut="old", title="旧", body="{备注名}您好")
    assert service.render_canned(db, reply=legacy, conversation=chats[customer.id]) == "刘姐您好"
    with pytest.raises(Invalid) as refused:
        service.save_canned(db, shortcut="bad", title="坏", body="{备注名}您好，电话{电话}", account_id=None,
                            viewer=SYSTEM)
    assert refused.value.field == "body" and "{备注名}" in refused.value.message


def test_bulk_actions_cover_every_match_in_chunks(db: Session, make: Any, client: Any, connector: Any,
                                                  admin_headers: dict[str, str]) -> None:
    from siyu.inbox import jobs as inbox_jobs

    account = make.account()
    customers = [make.customer(account, remark_name=f"客{i}-内部备注", salutation=f"客{i}") for i in range(230)]
    service.ingest(db, [msg(account, c, i) for i, c in enumerate(customers)])
    db.commit()
    flt = {"view": "unanswered", "account_id": account.id}
    private = client.post("/api/v1/inbox/bulk", json={**flt, "action": "reply", "args": {"text": "{备注名}您好"},
                                                     "expected_count": 230}, headers=admin_headers)
    assert private.status_code == 422 and "{备注名}" in private.json()["detail"]
    wrong = client.post("/api/v1/inbox/bulk", json={**flt, "action": "reply", "args": {"text": "{称呼}您好"},
                                                   "expected_count": 5}, headers=admin_headers)
    assert wrong.status_code == 409 and "230" in wrong.json()["detail"]
    assert client.post("/api/v1/inbox/bulk", json={**flt, "action": "explode", "expected_count": 230},
                       headers=admin_headers).status_code == 422
    done = client.post("/api/v1/inbox/bulk", json={**flt, "action": "reply", "args": {"text": "{称呼}您好"},
                                                  "expected_count": 230}, headers=admin_headers)
    assert done.status_code == 202, done.text
    job = client.get(done.json()["job_url"], headers=admin_headers).json()
    assert job["status"] == "succeeded" and job["result"] == {"matched": 230, "changed": 230, "skipped": 0}
    replies = {m.text for m in db.scalars(select(Message).where(Message.direction == "out"))}
    assert len(replies) == 230 and "客7您好" in replies
    assert service.count_matching(db, flt=QueueFilter(view="unanswered"), viewer=SYSTEM) == 0
    assert inbox_jobs.BULK_CHUNK < 230  # the job really walked more than one chunk


def test_bulk_tag_skips_what_it_cannot_touch(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1),
                        InboundMessage(source="simulator", platform_msgid="g1", account_id=account.id,
                                       group_key="wrGROUP1", sent_at=T0, text="群里有人吗")])
    db.commit()
    ids = service.matching_ids(db, flt=QueueFilter(view="all"), viewer=SYSTEM, after_id=0, limit=10)
    counts = service.apply_bulk(db, conversation_ids=ids, action="tag", args={"tags": ["人群:宝妈"]}, viewer=SYSTEM)
    db.commit()
    assert counts == {"changed": 1, "skipped": 1}
    assert [t.name for t in service.customers_service.customer_tags(db, customer_ids=[customer.id])[customer.id]
            if t.name == "宝妈"] == ["宝妈"]


def test_delivery_without_a_connection_fails_visibly(db: Session, make: Any) -> None:
    account = make.account(kind="personal")
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1)])
    (conversation,) = db.scalars(select(Conversation))
    reply = service.reply(db, conversation_id=conversation.id, text="在的", viewer=SYSTEM)
    db.commit()
    db.refresh(reply)
    assert reply.status == "failed" and "connection" in reply.error


def test_transient_failures_are_retried_and_permanent_ones_stop(db: Session, make: Any) -> None:
    from siyu.inbox import delivery

    account = make.account(kind="personal")
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1)])
    (conversation,) = db.scalars(select(Conversation))
    outcomes = [delivery.DeliveryError("45009 rate limited"), "ok"]

    class Flaky:
        def send_text(self, outgoing: Any) -> str:
            result = outcomes.pop(0)
            if isinstance(result, Exception):
                raise result
            return "platform-1"

    def factory(_account: Any) -> Flaky:
        return Flaky()

    delivery.register(factory)
    try:
        message = service.reply(db, conversation_id=conversation.id, text="您好", viewer=SYSTEM)
        db.commit()
        db.refresh(message)
        assert message.status == "queued" and "45009" in message.error  # waiting for its retry
        assert delivery.deliver(db, message_id=message.id, attempt=2).done
        db.commit()
        assert message.status == "sent" and message.payload["platform_id"] == "platform-1"  # type: ignore[index]
        outcomes.append(delivery.DeliveryError("customer deleted us", permanent=True))
        second = service.reply(db, conversation_id=conversation.id, text="还在吗", viewer=SYSTEM)
        db.commit()
        db.refresh(second)
        assert second.status == "failed" and second.error == "customer deleted us"
    finally:
        delivery.unregister(factory)


# ---------------------------------------------------------------- failed replies are not "handled"


def test_a_failed_reply_leaves_the_customer_waiting_and_counts_no_contact(db: Session, make: Any,
                                                                          connector: Any) -> None:
    account = make.account(kind="personal")
    me = agent(make, db, account)
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1), msg(account, customer, 2)])
    db.commit()
    (conversation,) = db.scalars(select(Conversation))
    waiting_since = conversation.waiting_since
    db.refresh(customer)
    contacts_before = customer.contact_count
    connector.unreachable = {customer.id}  # the platform refuses: e.g. the customer is not reachable
    failed = service.reply(db, conversation_id=conversation.id, text="您好，在的", viewer=viewer_of(me))
    db.commit()
    db.refresh(failed)
    db.refresh(conversation)
    db.refresh(customer)
    assert failed.status == "failed" and failed.error == "not a contact"
    assert (conversation.waiting_since, conversation.unanswered, conversation.first_response_at) == (
        waiting_since, 2, None)  # still unanswered, its SLA clock still running
    assert conversation.id in [c.id for c in service.list_queue(
        db, flt=QueueFilter(view="unanswered"), viewer=SYSTEM).items]
    assert db.scalar(select(Touch).where(Touch.dedupe_key == service.reply_touch_key(failed.id))) is None
    assert customer.contact_count == contacts_before
    from siyu.inbox import delivery

    assert delivery.failed_attempts(failed) == 1
    # 重试: a new attempt of the same message, accepted this time.
    connector.unreachable = set()
    service.retry_reply(db, message_id=failed.id, viewer=viewer_of(me))
    db.commit()
    db.refresh(failed)
    db.refresh(conversation)
    db.refresh(customer)
    assert failed.status == "sent" and failed.error == "" and delivery.failed_attempts(failed) == 1
    assert [o.message_id for o in connector.sent] == [failed.id]
    assert conversation.waiting_since is None and conversation.unanswered == 0
    assert conversation.first_response_at is not None
    assert customer.contact_count == contacts_before + 1
    with pytest.raises(Invalid):  # only a failed message is sent again
        service.retry_reply(db, message_id=failed.id, viewer=viewer_of(me))


def test_what_the_customer_writes_while_a_reply_is_on_its_way_still_waits(db: Session, make: Any) -> None:
    from siyu.core import jobs
    from siyu.inbox import delivery

    account = make.account(kind="personal")
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1, seconds=0)])
    db.commit()
    (conversation,) = db.scalars(select(Conversation))
    jobs.set_immediate(False)  # the reply waits in the queue
    try:
        reply = service.reply(db, conversation_id=conversation.id, text="在的", viewer=SYSTEM)
        db.commit()
    finally:
        jobs.set_immediate(True)
    service.ingest(db, [InboundMessage(source="simulator", platform_msgid="later", account_id=account.id,
                                       customer_id=customer.id, sent_at=utcnow() + timedelta(seconds=1),
                                       text="还有一个问题")])
    db.commit()

    class Accepting:
        def send_text(self, outgoing: Any) -> str:
            return "p-1"

    def factory(_account: Any) -> Accepting:
        return Accepting()

    delivery.register(factory)
    try:
        assert delivery.deliver(db, message_id=reply.id, attempt=1).done
        db.commit()
    finally:
        delivery.unregister(factory)
    db.refresh(conversation)
    assert conversation.unanswered == 1 and conversation.waiting_since is not None
    assert conversation.first_response_at is not None


def test_a_reply_the_platform_accepted_but_never_delivered_is_unanswered_again(db: Session, make: Any,
                                                                             connector: Any) -> None:
    from siyu.inbox import delivery

    account = make.account()
    customer = make.customer(account)
    service.ingest(db, [msg(account, customer, 1)])
    db.commit()
    (conversation,) = db.scalars(select(Conversation))
    # A WeCom member's own chat: the one-customer mass send the member confirms (accepted, told later).
    reply = service.reply(db, conversation_id=conversation.id, text="在的", viewer=SYSTEM, member_send=True)
    db.commit()
    db.refresh(customer)
    db.refresh(reply)
    answered_contacts = customer.contact_count
    assert reply.status == "sent"
    assert db.scalar(select(Touch).where(Touch.dedupe_key == service.reply_touch_key(reply.id))) is not None
    delivery.fail_after_acceptance(reply, "the member did not send it")
    db.commit()
    db.refresh(conversation)
    db.refresh(customer)
    assert reply.status == "failed" and conversation.unanswered == 1 and conversation.waiting_since is not None
    assert conversation.first_response_at is None
    assert db.scalar(select(Touch).where(Touch.dedupe_key == service.reply_touch_key(reply.id))) is None
    assert customer.contact_count == answered_contacts - 1


# ---------------------------------------------------------------- the customer's own messages on the portrait


def test_a_day_of_customer_messages_is_one_touch_and_moves_the_portrait(db: Session, make: Any) -> None:
    from siyu.core.settings import local_zone

    account = make.account()
    customer = make.customer(account)
    # Three messages on one local day, two on the next (local midnight between them).
    midnight = datetime.combine(utcnow().astimezone(local_zone()).date() - timedelta(days=1), time(0),
                                tzinfo=local_zone())
    day_one = [midnight - timedelta(hours=h) for h in (5, 3, 1)]
    day_two = [midnight + timedelta(hours=h) for h in (1, 2)]
    stamps = day_one + day_two
    inbound = [InboundMessage(source="simulator", platform_msgid=f"d{i}", account_id=account.id,
                              customer_id=customer.id, sent_at=at, text=f"第{i}条") for i, at in enumerate(stamps)]
    service.ingest(db, inbound[:2])  # two batches: the second extends the first day's touch
    service.ingest(db, inbound[2:] + inbound[:1])  # and a platform retry changes nothing
    service.ingest(db, [InboundMessage(source="simulator", platform_msgid="grp", account_id=account.id,
                                       group_key="wrGROUP", sent_at=stamps[-1], text="群消息")])
    db.commit()
    touches = list(db.scalars(select(Touch).where(Touch.customer_id == customer.id, Touch.kind == "chat")
                              .order_by(Touch.occurred_at)))
    assert [(t.occurred_at, t.content, (t.details or {}).get("direction")) for t in touches] == [
        (day_one[0], "第0条", "customer"), (day_two[0], "第3条", "customer")]  # each day at its first message
    db.refresh(customer)
    assert customer.contact_count == 2 and customer.last_touch_at == day_two[0]
    assert customer.stage == "user"  # two-way contact moved the ladder
    # The set-based path agrees with the one full derivation of the computed facts.
    from siyu.customers import service as customers_service

    def facts() -> tuple[Any, ...]:
        tags = sorted(t.name for t in customers_service.customer_tags(db, customer_ids=[customer.id])[customer.id])
        return customer.contact_count, customer.last_touch_at, customer.stage, tags

    fast = facts()
    customers_service.refresh_computed(db, customer=customer)
    assert facts() == fast and "沟通1-3次" in fast[3]


def test_customer_days_stay_cheap_at_flood_scale(db: Session, make: Any) -> None:
    """1,000 customers writing 5 times each in one batch: one touch each, a handful of statements."""
    from sqlalchemy import event

    account = make.account()
    customers = make.bulk_customers(account, 1000)
    batch = [InboundMessage(source="simulator", platform_msgid=f"f{c}-{n}", account_id=account.id, customer_id=c,
                            sent_at=T0 + timedelta(seconds=n), text="发货了吗") for c in customers for n in range(5)]
    statements: list[str] = []

    def count_statement(*args: Any) -> None:
        statements.append(str(args[2])[:40])

    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", count_statement)
    try:
        service.ingest(db, batch)
        service.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"g{c}", account_id=account.id,
                                           customer_id=c, sent_at=T0 + timedelta(seconds=9), text="在吗")
                            for c in customers])
    finally:
        event.remove(engine, "before_cursor_execute", count_statement)
    db.commit()
    assert db.scalar(select(func.count()).select_from(Touch).where(Touch.dedupe_key.is_not(None))) == 1000
    assert set(db.scalars(select(Customer.contact_count).where(Customer.id.in_(customers)))) == {1}
    assert len(statements) < 120, len(statements)  # set-based: never a statement per message or customer


def test_on_postgresql_conversations_keep_room_for_their_updates_on_the_same_page(db: Session) -> None:
    from sqlalchemy import text as sql

    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("fillfactor is PostgreSQL's (SQLite rewrites the row in place)")
    options = db.execute(sql("SELECT reloptions FROM pg_class WHERE relname = 'conversation'")).scalar_one()
    assert "fillfactor=70" in (options or [])
