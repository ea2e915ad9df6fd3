"""Benchmark: a full WeCom sync of 50 members × 4,000 customers (200,000 contacts) from the simulator.

The simulator runs as its own process (``siyu simulator serve``). Two measurements in the
same run:

- fetch only: every ``batch/get_by_user`` page of every member read through Siyu's API client
  and thrown away — the cost of the platform side (simulator + HTTP + JSON);
- full sync: ``siyu.wecom.sync.run`` into a fresh, migrated SQLite file — members, corp tags,
  every contact stored as customer + friendship + phones + tags, groups, reconcile.

The ratio of the two is the storage overhead. Target: the full sync in ≤ 5 minutes.
Usage:  .venv/bin/python benchmarks/sync.py [--members 50] [--contacts-per-member 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from machine import print_header

CORP_ID = "wwSYNCBENCH00001"
SECRET = "sync-bench-secret"  # noqa: S105 - the simulator's throwaway secret
TARGET_SECONDS = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--contacts-per-member", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=1, help="alternating runs of fetch-only and full sync")
    args = parser.parse_args()
    print_header("sync: a full WeCom sync from the simulator")
    folder = Path(tempfile.mkdtemp(prefix="siyu-sync-bench-"))
    members_file = folder / "members.json"
    members_file.write_text(json.dumps([{"userid": f"bench.member{n:02d}", "name": f"压测成员{n:02d}"}
                                        for n in range(args.members)]), encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    os.environ.update({"SIYU_DATABASE_URL": f"sqlite:///{folder / 'sync.db'}", "SIYU_DATA_DIR": str(folder / "data"),
                       "SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET,
                       "SIYU_WECOM_API_BASE": f"{base}/cgi-bin/"})
    print(f"simulator: {args.members} members × {args.contacts_per_member:,} customers …", flush=True)
    simulator = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "siyu.cli", "simulator", "serve", "--port", str(port), "--corp-id", CORP_ID,
         "--secret", SECRET, "--members-file", str(members_file),
         "--contacts-per-member", str(args.contacts_per_member)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                httpx.get(f"{base}/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET}, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        from siyu.core import db as core_db
        from siyu.core.migrate import upgrade
        from siyu.core.settings import get_settings
        from siyu.customers import service as customers_service
        from siyu.wecom import sync
        from siyu.wecom.client import client_for

        fetches: list[float] = []
        syncs: list[float] = []
        ok = True
        for run in range(args.runs):  # fetch-only and full sync take turns, each sync into a fresh database
            os.environ["SIYU_DATABASE_URL"] = f"sqlite:///{folder / f'sync-{run}.db'}"
            get_settings.cache_clear()
            core_db.reset_engine()
            upgrade(os.environ["SIYU_DATABASE_URL"])
            with core_db.transaction() as session:
                customers_service.ensure_default_tag_groups(session)
                api = client_for(session)

            started = time.perf_counter()
            userids = sorted(api.follow_users())
            fetched = sum(1 for _ in api.iter_external_contacts(userids))
            fetches.append(time.perf_counter() - started)
            print(f"  run {run + 1}: fetch only {fetches[-1]:8.1f} s   {fetched:,} contacts "
                  f"({fetched / fetches[-1]:,.0f}/s)", flush=True)

            started = time.perf_counter()
            state = sync.run(core_db.transaction, api)
            syncs.append(time.perf_counter() - started)
            counts = state["counts"]
            print(f"  run {run + 1}: full sync  {syncs[-1]:8.1f} s   {counts['contacts']:,} contacts, "
                  f"{counts['customers_created']:,} customers, {counts['groups']:,} groups "
                  f"({counts['contacts'] / syncs[-1]:,.0f}/s)", flush=True)
            ok = ok and state["status"] == "done" and counts["contacts"] == fetched
        fetch_seconds, sync_seconds = statistics.median(fetches), statistics.median(syncs)
        print(f"  medians: fetch only {fetch_seconds:.1f} s, full sync {sync_seconds:.1f} s; "
              f"ratio sync / fetch: {sync_seconds / fetch_seconds:.1f}× (the storage overhead)")
        ok = ok and sync_seconds <= TARGET_SECONDS
        print(f"  target ≤ {TARGET_SECONDS:.0f} s for {fetched:,} contacts: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
