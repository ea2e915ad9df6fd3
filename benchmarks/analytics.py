"""Benchmark: the ladder funnel for any date and scope, and a 52-week cohort table, on 1,000,000 customers.

Builds (or reuses: the ``benchmark_analytics`` marker holds the spec) a database with the issue's data:
1,000,000 customers added over two years (one friendship each, 50 accounts, each worked by one operator
who owns its customers: 20,000 each), a tag on 30 % of them (the measured segment: a saved segment "has
that tag"), two years of stage transitions (each customer's path from 流量 up to where they stand: ~2 rows
each), 5,000,000 orders with one line each (``segments.load_orders``) and 20,000,000 timeline touches
(0–40 per customer after their add date; chats, moments, notes, system rows) — bulk loaded with the big
tables' secondary indexes dropped and built again after. Then it measures, interleaved with the same
aggregate written by hand in SQL in the same run (medians):

  (a) the funnel through the product's path (``analytics.service.funnel``: scope → the customer list's
      filter → the one segment compiler → rollups, kept counts or the transitions' range read) — target
      ≤ 500 ms each: the company on a date a year ago; the saved segment on a date six months ago and
      today (its kept counts, as of when they were taken: the page's default date); a segment edited in
      this run, after the refresh its save enqueued (``segments.service`` → ``analytics.jobs.
      refresh_segment_rollup``, run in-process as Huey's immediate mode does; its time printed, (e));
      an account and an operator scope (20,000 customers, live reads) and the saved segment for a viewer
      who sees one account only (live read). The saved segment's own live read — what a stale or cleared
      segment reads — is shown beside them (no target of its own);
  (b) the 52-week cohort table (``analytics.service.cohorts``) — target ≤ 2 s;
  (c) the nightly rebuild of the rollups (``analytics.rollups.rebuild``, once) — target ≤ 5 min;
  (d) the hourly job's refresh of the saved segment's counts (``analytics.segment_rollups.refresh``, once).

``--build-only`` builds (or upgrades) the data and stops. ``benchmarks/dashboard.py`` reuses the build.

Exits non-zero when a target is missed or an answer differs from the hand-written one.

Usage:  .venv/bin/python benchmarks/analytics.py [--database URL] [--customers N] [--runs 7] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs; ``--rebuild`` after the spec
changed). For PostgreSQL pass ``--database postgresql+psycopg://postgres@127.0.0.1:5432/<your own database>``
(an empty one). ``--customers 20000`` makes a smoke run (orders and touches scale with it). Not part of pytest.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from machine import database_url, interleaved, medians, print_header
from segments import POOL, Loader, drop_indexes, load_orders, vacuum_analyze
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from siyu.analytics import rollups, segment_rollups, service
from siyu.analytics.service import Scope, day_start
from siyu.core import jobs
from siyu.core.db import make_engine, reset_engine
from siyu.core.migrate import upgrade
from siyu.core.models import AppSetting
from siyu.core.settings import get_settings, local_today
from siyu.core.viewer import SYSTEM, Viewer

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
EDITED_ID = 1001  # 白领 on half the accounts, edited by each run (its save refreshes its counts)
STAGE_WEIGHTS = (0.40, 0.33, 0.19, 0.08)  # where customers end up: 流量, 用户, 客户, 粉丝
STAGE_NAMES = ("traffic", "user", "customer", "fan")
TABLES = ("customer", "friendship", "customer_tag", "stage_transition", "customer_order", "order_line", "touch")
ORDERS_EACH = 5  # 5,000,000 orders for 1,000,000 customers (segments.load_orders)
TOUCHES_EACH = 20  # 20,000,000 touches
FIRST_OPERATOR = 1001  # operator i works account i and owns its customers (~20,000 each)
# The account and operator scopes measured (20,000 customers each): account 2's customers (cid % 50 = 1) all
# hold the segment's tag (cid % 10 < 3), so a viewer of account 2 alone sees 20,000 of the segment's members.
MEASURED_ACCOUNT = 2
MEASURED_OPERATOR = FIRST_OPERATOR + MEASURED_ACCOUNT - 1  # owns account 2's customers
# The timeline's kinds, by weight (private chats most; a few written by the system).
TOUCH_KINDS = (("chat",) * 10 + ("moments_like",) * 3 + ("moments_comment",) * 2 + ("moments_engaged",) * 2
               + ("note", "tag_change", "system"))


def spec(customers: int) -> dict[str, int]:
    return {"version": 2, "customers": customers, "orders": customers * ORDERS_EACH,
            "touches": customers * TOUCHES_EACH}


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
    loader.rows('"user"', ("id", "username", "display_name", "password_hash", "role", "is_active", "created_at",
                         "token_generation"),
                [(FIRST_OPERATOR + i - 1, f"bench-op{i:02d}", f"运营{i:02d}", "!", "operator", True, stamp, 0)
                 for i in range(1, ACCOUNTS + 1)])
    loader.rows("user_account", ("user_id", "account_id"),
                [(FIRST_OPERATOR + i - 1, i) for i in range(1, ACCOUNTS + 1)])
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
                   50, operator_of(cid), text_created, text_created)

    loader.rows("customer", ("id", "name", "wechat_id", "avatar_url", "source", "gender", "age_band", "city", "job",
                             "income_band", "family", "objective_notes", "emotional_notes", "stage", "level",
                             "contact_count", "purchase_count", "purchase_total", "last_touch_at", "completeness",
                             "owner_id", "created_at", "updated_at"), customer_rows())
    print(f"  customers: {time.perf_counter() - started:.0f} s", flush=True)
    loader.rows("friendship", ("id", "customer_id", "account_id", "remark_name", "salutation", "description", "status",
                               "channel_state", "added_at"),
                ((cid, cid, account_of(cid), "", "", "", "active", "", loader.time(paths[cid][1][0]))
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
    added = [paths[cid][1][0] for cid in range(1, customers + 1)]
    paths.clear()
    print(f"  transitions: {time.perf_counter() - started:.0f} s", flush=True)
    load_orders(loader, rng, customers=customers, orders=customers * ORDERS_EACH, now=now)
    print(f"  orders and lines: {time.perf_counter() - started:.0f} s", flush=True)
    load_touches(loader, rng, added, now=now)
    added.clear()
    print(f"  touches: {time.perf_counter() - started:.0f} s", flush=True)
    for sql in indexes:
        loader.execute(sql)
    loader.close()
    print(f"  indexes: {time.perf_counter() - started:.0f} s", flush=True)
    with Session(engine) as session:
        rollups.rebuild(session)
        session.commit()
    vacuum_analyze(engine)  # what autovacuum does after a bulk load (PostgreSQL: the visibility map)
    with Session(engine) as session:
        session.execute(text("INSERT INTO segment (id, name, conditions, mode, broken, broken_reason, snapshot_count, "
                             "created_at, updated_at) VALUES (:id, '白领', :c, 'dynamic', false, '', 0, :t, :t)"),
                        {"id": SEGMENT_ID, "c": '{"kind": "and", "conditions": [{"kind": "tag", "tag_ids": [1000]}]}',
                         "t": now})
        session.merge(AppSetting(key=MARKER_KEY, value=spec(customers)))
        session.commit()
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)


def account_of(cid: int) -> int:
    return 1 + cid % ACCOUNTS


def operator_of(cid: int) -> int:
    return FIRST_OPERATOR + account_of(cid) - 1


def load_touches(loader: Loader, rng: random.Random, added: list[datetime], *, now: datetime) -> None:
    """``TOUCHES_EACH`` timeline touches per customer on average (0 to twice that each), each after the
    customer was added, on the customer's account; times drawn from a pool formatted once."""
    pool = sorted(now - timedelta(seconds=rng.uniform(0, DAYS * 86400)) for _ in range(POOL))
    pool_text = [loader.time(at) for at in pool]
    kinds = len(TOUCH_KINDS)

    def rows() -> Iterator[tuple[Any, ...]]:
        tid = 0
        random_ = rng.random
        for cid, created in enumerate(added, start=1):
            first = bisect.bisect_right(pool, created)  # the pool's times after the customer was added
            span = POOL - first
            if not span:
                continue
            account = account_of(cid)
            for _ in range(int(random_() * (2 * TOUCHES_EACH + 1))):
                tid += 1
                k = first + int(random_() * span)
                yield (tid, cid, account, TOUCH_KINDS[(tid * 7 + k) % kinds], "", pool_text[k], pool_text[k])

    loader.rows("touch", ("id", "customer_id", "account_id", "kind", "content", "occurred_at", "created_at"), rows())


