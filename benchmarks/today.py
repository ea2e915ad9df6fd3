"""Benchmark: making the day's tasks (今日任务) for 1,000,000 customers, and /today for one operator.

Builds (or reuses) a database with 1,000,000 customers (one friendship each, a last touch spread
over 180 days) on 50 accounts, 60 operators (50 own an account of 20,000 customers; 10 more help on
two accounts each), 10 cadence policies and each customer's next-due day (``cadence_due``, spread
from 10 days overdue to 50 days ahead), purchase facts for 333,000 of them, a birthday for 333,000,
1,000 open follow-ups, 500 unanswered conversations, ~16,000 new friends over 8 days through 50
channels (half without a remark name) and friends who deleted us today — and 5 running customer
SOPs written through ``sops.service`` (``create_sop``; their past enrolments through
``candidates``/``insert_enrolments``, steps due before today already run, as the 5-minute job left
them):

  1. 新客7天培育 — added through any of the 50 channels; day 0 task, day 1 WeCom message, day 3 and
     day 7 tasks; exits on purchase and deletion;
  2. 生日关怀 — birthday; day 0 WeCom message and task;
  3. 沉睡唤醒 — 120 days without a touch, audience 金卡会员; day 0 task, day 2 message, day 5 task;
  4. 复购关怀 — a purchase; day 3 task, day 15 message, day 30 task;
  5. 会员周关怀 — tag 会员周关怀 added (5,000 customers); every <today's weekday> 10:00 task × 8.

The benchmark's clock is today 11:00 local (every step of the day at 09:00/10:00 is due). Then:

  (a) the day's tasks: ``sops.service.run_all`` (enrol whoever the 5 triggers fired for, run the due
      steps — tasks, and WeCom messages reserved in the send-quota ledger and handed to an in-process
      stand-in of ``add_msg_template``) followed by ``maintenance.service.generate_tasks`` (every kind of
      candidate read, prioritised, capped at 50 per operator, the SOP tasks counted, written) —
      target ≤ 60 s, printed beside a bare ``SELECT`` of the due customers
      (``cadence_due.next_due_on <= today``) fetched to the client, in the same run; before each run
      (untimed) the day's work is undone — today's tasks, enrolments, step runs, timeline entries and
      ledger rows — so every run does it all again;
  (b) ``GET /today`` (the console page) and ``GET /api/v1/tasks?due=today`` for an operator whose
      account has 20,000 customers — target ≤ 100 ms median for the page.

Exits non-zero when a target is missed.

Usage:  .venv/bin/python benchmarks/today.py [--database URL] [--runs 3] [--page-runs 21] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs). For PostgreSQL pass
``--database postgresql+psycopg://postgres@127.0.0.1:5432/<your own database>``.
Data are written with executemany of tuples (SQLite) or COPY (PostgreSQL). Not part of pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

from machine import cpu_seconds, database_url, forget_sqlite, interleaved, medians, print_header
from segments import Loader, drop_indexes
from sqlalchemy import Engine, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from siyu.core.db import make_engine
from siyu.core.migrate import upgrade
from siyu.core.models import AppSetting
from siyu.core.settings import get_settings, local_today, local_zone
from siyu.core.viewer import SYSTEM
from siyu.customers import service as customers_service

CUSTOMERS = 1_000_000
ACCOUNTS = 50
OPERATORS = 60
POLICIES = 10
SOPS = 5
NEW_FRIEND_SHARE = 0.016  # ~2,000 new friends a day over the last 8 days
SOP_TAGGED_EVERY = 200  # one customer in this many has the weekly SOP's tag (5,000 of 1,000,000)
SEED = 2026
MARKER_KEY = "benchmark_today"
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_today.db")
PASSWORD = "benchmark-password-today"  # noqa: S105 - a throwaway user of a throwaway database
GENERATE_TARGET_S = 60.0
PAGE_TARGET_MS = 100.0
LEVELS = ("", "", "普通会员", "银卡会员", "金卡会员")
HEAVY_TABLES = ("customer", "friendship", "cadence_due", "customer_purchase_facts", "custom_field_value",
                "follow_up", "conversation", "channel_add", "customer_tag")


def clock_now() -> datetime:
    """The benchmark's "now": today 11:00 local, after every SOP step of the day (09:00, 10:00) is due."""
    return datetime.combine(local_today(), clock(11, 0), tzinfo=local_zone()).astimezone(UTC)


