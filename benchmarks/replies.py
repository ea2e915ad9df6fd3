"""Benchmark: 1,000 agents' replies through 微信客服 ``kf/send_msg`` to a slow, flaky platform.

The simulator runs in its slow, flaky mode (``siyu.simulator.server``: stacked ``forever``
faults on ``kf/send_msg``): every call waits ``--latency`` seconds, and ``--fail`` % of them fail
transiently — half answered errcode -1 系统繁忙 before the message goes out, half answered
HTTP 502 *after* it went out (the answer was lost), both as the platform answers when busy
(W:90313 全局错误码: -1 "系统繁忙，此时请开发者稍候再试"; a gateway's 5xx). Customers first write
to the 客服账号 (pulled through ``kf/sync_msg`` into Siyu's inbox), then:

1. Baseline: the same number of sends straight to the simulator through the same API client
   (``WecomApi.kf_send`` with a msgid of their own, the client's own retries), from as many
   threads as Siyu's workers — no database, no queue.
2. Siyu: agents reply (``inbox.service.reply``, one transaction each, as pressing 发送 does);
   each reply is queued and sent by the inbound queue's workers (Huey consumer threads) with
   Siyu's ``msgid``, transient failures tried again by the client and then by the queue.

Then it checks, from the simulator's own record of deliveries: every reply delivered exactly
once (per msgid), none outside the 48-hour window of its customer's last message, and replies
to conversations past the window (``--stale``) refused at once with the reason and never sent.
Exits non-zero on a miss.

Usage:  .venv/bin/python benchmarks/replies.py [--database URL] [--replies 1000] [--latency 0.1]
        [--fail 10] [--threads 8]
Default database: a fresh SQLite file in a temp folder. Not part of pytest.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from machine import print_header

CORP = "wwSIYUREPLIES0001"
TOKEN = "replies-callback-token"  # noqa: S105 - the simulator's callback token, not a secret
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SECRET = "replies-kf-secret-0123456789"  # noqa: S105 - the simulator's own
WINDOW_SECONDS = 48 * 3600  # W:94677 发送消息: within 48 hours of the customer's last message
DEADLINE_S = 240.0  # every reply sent within the queue's retries (10, 20, 40, 80 s after the client's own)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds every kf/send_msg waits")
    parser.add_argument("--fail", type=float, default=10.0, help="percent of kf/send_msg calls failing transiently")
    parser.add_argument("--threads", type=int, default=8, help="Siyu's inbound worker threads (and the baseline's)")
    parser.add_argument("--stale", type=int, default=10, help="conversations past the 48-hour window")
    args = parser.parse_args(argv)
    print_header("replies: agents' answers through kf/send_msg to a slow, flaky platform")
    folder = Path(tempfile.mkdtemp(prefix="siyu-replies-"))
    url = args.database or f"sqlite:///{folder / 'replies.db'}"
    print(f"database: {url.split('@')[-1]}")
    # Before Siyu is imported: its queues live in the data folder, its client talks to the simulator.
    from siyu.simulator.corp import VirtualCorp
    from siyu.simulator.server import RunningServer, ServerOptions, create_app

    corp = VirtualCorp.seeded(2, corp_id=CORP, contacts_per_member=1, groups_per_member=0, salt=0)
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    os.environ.update({"SIYU_DATABASE_URL": url, "SIYU_DATA_DIR": str(folder), "SIYU_WECOM_CORP_ID": CORP,
                       "SIYU_WECOM_TOKEN": TOKEN, "SIYU_WECOM_AES_KEY": AES_KEY, "SIYU_WECOM_SECRET": SECRET,
                       "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/", "SIYU_WORKER_IN_PROCESS": "0",
                       "SIYU_SECRET_KEY": "replies-benchmark-secret-key"})
    try:
        return run(args, corp, server.url, url)
    finally:
        server.stop()


def run(args: argparse.Namespace, corp: Any, simulator: str, url: str) -> int:
    import httpx
    from sqlalchemy import func, select, update

    from siyu.app import create_app as create_siyu
    from siyu.core import jobs
    from siyu.core.db import transaction
    from siyu.core.errors import Invalid
    from siyu.core.migrate import upgrade
    from siyu.core.viewer import SYSTEM
    from siyu.inbox import service
    from siyu.inbox.models import Conversation, DeliveryStatus, Direction, Message
    from siyu.wecom import kf
    from siyu.wecom.client import client_for
    from siyu.wecom.kf_jobs import pull_messages

    upgrade(url)
    create_siyu()  # registers the connectors (微信客服's among them), as the web app and `siyu worker` do
    desk = corp.kf
    open_kfid = desk.state.accounts[0].open_kfid
    total = args.replies + args.stale
    customers = [desk.customer_message(open_kfid=open_kfid, content=f"请问发货了吗 #{n}")["external_userid"]
                 for n in range(2 * total)]  # the first half for Siyu, the second for the baseline
    siyu_customers, base_customers = customers[:total], customers[total:]
    with transaction() as session:
        kf.note_callback(session, open_kfid=open_kfid, token=desk.callback(open_kfid)["token"])
    pulled = pull_messages.call_local(open_kfid)
    with transaction() as session:
        conversations = {ext: cid for cid, ext in session.execute(
            select(Conversation.id, Conversation.customer_id).where(Conversation.channel == "wecom_kf"))}
        from siyu.customers.models import Customer

        by_ext = {ext: cid for cid, ext in session.execute(select(Customer.id, Customer.wecom_external_userid))}
        conversation_of = {ext: next(c for c, cust in conversations.items() if cust == by_ext[ext])
                           for ext in siyu_customers}
    print(f"{len(customers):,} customers wrote; {pulled.get('stored', 0):,} messages pulled into Siyu")
    stale = siyu_customers[args.replies:]
    fresh = siyu_customers[:args.replies]
    # Customers whose last message is 49 hours old: on the platform and in Siyu alike.
    old = time.time() - WINDOW_SECONDS - 3600
    for ext in stale:
        desk.session(open_kfid, ext).last_customer_at = old
    with transaction() as session:
        session.execute(update(Conversation).where(Conversation.id.in_([conversation_of[e] for e in stale]))
                        .values(last_inbound_at=service.utcnow() - timedelta(hours=49)))

    faults = [{"path": "kf/send_msg", "forever": True, "latency": args.latency},
              {"path": "kf/send_msg", "forever": True, "percent": args.fail / 2, "errcode": -1},
              {"path": "kf/send_msg", "forever": True, "percent": args.fail / 2 / (1 - args.fail / 200),
               "status": 502, "after": True}]
    for fault in faults:
        httpx.post(f"{simulator}/_simulator/faults", json=fault).raise_for_status()

    # ---- 1. baseline: straight to the simulator, no database, no queue
    with transaction() as session:
        api = client_for(session, kf=True)
    sent_before = len(desk.state.delivered)
    base_errors: list[str] = []

    def send_base(n: int) -> None:
        try:
            api.kf_send(touser=base_customers[n], open_kfid=open_kfid, msgid=f"base-{n}", msgtype="text",
                        content={"content": f"您好，已发货 #{n}"})
        except Exception as exc:  # counted and shown: the baseline's misses
            base_errors.append(str(exc))

    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(send_base, range(args.replies)))
    base_seconds = time.perf_counter() - started
    base_delivered = len(desk.state.delivered) - sent_before

    # ---- 2. Siyu: agents reply; the inbound queue's workers send
    jobs.set_immediate(False)
    workers = jobs.Workers(inbound_threads=args.threads, bulk_threads=1, queues=("inbound",))
    workers.start()
    refused = 0
    try:
        started = time.perf_counter()
        for ext in fresh:
            with transaction() as session:
                service.reply(session, conversation_id=conversation_of[ext], text=f"您好，您的订单已发货 {ext[-6:]}",
                              viewer=SYSTEM)
        queued_seconds = time.perf_counter() - started
        for ext in stale:
            try:
                with transaction() as session:
                    service.reply(session, conversation_id=conversation_of[ext], text="您好", viewer=SYSTEM)
            except Invalid:
                refused += 1
        counts: dict[str, int] = {}
        while time.perf_counter() - started < DEADLINE_S:
            with transaction() as session:
                counts = dict(session.execute(select(Message.status, func.count()).where(
                    Message.direction == Direction.outbound.value, Message.source != "wecom_kf")
                    .group_by(Message.status)).all())
            if not counts.get(DeliveryStatus.queued.value):
                break
            time.sleep(0.2)
        siyu_seconds = time.perf_counter() - started
    finally:
        workers.stop()
        jobs.set_immediate(True)
    with transaction() as session:
        outgoing = list(session.execute(select(Message.id, Message.status, Message.payload).where(
            Message.direction == Direction.outbound.value, Message.source != "wecom_kf")))
    retried = sum(int((payload or {}).get("failed_attempts", 0)) for _id, _status, payload in outgoing)

    # ---- the simulator's record: each reply once, none outside the window
    siyu_msgids = {kf.msgid_for(mid) for mid, _status, _payload in outgoing}
    delivered = [row for row in desk.state.delivered if row["msgid"] in siyu_msgids]
    per_msgid = Counter(row["msgid"] for row in delivered)
    twice = sum(1 for n in per_msgid.values() if n > 1)
    outside = sum(1 for row in delivered
                  if row["received_at"] - desk.session(open_kfid, row["external_userid"]).last_customer_at
                  > WINDOW_SECONDS)
    to_stale = sum(1 for row in delivered if row["external_userid"] in set(stale))
    failed_sim = dict(sorted(httpx.get(f"{simulator}/_simulator/faults").json()["failed"].items()))
    status = Counter(s for _id, s, _p in outgoing)
    print(f"\nsimulator: every kf/send_msg waits {args.latency:.2f} s; {args.fail:.0f} % fail transiently "
          f"(half -1 before sending, half HTTP 502 after it went out); calls failed: {failed_sim}")
    print(f"  baseline: {args.replies:,} sends straight to the simulator, {args.threads} threads    "
          f"{base_seconds:7.2f} s   ({base_delivered:,} delivered, {len(base_errors)} gave up)")
    print(f"  Siyu: {args.replies:,} replies queued by agents in {queued_seconds:.2f} s, all sent after   "
          f"{siyu_seconds:7.2f} s   (statuses {dict(status)}; {retried} attempts failed and were tried again)")
    print(f"  ratio                                                            "
          f"{siyu_seconds / base_seconds if base_seconds else float('inf'):7.2f}x")
    print(f"  delivered {len(per_msgid):,} distinct replies, {twice} twice or more; {outside} outside the "
          f"48-hour window; {refused} of {len(stale)} replies past the window refused at once, {to_stale} sent")
    ok = (len(per_msgid) == args.replies == sum(per_msgid.values()) and twice == 0 and outside == 0
          and refused == len(stale) and to_stale == 0 and status.get(DeliveryStatus.sent.value, 0) == args.replies
          and siyu_seconds < DEADLINE_S)
    print(f"  every reply delivered exactly once, none outside the window, within {DEADLINE_S:.0f} s: "
          f"{'PASS' if ok else 'FAIL'}")
    print("OVERALL:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
