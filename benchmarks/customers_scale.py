"""Benchmark: 1,000,000 customers and 5,000,000 tag links on SQLite (issue: data at real scale).

Builds (or reuses) a SQLite file with 1,000,000 customers, one friendship each with a
Chinese remark name and description, 5,000,000 customer-tag links and the search index,
then measures medians of

  (a) the customer list with two tags AND + last touch before a date, first page of 50
      (target ≤150 ms), beside the same query written by hand in SQL;
  (b) search on remark/description through the list's ``q`` (target ≤300 ms), beside
      hand-written SQL that uses the same index and beside a plain LIKE scan;
  (c) the list count shown above the list (capped / estimated), beside a full count(*).

Usage:  .venv/bin/python benchmarks/customers_scale.py [PATH] [--runs 15] [--rebuild]
Not part of pytest: building the file takes several minutes; reruns reuse it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from customers_list import (
    ACCOUNTS,
    PAGE,
    build_dataset,
    dataset_ready,
    dataset_spec,
    median_ms,
    run_variant,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.viewer import SYSTEM
from siyu.customers import search
from siyu.customers import service as customers_service
from siyu.customers.models import Customer
from siyu.customers.service import CustomerFilter

CUSTOMERS = 1_000_000
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_scale.db")
LIST_TARGET_MS = 150.0
SEARCH_TARGET_MS = 300.0
COUNT_CAP = 10_000

HAND_SEARCH_INDEXED = """
SELECT c.* FROM customer c
WHERE c.id IN (SELECT rowid FROM customer_search WHERE customer_search MATCH :expression)
  AND c.merged_into_id IS NULL
  AND EXISTS (SELECT 1 FROM friendship f WHERE f.customer_id = c.id
              AND (f.remark_name LIKE :pattern OR f.description LIKE :pattern))
ORDER BY c.last_touch_at DESC, c.id DESC
LIMIT :limit
"""
HAND_SEARCH_SCAN = """
SELECT c.* FROM customer c
WHERE c.merged_into_id IS NULL
  AND EXISTS (SELECT 1 FROM friendship f WHERE f.customer_id = c.id
              AND (f.remark_name LIKE :pattern OR f.description LIKE :pattern))
