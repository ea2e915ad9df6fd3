"""Service reports: how busy, how fast, how often late, how much was automatic.

Figures are computed by the database over a time range (grouped counts and sums), so a
week with 170,000 messages costs a handful of aggregate queries, not a Python loop over
rows. Waiting time is measured from the customer's first message of an episode
(``Conversation.opened_at``) to the first reply, resolution from the same start to the
resolution.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func, select
from sqlalchemy.orm import Session

from siyu.core.settings import local_zone
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.inbox.models import Conversation, Direction, Message
from siyu.inbox.service import visible_conversations
from siyu.team import service as team_service

# First-response buckets, minutes: [0, 1), [1, 5), [5, 15), [15, 60), [60, ∞)
WAIT_BUCKETS = (1, 5, 15, 60)


@dataclass
class Row:
    """Figures of one agent or one account."""

    key: int | None
    label: str
    conversations: int = 0
    answered: int = 0
    resolved: int = 0
    first_response_minutes: float | None = None
    resolution_minutes: float | None = None
    breaches: int = 0


@dataclass
class Report:
    since: datetime
    until: datetime
    hours: list[str] = field(default_factory=list)
    inbound: list[int] = field(default_factory=list)
    human: list[int] = field(default_factory=list)
    automatic: list[int] = field(default_factory=list)
    waits: list[int] = field(default_factory=list)
    agents: list[Row] = field(default_factory=list)
    accounts: list[Row] = field(default_factory=list)
    breaches: int = 0

    @property
    def totals(self) -> dict[str, int]:
        return {"inbound": sum(self.inbound), "human": sum(self.human), "automatic": sum(self.automatic)}


def _minutes(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier) / 60.0
    return (func.julianday(later) - func.julianday(earlier)) * 1440.0


def _hour(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.to_char(func.date_trunc("hour", column), "YYYY-MM-DD HH24:00")
    return func.strftime("%Y-%m-%d %H:00", column)


def build(session: Session, *, viewer: Viewer, since: datetime, until: datetime,
          account_id: int | None = None) -> Report:
    dialect = session.get_bind().dialect.name
    scope = visible_conversations(viewer)
    where: list[Any] = [] if scope is None else [scope]
    if account_id is not None:
        where.append(Conversation.account_id == account_id)
    report = Report(since=since, until=until)

    # Messages per hour (UTC buckets, labelled in local time).
    hour = _hour(Message.sent_at, dialect)
    rows = session.execute(
        select(hour, func.count().filter(Message.direction == Direction.inbound.value),
               func.count().filter(Message.direction == Direction.outbound.value, Message.automatic.is_(False),
                                   Message.internal.is_(False)),
               func.count().filter(Message.direction == Direction.outbound.value, Message.automatic.is_(True)))
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.sent_at >= since, Message.sent_at < until, *where).group_by(hour).order_by(hour)).all()
    zone = local_zone()
    counted = {r[0]: r[1:] for r in rows}
    cursor = since.replace(minute=0, second=0, microsecond=0)
    while cursor < until and len(report.hours) < 24 * 62:
        key = cursor.strftime("%Y-%m-%d %H:00")
        inbound, human, automatic = counted.get(key, (0, 0, 0))
        report.hours.append(cursor.astimezone(zone).strftime("%m-%d %H:00"))
        report.inbound.append(int(inbound))
        report.human.append(int(human))
        report.automatic.append(int(automatic))
        cursor += timedelta(hours=1)

    opened = [Conversation.opened_at >= since, Conversation.opened_at < until, *where]
    wait = _minutes(Conversation.first_response_at, Conversation.opened_at, dialect)
    bucket = case(*[(wait < limit, i) for i, limit in enumerate(WAIT_BUCKETS)], else_=len(WAIT_BUCKETS))
    waits: dict[int, int] = {int(b): int(n) for b, n in session.execute(select(bucket, func.count()).where(
        *opened, Conversation.first_response_at.is_not(None)).group_by(bucket))}
    report.waits = [int(waits.get(i, 0)) for i in range(len(WAIT_BUCKETS) + 1)]

    resolution = _minutes(Conversation.resolved_at, Conversation.opened_at, dialect)
    figures = (
        func.count(), func.count(Conversation.first_response_at), func.count(Conversation.resolved_at),
        func.avg(cast(wait, Float)), func.avg(cast(resolution, Float)), func.count(Conversation.sla_alerted_at),
    )
    for column, target in ((Conversation.assignee_id, report.agents), (Conversation.account_id, report.accounts)):
        for key, total, answered, resolved, first, resolve, breaches in session.execute(
                select(column, *figures).where(*opened).group_by(column)):
            target.append(Row(key=key, label="", conversations=int(total), answered=int(answered),
                              resolved=int(resolved), first_response_minutes=_round(first),
                              resolution_minutes=_round(resolve), breaches=int(breaches)))
    names = team_service.display_names(session, user_ids=[r.key for r in report.agents])
    accounts = customers_service.account_names(session)
    for row in report.agents:
        row.label = names.get(row.key or 0, "") if row.key else ""
    for row in report.accounts:
        row.label = accounts.get(row.key or 0, "")
    report.agents.sort(key=lambda r: -r.conversations)
    report.accounts.sort(key=lambda r: -r.conversations)
    report.breaches = sum(r.breaches for r in report.accounts)
    return report


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def to_csv(report: Report, *, labels: dict[str, str]) -> str:
    """Per-agent and per-account figures, then messages per hour; UTF-8 with BOM for Excel."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    figures = [labels["conversations"], labels["answered"], labels["resolved"], labels["first_response"],
               labels["resolution"], labels["breaches"]]
    for title, rows, who in ((labels["agents"], report.agents, labels.get("agent", labels["who"])),
                             (labels["accounts"], report.accounts, labels.get("account", labels["who"]))):
        writer.writerow([title])
        writer.writerow([who, *figures])
        for row in rows:
            writer.writerow([neutralise(row.label or labels["unassigned"]), row.conversations, row.answered,
                             row.resolved, row.first_response_minutes if row.first_response_minutes is not None
                             else "", row.resolution_minutes if row.resolution_minutes is not None else "",
                             row.breaches])
        writer.writerow([])
    writer.writerow([labels["hour"], labels["inbound"], labels["human"], labels["automatic"]])
    for values in zip(report.hours, report.inbound, report.human, report.automatic, strict=True):
        writer.writerow(values)
    return out.getvalue()
