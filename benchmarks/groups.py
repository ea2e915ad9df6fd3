"""Benchmark: group health and the group list at 5,000 groups and 600,000 memberships (issue 22).

Builds (or reuses) a database with 5,000 customer groups of the seed's five kinds (each with a tier, a
health and 120 current members: 600,000 memberships), 140,000 joins and quits over the last two weeks and
a 100,000-message group day from the chat archive. Then, each beside a baseline doing the same reading in
the same run, interleaved:

  (a) ``groups.health.snapshot`` — every group's day (members, joins, leaves, messages, speakers in 7 days,
      health, the fans' resource tasks) written for 5,000 groups — target ≤ 30 s; the baseline fetches the
      same rows (groups, the fortnight's changes, the day's and the week's messages) with bare SELECTs;
  (b) the groups list filtered by kind and health (``service.list_groups`` + the page's capacity and
      expected-name figures) — target ≤ 100 ms median; the baseline is a bare
      ``SELECT … WHERE kind = ? AND health = ? ORDER BY updated_at DESC LIMIT 50``.

The moderation figure of the same issue is benchmarks/moderation.py's. Exits non-zero when a target is missed.

Usage:  .venv/bin/python benchmarks/groups.py [--database URL] [--runs 3] [--page-runs 21] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs). Not part of pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from machine import interleaved, medians, print_header
from sqlalchemy import Engine, delete, insert, select, text
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.migrate import upgrade
from siyu.core.models import AppSetting
from siyu.core.viewer import SYSTEM

GROUPS = 5_000
MEMBERS_PER_GROUP = 120  # 600,000 memberships
CHANGES = 140_000
MESSAGES = 100_000
SEED = 22
MARKER_KEY = "benchmark_groups"
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_groups.db")
SNAPSHOT_TARGET_S = 30.0
LIST_TARGET_MS = 100.0
KINDS = ("product", "interest", "knowledge", "network", "marketing")
HEALTHS = ("active", "active", "active", "silent", "dead")
NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)


def spec() -> dict[str, int]:
    return {"version": 1, "groups": GROUPS, "members": MEMBERS_PER_GROUP, "changes": CHANGES, "messages": MESSAGES}


def ready(engine: Engine) -> bool:
    try:
        with Session(engine) as session:
            row = session.get(AppSetting, MARKER_KEY)
            return row is not None and row.value == spec()
    except Exception:  # a missing table means "not built"
        return False


def build(engine: Engine) -> None:
    from siyu.accounts.models import Account
    from siyu.groups.models import GroupChat, GroupMember, GroupMemberChange, GroupMessage

    rng = random.Random(SEED)
    with Session(engine) as session:
        owners = []
        for n in range(50):
            account = Account(kind="wecom", wecom_userid=f"bench.owner{n:02d}", display_name=f"群主{n:02d}")
            session.add(account)
            owners.append(account)
        session.flush()
        groups = []
        for n in range(GROUPS):
            owner = owners[n % len(owners)]
            groups.append({"id": n + 1, "chat_id": f"wrBENCH{n:06d}", "name": f"金万家郑州中心创富孵化群{n + 1}",
                           "owner_userid": owner.wecom_userid, "owner_account_id": owner.id, "notice": "",
                           "admin_userids": [], "status": "active", "member_count": MEMBERS_PER_GROUP + 1,
                           "customer_count": 0, "member_version": "", "created_at": NOW - timedelta(days=90),
                           "updated_at": NOW - timedelta(minutes=n), "platform": "wecom", "kind": KINDS[n % 5],
                           "tier": "孵化群" if n % 3 else "金粉群", "store": "", "region": "郑州",
                           "service_userids": [], "fan_owned": n % 50 == 0, "health": rng.choice(HEALTHS),
                           "platform_created_at": NOW - timedelta(days=90)})
        session.execute(insert(GroupChat), groups)
        members = []
        member_id = 0
        for group in groups:
            for m in range(MEMBERS_PER_GROUP):
                member_id += 1
                members.append({"id": member_id, "group_chat_id": group["id"], "userid": f"wm{group['id']}x{m}",
                                "member_type": 2, "name": "", "group_nickname": "", "unionid": "",
                                "invitor_userid": "", "join_time": NOW - timedelta(days=60), "state": "",
                                "role": "member"})
            if len(members) >= 20_000:
                session.execute(insert(GroupMember), members)
                members = []
        if members:
            session.execute(insert(GroupMember), members)
        changes = [{"group_chat_id": (i % GROUPS) + 1, "member_id": rng.randrange(1, member_id + 1),
                    "kind": "join" if rng.random() < 0.55 else "quit",
                    "at": NOW - timedelta(seconds=rng.randrange(14 * 86400)), "scene": 3} for i in range(CHANGES)]
        for start in range(0, len(changes), 20_000):
            session.execute(insert(GroupMemberChange), changes[start:start + 20_000])
        day_start = NOW - timedelta(days=1)
        messages = [{"msgid": f"bench-{i}", "seq": i, "chat_id": f"wrBENCH{i % 4000:06d}",
                     "group_chat_id": (i % 4000) + 1, "sender": f"wm{(i % 4000) + 1}x{rng.randrange(40)}",
                     "member_type": 2, "action": "send", "msg_type": "text", "text": "早上好",
                     "sent_at": day_start + timedelta(seconds=rng.randrange(86400)), "received_at": NOW}
                    for i in range(MESSAGES)]
        for start in range(0, len(messages), 20_000):
            session.execute(insert(GroupMessage), messages[start:start + 20_000])
        session.merge(AppSetting(key=MARKER_KEY, value=spec()))
        session.commit()


def baseline_snapshot(engine: Engine) -> None:
    """The same rows the snapshot reads, fetched with bare SELECTs (no grouping, nothing written)."""
    end = NOW
    with engine.connect() as conn:
        conn.execute(text("SELECT id, member_count, health, last_message_at, created_at, platform_created_at, "
                          "fan_owned FROM group_chat WHERE status = 'active'")).fetchall()
        conn.execute(text("SELECT group_chat_id, kind, at FROM group_member_change WHERE at >= :s AND at < :e"),
                     {"s": end - timedelta(days=14), "e": end}).fetchall()
        conn.execute(text("SELECT group_chat_id, sender, sent_at FROM group_message WHERE sent_at >= :s AND "
                          "sent_at < :e"), {"s": end - timedelta(days=7), "e": end}).fetchall()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default=os.environ.get("SIYU_BENCH_DATABASE", f"sqlite:///{DEFAULT_PATH}"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-runs", type=int, default=21)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    os.environ["SIYU_DATABASE_URL"] = args.database
    print_header("Groups: health snapshot for 5,000 groups; the list filtered by kind and health")
    if args.rebuild and args.database.startswith("sqlite:///"):
        Path(args.database.removeprefix("sqlite:///")).unlink(missing_ok=True)
    upgrade(args.database)
    engine = make_engine(args.database)
    if not ready(engine):
        print("  building 5,000 groups, 600,000 memberships, 140,000 changes, 100,000 messages …", flush=True)
        build(engine)

    from siyu.groups import health, registry, service
    from siyu.groups.models import GroupDaySnapshot, GroupTask
    from siyu.groups.service import GroupFilter

    def snapshot() -> None:
        with Session(engine) as session:
            result = health.snapshot(session, now=NOW)
            assert result.groups == GROUPS, result
            session.commit()
        with Session(engine) as session:  # the next run writes everything again
            session.execute(delete(GroupDaySnapshot))
            session.execute(delete(GroupTask))
            session.commit()

    snap = medians(interleaved(args.runs, {"snapshot": snapshot, "baseline": lambda: baseline_snapshot(engine)}))
    print(f"  (a) health snapshot, 5,000 groups: {snap['snapshot']:.2f} s (target ≤ {SNAPSHOT_TARGET_S:.0f} s) · "
          f"bare SELECT of the same rows {snap['baseline']:.2f} s · {snap['snapshot'] / snap['baseline']:.1f}×")

    session = Session(engine)

    def listing() -> None:
        page = service.list_groups(session, flt=GroupFilter(kind="marketing", health="dead"), viewer=SYSTEM,
                                   limit=50)
        registry.figures(session, page.items)
        assert len(page.items) == 50
        session.rollback()

    def bare() -> None:
        with engine.connect() as conn:
            rows = conn.execute(select(text("id, name, member_count")).select_from(text("group_chat")).where(
                text("kind = 'marketing' AND health = 'dead'")).order_by(text("updated_at DESC, id DESC"))
                .limit(50)).fetchall()
            assert len(rows) == 50

    page = medians(interleaved(args.page_runs, {"list": listing, "baseline": bare}, warmup=2))
    print(f"  (b) list by kind and health (50 of {GROUPS:,}): {page['list'] * 1000:.1f} ms median "
          f"(target ≤ {LIST_TARGET_MS:.0f} ms) · bare SELECT {page['baseline'] * 1000:.1f} ms")
    session.close()
    missed = []
    if snap["snapshot"] > SNAPSHOT_TARGET_S:
        missed.append("snapshot")
    if page["list"] * 1000 > LIST_TARGET_MS:
        missed.append("list")
    print(f"  {'MISSED: ' + ', '.join(missed) if missed else 'both targets met'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
