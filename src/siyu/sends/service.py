"""The send-quota ledger's rules: how many corp mass messages a recipient may still get, reserve, release.

Why a reservation and not a check: two sends planned at the same moment (an SOP step and a campaign)
must not both take a customer's last message of the month. ``reserve`` first bumps the settings
row (a row lock on PostgreSQL, the write lock on SQLite), so reservations queue one behind the
other until their transactions end; then it counts every recipient's period with one aggregate
read (the whole id list travels as one bound parameter, ``core.db.among``) and writes the allowed
recipients' rows with one executemany INSERT — 10,000 recipients are three statements, no query
per recipient. The caller commits the reservation with the send it records, or releases it
(``release``) when the send is cancelled or fails before WeCom created it.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Date, String, Table, bindparam, func, insert, literal, null, select, update
from sqlalchemy.orm import Session

from siyu.core.db import UTCDateTime, among, integers_of, utcnow
from siyu.core.errors import NotFound
from siyu.core.i18n import _
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.sends.models import (
    DAY_LIMIT,
    WEEK_LIMIT,
    QuotaMode,
    SendLedgerEntry,
    SendSettings,
    SendSource,
    TargetKind,
)

INSERT_BATCH = 2000


@dataclass
class Reservation:
    """Who may be sent to (their ledger rows written) and who not, with the reason in the viewer's words."""

    allowed: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive
    limit: int


def get_settings_row(session: Session) -> SendSettings:
    row = session.scalar(select(SendSettings).order_by(SendSettings.id).limit(1))
    if row is None:
        row = SendSettings(quota_mode=QuotaMode.month.value, lock_seq=0)
        session.add(row)
        session.flush()
    return row


def set_quota_mode(session: Session, *, mode: QuotaMode, viewer: Viewer) -> SendSettings:
    """The corp's rule as its admin set it in WeCom (admins only; 404 for others, as for any admin object)."""
    if not viewer.is_admin:
        raise NotFound("Not found")
    from siyu.team.service import record_audit

    row = get_settings_row(session)
    before = row.quota_mode
    row.quota_mode = mode.value
    record_audit(session, actor=viewer, action="update", entity_type="send_settings", entity_id=row.id,
                 before={"quota_mode": before}, after={"quota_mode": mode.value})
    session.flush()
    return row


def local_day(at: datetime) -> date:
    return at.astimezone(local_zone()).date()


def period_of(mode: QuotaMode | str, day: date) -> Period:
    """The counting period holding ``day`` and its limit under the corp's rule."""
    mode = QuotaMode(mode)
    if mode is QuotaMode.day:
        return Period(day, day, DAY_LIMIT)
    if mode is QuotaMode.week:
        start = day - timedelta(days=day.weekday())
        return Period(start, start + timedelta(days=6), WEEK_LIMIT)
    days = calendar.monthrange(day.year, day.month)[1]  # W:92135: as many a month as the month has days
    return Period(day.replace(day=1), day.replace(day=days), days)


def _over_reason(mode: QuotaMode, used: int, limit: int) -> str:
    if mode is QuotaMode.day:
        return _("Over the send quota: already got {used} of {limit} corp mass message today", used=used,
                 limit=limit)
    if mode is QuotaMode.week:
        return _("Over the send quota: already got {used} of {limit} corp mass messages this week", used=used,
                 limit=limit)
    return _("Over the send quota: already got {used} of {limit} corp mass messages this month", used=used,
             limit=limit)


def used_counts(session: Session, target_ids: Iterable[int], *, at: datetime,
                target: TargetKind = TargetKind.customer) -> dict[int, int]:
    """How many corp mass messages each recipient has in the period holding ``at`` (missing: none)."""
    ids = sorted(set(target_ids))
    if not ids:
        return {}
    period = period_of(get_settings_row(session).quota_mode, local_day(at))
    return _counts(session, ids, period, target)


