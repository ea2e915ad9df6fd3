"""Benchmark: the customer list at brand scale on SQLite.

Builds (or reuses) a SQLite file with 200,000 customers, 1,000,000 customer-tag links
(~30 manual tags in three groups, ~5 per customer), 50 accounts and one friendship per
customer, then measures the median time of

  (a) ``customers.service.list_customers`` with two tags from different groups (AND)
      and ``last_touch_before`` a date in the middle of the year, first page of 50;
  (b) the same query written by hand in SQL (EXISTS and INTERSECT forms);

for an admin (sees everything) and for an operator scoped to three accounts. Targets:
the whole service call answers in ≤100 ms; the query the service issues runs within 2× the
best hand-written SQL and returns the same ids. The whole call's ratio is printed beside it
(it adds a fixed ~2 ms of ORM object loading that no query plan can remove).

Usage:  .venv/bin/python benchmarks/customers_list.py [PATH] [--runs 30] [--rebuild]
Not part of pytest: building the file takes a minute or two; reruns reuse it.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from machine import print_header
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.migrate import upgrade
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, Tag, TagGroup, TagGroupKind
from siyu.customers.search import index as search
from siyu.customers.service import CustomerFilter

DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_bench.db")
MARKER_KEY = "benchmark_dataset"
CUSTOMERS = 200_000
TAGS_PER_CUSTOMER = 5  # on average; exactly CUSTOMERS * 5 links in total
ACCOUNTS = 50


def dataset_spec(customers: int) -> dict[str, int]:
    return {"version": 3, "customers": customers, "links": customers * TAGS_PER_CUSTOMER, "accounts": ACCOUNTS}


DATASET = dataset_spec(CUSTOMERS)
TARGET_MS = 100.0
TARGET_RATIO = 2.0
PAGE = 50
OPERATOR_ACCOUNTS = frozenset({3, 17, 41})
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞婷雪琳晨宇欣怡佳琪子涵浩然梓轩"
STORES = ("西湖店", "滨江店", "武林店", "钱江店", "萧山店", "线上店")
PHRASES = ("喜欢白茶礼盒", "春节送礼", "常买龙井", "问过普洱价格", "宝妈，周末带娃来店", "公司团购", "对茶具感兴趣",
           "参加过茶艺课", "嫌贵，等活动", "老客户介绍", "爱喝冷泡茶", "收藏岩茶", "生日在三月", "住在附近小区",
           "想给父母买茶", "直播间下过单", "只喝花草茶", "露营爱好者", "咖啡转茶新人", "会员日必来")
INTEREST_TAGS = ("茶艺课", "茶具", "送礼", "冷泡茶", "白茶收藏", "普洱收藏", "岩茶", "龙井", "花草茶", "茶点",
                 "直播", "会员日", "团购", "露营茶", "亲子")
SEED = 2024


def sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy stores for a UTC datetime on SQLite (naive, microseconds)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# ---------------------------------------------------------------- dataset


def dataset_ready(path: Path, spec: dict[str, int] = DATASET) -> bool:
    if not path.exists():
        return False
    try:
        with sqlite3.connect(path) as conn:
            row = conn.execute("SELECT value FROM app_setting WHERE key = ?", (MARKER_KEY,)).fetchone()
            if row is None or row[0] is None:
                return False
            if json.loads(row[0]) != spec:
                return False
            (customers,) = conn.execute("SELECT count(*) FROM customer").fetchone()
            (accounts,) = conn.execute("SELECT count(*) FROM account").fetchone()
            return bool(customers == spec["customers"] and accounts == ACCOUNTS)
    except sqlite3.Error:
        return False


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def manual_tags(session: Session) -> dict[str, list[tuple[int, float]]]:
    """Manual tags per group with a popularity weight (a few popular tags, a long tail)."""
    customers_service.ensure_default_tag_groups(session)
    if session.scalar(select(TagGroup).where(TagGroup.name == "兴趣")) is None:
        group = TagGroup(name="兴趣", kind=TagGroupKind.custom.value, multi_select=True, sort_order=60)
        group.tags = [Tag(name=name, sort_order=i) for i, name in enumerate(INTEREST_TAGS)]
        session.add(group)
        session.flush()
    result: dict[str, list[tuple[int, float]]] = {}
    for group in customers_service.list_tag_groups(session):
        if group.is_computed:
            continue
        result[group.kind] = [(tag.id, 1.0 / (rank + 1) ** 0.8) for rank, tag in enumerate(group.tags)]
    return result


def person_name(cid: int) -> str:
    """A deterministic, varied Chinese name (so name searches hit a realistic share)."""
    return SURNAMES[cid % len(SURNAMES)] + GIVEN[(cid // len(SURNAMES)) % len(GIVEN)] + (
        GIVEN[(cid // 7) % len(GIVEN)] if cid % 3 else "")


def phone_number(cid: int) -> str:
    """A deterministic, well-spread 11-digit mobile number for a customer."""
    return f"1{3 + cid % 7}{(cid * 7_919_993) % 1_000_000_000:09d}"


def pick(rng: random.Random, tags: list[tuple[int, float]], k: int) -> list[int]:
    ids = [t for t, _w in tags]
    weights = [w for _t, w in tags]
    chosen: list[int] = []
    while len(chosen) < k:
        tag_id = rng.choices(ids, weights=weights)[0]
        if tag_id not in chosen:
            chosen.append(tag_id)
    return chosen


def build_dataset(path: Path, customer_count: int = CUSTOMERS) -> None:
    remove_database(path)
    url = f"sqlite:///{path}"
    started = time.perf_counter()
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        tags = manual_tags(session)
        session.commit()
    engine.dispose()

    rng = random.Random(SEED)
    now = datetime.now(UTC)
    stamp = sqlite_time(now)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO account (id, kind, display_name, wechat_id, wecom_userid, store, brand, tier_served, "
        "owner_user_id, friend_capacity, status, positioning, avatar_url, signature, greeting, "
        "moments_cover_url, created_at) VALUES (?, ?, ?, '', ?, ?, '山野茶舍', '', NULL, 20000, 'active', "
        "'', '', '', '', '', ?)",
        [(i, "wecom" if i % 3 else "personal", f"山野茶舍·{i:02d}", f"bench{i:02d}" if i % 3 else None,
          f"门店{i % 12:02d}", stamp) for i in range(1, ACCOUNTS + 1)])
    account_weights = [1.0 + (i % 7) for i in range(ACCOUNTS)]
    account_ids = list(range(1, ACCOUNTS + 1))

    def customers() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customer_count + 1):
            touched = rng.random() >= 0.12
            last = sqlite_time(now - timedelta(seconds=rng.uniform(0, 365 * 86400))) if touched else None
            created = sqlite_time(now - timedelta(days=rng.uniform(365, 900)))
            stage = rng.choice(("user", "customer", "fan")) if touched else "traffic"
            contacts = rng.randint(1, 30) if touched else 0
            purchases = rng.randint(1, 6) if stage in ("customer", "fan") else 0
            yield (cid, person_name(cid), f"wxid_bench{cid:07d}", "门店", stage, "V1 新朋友", contacts, purchases,
                   purchases * 200, last, rng.randint(20, 95), created, created)

    conn.executemany(
        "INSERT INTO customer (id, name, wechat_id, wecom_external_userid, avatar_url, source, gender, age_band, "
        "city, job, income_band, family, objective_notes, emotional_notes, stage, level, contact_count, "
        "purchase_count, purchase_total, last_touch_at, completeness, merged_into_id, created_at, updated_at) "
        "VALUES (?, ?, ?, NULL, '', ?, '', '', '', '', '', '', '', '', ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
        customers())

    def friendships() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customer_count + 1):
            account = rng.choices(account_ids, weights=account_weights)[0]
            remark = f"{person_name(cid)}-{STORES[cid % len(STORES)]}"
            description = "，".join(rng.sample(PHRASES, rng.randint(1, 3)))
            yield (cid, cid, account, remark, description, stamp)

    conn.executemany(
        "INSERT INTO friendship (id, customer_id, account_id, remark_name, description, status, channel_state, "
        "added_at, removed_at) VALUES (?, ?, ?, ?, ?, 'active', '', ?, NULL)", friendships())

    # One mobile number per friendship (a phone fragment is one of the searches measured).
    conn.executemany("INSERT INTO phone (id, friendship_id, customer_id, number) VALUES (?, ?, ?, ?)",
                     ((cid, cid, cid, phone_number(cid)) for cid in range(1, customer_count + 1)))

    source, crowd, interest = tags["source"], tags["crowd"], tags["custom"]

    def links() -> Iterator[tuple[int, int, str]]:
        for cid in range(1, customer_count + 1, 2):
            # Pairs of customers whose counts mirror around 5 keep the total exactly 5 per customer.
            delta = rng.randint(-2, 2)
            for this, count in ((cid, TAGS_PER_CUSTOMER + delta), (cid + 1, TAGS_PER_CUSTOMER - delta)):
                n_source = 2 if rng.random() < 0.15 else 1
                n_crowd = min(2, count - n_source - 1) if rng.random() < 0.4 else 1
                n_interest = count - n_source - n_crowd
                chosen = pick(rng, source, n_source) + pick(rng, crowd, n_crowd) + pick(rng, interest, n_interest)
                for tag_id in chosen:
                    yield (this, tag_id, stamp)

    conn.executemany("INSERT INTO customer_tag (customer_id, tag_id, created_at) VALUES (?, ?, ?)", links())

    def documents() -> Iterator[tuple[int, str]]:
        rows = conn.execute("SELECT c.id, c.name, c.wechat_id, f.remark_name, f.description, p.number FROM customer c "
                            "JOIN friendship f ON f.customer_id = c.id JOIN phone p ON p.customer_id = c.id "
                            "ORDER BY c.id")
        for cid, *values, number in rows:  # the same terms as search.reindex writes
            yield cid, " ".join(search.terms_of(*values) + search.phone_terms(number))

    conn.executemany(f"INSERT INTO {search.TABLE} (rowid, terms) VALUES (?, ?)", list(documents()))
    conn.execute("INSERT INTO app_setting (key, value, updated_at) VALUES (?, ?, ?)",
                 (MARKER_KEY, json.dumps(dataset_spec(customer_count)), stamp))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"built {path} in {time.perf_counter() - started:.1f} s")


# ---------------------------------------------------------------- measuring


def median_ms(runs: int, warmup: int, actions: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Median wall time of each action; runs are interleaved so load on the machine hits all alike."""
    for _ in range(warmup):
        for action in actions.values():
            action()
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


