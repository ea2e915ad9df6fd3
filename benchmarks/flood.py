"""Benchmark: a campaign day's flood into the service inbox (seeds/001), on SQLite or PostgreSQL.

1. Through the real channel, 微信客服: 170,000 customer messages from 20,000 customers written to
   the simulator's 客服账号, arriving at Siyu as ``kf_msg_or_event`` callbacks on
   ``/wecom/callback`` (one per 1,000 waiting messages, plus 1 % of them delivered twice, as
   WeCom retries), each pulled with ``kf/sync_msg`` over HTTP from the simulator and ingested end
   to end (callback, pull, customers, dedupe, store, conversation, assignment, auto-reply
   decision) — target ≤30 s — beside, interleaved chunk by chunk in the same run, a raw batched
   INSERT of the same rows into a copy of the message table with its unique key and indexes
   (goal ≤5×). Exits non-zero on a miss.
2. ``inbox.service.ingest`` alone (``--direct``): the same count handed in directly in batches
   of 1,000, beside the same baselines (the numbers of earlier runs).
3. The unanswered queue with 50,000 open conversations: first page of 50 through
   ``inbox.service.list_queue`` — target ≤200 ms — beside the bare SQL.

Usage:  .venv/bin/python benchmarks/flood.py [--database URL] [--messages 170000] [--direct]
Default database: a fresh SQLite file in a temp folder. Not part of pytest.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
from machine import interleaved, medians, print_header
from sqlalchemy import Column, Engine, Index, MetaData, Table, UniqueConstraint, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.db import make_engine, utcnow
from siyu.core.migrate import upgrade
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Friendship
from siyu.inbox import service
from siyu.inbox.models import AgentState, Conversation, Message
from siyu.inbox.service import InboundMessage, QueueFilter
from siyu.team.models import User, UserAccount

ACCOUNTS = 10
CUSTOMERS = 20_000
QUEUE_CONVERSATIONS = 50_000
BATCH = 1000
INGEST_TARGET_S = 30.0
INGEST_GOAL_RATIO = 5.0
QUEUE_TARGET_MS = 200.0
SEED = 170


def build_people(engine: Engine, customers: int) -> None:
    now = utcnow()
    with Session(engine) as session:
        session.execute(insert(Account), [{"id": i, "kind": "wecom", "display_name": f"山野茶舍·{i:02d}",
                                           "wecom_userid": f"flood{i:02d}", "created_at": now}
                                          for i in range(1, ACCOUNTS + 1)])
        session.execute(insert(Customer), [{"id": i, "name": f"顾客{i}", "created_at": now, "updated_at": now}
                                           for i in range(1, customers + 1)])
        session.execute(insert(Friendship), [{"customer_id": i, "account_id": 1 + i % ACCOUNTS, "added_at": now}
                                             for i in range(1, customers + 1)])
        # Two online agents per account, 50 conversations each.
        users = [{"id": i, "username": f"agent{i}", "password_hash": "-", "role": "service", "created_at": now}
                 for i in range(1, 2 * ACCOUNTS + 1)]
        session.execute(insert(User), users)
        session.execute(insert(UserAccount), [{"user_id": u["id"], "account_id": 1 + (u["id"] - 1) // 2}
                                              for u in users])
        session.execute(insert(AgentState), [{"user_id": u["id"], "online": True, "capacity": 50,
                                              "changed_at": now} for u in users])
        if engine.dialect.name == "postgresql":  # rows given their ids: the sequences move past them
            for table in ("account", "customer", "user"):
                session.execute(text(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                                     f"(SELECT MAX(id) FROM \"{table}\"))"))
        session.commit()


def flood_messages(count: int, customers: int, rng: random.Random) -> list[InboundMessage]:
    start = utcnow() - timedelta(hours=12)
    messages = []
    for n in range(count):
        # Everyone writes at least once; then the talkative ones write again and again.
        customer = n + 1 if n < customers else rng.randint(1, customers)
        messages.append(InboundMessage(
            source="simulator", platform_msgid=f"flood-{n}", account_id=1 + customer % ACCOUNTS,
            customer_id=customer, sent_at=start + timedelta(seconds=n * 0.25), sender=f"wm{customer}",
            text=rng.choice(("在吗", "活动怎么参加？", "优惠券用不了", "发货了吗", "[图片]", "谢谢")) + f" #{n}"))
    # The platform retries about 1% of deliveries: the same message again, later in the stream.
    retries = [messages[rng.randrange(count)] for _ in range(count // 100)]
    for retry in retries:
        messages.insert(rng.randrange(len(messages)), retry)
    return messages


def ingest_all(engine: Engine, messages: list[InboundMessage]) -> tuple[float, int, int]:
    started = time.perf_counter()
    stored = duplicates = 0
    for i in range(0, len(messages), BATCH):
        with Session(engine) as session:
            result = service.ingest(session, messages[i:i + BATCH])
            session.commit()
        stored += result.stored
        duplicates += result.duplicates
    return time.perf_counter() - started, stored, duplicates


def _baseline_rows(messages: list[InboundMessage]) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"conversation_id": m.customer_id, "source": m.source, "platform_msgid": m.platform_msgid,
             "direction": "in", "msg_type": m.msg_type, "sender": m.sender, "text": m.text, "sent_at": m.sent_at,
             "received_at": now, "status": "received", "error": "", "automatic": False, "internal": False}
            for m in messages]


def raw_insert(engine: Engine, messages: list[InboundMessage]) -> float:
    """The floor: the same rows, batched INSERT into a bare copy of the message table (no index, no key)."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS message_baseline"))
        conn.execute(text("CREATE TABLE message_baseline AS SELECT * FROM message WHERE 1 = 0"))
    columns = ("conversation_id", "source", "platform_msgid", "direction", "msg_type", "sender", "text", "sent_at",
               "received_at", "status", "error", "automatic", "internal")
    sql = text(f"INSERT INTO message_baseline ({', '.join(columns)}) VALUES "
               f"({', '.join(':' + c for c in columns)})")
    return _timed_batches(engine, sql, _baseline_rows(messages))


