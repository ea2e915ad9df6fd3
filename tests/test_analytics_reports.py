"""Weekly reports: the page fit to print, its numbers from the metrics catalogue, and its delivery to the
owner as a WeCom app message (message/send, W:90236) through the simulator — once per (scope, week)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.analytics import reports
from siyu.analytics.models import ReportState, WeeklyReport
from siyu.analytics.service import Scope
from siyu.core.viewer import SYSTEM
from tests.conftest import Factory
from tests.test_wecom_client import api, sim, sleeps  # noqa: F401  (fixtures)

SH = timedelta(hours=8)
WEEK = date(2026, 11, 23)  # a Monday
AGENT_ID = 1000002


def local(y: int, m: int, d: int, hh: int = 12, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC) - SH


def _touches(make: Factory, account: Any) -> Any:
    customer = make.customer(account)
    # Sunday 23:59 belongs to the reported week, Monday 00:01 to the next; one in the week before.
    make.touch(customer, "chat", occurred_at=local(2026, 11, 29, 23, 59), account_id=account.id)
    make.touch(customer, "chat", occurred_at=local(2026, 11, 30, 0, 1), account_id=account.id)
    make.touch(customer, "note", occurred_at=local(2026, 11, 18), account_id=account.id)
    return customer


def test_a_weekly_report_reads_the_catalogue_for_the_week_and_the_week_before(db: Session, make: Factory) -> None:
    account = make.account()
    _touches(make, account)
    report = reports.build(db, viewer=SYSTEM, scope=Scope("account", account.id), week=WEEK)
    rows = {r.metric: r for r in report.flows}
    assert (rows["private_chats"].value, rows["private_chats"].before) == (1, 0)
    assert (rows["touches"].value, rows["touches"].before, rows["touches"].change) == (1, 1, 0)
    assert [r.metric for r in report.ladder] == ["ladder_traffic", "ladder_user", "ladder_customer", "ladder_fan"]
    title, description = reports.card(report)
    assert "2026-11-23" in title and report.label in title
    assert f"{rows['private_chats'].label} 1（+1）" in description and "2026-11-29" in description


def test_the_weekly_report_page_is_fit_to_print_and_scoped_to_what_the_viewer_may_see(
        db: Session, make: Factory, client: Any, admin: Any) -> None:
    from tests.test_pages import Console

    mine, theirs = make.account(), make.account()
    _touches(make, mine)
    operator = make.user("operator", accounts=[mine])
    console = Console(client).login(admin)
    page = console.get("/analytics/reports/weekly", params={"scope": "company", "week": "2026-11-25"})
    assert page.status_code == 200, page.text
    assert "size: A4" in page.text and "@media print" in page.text
    assert 'data-testid="report-flows"' in page.text and "2026-11-23 – 2026-11-29" in page.text
    empty = console.get("/analytics/reports/weekly", params={"scope": "company", "week": "2020-01-06"})
    assert 'data-testid="empty-report"' in empty.text
    assert console.get("/analytics/reports/weekly", params={"week": "last week"}).status_code == 422
    assert console.get("/analytics/reports/weekly", params={"scope": "segment:1"}).status_code in (404, 422)
    other = Console(client).login(operator)
    assert other.get("/analytics/reports/weekly", params={"scope": f"account:{theirs.id}"}).status_code == 404
    assert other.get("/analytics/reports/weekly", params={"scope": "company"}).status_code == 200
    own = other.get("/analytics/reports/weekly", params={"scope": f"account:{mine.id}", "week": "2026-11-23"})
    assert own.status_code == 200 and f"account:{theirs.id}" not in own.text


def test_weekly_reports_go_to_their_owners_as_wecom_app_messages_once_per_scope_and_week(
        db: Session, make: Factory, sim: Any, api: Any) -> None:  # noqa: F811
    first, second = (m.userid for m in sim.corp.state.members[:2])
    account = make.account(wecom_userid=first)
    other = make.account(wecom_userid=second)
    operator = make.user("operator", accounts=[account])
    make.user("operator", accounts=[])  # an operator without a WeCom account: nobody to send to
    _touches(make, account)
    db.commit()
    result = reports.deliver_week(api=api, week=WEEK, agent_id=AGENT_ID)
    assert sorted(result.sent) == sorted([f"account:{account.id}", f"account:{other.id}", f"operator:{operator.id}"])
    assert "company" in result.no_owner  # no admin works through a WeCom account here
    received = sim.control("GET", "app_messages")["messages"]
    assert sim.calls("message/send") == 3
    cards = {m["content"]["url"].split("?", 1)[1]: m for m in received}
    mine = cards[f"scope=account:{account.id}&week=2026-11-23"]
    assert mine["msgtype"] == "textcard" and mine["agentid"] == AGENT_ID and mine["touser"] == [first]
    assert cards[f"scope=operator:{operator.id}&week=2026-11-23"]["touser"] == [first]  # their account's member
    assert cards[f"scope=account:{other.id}&week=2026-11-23"]["touser"] == [second]
    card = mine["content"]
    assert card["url"].startswith("http://127.0.0.1:8000/analytics/reports/weekly")
    assert len(card["title"].encode()) <= 128 and len(card["description"].encode()) <= 512
    rows = {r.scope: r for r in db.scalars(select(WeeklyReport).where(WeeklyReport.week == WEEK))}
    assert rows[f"account:{account.id}"].state == ReportState.sent and rows[f"account:{account.id}"].msgid
    assert rows[f"operator:{operator.id}"].owner_id == operator.id
    # Again: nothing new reaches anyone.
    again = reports.deliver_week(api=api, week=WEEK, agent_id=AGENT_ID)
    assert again.sent == [] and len(again.skipped) == len(result.sent) + len(result.no_owner) + len(result.failed)
    assert sim.calls("message/send") == 3


def test_a_failed_send_is_recorded_and_sent_by_the_next_run(
        db: Session, make: Factory, sim: Any, api: Any) -> None:  # noqa: F811
    account = make.account(wecom_userid=sim.corp.state.members[0].userid)
    db.commit()
    scope = [Scope("account", account.id)]
    sim.fault(path="message/send", errcode=81013, errmsg="user & party & tag all invalid", times=1)
    failed = reports.deliver_week(api=api, week=WEEK, agent_id=AGENT_ID, only=scope)
    assert failed.failed == [f"account:{account.id}"]
    row = db.scalars(select(WeeklyReport)).one()
    assert row.state == ReportState.failed and "81013" in row.error
    assert sim.control("GET", "app_messages")["messages"] == []
    assert reports.deliver_week(api=api, week=WEEK, agent_id=AGENT_ID, only=scope).sent == [f"account:{account.id}"]
    db.expire_all()
    assert db.scalars(select(WeeklyReport)).one().attempts == 2
    assert len(sim.control("GET", "app_messages")["messages"]) == 1


def test_the_simulator_answers_message_send_as_wecom_does(sim: Any, api: Any) -> None:  # noqa: F811
    from siyu.wecom.client import WecomApiError

    member = sim.corp.state.members[0].userid
    answer = api.send_textcard(agent_id=AGENT_ID, touser=[member, "ghost"], title="周报", description="净增 3",
                               url="http://127.0.0.1:8000/analytics/reports/weekly")
    assert answer["invaliduser"] == "ghost" and answer["msgid"]
    # the duplicate check: the same card again is answered, not delivered twice
    again = api.send_textcard(agent_id=AGENT_ID, touser=[member, "ghost"], title="周报", description="净增 3",
                              url="http://127.0.0.1:8000/analytics/reports/weekly")
    assert again["msgid"] == answer["msgid"]
    assert len(sim.control("GET", "app_messages")["messages"]) == 1
    try:
        api.send_textcard(agent_id=AGENT_ID, touser=["ghost"], title="周报", description="x", url="http://x")
    except WecomApiError as exc:
        assert exc.errcode == 81013
    else:
        raise AssertionError("81013 expected")
    long = api.send_textcard(agent_id=AGENT_ID, touser=[member], title="长" * 100, description="述" * 400,
                             url="http://127.0.0.1:8000/")
    kept = sim.control("GET", "app_messages")["messages"][-1]["content"]
    assert long["msgid"] and len(kept["title"].encode()) <= 128 and len(kept["description"].encode()) <= 512


def test_the_reports_are_due_from_monday_nine_local() -> None:
    assert reports.due_week(local(2026, 11, 30, 8, 59)) == date(2026, 11, 16)
    assert reports.due_week(local(2026, 11, 30, 9, 0)) == WEEK
    assert reports.due_week(local(2026, 12, 5, 18, 0)) == WEEK
