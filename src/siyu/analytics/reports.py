"""Weekly reports: one per scope (the company, each account, each operator) and local week (Monday
first), its numbers read from the metrics catalogue (``metrics.series``, weekly buckets: this week
beside the one before), shown as a page fit to print on A4 and sent to its owner as a WeCom app
message (``message/send``, W:90236): a text card that opens the page.

Whose report: an operator's goes to the WeCom members of their accounts, an account's to that
account's own member, the company's to the members of the admins' and planners' accounts. A scope
with none is recorded as ``no_owner`` (nothing sent, nothing lost).

Idempotent per (scope, week): a ``weekly_report`` row is claimed (unique on scope and week) and
committed before WeCom is called — no database lock is held across the call — then marked sent or
failed. A failed or interrupted one is tried again by the next run (at most ``MAX_ATTEMPTS`` times);
the card is sent with WeCom's duplicate check on, so a resend after a lost answer is delivered once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.analytics import metrics
from siyu.analytics.models import ReportState, WeeklyReport
from siyu.analytics.service import STAGES, Scope, check_scope, week_start
from siyu.core.db import transaction, utcnow
from siyu.core.errors import Invalid
from siyu.core.i18n import _
from siyu.core.settings import get_settings, local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.team.models import Role, User, UserAccount
from siyu.wecom.client import WecomApiError

log = logging.getLogger(__name__)

SCOPE_KINDS = ("company", "account", "operator")
SEND_WEEKDAY = 0  # Monday …
SEND_TIME = time(9, 0)  # … 09:00 local (Asia/Shanghai): the report of the week that just ended
MAX_ATTEMPTS = 3
# The report's rows: flows summed over the week, then the ladder at the week's end.
FLOWS = ("net_adds", "adds", "deletions", "customers_added", "touches", "private_chats", "revenue",
         "tasks_due", "tasks_done", "wecom_chat_cnt", "wecom_message_cnt", "wecom_new_contact_cnt",
         "wecom_negative_feedback_cnt")
HEADLINE = ("net_adds", "private_chats", "revenue", "tasks_done")


@dataclass
class Row:
    metric: str
    label: str
    unit: str
    value: float | int
    before: float | int

    @property
    def change(self) -> float | int:
        return round(self.value - self.before, 2) if isinstance(self.value, float) else self.value - self.before


@dataclass
class Report:
    scope: Scope
    label: str
    week: date
    flows: list[Row] = field(default_factory=list)
    ladder: list[Row] = field(default_factory=list)

    @property
    def until(self) -> date:
        return self.week + timedelta(days=6)

    @property
    def empty(self) -> bool:
        return not any(r.value or r.before for r in self.flows + self.ladder)


def parse_week(text: str | None, *, today: date) -> date:
    """The Monday of the week ``text`` (any day in it) falls in; default: last week."""
    if not text:
        return week_start(today) - timedelta(weeks=1)
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise Invalid("Not a date: {value}", field="week", value=text[:20]) from exc
    return week_start(day)


def scope_label(session: Session, scope: Scope) -> str:
    if scope.kind == "account":
        account = session.get(Account, scope.id)
        return account.display_name if account else scope.key
    if scope.kind == "operator":
        user = session.get(User, scope.id)
        return (user.display_name or user.username) if user else scope.key
    return _("Whole company")


def build(session: Session, *, viewer: Viewer, scope: Scope, week: date) -> Report:
    """The report of ``scope`` for the week starting Monday ``week``, as ``viewer`` may see it."""
    if scope.kind not in SCOPE_KINDS:
        raise Invalid("A weekly report is for the company, an account or an operator", field="scope")
    check_scope(session, scope=scope, viewer=viewer)
    report = Report(scope=scope, label=scope_label(session, scope), week=week)
    since, until = week - timedelta(weeks=1), week + timedelta(days=6)
    for name in FLOWS:
        before, value = _two_weeks(session, viewer=viewer, name=name, scope=scope, since=since, until=until)
        metric = metrics.CATALOGUE[name]
        report.flows.append(Row(metric=name, label=_(metric.label), unit=metric.unit, value=value, before=before))
    for stage in STAGES:
        name = f"ladder_{stage}"
        before, value = _two_weeks(session, viewer=viewer, name=name, scope=scope, since=since, until=until)
        report.ladder.append(Row(metric=name, label=_(f"stage.{stage}"), unit="count", value=value, before=before))
    return report


def _two_weeks(session: Session, *, viewer: Viewer, name: str, scope: Scope, since: date,
               until: date) -> tuple[float | int, float | int]:
    """The week before and the week itself (a series without data has no points: both zero)."""
    found = metrics.series(session, viewer=viewer, name=name, scope=scope, since=since, until=until,
                           interval="week")
    values = {p.at: p.value for p in found.points}
    return values.get(since, 0), values.get(since + timedelta(weeks=1), 0)


def path(scope: Scope, week: date) -> str:
    return f"/analytics/reports/weekly?scope={scope.key}&week={week.isoformat()}"


def card(report: Report) -> tuple[str, str]:
    """The text card's title and description (WeCom cuts them at 128 and 512 bytes; the client cuts first)."""
    title = _("Weekly report · {scope} · {since} – {until}", scope=report.label, since=report.week.isoformat(),
              until=report.until.strftime("%m-%d"))
    rows = {r.metric: r for r in report.flows}
    parts = [f"{rows[m].label} {number(rows[m].value)}（{signed(rows[m].change)}）" for m in HEADLINE if m in rows]
    ladder = " · ".join(f"{r.label} {number(r.value)}" for r in report.ladder)
    description = (f'<div class="gray">{report.week.isoformat()} – {report.until.isoformat()}</div>'
                   f'<div class="normal">{"，".join(parts)}</div><div class="highlight">{ladder}</div>')
    return title, description


