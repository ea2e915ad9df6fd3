"""Benchmark: the channel report over 1,000 channels × 365 days with 1,000,000 customers (SQLite).

Builds (or reuses) a SQLite file where 1,000,000 customers were each added through one
of 1,000 channels on one of the last 365 days (8% later deleted, 10% bought something),
then times ``channels.service.report`` for the whole year (target ≤1 s) beside the same
aggregates written by hand in SQL (the two take turns; medians), checks both agree, and
exits non-zero when the target is missed.

Usage:  .venv/bin/python benchmarks/channel_report.py [PATH] [--runs 5] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from machine import interleaved, medians, print_header
from sqlalchemy.orm import Session

from siyu.channels import service
from siyu.core.db import make_engine
from siyu.core.migrate import upgrade

CUSTOMERS = 1_000_000
CHANNELS = 1_000
DAYS = 365
TARGET_SECONDS = 1.0
MARKER = {"benchmark": "channel_report", "version": 1, "customers": CUSTOMERS}
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_channels.db")


def stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def ready(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with sqlite3.connect(path) as conn:
            row = conn.execute("SELECT value FROM app_setting WHERE key = 'benchmark'").fetchone()
            return row is not None and json.loads(row[0]) == MARKER
    except sqlite3.Error:
        return False


def build(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    upgrade(f"sqlite:///{path}")
    rng = random.Random(2025)
    now = datetime.now(UTC)
    today = date.today()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO account (id, kind, display_name, wechat_id, store, brand, tier_served, friend_capacity, "
                 "status, positioning, avatar_url, signature, greeting, moments_cover_url, created_at) VALUES "
                 "(1, 'wecom', '山野茶舍', '', '', '', '', 2000000, 'active', '', '', '', '', '', ?)", (stamp(now),))
    models = ("fixed", "per_add", "per_promoter_reward")
    conn.executemany(
        "INSERT INTO channel (id, key, name, kind, status, cost_model, cost_amount, account_strategy, account_ids, "
        "tag_names, incentive_kind, incentive_text, welcome_text, fallback_text, wecom_config_id, qr_url, rotation, "
        "alert, created_at) VALUES (?, ?, ?, 'store_staff', 'active', ?, ?, 'single', '[1]', '[]', 'none', '', '', "
        "'', '', '', 0, '', ?)",
        [(i, f"chbench{i:05d}", f"渠道{i:04d}", models[i % 3], str(rng.choice((0, 3, 5, 2000))), stamp(now))
         for i in range(1, CHANNELS + 1)])
    conn.executemany("INSERT INTO customer (id, name, wechat_id, avatar_url, source, gender, age_band, city, job, "
                     "income_band, family, objective_notes, emotional_notes, stage, level, contact_count, "
                     "purchase_count, purchase_total, completeness, created_at, updated_at) VALUES "
                     "(?, ?, '', '', '', '', '', '', '', '', '', '', '', 'traffic', '', 0, 0, 0, 0, ?, ?)",
                     ((i, f"顾客{i}", stamp(now), stamp(now)) for i in range(1, CUSTOMERS + 1)))
    adds = []
    purchases = []
    for customer in range(1, CUSTOMERS + 1):
        day = rng.randrange(DAYS)
        added = now - timedelta(days=day, seconds=rng.randrange(86400))
        removed = stamp(added + timedelta(days=rng.uniform(0, 60))) if rng.random() < 0.08 else None
        adds.append((customer, 1 + customer % CHANNELS, customer, 1, 1, stamp(added),
                     (today - timedelta(days=day)).isoformat(), removed))
        if rng.random() < 0.10:
            purchases.append((customer, 1, "purchase", "", str(rng.choice((68, 128, 298, 598))),
                              stamp(added + timedelta(days=rng.uniform(0, 30))), stamp(now)))
    conn.executemany("INSERT INTO channel_add (id, channel_id, customer_id, account_id, first_touch, added_at, "
                     "added_on, removed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", adds)
    conn.executemany("INSERT INTO touch (customer_id, account_id, kind, content, amount, occurred_at, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", purchases)
    conn.execute("INSERT INTO app_setting (key, value, updated_at) VALUES ('benchmark', ?, ?)",
                 (json.dumps(MARKER), stamp(now)))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


HAND_SQL_FLAT = """
SELECT a.channel_id, count(*), count(a.removed_at) FROM channel_add a
WHERE a.added_on BETWEEN :since AND :until GROUP BY a.channel_id
"""
HAND_REVENUE = """
SELECT b.channel_id, count(DISTINCT t.customer_id), sum(t.amount)
FROM touch t JOIN channel_add b ON b.customer_id = t.customer_id
WHERE t.kind = 'purchase' AND b.first_touch AND t.occurred_at >= b.added_at
  AND +b.added_on BETWEEN :since AND :until  -- "+": start from the purchases, as a careful DBA would
GROUP BY b.channel_id
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    print_header("channel_report: the channel report over a year at 1,000,000 customers (SQLite)")
    path = Path(args.path)
    if args.rebuild or not ready(path):
        print(f"building {CUSTOMERS:,} customers across {CHANNELS:,} channels and {DAYS} days in {path} …")
        sys.stdout.flush()
        started = time.perf_counter()
        build(path)
        print(f"built in {time.perf_counter() - started:.0f} s")
    engine = make_engine(f"sqlite:///{path}")
    until, since = date.today(), date.today() - timedelta(days=DAYS)
    params = {"since": since.isoformat(), "until": until.isoformat()}

    def run_service() -> dict[int, service.ChannelFigures]:
        with Session(engine) as session:
            return service.report(session, since=since, until=until)

    def run_hand() -> tuple[list[tuple[int, int, int]], list[tuple[int, int, float]]]:
        conn = sqlite3.connect(path)
        try:
            flat = conn.execute(HAND_SQL_FLAT.replace(":since", "?").replace(":until", "?"),
                                (params["since"], params["until"])).fetchall()
            revenue = conn.execute(HAND_REVENUE.replace(":since", "?").replace(":until", "?"),
                                   (params["since"], params["until"])).fetchall()
            return flat, revenue
        finally:
            conn.close()

    figures = run_service()
    flat, revenue = run_hand()
    same = all(figures[c].adds == n and figures[c].deletions == d for c, n, d in flat) and all(
        figures[c].purchasers == p for c, p, _r in revenue) and len(figures) == len(flat)
    # Service and hand SQL take turns, so load on the shared machine hits both alike.
    times = medians(interleaved(args.runs, {"service": run_service, "hand": run_hand}))
    service_s, hand_s = times["service"], times["hand"]
    print(f"{len(figures):,} channels, {sum(f.adds for f in figures.values()):,} adds over {DAYS} days")
    print(f"  channels.service.report (incl. retention, cost, ROI)  {service_s * 1000:8.0f} ms")
    print(f"  hand-written SQL (adds, deletions, buyers, revenue)   {hand_s * 1000:8.0f} ms   "
          f"ratio {service_s / hand_s:.2f}x")
    print(f"  same counts as the hand-written SQL: {'yes' if same else 'NO'}")
    ok = same and service_s <= TARGET_SECONDS
    print(f"  target ≤{TARGET_SECONDS:.0f} s: {'PASS' if ok else 'FAIL'}")
    engine.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
