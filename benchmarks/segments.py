"""Benchmark: RFM refresh and a four-condition segment over 1,000,000 customers and 5,000,000 orders.

Builds (or reuses) a database with 1,000,000 customers (one friendship each, 50 accounts),
~1,500,000 tag links, 5,000,000 orders with one line each (eight tea categories, two years,
refunds) and ~2,000,000 private-chat touches (``last_touch_at`` consistent with them), then:

  (a) the RFM refresh (``segments.rfm.refresh_all``: aggregate, quintiles, eight segments,
      rewrite of ``customer_rfm``) — target ≤ 60 s — beside one hand-written aggregate query
      (per customer: last order, order count, money kept) fetched to the client;
  (b) a segment of four conditions — tag AND RFM segment AND bought a category in 90 days AND
      no private chat for 30 days — through the one compiled path (``CustomerFilter(conditions=…)``):
      its count as the builder shows it (``count_customers``) — target ≤ 500 ms — and the first
      page of 50 (``list_customers``) — target ≤ 200 ms — each beside the same query written by
      hand in SQL, and each ≤ 2× it. Runs are interleaved (product, hand, product, …); medians.

Exits non-zero when a target is missed or the product's answer differs from the hand-written one.

Usage:  .venv/bin/python benchmarks/segments.py [--database URL] [--runs 9] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs). For PostgreSQL pass
``--database postgresql+psycopg://postgres@127.0.0.1:5432/<your own database>``.
Not part of pytest: building the data takes a few minutes.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from machine import database_url, interleaved, medians, print_header
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.migrate import upgrade
from siyu.core.models import AppSetting
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service
from siyu.customers.service import CustomerFilter
from siyu.segments import rfm

CUSTOMERS = 1_000_000
ORDERS = 5_000_000
ACCOUNTS = 50
TAGS = 12
CATEGORIES = ("绿茶", "红茶", "乌龙", "白茶", "普洱", "花茶", "茶具", "礼盒")
SEED = 2026
POOL = 200_000  # distinct timestamps to draw from
MARKER_KEY = "benchmark_segments"
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_segments.db")
RFM_TARGET_S = 60.0
COUNT_TARGET_MS = 500.0
PAGE_TARGET_MS = 200.0
TARGET_RATIO = 2.0
PAGE = 50
TAG_NAME = "白领"  # the tag of the measured segment
CATEGORY = "绿茶"
BOUGHT_DAYS = 90
TOUCH_DAYS = 30


def spec(customers: int, orders: int) -> dict[str, int]:
    return {"version": 1, "customers": customers, "orders": orders}


# ---------------------------------------------------------------- building the data


class Loader:
    """Bulk rows into one table: executemany of tuples on SQLite, COPY on PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        if self.postgres:
            self.raw: Any = engine.raw_connection()
            with self.raw.cursor() as cur:  # the load's rows are consistent by construction: no FK triggers
                cur.execute("SET session_replication_role = replica")
            self.raw.commit()
        else:
            path = engine.url.database
            self.raw = sqlite3.connect(path or "")
            self.raw.execute("PRAGMA journal_mode=WAL")
            self.raw.execute("PRAGMA synchronous=OFF")

    def time(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        stamp = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return stamp + "+00" if self.postgres else stamp

    def rows(self, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> None:
        if self.postgres:
            with self.raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            self.raw.commit()
        else:
            marks = ", ".join("?" for _ in columns)
            self.raw.execute("BEGIN")
            self.raw.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
            self.raw.execute("COMMIT")

    def execute(self, sql: str) -> None:
        if self.postgres:
            with self.raw.cursor() as cur:
                cur.execute(sql)
            self.raw.commit()
        else:
            self.raw.execute(sql)
            self.raw.commit()

    def close(self) -> None:
        self.raw.close()


HEAVY_TABLES = ("customer", "friendship", "customer_tag", "customer_order", "order_line", "touch")


def drop_indexes(engine: Engine, loader: Loader, tables: tuple[str, ...] = HEAVY_TABLES) -> list[str]:
    """Secondary indexes of the big tables, dropped for the load and built again after it."""
    with engine.connect() as conn:
        if loader.postgres:
            rows = conn.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:t) AND indexname NOT LIKE 'pk_%' "
                "AND indexdef NOT LIKE '%UNIQUE%'"), {"t": list(tables)}).all()
        else:
            rows = conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
                f"({', '.join(repr(t) for t in tables)}) AND sql NOT LIKE 'CREATE UNIQUE%'")).all()
    for name, _sql in rows:
        loader.execute(f"DROP INDEX {name}")
    return [sql for _name, sql in rows]