def number(value: float | int) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"


def signed(value: float | int) -> str:
    return ("+" if value > 0 else "") + number(value)


# ---------------------------------------------------------------- who gets it


def owner(session: Session, scope: Scope) -> tuple[int | None, list[str]]:
    """The user the report belongs to and the WeCom members (userids) it is sent to."""
    linked = (select(UserAccount.user_id, Account.wecom_userid).join(Account, Account.id == UserAccount.account_id)
              .join(User, User.id == UserAccount.user_id)
              .where(Account.wecom_userid.is_not(None), Account.wecom_userid != "", User.is_active.is_(True)))
    if scope.kind == "account":
        account = session.get(Account, scope.id)
        user_id = session.scalar(select(UserAccount.user_id).where(UserAccount.account_id == scope.id)
                                 .order_by(UserAccount.user_id).limit(1))
        return user_id, [account.wecom_userid] if account is not None and account.wecom_userid else []
    if scope.kind == "operator":
        rows = session.execute(linked.where(UserAccount.user_id == scope.id)).all()
        return scope.id, sorted({str(userid) for _user, userid in rows})
    rows = session.execute(linked.where(User.role.in_((Role.admin.value, Role.planner.value)))).all()
    admin = session.scalar(select(User.id).where(User.role == Role.admin.value, User.is_active.is_(True))
                           .order_by(User.id).limit(1))
    return admin, sorted({str(userid) for _user, userid in rows})


def scopes(session: Session) -> list[Scope]:
    """Every scope that gets a weekly report: the company, each WeCom account, each active operator."""
    found = [Scope()]
    found += [Scope("account", aid) for aid in session.scalars(
        select(Account.id).where(Account.wecom_userid.is_not(None), Account.wecom_userid != "").order_by(Account.id))]
    found += [Scope("operator", uid) for uid in session.scalars(
        select(User.id).where(User.role == Role.operator.value, User.is_active.is_(True)).order_by(User.id))]
    return found


# ---------------------------------------------------------------- delivery


