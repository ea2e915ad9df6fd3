"""老带新 end to end through the WeCom simulator: a customer's invite code becomes a 「联系我」 code whose state
names them; a friend added through it (the simulator's add callback with that state) credits them; the same
friend deleting us the next day takes the credit back."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from wechatpy.enterprise.crypto import WeChatCrypto

from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer
from siyu.referrals import service
from siyu.referrals.models import InviteCode, LedgerEntry, Standing
from siyu.simulator import callbacks
from tests.test_referrals import old_customer, programme
from tests.test_wecom_client import CORP_ID, SECRET, Simulator, sim

__all__ = ["sim"]
TOKEN = "siyu-referral-token"
AES_KEY = base64.b64encode(hashlib.sha256(b"siyu-referrals").digest()).decode()[:-1]  # 43 characters


@pytest.fixture
def wecom(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """Siyu connected to the simulated corp: its API and its callbacks."""
    for name, value in {"CORP_ID": CORP_ID, "SECRET": SECRET, "API_BASE": sim.base, "TOKEN": TOKEN,
                        "AES_KEY": AES_KEY}.items():
        monkeypatch.setenv(f"SIYU_WECOM_{name}", value)
    get_settings.cache_clear()
    yield sim
    get_settings.cache_clear()


def deliver(client: Any, xml: str) -> None:
    """Post a callback the way WeCom does: encrypted and signed (wechatpy's crypto, not Siyu's)."""
    stamp, nonce = str(int(time.time())), secrets.token_hex(8)
    body = WeChatCrypto(TOKEN, AES_KEY, CORP_ID).encrypt_message(xml, nonce, stamp)
    encrypted = body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    signature = hashlib.sha1("".join(sorted([TOKEN, stamp, nonce, encrypted])).encode()).hexdigest()  # noqa: S324
    answer = client.post("/wecom/callback", params={"msg_signature": signature, "timestamp": stamp, "nonce": nonce},
                         content=body.encode())
    assert answer.status_code == 200 and answer.text == "success", answer.text


def test_a_friend_added_through_an_invite_contact_way_credits_the_referrer_and_a_deletion_reverses_it(
        client: Any, db: Session, make: Any, wecom: Simulator) -> None:
    account = make.account(wecom_userid="shanye.xiaoye01")
    fission = programme(db, account)
    alice = old_customer(db, make, account)
    invite = service.invite_for(db, programme_id=fission.id, customer_id=alice.id, viewer=SYSTEM)
    db.commit()  # the contact way is made by a job after the commit
    db.expire_all()
    stored = db.get(InviteCode, invite.id)
    assert stored is not None and stored.wecom_config_id and stored.qr_url, stored.alert if stored else ""
    way = next(w for w in wecom.corp.state.contact_ways if w.config_id == stored.wecom_config_id)
    assert (way.state, way.user) == (stored.state, ["shanye.xiaoye01"])

    added = wecom.corp.add_contact("shanye.xiaoye01", state=way.state, name="新朋友小林")
    deliver(client, callbacks.contact_added(CORP_ID, userid="shanye.xiaoye01", external_userid=added["external_userid"],
                                            create_time=added["create_time"], state=way.state,
                                            welcome_code=added["welcome_code"]))
    db.expire_all()
    bob = db.scalar(select(Customer).where(Customer.wecom_external_userid == added["external_userid"]))
    assert bob is not None
    standing = db.scalar(select(Standing).where(Standing.customer_id == alice.id))
    assert standing is not None and standing.invites == 1
    assert [(e.referee_id, e.delta) for e in db.scalars(select(LedgerEntry))] == [(bob.id, 1)]

    gone = wecom.corp.remove_contact("shanye.xiaoye01", added["external_userid"])
    deliver(client, callbacks.contact_changed(CORP_ID, "del_follow_user", userid="shanye.xiaoye01",
                                              external_userid=added["external_userid"],
                                              create_time=gone["create_time"]))
    db.expire_all()
    assert db.scalar(select(Standing.invites).where(Standing.customer_id == alice.id)) == 0
    assert sorted(e.delta for e in db.scalars(select(LedgerEntry))) == [-1, 1]
    assert service.balance(db, programme_id=fission.id) == []
