"""Benchmark: the ladder funnel for any date and segment, and a 52-week cohort table, on 1,000,000 customers.

Builds (or reuses) a database with 1,000,000 customers added over two years (one friendship each,
50 accounts), a tag on ~30 % of them (the measured segment: a saved segment "has that tag") and two
years of stage transitions (each customer's path from 流量 up to where they stand: ~2.2 rows each),
then measures, interleaved with the same aggregate written by hand in SQL in the same run:

  (a) the funnel through the product's path (``analytics.service.funnel``: scope → the customer
      list's filter → the one segment compiler → the transitions' range read) for the whole company
      on a date a year ago and for the segment on a date six months ago — target ≤ 500 ms each;
  (b) the 52-week cohort table (``analytics.service.cohorts``) — target ≤ 2 s;
  (c) the nightly rebuild of the rollups both read (``analytics.rollups.rebuild``, once) — target ≤ 5 min;
  (d) the hourly job's refresh of the saved segment's counts (``analytics.segment_rollups.refresh``, once).

The company funnel and the cohorts read the rollups (kept where transitions are written); the saved
segment's funnel reads the counts (d) kept (it fails if it did not), and the same segment's live read —
what an ad-hoc filter or a stale segment gets — is shown beside it (no target of its own). A database built
before migrations 0046/0054 is upgraded first (the migrations fill the rollups). ``--build-only`` builds
(or upgrades) the data and stops.

Exits non-zero when a target is missed or an answer differs from the hand-written one.

Usage:  .venv/bin/python benchmarks/analytics.py [--database URL] [--customers N] [--runs 7] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs). For PostgreSQL pass
``--database postgresql+psycopg://postgres@127.0.0.1:5432/<your own database>``. ``--customers 20000``
makes a smoke run. Not part of pytest.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from machine import database_url, interleaved, medians, print_header
from segments import Loader, drop_indexes
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from siyu.analytics import rollups, segment_rollups, service
from siyu.analytics.service import Scope, day_start
from siyu.core.db import make_engine
from siyu.core.migrate import upgrade
from siyu.core.models import AppSetting
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM

CUSTOMERS = 1_000_000
ACCOUNTS = 50
SEED = 2027
DAYS = 730
MARKER_KEY = "benchmark_analytics"
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_analytics.db")
FUNNEL_TARGET_MS = 500.0
COHORT_TARGET_S = 2.0
REBUILD_TARGET_S = 300.0
COHORT_WEEKS = 52
TAG_ID = 1000
SEGMENT_ID = 1000
STAGE_WEIGHTS = (0.40, 0.33, 0.19, 0.08)  # where customers end up: 流量, 用户, 客户, 粉丝
STAGE_NAMES = ("traffic", "user", "customer", "fan")
TABLES = ("customer", "friendship", "customer_tag", "stage_transition")


def spec(customers: int) -> dict[str, int]:
    return {"version": 1, "customers": customers}


def build(engine: Engine, url: str, customers: int) -> None:
    started = time.perf_counter()
    upgrade(url)
    loader = Loader(engine)
    indexes = drop_indexes(engine, loader, TABLES)
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    stamp = loader.time(now)
    loader.rows("account", ("id", "kind", "display_name", "wechat_id", "wecom_userid", "store", "brand", "tier_served",
                            "friend_capacity", "status", "positioning", "avatar_url", "signature", "greeting",
                            "moments_cover_url", "created_at"),
                [(i, "wecom", f"山野茶舍·{i:02d}", "", f"bench{i:02d}", "西湖店", "山野茶舍", "", 40000, "active",
                  "", "", "", "", "", stamp) for i in range(1, ACCOUNTS + 1)])
    loader.rows("tag_group", ("id", "name", "kind", "multi_select", "sort_order"),
                [(TAG_ID, "基准人群", "custom", True, 90)])
    loader.rows("tag", ("id", "group_id", "name", "sort_order"), [(TAG_ID, TAG_ID, "白领", 0)])
    paths: dict[int, tuple[int, list[datetime]]] = {}

    def customer_rows() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customers + 1):
            created = now - timedelta(seconds=rng.uniform(0, DAYS * 86400))
            rank = rng.choices(range(4), STAGE_WEIGHTS)[0]
            span = (now - created).total_seconds()
            marks = sorted(created + timedelta(seconds=rng.uniform(0.02, 0.98) * span) for _ in range(rank))
            paths[cid] = (rank, [created, *marks])
            text_created = loader.time(created)
            yield (cid, f"顾客{cid}", "", "", "", "", "", "", "", "", "", "", "", STAGE_NAMES[rank], "", 0, 0, 0, None,
                   50, text_created, text_created)

    loader.rows("customer", ("id", "name", "wechat_id", "avatar_url", "source", "gender", "age_band", "city", "job",
                             "income_band", "family", "objective_notes", "emotional_notes", "stage", "level",
                             "contact_count", "purchase_count", "purchase_total", "last_touch_at", "completeness",
                             "created_at", "updated_at"), customer_rows())
    print(f"  customers: {time.perf_counter() - started:.0f} s", flush=True)
    loader.rows("friendship", ("id", "customer_id", "account_id", "remark_name", "salutation", "description", "status",
                               "channel_state", "added_at"),
                ((cid, cid, 1 + cid % ACCOUNTS, "", "", "", "active", "", loader.time(paths[cid][1][0]))
                 for cid in range(1, customers + 1)))
    loader.rows("customer_tag", ("customer_id", "tag_id", "created_at"),
                ((cid, TAG_ID, stamp) for cid in range(1, customers + 1) if cid % 10 < 3))

    def transitions() -> Iterator[tuple[Any, ...]]:
        tid = 0
        for cid in range(1, customers + 1):
            _rank, times = paths[cid]
            for step, at in enumerate(times):
                tid += 1
                until = loader.time(times[step + 1]) if step + 1 < len(times) else None
                yield (tid, cid, None if step == 0 else step - 1, step, loader.time(at), until)

    loader.rows("stage_transition", ("id", "customer_id", "from_rank", "to_rank", "at", "until"), transitions())
    paths.clear()
    print(f"  transitions: {time.perf_counter() - started:.0f} s", flush=True)
    for sql in indexes:
        loader.execute(sql)
    loader.close()
    with Session(engine) as session:
        rollups.rebuild(session)
        session.commit()
    # What autovacuum does after a bulk load (PostgreSQL: the visibility map that index-only scans need).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    with Session(engine) as session:
        session.execute(text("INSERT INTO segment (id, name, conditions, mode, broken, broken_reason, snapshot_count, "
                             "created_at, updated_at) VALUES (:id, '白领', :c, 'dynamic', false, '', 0, :t, :t)"),
                        {"id": SEGMENT_ID, "c": '{"kind": "and", "conditions": [{"kind": "tag", "tag_ids": [1000]}]}',
                         "t": now})
        session.merge(AppSetting(key=MARKER_KEY, value=spec(customers)))
        session.commit()
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)


def ready(engine: Engine, customers: int) -> bool:
    try:
        with Session(engine) as session:
            row = session.get(AppSetting, MARKER_KEY)
            return row is not None and row.value == spec(customers)
    except Exception:
        return False


# ---------------------------------------------------------------- the hand-written queries

HAND_FUNNEL = """
SELECT t.to_rank, count(*) FROM stage_transition t JOIN customer c ON c.id = t.customer_id
WHERE t.at < :end AND (t.until IS NULL OR t.until >= :end) AND c.created_at < :end
  AND c.merged_into_id IS NULL {segment}