HAND_EXISTS = """
SELECT c.* FROM customer c
WHERE c.merged_into_id IS NULL
  {scope}
  AND c.last_touch_at < :before
  AND EXISTS (SELECT 1 FROM customer_tag t WHERE t.customer_id = c.id AND t.tag_id = :a)
  AND EXISTS (SELECT 1 FROM customer_tag t WHERE t.customer_id = c.id AND t.tag_id = :b)
ORDER BY c.last_touch_at DESC, c.id DESC
LIMIT :limit
"""
HAND_INTERSECT = """
SELECT c.* FROM customer c
WHERE c.id IN (SELECT customer_id FROM customer_tag WHERE tag_id = :a
               INTERSECT SELECT customer_id FROM customer_tag WHERE tag_id = :b)
  {scope}
  AND c.merged_into_id IS NULL
  AND c.last_touch_at < :before
ORDER BY c.last_touch_at DESC, c.id DESC
LIMIT :limit
"""


def scope_sql(viewer: Viewer) -> str:
    if viewer.sees_all_accounts:
        return ""
    ids = ", ".join(str(int(a)) for a in sorted(viewer.account_ids))
    return f"AND EXISTS (SELECT 1 FROM friendship f WHERE f.customer_id = c.id AND f.account_id IN ({ids}))"


