"""Benchmark: 群规 moderation over a 100,000-message group day, all rules on (issue 22).

Builds (or reuses) a database with 5,000 customer groups, 600,000 memberships (120 per group, with
group nicknames — most in the 名称+地区+职业 format, some not, some with emoji) and 100,000 group
messages over one day as the chat archive stores them (text, stickers, voices, links, mini programs,
cards, red packets), 20 whitelisted colleagues and six live rules — one of each type, the seed's
ad rule (50 yuan / 20 people / 3 minutes) and a banned-word list of 5,000 words. Then, interleaved
in the same run:

  (a) moderation: ``service.load_messages`` (the day's messages read as the minutely job and a dry run
      read them, red packets' amounts included) + ``service.group_infos`` + ``engine.Engine.run`` —
      target ≥ 20,000 messages/s on one core;
  (b) baseline: a bare loop that only reads the same rows (the same SELECT, fetched to the client);
  (c) the engine alone over the messages in memory, beside a bare loop over the same list.

Storing the findings (one insert each, the owner's tasks, timeline and audit) is timed once after,
for information: it depends on how many findings there are, not on the message count.

Exits non-zero when (a) misses the target.

Usage:  .venv/bin/python benchmarks/moderation.py [--database URL] [--runs 5] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs). Not part of pytest.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from machine import cpu_seconds, interleaved, medians, print_header
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.db import make_engine
from siyu.core.migrate import upgrade
from siyu.core.models import AppSetting
from siyu.core.viewer import SYSTEM
from siyu.groups.models import GroupChat, GroupMember, GroupMessage
from siyu.groups.moderation import engine as moderation_engine
from siyu.groups.moderation import service
from siyu.groups.moderation.models import ModerationFinding, ModerationRule, ModerationWhitelist
from siyu.groups.moderation.schemas import RuleIn

GROUPS = 5_000
PER_GROUP = 120  # 600,000 memberships
MESSAGES = 100_000
WORDS = 5_000
TARGET_PER_SECOND = 20_000
SEED = 22
MARKER_KEY = "benchmark_moderation"
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_moderation.db")
DAY = datetime(2026, 12, 4, tzinfo=UTC)
BATCH = 20_000
CHAT = ["早上好", "今天的早报收到了", "这个产品怎么买？", "谢谢分享", "请问周末有活动吗", "哈哈哈", "学到了",
        "老师讲得真好", "我也想报名", "明天见", "已下单", "收到，谢谢群主"]
NICKS = ["{n}+杭州+会计", "🌸{n} 上海 宝妈", "{n}·北京·设计师", "{n}", "{n}🌸", "{n} - 郑州 - 销售"]


def spec() -> dict[str, int]:
    return {"version": 1, "groups": GROUPS, "per_group": PER_GROUP, "messages": MESSAGES}


def ready(engine: Engine) -> bool:
    try:
        with Session(engine) as session:
            row = session.get(AppSetting, MARKER_KEY)
            return row is not None and row.value == spec()
    except Exception:  # a missing table: not built
        return False


def build(engine: Engine) -> None:
    rng = random.Random(SEED)
    started = time.perf_counter()
    with Session(engine) as session:
        for table in (ModerationFinding, ModerationRule, ModerationWhitelist, GroupMessage, GroupMember, GroupChat):
            session.execute(delete(table))
        owners = []
        for n in range(50):
            account = Account(kind="wecom", display_name=f"门店{n}", wecom_userid=f"owner{n:02d}")
            session.add(account)
            owners.append(account)
        session.flush()
        session.execute(insert(GroupChat), [
            {"id": g + 1, "chat_id": f"wrBENCH{g:05d}", "name": f"金万家郑州中心创富孵化群{g + 1}",
             "owner_userid": owners[g % 50].wecom_userid, "owner_account_id": owners[g % 50].id,
             "admin_userids": [f"admin{g % 50:02d}"], "member_count": PER_GROUP, "customer_count": PER_GROUP - 2}
            for g in range(GROUPS)])
        rows = []
        for g in range(GROUPS):
            rows.append({"group_chat_id": g + 1, "userid": owners[g % 50].wecom_userid, "member_type": 1,
                         "name": "群主", "group_nickname": ""})
            rows.append({"group_chat_id": g + 1, "userid": f"admin{g % 50:02d}", "member_type": 1, "name": "管理员",
                         "group_nickname": ""})
            for m in range(PER_GROUP - 2):
                name = f"成员{g}-{m}"
                rows.append({"group_chat_id": g + 1, "userid": f"wm{g:05d}{m:03d}", "member_type": 2, "name": name,
                             "group_nickname": rng.choice(NICKS).format(n=name)})
            if len(rows) >= BATCH:
                session.execute(insert(GroupMember), rows)
                rows = []
        if rows:
            session.execute(insert(GroupMember), rows)
        messages = []
        start = DAY.timestamp()
        for n in range(MESSAGES):
            g = rng.randrange(GROUPS)
            sender = f"wm{g:05d}{rng.randrange(PER_GROUP - 2):03d}"
            roll = rng.random()
            kind, body, content = "text", {}, rng.choice(CHAT)
            if roll < 0.05:
                kind, content = "emotion", ""
            elif roll < 0.08:
                kind, content = "voice", ""
            elif roll < 0.10:
                kind, content = rng.choice(["link", "weapp", "card"]), "限时优惠，点击领取"
            elif roll < 0.11:
                kind, content = "redpacket", ""
                body = {"redpacket": {"type": 2, "totalcnt": rng.choice([10, 20, 30]),
                                      "totalamount": rng.choice([2000, 5000, 8800])}}
            elif roll < 0.115:
                content = f"有人玩违禁词{rng.randrange(WORDS):04d}吗"
            at = datetime.fromtimestamp(start + n * 86400 / MESSAGES + rng.random(), tz=UTC)
            messages.append({"msgid": f"bench{n:07d}", "seq": n + 1, "chat_id": f"wrBENCH{g:05d}",
                             "group_chat_id": g + 1, "sender": sender, "member_type": 2, "action": "send",
                             "msg_type": kind, "text": content, "payload": {"msgtype": kind, **body}, "sent_at": at,
                             "received_at": at})
            if len(messages) >= BATCH:
                session.execute(insert(GroupMessage), messages)
                messages = []
        if messages:
            session.execute(insert(GroupMessage), messages)
        session.add_all([ModerationWhitelist(userid=f"wm{g:05d}000", note="群客服") for g in range(20)])
        rules: list[dict[str, Any]] = [
            {"name": "广告须发红包", "kind": "ad", "params": {"minutes": 3, "min_yuan": 50, "min_people": 20,
                                                            "ad_words": ["加我微信", "代理招募"]}},
            {"name": "禁止刷屏", "kind": "flood", "params": {"count": 8, "seconds": 60}},
            {"name": "禁止连续发表情", "kind": "stickers", "params": {"count": 3}},
            {"name": "禁止刷语音", "kind": "voice", "params": {"count": 3, "seconds": 120}},
            {"name": "违禁话题", "kind": "banned_words", "params": {"words": [f"违禁词{n:04d}" for n in range(WORDS)]}},
            {"name": "群昵称", "kind": "nickname", "params": {"parts": 3}}]
        for data in rules:
            service.save_rule(session, data=RuleIn(**data, status="live", ladder=[["owner_task"]]), viewer=SYSTEM)
        session.merge(AppSetting(key=MARKER_KEY, value=spec()))
        session.commit()
    print(f"  built in {time.perf_counter() - started:.1f} s", flush=True)


def timed(runs: int, actions: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU seconds of each action, interleaved (A, B, A, B …) after one warm-up round. CPU time
    is what the work costs one core whatever else the shared machine runs; wall time is printed beside it."""
    for action in actions.values():
        action()
    wall: dict[str, list[float]] = {name: [] for name in actions}
    cpu: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            action()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
    return medians(wall), medians(cpu)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default=f"sqlite:///{DEFAULT_PATH}")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    print_header("群规 moderation: 5,000 groups, 600,000 memberships, a 100,000-message day, all rules on")
    upgrade(args.database)
    engine = make_engine(args.database)
    if args.rebuild or not ready(engine):
        build(engine)
    since = DAY
    with Session(engine) as session:
        specs = service.live_specs(session)
        cols = (GroupMessage.msgid, GroupMessage.group_chat_id, GroupMessage.sender, GroupMessage.sent_at,
                GroupMessage.msg_type, GroupMessage.text, GroupMessage.action)
        found: dict[str, Any] = {}

        def bare_read() -> None:
            count = 0
            for _row in session.execute(select(*cols).where(GroupMessage.group_chat_id.is_not(None),
                                                            GroupMessage.action == "send",
                                                            GroupMessage.sent_at >= since)):
                count += 1
            found["read"] = count

        def moderate() -> None:
            messages = service.load_messages(session, since=since)
            groups = service.group_infos(session, {m.group for m in messages})
            result = moderation_engine.Engine(specs).run(messages, groups, now=(since + timedelta(days=2)).timestamp())
            found["messages"], found["hits"], found["result"] = len(messages), len(result.hits), result

        cpu_before = cpu_seconds()
        samples, cpu = timed(args.runs, {"bare read": bare_read, "moderation": moderate})
        cpu_used = cpu_seconds() - cpu_before
        messages = service.load_messages(session, since=since)
        groups = service.group_infos(session, {m.group for m in messages})

        def bare_loop() -> None:
            count = 0
            for m in messages:
                if m.text is not None:
                    count += 1

        def engine_only() -> None:
            moderation_engine.Engine(specs).run(messages, groups, now=(since + timedelta(days=2)).timestamp())

        memory = medians(interleaved(args.runs, {"bare loop": bare_loop, "engine": engine_only}, warmup=1))
        result = found["result"]
        by_rule: dict[int, int] = {}
        for hit in result.hits:
            by_rule[hit.rule_id] = by_rule.get(hit.rule_id, 0) + 1
        started = time.perf_counter()
        session.execute(delete(ModerationFinding))
        created = service.store_hits(session, result.hits[:2000])
        session.rollback()
        store_s = time.perf_counter() - started
    rate = found["messages"] / cpu["moderation"]  # on one core: the process's own CPU time
    wall_rate = found["messages"] / samples["moderation"]
    print(f"  messages: {found['messages']:,} read (bare SELECT {found['read']:,}); findings: {found['hits']:,} "
          f"({', '.join(f'{s.kind} {by_rule.get(s.id, 0)}' for s in specs)})")
    bare = samples['bare read']
    print(f"  (b) bare read: {bare:.2f} s median ({found['read'] / bare:,.0f}/s)")
    print(f"  (b) bare read CPU: {cpu['bare read']:.2f} s median")
    print(f"  (a) moderation (read + all rules): CPU {cpu['moderation']:.2f} s median → {rate:,.0f} messages/s on "
          f"one core (target ≥ {TARGET_PER_SECOND:,}/s; {cpu['moderation'] / cpu['bare read']:.2f}× the bare "
          f"read); wall {samples['moderation']:.2f} s → {wall_rate:,.0f}/s "
          f"({samples['moderation'] / samples['bare read']:.2f}× the bare read)")
    print(f"  (c) in memory: bare loop {memory['bare loop'] * 1000:.0f} ms, engine {memory['engine']:.2f} s → "
          f"{len(messages) / memory['engine']:,.0f} messages/s")
    print(f"  storing {len(created):,} findings with their actions (tasks, timeline, audit): {store_s:.1f} s "
          f"(rolled back)")
    print(f"  CPU over the interleaved runs: {cpu_used:.1f} s")
    if rate < TARGET_PER_SECOND:
        print(f"MISSED: {rate:,.0f} < {TARGET_PER_SECOND:,} messages/s")
        return 1
    print("met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
