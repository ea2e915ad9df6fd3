"""Benchmark: the send-quota ledger checking and reserving 200,000 recipients against 12 months of history.

Builds (or reuses) a ledger with about one corp mass message a month per recipient over the last 12
months, and a tenth of the recipients already at this month's limit (as many as the month has days,
W:92135). Then, interleaved with a baseline in the same run:

  (a) ``sends.service.reserve`` for all 200,000 in one call — lock, one aggregate read of this
      month's counts, batched inserts of the allowed rows — rolled back after each run so every run
      sees the same ledger; target ≤ 10 s (a third of issue 23's 30 s for planning a 200,000-customer
      mass send);
  (b) the baseline: a bare ``SELECT`` of the same recipients' ledger rows of this month, fetched.

Exits non-zero when the target is missed or the counts are wrong.

Usage:  .venv/bin/python benchmarks/sends.py [--database URL] [--recipients 200000] [--runs 3] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs). Not part of pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from machine import database_url, interleaved, medians, print_header
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session

from siyu.core.db import make_engine, utcnow
from siyu.core.migrate import upgrade
from siyu.core.settings import get_settings

RECIPIENTS = 200_000
MONTHS = 12
FULL_SHARE = 10  # one in this many recipients is already at this month's limit
SEED = 2026
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_sends.db")
TARGET_S = 10.0
BATCH = 50_000


def build(engine: Engine, recipients: int) -> None:
    from siyu.sends import service
    from siyu.sends.models import SendLedgerEntry

    rng = random.Random(SEED)
    today = service.local_day(utcnow())
    period = service.period_of("month", today)
    created = utcnow()
    table = SendLedgerEntry.__table__
    rows: list[dict[str, object]] = []

    def flush(conn: object, force: bool = False) -> None:
        if rows and (force or len(rows) >= BATCH):
            conn.execute(insert(table), rows)  # type: ignore[attr-defined]
            rows.clear()

    with engine.begin() as conn:
        for target in range(1, recipients + 1):
            for month in range(1, MONTHS + 1):  # earlier months: about one a month
                if rng.random() < 0.9:
                    day = period.start - timedelta(days=30 * month - rng.randrange(28))
                    rows.append({"target_kind": "customer", "target_id": target, "day": day, "source": "campaign",
                                 "ref": f"history:{month}", "released_at": None, "created_at": created})
            this_month = period.limit if target % FULL_SHARE == 0 else rng.randrange(3)
            for n in range(this_month):
                rows.append({"target_kind": "customer", "target_id": target, "day": period.start + timedelta(
                    days=min(n, (today - period.start).days)), "source": "campaign", "ref": f"now:{n}",
                    "released_at": None, "created_at": created})
            flush(conn)
        flush(conn, force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--recipients", type=int, default=RECIPIENTS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    url = database_url(args.database, DEFAULT_PATH, rebuild=args.rebuild)
    print_header(f"send-quota ledger: reserve {args.recipients:,} recipients against {MONTHS} months of history")
    os.environ.update({"SIYU_DATABASE_URL": url, "SIYU_SECRET_KEY": "sends-benchmark-secret-key"})
    get_settings.cache_clear()
    upgrade(url)
    engine = make_engine(url)
    from siyu.sends import service
    from siyu.sends.models import SendLedgerEntry, SendSource

    with Session(engine) as session:
        have = session.scalar(select(func.count()).select_from(SendLedgerEntry)) or 0
    if not have:
        print("building the ledger…", flush=True)
        build(engine, args.recipients)
    with Session(engine) as session:
        rows = session.scalar(select(func.count()).select_from(SendLedgerEntry)) or 0
    print(f"database: {url.split('@')[-1]} · ledger rows: {rows:,}", flush=True)
    ids = list(range(1, args.recipients + 1))
    now = utcnow()
    period = service.period_of("month", service.local_day(now))
    answers: list[tuple[int, int]] = []

    def reserve() -> None:
        with Session(engine) as session:
            result = service.reserve(session, ids, now, source=SendSource.campaign, ref="benchmark")
            answers.append((len(result.allowed), len(result.refused)))
            session.rollback()

    def bare() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT target_id FROM send_ledger WHERE target_kind = 'customer' "
                              "AND day >= :start AND day <= :end"), {"start": period.start, "end": period.end}
                         ).fetchall()

    samples = interleaved(args.runs, {"reserve": reserve, "bare": bare})
    med = medians(samples)
    allowed, refused = answers[-1]
    expected_refused = args.recipients // FULL_SHARE
    print(f"(a) reserve: median {med['reserve']:.2f} s (target ≤ {TARGET_S:.0f} s) · allowed {allowed:,}, "
          f"over quota {refused:,}", flush=True)
    print(f"(b) bare SELECT of this month's ledger rows: median {med['bare']:.2f} s", flush=True)
    failures = []
    if med["reserve"] > TARGET_S:
        failures.append(f"reserve {med['reserve']:.2f} s > {TARGET_S:.0f} s")
    if refused != expected_refused or allowed + refused != args.recipients:
        failures.append(f"counts wrong: {allowed} allowed, {refused} refused (expected {expected_refused} refused)")
    for failure in failures:
        print(f"MISSED: {failure}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