def capture_sql(engine: Engine, action: Callable[[], Any]) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def listener(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return seen


def explain(engine: Engine, statement: str, parameters: Any) -> list[str]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    return [f"    {row[-1]}" for row in rows]


@dataclass
class Result:
    service_ms: float
    sql_only_ms: float
    hand_ms: float
    ratio: float  # the service's query against the best hand-written query: the plan's quality
    call_ratio: float  # the whole service call (ORM objects, Python) against the hand-written query
    same_ids: bool
    target_ms: float = TARGET_MS

    @property
    def passed(self) -> bool:
        return self.same_ids and self.service_ms <= self.target_ms and self.ratio <= TARGET_RATIO


def run_variant(engine: Engine, *, label: str, viewer: Viewer, tag_a: int, tag_b: int, before: datetime,
                runs: int, show_plan: bool, target_ms: float = TARGET_MS) -> Result:
    flt = CustomerFilter(tag_ids=[tag_a, tag_b], last_touch_before=before)

    def service() -> list[int]:
        with Session(engine) as session:
            page = customers_service.list_customers(session, flt=flt, viewer=viewer, limit=PAGE)
            return [c.id for c in page.items]

    params = {"a": tag_a, "b": tag_b, "before": sqlite_time(before), "limit": PAGE + 1}
    hand_sqls = {
        "hand SQL (EXISTS)": HAND_EXISTS.format(scope=scope_sql(viewer)),
        "hand SQL (INTERSECT)": HAND_INTERSECT.format(scope=scope_sql(viewer)),
    }

    def hand(sql: str) -> Callable[[], list[int]]:
        def query() -> list[int]:
            with engine.connect() as conn:
                return [row[0] for row in conn.exec_driver_sql(sql, params).all()]
        return query

    expected = service()
    same_ids = True
    print(f"\n== {label} (tag ids {tag_a} AND {tag_b}, last touch before {before:%Y-%m-%d}, first {PAGE})")
    sys.stdout.flush()
    for name, sql in hand_sqls.items():
        got = hand(sql)()[:PAGE]
        same = got == expected
        same_ids &= same
        print(f"  {name} returns the same {len(got)} ids as the service: {'yes' if same else 'NO'}")
    # The service's own final statement, run raw: splits database time from ORM/Python time.
    service_sql = capture_sql(engine, service)[-1]

    def service_sql_only() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql(*service_sql).all())

    medians = median_ms(runs, 3, {"service": service, "sql": service_sql_only}
                        | {name: hand(sql) for name, sql in hand_sqls.items()})
    service_ms = medians.pop("service")
    sql_only_ms = medians.pop("sql")
    hand_ms = medians
    best_name = min(hand_ms, key=lambda n: hand_ms[n])
    best = hand_ms[best_name]
    ratio = sql_only_ms / best if best else float("inf")
    call_ratio = service_ms / best if best else float("inf")
    print(f"  service list_customers   median {service_ms:8.2f} ms  (over {runs} runs)")
    print(f"    of which its SQL, raw  median {sql_only_ms:8.2f} ms  (the rest is ORM and Python)")
    for name, value in hand_ms.items():
        print(f"  {name:<24} median {value:8.2f} ms")
    print(f"  ratio service query / best hand SQL ({best_name}): {ratio:.2f}x   "
          f"(whole service call incl. ORM objects: {call_ratio:.2f}x)")
    fast = service_ms <= target_ms
    close = ratio <= TARGET_RATIO
    print(f"  target ≤{target_ms:.0f} ms: {'PASS' if fast else 'FAIL'}   "
          f"target ≤{TARGET_RATIO:.0f}x hand SQL: {'PASS' if close else 'FAIL'}")
    if show_plan or not (fast and close):
        print("  service SQL:\n    " + service_sql[0].replace("\n", "\n    "))
        print("  EXPLAIN QUERY PLAN (service):")
        print("\n".join(explain(engine, *service_sql)))
        print("  EXPLAIN QUERY PLAN (hand SQL, EXISTS):")
        sql = hand_sqls["hand SQL (EXISTS)"]
        print("\n".join(explain(engine, sql, params)))
    return Result(service_ms=service_ms, sql_only_ms=sql_only_ms, hand_ms=best, ratio=ratio, call_ratio=call_ratio,
                  same_ids=same_ids, target_ms=target_ms)