GROUP BY t.to_rank
"""
HAND_ADDED = "SELECT count(*) FROM customer c WHERE c.created_at < :end AND c.merged_into_id IS NULL {segment}"
SEGMENT_SQL = "AND EXISTS (SELECT 1 FROM customer_tag ct WHERE ct.customer_id = c.id AND ct.tag_id = :tag)"


def hand_funnel(session: Session, end: Any, segment: bool) -> dict[str, int]:
    where = SEGMENT_SQL if segment else ""
    counts = {int(r): int(n) for r, n in session.execute(text(HAND_FUNNEL.format(segment=where)),
                                                         {"end": end, "tag": TAG_ID})}
    added = int(session.execute(text(HAND_ADDED.format(segment=where)), {"end": end, "tag": TAG_ID}).scalar_one())
    out = {STAGE_NAMES[r]: counts.get(r, 0) for r in range(4)}
    out["traffic"] += added - sum(counts.values())
    return out


def hand_cohorts(session: Session, start: Any, end: Any, postgres: bool) -> dict[int, tuple[int, ...]]:
    if postgres:
        week = "floor(extract(epoch from c.created_at - CAST(:start AS timestamptz)) / 604800)"
        lag = "extract(epoch from t.at - c.created_at) / 86400.0"
    else:
        week = "CAST((julianday(c.created_at) - julianday(:start)) / 7 AS INTEGER)"
        lag = "julianday(t.at) - julianday(c.created_at)"
    cells = ", ".join(f"count(*) FILTER (WHERE r{rank} <= {days})" for rank in (1, 2, 3) for days in (7, 30, 90))
    sql = f"""
    SELECT week, count(*), {cells} FROM (
      SELECT {week} AS week,
             min(CASE WHEN t.to_rank >= 1 THEN {lag} END) AS r1,
             min(CASE WHEN t.to_rank >= 2 THEN {lag} END) AS r2,
             min(CASE WHEN t.to_rank >= 3 THEN {lag} END) AS r3
      FROM customer c LEFT JOIN stage_transition t ON t.customer_id = c.id
      WHERE c.created_at >= :start AND c.created_at < :end AND c.merged_into_id IS NULL
      GROUP BY c.id, c.created_at) per
    GROUP BY week"""
    return {int(row[0]): tuple(int(v) for v in row[1:]) for row in session.execute(text(sql),
                                                                                  {"start": start, "end": end})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="build (or upgrade) the data and stop")
    args = parser.parse_args(argv)
    url = database_url(args.database, DEFAULT_PATH, rebuild=args.rebuild)
    print_header(f"Analytics: the ladder funnel and 52-week cohorts over {args.customers:,} customers, "
                 f"{DAYS // 365} years of stage transitions")
    print(f"database: {url.split('@')[-1]}", flush=True)
    engine = make_engine(url)
    if not ready(engine, args.customers):
        print("building the data…", flush=True)
        build(engine, url, args.customers)
    else:
        upgrade(url)  # a database built before the rollups: migration 0046 fills them
    if args.build_only:
        engine.dispose()
        return 0
    postgres = engine.dialect.name == "postgresql"
    failures: list[str] = []
    today = local_today()
    company_day, segment_day = today - timedelta(days=365), today - timedelta(days=182)
    with Session(engine) as session:
        rows = session.execute(text("SELECT count(*) FROM stage_transition")).scalar_one()
    print(f"    {rows:,} stage transitions", flush=True)

    def bound(day: date) -> Any:
        end = day_start(day + timedelta(days=1))
        return end if postgres else end.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLite compares the stored text

    answers: dict[str, Any] = {}

    def timed(name: str, action: Callable[[Session], Any]) -> Callable[[], None]:
        def run() -> None:
            with Session(engine) as session:
                answers[name] = action(session)
        return run

    # The hourly job's work for the saved segment (segment_rollups.refresh), timed once.
    started = time.perf_counter()
    with Session(engine) as session:
        members = segment_rollups.refresh(session, SEGMENT_ID)
        session.commit()
    print(f"(d) the saved segment's funnel counts (hourly job): {time.perf_counter() - started:.1f} s · "
          f"{members:,} members", flush=True)
    segment = Scope("segment", SEGMENT_ID)

    def kept_segment(s: Session) -> dict[str, int]:
        found = service.funnel(s, viewer=SYSTEM, day=segment_day, scope=segment)
        if found.as_of is None:
            raise SystemExit("the segment's funnel did not read the kept counts")
        return found.current

    def live_segment(s: Session) -> dict[str, int]:  # what an ad-hoc filter or a stale rollup reads
        clauses, drivers = service.customer_filter(s, scope=segment, viewer=SYSTEM)
        return service.funnel_for(s, clauses=clauses, day=segment_day, drivers=drivers).current

    actions = {
        "funnel": timed("funnel", lambda s: service.funnel(s, viewer=SYSTEM, day=company_day).current),
        "hand funnel": timed("hand funnel", lambda s: hand_funnel(s, bound(company_day), False)),
        "segment funnel": timed("segment funnel", kept_segment),
        "hand segment funnel": timed("hand segment funnel", lambda s: hand_funnel(s, bound(segment_day), True)),
        "segment funnel, live read": timed("segment funnel, live read", live_segment),
    }
    times = medians(interleaved(args.runs, actions, warmup=1))
    for name, day, hand in (("funnel", company_day, "hand funnel"), ("segment funnel", segment_day,
                                                                     "hand segment funnel"),
                            ("segment funnel, live read", segment_day, "hand segment funnel")):
        ms, hand_ms = times[name] * 1000, times[hand] * 1000
        shown = " · ".join(f"{k} {v:,}" for k, v in answers[name].items())
        print(f"(a) {name} on {day}: {ms:.0f} ms (target ≤ {FUNNEL_TARGET_MS:.0f} ms) · "
              f"hand-written {hand_ms:.0f} ms · ratio {ms / hand_ms:.2f}× · runs {args.runs}\n    {shown}", flush=True)
        if ms > FUNNEL_TARGET_MS and "live" not in name:  # the live read is shown, its target is the kept one's
            failures.append(name)
        if answers[name] != answers[hand]:
            failures.append(f"{name} differs from the hand-written one: {answers[hand]}")

    first_week = service.week_start(today) - timedelta(weeks=COHORT_WEEKS - 1)
    start, end = day_start(first_week), day_start(service.week_start(today) + timedelta(weeks=1))
    hand_start = start if postgres else start.strftime("%Y-%m-%d %H:%M:%S.%f")
    hand_end = end if postgres else end.strftime("%Y-%m-%d %H:%M:%S.%f")
    actions = {
        "cohorts": timed("cohorts", lambda s: service.cohorts(s, viewer=SYSTEM, weeks=COHORT_WEEKS, until=today)),
        "hand cohorts": timed("hand cohorts", lambda s: hand_cohorts(s, hand_start, hand_end, postgres)),
    }
    runs = max(3, args.runs // 2)
    times = medians(interleaved(runs, actions, warmup=1))
    seconds, hand_seconds = times["cohorts"], times["hand cohorts"]
    rows_out = answers["cohorts"]
    print(f"(b) {COHORT_WEEKS}-week cohort table: {seconds:.2f} s (target ≤ {COHORT_TARGET_S:.0f} s) · hand-written "
          f"{hand_seconds:.2f} s · ratio {seconds / hand_seconds:.2f}× · runs {runs} · "
          f"{sum(r.added for r in rows_out):,} customers", flush=True)
    if seconds > COHORT_TARGET_S:
        failures.append("cohorts")
    hand = answers["hand cohorts"]
    added = {COHORT_WEEKS - 1 - i: r.added for i, r in enumerate(rows_out) if r.added}
    if added != {week: values[0] for week, values in hand.items()}:
        failures.append("cohort sizes differ from the hand-written ones")
    for i, row in enumerate(rows_out):
        values = hand.get(COHORT_WEEKS - 1 - i)
        known = [v for s in STAGE_NAMES[1:] for v in row.reached[s].values()]
        if values and any(v is not None and v != h for v, h in zip(known, values[1:], strict=True)):
            failures.append(f"cohort {row.week} differs from the hand-written one")
            break
    started = time.perf_counter()
    with Session(engine) as session:
        sizes = rollups.rebuild(session)
        session.commit()
    rebuild_s = time.perf_counter() - started
    print(f"(c) nightly rollup rebuild: {rebuild_s:.1f} s (target ≤ {REBUILD_TARGET_S:.0f} s) · "
          f"{sizes['deltas']:,} hourly rows · {sizes['ladders']:,} customers' first rungs · "
          f"{sizes['cohort']:,} cohort rows", flush=True)
    if rebuild_s > REBUILD_TARGET_S:
        failures.append("rollup rebuild")
    engine.dispose()
    if failures:
        print("MISSED: " + "; ".join(failures))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