ORDER BY c.last_touch_at DESC, c.id DESC
LIMIT :limit
"""


def run_search(engine: Engine, *, query: str, runs: int) -> tuple[bool, float, float, float]:
    flt = CustomerFilter(q=query)

    def service() -> list[int]:
        with Session(engine) as session:
            return [c.id for c in customers_service.list_customers(session, flt=flt, viewer=SYSTEM, limit=PAGE).items]

    terms = search.query_terms(query) or []
    params = {"expression": " AND ".join(f'"{t}"' for t in terms), "pattern": f"%{query}%", "limit": PAGE}

    def hand(sql: str) -> Any:
        def run() -> list[int]:
            with engine.connect() as conn:
                return [row[0] for row in conn.exec_driver_sql(sql, params).all()]
        return run

    expected = service()
    indexed = hand(HAND_SEARCH_INDEXED)()
    same = expected == indexed
    print(f"\n== search {query!r}: {len(expected)} on the first page; hand SQL returns the same ids: "
          f"{'yes' if same else 'NO'}")
    medians = median_ms(runs, 2, {"service": service, "indexed": hand(HAND_SEARCH_INDEXED),
                                  "scan": hand(HAND_SEARCH_SCAN)})
    ratio = medians["service"] / medians["indexed"] if medians["indexed"] else float("inf")
    print(f"  service list_customers(q)        median {medians['service']:8.2f} ms")
    print(f"  hand SQL with the same index     median {medians['indexed']:8.2f} ms   ratio {ratio:.2f}x")
    print(f"  hand SQL, LIKE scan (no index)   median {medians['scan']:8.2f} ms")
    ok = same and medians["service"] <= SEARCH_TARGET_MS
    print(f"  target ≤{SEARCH_TARGET_MS:.0f} ms: {'PASS' if ok else 'FAIL'}")
    return ok, medians["service"], medians["indexed"], medians["scan"]


def run_count(engine: Engine, *, tag_ids: list[int], runs: int) -> tuple[float, float]:
    flt = CustomerFilter(tag_ids=tag_ids)

    def capped() -> Any:
        with Session(engine) as session:
            return customers_service.count_customers(session, flt=flt, viewer=SYSTEM, cap=COUNT_CAP)

    def full() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT count(*) FROM customer c WHERE c.merged_into_id IS NULL AND EXISTS (SELECT 1 FROM "
                "customer_tag t WHERE t.customer_id = c.id AND t.tag_id = ?)", (tag_ids[0],)).scalar() or 0)

    result = capped()
    medians = median_ms(runs, 1, {"capped": capped, "full": full})
    print(f"\n== list count for one tag: shown as {'about ' if not result.exact else ''}{result.value:,}"
          f"{'+' if not result.exact else ''}; full count(*) is {full():,}")
    print(f"  capped count (what the list shows) median {medians['capped']:8.2f} ms")
    print(f"  full count(*) by hand               median {medians['full']:8.2f} ms   "
          f"ratio {medians['capped'] / medians['full']:.2f}x")
    return medians["capped"], medians["full"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    path = Path(args.path)
    spec = dataset_spec(CUSTOMERS)
    if args.rebuild or not dataset_ready(path, spec):
        print(f"building {CUSTOMERS:,} customers and {spec['links']:,} tag links in {path} (several minutes) …")
        sys.stdout.flush()
        build_dataset(path, CUSTOMERS)
    else:
        print(f"reusing {path}")
    engine = make_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        by_name = {(g.kind, t.name): t.id for g in customers_service.list_tag_groups(session) for t in g.tags}
        common = (by_name[("source", "门店")], by_name[("crowd", "宝妈")])
        oldest, newest = session.execute(
            select(func.min(Customer.last_touch_at), func.max(Customer.last_touch_at))).one()
        links = session.scalar(select(func.count()).select_from(customers_service.CustomerTag))
    assert isinstance(oldest, datetime) and isinstance(newest, datetime)
    before = oldest + (newest - oldest) / 2
    print(f"dataset: {CUSTOMERS:,} customers, {links:,} tag links, {ACCOUNTS} accounts")
    listing = run_variant(engine, label="admin, 门店 AND 宝妈, last touch before mid-year", viewer=SYSTEM,
                          tag_a=common[0], tag_b=common[1], before=before, runs=args.runs, show_plan=False,
                          target_ms=LIST_TARGET_MS)
    searches = [run_search(engine, query=q, runs=args.runs) for q in ("白茶礼盒", "宝妈", "王芳")]
    run_count(engine, tag_ids=[common[0]], runs=max(3, args.runs // 3))
    engine.dispose()
    print("\nSUMMARY")
    print(f"  list (2 tags AND + last touch)  {'PASS' if listing.passed else 'FAIL'}  service "
          f"{listing.service_ms:.1f} ms vs hand SQL {listing.hand_ms:.1f} ms (query ratio {listing.ratio:.2f}x, "
          f"target ≤{LIST_TARGET_MS:.0f} ms)")
    for (ok, service_ms, indexed_ms, scan_ms), q in zip(searches, ("白茶礼盒", "宝妈", "王芳"), strict=True):
        print(f"  search {q:<6}                 {'PASS' if ok else 'FAIL'}  service {service_ms:.1f} ms vs hand SQL "
              f"(same index) {indexed_ms:.1f} ms, LIKE scan {scan_ms:.1f} ms (target ≤{SEARCH_TARGET_MS:.0f} ms)")
    passed = listing.passed and all(ok for ok, *_ in searches)
    print("OVERALL:", "PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
