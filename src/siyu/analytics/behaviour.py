"""WeCom's 联系客户统计 per member (``externalcontact/get_user_behavior_data``, W:96358), stored per day.

The platform sums the figures of all userids in one call, so each member is asked alone — one
call per WeCom account per run. It keeps 180 days and answers at most 30 days per call; the daily
job asks for the last ``DAILY_LOOKBACK_DAYS`` days so a missed night is filled in on the next. A
member WeCom does not know (left the corp, a typo'd userid: errcode 60111) is stored as such for
the day and the run goes on; other refusals are stored with their errcode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind, AccountStatus
from siyu.analytics.models import BehaviourState, MemberBehaviour
from siyu.analytics.service import day_start
from siyu.core.db import utcnow
from siyu.core.settings import local_today, local_zone
from siyu.wecom.client import BEHAVIOUR_KEPT_DAYS, BEHAVIOUR_SPAN_DAYS, WecomApi, WecomApiError
from siyu.wecom.connector import MEMBER_GONE

DAILY_LOOKBACK_DAYS = 3
FIELDS = ("chat_cnt", "message_cnt", "reply_percentage", "avg_reply_time", "negative_feedback_cnt",
          "new_apply_cnt", "new_contact_cnt")


@dataclass
class FetchResult:
    members: int = 0
    days: int = 0
    unknown: list[str] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)


def wecom_accounts(session: Session) -> list[Account]:
    return list(session.scalars(select(Account).where(
        Account.kind == AccountKind.wecom.value, Account.wecom_userid.is_not(None),
        Account.status == AccountStatus.active.value).order_by(Account.id)))


def fetch(session: Session, *, api: WecomApi, since: date, until: date, today: date | None = None) -> FetchResult:
    """Fetch and store every active WeCom member's days in [since, until], one member per call."""
    today = today or local_today()
    oldest = today - timedelta(days=BEHAVIOUR_KEPT_DAYS)
    since = max(since, oldest)
    if until < since:
        return FetchResult()
    if (until - since).days + 1 > BEHAVIOUR_SPAN_DAYS:
        since = until - timedelta(days=BEHAVIOUR_SPAN_DAYS - 1)
    result = FetchResult()
    start, end = int(day_start(since).timestamp()), int(day_start(until).timestamp())
    for account in wecom_accounts(session):
        userid = account.wecom_userid or ""
        result.members += 1
        try:
            rows = api.member_behaviour(userid, start_time=start, end_time=end)
        except WecomApiError as exc:
            if exc.errcode is None or exc.retryable:
                raise  # unreachable or busy: the job is retried later
            state = BehaviourState.unknown_member if exc.errcode in MEMBER_GONE else BehaviourState.failed
            (result.unknown.append(userid) if state == BehaviourState.unknown_member
             else result.failed.__setitem__(userid, exc.errcode))
            _store(session, account.id, {d: {} for d in _days(since, until)}, state=state, errcode=exc.errcode)
            continue
        by_day = {datetime.fromtimestamp(int(row.get("stat_time", 0)), local_zone()).date(): row for row in rows}
        _store(session, account.id, {d: by_day.get(d, {}) for d in _days(since, until)})
        result.days += len(by_day)
    return result


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def _store(session: Session, account_id: int, days: dict[date, dict[str, Any]], *,
           state: str = BehaviourState.ok, errcode: int = 0) -> None:
    """Replace the account's rows of these days (a re-fetch corrects WeCom's late figures)."""
    session.execute(delete(MemberBehaviour).where(MemberBehaviour.account_id == account_id,
                                                  MemberBehaviour.day.in_(sorted(days))))
    now = utcnow()
    for day, row in sorted(days.items()):
        values = {key: row.get(key) for key in FIELDS}
        session.add(MemberBehaviour(
            account_id=account_id, day=day, state=state, errcode=errcode, fetched_at=now,
            chat_cnt=int(values["chat_cnt"] or 0), message_cnt=int(values["message_cnt"] or 0),
            reply_percentage=float(values["reply_percentage"]) if values["reply_percentage"] is not None else None,
            avg_reply_time=int(values["avg_reply_time"]) if values["avg_reply_time"] is not None else None,
            negative_feedback_cnt=int(values["negative_feedback_cnt"] or 0),
            new_apply_cnt=int(values["new_apply_cnt"] or 0), new_contact_cnt=int(values["new_contact_cnt"] or 0)))
    session.flush()


def fetch_recent(session: Session, *, api: WecomApi, today: date | None = None) -> FetchResult:
    today = today or local_today()
    return fetch(session, api=api, since=today - timedelta(days=DAILY_LOOKBACK_DAYS), until=today - timedelta(days=1),
                 today=today)