def least_used_tag(session: Session, kind: str) -> int:
    """The manual tag of a group that the fewest customers carry (a selective filter)."""
    counts = session.execute(
        select(Tag.id, func.count()).join(TagGroup, TagGroup.id == Tag.group_id)
        .join(customers_service.CustomerTag, customers_service.CustomerTag.tag_id == Tag.id)
        .where(TagGroup.kind == kind).group_by(Tag.id).order_by(func.count(), Tag.id)).first()
    assert counts is not None
    return int(counts[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true", help="build the dataset even if it is present")
    parser.add_argument("--plan", action="store_true", help="print EXPLAIN QUERY PLAN even when targets pass")
    args = parser.parse_args(argv)
    print_header("customers_list: the customer list at 200,000 customers (SQLite)")
    path = Path(args.path)
    if args.rebuild or not dataset_ready(path):
        print(f"building {CUSTOMERS:,} customers and {DATASET['links']:,} tag links in {path} …")
        build_dataset(path)
    else:
        print(f"reusing {path}")
    engine = make_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        by_name = {(g.kind, t.name): t.id for g in customers_service.list_tag_groups(session) for t in g.tags}
        common = (by_name[("source", "门店")], by_name[("crowd", "宝妈")])
        rare = (least_used_tag(session, "source"), least_used_tag(session, "crowd"))
        oldest, newest = session.execute(
            select(func.min(Customer.last_touch_at), func.max(Customer.last_touch_at))).one()
        links = session.scalar(select(func.count()).select_from(customers_service.CustomerTag))
    assert oldest is not None and newest is not None
    before = oldest + (newest - oldest) / 2
    print(f"dataset: {CUSTOMERS:,} customers, {links:,} tag links, {ACCOUNTS} accounts")
    operator = Viewer(user_id=None, username="bench-operator", role="operator", sees_all_accounts=False,
                      account_ids=OPERATOR_ACCOUNTS)
    scoped = f"operator scoped to accounts {sorted(OPERATOR_ACCOUNTS)}"
    # (label, viewer, tags, required): the first two are the targets; the third is a stress case
    # (the least-used 来源 and 人群 tags seen by the operator) that shows where the plan breaks down.
    variants = [
        ("admin, 门店 AND 宝妈", SYSTEM, common, True),
        (f"{scoped}, 门店 AND 宝妈", operator, common, True),
        (f"{scoped}, least-used tags (stress)", operator, rare, False),
    ]
    results = [
        (label, required, run_variant(engine, label=label, viewer=viewer, tag_a=tags[0], tag_b=tags[1],
                                      before=before, runs=args.runs, show_plan=args.plan))
        for label, viewer, tags, required in variants
    ]
    engine.dispose()
    print("\nSUMMARY")
    for label, required, result in results:
        kind = "required" if required else "stress  "
        print(f"  {kind}  {'PASS' if result.passed else 'FAIL'}  service {result.service_ms:7.2f} ms "
              f"(its SQL {result.sql_only_ms:7.2f} ms)  best hand SQL {result.hand_ms:7.2f} ms  "
              f"query ratio {result.ratio:5.2f}x (call {result.call_ratio:4.2f}x)  same ids: "
              f"{'yes' if result.same_ids else 'NO'}  — {label}")
    required_ok = all(result.passed for _label, required, result in results if required)
    print("OVERALL (required variants):", "PASS" if required_ok else "FAIL")
    return 0 if required_ok else 1


if __name__ == "__main__":
    sys.exit(main())
