"""Auto-reply rules: matching, versions, dry run before switching on, caps, loops, kill switches."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.autoreply import service
from siyu.autoreply.matcher import CompiledRule, Matcher, UnsafePattern, check_pattern, in_hours
from siyu.autoreply.models import AutoReplyRule, MatchKind
from siyu.autoreply.service import RuleIn
from siyu.core.db import utcnow
from siyu.core.errors import Conflict, Forbidden, Invalid
from siyu.core.viewer import SYSTEM
from siyu.inbox import service as inbox
from siyu.inbox.models import Message
from siyu.inbox.service import InboundMessage
from siyu.team.models import AuditEntry
from tests.conftest import viewer_of

_counter = iter(range(1, 10**9))


def say(db: Session, account: Any, customer: Any, text: str, **extra: Any) -> inbox.IngestResult:
    result = inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"say-{next(_counter)}",
                                              account_id=account.id, customer_id=customer.id, sent_at=utcnow(),
                                              text=text, **extra)])
    db.commit()
    return result


def rule(db: Session, *, enable: bool = True, **fields: Any) -> AutoReplyRule:
    data = RuleIn(**({"name": "优惠券", "match_kind": MatchKind.contains, "keywords": ["优惠券"],
                      "reply": "{称呼}您好，优惠券在卡包里", "hourly_cap": 100} | fields))
    saved = service.save_rule(db, data=data, viewer=SYSTEM)
    if enable:
        service.dry_run(db, rule_id=saved.id, viewer=SYSTEM)
        service.set_enabled(db, rule_id=saved.id, enabled=True, viewer=SYSTEM)
    db.commit()
    return saved


def auto_replies(db: Session) -> list[Message]:
    return list(db.scalars(select(Message).where(Message.automatic.is_(True)).order_by(Message.id)))


# ---------------------------------------------------------------- the matcher


def test_keyword_exact_and_regex_rules_and_priority() -> None:
    rules = [
        CompiledRule(1, 1, None, "contains", 10, ("优惠券",)),
        CompiledRule(2, 2, None, "contains", 50, ("优惠券用不了",)),
        CompiledRule(3, 3, None, "exact", 10, ("在吗",)),
        CompiledRule(4, 4, 7, "regex", 10, pattern=r"订单\d{6}"),
    ]
    matcher = Matcher(rules)
    assert matcher.match("我的优惠券用不了！", account_id=1).version_id == 2  # type: ignore[union-attr]
    assert matcher.match("有优惠券吗", account_id=1).version_id == 1  # type: ignore[union-attr]
    assert matcher.match(" 在吗 ", account_id=1).version_id == 3  # type: ignore[union-attr]
    assert matcher.match("在吗？我问个事", account_id=1) is None
    assert matcher.match("订单123456没到", account_id=7).version_id == 4  # type: ignore[union-attr]
    assert matcher.match("订单123456没到", account_id=8) is None  # that rule is another account's
    assert len(matcher.candidates("优惠券用不了", account_id=1)) == 2  # two match; only the first is sent


def test_catastrophic_patterns_are_refused_and_never_hang() -> None:
    for pattern in ("(a+)+$", r"^(\d+)+x$", "(a|aa)+$", r"(\s*)*x"):
        with pytest.raises(UnsafePattern):
            check_pattern(pattern)
    started = time.perf_counter()
    matcher = Matcher([CompiledRule(1, 1, None, "regex", 1, pattern="(a|aa)+$")])
    assert matcher.match("a" * 5000 + "!", account_id=1) is None
    assert time.perf_counter() - started < 1


def test_service_hours_wrap_midnight() -> None:
    night = {"start": "22:00", "end": "06:00"}
    assert in_hours(night, datetime(2026, 11, 25, 23, 0, tzinfo=UTC))
    assert not in_hours(night, datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    weekdays = {"start": "09:00", "end": "18:00", "days": [0, 1, 2, 3, 4]}
    assert not in_hours(weekdays, datetime(2026, 11, 29, 10, 0, tzinfo=UTC))  # a Sunday


# ---------------------------------------------------------------- rules in the inbox


def test_a_matching_message_gets_one_reply_naming_the_rule_version(db: Session, make: Any, connector: Any) -> None:
    account = make.account()
    customer = make.customer(account, remark_name="刘悦欣-红茶党-杭州自由职业", salutation="王姐")
    saved = rule(db)
    result = say(db, account, customer, "优惠券用不了")
    (reply,) = auto_replies(db)
    assert result.auto_replies == 1
    assert reply.text == "王姐您好，优惠券在卡包里" and reply.status == "sent"
    assert [o.text for o in connector.sent] == ["王姐您好，优惠券在卡包里"]
    assert reply.rule_version_id == saved.current_version_id and reply.reply_to_id is not None
    say(db, account, customer, "你好")
    assert len(auto_replies(db)) == 1


def test_a_rule_naming_the_remark_name_is_refused_and_old_rules_never_send_it(db: Session, make: Any,
                                                                             connector: Any) -> None:
    with pytest.raises(Invalid) as refused:
        rule(db, reply="{备注名}您好，优惠券在卡包里")
    assert refused.value.field == "reply" and "{备注名}" in refused.value.message
    assert "内部字段" in refused.value.message and "{称呼}" in refused.value.message
    db.rollback()
    # A rule saved before the check (straight into its version) fills the salutation, never the remark.
    saved = rule(db)
    version = service.current_version(db, saved)
    version.reply = "{备注名}您好，{昵称}，券在卡包里"
    db.commit()
    account = make.account()
    customer = make.customer(account, name="悦欣", remark_name="刘悦欣-红茶党-杭州自由职业")
    say(db, account, customer, "优惠券在哪")
    assert [o.text for o in connector.sent] == ["悦欣您好，悦欣，券在卡包里"]


def test_a_rule_cannot_be_switched_on_before_its_dry_run(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    say(db, account, customer, "优惠券在哪")
    say(db, account, customer, "谢谢")
    saved = rule(db, enable=False)
    first_version = saved.current_version_id
    with pytest.raises(Conflict):
        service.set_enabled(db, rule_id=saved.id, enabled=True, viewer=SYSTEM)
    preview = service.dry_run(db, rule_id=saved.id, viewer=SYSTEM)
    assert (preview.scanned, preview.matched, preview.customers) == (2, 1, 1)
    assert preview.hits[0].text == "优惠券在哪"
    service.set_enabled(db, rule_id=saved.id, enabled=True, viewer=SYSTEM)
    # Editing makes a new version, switched off until its own dry run is seen.
    edited = service.save_rule(db, rule_id=saved.id, viewer=SYSTEM, data=RuleIn(
        name="优惠券", match_kind=MatchKind.contains, keywords=["券"], reply="新的回复"))
    assert not edited.enabled and edited.current_version_id not in (None, first_version)
    with pytest.raises(Conflict):
        service.set_enabled(db, rule_id=saved.id, enabled=True, viewer=SYSTEM)


def test_the_hourly_cap_counts_each_reply_once_when_a_batch_of_messages_arrives_together(
        db: Session, make: Any) -> None:
    account = make.account()
    saved = rule(db, hourly_cap=3, reply="您好，优惠券在卡包里")
    inbox.ingest(db, [InboundMessage(source="simulator", platform_msgid=f"batch-{next(_counter)}",
                                     account_id=account.id, customer_id=make.customer(account).id, sent_at=utcnow(),
                                     text="优惠券") for _ in range(5)])
    db.commit()
    assert len(auto_replies(db)) == 3
    db.refresh(saved)
    assert saved.paused_at is not None


def test_the_hourly_cap_pauses_the_rule_and_raises_an_alert(db: Session, make: Any) -> None:
    account = make.account()
    saved = rule(db, hourly_cap=3)
    for _ in range(5):
        say(db, account, make.customer(account), "优惠券")
    assert len(auto_replies(db)) == 3
    db.refresh(saved)
    assert saved.paused_at is not None and "3" in saved.paused_reason
    alert = db.scalar(select(AuditEntry).where(AuditEntry.action == "pause"))
    assert alert is not None and alert.entity_id == str(saved.id)
    say(db, account, make.customer(account), "优惠券")
    assert len(auto_replies(db)) == 3


def test_no_reply_to_automatic_messages_and_no_ping_pong(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    rule(db)
    say(db, account, customer, "优惠券", payload={"automatic": True})
    say(db, account, customer, "优惠券", msg_type="system")
    assert auto_replies(db) == []
    say(db, account, customer, "优惠券")
    say(db, account, customer, "优惠券？")  # within the quiet period: a bot on the other side gets one answer
    assert len(auto_replies(db)) == 1


def test_a_message_is_never_answered_twice(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account)
    rule(db)
    say(db, account, customer, "优惠券")
    (stored,) = db.scalars(select(Message).where(Message.direction == "in"))
    again = service.respond(db, messages=[service.StoredInbound(
        id=stored.id, conversation_id=stored.conversation_id, msg_type="text", text="优惠券",
        sent_at=stored.sent_at + timedelta(hours=1), payload=None)])
    assert again == 0
    assert db.scalar(select(func.count()).select_from(Message).where(Message.automatic.is_(True))) == 1


def test_kill_switches_per_rule_and_per_account(db: Session, make: Any) -> None:
    first, second = make.account(), make.account()
    saved = rule(db)
    service.set_account_switch(db, account_id=first.id, enabled=False, viewer=SYSTEM)
    db.commit()
    say(db, first, make.customer(first), "优惠券")
    say(db, second, make.customer(second), "优惠券")
    assert len(auto_replies(db)) == 1
    service.set_enabled(db, rule_id=saved.id, enabled=False, viewer=SYSTEM)
    db.commit()
    say(db, second, make.customer(second), "优惠券")
    assert len(auto_replies(db)) == 1


def test_two_rules_matching_one_message_send_one_reply(db: Session, make: Any) -> None:
    account = make.account()
    rule(db, name="泛", keywords=["券"], reply="泛泛的回复", priority=1)
    rule(db, name="准", keywords=["优惠券用不了"], reply="精确的回复", priority=9)
    say(db, account, make.customer(account), "优惠券用不了")
    assert [m.text for m in auto_replies(db)] == ["精确的回复"]


def test_bad_rules_are_refused(db: Session, make: Any) -> None:
    with pytest.raises(Invalid):
        service.save_rule(db, viewer=SYSTEM, data=RuleIn(name="x", match_kind=MatchKind.regex,
                                                         pattern="(a+)+$", reply="r"))
    with pytest.raises(Invalid):
        service.save_rule(db, viewer=SYSTEM, data=RuleIn(name="x", match_kind=MatchKind.contains, keywords=[" "],
                                                         reply="r"))
    with pytest.raises(Invalid):
        service.save_rule(db, viewer=SYSTEM, data=RuleIn(name="x", match_kind=MatchKind.outside_hours,
                                                         hours={"start": "9点"}, reply="r"))
    account = make.account()
    agent = viewer_of(make.user("service", accounts=[account]))
    with pytest.raises(Forbidden):
        service.save_rule(db, viewer=agent, data=RuleIn(name="x", account_id=account.id,
                                                        match_kind=MatchKind.contains, keywords=["a"], reply="r"))