def _counts(session: Session, ids: Sequence[int], period: Period, target: TargetKind, *,
            full_only: bool = False) -> dict[int, int]:
    """Each recipient's count in the period (one aggregate over the id list); ``full_only``: only those at
    the limit already — the few a quota check refuses, so a 200,000-id check reads back thousands of rows."""
    ledger = SendLedgerEntry
    query = (select(ledger.target_id, func.count())
             .where(ledger.target_kind == target.value, among(session, ledger.target_id, ids),
                    ledger.day >= period.start, ledger.day <= period.end, ledger.released_at.is_(None))
             .group_by(ledger.target_id))
    if full_only:
        query = query.having(func.count() >= period.limit)
    return {int(t): int(n) for t, n in session.execute(query)}


def reserve(session: Session, target_ids: Sequence[int], at: datetime, *, source: SendSource, ref: str,
            target: TargetKind = TargetKind.customer, lock: bool = True) -> Reservation:
    """Reserve one corp mass message for each recipient that has room in the period holding ``at``.

    Set-based: one lock, one count, one batched INSERT. The rows are in the caller's transaction:
    they count for everyone once it commits, and vanish with it when it rolls back. ``lock=False``
    skips the ledger's lock (two reservations at the same instant may then both take a recipient's
    last message, which WeCom reports afterwards as before).
    """
    if lock and target_ids:
        settings = get_settings_row(session)
        session.execute(update(SendSettings).where(SendSettings.id == settings.id)
                        .values(lock_seq=SendSettings.lock_seq + 1))  # the ledger's lock, held to the commit
    result = check(session, target_ids, at, target=target)
    record(session, result.allowed, at, source=source, ref=ref, target=target)
    return result


@dataclass
class EachReservation:
    """Per send (its ``ref``): reserved, or refused with the reason in the viewer's words."""

    allowed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def reserve_each(session: Session, items: Sequence[tuple[int, str]], at: datetime, *, source: SendSource,
                 target: TargetKind = TargetKind.customer) -> EachReservation:
    """Reserve one message per (recipient, ref) — many one-recipient sends at once (SOP steps): one lock,
    one count, one batched INSERT. Two sends to one recipient in the list count one after the other."""
    result = EachReservation()
    if not items:
        return result
    settings = get_settings_row(session)
    session.execute(update(SendSettings).where(SendSettings.id == settings.id)
                    .values(lock_seq=SendSettings.lock_seq + 1))  # the ledger's lock, held to the commit
    mode = QuotaMode(settings.quota_mode)
    period = period_of(mode, local_day(at))
    used = _counts(session, sorted({int(t) for t, _ref in items}), period, target)
    day, now = local_day(at), utcnow()
    rows = []
    for target_id, ref in items:
        count = used.get(int(target_id), 0)
        if count >= period.limit:
            result.refused[ref] = _over_reason(mode, count, period.limit)
            continue
        used[int(target_id)] = count + 1
        result.allowed.append(ref)
        rows.append({"target_kind": target.value, "target_id": int(target_id), "day": day, "source": source.value,
                     "ref": ref[:64], "released_at": None, "created_at": now})
    table = cast(Table, SendLedgerEntry.__table__)
    for start in range(0, len(rows), INSERT_BATCH):
        session.execute(insert(table), rows[start:start + INSERT_BATCH])
    return result


def release_each(session: Session, *, source: SendSource, refs: Sequence[str],
                 target: TargetKind = TargetKind.customer) -> int:
    """Give back the reservations of these sends (``reserve_each``'s refs); how many."""
    wanted = sorted({ref[:64] for ref in refs})
    if not wanted:
        return 0
    ledger = SendLedgerEntry
    result = session.execute(
        update(ledger).where(ledger.source == source.value, among(session, ledger.ref, wanted),
                             ledger.target_kind == target.value, ledger.released_at.is_(None))
        .values(released_at=utcnow()), execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0)


