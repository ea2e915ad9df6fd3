"""The ladder over time: the funnel on any day for any scope or segment, weekly cohorts, time between
stages, stage flows and churn by stage — all read from ``stage_transition`` (see ``models``).

Why transitions and not daily snapshots: a million customers × 730 days of copies is 730 million
rows; the changes are a few million. "Stage on day D" is the row valid at the end of D
(``at < end <= until``), one range read; customers added before D without such a row are 流量.

Days are local days (``core.settings.local_zone``): "on 12-05" means up to local midnight, so a
change at 23:59 counts on that day and one at 00:01 on the next. Scope — company, one account, one
operator's customers, a saved segment — becomes WHERE conditions on ``customer`` through the customer
list's own filter (``customers.service._filter_clauses``, hence the one segment compiler), with the
viewer's visibility applied the same way: a scope the viewer may not see is NotFound, never zeros.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, case, cast, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from siyu.accounts.models import Account
from siyu.analytics import rollups
from siyu.analytics.models import RANK_STAGES, CustomerLadder, SegmentRollup, StageTransition
from siyu.core.db import utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, Friendship, FriendshipStatus
from siyu.segments.models import Segment
from siyu.team.models import User

STAGES = ("traffic", "user", "customer", "fan")
COHORT_DAYS = (7, 30, 90)
COHORT_WEEKS_MAX = 104
FLOW_NEW = "new"
NEW_CUSTOMERS_CHECKED = 5000  # more customers added since a segment's counts were kept: read live
MICROSECONDS_A_DAY = 86_400_000_000  # the Sankey's source for customers added during the period


class ScopeNotFound(NotFound):
    """A scope that does not exist, or that this viewer may not see (404, not zeros)."""


@dataclass(frozen=True)
class Scope:
    """Whose numbers: ``company``, ``account:<id>``, ``operator:<user id>`` or ``segment:<id>``."""

    kind: str = "company"
    id: int | None = None

    @property
    def key(self) -> str:
        return self.kind if self.id is None else f"{self.kind}:{self.id}"


def parse_scope(text: str | None) -> Scope:
    raw = (text or "company").strip()
    if raw == "company":
        return Scope()
    kind, _sep, ident = raw.partition(":")
    if kind not in ("account", "operator", "segment") or not ident.isdigit() or len(ident) > 12:
        raise Invalid("Unknown scope {scope}: use company, account:<id>, operator:<id> or segment:<id>",
                      field="scope", scope=raw[:40])
    return Scope(kind=kind, id=int(ident))


def check_scope(session: Session, *, scope: Scope, viewer: Viewer) -> None:
    """NotFound when the scope does not exist or the viewer may not see it."""
    if scope.kind == "account":
        if scope.id is None or session.get(Account, scope.id) is None or not viewer.can_see_account(scope.id):
            raise ScopeNotFound("Scope {scope} not found", scope=scope.key)
    elif scope.kind == "operator":
        user = session.get(User, scope.id) if scope.id is not None else None
        if user is None or (not viewer.sees_all_accounts and user.id != viewer.user_id):
            raise ScopeNotFound("Scope {scope} not found", scope=scope.key)
    elif scope.kind == "segment":
        from siyu.segments import service as segments_service

        try:
            segments_service.get_segment(session, segment_id=scope.id or 0, viewer=viewer)
        except NotFound as exc:
            raise ScopeNotFound("Scope {scope} not found", scope=scope.key) from exc


def customer_clauses(session: Session, *, scope: Scope, viewer: Viewer) -> list[ColumnElement[bool]]:
    """WHERE conditions on ``customer`` for this scope, as this viewer may see it (merged ones left out)."""
    return customer_filter(session, scope=scope, viewer=viewer)[0]


def customer_filter(session: Session, *, scope: Scope,
                    viewer: Viewer) -> tuple[list[ColumnElement[bool]], list[ColumnElement[bool]]]:
    """The scope's conditions, and a redundant one that reads its customers from the index of the
    filter's most selective part (a tag, an account, a static segment …: the customer list's drivers),
    so a scan of every customer is not needed to find a segment's."""
    check_scope(session, scope=scope, viewer=viewer)
    flt = customers_service.CustomerFilter()
    if scope.kind == "account":
        flt.account_id = scope.id
    elif scope.kind == "segment":
        flt.segment_id = scope.id
    try:
        clauses, drivers = customers_service._filter_parts(session, flt, viewer)
    except Invalid as exc:
        if scope.kind == "segment" and exc.field == "account_ids":  # its conditions name an account not theirs
            raise ScopeNotFound("Scope {scope} not found", scope=scope.key) from exc
        raise
    if scope.kind == "operator":
        clauses.append(Customer.owner_id == scope.id)
    indexed = [d for d in drivers if d.kind != "search"]
    if not indexed or _dialect(session) == "postgresql":  # PostgreSQL hashes the filter's semi-joins itself
        return clauses, []
    smallest = min(indexed, key=lambda d: customers_service._estimated_size(session, d))
    return clauses, [Customer.id.in_(smallest.customer_ids())]