def built_before(engine: Engine) -> bool:
    """Whether the database already holds a build (of another spec): building again would collide."""
    try:
        with Session(engine) as session:
            return session.get(AppSetting, MARKER_KEY) is not None
    except Exception:
        return False


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
  AND c.merged_into_id IS NULL {where}
GROUP BY t.to_rank
"""
HAND_ADDED = "SELECT count(*) FROM customer c WHERE c.created_at < :end AND c.merged_into_id IS NULL {where}"
SEGMENT_SQL = f"AND EXISTS (SELECT 1 FROM customer_tag ct WHERE ct.customer_id = c.id AND ct.tag_id = {TAG_ID})"
FRIEND_OF = "EXISTS (SELECT 1 FROM friendship f WHERE f.customer_id = c.id AND f.account_id IN ({accounts}))"


def hand_funnel(session: Session, end: Any, where: str | bool = "", params: dict[str, Any] | None = None
                ) -> dict[str, int]:
    """The funnel at ``end`` written by hand; ``where``: more conditions on ``customer c`` (True: the segment)."""
    where = SEGMENT_SQL if where is True else where or ""
    values = {"end": end, **(params or {})}
    counts = {int(r): int(n) for r, n in session.execute(text(HAND_FUNNEL.format(where=where)), values)}
    added = int(session.execute(text(HAND_ADDED.format(where=where)), values).scalar_one())
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


def edit_segment(session: Session) -> list[int]:
    """Save ``EDITED_ID`` through the segments service (created on the first run) with the other half of the
    accounts than it had: a real change of its members. Its accounts now."""
    from siyu.segments import service as segments_service
    from siyu.segments.models import Segment
    from siyu.segments.schemas import ConditionGroup, SegmentUpdate

    first, second = list(range(1, ACCOUNTS // 2 + 1)), list(range(ACCOUNTS // 2 + 1, ACCOUNTS + 1))
    existing = session.get(Segment, EDITED_ID)
    accounts = first if existing is None or existing.conditions["conditions"][1]["account_ids"] != first else second
    tree = ConditionGroup.model_validate({"kind": "and", "conditions": [
        {"kind": "tag", "tag_ids": [TAG_ID]}, {"kind": "account", "account_ids": accounts}]})
    if existing is None:
        session.execute(text("INSERT INTO segment (id, name, conditions, mode, broken, broken_reason, snapshot_count, "
                             "created_at, updated_at) VALUES (:id, '白领·半数', :c, 'dynamic', false, '', 0, :t, :t)"),
                        {"id": EDITED_ID, "c": json.dumps(tree.model_dump(mode="json")),
                         "t": datetime.now(UTC) - timedelta(days=1)})
        session.flush()
    segments_service.update_segment(session, segment_id=EDITED_ID, data=SegmentUpdate(conditions=tree),
                                    viewer=SYSTEM)
    session.commit()  # the refresh runs once this commits
    return accounts


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
                 f"{DAYS // 365} years of stage transitions, {args.customers * ORDERS_EACH:,} orders and "
                 f"{args.customers * TOUCHES_EACH:,} touches")
    print(f"database: {url.split('@')[-1]}", flush=True)
    engine = make_engine(url)
    if not ready(engine, args.customers):
        if built_before(engine):
            print("the database holds an earlier build of other data: run again with --rebuild (SQLite) or "
                  "on an empty database")
            return 2
        print("building the data…", flush=True)
        build(engine, url, args.customers)
    else:
        upgrade(url)  # a database built before the newest migrations
    if args.build_only:
        engine.dispose()
        return 0
    postgres = engine.dialect.name == "postgresql"
    failures: list[str] = []
    today = local_today()
    company_day, segment_day = today - timedelta(days=365), today - timedelta(days=182)
    with Session(engine) as session:
        sizes = {table: session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                 for table in ("customer", "stage_transition", "customer_order", "touch")}
    print("    " + " · ".join(f"{n:,} {table}" for table, n in sizes.items()), flush=True)

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
    # A segment saved now: its save enqueues its refresh after the commit (run here in-process, as Huey's
    # immediate mode does; a worker does the same) — timed from the save to the counts kept.
    os.environ["SIYU_DATABASE_URL"] = url  # the job's own transaction: this database
    get_settings.cache_clear()
    reset_engine()
    jobs.set_immediate(True)
    started = time.perf_counter()
    with Session(engine) as session:
        edited_accounts = edit_segment(session)
    print(f"(e) a segment edited now (白领 on accounts {edited_accounts[0]}–{edited_accounts[-1]}): saved and its "
          f"counts refreshed by the save's job in {time.perf_counter() - started:.1f} s", flush=True)
    segment, edited = Scope("segment", SEGMENT_ID), Scope("segment", EDITED_ID)
    account, operator = Scope("account", MEASURED_ACCOUNT), Scope("operator", MEASURED_OPERATOR)
    scoped = Viewer(user_id=MEASURED_OPERATOR, username="bench-op", role="operator",
                    sees_all_accounts=False, account_ids=frozenset({MEASURED_ACCOUNT}))

    def product(scope: Scope | None, day: date, *, kept: bool | None = None,
                viewer: Viewer = SYSTEM) -> Callable[[Session], dict[str, int]]:
        def action(s: Session) -> dict[str, int]:
            found = service.funnel(s, viewer=viewer, day=day, scope=scope)
            if kept is not None and (found.as_of is not None) != kept:
                raise SystemExit(f"the funnel of {scope} on {day} {'did not read' if kept else 'read'} kept counts")
            if kept:
                as_of[(scope.key if scope else "company", day)] = found.as_of
            return found.current
        return action

    def live_segment(s: Session) -> dict[str, int]:  # the same segment's live read (what a stale one gets)
        clauses, drivers = service.customer_filter(s, scope=segment, viewer=SYSTEM)
        return service.funnel_for(s, clauses=clauses, day=segment_day, drivers=drivers).current

    def hand(day: date, where: str, **params: Any) -> Callable[[Session], dict[str, int]]:
        return lambda s: hand_funnel(s, bound(day), where, params)

    tagged = SEGMENT_SQL
    edited_sql = SEGMENT_SQL + " AND " + FRIEND_OF.format(accounts=", ".join(map(str, edited_accounts)))
    of_account = "AND " + FRIEND_OF.format(accounts=MEASURED_ACCOUNT)
    as_of: dict[tuple[str, date], datetime | None] = {}
    # (name, day, the product's read, the hand-written SQL, target enforced)
    cases: list[tuple[str, date, Callable[[Session], Any], Callable[[Session], Any], bool]] = [
        ("company funnel", company_day, product(None, company_day), hand(company_day, ""), True),
        ("saved segment's funnel (kept counts)", segment_day, product(segment, segment_day, kept=True),
         hand(segment_day, tagged), True),
        ("saved segment's funnel today (kept counts, as of)", today, product(segment, today, kept=True),
         hand(today, tagged), True),
        ("segment edited now, after its save's refresh", segment_day, product(edited, segment_day, kept=True),
         hand(segment_day, edited_sql), True),
        ("segment edited now, today", today, product(edited, today, kept=True), hand(today, edited_sql), True),
        (f"account scope (account {MEASURED_ACCOUNT}, live read)", today, product(account, today, kept=False),
         hand(today, of_account), True),
        (f"account scope (account {MEASURED_ACCOUNT}, live read)", segment_day,
         product(account, segment_day, kept=False), hand(segment_day, of_account), True),
        (f"operator scope (operator {operator.id}, live read)", today, product(operator, today, kept=False),
         hand(today, "AND c.owner_id = :owner", owner=operator.id), True),
        (f"saved segment, viewer who sees account {MEASURED_ACCOUNT} only (live read)", today,
         product(segment, today, kept=False, viewer=scoped), hand(today, tagged + " " + of_account), True),
        ("saved segment's live read (no target: what a stale or cleared segment reads)", segment_day, live_segment,
         hand(segment_day, tagged), False),
    ]
    actions: dict[str, Callable[[], None]] = {}
    for index, (_name, _day, mine, theirs, _target) in enumerate(cases):
        actions[f"{index}"] = timed(f"{index}", mine)
        actions[f"{index} hand"] = timed(f"{index} hand", theirs)
    times = medians(interleaved(args.runs, actions, warmup=1))
    for index, (name, day, _mine, _theirs, target) in enumerate(cases):
        ms, hand_ms = times[f"{index}"] * 1000, times[f"{index} hand"] * 1000
        shown = " · ".join(f"{k} {v:,}" for k, v in answers[f"{index}"].items())
        kept_at = as_of.get((segment.key, day)) if "saved segment's funnel" in name else (
            as_of.get((edited.key, day)) if "edited" in name else None)
        note = f" · counts as of {kept_at.astimezone(UTC):%H:%M:%S} UTC" if kept_at else ""
        print(f"(a) {name} on {day}: {ms:.0f} ms{f' (target ≤ {FUNNEL_TARGET_MS:.0f} ms)' if target else ''} · "
              f"hand-written {hand_ms:.0f} ms · ratio {ms / hand_ms:.2f}× · runs {args.runs}{note}\n    {shown}",
              flush=True)
        if target and ms > FUNNEL_TARGET_MS:
            failures.append(f"{name} on {day}")
        if answers[f"{index}"] != answers[f"{index} hand"]:
            failures.append(f"{name} on {day} differs from the hand-written one: {answers[f'{index} hand']}")

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
