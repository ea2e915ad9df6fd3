"""Benchmark: a mass send (群发) to a 200,000-customer segment, planned against 12 months of send history,
and its 200,000 results read back from the simulator and aggregated.

Builds (or reuses) a database of 200,000 WeCom customers on 20 members' accounts, a segment of all of
them (the one compiler: an account condition), and the send-quota ledger's 12 months of history (the
sends benchmark's builder: about one corp mass message a month each, a tenth already at this month's
limit, W:92135). Then, interleaved with baselines in the same run:

  (a) planning — ``campaigns.service.create_campaign``: the segment's ids, a 5 % hold-out, each
      customer's sending account, the quota check and reservation, the A/B split, the chunks of at
      most 10,000 and every recipient row written — rolled back after each run; target ≤ 30 s;
      baseline: a bare ``SELECT`` of the same customer ids (customer ⋈ friendship), fetched;
  (b) results — the campaign created and its 20+ WeCom tasks sent to the simulator (members confirm at
      once), then ``read_results`` (``get_groupmsg_send_result`` page by page, every recipient's status
      written) and ``numbers`` (送达率, 互动率, buyers, revenue, hold-out, per copy); target ≤ 60 s;
      baseline: a bare ``SELECT`` of the campaign's recipient rows, fetched.

Exits non-zero when a target is missed or the counts are wrong.

Usage:  .venv/bin/python benchmarks/campaigns.py [--database URL] [--customers 200000] [--runs 2] [--rebuild]
Default database: a SQLite file in the temp folder (reused by later runs). Not part of pytest.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import database_url, interleaved, medians, print_header
from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.orm import Session

from siyu.core.db import make_engine, utcnow
from siyu.core.migrate import upgrade
from siyu.core.settings import get_settings

CUSTOMERS = 200_000
MEMBERS = 20
CORP_ID = "wwSIYUBENCHCAMP01"
SECRET = "campaign-benchmark-secret-0123456789"  # noqa: S105 - the simulator's, not a real one
DEFAULT_PATH = str(Path(tempfile.gettempdir()) / "siyu_campaigns.db")
PLAN_TARGET_S = 30.0
RESULTS_TARGET_S = 60.0
BATCH = 50_000


def userid(n: int) -> str:
    return f"bench.member{n:02d}"


def external(customer_id: int) -> str:
    return f"wmBENCH{customer_id:08d}"


def build(engine: Engine, customers: int) -> None:
    from sends import build as build_ledger

    from siyu.accounts.models import Account
    from siyu.customers.models import Customer, Friendship

    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(Account.__table__), [  # type: ignore[arg-type]
            {"id": n, "kind": "wecom", "display_name": f"山野茶舍{n}号", "wechat_id": f"shanye{n}",
             "wecom_userid": userid(n), "store": "", "brand": "", "tier_served": "", "friend_capacity": 50_000,
             "status": "active", "positioning": "", "avatar_url": "", "signature": "", "greeting": "",
             "moments_cover_url": "", "qr_image_url": "", "created_at": now} for n in range(1, MEMBERS + 1)])
        for start in range(1, customers + 1, BATCH):
            ids = range(start, min(customers, start + BATCH - 1) + 1)
            conn.execute(insert(Customer.__table__), [  # type: ignore[arg-type]
                {"id": i, "name": f"顾客{i}", "wecom_external_userid": external(i), "created_at": now,
                 "updated_at": now} for i in ids])
            conn.execute(insert(Friendship.__table__), [  # type: ignore[arg-type]
                {"customer_id": i, "account_id": 1 + i % MEMBERS, "added_at": now, "status": "active"}
                for i in ids])
    build_ledger(engine, customers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    url = database_url(args.database, DEFAULT_PATH, rebuild=args.rebuild)
    print_header(f"campaigns: a mass send to {args.customers:,} customers against 12 months of send history")
    from siyu.simulator.corp import VirtualCorp
    from siyu.simulator.server import RunningServer, ServerOptions, create_app

    corp = VirtualCorp.seeded(1, corp_id=CORP_ID, members=[(userid(n), f"成员{n}") for n in range(1, MEMBERS + 1)],
                              contacts_per_member=0, groups_per_member=0, salt=0)
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    os.environ.update({"SIYU_DATABASE_URL": url, "SIYU_SECRET_KEY": "campaigns-benchmark-secret-key",
                       "SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET,
                       "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"})
    get_settings.cache_clear()
    upgrade(url)
    engine = make_engine(url)
    from siyu.campaigns import service
    from siyu.campaigns.models import Campaign, CampaignRecipient, RecipientStatus
    from siyu.campaigns.schemas import CampaignIn
    from siyu.core import jobs
    from siyu.core.viewer import SYSTEM
    from siyu.customers.models import Customer, Friendship
    from siyu.segments import service as segments_service
    from siyu.segments.schemas import SegmentIn, parse_tree
    from siyu.wecom.client import RetryPolicy, client_for

    jobs.set_immediate(False)
    with Session(engine) as session:
        have = session.scalar(select(func.count()).select_from(Customer)) or 0
    if not have:
        print("building customers and the ledger…", flush=True)
        build(engine, args.customers)
    corp.adopt_contacts({"external_userid": external(i), "name": f"顾客{i}", "userid": userid(1 + i % MEMBERS)}
                        for i in range(1, args.customers + 1))
    admin = SYSTEM
    with Session(engine) as session:
        tree = parse_tree({"kind": "and", "conditions": [
            {"kind": "account", "account_ids": list(range(1, MEMBERS + 1))}]})
        segment = segments_service.create_segment(session, data=SegmentIn(name=f"全部客户{time.time_ns()}",
                                                                           conditions=tree), viewer=admin)
        session.execute(update(Campaign).values(status="cancelled"))
        session.commit()
        segment_id = segment.id
    data = CampaignIn(name="春茶上新", segment_id=segment_id, text="{账号}：明前龙井到店", text_b="明前龙井限量",
                      holdout_percent=5)
    answers: list[tuple[int, int, int]] = []

    def plan() -> None:
        with Session(engine) as session:
            _campaign, planned = service.create_campaign(session, data=data, viewer=admin)
            answers.append((planned.targeted, len(planned.over_quota), len(planned.chunks())))
            session.rollback()

    def bare_ids() -> None:
        with Session(engine) as session:
            session.execute(select(Customer.id).join(Friendship, Friendship.customer_id == Customer.id).where(
                Friendship.account_id.in_(list(range(1, MEMBERS + 1))), Friendship.status == "active")).all()

    samples = interleaved(args.runs, {"plan": plan, "bare": bare_ids})
    med = medians(samples)
    targeted, over, chunks = answers[-1]
    print(f"(a) planning: median {med['plan']:.2f} s (target ≤ {PLAN_TARGET_S:.0f} s) · targeted {targeted:,}, "
          f"over quota {over:,}, {chunks} tasks", flush=True)
    print(f"    bare SELECT of the same ids: median {med['bare']:.2f} s", flush=True)

    print("creating the campaign and its WeCom tasks in the simulator…", flush=True)
    api = client_for(make_config(), policy=RetryPolicy(attempts=3))
    with Session(engine) as session:
        campaign, _planned = service.create_campaign(session, data=data, viewer=admin)
        session.commit()
        assert campaign is not None
        campaign_id = campaign.id
        started = time.perf_counter()
        run = service.send_campaign(session, campaign_id, api=api)
        session.commit()
        print(f"    {run.created} tasks created in {time.perf_counter() - started:.1f} s", flush=True)
    delivered: list[int] = []
    sent: list[int] = []

    def results() -> None:
        with Session(engine) as session:
            session.execute(update(CampaignRecipient).where(
                CampaignRecipient.campaign_id == campaign_id,
                CampaignRecipient.status == RecipientStatus.delivered.value)
                .values(status=RecipientStatus.waiting.value, delivered_at=None))
            session.commit()
        started = time.perf_counter()
        with Session(engine) as session:
            service.read_results(session, campaign_id, api=api)
            session.commit()
            figures = service.numbers(session, service.get_campaign(session, campaign_id=campaign_id))["all"]
            delivered.append(figures.delivered)
            sent.append(figures.targeted)
        timings["results"].append(time.perf_counter() - started)

    def bare_recipients() -> None:
        started = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(text("SELECT id, customer_id, status FROM campaign_recipient WHERE campaign_id = :c"),
                         {"c": campaign_id}).fetchall()
        timings["bare"].append(time.perf_counter() - started)

    timings: dict[str, list[float]] = {"results": [], "bare": []}
    for _n in range(args.runs):
        results()
        bare_recipients()
    res = sorted(timings["results"])[len(timings["results"]) // 2]
    bare = sorted(timings["bare"])[len(timings["bare"]) // 2]
    print(f"(b) results read back and aggregated: median {res:.2f} s (target ≤ {RESULTS_TARGET_S:.0f} s) · "
          f"delivered {delivered[-1]:,} of {sent[-1]:,}", flush=True)
    print(f"    bare SELECT of the recipient rows: median {bare:.2f} s", flush=True)
    server.stop()
    failures = []
    if med["plan"] > PLAN_TARGET_S:
        failures.append(f"planning {med['plan']:.2f} s > {PLAN_TARGET_S:.0f} s")
    if res > RESULTS_TARGET_S:
        failures.append(f"results {res:.2f} s > {RESULTS_TARGET_S:.0f} s")
    if not targeted or over < args.customers // 20 or delivered[-1] != sent[-1]:
        failures.append(f"counts wrong: targeted {targeted}, over quota {over}, delivered {delivered[-1]} "
                        f"of {sent[-1]}")
    for failure in failures:
        print(f"MISSED: {failure}", flush=True)
    return 1 if failures else 0


def make_config() -> Any:
    from siyu.wecom.config import WecomConfig

    settings = get_settings()
    return WecomConfig(corp_id=settings.wecom_corp_id, secret=settings.wecom_secret,
                       api_base=settings.wecom_api_base)


if __name__ == "__main__":
    sys.exit(main())
