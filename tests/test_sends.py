"""The one send-quota ledger (W:92135): a customer or group gets at most as many corp mass messages a
month as the month has days (or 7 a week, 1 a day when the corp's admin chose so), checked and
reserved before anything is created, set-based for 10,000 recipients, released when a send fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.settings import local_zone
from siyu.sends import service as sends
from siyu.sends.models import QuotaMode, SendLedgerEntry, SendSource, TargetKind
from tests.test_wecom_connector import sim  # noqa: F401  (the simulator fixture)

FEBRUARY = datetime(2026, 2, 10, 10, 0, tzinfo=local_zone())  # 28 days
DECEMBER = datetime(2026, 12, 10, 10, 0, tzinfo=local_zone())  # 31 days


@contextmanager
def statements(db: Session) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = db.get_bind()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def fill(db: Session, ids: list[int], at: datetime, times: int) -> None:
    for n in range(times):
        sends.reserve(db, ids, at, source=SendSource.campaign, ref=f"campaign:{n}")


def test_a_customer_gets_as_many_corp_mass_messages_a_month_as_the_month_has_days(db: Session) -> None:
    fill(db, [1, 2], FEBRUARY, 27)

    result = sends.reserve(db, [1, 2], FEBRUARY, source=SendSource.sop, ref="sop_run:1")
    assert result.allowed == [1, 2] and result.refused == {}
    again = sends.reserve(db, [1, 2, 3], FEBRUARY, source=SendSource.sop, ref="sop_run:2")

    assert again.allowed == [3]
    assert sorted(again.refused) == [1, 2] and "28" in again.refused[1]
    # December has 31 days: the same history leaves room.
    assert sends.period_of("month", DECEMBER.date()).limit == 31
    assert sends.used_counts(db, [1], at=DECEMBER) == {}


def test_the_admins_week_and_day_rules(db: Session, admin: Any) -> None:
    from tests.conftest import viewer_of

    sends.set_quota_mode(db, mode=QuotaMode.day, viewer=viewer_of(admin))
    assert sends.reserve(db, [7], DECEMBER, source=SendSource.sop, ref="a").allowed == [7]
    assert list(sends.reserve(db, [7], DECEMBER, source=SendSource.sop, ref="b").refused) == [7]

    sends.set_quota_mode(db, mode=QuotaMode.week, viewer=viewer_of(admin))
    fill(db, [8], DECEMBER, 6)  # Thursday 10 Dec: the week Monday 7 – Sunday 13 has 7
    assert sends.reserve(db, [8], DECEMBER, source=SendSource.sop, ref="c").allowed == [8]
    refused = sends.reserve(db, [8], DECEMBER, source=SendSource.sop, ref="d").refused
    assert "7" in refused[8]
    next_monday = datetime(2026, 12, 14, 9, 0, tzinfo=local_zone())
    assert sends.reserve(db, [8], next_monday, source=SendSource.sop, ref="e").allowed == [8]


def test_release_gives_the_quota_back_when_a_send_fails_before_it_was_created(db: Session) -> None:
    fill(db, [5], FEBRUARY, 28)
    assert list(sends.reserve(db, [5], FEBRUARY, source=SendSource.sop, ref="x").refused) == [5]

    assert sends.release(db, source=SendSource.campaign, ref="campaign:0") == 1
    assert sends.reserve(db, [5], FEBRUARY, source=SendSource.sop, ref="x").allowed == [5]
    assert sends.release(db, source=SendSource.sop, ref="nothing-here") == 0


def test_groups_have_their_own_quota(db: Session) -> None:
    fill(db, [9], FEBRUARY, 28)  # customer 9 is full …
    group = sends.reserve(db, [9], FEBRUARY, source=SendSource.group_post, ref="post:1", target=TargetKind.group)
    assert group.allowed == [9]  # … group chat 9 is not


def test_ten_thousand_recipients_are_checked_and_reserved_set_based(db: Session) -> None:
    ids = list(range(1, 10_001))
    fill(db, ids[:300], FEBRUARY, 28)  # 300 of them are already full this month

    with statements(db) as seen:
        result = sends.reserve(db, ids, FEBRUARY, source=SendSource.campaign, ref="campaign:big")

    assert len(result.allowed) == 9_700 and sorted(result.refused) == ids[:300]
    assert len(seen) <= 10, seen[:3]  # lock, one count, a few batched inserts: no query per recipient
    assert db.scalar(select(func.count()).select_from(SendLedgerEntry).where(
        SendLedgerEntry.ref == "campaign:big")) == 9_700


def test_quota_rule_api_is_for_admins(client: TestClient, make: Any, admin_headers: dict[str, str],
                                      token_for: Any) -> None:
    operator = make.user("operator")
    assert client.put("/api/v1/sends/quota", json={"quota_mode": "week"},
                      headers=token_for(operator)).status_code == 403
    answer = client.put("/api/v1/sends/quota", json={"quota_mode": "week"}, headers=admin_headers)
    assert answer.status_code == 200 and answer.json() == {"quota_mode": "week", "limit_this_period": 7}
    assert client.put("/api/v1/sends/quota", json={"quota_mode": "hour"}, headers=admin_headers).status_code == 422
    assert client.get("/api/v1/sends/quota", headers=token_for(operator)).json()["quota_mode"] == "week"


def test_an_inbox_reply_over_the_customers_quota_is_refused_before_wecom_creates_it(
        db: Session, make: Any, sim: Any) -> None:  # noqa: F811
    from tests.test_wecom_connector import MEMBER, conversation_of, reply, wecom_customer

    account = make.account(wecom_userid=MEMBER)
    external = sim.new_contact()
    customer = wecom_customer(make, db, account, external)
    conversation = conversation_of(db, account, customer)
    now = utcnow()
    fill(db, [customer.id], now, sends.period_of("month", sends.local_day(now)).limit)
    db.commit()
    calls = sim.calls()

    message = reply(db, conversation, "您好，新品到了")

    assert message.status == "failed" and "超出群发额度" in message.error
    assert sim.calls() == calls and sim.received(external) == []
    # Given back the month's room, the next reply goes out and is counted once.
    sends.release(db, source=SendSource.campaign, ref="campaign:0")
    db.commit()
    assert reply(db, conversation, "您好，明天发货").status == "sent"
    assert db.scalar(select(func.count()).select_from(SendLedgerEntry).where(
        SendLedgerEntry.source == "inbox", SendLedgerEntry.released_at.is_(None))) == 1


def test_checking_the_quota_writes_nothing_so_no_lock_is_held_across_a_call_to_wecom(db: Session, make: Any) -> None:
    from siyu.sends.models import SendSettings

    customer = make.customer(make.account())
    db.commit()
    grant = sends.check(db, [customer.id], utcnow())
    assert grant.allowed == [customer.id] and not grant.refused
    assert not db.new and not db.dirty and db.scalar(select(func.count()).select_from(SendSettings)) == 0
    assert db.scalar(select(func.count()).select_from(SendLedgerEntry)) == 0


def test_many_one_recipient_sends_are_reserved_each_with_its_own_ref_set_based(db: Session) -> None:
    fill(db, [7], FEBRUARY, 27)  # customer 7 has room for one more this month
    items = [(7, "sop_run:1"), (7, "sop_run:2"), (8, "sop_run:3")]

    with statements(db) as seen:
        result = sends.reserve_each(db, items, FEBRUARY, source=SendSource.sop)

    assert result.allowed == ["sop_run:1", "sop_run:3"] and list(result.refused) == ["sop_run:2"]
    assert "27" in result.refused["sop_run:2"] or "28" in result.refused["sop_run:2"]
    assert len(seen) <= 5, seen  # lock, one count, one insert (plus the settings row)
    assert sends.release_each(db, source=SendSource.sop, refs=["sop_run:1", "sop_run:9"]) == 1
    assert sends.used_counts(db, [7, 8], at=FEBRUARY) == {7: 27, 8: 1}
