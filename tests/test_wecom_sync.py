"""The full WeCom sync against the running simulator: create, update, gone, conflicts, resume after faults."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from siyu.accounts.models import Account
from siyu.core import db as core_db
from siyu.core.settings import get_settings
from siyu.customers.models import Customer, CustomerTag, Friendship, Phone, Touch
from siyu.customers.models import Tag as CustomerTagRow
from siyu.groups.models import GroupChat
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom import sync
from siyu.wecom.client import DatabaseStorage, RetryPolicy, TokenStorage, WecomApi, WecomApiError, client_for
from siyu.wecom.config import WecomConfig
from tests.test_pages import Console
from tests.test_wecom_client import CORP_ID, SECRET, Simulator, Sleeps, sim, wecom_settings

__all__ = ["sim", "wecom_settings"]


def api_for(base: str, sleeps: Sleeps | None = None, attempts: int = 6) -> WecomApi:
    policy = RetryPolicy(attempts=attempts, sleep=sleeps if sleeps is not None else Sleeps())
    return client_for(WecomConfig(corp_id=CORP_ID, secret=SECRET, api_base=base),
                      storage=TokenStorage(DatabaseStorage()), policy=policy)


@pytest.fixture
def api(db: Session, sim: Simulator) -> WecomApi:
    return api_for(sim.base)


def platform_friendships(corp: VirtualCorp) -> set[tuple[str, str]]:
    return {(c.external_userid, f.userid) for c in corp.state.contacts for f in c.active}


def siyu_friendships(db: Session) -> set[tuple[str, str]]:
    rows = db.execute(select(Customer.wecom_external_userid, Account.wecom_userid)
                      .join(Friendship, Friendship.customer_id == Customer.id)
                      .join(Account, Account.id == Friendship.account_id).where(Friendship.status == "active"))
    return {(ext, userid) for ext, userid in rows}


def test_a_full_sync_brings_the_whole_corp_in(db: Session, sim: Simulator, api: WecomApi) -> None:
    state = sync.run(core_db.transaction, api)
    assert state["status"] == "done" and state["phase"] == "done"
    db.expire_all()
    members = {m.userid for m in sim.corp.state.members}
    assert {a.wecom_userid for a in db.scalars(select(Account))} >= set(api.follow_users())
    assert set(api.follow_users()) <= members
    assert siyu_friendships(db) == platform_friendships(sim.corp)
    contacts = {c.external_userid: c for c in sim.corp.state.contacts if c.active}
    assert db.scalar(select(func.count()).select_from(Customer)) == len(contacts)
    some = next(c for c in contacts.values() if any(f.remark_mobiles for f in c.active))
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == some.external_userid))
    assert customer is not None and customer.name == some.name
    mobiles = {m for f in some.active for m in f.remark_mobiles}
    assert set(db.scalars(select(Phone.number).where(Phone.customer_id == customer.id))) >= mobiles
    tagged = next(c for c in contacts.values() if any(f.tag_ids for f in c.active))
    wecom_tags = {t for f in tagged.active for t in f.tag_ids}
    mirrored = set(db.scalars(select(CustomerTagRow.wecom_id).join(CustomerTag, CustomerTag.tag_id == CustomerTagRow.id)
                              .join(Customer, Customer.id == CustomerTag.customer_id)
                              .where(Customer.wecom_external_userid == tagged.external_userid)))
    assert wecom_tags <= mirrored
    assert db.scalar(select(func.count()).select_from(GroupChat)) == len(sim.corp.state.group_chats)
    assert state["counts"]["contacts"] == len(platform_friendships(sim.corp))


def test_a_second_sync_updates_marks_gone_and_keeps_both_sides_of_a_conflict(db: Session, sim: Simulator,
                                                                              api: WecomApi) -> None:
    sync.run(core_db.transaction, api)
    db.expire_all()
    contact = next(c for c in sim.corp.state.contacts if c.active)
    follow = contact.active[0]
    friendship = db.scalar(select(Friendship).join(Customer).join(Account, Account.id == Friendship.account_id)
                           .where(Customer.wecom_external_userid == contact.external_userid,
                                  Account.wecom_userid == follow.userid))
    assert friendship is not None
    friendship.remark_name = "Siyu 里改的备注"
    db.commit()
    follow.remark = "企业微信里改的备注"
    gone = next(c for c in sim.corp.state.contacts if c.active and c is not contact)
    gone_follow = gone.active[0]
    gone_follow.deleted_at = int(time.time())
    state = sync.run(core_db.transaction, api)
    assert state["run"] == 2 and state["counts"]["customers_created"] == 0 and state["counts"]["gone"] == 1
    db.expire_all()
    assert db.get(Friendship, friendship.id).remark_name == "企业微信里改的备注"  # type: ignore[union-attr]
    conflict = db.scalar(select(Touch).where(Touch.customer_id == friendship.customer_id,
                                             Touch.kind == "field_change"))
    assert conflict is not None and conflict.details["siyu"] == {"remark_name": "Siyu 里改的备注"}
    assert conflict.details["wecom"] == {"remark_name": "企业微信里改的备注"}
    assert siyu_friendships(db) == platform_friendships(sim.corp)
    gone_customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == gone.external_userid))
    assert gone_customer is not None
    events = [t.details.get("event") for t in db.scalars(select(Touch).where(Touch.customer_id == gone_customer.id))
              if t.details]
    assert "wecom_sync_gone" in events


def test_an_interrupted_sync_resumes_without_duplicates(db: Session, sim: Simulator, api: WecomApi) -> None:
    state = sync.run(core_db.transaction, api, stop_after_pages=4)
    assert state["status"] == "running"
    state = sync.run(core_db.transaction, api)
    assert state["status"] == "done" and state["run"] == 1  # the same run, finished
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Customer)) == len({c.external_userid
                                                                         for c in sim.corp.state.contacts if c.active})
    assert siyu_friendships(db) == platform_friendships(sim.corp)


def test_expired_tokens_and_a_busy_platform_are_waited_out(db: Session, sim: Simulator) -> None:
    sleeps = Sleeps()
    api = api_for(sim.base, sleeps)
    sim.fault(path="externalcontact/batch/get_by_user", errcode=45009, times=2)
    sim.fault(path="externalcontact/get_corp_tag_list", status=502, times=2)

    def expire(state: dict[str, Any]) -> None:
        if state["phase"] == "contacts":
            sim.control("POST", "tokens/expire")

    state = sync.run(core_db.transaction, api, progress=expire)
    assert state["status"] == "done" and len(sleeps) >= 4
    db.expire_all()
    assert siyu_friendships(db) == platform_friendships(sim.corp)


def test_the_simulator_killed_mid_sync_then_restarted(db: Session) -> None:
    corp = VirtualCorp.seeded(3, corp_id=CORP_ID, salt=0)
    first = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    state = sync.run(core_db.transaction, api_for(first.url + "/cgi-bin/"), stop_after_pages=4)
    first.stop()
    with pytest.raises(WecomApiError) as lost:
        sync.run(core_db.transaction, api_for(first.url + "/cgi-bin/", attempts=2))
    assert lost.value.retryable
    db.expire_all()
    assert "WeCom could not be reached" in sync.read_state(db)["error"]
    second = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    try:
        state = sync.run(core_db.transaction, api_for(second.url + "/cgi-bin/"))
    finally:
        second.stop()
    assert state["status"] == "done" and state["run"] == 1
    db.expire_all()
    assert siyu_friendships(db) == platform_friendships(corp)
    assert db.scalar(select(func.count()).select_from(Customer)) == len({c.external_userid
                                                                         for c in corp.state.contacts if c.active})


@pytest.fixture
def configured(wecom_settings: Simulator) -> Simulator:
    return wecom_settings


def test_console_button_cli_and_status(client: TestClient, admin: Any, configured: Simulator, db: Session) -> None:
    from siyu.cli import app

    console = Console(client).login(admin)
    page = console.get("/wecom")
    assert 'data-testid="wecom-sync"' in page.text and "还没有同步过" in page.text and "03:30" in page.text
    started = console.post("/wecom/sync", {})
    assert started.status_code == 303 and started.headers["location"].startswith("/jobs/")
    page = console.get("/wecom")
    assert "已完成" in page.text and 'data-testid="sync-counts"' in page.text
    result = CliRunner().invoke(app, ["wecom", "sync"])
    assert result.exit_code == 0, result.output
    assert "位成员" in result.output
    db.expire_all()
    assert sync.read_state(db)["run"] == 2


def test_cli_wrong_secret_says_what_wecom_said(configured: Simulator, monkeypatch: pytest.MonkeyPatch,
                                               db: Session) -> None:
    from siyu.cli import app

    monkeypatch.setenv("SIYU_WECOM_SECRET", "wrong-secret")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["wecom", "sync"])
    assert result.exit_code == 2 and "40001" in result.output