def build(engine: Engine, url: str, customers: int, orders: int) -> None:
    started = time.perf_counter()
    upgrade(url)
    with Session(engine) as session:
        customers_service.ensure_default_tag_groups(session)
        session.commit()
    loader = Loader(engine)
    indexes = drop_indexes(engine, loader)
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    stamp = loader.time(now)
    loader.rows("account", ("id", "kind", "display_name", "wechat_id", "wecom_userid", "store", "brand", "tier_served",
                            "friend_capacity", "status", "positioning", "avatar_url", "signature", "greeting",
                            "moments_cover_url", "created_at"),
                [(i, "wecom", f"山野茶舍·{i:02d}", "", f"bench{i:02d}", "西湖店", "山野茶舍", "", 20000, "active",
                  "", "", "", "", "", stamp) for i in range(1, ACCOUNTS + 1)])
    group_id = 1000
    loader.rows("tag_group", ("id", "name", "kind", "multi_select", "sort_order"),
                [(group_id, "基准人群", "custom", True, 90)])
    tag_names = [TAG_NAME] + [f"人群{i}" for i in range(1, TAGS)]
    first_tag = 1000
    loader.rows("tag", ("id", "group_id", "name", "sort_order"),
                [(first_tag + i, group_id, name, i) for i, name in enumerate(tag_names)])

    # Chat touches first (two per customer on average over a year), so last_touch_at agrees with them.

    # Times are drawn from pools formatted once (formatting per row would cost more than the insert).
    year = sorted((now - timedelta(seconds=rng.uniform(0, 365 * 86400)) for _ in range(POOL)), reverse=True)
    year_text = [loader.time(at) for at in year]
    last_chat: dict[int, int] = {}  # customer → index into year (smaller: more recent)

    def touches() -> Iterator[tuple[Any, ...]]:
        tid = 0
        for cid in range(1, customers + 1):
            for _ in range(rng.choice((0, 1, 2, 3, 4))):
                tid += 1
                k = rng.randrange(POOL)
                if k < last_chat.get(cid, POOL):
                    last_chat[cid] = k
                yield (tid, cid, 1 + cid % ACCOUNTS, "chat", "", year_text[k], stamp)

    loader.rows("touch", ("id", "customer_id", "account_id", "kind", "content", "occurred_at", "created_at"), touches())
    print(f"  touches: {time.perf_counter() - started:.0f} s", flush=True)

    def customer_rows() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customers + 1):
            created = loader.time(now - timedelta(days=400 + cid % 500))
            yield (cid, f"顾客{cid}", "", "", "", "", "", "", "", "", "", "", "", "user", "", 0, 0, 0,
                   year_text[last_chat[cid]] if cid in last_chat else None, 50, created, created)

    loader.rows("customer", ("id", "name", "wechat_id", "avatar_url", "source", "gender", "age_band", "city", "job",
                             "income_band", "family", "objective_notes", "emotional_notes", "stage", "level",
                             "contact_count", "purchase_count", "purchase_total", "last_touch_at", "completeness",
                             "created_at", "updated_at"), customer_rows())
    last_chat.clear()
    loader.rows("friendship", ("id", "customer_id", "account_id", "remark_name", "salutation", "description", "status",
                               "channel_state", "added_at"),
                ((cid, cid, 1 + cid % ACCOUNTS, "", "", "", "active", "", stamp) for cid in range(1, customers + 1)))

    def tag_links() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customers + 1):
            # ~15% hold the measured tag; everyone holds one or two of the rest.
            chosen = {first_tag} if rng.random() < 0.15 else set()
            chosen.update(first_tag + rng.randint(1, TAGS - 1) for _ in range(rng.randint(1, 2)))
            for tag_id in chosen:
                yield (cid, tag_id, stamp)

    loader.rows("customer_tag", ("customer_id", "tag_id", "created_at"), tag_links())
    print(f"  customers, friendships, tags: {time.perf_counter() - started:.0f} s", flush=True)

    load_orders(loader, rng, customers=customers, orders=orders, now=now)
    print(f"  orders and lines: {time.perf_counter() - started:.0f} s", flush=True)
    for sql in indexes:
        loader.execute(sql)
    loader.close()
    vacuum_analyze(engine)
    with Session(engine) as session:
        session.merge(AppSetting(key=MARKER_KEY, value=spec(customers, orders)))
        session.commit()
    print(f"  built in {time.perf_counter() - started:.0f} s (indexes included)", flush=True)