# ---------------------------------------------------------------- time


def day_start(day: date) -> datetime:
    """Local midnight at the start of ``day``, in UTC."""
    return datetime.combine(day, time(0), tzinfo=local_zone()).astimezone(UTC)


def local_day(moment: datetime) -> date:
    return moment.astimezone(local_zone()).date()


def days_between(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    """SQL: ``later - earlier`` in (fractional) days."""
    if dialect == "postgresql":  # date_part: double precision (extract answers numeric, several times slower)
        return func.date_part("epoch", later - earlier) / 86400.0
    return func.julianday(later) - func.julianday(earlier)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _valid_at(alias: Any, moment: datetime) -> ColumnElement[bool]:
    return and_(alias.at < moment, or_(alias.until.is_(None), alias.until >= moment))


# ---------------------------------------------------------------- funnel


@dataclass
class Funnel:
    day: date
    current: dict[str, int]
    # A saved segment's kept counts (``segment_rollups``): its members and their stages as of then, not live.
    as_of: datetime | None = None
    # Read live because the segment changed since its counts were kept (or they were never kept): the
    # refresh its save enqueued (or the hourly job) is on its way.
    refreshing: bool = False

    @property
    def reached(self) -> dict[str, int]:
        """At this stage or higher (the funnel's widths)."""
        out: dict[str, int] = {}
        running = 0
        for stage in reversed(STAGES):
            running += self.current[stage]
            out[stage] = running
        return {stage: out[stage] for stage in STAGES}

    @property
    def total(self) -> int:
        return sum(self.current.values())


def funnel(session: Session, *, viewer: Viewer, day: date, scope: Scope | None = None) -> Funnel:
    """How many of the scope's customers stood on each stage at the end of local ``day``."""
    scope = scope or Scope()
    refreshing = False
    if scope.kind == "segment" and scope.id is not None and viewer.sees_all_accounts:
        check_scope(session, scope=scope, viewer=viewer)
        kept, refreshing = _kept_segment_funnel(session, scope.id, day)
        if kept is not None:
            return kept
    clauses, drivers = customer_filter(session, scope=scope, viewer=viewer)
    found = funnel_for(session, clauses=clauses, day=day, company=whole_company(scope, viewer), drivers=drivers)
    found.refreshing = refreshing
    return found


def _kept_segment_funnel(session: Session, segment_id: int, day: date) -> tuple[Funnel | None, bool]:
    """A saved segment's funnel from its kept counts (``segment_rollups``: refreshed when it is saved and every
    hour) as of ``computed_at``, and whether they are being computed; (None, …): read live.

    A date that ends after ``computed_at`` — today — is answered as of ``computed_at``: the members and
    their stages then (``Funnel.as_of``), nobody added or moved since. Read live instead: counts taken
    before the segment's last change (``refreshing``), older than ``SEGMENT_FRESH``, cleared by a merge,
    or missing a customer added since with an add date before the date or ``computed_at`` (an import
    may backdate)."""
    end = day_start(day + timedelta(days=1))
    state = session.get(SegmentRollup, segment_id)
    segment = session.get(Segment, segment_id)
    if segment is None:
        return None, False
    computed = rollups.as_utc(state.computed_at) if state is not None else None
    changed = rollups.as_utc(segment.updated_at)
    if state is None or (computed is not None and changed is not None and changed > computed):
        return None, True
    if computed is None or not rollups.exact_at(end) or utcnow() - computed > rollups.SEGMENT_FRESH:
        return None, False
    # Customers added since (by primary key; few): any added before the date — or, for today, before the
    # counts were taken — means the counts miss them. Those added after ``computed_at`` are after ``as_of``.
    upto = min(end, computed)
    added_since = [rollups.as_utc(created) for created in session.scalars(
        select(Customer.created_at).where(Customer.id > state.customer_watermark).order_by(Customer.id)
        .limit(NEW_CUSTOMERS_CHECKED + 1))]
    if len(added_since) > NEW_CUSTOMERS_CHECKED or any(c is not None and c < upto for c in added_since):
        return None, False
    counts = rollups.segment_counts_at(session, segment_id, end)  # after computed_at: every kept row counts
    current = {RANK_STAGES[rank]: counts.get(rank, 0) if rank else 0 for rank in range(len(STAGES))}
    current["traffic"] = max(counts[0] - sum(counts[rung] for rung in rollups.RUNGS), 0)
    return Funnel(day=day, current=current, as_of=computed), False


def whole_company(scope: Scope, viewer: Viewer) -> bool:
    """Every live customer, nobody left out: what the rollups count (``rollups``)."""
    return scope.kind == "company" and viewer.sees_all_accounts


def funnel_for(session: Session, *, clauses: list[ColumnElement[bool]], day: date, company: bool = False,
               drivers: list[ColumnElement[bool]] | None = None) -> Funnel:
    """``company``: the clauses are only "live customers", so the rungs come from the rollups."""
    drivers = drivers or []
    end = day_start(day + timedelta(days=1))
    t = StageTransition
    if company and rollups.exact_at(end):
        counts = {rank: n for rank, n in rollups.counts_at(session, end).items() if n}
    else:
        # The scope's customers read once, each with the one row valid at ``end`` (rows of a customer never
        # overlap: each is closed where the next begins) from the covering index (customer_id, at, until,
        # to_rank); no valid row: 流量 (-1 here). ``drivers``: read the customers from a filter's own index.
        rank = func.coalesce(t.to_rank, -1)
        found = {int(r): int(n) for r, n in session.execute(
            select(rank, func.count()).select_from(Customer)
            .outerjoin(t, and_(t.customer_id == Customer.id, _valid_at(t, end)))
            .where(Customer.created_at < end, *clauses, *drivers).group_by(rank))}
        added = sum(found.values())
        counts = {r: n for r, n in found.items() if r >= 0}
        current = {RANK_STAGES[r]: counts.get(r, 0) for r in range(len(STAGES))}
        current["traffic"] += found.get(-1, 0)
        return Funnel(day=day, current=current)
    added = int(session.scalar(select(func.count()).select_from(Customer)
                               .where(Customer.created_at < end, *clauses)) or 0)
    current = {RANK_STAGES[rank]: counts.get(rank, 0) for rank in range(len(STAGES))}
    current["traffic"] += max(added - sum(counts.values()), 0)  # added, never moved: the first rung
    return Funnel(day=day, current=current)


# ---------------------------------------------------------------- cohorts


@dataclass
class CohortRow:
    week: date  # the Monday the cohort's week starts (local)
    added: int
    # reached[stage][days] = customers of the week on that stage or higher within ``days`` of being added;
    # None while the window has not passed for the whole week.
    reached: dict[str, dict[int, int | None]] = field(default_factory=dict)

    def share(self, stage: str, days: int) -> float | None:
        value = self.reached[stage][days]
        return None if value is None or not self.added else round(value / self.added, 3)


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def cohorts(session: Session, *, viewer: Viewer, weeks: int, until: date, scope: Scope | None = None,
            now: datetime | None = None) -> list[CohortRow]:
    """Customers added in each of the ``weeks`` weeks up to ``until``'s week, newest first."""
    if not 1 <= weeks <= COHORT_WEEKS_MAX:
        raise Invalid("Weeks must be between 1 and {max}", field="weeks", max=COHORT_WEEKS_MAX)
    scope = scope or Scope()
    clauses, drivers = customer_filter(session, scope=scope, viewer=viewer)
    return cohorts_for(session, clauses=clauses + drivers, weeks=weeks, until=until, now=now,
                       company=whole_company(scope, viewer))


def cohorts_for(session: Session, *, clauses: list[ColumnElement[bool]], weeks: int, until: date,
                now: datetime | None = None, company: bool = False) -> list[CohortRow]:
    """``company``: the clauses are only "live customers", so the cells come from ``cohort_ladder_count``."""
    now = now or datetime.now(UTC)
    last_week = week_start(until)
    first_week = last_week - timedelta(weeks=weeks - 1)
    start, end = day_start(first_week), day_start(last_week + timedelta(weeks=1))
    bounds = [day_start(first_week + timedelta(weeks=i)) for i in range(weeks + 1)]
    if company and rollups.cohort_hours_exact(bounds):
        found = _cohorts_from_rollup(session, clauses=clauses, bounds=bounds)
    else:
        found = _cohorts_per_customer(session, clauses=clauses, start=start, end=end)
    out: list[CohortRow] = []
    for index in range(weeks - 1, -1, -1):
        monday = first_week + timedelta(weeks=index)
        values = found.get(index)
        row = CohortRow(week=monday, added=int(values[0]) if values else 0)
        complete_by = day_start(monday + timedelta(weeks=1))
        for position, stage in enumerate(STAGES[1:]):
            row.reached[stage] = {}
            for offset, days in enumerate(COHORT_DAYS):
                if complete_by + timedelta(days=days) > now:
                    row.reached[stage][days] = None
                else:
                    row.reached[stage][days] = int(values[1 + position * len(COHORT_DAYS) + offset]) if values else 0
        out.append(row)
    return out


def _cohorts_from_rollup(session: Session, *, clauses: list[ColumnElement[bool]],
                         bounds: list[datetime]) -> dict[int, tuple[int, ...]]:
    """Each week's size (a range count over the live customers' add dates, index only) and its cells from
    ``cohort_ladder_count`` (sums over its hours): no customer row read."""
    sizes = session.execute(select(*[
        select(func.count()).select_from(Customer)
        .where(Customer.created_at >= low, Customer.created_at < high, *clauses).scalar_subquery()
        for low, high in itertools.pairwise(bounds)])).one()
    cells = rollups.cohort_cells(session, bounds[0], len(bounds) - 1)
    return {index: (int(size), *[cells.get((index, rung, days), 0) for rung in rollups.RUNGS for days in COHORT_DAYS])
            for index, size in enumerate(sizes) if size}


def _cohorts_per_customer(session: Session, *, clauses: list[ColumnElement[bool]], start: datetime,
                          end: datetime) -> dict[int, tuple[Any, ...]]:
    dialect = _dialect(session)
    ladder = CustomerLadder
    weeks_in = days_between(Customer.created_at, literal(start), dialect) / 7.0
    week = func.floor(weeks_in) if dialect == "postgresql" else cast(weeks_in, Integer)  # >= 0: truncation floors
    # One row per customer: their first time on each rung or higher (``rollups``), not all their transitions.
    cells = [func.count().filter(column <= days * MICROSECONDS_A_DAY)
             for column in (ladder.user_lag_us, ladder.customer_lag_us, ladder.fan_lag_us) for days in COHORT_DAYS]
    return {int(row[0]): tuple(row[1:]) for row in session.execute(
        select(week, func.count(), *cells).select_from(Customer)
        .outerjoin(ladder, ladder.customer_id == Customer.id)
        .where(Customer.created_at >= start, Customer.created_at < end, *clauses).group_by(week))}


# ---------------------------------------------------------------- time between stages


@dataclass
class StepTime:
    from_stage: str
    to_stage: str
    customers: int
    median_days: float | None


def stage_times(session: Session, *, viewer: Viewer, since: date, until: date,
                scope: Scope | None = None) -> list[StepTime]:
    """Median days from reaching one stage to reaching the next, for steps taken during the period.

    A step's start is the first time the customer stood on the lower stage or higher (their add date
    for 流量); only customers who first reached the higher stage within [since, until] count.
    """
    _check_period(since, until)
    clauses = customer_clauses(session, scope=scope or Scope(), viewer=viewer)
    start, end = day_start(since), day_start(until + timedelta(days=1))
    dialect = _dialect(session)
    t = StageTransition
    lag = days_between(t.at, Customer.created_at, dialect)
    moved = select(t.customer_id).where(t.at >= start, t.at < end, t.from_rank.is_not(None))
    rows = session.execute(
        select(*[func.min(case((t.to_rank >= rank, lag))) for rank in (1, 2, 3)],
               *[func.min(case((t.to_rank >= rank, t.at))) for rank in (1, 2, 3)])
        .select_from(Customer).join(t, t.customer_id == Customer.id)
        .where(Customer.id.in_(moved), *clauses).group_by(Customer.id)).all()
    durations: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for row in rows:
        lags, ats = list(row[:3]), [_as_utc(v) for v in row[3:]]
        for rank in (1, 2, 3):
            reached_at = ats[rank - 1]
            if reached_at is None or not start <= reached_at < end:
                continue
            before = 0.0 if rank == 1 else lags[rank - 2]
            if before is None:
                continue
            durations[rank].append(max(float(lags[rank - 1]) - float(before), 0.0))
    return [StepTime(from_stage=STAGES[rank - 1], to_stage=STAGES[rank], customers=len(durations[rank]),
                     median_days=round(statistics.median(durations[rank]), 1) if durations[rank] else None)
            for rank in (1, 2, 3)]


_as_utc = rollups.as_utc


def _check_period(since: date, until: date) -> None:
    if until < since:
        raise Invalid("The period ends before it starts", field="until")
    if (until - since).days > 3 * 366:
        raise Invalid("A period is at most three years", field="since")


# ---------------------------------------------------------------- flows and churn


@dataclass
class Flow:
    source: str  # a stage, or FLOW_NEW
    target: str
    customers: int


def flows(session: Session, *, viewer: Viewer, since: date, until: date, scope: Scope | None = None) -> list[Flow]:
    """Where the scope's customers stood when the period began and when it ended (the Sankey's links)."""
    _check_period(since, until)
    clauses = customer_clauses(session, scope=scope or Scope(), viewer=viewer)
    start, end = day_start(since), day_start(until + timedelta(days=1))
    before, after = aliased(StageTransition), aliased(StageTransition)
    source = case((Customer.created_at < start, func.coalesce(before.to_rank, 0)), else_=-1)
    target = func.coalesce(after.to_rank, 0)
    rows = session.execute(
        select(source, target, func.count()).select_from(Customer)
        .outerjoin(before, and_(before.customer_id == Customer.id, _valid_at(before, start)))
        .outerjoin(after, and_(after.customer_id == Customer.id, _valid_at(after, end)))
        .where(Customer.created_at < end, *clauses).group_by(source, target)).all()
    out = [Flow(source=FLOW_NEW if int(s) < 0 else RANK_STAGES[int(s)], target=RANK_STAGES[int(t)], customers=int(n))
           for s, t, n in rows if int(n)]
    order = {name: i for i, name in enumerate((FLOW_NEW, *STAGES))}
    return sorted(out, key=lambda f: (order[f.source], order[f.target]))


@dataclass
class ChurnRow:
    stage: str
    at_start: int  # customers on the stage when the period began
    churned: int  # friendships ended (deleted) during the period by customers on this stage then

    @property
    def rate(self) -> float | None:
        return round(self.churned / self.at_start, 3) if self.at_start else None


def churn_by_stage(session: Session, *, viewer: Viewer, since: date, until: date,
                   scope: Scope | None = None) -> list[ChurnRow]:
    """Friendships deleted during the period, by the stage the customer stood on when it ended."""
    _check_period(since, until)
    clauses = customer_clauses(session, scope=scope or Scope(), viewer=viewer)
    start, end = day_start(since), day_start(until + timedelta(days=1))
    t = aliased(StageTransition)
    # An alias: a scope's own conditions on friendships (a segment naming an account) must not correlate to it.
    ended_friendship = aliased(Friendship)
    rank = func.coalesce(t.to_rank, 0)
    ended = [ended_friendship.status == FriendshipStatus.deleted.value, ended_friendship.removed_at >= start,
             ended_friendship.removed_at < end]
    if scope is not None and scope.kind == "account":
        ended.append(ended_friendship.account_id == scope.id)
    elif not viewer.sees_all_accounts:
        ended.append(ended_friendship.account_id.in_(sorted(viewer.account_ids)))
    counts = {int(r): int(n) for r, n in session.execute(
        select(rank, func.count()).select_from(ended_friendship)
        .join(Customer, Customer.id == ended_friendship.customer_id)
        .outerjoin(t, and_(t.customer_id == Customer.id, t.at <= ended_friendship.removed_at,
                           or_(t.until.is_(None), t.until > ended_friendship.removed_at)))
        .where(*ended, *clauses).group_by(rank))}
    opening = funnel_for(session, clauses=clauses, day=since - timedelta(days=1))
    return [ChurnRow(stage=stage, at_start=opening.current[stage], churned=counts.get(i, 0))
            for i, stage in enumerate(STAGES)]