def check(session: Session, target_ids: Sequence[int], at: datetime, *,
          target: TargetKind = TargetKind.customer) -> Reservation:
    """Who has room for one more corp mass message in the period holding ``at`` — read only, nothing kept.

    For a caller that must not hold a write lock across its call to WeCom (the inbox's one-customer
    replies): ``check`` before the call, ``record`` in the same transaction once WeCom created the send.
    """
    ids = list(dict.fromkeys(int(i) for i in target_ids))
    result = Reservation()
    if not ids:
        return result
    # Read only: no settings row yet means WeCom's default (the row is made by the first reserve or setting).
    saved = session.scalar(select(SendSettings.quota_mode).order_by(SendSettings.id).limit(1))
    mode = QuotaMode(saved or QuotaMode.month.value)
    period = period_of(mode, local_day(at))
    full = _counts(session, ids, period, target, full_only=True)
    reasons: dict[int, str] = {}
    for target_id in ids:
        count = full.get(target_id)
        if count is None:
            result.allowed.append(target_id)
        else:
            if count not in reasons:
                reasons[count] = _over_reason(mode, count, period.limit)
            result.refused[target_id] = reasons[count]
    return result


def record(session: Session, target_ids: Sequence[int], at: datetime, *, source: SendSource, ref: str,
           target: TargetKind = TargetKind.customer) -> int:
    """Count one corp mass message for each of these recipients, in the caller's transaction: a few rows as
    one batched INSERT; many as one ``INSERT … SELECT`` over the id list (200,000 rows without per-row
    parameter handling, which costs more than the insert itself)."""
    ids = sorted({int(i) for i in target_ids})  # in the index's order: one pass through it, not one per group
    day, now = local_day(at), utcnow()
    table = cast(Table, SendLedgerEntry.__table__)
    if len(ids) > INSERT_BATCH:
        source_ids = integers_of(session, ids)
        session.execute(insert(table).from_select(
            ["target_kind", "target_id", "day", "source", "ref", "released_at", "created_at"],
            select(literal(target.value, String()), source_ids.c.value, literal(day, Date()),
                   literal(source.value, String()), literal(ref[:64], String()), null(),
                   literal(now, UTCDateTime()))))
        return len(ids)
    rows = [{"target_kind": target.value, "target_id": t, "day": day, "source": source.value, "ref": ref[:64],
             "released_at": None, "created_at": now} for t in ids]
    if rows:
        session.execute(insert(table), rows)
    return len(rows)


def release(session: Session, *, source: SendSource, ref: str, target_ids: Sequence[int] | None = None,
            target: TargetKind = TargetKind.customer) -> int:
    """Give back the reservations of a send cancelled or failed before WeCom created it; how many."""
    ledger = SendLedgerEntry
    query = (update(ledger).where(ledger.source == source.value, ledger.ref == ref[:64],
                                  ledger.target_kind == target.value, ledger.released_at.is_(None))
             .values(released_at=utcnow()))
    if target_ids is not None:
        ids = sorted(set(target_ids))
        if not ids:
            return 0
        query = query.where(among(session, ledger.target_id, ids))
    result = session.execute(query, execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0)


# ---------------------------------------------------------------- customers merged


def repoint_customers(session: Session, *, source_ids: list[int], target_id: int) -> list[list[int]]:
    """A merge: the sources' messages were received by the same person, so they count for the kept customer.

    Returns [[entry id, former customer id]] for the merge record (what an undo puts back)."""
    ledger = SendLedgerEntry
    moved = [[int(i), int(c)] for i, c in session.execute(
        select(ledger.id, ledger.target_id).where(ledger.target_kind == TargetKind.customer.value,
                                                  ledger.target_id.in_(source_ids)))]
    if moved:
        session.execute(update(ledger).where(ledger.target_kind == TargetKind.customer.value,
                                             ledger.target_id.in_(source_ids)).values(target_id=target_id),
                        execution_options={"synchronize_session": False})
    return moved


def restore_customers(session: Session, *, moved: list[Any], target_id: int) -> None:
    """Undo of a merge: each moved entry back to its former customer."""
    table = cast(Table, SendLedgerEntry.__table__)
    pairs = [{"entry": int(entry_id), "customer": int(customer_id)} for entry_id, customer_id in moved]
    if pairs:
        session.connection().execute(
            update(table).where(table.c.id == bindparam("entry"), table.c.target_id == target_id)
            .values(target_id=bindparam("customer")), pairs)