def raw_insert_indexed(engine: Engine, messages: list[InboundMessage]) -> float:
    """The same rows into a copy of the message table *with* its unique key and indexes (repeats
    skipped by the key): what storing the messages costs the database before any inbox logic."""
    meta = MetaData()
    source = cast(Table, Message.__table__)
    table = Table("message_baseline_indexed", meta,
                  *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, unique=c.unique)
                    for c in source.columns],
                  UniqueConstraint("source", "platform_msgid"))
    for index in source.indexes:
        Index(f"baseline_{index.name}", *[table.c[column.name] for column in index.columns], unique=index.unique)
    meta.drop_all(engine)
    meta.create_all(engine)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_nothing()
    return _timed_batches(engine, statement, _baseline_rows(messages))


def _timed_batches(engine: Engine, statement: Any, rows: list[dict[str, Any]]) -> float:
    """Seconds to run ``statement`` over ``rows`` in batches of BATCH, one transaction each."""
    started = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        with engine.begin() as conn:
            conn.execute(statement, rows[i:i + BATCH])
    return time.perf_counter() - started


KF_CORP = "wwSIYUFLOODKF0001"
KF_TOKEN = "flood-callback-token"  # noqa: S105 - the simulator's callback token, not a secret
KF_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
KF_SECRET = "flood-kf-secret-0123456789"  # noqa: S105 - the simulator's own
LINES = ("在吗", "活动怎么参加？", "优惠券用不了", "发货了吗", "什么时候到货", "谢谢")


