"""Benchmark: importing 500,000 orders from CSV (issue 19 target: ≤ 90 s, peak RSS ≤ 500 MB).

Writes a UTF-8 CSV of 500,000 orders of a tea shop (order number, paid time, amount, status,
refunds, store, buyer phone, SKU, product, category, quantity, unit price) whose buyers are
100,000 customers already in Siyu (found by phone) and, for one order in five, phones Siyu does
not know (those wait in the review queue). Then runs two child processes on it, each reporting
its wall time and its own peak RSS:

- baseline: Python's ``csv`` module reading every row of the same file (no checks, no database);
- import:   ``siyu.orders.imports.run_in_batches`` — what the background import job runs — into a
            fresh, migrated SQLite file holding the 100,000 customers: the whole file checked, then
            written in batches of orders (buyers matched, lines, timeline entries, purchase facts,
            stages, levels and 购买 tags kept current batch by batch).

Baseline and import take turns (``--runs``, default 1); medians are printed beside the targets,
with the date, the machine and its load, and the script exits non-zero when a target is missed.
With ``--postgres postgresql+psycopg://user@host:port/db`` the import writes into a fresh PostgreSQL
database created next to that one (``siyu_orders_bench``, dropped afterwards) instead of SQLite.
Usage:
    .venv/bin/python benchmarks/orders.py [--rows 500000] [--customers 100000] [--runs 1] [--postgres URL]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from machine import cpu_seconds, csv_read_baseline, peak_rss_mb, print_header

TARGET_SECONDS = 90.0  # for 500,000 orders
TARGET_RSS_MB = 500.0
HEADER = ["订单号", "付款时间", "实付金额", "订单状态", "退款金额", "门店", "手机号", "商品编码", "商品名称", "品类",
          "数量", "单价"]
PRODUCTS = [("SY-LJ-100", "明前龙井 100g", "绿茶", 268), ("SY-RG-150", "武夷岩茶·肉桂 150g", "岩茶", 198),
            ("SY-YZ-100", "白毫银针 100g", "白茶", 328), ("SY-PE-357", "熟普洱 357g", "普洱", 238),
            ("SY-ZS-200", "正山小种 200g", "红茶", 158), ("SY-LP-10", "桂花乌龙冷泡茶 10包", "乌龙", 59)]
STORES = ["西湖店", "静安店", "小程序商城", "视频号直播间"]


def phone_of(n: int) -> str:
    return f"139{n:08d}"


def write_file(path: Path, rows: int, customers: int) -> None:
    rng = random.Random(500_000)
    start = datetime(2025, 12, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for n in range(rows):
            sku, name, category, price = rng.choice(PRODUCTS)
            quantity = rng.choice((1, 1, 1, 2, 3))
            amount = price * quantity
            refund, status = 0, "已完成"
            if rng.random() < 0.03:
                refund, status = amount // 4, "部分退款"
            buyer = rng.randrange(customers) if rng.random() < 0.8 else customers + rng.randrange(50_000)
            paid = start + timedelta(seconds=rng.randrange(300 * 86400))
            writer.writerow([f"SY{n:09d}", paid.strftime("%Y-%m-%d %H:%M:%S"), f"{amount}.00", status,
                             f"{refund}.00" if refund else "", rng.choice(STORES), phone_of(buyer), sku, name,
                             category, quantity, f"{price}.00"])




def seed_customers(count: int) -> None:
    """The shop's customers, each with one friendship and a phone, inserted directly (not timed)."""
    from sqlalchemy import insert, text

    from siyu.accounts import service as accounts_service
    from siyu.accounts.schemas import AccountIn
    from siyu.core import db as core_db
    from siyu.core.db import utcnow
    from siyu.core.viewer import SYSTEM
    from siyu.customers import service as customers_service
    from siyu.customers.models import Customer, Friendship, Phone

    with core_db.transaction() as session:
        customers_service.ensure_default_tag_groups(session)
        account = accounts_service.create_account(session, data=AccountIn(
            display_name="订单基准", wechat_id="bench_orders", kind="personal"), actor=SYSTEM)
        now = utcnow()
        first = 1000  # past the account's own rows
        for start in range(0, count, 10_000):
            ids = range(first + start, first + min(count, start + 10_000))
            session.execute(insert(Customer), [{"id": i, "name": f"顾客{i}", "created_at": now, "updated_at": now}
                                               for i in ids])
            session.execute(insert(Friendship), [{"id": i, "customer_id": i, "account_id": account.id,
                                                  "added_at": now} for i in ids])
            session.execute(insert(Phone), [{"friendship_id": i, "customer_id": i, "number": phone_of(i - first)}
                                            for i in ids])
        if session.get_bind().dialect.name == "postgresql":  # explicit ids do not move the sequences
            for table in ("customer", "friendship"):
                session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :last)"),
                                {"last": first + count})


