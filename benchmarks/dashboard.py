"""Benchmark: the admin dashboard's company numbers — precomputed by the job, read by the page — on 1,000,000 customers.

Builds (or reuses) the analytics benchmark's data (``benchmarks/analytics.py``'s loader: 1,000,000
customers added over two years, one friendship each, two years of stage transitions, 5,000,000 orders
and 20,000,000 touches — the figures read both) in its own database file (or the analytics run's, with
``--database``), then measures, each beside the same aggregate written by hand in SQL in the same run:

  (a) the job (``goals.dashboard.refresh_figures``): its periodic run (today's company figures
      computed and stored; yesterday's and last week's are kept once their day ended) — target
      ≤ 5 min — and the first fill of all three days; baseline: the same figures for the same days by
      hand-written SQL;
  (b) the dashboard's read of those numbers (``goals.dashboard.read_figures``) — target ≤ 300 ms;
      baseline: today's figures computed live by hand-written SQL (what the page would cost without
      the job), interleaved.

Exits non-zero when a target is missed or a stored figure differs from the hand-written one.

Usage:  .venv/bin/python benchmarks/dashboard.py [--database URL] [--customers N] [--runs 7] [--rebuild]
``--customers 20000`` makes a smoke run. Not part of pytest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from analytics import CUSTOMERS, build, hand_funnel, ready
from machine import database_url, interleaved, medians, print_header
from sqlalchemy import delete, text
from sqlalchemy.orm import Session

from siyu.analytics.service import day_start
from siyu.core.db import make_engine
from siyu.core.migrate import upgrade
from siyu.core.settings import local_today
from siyu.goals import dashboard
from siyu.goals.models import DashboardFigure

DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_dashboard.db")
JOB_TARGET_S = 300.0
READ_TARGET_MS = 300.0

HAND = {
    "customers": "SELECT count(*) FROM customer WHERE merged_into_id IS NULL AND created_at < :end",
    "adds": "SELECT count(*) FROM friendship WHERE added_at >= :start AND added_at < :end",
    "deletions": "SELECT count(*) FROM friendship WHERE status = 'deleted' AND removed_at >= :start "
                 "AND removed_at < :end",
    "touches": "SELECT count(*) FROM touch WHERE occurred_at >= :start AND occurred_at < :end "
               "AND kind IN ('chat', 'moments_like', 'moments_comment', 'moments_engaged', 'purchase', "
               "'offline_event', 'note')",
    "revenue": "SELECT coalesce(sum(amount - refunded_amount), 0) FROM customer_order WHERE paid_at >= :start "
               "AND paid_at < :end AND status IN ('paid', 'shipped', 'completed', 'partly_refunded')",
}


def hand_figures(session: Session, day: date, postgres: bool) -> dict[str, float]:
    def bound(d: date) -> Any:
        moment = day_start(d)
        return moment if postgres else moment.strftime("%Y-%m-%d %H:%M:%S.%f")

    params = {"start": bound(day), "end": bound(day + timedelta(days=1))}
    out = {name: float(session.execute(text(sql), params).scalar_one() or 0) for name, sql in HAND.items()}
    out["net_adds"] = out["adds"] - out["deletions"]
    out["fans"] = float(hand_funnel(session, params["end"])["fan"])
    out["revenue"] = round(out["revenue"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    url = database_url(args.database, DEFAULT_PATH, rebuild=args.rebuild)
    print_header(f"Dashboard: the admin's company numbers over {args.customers:,} customers")
    print(f"database: {url.split('@')[-1]}", flush=True)
    engine = make_engine(url)
    if not ready(engine, args.customers):
        print("building the data…", flush=True)
        build(engine, url, args.customers)
    upgrade(url)
    postgres = engine.dialect.name == "postgresql"
    failures: list[str] = []
    today = local_today()
    days = dashboard.comparison_days(today)

    # (a) the job beside the hand-written figures for the same days: first the fill (today, yesterday and
    # the same day last week: once, on an empty table), then the periodic run (today only: the earlier
    # days are kept once their day ended) — the run Huey repeats every 5 minutes, the target's.
    with Session(engine) as session:
        session.execute(delete(DashboardFigure))
        session.commit()
    timings: dict[str, float] = {}
    hand: dict[date, dict[str, float]] = {}
    for name, only_today in (("fill", False), ("periodic", True)):
        started = time.perf_counter()
        with Session(engine) as session:
            done = dashboard.refresh_figures(session, today=today)
            session.commit()
        timings[name] = time.perf_counter() - started
        assert (done == [today]) == only_today, done
        started = time.perf_counter()
        with Session(engine) as session:
            hand.update({day: hand_figures(session, day, postgres) for day in (done if only_today else days)})
        timings[f"hand {name}"] = time.perf_counter() - started
    print(f"(a) the job's periodic run (today's company figures): {timings['periodic']:.1f} s (target ≤ "
          f"{JOB_TARGET_S:.0f} s) · hand-written {timings['hand periodic']:.1f} s · ratio "
          f"{timings['periodic'] / timings['hand periodic']:.2f}×\n"
          f"    the first fill (3 days): {timings['fill']:.1f} s · hand-written {timings['hand fill']:.1f} s",
          flush=True)
    if timings["periodic"] > JOB_TARGET_S:
        failures.append("job")
    with Session(engine) as session:
        stored, _stamp = dashboard.read_figures(session, today=today)
    for day in days:
        mine = {name: stored.get(name, {}).get(day) for name in hand[day]}
        if mine != hand[day]:
            failures.append(f"figures of {day} differ: stored {mine}, hand-written {hand[day]}")
    print("    " + " · ".join(f"{k} {v:,.0f}" for k, v in hand[today].items()), flush=True)

    # (b) the page's read against the same numbers computed live by hand.
    answers: dict[str, Any] = {}

    def read() -> None:
        with Session(engine) as session:
            answers["read"] = dashboard.read_figures(session, today=today)[0]

    def live() -> None:
        with Session(engine) as session:
            answers["live"] = hand_figures(session, today, postgres)

    times = medians(interleaved(args.runs, {"read": read, "live": live}, warmup=1))
    read_ms, live_ms = times["read"] * 1000, times["live"] * 1000
    print(f"(b) the dashboard's read: {read_ms:.1f} ms (target ≤ {READ_TARGET_MS:.0f} ms) · hand-written live "
          f"{live_ms:.0f} ms · ratio {read_ms / live_ms:.3f}× · runs {args.runs}", flush=True)
    if read_ms > READ_TARGET_MS:
        failures.append("read")
    if {k: v.get(today) for k, v in answers["read"].items()} != answers["live"]:
        failures.append("the read differs from the live hand-written figures")
    engine.dispose()
    if failures:
        print("MISSED: " + "; ".join(failures))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