def spec(customers: int) -> dict[str, Any]:
    return {"version": 3, "customers": customers, "day": local_today().isoformat()}  # the data are relative to today


class StandInWecom:
    """In process, instead of WeCom: ``add_msg_template`` answers a msgid (the benchmark measures Siyu's work)."""

    def __init__(self) -> None:
        self.calls = 0

    def create_mass_send(self, *, sender: str, text: str, chat_type: str,
                         external_userids: list[str]) -> dict[str, Any]:
        self.calls += 1
        return {"errcode": 0, "msgid": f"bench-msg-{self.calls}", "fail_list": []}


def ready(engine: Engine, customers: int) -> bool:
    try:
        with Session(engine) as session:
            row = session.get(AppSetting, MARKER_KEY)
            return row is not None and all(row.value.get(k) == v for k, v in spec(customers).items())
    except Exception:  # a missing table means "not built"
        return False


def build(engine: Engine, url: str, customers: int) -> None:
    from siyu.team import service as team_service
    from siyu.team.schemas import UserIn

    started = time.perf_counter()
    upgrade(url)
    with Session(engine) as session:
        customers_service.ensure_default_tag_groups(session)
        # Operators through the service (a real password hash for the page login), accounts after them.
        for n in range(1, OPERATORS + 1):
            team_service.create_user(session, data=UserIn(username=f"op{n:02d}", password=PASSWORD,
                                                          role="operator"), actor=SYSTEM)  # type: ignore[arg-type]
        session.commit()
    loader = Loader(engine)
    indexes = drop_indexes(engine, loader, HEAVY_TABLES)
    rng = random.Random(SEED)
    now = clock_now()
    stamp = loader.time(now)
    today = local_today()
    loader.rows("account", ("id", "kind", "display_name", "wechat_id", "wecom_userid", "store", "brand", "tier_served",
                            "owner_user_id", "friend_capacity", "status", "positioning", "avatar_url", "signature",
                            "greeting", "moments_cover_url", "created_at"),
                [(i, "wecom", f"山野茶舍·{i:02d}", "", f"bench{i:02d}", "西湖店", "山野茶舍", "", i, 20000, "active",
                  "", "", "", "", "", stamp) for i in range(1, ACCOUNTS + 1)])
    links = [(i, i) for i in range(1, ACCOUNTS + 1)]
    links += [(ACCOUNTS + k, 1 + (2 * k) % ACCOUNTS) for k in range(1, OPERATORS - ACCOUNTS + 1)]
    links += [(ACCOUNTS + k, 1 + (2 * k + 1) % ACCOUNTS) for k in range(1, OPERATORS - ACCOUNTS + 1)]
    loader.rows("user_account", ("user_id", "account_id"), links)
    loader.rows("cadence_policy", ("id", "name", "conditions", "every_days", "quiet_days", "position", "active",
                                   "matched", "created_at", "updated_at"),
                [(p, f"节奏{p}", None, (3, 7, 7, 14, 14, 30, 30, 30, 60, 90)[p - 1], 3, p, True,
                  customers // POLICIES, stamp, stamp) for p in range(1, POLICIES + 1)])

    touched = [loader.time(now - timedelta(minutes=m)) for m in range(90, 180 * 24 * 60, 97)]

    def customer_rows() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customers + 1):
            yield (cid, f"顾客{cid}", "", "", "", "", "", "", "", "", "", "", "", "user", LEVELS[cid % len(LEVELS)],
                   0, 0, 0, touched[rng.randrange(len(touched))], 50, f"wmBench{cid:07d}", stamp, stamp)

    loader.rows("customer", ("id", "name", "wechat_id", "avatar_url", "source", "gender", "age_band", "city", "job",
                             "income_band", "family", "objective_notes", "emotional_notes", "stage", "level",
                             "contact_count", "purchase_count", "purchase_total", "last_touch_at", "completeness",
                             "wecom_external_userid", "created_at", "updated_at"), customer_rows())
    recent = loader.time(now - timedelta(hours=5))
    old = loader.time(now - timedelta(days=200))
    adds: list[tuple[int, int, datetime]] = []  # new friends through a channel: customer, account, when

    def friendships() -> Iterator[tuple[Any, ...]]:
        for cid in range(1, customers + 1):
            new = rng.random() < NEW_FRIEND_SHARE  # new friends of the last 8 days, half without a remark name
            deleted = rng.random() < 0.0005  # ~500 deleted us today
            account = 1 + cid % ACCOUNTS
            added = now - timedelta(minutes=rng.randrange(60, 8 * 24 * 60)) if new else None
            if added is not None:
                adds.append((cid, account, added))
            yield (cid, cid, account, "" if new and rng.random() < 0.5 else f"顾客{cid}-爱喝茶", "", "",
                   "deleted" if deleted else "active", "", loader.time(added) if added else old,
                   recent if deleted else None)

    loader.rows("friendship", ("id", "customer_id", "account_id", "remark_name", "salutation", "description", "status",
                               "channel_state", "added_at", "removed_at"), friendships())
    with Session(engine) as session:  # one channel per account, the ORM's defaults
        from siyu.channels.models import Channel

        for i in range(1, ACCOUNTS + 1):
            session.add(Channel(id=i, key=f"bench{i:02d}", name=f"门店导购码{i:02d}", account_ids=[i]))
        session.commit()
    loader.rows("channel_add", ("channel_id", "customer_id", "account_id", "first_touch", "added_at", "added_on",
                                "removed_at", "promoter_id"),
                ((a, c, a, True, loader.time(at), at.astimezone(local_zone()).date().isoformat(), None, None)
                 for c, a, at in adds))
    days = [(today + timedelta(days=d)).isoformat() for d in range(-10, 51)]
    loader.rows("cadence_due", ("customer_id", "account_id", "policy_id", "next_due_on", "last_private_at"),
                ((cid, 1 + cid % ACCOUNTS, 1 + cid % POLICIES, days[rng.randrange(len(days))], None)
                 for cid in range(1, customers + 1)))
    bought = [loader.time(now - timedelta(days=d)) for d in range(1, 400)]
    loader.rows("customer_purchase_facts",
                ("customer_id", "purchase_count", "total_spent", "avg_order_value", "refunded_total",
                 "first_purchase_at", "last_purchase_at", "favourite_category", "new_launch_purchases", "updated_at"),
                ((cid, 2, rng.randrange(50, 20000), 300, 0, bought[-1], bought[rng.randrange(len(bought))], "绿茶", 0,
                  stamp) for cid in range(3, customers + 1, 10 // 3)))
    loader.rows("custom_field", ("id", "key", "label", "field_type", "choices", "sort_order"),
                [(1, "birthday", "生日", "date", "[]", 1)])
    loader.rows("custom_field_value", ("customer_id", "field_id", "value"),
                ((cid, 1, f"19{70 + cid % 30}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}")
                 for cid in range(1, customers + 1, 10 // 3)))
    loader.rows("follow_up", ("id", "customer_id", "account_id", "due_on", "note", "done", "created_at"),
                ((n, cid, 1 + cid % ACCOUNTS, days[rng.randrange(0, 20)], "回访新茶口感", False, stamp)
                 for n, cid in enumerate(rng.sample(range(1, customers + 1), 1_000), start=1)))
    loader.rows("conversation", ("id", "key", "account_id", "customer_id", "group_key", "channel", "status",
                                 "unanswered", "priority", "last_message_preview", "opened_at", "created_at"),
                ((n, f"bench:{cid}", 1 + cid % ACCOUNTS, cid, "", "personal", "open", 2, 0, "在吗", recent, stamp)
                 for n, cid in enumerate(rng.sample(range(1, customers + 1), 500), start=1)))
    with Session(engine) as session:
        from siyu.customers.models import Tag, TagGroup

        group = TagGroup(name="会员运营", kind="custom")
        session.add(group)
        session.flush()
        session.add(Tag(id=9001, group_id=group.id, name="会员周关怀"))
        session.commit()
    loader.rows("customer_tag", ("customer_id", "tag_id", "created_at"),
                ((cid, 9001, loader.time(now - timedelta(minutes=rng.randrange(60, 56 * 24 * 60))))
                 for cid in range(7, customers + 1, SOP_TAGGED_EVERY)))
    for sql in indexes:
        loader.execute(sql)
    if loader.postgres:
        loader.execute("ANALYZE")
        loader.execute("SELECT setval(pg_get_serial_sequence('customer', 'id'), (SELECT max(id) FROM customer))")
    else:
        loader.execute("ANALYZE")
    loader.close()
    sop_started = time.perf_counter()
    build_sops(engine, now)
    with Session(engine) as session:
        session.merge(AppSetting(key=MARKER_KEY, value={**spec(customers), **marks(session)}))
        session.commit()
    print(f"  built in {time.perf_counter() - started:.0f} s (the SOPs and their past enrolments "
          f"{time.perf_counter() - sop_started:.0f} s)", flush=True)


def sop_definitions(today: date) -> list[dict[str, Any]]:
    weekday = ("一", "二", "三", "四", "五", "六", "日")[today.weekday()]
    return [
        {"name": "新客7天培育", "trigger": {"kind": "channel", "channel_ids": list(range(1, ACCOUNTS + 1))},
         "exits": ["purchase", "deleted"], "steps": [
            {"at": "day 0 09:00", "kind": "task", "text": "{称呼}您好，欢迎来到山野茶舍，问问平时爱喝什么茶"},
            {"at": "day 1 10:00", "kind": "send", "text": "{称呼}，新客专享：到店试饮一杯本季新茶～"},
            {"at": "day 3 09:00", "kind": "task", "text": "回访试饮感受，推荐一款入门茶"},
            {"at": "day 7 09:00", "kind": "task", "text": "邀请{称呼}加入会员，介绍积分"}]},
        {"name": "生日关怀", "trigger": {"kind": "birthday"}, "exits": [], "steps": [
            {"at": "day 0 09:00", "kind": "send", "text": "{称呼}生日快乐！{账号}给您准备了一份生日茶礼"},
            {"at": "day 0 10:00", "kind": "task", "text": "生日当天私聊祝福，提醒领取茶礼"}]},
        {"name": "沉睡唤醒", "trigger": {"kind": "no_touch", "days": 120}, "exits": ["reply", "purchase"],
         "conditions": {"kind": "and", "conditions": [{"kind": "level", "levels": ["金卡会员"]}]}, "steps": [
            {"at": "day 0 09:00", "kind": "task", "text": "很久没聊了，问候{称呼}近况"},
            {"at": "day 2 10:00", "kind": "send", "text": "{称呼}，好久不见，本周老友回店有茶点相送"},
            {"at": "day 5 09:00", "kind": "task", "text": "看看{称呼}是否回复，约到店品鉴"}]},
        {"name": "复购关怀", "trigger": {"kind": "purchase"}, "exits": [], "steps": [
            {"at": "day 3 09:00", "kind": "task", "text": "问问{称呼}新茶的口感，教冲泡"},
            {"at": "day 15 10:00", "kind": "send", "text": "{称呼}，您上次买的茶快喝完了吗？老客续购有礼"},
            {"at": "day 30 09:00", "kind": "task", "text": "复购提醒：推荐同款或相近口味"}]},
        {"name": "会员周关怀", "trigger": {"kind": "tag", "tag_ids": [9001]}, "exits": ["deleted"], "steps": [
            {"at": f"每周{weekday} 10:00", "kind": "task", "text": "本周问候{称呼}，分享一条饮茶小知识",
             "times": 8}]},
    ]


def build_sops(engine: Engine, now: datetime) -> None:
    """The 5 SOPs through ``sops.service``, started 60 days ago; everyone their triggers fired for before
    today is enrolled (as the hooks and the job did), their steps due before today marked run."""
    from siyu.customers.models import Customer
    from siyu.sops import service as sops
    from siyu.sops.models import Sop, TriggerKind
    from siyu.sops.schemas import SopIn

    midnight = datetime.combine(local_today(), clock(), tzinfo=local_zone()).astimezone(UTC)
    with Session(engine) as session:
        for definition in sop_definitions(local_today()):
            sop = sops.create_sop(session, data=SopIn.model_validate(definition), viewer=SYSTEM, now=now)
            sop.started_at = now - timedelta(days=60)
            session.flush()
            version = sops.current_version(session, sop)
            kind = TriggerKind(version.trigger["kind"])
            if kind is TriggerKind.birthday:
                continue  # earlier birthdays' enrolments are long completed: they change no work of today
            entries = sops.candidates(session, sop=sop, version=version, now=midnight - timedelta(seconds=1))
            if kind is TriggerKind.no_touch:  # each entered the day they lapsed, not today
                lapse = timedelta(days=int(version.trigger["days"]))
                last = {c: sops._aware(at) for c, at in session.execute(
                    select(Customer.id, Customer.last_touch_at).where(Customer.last_touch_at < midnight - lapse))}
                entries = [sops.Entry(e.customer_id, e.account_id, last[e.customer_id] + lapse, e.occurrence)
                           for e in entries if e.customer_id in last]
            entered = sops.insert_enrolments(session, sop=sop, version=version, entries=entries, now=midnight)
            print(f"  SOP {sop.name}: {entered:,} enrolled before today", flush=True)
            session.commit()
        assert session.scalar(select(func.count()).select_from(Sop)) == SOPS
    settle_past_steps(engine)


def settle_past_steps(engine: Engine) -> None:
    """Steps due before today ran on their days (the 5-minute job); enrolments with nothing left completed.
    Then ANALYZE, as for the other tables: the planner knows the SOP tables' sizes."""
    from siyu.sops.models import EnrolmentStatus, RunOutcome, RunStatus, SopEnrolment, SopStepRun

    midnight = datetime.combine(local_today(), clock(), tzinfo=local_zone()).astimezone(UTC)
    with Session(engine) as session:
        session.execute(update(SopStepRun).where(SopStepRun.status == RunStatus.pending.value,
                                                 SopStepRun.due_at < midnight)
                        .values(status=RunStatus.done.value, outcome=RunOutcome.task.value, ran_at=SopStepRun.due_at),
                        execution_options={"synchronize_session": False})
        still = select(SopStepRun.enrolment_id).where(SopStepRun.status == RunStatus.pending.value).distinct()
        session.execute(update(SopEnrolment).where(SopEnrolment.status == EnrolmentStatus.active.value,
                                                   SopEnrolment.id.not_in(still))
                        .values(status=EnrolmentStatus.completed.value, finished_at=midnight - timedelta(seconds=1)),
                        execution_options={"synchronize_session": False})
        session.execute(update(SopEnrolment).values(created_at=SopEnrolment.anchor_at),
                        execution_options={"synchronize_session": False})
        session.commit()
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def marks(session: Session) -> dict[str, int]:
    """The highest ids the build left: what a run adds above them is undone before the next run."""
    from siyu.customers.models import Touch
    from siyu.sends.models import SendLedgerEntry
    from siyu.sops.models import SopEnrolment

    return {"enrolment": int(session.scalar(select(func.max(SopEnrolment.id))) or 0),
            "touch": int(session.scalar(select(func.max(Touch.id))) or 0),
            "ledger": int(session.scalar(select(func.max(SendLedgerEntry.id))) or 0)}


def undo_today(engine: Engine, mark: dict[str, Any]) -> None:
    """Back to the build's state: the day's tasks, enrolments, step runs, timeline entries and ledger rows."""
    from siyu.customers.models import Touch
    from siyu.maintenance.models import Task
    from siyu.sends.models import SendLedgerEntry
    from siyu.sops.models import EnrolmentStatus, RunStatus, SopEnrolment, SopStepRun

    midnight = datetime.combine(local_today(), clock(), tzinfo=local_zone()).astimezone(UTC)
    with Session(engine) as session:
        session.execute(delete(SopStepRun).where(SopStepRun.enrolment_id > mark["enrolment"]))
        session.execute(delete(SopEnrolment).where(SopEnrolment.id > mark["enrolment"]))
        session.execute(update(SopStepRun).where(or_(SopStepRun.claimed_at.is_not(None), SopStepRun.ran_at >= midnight))
                        .values(status=RunStatus.pending.value, outcome="", detail="", task_id=None, msgid="",
                                claimed_at=None, ran_at=None))
        session.execute(update(SopEnrolment).where(SopEnrolment.finished_at >= midnight)
                        .values(status=EnrolmentStatus.active.value, exit_reason="", finished_at=None))
        session.execute(delete(Task).where(Task.day == local_today()))
        session.execute(delete(Touch).where(Touch.id > mark["touch"]))
        session.execute(delete(SendLedgerEntry).where(SendLedgerEntry.id > mark["ledger"]))
        session.commit()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page) or re.search(
        r'name="csrf-token" content="([^"]+)"', page)
    assert found, "no CSRF token"
    return found.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-runs", type=int, default=21)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    url = database_url(args.database, DEFAULT_PATH, rebuild=args.rebuild)
    print_header(f"今日任务: {args.customers:,} customers, {ACCOUNTS} accounts, {OPERATORS} operators, "
                 f"{POLICIES} cadence policies, {SOPS} running SOPs")
    print(f"database: {url.split('@')[-1]}", flush=True)
    os.environ.update({"SIYU_DATABASE_URL": url, "SIYU_WORKER_IN_PROCESS": "0",
                       "SIYU_SECRET_KEY": "today-benchmark-secret-key"})
    get_settings.cache_clear()
    from siyu.core import db as core_db

    core_db.reset_engine()
    engine = make_engine(url)
    if not ready(engine, args.customers):
        if url.startswith("sqlite:///"):  # built for another spec, or half built: start again
            engine.dispose()
            forget_sqlite(url)
            engine = make_engine(url)
        print("building the data… (PostgreSQL: give an empty database)", flush=True)
        build(engine, url, args.customers)
    from siyu.maintenance import service
    from siyu.maintenance.models import Task
    from siyu.sops import service as sops_service

    failures: list[str] = []
    today = local_today()
    now = clock_now()
    results: list[Any] = []
    sop_results: list[Any] = []
    cpu_used: list[float] = []
    wecom = StandInWecom()
    with Session(engine) as session:
        setting = session.get(AppSetting, MARKER_KEY)
        assert setting is not None
        mark = dict(setting.value)
        running = len(sops_service.running_sops(session))
    assert running == SOPS, f"{running} running SOPs, expected {SOPS}"

    def generate() -> None:
        undo_today(engine, mark)
        with Session(engine) as session:
            started, cpu = time.perf_counter(), cpu_seconds()
            sop_results.append(sops_service.run_all(session, now=now, api=wecom, commit=True))
            sop_results.append(time.perf_counter() - started)
            results.append(service.generate_tasks(session, now=now))
            session.commit()
            results.append(time.perf_counter() - started)
            cpu_used.append(cpu_seconds() - cpu)  # this process's CPU: the work, whatever else the machine runs

    def bare() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT customer_id, account_id FROM cadence_due WHERE next_due_on <= :d"),
                         {"d": today}).fetchall()

    samples = interleaved(args.runs, {"generate": generate, "bare": bare})
    result = results[-2]
    med = medians(samples)
    med["generate"] = statistics.median(float(r) for r in results[1::2])  # without undoing the day's work
    sop_result = sop_results[-2]
    sop_median = statistics.median(float(r) for r in sop_results[1::2])
    with Session(engine) as session:
        sop_tasks = session.scalar(select(func.count()).select_from(Task).where(Task.day == today,
                                                                                Task.kind == "sop"))
    print(f"(a) the day's tasks with {SOPS} running SOPs: median {med['generate']:.1f} s "
          f"(target ≤ {GENERATE_TARGET_S:.0f} s; of which the SOP run {sop_median:.1f} s)"
          f"  ·  bare SELECT of the due customers: median {med['bare']:.2f} s"
          f"  ·  CPU of this process: median {statistics.median(cpu_used):.1f} s", flush=True)
    print(f"    SOPs: entered {sop_result.entered:,}, steps run {sop_result.ran:,} "
          f"{dict(sorted(sop_result.by_outcome.items()))}, SOP tasks {sop_tasks:,}, "
          f"messages handed to WeCom {wecom.calls // max(1, args.runs):,} a run", flush=True)
    print(f"    tasks: due {result.due_customers:,}, candidates {result.candidates:,}, created {result.created:,} "
          f"{dict(sorted(result.by_kind.items()))}", flush=True)
    if sop_result.ran == 0 or sop_result.entered == 0:
        failures.append("the SOPs ran nothing")
    if med["generate"] > GENERATE_TARGET_S:
        failures.append(f"generate_tasks {med['generate']:.1f} s > {GENERATE_TARGET_S:.0f} s")

    # (b) /today for op01 (account 1: 20,000 customers), the page and the API.
    from fastapi.testclient import TestClient

    from siyu.app import create_app

    with TestClient(create_app()) as client:
        login = client.get("/login")
        answer = client.post("/login", data={"username": "op01", "password": PASSWORD, "csrf_token": _csrf(login.text),
                                             "next": "/"}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        token = client.post("/api/v1/auth/token", data={"username": "op01", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        with Session(engine) as session:
            friends = session.scalar(text("SELECT count(*) FROM friendship WHERE account_id = 1"))
        page = client.get("/today")
        shown = page.text.count('data-testid="task"')
        assert page.status_code == 200 and shown > 0, (page.status_code, shown)

        def today_page() -> None:
            assert client.get("/today").status_code == 200

        def today_api() -> None:
            assert client.get("/api/v1/tasks?due=today", headers=headers).status_code == 200

        page_samples = interleaved(args.page_runs, {"page": today_page, "api": today_api}, warmup=2)
    pm = medians(page_samples)
    print(f"(b) /today for op01 ({friends:,} customers, {shown} tasks shown): page median {pm['page'] * 1000:.1f} ms "
          f"(target ≤ {PAGE_TARGET_MS:.0f} ms)  ·  API median {pm['api'] * 1000:.1f} ms", flush=True)
    if pm["page"] * 1000 > PAGE_TARGET_MS:
        failures.append(f"/today {pm['page'] * 1000:.1f} ms > {PAGE_TARGET_MS:.0f} ms")
    with Session(engine) as session:
        left = session.scalar(select(Task.id).limit(1))
    print(f"tasks kept: {'yes' if left else 'no'} · {datetime.now(UTC):%H:%M:%S} UTC")
    for failure in failures:
        print(f"MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
