"""Benchmark: making the day's tasks (今日任务) for 1,000,000 customers, and /today for one operator.

Builds (or reuses) a database with 1,000,000 customers (one friendship each) on 50 accounts, 60
operators (50 own an account of 20,000 customers; 10 more help on two accounts each), 10 cadence
policies and each customer's next-due day (``cadence_due``, spread from 10 days overdue to 50 days
ahead), purchase facts for 333,000 of them, a birthday for 333,000, 1,000 open follow-ups, 500
unanswered conversations, new friends without a remark name and friends who deleted us today. Then:

  (a) ``maintenance.service.generate_tasks`` — every kind of candidate read, prioritised, capped at
      50 per operator and written — target ≤ 60 s, printed beside a bare ``SELECT`` of the due
      customers (``cadence_due.next_due_on <= today``) fetched to the client, in the same run;
      the day's tasks are deleted before each run so every run writes them all;
  (b) ``GET /today`` (the console page) and ``GET /api/v1/tasks?due=today`` for an operator whose
      account has 20,000 customers — target ≤ 100 ms median for the page.

Out of scope (issue 20's numbers name them): the 5 running customer SOPs — SOPs are not built yet,
so this generation has no SOP steps to make; it is measured without them.

Exits non-zero when a target is missed.

Usage:  .venv/bin/python benchmarks/today.py [--database URL] [--runs 3] [--page-runs 21] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs). For PostgreSQL pass
``--database postgresql+psycopg://postgres@127.0.0.1:5432/<your own database>``.
Data are written with executemany of tuples (SQLite) or COPY (PostgreSQL). Not part of pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from machine import interleaved, medians, print_header
from segments import Loader, drop_indexes
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.migrate import upgrade
from siyu.core.models import AppSetting
from siyu.core.settings import get_settings, local_today
from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service

CUSTOMERS = 1_000_000
ACCOUNTS = 50
OPERATORS = 60
POLICIES = 10
SEED = 2026
MARKER_KEY = "benchmark_today"
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_today.db")
PASSWORD = "benchmark-password-today"  # noqa: S105 - a throwaway user of a throwaway database
GENERATE_TARGET_S = 60.0
PAGE_TARGET_MS = 100.0
LEVELS = ("", "", "普通会员", "银卡会员", "金卡会员")
HEAVY_TABLES = ("customer", "friendship", "cadence_due", "customer_purchase_facts", "custom_field_value",
                "follow_up", "conversation")


def spec(customers: int) -> dict[str, int]:
    return {"version": 2, "customers": customers}


def ready(engine: Engine, customers: int) -> bool:
    try:
        with Session(engine) as session:
            row = session.get(AppSetting, MARKER_KEY)
            return row is not None and row.value == spec(customers)
    except Exception:  # a missing table means "not built"
        return False


def build(engine: Engine, url: str, customers: int) -> None:
    from siyu.team import service as team_service
    from siyu.team.schemas import UserIn

    started = time.perf_counter()
    upgrade(url)
    with Session(engine) as session:
        customers_service.ensure_default_tag_groups(session)
        # Operators through the service (a real password hash for the page login), accounts after them.
        for n in range(1, OPERATORS + 1):
            team_service.create_user(session, data=UserIn(username=f"op{n:02d}", password=PASSWORD,
                                                          role="operator"), actor=SYSTEM)  # type: ignore[arg-type]
        session.commit()
    loader = Loader(engine)
    indexes = drop_indexes(engine, loader, HEAVY_TABLES)
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    stamp = loader.time(now)
    today = local_today()
    loader.rows("account", ("id", "kind", "display_name", "wechat_id", "wecom_userid", "store", "brand", "tier_served",
                            "owner_user_id", "friend_capacity", "status", "positioning", "avatar_url", "signature",
                            "greeting", "moments_cover_url", "created_at"),
                [(i, "wecom", f"山野茶舍·{i:02d}", "", f"bench{i:02d}", "西湖店", "山野茶舍", "", i, 20000, "active",
                  "", "", "", "", "", stamp) for i in range(1, ACCOUNTS + 1)])
    links = [(i, i) for i in range(1, ACCOUNTS + 1)]
    links += [(ACCOUNTS + k, 1 + (2 * k) % ACCOUNTS) for k in range(1, OPERATORS - ACCOUNTS + 1)]
    links += [(ACCOUNTS + k, 1 + (2 * k + 1) % ACCOUNTS) for k in range(1, OPERATORS - ACCOUNTS + 1)]
    loader.rows("user_account", ("user_id", "account_id"), links)
    loader.rows("cadence_policy", ("id", "name", "conditions", "every_days", "quiet_days", "position", "active",
                                   "matched", "created_at", "updated_at"),
                [(p, f"节奏{p}", None, (3, 7, 7, 14, 14, 30, 30, 30, 60, 90)[p - 1], 3, p, True,
                  customers // POLICIES, stamp, stamp) for p in range(1, POLICIES + 1)])

    def customer_rows() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customers + 1):
            yield (cid, f"顾客{cid}", "", "", "", "", "", "", "", "", "", "", "", "user", LEVELS[cid % len(LEVELS)],
                   0, 0, 0, None, 50, stamp, stamp)

    loader.rows("customer", ("id", "name", "wechat_id", "avatar_url", "source", "gender", "age_band", "city", "job",
                             "income_band", "family", "objective_notes", "emotional_notes", "stage", "level",
                             "contact_count", "purchase_count", "purchase_total", "last_touch_at", "completeness",
                             "created_at", "updated_at"), customer_rows())
    recent = loader.time(now - timedelta(hours=5))
    old = loader.time(now - timedelta(days=200))

    def friendships() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customers + 1):
            new = rng.random() < 0.002  # ~2,000 new friends, half without a remark name
            deleted = rng.random() < 0.0005  # ~500 deleted us today
            yield (cid, cid, 1 + cid % ACCOUNTS, "" if new and rng.random() < 0.5 else f"顾客{cid}-爱喝茶", "", "",
                   "deleted" if deleted else "active", "", recent if new else old, recent if deleted else None)

    loader.rows("friendship", ("id", "customer_id", "account_id", "remark_name", "salutation", "description", "status",
                               "channel_state", "added_at", "removed_at"), friendships())
    days = [(today + timedelta(days=d)).isoformat() for d in range(-10, 51)]
    loader.rows("cadence_due", ("customer_id", "account_id", "policy_id", "next_due_on", "last_private_at"),
                ((cid, 1 + cid % ACCOUNTS, 1 + cid % POLICIES, days[rng.randrange(len(days))], None)
                 for cid in range(1, customers + 1)))
    bought = [loader.time(now - timedelta(days=d)) for d in range(1, 400)]
    loader.rows("customer_purchase_facts",
                ("customer_id", "purchase_count", "total_spent", "avg_order_value", "refunded_total",
                 "first_purchase_at", "last_purchase_at", "favourite_category", "new_launch_purchases", "updated_at"),
                ((cid, 2, rng.randrange(50, 20000), 300, 0, bought[-1], bought[rng.randrange(len(bought))], "绿茶", 0,
                  stamp) for cid in range(3, customers + 1, 10 // 3)))
    loader.rows("custom_field", ("id", "key", "label", "field_type", "choices", "sort_order"),
                [(1, "birthday", "生日", "date", "[]", 1)])
    loader.rows("custom_field_value", ("customer_id", "field_id", "value"),
                ((cid, 1, f"19{70 + cid % 30}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}")
                 for cid in range(1, customers + 1, 10 // 3)))
    loader.rows("follow_up", ("id", "customer_id", "account_id", "due_on", "note", "done", "created_at"),
                ((n, cid, 1 + cid % ACCOUNTS, days[rng.randrange(0, 20)], "回访新茶口感", False, stamp)
                 for n, cid in enumerate(rng.sample(range(1, customers + 1), 1_000), start=1)))
    loader.rows("conversation", ("id", "key", "account_id", "customer_id", "group_key", "channel", "status",
                                 "unanswered", "priority", "last_message_preview", "opened_at", "created_at"),
                ((n, f"bench:{cid}", 1 + cid % ACCOUNTS, cid, "", "personal", "open", 2, 0, "在吗", recent, stamp)
                 for n, cid in enumerate(rng.sample(range(1, customers + 1), 500), start=1)))
    for sql in indexes:
        loader.execute(sql)
    if loader.postgres:
        loader.execute("ANALYZE")
        loader.execute("SELECT setval(pg_get_serial_sequence('customer', 'id'), (SELECT max(id) FROM customer))")
    else:
        loader.execute("ANALYZE")
    loader.close()
    with Session(engine) as session:
        session.merge(AppSetting(key=MARKER_KEY, value=spec(customers)))
        session.commit()
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page) or re.search(
        r'name="csrf-token" content="([^"]+)"', page)
    assert found, "no CSRF token"
    return found.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-runs", type=int, default=21)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    url = args.database or f"sqlite:///{DEFAULT_PATH}"
    if args.rebuild and url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    print_header(f"今日任务: {args.customers:,} customers, {ACCOUNTS} accounts, {OPERATORS} operators, "
                 f"{POLICIES} cadence policies (no SOPs: not built yet)")
    print(f"database: {url.split('@')[-1]}", flush=True)
    os.environ.update({"SIYU_DATABASE_URL": url, "SIYU_WORKER_IN_PROCESS": "0",
                       "SIYU_SECRET_KEY": "today-benchmark-secret-key"})
    get_settings.cache_clear()
    from siyu.core import db as core_db

    core_db.reset_engine()
    engine = make_engine(url)
    if not ready(engine, args.customers):
        if url.startswith("sqlite:///"):  # built for another spec, or half built: start again
            engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
            engine = make_engine(url)
        print("building the data… (PostgreSQL: give an empty database)", flush=True)
        build(engine, url, args.customers)
    from siyu.maintenance import service
    from siyu.maintenance.models import Task

    failures: list[str] = []
    today = local_today()
    results: list[Any] = []

    def generate() -> None:
        with Session(engine) as session:
            session.execute(delete(Task).where(Task.day == today))
            session.commit()
        with Session(engine) as session:
            started = time.perf_counter()
            results.append(service.generate_tasks(session))
            session.commit()
            results.append(time.perf_counter() - started)

    def bare() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT customer_id, account_id FROM cadence_due WHERE next_due_on <= :d"),
                         {"d": today}).fetchall()

    samples = interleaved(args.runs, {"generate": generate, "bare": bare})
    result = results[-2]
    med = medians(samples)
    med["generate"] = statistics.median(float(r) for r in results[1::2])  # without deleting the day's tasks
    print(f"(a) generate_tasks: median {med['generate']:.1f} s (target ≤ {GENERATE_TARGET_S:.0f} s)"
          f"  ·  bare SELECT of the due customers: median {med['bare']:.2f} s"
          f"  ·  due {result.due_customers:,}, candidates {result.candidates:,}, tasks {result.created:,} "
          f"{dict(sorted(result.by_kind.items()))}", flush=True)
    if med["generate"] > GENERATE_TARGET_S:
        failures.append(f"generate_tasks {med['generate']:.1f} s > {GENERATE_TARGET_S:.0f} s")

    # (b) /today for op01 (account 1: 20,000 customers), the page and the API.
    from fastapi.testclient import TestClient

    from siyu.app import create_app

    with TestClient(create_app()) as client:
        login = client.get("/login")
        answer = client.post("/login", data={"username": "op01", "password": PASSWORD, "csrf_token": _csrf(login.text),
                                             "next": "/"}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        token = client.post("/api/v1/auth/token", data={"username": "op01", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        with Session(engine) as session:
            friends = session.scalar(text("SELECT count(*) FROM friendship WHERE account_id = 1"))
        page = client.get("/today")
        shown = page.text.count('data-testid="task"')
        assert page.status_code == 200 and shown > 0, (page.status_code, shown)

        def today_page() -> None:
            assert client.get("/today").status_code == 200

        def today_api() -> None:
            assert client.get("/api/v1/tasks?due=today", headers=headers).status_code == 200

        page_samples = interleaved(args.page_runs, {"page": today_page, "api": today_api}, warmup=2)
    pm = medians(page_samples)
    print(f"(b) /today for op01 ({friends:,} customers, {shown} tasks shown): page median {pm['page'] * 1000:.1f} ms "
          f"(target ≤ {PAGE_TARGET_MS:.0f} ms)  ·  API median {pm['api'] * 1000:.1f} ms", flush=True)
    if pm["page"] * 1000 > PAGE_TARGET_MS:
        failures.append(f"/today {pm['page'] * 1000:.1f} ms > {PAGE_TARGET_MS:.0f} ms")
    with Session(engine) as session:
        left = session.scalar(select(Task.id).limit(1))
    print(f"tasks kept: {'yes' if left else 'no'} · {datetime.now(UTC):%H:%M:%S} UTC")
    for failure in failures:
        print(f"MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