def load_orders(loader: Loader, rng: random.Random, *, customers: int, orders: int, now: datetime) -> None:
    """Exactly ``orders`` orders with one line each (eight tea categories, two years back, refunds) bought by
    ~70 % of customers 1…``customers``, some far more often than others (also ``analytics.py``'s)."""
    stamp = loader.time(now)
    buyers = [cid for cid in range(1, customers + 1) if rng.random() < 0.7]
    weights = [rng.paretovariate(1.5) for _ in buyers]
    per_buyer = orders / sum(weights)
    counts = [max(1, round(w * per_buyer)) for w in weights]
    drift = orders - sum(counts)
    i = 0
    while drift != 0:  # exactly ORDERS orders
        step = 1 if drift > 0 else -1
        if counts[i % len(counts)] + step >= 1:
            counts[i % len(counts)] += step
            drift -= step
        i += 1
    statuses = ["completed"] * 90 + ["paid"] * 3 + ["shipped"] * 3 + ["refunded"] * 3 + ["partly_refunded"]

    def order_rows(lines: bool) -> Iterator[tuple[Any, ...]]:
        local = random.Random(SEED + 1)  # the same orders for both passes
        two_years = [loader.time(now - timedelta(seconds=local.uniform(0, 730 * 86400))) for _ in range(POOL)]
        oid = 0
        for cid, n in zip(buyers, counts, strict=True):
            favourite = local.choice(CATEGORIES)
            for _ in range(n):
                oid += 1
                at = two_years[local.randrange(POOL)]
                amount = local.randint(30, 2000)
                status = local.choice(statuses)
                category = favourite if local.random() < 0.6 else local.choice(CATEGORIES)
                if lines:
                    yield (oid, oid, f"SKU-{category}", category, category, 1, amount, cid, at)
                else:
                    refunded = amount if status == "refunded" else (amount // 2 if status == "partly_refunded" else 0)
                    yield (oid, "bench", f"B{oid:08d}", cid, "matched", "", "", status, amount, 0, "", refunded,
                           "", "", "", "", at, "", stamp, stamp)

    loader.rows("customer_order", ("id", "source", "order_no", "customer_id", "match_state", "matched_by", "store",
                                   "status", "amount", "discount", "coupon_code", "refunded_amount", "buyer_name",
                                   "buyer_phone", "buyer_unionid", "buyer_external_userid", "paid_at", "note",
                                   "created_at", "updated_at"), order_rows(False))
    loader.rows("order_line", ("id", "order_id", "sku", "name", "category", "quantity", "price", "customer_id",
                               "paid_at"), order_rows(True))


def vacuum_analyze(engine: Engine) -> None:
    """Planner statistics, and on PostgreSQL the visibility map too: a freshly loaded (or rewritten) table is
    not yet known to be all-visible, so an index-only probe would still read each row's page. Autovacuum does
    this on its own some time after a large insert; a fair setup step here, before either side is timed."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()


def ready(engine: Engine, customers: int, orders: int) -> bool:
    try:
        with Session(engine) as session:
            row = session.get(AppSetting, MARKER_KEY)
            return row is not None and row.value == spec(customers, orders)
    except Exception:
        return False


# ---------------------------------------------------------------- the hand-written queries


HAND_AGGREGATE = """
SELECT customer_id, max(paid_at), count(*), sum(amount - refunded_amount) FROM customer_order
WHERE customer_id IS NOT NULL AND status IN ('paid', 'shipped', 'completed', 'partly_refunded')
GROUP BY customer_id
"""

# The same four conditions, written by hand: start from the tag's and the RFM segment's own indexes.
HAND_MATCHES = """
FROM customer_tag ct
JOIN customer_rfm r ON r.customer_id = ct.customer_id AND r.segment = :segment
JOIN customer c ON c.id = ct.customer_id
WHERE ct.tag_id = :tag AND c.merged_into_id IS NULL
  AND EXISTS (SELECT 1 FROM order_line l JOIN customer_order o ON o.id = l.order_id
              WHERE l.customer_id = c.id AND l.category = :category AND l.paid_at >= :bought_since
                AND o.status != 'refunded')
  AND NOT EXISTS (SELECT 1 FROM touch t WHERE t.kind = 'chat' AND t.customer_id = c.id
                  AND t.occurred_at >= :touch_since)
"""
HAND_COUNT = "SELECT count(*) " + HAND_MATCHES
HAND_PAGE = ("SELECT c.id " + HAND_MATCHES
             + " ORDER BY c.last_touch_at IS NULL, c.last_touch_at DESC, c.id DESC LIMIT :limit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--orders", type=int, default=ORDERS)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--rfm-runs", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--skip-rfm", action="store_true", help="measure the segment only (RFM as last refreshed)")
    args = parser.parse_args(argv)
    url = database_url(args.database, DEFAULT_PATH, rebuild=args.rebuild)
    print_header(f"Segments and RFM: {args.customers:,} customers, {args.orders:,} orders")
    print(f"database: {url.split('@')[-1]}", flush=True)
    engine = make_engine(url)
    upgrade(url)  # a database built earlier gets the indexes added since (cheap when current)
    if not ready(engine, args.customers, args.orders):
        print("building the data…", flush=True)
        build(engine, url, args.customers, args.orders)
    postgres = engine.dialect.name == "postgresql"
    failures: list[str] = []

    # (a) RFM refresh beside one aggregate query.
    def refresh() -> None:
        with Session(engine) as session:
            rfm.refresh_all(session)
            session.commit()

    def aggregate() -> None:
        with engine.connect() as conn:
            conn.execute(text(HAND_AGGREGATE)).fetchall()

    if not args.skip_rfm:
        samples = interleaved(args.rfm_runs, {"refresh": refresh, "aggregate": aggregate})
        rfm_s, agg_s = medians(samples)["refresh"], medians(samples)["aggregate"]
        print(f"(a) RFM refresh: {rfm_s:.1f} s (target ≤ {RFM_TARGET_S:.0f} s) · hand-written aggregate query "
              f"{agg_s:.1f} s · ratio {rfm_s / agg_s:.1f}× · runs {args.rfm_runs}", flush=True)
        if rfm_s > RFM_TARGET_S:
            failures.append("RFM refresh")
    with Session(engine) as session:
        counts = rfm.distribution(session)
        print("    " + " · ".join(f"{k} {v:,}" for k, v in counts.items()))
        tag_id = session.execute(text("SELECT id FROM tag WHERE name = :n AND group_id = 1000"),
                                 {"n": TAG_NAME}).scalar_one()
    if postgres:  # after the RFM refresh rewrote customer_rfm; for the product and the hand query alike
        vacuum_analyze(engine)
    else:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE customer_rfm"))
            conn.commit()
    segment = "important_develop"  # recent, big-spending, not yet frequent: about a tenth of the buyers
    now = datetime.now(UTC)
    conditions = {"kind": "and", "conditions": [
        {"kind": "tag", "tag_ids": [tag_id]},
        {"kind": "rfm", "segments": [segment]},
        {"kind": "bought", "category": CATEGORY, "days": BOUGHT_DAYS},
        {"kind": "no_touch", "days": TOUCH_DAYS}]}
    flt = CustomerFilter(conditions=conditions)
    params = {"tag": tag_id, "segment": segment, "category": CATEGORY,
              "bought_since": now - timedelta(days=BOUGHT_DAYS), "touch_since": now - timedelta(days=TOUCH_DAYS),
              "limit": PAGE}
    if not postgres:  # SQLite compares the stored text; bind it the way SQLAlchemy stores it
        params["bought_since"] = params["bought_since"].strftime("%Y-%m-%d %H:%M:%S.%f")
        params["touch_since"] = params["touch_since"].strftime("%Y-%m-%d %H:%M:%S.%f")
    cap = get_settings().list_exact_count_limit
    answers: dict[str, Any] = {}

    def timed(name: str, action: Callable[[Session], Any]) -> Callable[[], None]:
        def run() -> None:
            with Session(engine) as session:
                answers[name] = action(session)
        return run

    actions = {
        "count": timed("count", lambda s: customers_service.count_customers(s, flt=flt, viewer=SYSTEM, cap=cap)),
        "hand count": timed("hand count", lambda s: s.execute(text(HAND_COUNT), params).scalar_one()),
        "page": timed("page", lambda s: [c.id for c in customers_service.list_customers(
            s, flt=flt, viewer=SYSTEM, limit=PAGE).items]),
        "hand page": timed("hand page", lambda s: list(s.execute(text(HAND_PAGE), params).scalars())),
    }
    times = medians(interleaved(args.runs, actions, warmup=1))
    count = answers["count"]
    shown = count.value if count.exact else count.estimate
    print(f"(b) segment of 4 conditions (tag AND RFM {segment} AND bought {CATEGORY} in {BOUGHT_DAYS} days AND "
          f"no private chat for {TOUCH_DAYS} days): {answers['hand count']:,} customers", flush=True)
    for name, target in (("count", COUNT_TARGET_MS), ("page", PAGE_TARGET_MS)):
        ms, hand_ms = times[name] * 1000, times[f"hand {name}"] * 1000
        ratio = ms / hand_ms if hand_ms else float("inf")
        print(f"    {name}: {ms:.0f} ms (target ≤ {target:.0f} ms) · hand-written {hand_ms:.0f} ms · "
              f"ratio {ratio:.2f}× (target ≤ {TARGET_RATIO:.0f}×) · runs {args.runs}", flush=True)
        if ms > target or ratio > TARGET_RATIO:
            failures.append(name)
    if not count.exact or shown != answers["hand count"]:
        failures.append(f"count differs: {shown} (exact {count.exact}) vs {answers['hand count']}")
    if answers["page"] != answers["hand page"]:
        failures.append("first page differs from the hand-written one")
    print(f"    (the count is exact up to SIYU_LIST_EXACT_COUNT_LIMIT = {cap:,})")
    engine.dispose()
    if failures:
        print("MISSED: " + "; ".join(failures))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
