"""A referral invite as a 公众号 parametric QR code: made through qrcode/create in the simulator, shown on the
poster and the link page, and a follow (or a follower's scan) through it credits the referrer once, through
the same anti-fraud ledger as a WeCom add."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.channels import images
from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Friendship
from siyu.mp import service as mp_service
from siyu.mp.models import MpFollower
from siyu.referrals import service
from siyu.referrals.models import InviteCode, LedgerEntry
from tests.test_mp import Sim, sim  # noqa: F401 - the simulator fixture
from tests.test_pages import Console
from tests.test_referrals import count, events, old_customer, programme


def _mp_account(db: Session, sim: Sim) -> Account:  # noqa: F811
    first = sim.mp.follow()  # the 公众号 account exists once its first push came
    sim.plain.push(first["xml"], first["openid"])
    return db.scalars(select(Account).where(Account.kind == "mp")).one()


def test_an_invites_gongzhonghao_qr_follow_credits_the_referrer_once_and_a_rescan_does_not(
        client: TestClient, db: Session, make: Any, admin: Any, admin_headers: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, sim: Sim) -> None:  # noqa: F811
    mp = _mp_account(db, sim)
    member = make.account()
    made = programme(db, member, account_ids=[member.id, mp.id])
    alice = old_customer(db, make, member)
    answer = client.post(f"/api/v1/referrals/{made.id}/invites/{alice.id}/mp-qrcode", headers=admin_headers,
                         json={"expire_seconds": 7 * 86400})
    assert answer.status_code == 201, answer.text
    invite = answer.json()
    assert invite["mp_account_id"] == mp.id and invite["mp_qr_url"].startswith("http://weixin.qq.com/q/")
    assert invite["mp_permanent"] is False and invite["mp_expires_at"]
    assert sim.mp.scene_of(invite["mp_ticket"]) == invite["state"]  # the code's scene is the invite's state
    # Asked again while it lives: the same code, no second qrcode/create.
    again = client.post(f"/api/v1/referrals/{made.id}/invites/{alice.id}/mp-qrcode", headers=admin_headers, json={})
    assert again.status_code == 201 and again.json()["mp_ticket"] == invite["mp_ticket"]
    # The link page shows the 公众号 QR and the poster encodes it.
    link = client.get(f"/r/{invite['state']}")
    assert link.status_code == 200 and f"/r/{invite['state']}/mp-qr.png" in link.text and "关注公众号" in link.text
    image = client.get(f"/r/{invite['state']}/mp-qr.png")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    drawn: dict[str, Any] = {}

    def poster(**kwargs: Any) -> bytes:
        drawn.update(kwargs)
        return b"\x89PNG"

    monkeypatch.setattr(images, "poster_png", poster)
    poster_page = Console(client).login(admin).get(f"/referrals/invites/{invite['id']}/poster.png")
    assert poster_page.status_code == 200, poster_page.text
    assert drawn["qr_data"] == invite["mp_qr_url"]  # the poster's QR is the 公众号 code
    # A WeChat user scans the code and follows: qrscene_<state> → one credit, on both timelines.
    follow = sim.mp.follow(scene=sim.mp.scene_of(invite["mp_ticket"]), nickname="小林")
    sim.plain.push(follow["xml"], follow["openid"])
    db.expire_all()
    bob = db.scalars(select(MpFollower).where(MpFollower.openid == follow["openid"])).one().customer_id
    assert count(db, made.id, alice.id) == 1
    entry = db.scalars(select(LedgerEntry).where(LedgerEntry.referee_id == bob)).one()
    assert entry.referrer_id == alice.id and entry.reason == "mp"
    assert "referral_credit" in events(db, alice.id) and "referral_referred" in events(db, bob)
    # The follower scans the same code again (SCAN) and refollows: still one credit.
    scan = sim.mp.scan(follow["openid"], invite["state"])
    sim.plain.push(scan["xml"], follow["openid"])
    db.expire_all()
    assert count(db, made.id, alice.id) == 1
    assert len(db.scalars(select(LedgerEntry).where(LedgerEntry.referee_id == bob)).all()) == 1
    assert service.balance(db, programme_id=made.id) == []
    # An existing follower scanning it is not a new customer: refused with the reason on their timeline.
    carol_push = sim.mp.follow(nickname="老粉")
    sim.plain.push(carol_push["xml"], carol_push["openid"])
    db.expire_all()
    carol = db.scalars(select(MpFollower).where(MpFollower.openid == carol_push["openid"])).one().customer_id
    long_ago = utcnow().replace(year=utcnow().year - 1)
    db.get_one(Customer, carol).created_at = long_ago
    for friendship in db.scalars(select(Friendship).where(Friendship.customer_id == carol)):
        friendship.added_at = long_ago
    db.commit()
    scan = sim.mp.scan(carol_push["openid"], invite["state"])
    sim.plain.push(scan["xml"], carol_push["openid"])
    db.expire_all()
    assert count(db, made.id, alice.id) == 1 and "referral_refused" in events(db, carol)


def test_a_permanent_invite_qr_counts_against_the_shared_quota_and_a_programme_without_a_gongzhonghao_is_refused(
        client: TestClient, db: Session, make: Any, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        sim: Sim) -> None:  # noqa: F811
    mp = _mp_account(db, sim)
    member = make.account()
    without = programme(db, member)
    alice = old_customer(db, make, member)
    refused = client.post(f"/api/v1/referrals/{without.id}/invites/{alice.id}/mp-qrcode", headers=admin_headers,
                          json={})
    assert refused.status_code == 422 and "公众号" in refused.json()["detail"]
    made = programme(db, member, account_ids=[mp.id])
    answer = client.post(f"/api/v1/referrals/{made.id}/invites/{alice.id}/mp-qrcode", headers=admin_headers,
                         json={"permanent": True})
    assert answer.status_code == 201 and answer.json()["mp_permanent"] and answer.json()["mp_expires_at"] is None
    assert mp_service.permanent_qr_used(db, mp.id) == 1  # the invite's code is in the 公众号's 100,000
    too_long = client.post(f"/api/v1/referrals/{made.id}/invites/{alice.id}/mp-qrcode", headers=admin_headers,
                           json={"expire_seconds": 2_592_001})
    assert too_long.status_code == 422
    monkeypatch.setattr(mp_service, "PERMANENT_QR_LIMIT", 1)
    bob = old_customer(db, make, member)
    with pytest.raises(Invalid):
        service.make_mp_qrcode(db, programme_id=made.id, customer_id=bob.id, viewer=SYSTEM, api=None,
                               permanent=True)
    db.rollback()
    invite = db.scalars(select(InviteCode).where(InviteCode.customer_id == bob.id)).first()
    assert invite is None or not invite.mp_qr_url


def test_an_expired_temporary_invite_qr_is_made_again_in_the_console_and_the_poster_falls_back_to_the_link(
        client: TestClient, db: Session, sim: Sim, make: Any, admin: Any, admin_headers: dict[str, str]) -> None:  # noqa: F811
    mp = _mp_account(db, sim)
    made = programme(db, mp)
    alice = old_customer(db, make, mp)
    first = client.post(f"/api/v1/referrals/{made.id}/invites/{alice.id}/mp-qrcode", headers=admin_headers,
                        json={"expire_seconds": 60}).json()
    invite = db.get_one(InviteCode, first["id"])
    invite.mp_expires_at = utcnow().replace(year=utcnow().year - 1)
    db.commit()
    assert client.get(f"/r/{first['state']}/mp-qr.png").status_code == 404
    assert "mp-qr.png" not in client.get(f"/r/{first['state']}").text
    console = Console(client).login(admin)
    page = console.get(f"/referrals/{made.id}")
    assert f'data-testid="mp-qr-form-{invite.id}"' in page.text
    remade = console.post(f"/referrals/{made.id}/invites/{invite.id}/mp-qrcode", {})
    assert remade.status_code == 303, remade.text
    db.expire_all()
    fresh = db.get_one(InviteCode, invite.id)
    assert fresh.mp_ticket != first["mp_ticket"] and service.mp_qr_live(fresh)
    page = console.get(f"/referrals/{made.id}")
    assert 'data-testid="invite-mp-qr"' in page.text and "公众号二维码已生成" in page.text
