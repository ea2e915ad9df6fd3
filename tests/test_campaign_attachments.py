"""Campaign images go to WeCom as image attachments by media_id (add_msg_template, W:92135): the library file
is uploaded through media/upload (W:90253) into the cache the welcomes use, reused while it lives, uploaded
again when it nears WeCom's 3 days, and the simulator refuses a media_id it never issued or no longer keeps."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.campaigns import service
from siyu.campaigns.models import CampaignRecipient, CampaignTask, RecipientStatus, TaskState
from siyu.campaigns.schemas import CampaignIn
from siyu.core import storage
from siyu.core.db import utcnow
from siyu.library import service as library_service
from siyu.library.schemas import MaterialIn
from siyu.sends.models import SendLedgerEntry
from siyu.wecom.client import RetryPolicy, WecomApiError, client_for
from siyu.wecom.models import WecomMedia
from tests.conftest import viewer_of
from tests.test_campaigns import later, segment_of, wecom_customers
from tests.test_library import png
from tests.test_wecom_connector import MEMBER, SEND, Simulator, sim  # noqa: F401  (the simulator fixture)

UPLOAD = "media/upload"


def _image(db: Session, admin: Any, title: str = "明前龙井实拍") -> Any:
    item = library_service.save_material(db, data=MaterialIn(kind="image", title=title), viewer=viewer_of(admin),
                                         file=library_service.Upload(io.BytesIO(png()), "tea.png"))
    db.commit()
    return item


def _link(db: Session, admin: Any) -> Any:
    item = library_service.save_material(db, data=MaterialIn(kind="link", title="新品页", url="https://shop.example/new"),
                                         viewer=viewer_of(admin))
    db.commit()
    return item


def _campaign(db: Session, admin: Any, segment_id: int, materials: list[int], name: str = "龙井上新") -> Any:
    campaign, _plan = service.create_campaign(db, data=CampaignIn(
        name=name, segment_id=segment_id, text="明前龙井到店", material_ids=materials, scheduled_at=later(1)),
        viewer=viewer_of(admin))
    db.commit()
    assert campaign is not None
    return campaign


def test_a_campaign_image_goes_as_a_media_id_wecom_issued_and_is_uploaded_once_for_two_campaigns(
        db: Session, make: Any, admin: Any, sim: Simulator) -> None:  # noqa: F811
    account = make.account(wecom_userid=MEMBER)
    wecom_customers(db, make, account, [sim.new_contact() for _n in range(3)])
    segment_id = segment_of(db, admin, account)
    image, link = _image(db, admin), _link(db, admin)
    first = _campaign(db, admin, segment_id, [image.id, link.id])
    api = client_for(db, policy=RetryPolicy(attempts=1))
    run = service.send_campaign(db, first.id, api=api, now=later(2))
    db.commit()
    assert run.created == 1
    sent = sim.corp.state.mass_sends[-1]
    assert [a["msgtype"] for a in sent.attachments] == ["image", "link"]
    media_id = sent.attachments[0]["image"]["media_id"]
    kept = sim.corp.upload(media_id)
    assert kept is not None and kept.media_type == "image"
    assert sent.attachments[1]["link"]["url"] == "https://shop.example/new"
    second = _campaign(db, admin, segment_id, [image.id], name="龙井返场")
    service.send_campaign(db, second.id, api=api, now=later(2))
    db.commit()
    assert sim.corp.state.mass_sends[-1].attachments == [{"msgtype": "image", "image": {"media_id": media_id}}]
    assert len(sim.corp.state.uploads) == 1 and sim.calls(UPLOAD) == 1  # the cached media_id, not a new upload


def test_a_media_id_near_its_three_days_is_uploaded_again_before_the_send(
        db: Session, make: Any, admin: Any, sim: Simulator) -> None:  # noqa: F811
    account = make.account(wecom_userid=MEMBER)
    wecom_customers(db, make, account, [sim.new_contact()])
    segment_id = segment_of(db, admin, account)
    image = _image(db, admin)
    api = client_for(db, policy=RetryPolicy(attempts=1))
    # Cached 3 days ago: at the send (in 2 h) it has 2 h left, under the 6 h the cache keeps in hand.
    stale = api.upload_media("image", "tea.png", png(), "image/png")["media_id"]
    db.add(WecomMedia(corp_id=api.client.corp_id, file_key=image.file_key, media_type="image", media_id=stale,
                      uploaded_at=utcnow() - timedelta(days=3), expires_at=utcnow() + timedelta(hours=4)))
    db.commit()
    campaign = _campaign(db, admin, segment_id, [image.id])
    service.send_campaign(db, campaign.id, api=api, now=later(2))
    db.commit()
    fresh = sim.corp.state.mass_sends[-1].attachments[0]["image"]["media_id"]
    assert fresh != stale and sim.corp.upload(fresh) is not None
    cached = db.scalars(select(WecomMedia)).one()
    assert cached.media_id == fresh and cached.expires_at > utcnow() + timedelta(days=2)


def test_the_simulators_add_msg_template_refuses_a_media_id_expired_or_never_issued(
        db: Session, sim: Simulator) -> None:  # noqa: F811
    api = client_for(db, policy=RetryPolicy(attempts=1))
    external = sim.new_contact()
    media_id = api.upload_media("image", "tea.png", png(), "image/png")["media_id"]
    for upload in sim.corp.state.uploads:
        upload.created_at -= 3 * 86400  # WeCom keeps a temporary material 3 days
    for wrong in (media_id, "never-issued"):
        with pytest.raises(WecomApiError) as refused:
            api.create_mass_send(sender=MEMBER, text="新品", external_userids=[external],
                                 attachments=[{"msgtype": "image", "image": {"media_id": wrong}}])
        assert refused.value.errcode == 40007
    made = api.create_mass_send(sender=MEMBER, text="新品", external_userids=[external], attachments=[
        {"msgtype": "image", "image": {"pic_url": "https://wework.qpic.cn/wwpic/1/0"}}])
    assert made["msgid"]  # an uploadimg URL instead of a media_id is accepted, as on the platform


def test_a_busy_upload_leaves_the_task_pending_and_a_missing_file_fails_it_with_the_reason(
        db: Session, make: Any, admin: Any, monkeypatch: pytest.MonkeyPatch,
        sim: Simulator) -> None:  # noqa: F811
    account = make.account(wecom_userid=MEMBER)
    wecom_customers(db, make, account, [sim.new_contact() for _n in range(2)])
    segment_id = segment_of(db, admin, account)
    image = _image(db, admin)
    campaign = _campaign(db, admin, segment_id, [image.id])
    sim.fault(path=UPLOAD, errcode=45009, percent=100, times=5)
    api = client_for(db, policy=RetryPolicy(attempts=1, sleep=lambda _s: None))
    run = service.send_campaign(db, campaign.id, api=api, now=later(2))
    db.commit()
    task = service.tasks_of(db, campaign.id)[0]
    assert run.busy == 1 and task.state == TaskState.pending.value and "45009" in task.error
    assert sim.calls(SEND) == 0  # nothing went out without its image
    def gone(key: str) -> bytes:
        raise FileNotFoundError(key)

    monkeypatch.setattr(storage, "get", gone)  # the stored file was lost
    sim.control("DELETE", "faults")
    run = service.send_campaign(db, campaign.id, api=api, now=later(2))
    db.commit()
    db.expire_all()
    task = db.get_one(CampaignTask, task.id)
    assert run.failed == 1 and task.state == TaskState.failed.value and image.title in task.error
    statuses = set(db.scalars(select(CampaignRecipient.status).where(CampaignRecipient.task_id == task.id)))
    assert statuses == {RecipientStatus.failed.value} and sim.calls(SEND) == 0
    reserved = db.scalars(select(SendLedgerEntry).where(SendLedgerEntry.ref == service.ref_of(campaign.id))).all()
    assert reserved and all(e.released_at is not None for e in reserved)  # the quota is given back
