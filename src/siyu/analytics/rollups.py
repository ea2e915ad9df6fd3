"""The ladder's rollups: what the funnel and the cohorts read instead of every customer's transitions.

``stage_count_delta`` (see ``models.StageCountDelta``): how many live customers stand on each rung
(用户, 客户, 粉丝) at any hour-aligned instant is a sum over a few thousand rows — the company funnel
for a date is a lookup, not a range read over millions of transitions. ``customer_ladder``: how long after
being added each customer first stood on each rung or higher, so a cohort table joins one row per
customer and compares integers.

Both are kept where the transitions are written, in the same transaction: ``transitions.record``
hands its closed and new rows to ``recorded``; a merge (and its undo) takes the source customer's rows
out of (back into) the counts with ``shift``; the backfill and the demo rebuild them. The nightly job
``rebuild``s them from the transitions (one set-based statement each), folding the appended rows and
repairing anything written behind the product's back. The funnel reads them only where they answer
exactly what the hand-written range read answers: the whole company, for a viewer who sees every
account, at an instant on a whole hour (local midnight in Asia/Shanghai is 16:00 UTC).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, case, delete, func, insert, literal_column, select, text
from sqlalchemy.orm import Session

from siyu.analytics.models import (
    CohortLadderCount,
    CustomerLadder,
    SegmentRollup,
    SegmentStageDelta,
    StageCountDelta,
    StageTransition,
)
from siyu.core import jobs
from siyu.core.db import among, integers_of
from siyu.customers.models import Customer

_DELTA = cast(Table, StageCountDelta.__table__)
_LADDER = cast(Table, CustomerLadder.__table__)
_COHORT = cast(Table, CohortLadderCount.__table__)
_SEGMENT_DELTA = cast(Table, SegmentStageDelta.__table__)
RUNGS = (1, 2, 3)  # 用户, 客户, 粉丝: 流量 is whatever is left of the customers added
WINDOWS = (7, 30, 90)  # the cohort table's "within N days" (analytics.service.COHORT_DAYS)
MICROSECONDS_A_DAY = 86_400_000_000
HOURS_A_WEEK = 168
SEGMENT_FRESH = timedelta(hours=2)  # a saved segment's counts are read while younger (the job runs hourly)


def hour_of(moment: datetime) -> int:
    """The UTC hour an instant falls in (epoch seconds // 3600)."""
    return int(moment.timestamp()) // 3600


def exact_at(moment: datetime) -> bool:
    """Whether the rollup answers exactly at this instant (on a whole hour)."""
    return int(moment.timestamp()) % 3600 == 0 and moment.microsecond == 0


def as_utc(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones, raw SQL ISO strings)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _aware(value: Any) -> datetime:
    found = as_utc(value)
    assert found is not None
    return found


def recorded(session: Session, *, closed: Iterable[tuple[int, int, datetime, datetime]],
             opened: Iterable[tuple[int, int, datetime]], when: datetime) -> None:
    """Rows closed at ``when`` — (customer_id, to_rank, at, customer added) — and rows opened at ``when``
    — (customer_id, to_rank, customer added) — of live customers: their count changes, appended."""
    changes: Counter[tuple[int, int]] = Counter()
    for _customer_id, rank, at, added in closed:
        if rank >= 1:
            start = max(_aware(at), _aware(added))
            changes[(hour_of(max(when, start)), rank)] -= 1
    touched: dict[int, datetime] = {}
    for customer_id, rank, added in opened:
        touched[customer_id] = _aware(added)
        if rank >= 1:
            changes[(hour_of(max(when, _aware(added))), rank)] += 1
    rows = [{"hour": hour, "rank": rank, "n": n} for (hour, rank), n in changes.items() if n]
    if rows:
        session.connection().execute(insert(_DELTA), rows)
    refresh_ladder(session, touched)


def _by_list(session: Session, ids: list[int]) -> Any:
    """``SELECT … FROM (the ids) JOIN customer``: the statements below start from the list, each customer by
    primary key, the other tables joined to them by their index. Given the list as a condition only,
    PostgreSQL with statistics lagging a flood hashed the whole customer table (70,000 rows for a page of
    1,000; 1,000,000 at scale), or compared every joined row with the whole list again."""
    wanted = integers_of(session, ids)
    return select(Customer.id).select_from(wanted).join(Customer, Customer.id == wanted.c.value)


_LAGS = (_LADDER.c.user_lag_us, _LADDER.c.customer_lag_us, _LADDER.c.fan_lag_us)


def refresh_ladder(session: Session, added: dict[int, datetime]) -> None:
    """Recompute these live customers' first times on each rung from their transitions (``added``: each
    one's add date). Their old rows leave the cohort counts as they are deleted and the new ones enter
    as they are inserted (both statements hand their rows back): no read of the ladder before or after."""
    ids = sorted(added)
    if not ids:
        return
    connection = session.connection()
    changes: Counter[tuple[int, int, int]] = Counter()
    for customer_id, *lags in connection.execute(  # out with the old lags …
            delete(_LADDER).where(among(session, _LADDER.c.customer_id, ids))
            .returning(_LADDER.c.customer_id, *_LAGS)):
        _count_lags(changes, added[int(customer_id)], lags, -1)
    t = StageTransition
    lag: Any = literal_column(lag_sql(connection.dialect.name, "stage_transition.at", "customer.created_at"))
    firsts = [func.min(case((t.to_rank >= rung, lag))) for rung in RUNGS]
    for customer_id, *lags in connection.execute(  # … in with the new ones
            insert(_LADDER).from_select(
                ["customer_id", "user_lag_us", "customer_lag_us", "fan_lag_us"],
                _by_list(session, ids).join(t, t.customer_id == Customer.id).with_only_columns(t.customer_id, *firsts)
                .group_by(t.customer_id).having(func.max(t.to_rank) >= 1)).returning(_LADDER.c.customer_id, *_LAGS)):
        _count_lags(changes, added[int(customer_id)], lags, 1)
    _append_cohort(session, changes)


def _count_lags(changes: Counter[tuple[int, int, int]], added: datetime, lags: list[Any], sign: int) -> None:
    """One customer's ladder row in ``cohort_ladder_count``'s terms: (add hour, rung, window) × sign."""
    hour = hour_of(_aware(added))
    for rung, lag in zip(RUNGS, lags, strict=True):
        days = window_of(None if lag is None else int(lag))
        if days is not None:
            changes[(hour, rung, days)] += sign


def window_of(lag_us: int | None) -> int | None:
    """The smallest cohort window (days) a lag falls in; None: later than the last, or never."""
    if lag_us is None:
        return None
    return next((days for days in WINDOWS if lag_us <= days * MICROSECONDS_A_DAY), None)


def _cohort_changes(session: Session, ids: list[int], sign: int, *, live_only: bool) -> Counter[tuple[int, int, int]]:
    """These customers' contributions to ``cohort_ladder_count`` (from their ``customer_ladder`` rows) × sign."""
    ladder = CustomerLadder
    where = [Customer.merged_into_id.is_(None)] if live_only else []
    changes: Counter[tuple[int, int, int]] = Counter()
    for created, *lags in session.execute(
            _by_list(session, ids).join(ladder, ladder.customer_id == Customer.id).where(*where).with_only_columns(
                Customer.created_at, ladder.user_lag_us, ladder.customer_lag_us, ladder.fan_lag_us)):
        _count_lags(changes, created, lags, sign)
    return changes


def _append_cohort(session: Session, changes: Counter[tuple[int, int, int]]) -> None:
    rows = [{"hour": hour, "rung": rung, "within_days": days, "n": n}
            for (hour, rung, days), n in changes.items() if n]
    if rows:
        session.connection().execute(insert(_COHORT), rows)


def lag_sql(dialect: str, later: str, earlier: str) -> str:
    """SQL: ``later - earlier`` in whole microseconds, exactly (SQLite keeps ``YYYY-MM-DD HH:MM:SS.ffffff``)."""
    if dialect == "postgresql":
        return f"CAST(extract(epoch FROM {later} - {earlier}) * 1000000 AS BIGINT)"
    return (f"((CAST(strftime('%s', {later}) AS INTEGER) - CAST(strftime('%s', {earlier}) AS INTEGER)) * 1000000 "
            f"+ CAST(substr({later}, 21, 6) AS INTEGER) - CAST(substr({earlier}, 21, 6) AS INTEGER))")


def shift(session: Session, customer_ids: Iterable[int], sign: int) -> None:
    """Take these customers' rows out of the counts (``sign`` −1, a merge) or put them back (+1, its undo)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    t = StageTransition
    changes: Counter[tuple[int, int]] = Counter()
    for rank, at, until, added in session.execute(
            _by_list(session, ids).join(t, t.customer_id == Customer.id).where(t.to_rank >= 1)
            .with_only_columns(t.to_rank, t.at, t.until, Customer.created_at)):
        start = max(_aware(at), _aware(added))
        changes[(hour_of(start), int(rank))] += sign
        if until is not None:
            changes[(hour_of(max(_aware(until), start)), int(rank))] -= sign
    rows = [{"hour": hour, "rank": rank, "n": n} for (hour, rank), n in changes.items() if n]
    if rows:
        session.connection().execute(insert(_DELTA), rows)
    _append_cohort(session, _cohort_changes(session, ids, sign, live_only=False))
    forget_segments(session)


def counts_at(session: Session, moment: datetime) -> dict[int, int]:
    """Live customers on each rung (1–3) at an hour-aligned instant (see ``exact_at``)."""
    d = StageCountDelta
    found = {int(rank): int(n or 0) for rank, n in session.execute(
        select(d.rank, func.sum(d.n)).where(d.hour < hour_of(moment)).group_by(d.rank))}
    return {rung: found.get(rung, 0) for rung in RUNGS}


def cohort_hours_exact(bounds: list[datetime]) -> bool:
    """Whether the cohort rollup answers these week boundaries exactly: each on a whole hour, a week apart
    (168 hours: no daylight-saving change inside; Asia/Shanghai has none)."""
    return all(exact_at(b) for b in bounds) and all(
        hour_of(b) - hour_of(bounds[0]) == i * HOURS_A_WEEK for i, b in enumerate(bounds))


def cohort_cells(session: Session, start: datetime, weeks: int) -> dict[tuple[int, int, int], int]:
    """(week index from ``start``, rung, days) → live customers added that week who stood on the rung or
    higher within ``days`` of being added (``start`` hour-aligned, weeks of 168 hours)."""
    c = CohortLadderCount
    first = hour_of(start)
    week = (c.hour - first) // HOURS_A_WEEK
    found: Counter[tuple[int, int, int]] = Counter()
    for index, rung, days, n in session.execute(
            select(week, c.rung, c.within_days, func.sum(c.n))
            .where(c.hour >= first, c.hour < first + weeks * HOURS_A_WEEK).group_by(week, c.rung, c.within_days)):
        for window in WINDOWS:
            if int(days) <= window:
                found[(int(index), int(rung), window)] += int(n or 0)
    return dict(found)


# ---------------------------------------------------------------- saved segments' funnels (a job keeps them)


REFRESH_CLEARED_SEGMENTS = "analytics.jobs.refresh_cleared_segment_rollups"


def forget_segments(session: Session) -> None:
    """A merge or its undo changes who is live: the segments' counts are built again before they are read —
    by a job once this commits (once per transaction), so their funnels are lookups again within seconds
    rather than after the next hourly run; meanwhile they read live."""
    session.connection().execute(SegmentRollup.__table__.update().values(computed_at=None))  # type: ignore[attr-defined]
    jobs.cancel_after_commit(session, REFRESH_CLEARED_SEGMENTS)
    jobs.enqueue_after_commit(session, REFRESH_CLEARED_SEGMENTS)


def segment_counts_at(session: Session, segment_id: int, moment: datetime) -> dict[int, int]:
    """A segment's members added (rank 0) and on each rung (1–3) at an hour-aligned instant, as of the
    segment's rollup (``SegmentRollup.computed_at``)."""
    d = SegmentStageDelta
    found = {int(rank): int(n or 0) for rank, n in session.execute(
        select(d.rank, func.sum(d.n)).where(d.segment_id == segment_id, d.hour < hour_of(moment)).group_by(d.rank))}
    return {rank: found.get(rank, 0) for rank in (0, *RUNGS)}


# ---------------------------------------------------------------- rebuild (set-based)


def _hour_sql(dialect: str, expression: str) -> str:
    if dialect == "postgresql":
        return f"CAST(floor(extract(epoch FROM {expression}) / 3600) AS BIGINT)"
    return f"(CAST(strftime('%s', {expression}) AS INTEGER) / 3600)"


def _greatest(dialect: str, a: str, b: str) -> str:
    return f"GREATEST({a}, {b})" if dialect == "postgresql" else f"max({a}, {b})"


def rebuild_statements(dialect: str) -> list[str]:
    """Both rollups from the transitions: the statements the nightly job (and the migration) run."""
    start = _greatest(dialect, "t.at", "c.created_at")
    end = _greatest(dialect, "t.until", start)
    lag = lag_sql(dialect, "t.at", "c.created_at")
    live = "FROM stage_transition t JOIN customer c ON c.id = t.customer_id WHERE c.merged_into_id IS NULL " \
           "AND t.to_rank >= 1"
    return [
        "DELETE FROM stage_count_delta",
        "INSERT INTO stage_count_delta (hour, rank, n) SELECT h, r, sum(n) FROM ("  # noqa: S608 - fixed text
        f"SELECT {_hour_sql(dialect, start)} AS h, t.to_rank AS r, 1 AS n {live} "
        f"UNION ALL SELECT {_hour_sql(dialect, end)} AS h, t.to_rank AS r, -1 AS n {live} AND t.until IS NOT NULL"
        ") d GROUP BY h, r HAVING sum(n) <> 0",
        "DELETE FROM customer_ladder",
        "INSERT INTO customer_ladder (customer_id, user_lag_us, customer_lag_us, fan_lag_us) "  # noqa: S608 - fixed
        f"SELECT t.customer_id, min(CASE WHEN t.to_rank >= 1 THEN {lag} END), "
        f"min(CASE WHEN t.to_rank >= 2 THEN {lag} END), min(CASE WHEN t.to_rank >= 3 THEN {lag} END) "
        "FROM stage_transition t JOIN customer c ON c.id = t.customer_id GROUP BY t.customer_id "
        "HAVING max(t.to_rank) >= 1",
        *cohort_rebuild_statements(dialect),
    ]


def cohort_rebuild_statements(dialect: str) -> list[str]:
    """``cohort_ladder_count`` from ``customer_ladder`` (the nightly job and migration 0054)."""
    day = MICROSECONDS_A_DAY
    parts = []
    for rung, column in zip(RUNGS, ("user_lag_us", "customer_lag_us", "fan_lag_us"), strict=True):
        window = " ".join(f"WHEN l.{column} <= {days * day} THEN {days}" for days in WINDOWS[:-1])
        parts.append(f"SELECT {_hour_sql(dialect, 'c.created_at')} AS h, {rung} AS r, "  # noqa: S608 - fixed text
                     f"CASE {window} ELSE {WINDOWS[-1]} END AS w FROM customer_ladder l "
                     f"JOIN customer c ON c.id = l.customer_id WHERE c.merged_into_id IS NULL "
                     f"AND l.{column} <= {WINDOWS[-1] * day}")
    return [
        "DELETE FROM cohort_ladder_count",
        "INSERT INTO cohort_ladder_count (hour, rung, within_days, n) SELECT h, r, w, count(*) FROM ("  # noqa: S608
        + " UNION ALL ".join(parts) + ") d GROUP BY h, r, w",
    ]


def rebuild_connection(connection: Connection) -> None:
    dialect = connection.dialect.name
    if dialect == "postgresql":  # no transition written while the counts are rebuilt from them
        connection.execute(text("LOCK TABLE stage_transition IN SHARE MODE"))
        connection.execute(text("LOCK TABLE stage_count_delta IN EXCLUSIVE MODE"))
        connection.execute(text("LOCK TABLE cohort_ladder_count IN EXCLUSIVE MODE"))
    for statement in rebuild_statements(dialect):
        connection.execute(text(statement))


def rebuild(session: Session) -> dict[str, int]:
    """Rebuild both rollups in the session's transaction; how many rows each now holds."""
    session.flush()
    rebuild_connection(session.connection())
    return {"deltas": int(session.scalar(select(func.count()).select_from(_DELTA)) or 0),
            "ladders": int(session.scalar(select(func.count()).select_from(_LADDER)) or 0),
            "cohort": int(session.scalar(select(func.count()).select_from(_COHORT)) or 0)}