class _SimulatorProcess:
    """The WeCom simulator (a corp with one 客服账号) served by a process of its own."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.urls: Any = context.Queue()
        self.stopping = context.Event()
        self.process = context.Process(target=_serve_simulator, args=(self.urls, self.stopping), daemon=True)
        self.url = ""

    def start(self) -> _SimulatorProcess:
        self.process.start()
        self.url = str(self.urls.get(timeout=60))
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.process.join(timeout=15)
        if self.process.is_alive():
            self.process.kill()


def _serve_simulator(urls: Any, stopping: Any) -> None:
    from siyu.simulator.corp import VirtualCorp
    from siyu.simulator.server import RunningServer, ServerOptions, create_app

    corp = VirtualCorp.seeded(2, corp_id=KF_CORP, contacts_per_member=1, groups_per_member=0, salt=0)
    server = RunningServer(create_app(corp, ServerOptions(secret=KF_SECRET))).start()
    urls.put(server.url)
    stopping.wait()
    server.stop()


def kf_flood(engine: Engine, url: str, count: int, customers: int, rng: random.Random) -> tuple[bool, str]:
    """170,000 messages through kf_msg_or_event + kf/sync_msg from the simulator, with the baseline
    interleaved chunk by chunk. Returns whether the targets were met, and the report."""
    import os

    from fastapi.testclient import TestClient

    from siyu.core import db as core_db
    from siyu.core import jobs
    from siyu.core.settings import get_settings
    from siyu.simulator.callbacks import Encrypter, kf_msg_or_event

    # The simulator runs in a process of its own, as WeCom's servers are not in Siyu's: in this process its
    # log of 170,000 messages was walked by every full garbage collection of Siyu's (≈4 s of a run) and
    # its answers were computed under Siyu's lock on the interpreter.
    simulator = _SimulatorProcess().start()
    control = httpx.Client(base_url=simulator.url, timeout=60)
    os.environ.update({"SIYU_DATABASE_URL": url, "SIYU_WECOM_CORP_ID": KF_CORP, "SIYU_WECOM_TOKEN": KF_TOKEN,
                       "SIYU_WECOM_AES_KEY": KF_AES_KEY, "SIYU_WECOM_SECRET": KF_SECRET,
                       "SIYU_WECOM_API_BASE": simulator.url + "/cgi-bin/", "SIYU_WORKER_IN_PROCESS": "0",
                       "SIYU_SECRET_KEY": "flood-benchmark-secret-key"})
    get_settings.cache_clear()
    core_db.reset_engine()
    jobs.set_immediate(True)  # the callback's event job and the pull run in this process, in order
    from siyu.app import create_app as create_siyu

    encrypter = Encrypter(corp_id=KF_CORP, token=KF_TOKEN, aes_key=KF_AES_KEY)
    open_kfid = control.post("/_simulator/kf_overview", json={}).json()["accounts"][0]["open_kfid"]
    baseline_table = _indexed_copy(engine)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    baseline_statement = dialect.insert(baseline_table).on_conflict_do_nothing()
    known: list[str] = []
    siyu_seconds = baseline_seconds = 0.0
    callbacks = retried = 0
    try:
        with TestClient(create_siyu(), raise_server_exceptions=True) as client:
            for first in range(0, count, BATCH):
                numbers = range(first, min(count, first + BATCH))
                # Customers write (not timed): new ones until every customer wrote, then the talkative ones again.
                fresh = control.post("/_simulator/kf_customer_messages", json={"open_kfid": open_kfid, "messages": [
                    {"external_userid": known[rng.randrange(len(known))] if n >= customers else "",
                     "content": f"{rng.choice(LINES)} #{n}"} for n in numbers]}).json()
                items = list(zip(fresh["items"], numbers, strict=True))  # the items as kf/sync_msg returns them
                known += [item["external_userid"] for item, n in items if n < customers]
                xml = kf_msg_or_event(KF_CORP, token=fresh["token"], open_kfid=open_kfid,
                                      create_time=fresh["create_time"])
                envelope = encrypter.envelope(xml)
                started = time.perf_counter()
                answer = client.post("/wecom/callback", params=envelope.params, content=envelope.body.encode())
                if rng.random() < 0.01:  # WeCom's answer got lost: it sends the callback again
                    again = encrypter.envelope(xml)
                    client.post("/wecom/callback", params=again.params, content=again.body.encode())
                    retried += 1
                siyu_seconds += time.perf_counter() - started
                callbacks += 1
                if answer.text != "success":
                    return False, f"callback answered {answer.status_code}: {answer.text[:200]}"
                now = utcnow()
                # The rows Siyu stores for these messages: text, sender, time and the whole item as payload.
                rows = [{"conversation_id": 1 + n % customers, "source": "wecom_kf",
                         "platform_msgid": item["msgid"], "direction": "in", "msg_type": "text",
                         "sender": item["external_userid"], "text": item["text"]["content"],
                         "sent_at": datetime.fromtimestamp(item["send_time"], UTC), "received_at": now,
                         "status": "received", "error": "", "automatic": False, "internal": False, "payload": item}
                        for item, n in items]
                started = time.perf_counter()
                with engine.begin() as conn:
                    conn.execute(baseline_statement, rows)
                baseline_seconds += time.perf_counter() - started
    finally:
        control.close()
        simulator.stop()
    with Session(engine) as session:
        kept = int(session.scalar(select(func.count()).select_from(Message).where(Message.source == "wecom_kf")) or 0)
        distinct = int(session.scalar(select(func.count(func.distinct(Message.platform_msgid))).where(
            Message.source == "wecom_kf")) or 0)
        conversations = int(session.scalar(select(func.count()).select_from(Conversation).where(
            Conversation.channel == "wecom_kf")) or 0)
    ratio = siyu_seconds / baseline_seconds if baseline_seconds else float("inf")
    ok = siyu_seconds <= INGEST_TARGET_S and ratio <= INGEST_GOAL_RATIO and kept == distinct == count
    report = (f"微信客服 flood: {count:,} messages from {len(known):,} customers, {callbacks:,} kf_msg_or_event "
              f"callbacks (+{retried} resent), pages of {BATCH} from the simulator over HTTP\n"
              f"  callback → pull → ingest     {siyu_seconds:7.2f} s   ({kept:,} stored, {distinct:,} distinct, "
              f"{conversations:,} conversations)\n"
              f"  raw batched INSERT           {baseline_seconds:7.2f} s   (the same rows, a copy of the message "
              "table with its key and indexes, interleaved)\n"
              f"  ratio                        {ratio:7.2f}x   (goal ≤{INGEST_GOAL_RATIO:.0f}x)\n"
              f"  target ≤{INGEST_TARGET_S:.0f} s and ≤{INGEST_GOAL_RATIO:.0f}x, every message exactly once: "
              f"{'PASS' if ok else 'FAIL'}")
    return ok, report


def _indexed_copy(engine: Engine) -> Table:
    meta = MetaData()
    source = cast(Table, Message.__table__)
    table = Table("message_baseline_kf", meta,
                  *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, unique=c.unique)
                    for c in source.columns],
                  UniqueConstraint("source", "platform_msgid"))
    for index in source.indexes:
        Index(f"baseline_kf_{index.name}", *[table.c[column.name] for column in index.columns], unique=index.unique)
    meta.drop_all(engine)
    meta.create_all(engine)
    return table


def median_ms(product: Any, baseline: Any, runs: int = 15) -> tuple[float, float]:
    """Medians of the product and its baseline, taking turns so load hits both alike."""
    times = medians(interleaved(runs, {"product": product, "baseline": baseline}, warmup=1))
    return times["product"] * 1000, times["baseline"] * 1000


BARE_QUEUE = """
SELECT * FROM conversation
WHERE status = 'open' AND waiting_since IS NOT NULL
ORDER BY waiting_since ASC, id ASC
LIMIT 51
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--messages", type=int, default=170_000)
    parser.add_argument("--customers", type=int, default=CUSTOMERS, help="customers writing through 微信客服 "
                        "(scale it with --messages to profile the full run's mix at reduced scale)")
    parser.add_argument("--direct", action="store_true", help="also time inbox.service.ingest handed the "
                        "messages directly (the earlier benchmark)")
    args = parser.parse_args(argv)
    print_header("flood: a campaign day into the service inbox")
    url = args.database or f"sqlite:///{Path(tempfile.mkdtemp(prefix='siyu-flood-')) / 'flood.db'}"
    print(f"database: {url.split('@')[-1]}")
    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(SEED)
    build_people(engine, QUEUE_CONVERSATIONS)
    kf_ok, kf_report = kf_flood(engine, url, args.messages, args.customers, rng)
    print(kf_report)
    sys.stdout.flush()
    if not args.direct:
        queue_ok = queue_benchmark(engine, rng)
        ok = kf_ok and queue_ok
        engine.dispose()
        print("OVERALL:", "PASS" if ok else "FAIL")
        return 0 if ok else 1
    messages = flood_messages(args.messages, CUSTOMERS, rng)
    print(f"\ndirect: {len(messages):,} deliveries ({args.messages:,} distinct messages) from {CUSTOMERS:,} "
          f"customers, {ACCOUNTS} accounts, batches of {BATCH}, handed to inbox.service.ingest")
    sys.stdout.flush()
    seconds, stored, duplicates = ingest_all(engine, messages)
    baseline = raw_insert(engine, messages)
    indexed = raw_insert_indexed(engine, messages)
    ratio = seconds / indexed if indexed else float("inf")
    with Session(engine) as session:
        kept = session.scalar(select(func.count()).select_from(Message))
        assigned = session.scalar(select(func.count()).select_from(Conversation).where(
            Conversation.assignee_id.is_not(None)))
    print(f"  ingested end to end        {seconds:7.2f} s   ({stored:,} stored, {duplicates:,} duplicates dropped, "
          f"{kept:,} in the table, {assigned:,} conversations assigned)")
    print(f"  raw batched INSERT, bare   {baseline:7.2f} s   (a heap: no key, no index)   "
          f"ratio {seconds / baseline if baseline else float('inf'):.2f}x")
    print(f"  raw batched INSERT         {indexed:7.2f} s   (a copy of the message table with its key and indexes)")
    print(f"  ratio                      {ratio:7.2f}x   (goal ≤{INGEST_GOAL_RATIO:.0f}x, against the copy with "
          "its key and indexes)")
    ingest_ok = seconds <= INGEST_TARGET_S and kept == 2 * args.messages
    print(f"  target ≤{INGEST_TARGET_S:.0f} s with every message exactly once: {'PASS' if ingest_ok else 'FAIL'}")
    queue_ok = queue_benchmark(engine, rng)
    ok = kf_ok and ingest_ok and queue_ok
    engine.dispose()
    print("OVERALL:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def queue_benchmark(engine: Engine, rng: random.Random) -> bool:
    """The unanswered queue at 50,000 open conversations, beside the bare SQL."""
    # Bring the queue to 50,000 open conversations: one more message from each remaining customer.
    extra = [InboundMessage(source="simulator", platform_msgid=f"queue-{c}", account_id=1 + c % ACCOUNTS,
                            customer_id=c, sent_at=utcnow() - timedelta(minutes=rng.uniform(0, 600)), text="在吗")
             for c in range(CUSTOMERS + 1, QUEUE_CONVERSATIONS + 1)]
    ingest_all(engine, extra)
    with Session(engine) as session:
        open_count = session.scalar(select(func.count()).select_from(Conversation).where(
            Conversation.status == "open"))

    def queue() -> list[int]:
        with Session(engine) as session:
            return [c.id for c in service.list_queue(session, flt=QueueFilter(view="unanswered"), viewer=SYSTEM).items]

    def bare() -> list[int]:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text(BARE_QUEUE)).all()][:50]

    same = queue() == bare()
    queue_ms, bare_ms = median_ms(queue, bare)
    print(f"\nunanswered queue, {open_count:,} open conversations, first page of 50 (same ids as bare SQL: "
          f"{'yes' if same else 'NO'})")
    print(f"  service list_queue         {queue_ms:7.2f} ms")
    print(f"  bare SQL                   {bare_ms:7.2f} ms   ratio {queue_ms / bare_ms:.2f}x")
    queue_ok = same and queue_ms <= QUEUE_TARGET_MS and (open_count or 0) >= QUEUE_CONVERSATIONS
    print(f"  target ≤{QUEUE_TARGET_MS:.0f} ms: {'PASS' if queue_ok else 'FAIL'}")
    return queue_ok


if __name__ == "__main__":
    sys.exit(main())