def due_week(now: datetime) -> date:
    """The week whose reports are due at ``now``: last week, from Monday 09:00 local on."""
    local = now.astimezone(local_zone())
    monday = week_start(local.date())
    if local.date() == monday and local.time() < SEND_TIME:
        return monday - timedelta(weeks=2)  # this Monday before nine: the week before last is still the latest
    return monday - timedelta(weeks=1)


def pending(session: Session, week: date) -> bool:
    """Whether some scope's report of ``week`` is still to be sent (or to be tried again)."""
    done = set(session.scalars(select(WeeklyReport.scope).where(
        WeeklyReport.week == week, (WeeklyReport.state.in_((ReportState.sent, ReportState.no_owner)))
        | (WeeklyReport.attempts >= MAX_ATTEMPTS))))
    return any(scope.key not in done for scope in scopes(session))


@dataclass
class Delivery:
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # sent before: nothing done
    failed: list[str] = field(default_factory=list)
    no_owner: list[str] = field(default_factory=list)


def deliver_week(*, api: Any, week: date, agent_id: int | None,
                 only: list[Scope] | None = None) -> Delivery:
    """Send each scope's report of ``week`` once; each in transactions of its own, none across a call."""
    result = Delivery()
    with transaction() as session:
        wanted = only if only is not None else scopes(session)
    for scope in wanted:
        outcome = _deliver_one(api=api, scope=scope, week=week, agent_id=agent_id)
        getattr(result, outcome).append(scope.key)
    return result


def _deliver_one(*, api: Any, scope: Scope, week: date, agent_id: int | None) -> str:
    # 1. Read: sent before? to whom? the numbers (no write, so no lock while the report is computed).
    with transaction() as session:
        row = session.scalar(select(WeeklyReport).where(WeeklyReport.scope == scope.key, WeeklyReport.week == week))
        if row is not None and (row.state in (ReportState.sent, ReportState.no_owner) or row.attempts >= MAX_ATTEMPTS):
            return "skipped"
        owner_id, touser = owner(session, scope)
        title, description = card(build(session, viewer=SYSTEM, scope=scope, week=week)) if touser else ("", "")
    # 2. Claim (scope, week): the unique row says it is ours to send, committed before WeCom is called.
    with transaction() as session:
        row = session.scalar(select(WeeklyReport).where(WeeklyReport.scope == scope.key, WeeklyReport.week == week))
        if row is None:
            row = WeeklyReport(scope=scope.key, week=week)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # another run claimed it a moment ago
                session.rollback()
                return "skipped"
        elif row.state == ReportState.sent:
            return "skipped"
        row.owner_id, row.touser = owner_id, "|".join(touser)[:64]
        row.attempts += 1
        if not touser:
            row.state, row.error = ReportState.no_owner, ""
            return "no_owner"
        if agent_id is None:
            row.state, row.error = ReportState.failed, "SIYU_WECOM_AGENT_ID is not set"
            return "failed"
        row.state = ReportState.sending
        session.flush()
        report_id = row.id
    # 3. The call, outside any transaction.
    url = get_settings().public_url.rstrip("/") + path(scope, week)
    try:
        answer = api.send_textcard(agent_id=agent_id, touser=touser, title=title, description=description, url=url,
                                   btntxt=_("Open"))
    except (WecomApiError, ValueError) as exc:  # recorded on the row; the next run tries again
        log.warning("weekly report %s %s not sent: %s", scope.key, week, exc)
        with transaction() as session:
            failed = session.get(WeeklyReport, report_id)
            if failed is not None:
                failed.state, failed.error = ReportState.failed, str(exc)[:500]
        return "failed"
    # 4. Sent.
    with transaction() as session:
        sent = session.get(WeeklyReport, report_id)
        if sent is not None:
            unreached = str(answer.get("invaliduser") or "")
            sent.state, sent.msgid, sent.sent_at = ReportState.sent, str(answer.get("msgid") or ""), utcnow()
            sent.error = f"invaliduser: {unreached}"[:500] if unreached else ""
    return "sent"
