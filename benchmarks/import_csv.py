"""Benchmark: importing a 100,000-row CSV of friends (issue target: ≤ 60 s, peak RSS ≤ 500 MB).

Writes a GBK CSV of 100,000 friends (remark name, nickname, WeChat ID, phone, two tags,
description, city), then runs two child processes on it, each reporting its wall time and
its own peak RSS:

- baseline: Python's ``csv`` module reading every row of the same file (no validation, no database);
- import:   ``siyu.customers.imports.service.run_in_batches`` — what the background import job runs —
            into a fresh, migrated SQLite file: the whole file validated, then written in batches.

Baseline and import take turns (``--runs``, default 3); medians are printed beside the
targets, with the date, the machine and its load, and the script exits non-zero when a
target is missed. Usage:
    .venv/bin/python benchmarks/import_csv.py [--rows 100000] [--runs 3]
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
from pathlib import Path

from machine import cpu_seconds, csv_read_baseline, peak_rss_mb, print_header

TARGET_SECONDS = 60.0
TARGET_RSS_MB = 500.0
CITIES = ["杭州", "上海", "北京", "广州", "深圳", "成都", "南京", "苏州"]
TAGS = ["人群:宝妈", "人群:白领", "人群:学生", "来源:门店", "来源:包裹卡", "来源:线上广告"]
HEADER = ["备注名", "昵称", "微信号", "手机号", "标签", "描述", "地区"]


def write_file(path: Path, rows: int) -> None:
    rng = random.Random(100_000)
    with path.open("w", encoding="gbk", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for n in range(rows):
            writer.writerow([f"顾客{n}-{rng.choice(CITIES)}", f"顾客{n}", f"wx_import_{n}", f"1{3 + n % 7}{n:09d}",
                             "、".join(rng.sample(TAGS, 2)), f"第{n}位老客，喜欢{rng.choice(['龙井', '白茶', '普洱'])}",
                             rng.choice(CITIES)])




def child_import(path: Path, database: Path) -> dict[str, float]:
    os.environ["SIYU_DATABASE_URL"] = f"sqlite:///{database}"
    from siyu.accounts import service as accounts_service
    from siyu.accounts.schemas import AccountIn
    from siyu.core import db as core_db
    from siyu.core.migrate import upgrade
    from siyu.core.viewer import SYSTEM
    from siyu.customers import service as customers_service
    from siyu.customers.imports import service as imports

    upgrade(os.environ["SIYU_DATABASE_URL"])
    with core_db.transaction() as session:
        customers_service.ensure_default_tag_groups(session)
        account = accounts_service.create_account(session, data=AccountIn(
            display_name="导入基准", wechat_id="bench_import", kind="personal"), actor=SYSTEM)
        account_id = account.id
    started, cpu_before = time.perf_counter(), cpu_seconds()
    result = imports.run_in_batches(core_db.transaction, source=imports.open_source(path),
                                    options=imports.ImportOptions(account_id=account_id), viewer=SYSTEM,
                                    filename=path.name)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), "rows": result.rows, "created": result.counts.created,
            "cpu": cpu_seconds() - cpu_before}


def run_child(kind: str, *args: str) -> dict[str, float]:
    output = subprocess.run([sys.executable, __file__, "--child", kind, *args],  # noqa: S603 - this script
                            check=True, capture_output=True,
                            text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of baseline and import")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *paths = args.child
        figures = (csv_read_baseline(Path(paths[0]), encoding="gbk") if kind == "baseline"
                   else child_import(Path(paths[0]), Path(paths[1])))
        print(json.dumps(figures))
        return 0

    print_header("import_csv: a friend list imported from CSV")
    baselines: list[dict[str, float]] = []
    imports: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="siyu-import-bench-") as folder:
        csv_path = Path(folder) / "好友.csv"
        write_file(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1024 / 1024
        print(f"{args.rows:,} rows, {size_mb:.1f} MB GBK CSV; {args.runs} runs of each, taking turns", flush=True)
        for run in range(args.runs):
            database = Path(folder) / f"import-{run}.db"  # a fresh database each time
            baselines.append(run_child("baseline", str(csv_path)))
            imports.append(run_child("import", str(csv_path), str(database)))
            database.unlink()
            print(f"  run {run + 1}: import {imports[-1]['seconds']:.1f} s (CPU {imports[-1]['cpu']:.1f} s), "
                  f"peak RSS {imports[-1]['rss_mb']:.0f} MB", flush=True)
    assert all(i["created"] == args.rows for i in imports), imports
    baseline = {key: statistics.median(b[key] for b in baselines) for key in ("seconds", "rss_mb")}
    imported = {key: statistics.median(i[key] for i in imports) for key in ("seconds", "rss_mb", "cpu")}
    worst_rss = max(i["rss_mb"] for i in imports)
    print(f"baseline  csv.reader only         {baseline['seconds']:8.2f} s   peak RSS {baseline['rss_mb']:6.0f} MB"
          "   (medians)")
    print(f"import    validate + write SQLite {imported['seconds']:8.2f} s   peak RSS {imported['rss_mb']:6.0f} MB"
          f"   (medians; runs {', '.join(format(i['seconds'], '.1f') for i in imports)} s)")
    print(f"          of which CPU time       {imported['cpu']:8.2f} s   (the rest is waiting for a core on a shared "
          "machine, and for the disk)")
    ratio = imported["seconds"] / baseline["seconds"]
    print(f"ratio import / csv read: {ratio:.0f}×   ({args.rows / imported['seconds']:,.0f} rows/s)")
    time_ok = imported["seconds"] <= TARGET_SECONDS * args.rows / 100_000
    rss_ok = worst_rss <= TARGET_RSS_MB
    print(f"target ≤ {TARGET_SECONDS:.0f} s per 100,000 rows: {'PASS' if time_ok else 'FAIL'};  "
          f"peak RSS ≤ {TARGET_RSS_MB:.0f} MB (worst run {worst_rss:.0f} MB): {'PASS' if rss_ok else 'FAIL'}")
    return 0 if time_ok and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
