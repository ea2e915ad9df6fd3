"""Benchmark: 公众号 callbacks acknowledged per second — the seed's day through the Official Account.

The Siyu app (uvicorn, SQLite by default or ``--database``) receives the platform's pushes over
loopback: followers follow (subscribe events), then write — one callback per message, half in
safe mode (AES, built with wechatpy's MP crypto) and half in plain mode — and one message in ten
matches an enabled auto-reply rule, answered *passively* in the callback's own answer. Every
callback is committed (one ``mp_inbound`` row) before it is acknowledged; a Siyu worker process
(``siyu worker --queue inbound``) runs beside it during the whole run and builds the inbox
(customers, conversations, messages, the passive replies) from the stored pushes, so the
acknowledgements are measured while the ingestion competes for the same 2 cores. Bare
``GET /healthz`` runs interleaved with the callbacks in the same run (a round of each, in turn),
so both see the same machine. Afterwards the benchmark waits until every push is ingested (and
prints how long after the last acknowledgement that was), then checks the database: every
message stored once, every matching one answered passively (no API call) and recorded once.

Targets: ≥1,000 callbacks/s acknowledged with p99 ≤50 ms at 16 connections. Exits 1 on a miss. The
date, the machine (cores) and its load average are printed first, and the ratio to /healthz beside
the numbers: on a shared, loaded machine the ratio is the comparable figure (the WeCom callback
path's is ≈0.3×).
Usage:  .venv/bin/python benchmarks/mp_callbacks.py [--messages 20000] [--followers 2000] [--concurrency 16]
        [--database postgresql+psycopg://postgres@127.0.0.1:5432/<an empty database of your own>]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import platform
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session
from wechatpy.crypto import WeChatCrypto

from siyu.autoreply import service as autoreply
from siyu.autoreply.models import MatchKind
from siyu.core.migrate import upgrade
from siyu.core.viewer import SYSTEM
from siyu.customers.service import ensure_default_tag_groups
from siyu.inbox.models import Message
from siyu.mp.models import MpFollower, MpInbound

APPID = "wxBENCHMP0000001"
TOKEN = "bench-mp-token"  # noqa: S105 - a throwaway callback token for the benchmark
AES_KEY = base64.b64encode(hashlib.sha256(b"bench-mp").digest()).decode()[:-1]
GH_ID = "gh_benchmp"
ACK_TARGET = 1000.0
P99_TARGET_MS = 50.0
ROUNDS = 10
LINES = ["你好，活动什么时候开始", "怎么领优惠券", "发货了吗", "链接打不开", "有没有小样", "退款怎么弄", "在吗",
         "这个多少钱", "适合敏感肌吗", "几点发货"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive connection: (status, body)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next((int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:")), 0)
    return status, await reader.readexactly(length)


def _sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324


def build(messages: int, followers: int, seed: int = 1) -> tuple[list[bytes], int, int]:
    """The pushes (raw HTTP requests without the Host line), how many messages match the rule, and
    how many are messages (not follows)."""
    rng = random.Random(seed)
    crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
    now = int(time.time())
    openids = [f"oBENCH{n:022d}" for n in range(followers)]
    pushes: list[tuple[str, str]] = []
    for openid in openids:
        pushes.append((openid, f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
                               f"</FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
                               "<Event><![CDATA[subscribe]]></Event></xml>"))
    matching = 0
    for n in range(messages):
        text = "领券码在哪" if n % 10 == 3 else rng.choice(LINES)
        matching += n % 10 == 3
        openid = rng.choice(openids)
        pushes.append((openid, f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
                               f"</FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                               f"<Content><![CDATA[{text}]]></Content><MsgId>{7_000_000_000 + n}</MsgId></xml>"))
    built = []
    for index, (openid, xml) in enumerate(pushes):
        nonce = secrets.token_hex(8)
        params = {"signature": _sign(TOKEN, str(now), nonce), "timestamp": str(now), "nonce": nonce, "openid": openid}
        body = xml
        if index % 2:  # safe mode
            body = crypto.encrypt_message(xml, nonce, str(now))
            encrypted = body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
            params.update(encrypt_type="aes", msg_signature=_sign(TOKEN, str(now), nonce, encrypted))
        raw = body.encode()
        built.append(f"POST /mp/callback?{urlencode(params)} HTTP/1.1\r\n{{host}}Content-Type: text/xml\r\n"
                     f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    return built, matching, messages


async def fire(port: int, raw: list[bytes], concurrency: int, *, health: bool) -> tuple[float, list[float], int, int]:
    """(requests/s, latencies in ms, failures, passive replies) on kept-alive sockets (see callbacks.py)."""
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    requests = [r.replace(b"{host}", host, 1) for r in raw]
    latencies: list[float] = []
    failures = passive = 0
    position = 0

    async def worker() -> None:
        nonlocal failures, passive, position
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while position < len(requests):
                request = requests[position]
                position += 1
                started = time.perf_counter()
                status, body = await _exchange(reader, writer, request)
                latencies.append((time.perf_counter() - started) * 1000)
                if health:
                    failures += 0 if status == 200 and body == b'{"status":"ok"}' else 1
                elif status != 200:
                    failures += 1
                elif body != b"success":
                    passive += 1 if b"<xml>" in body else 0
                    failures += 0 if b"<xml>" in body else 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(requests) / (time.perf_counter() - started), latencies, failures, passive


def wait_for_ingestion(engine: Engine, timeout: float) -> float:
    """When every stored push is ingested (time.perf_counter), or -1 after ``timeout`` seconds."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with Session(engine) as session:
            waiting = session.scalar(select(func.count()).select_from(MpInbound).where(
                MpInbound.ingested_at.is_(None)))
        if not waiting:
            return time.perf_counter()
        time.sleep(0.2)
    return -1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--followers", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database", default="", help="an empty database's URL (default: a new SQLite file)")
    parser.add_argument("--worker", choices=["beside", "after"], default="beside",
                        help="run the ingesting worker beside the app during the flood (default), or start it after")
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="seconds to wait for the ingestion")
    args = parser.parse_args(argv)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} — {platform.node()}, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}, load average {load}")
    folder = Path(tempfile.mkdtemp(prefix="siyu-mp-callbacks-"))
    url = args.database or f"sqlite:///{folder / 'bench.db'}"
    print(f"database: {url.split('://')[0]}; the ingesting worker process runs {args.worker} the flood")
    upgrade(url)
    engine = create_engine(url)
    with Session(engine) as session:
        ensure_default_tag_groups(session)
        rule = autoreply.save_rule(session, data=autoreply.RuleIn(
            name="领券", match_kind=MatchKind.contains, keywords=["领券"], reply="优惠券在「我的-卡包」里，今天有效",
            hourly_cap=10_000), viewer=SYSTEM)
        autoreply.dry_run(session, rule_id=rule.id, viewer=SYSTEM)
        autoreply.set_enabled(session, rule_id=rule.id, enabled=True, viewer=SYSTEM)
        session.commit()
    env = {**os.environ, "SIYU_DATABASE_URL": url, "SIYU_SECRET_KEY": "bench", "SIYU_WORKER_IN_PROCESS": "0",
           "SIYU_DATA_DIR": str(folder / "data"), "SIYU_MP_APPID": APPID, "SIYU_MP_TOKEN": TOKEN,
           "SIYU_MP_AES_KEY": AES_KEY}
    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "uvicorn", "siyu.app:create_app", "--factory",  # noqa: S603
                            "--port", str(port), "--log-level", "error", "--no-access-log"], env=env, cwd=folder)
    worker_log = (folder / "worker.log").open("w")  # closed once the worker has stopped

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "siyu.cli", "worker", "--queue", "inbound"],
                                env=env, cwd=folder, stdout=worker_log, stderr=subprocess.STDOUT)

    worker = start_worker() if args.worker == "beside" else None
    drained = -1.0
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"building {args.followers:,} follows and {args.messages:,} messages (half in safe mode) …")
        pushes, matching, messages = build(args.messages, args.followers)
        follows, flood = pushes[:args.followers], pushes[args.followers:]
        asyncio.run(fire(port, follows, args.concurrency, health=False))  # the followers exist before the flood
        health = b"GET /healthz HTTP/1.1\r\n{host}\r\n"
        chunk = -(-len(flood) // ROUNDS)
        health_time = health_count = mp_time = 0.0
        health_latencies: list[float] = []
        latencies: list[float] = []
        failures = passive = 0
        for start in range(0, len(flood), chunk):  # interleaved: a round of /healthz, a round of callbacks
            part = flood[start:start + chunk]
            rate, lat, failed, _p = asyncio.run(fire(port, [health] * len(part), args.concurrency, health=True))
            health_time += len(part) / rate
            health_count += len(part)
            health_latencies += lat
            failures += failed
            rate, lat, failed, answered = asyncio.run(fire(port, part, args.concurrency, health=False))
            mp_time += len(part) / rate
            latencies += lat
            failures += failed
            passive += answered
        health_rate, rate = health_count / health_time, len(flood) / mp_time
        print(f"  bare GET /healthz          {health_rate:8.0f} requests/s   p99 {p99(health_latencies):.1f} ms")
        print(f"  公众号 callbacks            {rate:8.0f} acknowledged/s   p50 {statistics.median(latencies):.1f} ms   "
              f"p99 {p99(latencies):.1f} ms   failures {failures}   passive replies {passive:,}")
        print(f"  ratio to /healthz          {rate / health_rate:8.2f}   "
              f"(load average now {' '.join(f'{value:.2f}' for value in os.getloadavg())})")
        flood_done = time.perf_counter()
        worker = worker or start_worker()
        drained = wait_for_ingestion(engine, args.drain_timeout)
        if drained >= 0:
            drained -= flood_done
            print(f"  ingested into the inbox    {drained:8.1f} s after the last acknowledgement "
                  f"(the worker {'ran beside the app during' if args.worker == 'beside' else 'started after'} "
                  "the flood)")
        else:
            print(f"  NOT ingested within {args.drain_timeout:.0f} s (see {folder / 'worker.log'})")
    finally:
        for process in (app, worker):
            if process is not None:
                process.terminate()
        for process in (app, worker):
            if process is not None:
                process.wait(timeout=30)
        worker_log.close()
    with Session(engine) as session:
        stored = session.scalar(select(func.count()).select_from(Message).where(
            Message.source == "mp", Message.msg_type == "text")) or 0
        answered = session.scalar(select(func.count()).select_from(Message).where(
            Message.source == "mp_passive")) or 0
        followers = session.scalar(select(func.count()).select_from(MpFollower)) or 0
    print(f"  stored {stored:,} of {messages:,} messages from {followers:,} followers; {answered:,} answered passively "
          f"of {matching:,} matching")
    stored_ok = (stored == messages and followers == args.followers and passive == answered and answered > 0
                 and drained >= 0)
    ack_ok = rate >= ACK_TARGET and p99(latencies) <= P99_TARGET_MS and failures == 0
    print(f"  target ≥{ACK_TARGET:.0f}/s with p99 ≤{P99_TARGET_MS:.0f} ms: {'PASS' if ack_ok else 'FAIL'}")
    print(f"  every message stored once, matching ones answered passively: {'PASS' if stored_ok else 'FAIL'}")
    engine.dispose()
    return 0 if ack_ok and stored_ok else 1


if __name__ == "__main__":
    sys.exit(main())