def child_import(path: Path, database: str, customers: int) -> dict[str, float]:
    os.environ["SIYU_DATABASE_URL"] = database if "://" in database else f"sqlite:///{database}"
    from sqlalchemy import func, select

    from siyu.core import db as core_db
    from siyu.core.migrate import upgrade
    from siyu.core.viewer import SYSTEM
    from siyu.customers.imports.service import open_source
    from siyu.orders import imports
    from siyu.orders.models import CustomerPurchaseFacts, Order

    upgrade(os.environ["SIYU_DATABASE_URL"])
    seed_customers(customers)
    started, cpu_before = time.perf_counter(), cpu_seconds()
    result = imports.run_in_batches(core_db.transaction, source=open_source(path), viewer=SYSTEM, filename=path.name)
    seconds = time.perf_counter() - started
    with core_db.transaction() as session:
        stored = session.scalar(select(func.count()).select_from(Order)) or 0
        with_facts = session.scalar(select(func.count()).select_from(CustomerPurchaseFacts)) or 0
    core_db.reset_engine()
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), "orders": result.orders, "created": result.counts.created,
            "unmatched": result.counts.unmatched, "stored": stored, "with_facts": with_facts,
            "cpu": cpu_seconds() - cpu_before}


@contextmanager
def fresh_postgres(base: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "siyu_orders_bench"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_child(kind: str, *args: str) -> dict[str, float]:
    output = subprocess.run([sys.executable, __file__, "--child", kind, *args],  # noqa: S603 - this script
                            check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1, help="alternating runs of baseline and import")
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL: import into a fresh database beside it")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        figures = (csv_read_baseline(Path(rest[0]), encoding="utf-8") if kind == "baseline"
                   else child_import(Path(rest[0]), rest[1], int(rest[2])))
        print(json.dumps(figures))
        return 0

    print_header("orders: a shop's order export imported from CSV")
    baselines: list[dict[str, float]] = []
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="siyu-orders-bench-") as folder:
        csv_path = Path(folder) / "订单.csv"
        write_file(csv_path, args.rows, args.customers)
        size_mb = csv_path.stat().st_size / 1024 / 1024
        print(f"{args.rows:,} orders, {size_mb:.1f} MB CSV, {args.customers:,} customers in Siyu; "
              f"{args.runs} run(s) of each, taking turns", flush=True)
        for run in range(args.runs):
            baselines.append(run_child("baseline", str(csv_path)))
            if args.postgres:
                with fresh_postgres(args.postgres) as url:
                    runs.append(run_child("import", str(csv_path), url, str(args.customers)))
            else:
                database = Path(folder) / f"orders-{run}.db"
                runs.append(run_child("import", str(csv_path), str(database), str(args.customers)))
                database.unlink()
            print(f"  run {run + 1}: import {runs[-1]['seconds']:.1f} s (CPU {runs[-1]['cpu']:.1f} s), "
                  f"peak RSS {runs[-1]['rss_mb']:.0f} MB; {runs[-1]['created']:,.0f} orders, "
                  f"{runs[-1]['unmatched']:,.0f} to review, {runs[-1]['with_facts']:,.0f} customers with facts",
                  flush=True)
    assert all(r["created"] == args.rows == r["stored"] for r in runs), runs
    baseline = {key: statistics.median(b[key] for b in baselines) for key in ("seconds", "rss_mb")}
    imported = {key: statistics.median(r[key] for r in runs) for key in ("seconds", "rss_mb", "cpu")}
    worst_rss = max(r["rss_mb"] for r in runs)
    where = "PostgreSQL" if args.postgres else "SQLite    "
    print(f"baseline  csv.reader only         {baseline['seconds']:8.2f} s   peak RSS {baseline['rss_mb']:6.0f} MB")
    print(f"import    check + write {where}  {imported['seconds']:8.2f} s   peak RSS {imported['rss_mb']:6.0f} MB"
          f"   (runs {', '.join(format(r['seconds'], '.1f') for r in runs)} s)")
    print(f"          of which CPU time       {imported['cpu']:8.2f} s")
    print(f"ratio import / csv read: {imported['seconds'] / baseline['seconds']:.0f}×   "
          f"({args.rows / imported['seconds']:,.0f} orders/s)")
    time_ok = imported["seconds"] <= TARGET_SECONDS * args.rows / 500_000
    rss_ok = worst_rss <= TARGET_RSS_MB
    print(f"target ≤ {TARGET_SECONDS:.0f} s per 500,000 orders: {'PASS' if time_ok else 'FAIL'};  "
          f"peak RSS ≤ {TARGET_RSS_MB:.0f} MB (worst run {worst_rss:.0f} MB): {'PASS' if rss_ok else 'FAIL'}")
    return 0 if time_ok and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
