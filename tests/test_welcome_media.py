"""Welcome messages carry library images and mini-program cards: each file goes to WeCom as temporary
material (media/upload, W:90253) once, its media_id kept until shortly before WeCom forgets it (3 days),
and send_welcome_msg (W:92137) gets the media_ids — all through the simulator."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.channels.models import Channel
from siyu.core.db import utcnow
from siyu.core.viewer import SYSTEM
from siyu.library import service as library_service
from siyu.library.schemas import MaterialIn
from siyu.simulator import corp as sim_corp
from siyu.wecom import media
from siyu.wecom.client import MEDIA_IMAGE_MAX_BYTES, WecomApi, WecomApiError
from siyu.wecom.models import WecomEvent, WecomMedia
from tests.conftest import viewer_of
from tests.test_channels import channel
from tests.test_library import png
from tests.test_wecom_client import Simulator, api, sim, sleeps, wecom_settings
from tests.test_wecom_event_api import stored

__all__ = ["api", "sim", "sleeps", "wecom_settings"]


def _image(db: Session, admin: Any, title: str = "门店实拍") -> Any:
    item = library_service.save_material(db, data=MaterialIn(kind="image", title=title), viewer=viewer_of(admin),
                                         file=library_service.Upload(io.BytesIO(png()), "store.png"))
    db.commit()
    return item


def _add(db: Session, sim: Simulator, key: str, userid: str = "shanye.xiaoye01") -> tuple[dict[str, Any], int]:
    added = sim.control("POST", "add_contact", {"userid": userid, "state": key, "name": "林小姐"})
    event_id = stored(db, "change_external_contact/add_external_contact", UserID=userid,
                      ExternalUserID=added["external_userid"], State=key, WelcomeCode=added["welcome_code"])
    return added, event_id


def test_media_upload_answers_a_media_id_the_simulator_keeps_three_days(api: WecomApi, sim: Simulator) -> None:
    answer = api.upload_media("image", "store.png", png(), "image/png")
    assert answer["media_id"] and answer["created_at"] > 0
    kept = sim.corp.upload(answer["media_id"])
    assert kept is not None and (kept.media_type, kept.filename) == ("image", "store.png")
    assert sim_corp.MEDIA_SECONDS == 3 * 86400


def test_media_upload_refuses_wrong_types_and_sizes_with_wecoms_codes(api: WecomApi) -> None:
    raw = api.client.media  # past the client's own checks, to see what the platform answers
    cases = [("image", ("a.gif", b"GIF89a" + b"\0" * 32, "image/gif"), 40005),  # 图片只支持 JPG、PNG
             ("image", ("big.png", png()[:8] + b"\0" * (MEDIA_IMAGE_MAX_BYTES + 1), "image/png"), 40009),
             ("image", ("tiny.png", b"\x89PNG", "image/png"), 40006),  # 所有文件 size 必须大于 5 个字节
             ("sticker", ("a.png", png(), "image/png"), 40004)]
    for media_type, file, errcode in cases:
        with pytest.raises(WecomApiError) as refused:
            raw.upload(media_type, file)
        assert refused.value.errcode == errcode, (file[0], refused.value)
    with pytest.raises(ValueError, match="JPG or PNG"):  # the client refuses before the call
        api.upload_media("image", "a.gif", b"GIF89a" + b"\0" * 32, "image/gif")


def test_a_welcome_naming_media_the_corp_never_issued_is_refused(api: WecomApi, sim: Simulator) -> None:
    added = sim.corp.add_contact("shanye.xiaoye01", state="ch-1")
    with pytest.raises(WecomApiError) as refused:
        api.send_welcome_message(added["welcome_code"], "欢迎",
                                 attachments=[{"msgtype": "image", "image": {"media_id": "made-up"}}])
    assert refused.value.errcode == 40007


def test_an_add_through_a_channel_with_a_welcome_image_sends_the_media_id_wecom_issued(
        db: Session, make: Any, admin: Any, wecom_settings: Simulator) -> None:
    sim = wecom_settings
    account = make.account(wecom_userid="shanye.xiaoye01")
    image = _image(db, admin)
    link = library_service.save_material(db, data=MaterialIn(kind="link", title="新客指南", url="https://example.com/g"),
                                         viewer=viewer_of(admin))
    db.commit()
    store = channel(db, [account], welcome_text="欢迎{称呼}！", welcome_material_ids=[image.id, link.id])
    key = db.get(Channel, store.id).key  # type: ignore[union-attr]
    added, event_id = _add(db, sim, key)
    assert db.get(WecomEvent, event_id).status == "processed"  # type: ignore[union-attr]
    sent = [w for w in sim.corp.state.welcome_messages if w.external_userid == added["external_userid"]]
    assert len(sent) == 1 and sent[0].text == "欢迎林小姐！"
    first, second = sent[0].attachments
    assert first["msgtype"] == "image" and second["msgtype"] == "link"
    issued = sim.corp.upload(first["image"]["media_id"])
    assert issued is not None and issued.media_type == "image"  # a media_id the simulator itself issued
    uploads = len(sim.corp.state.uploads)
    # The next add reuses the media_id: no second upload while it has days left.
    again, _event = _add(db, sim, key)
    resent = [w for w in sim.corp.state.welcome_messages if w.external_userid == again["external_userid"]]
    assert resent[0].attachments[0]["image"]["media_id"] == first["image"]["media_id"]
    assert len(sim.corp.state.uploads) == uploads
    db.refresh(image)
    assert image.use_count == 2  # counted as used in a welcome


def test_a_cached_media_id_close_to_its_expiry_is_uploaded_again(db: Session, admin: Any, api: WecomApi,
                                                                  sim: Simulator) -> None:
    image = _image(db, admin)
    first = media.media_id_for(db, api, file_key=image.file_key, filename="a.png", content_type="image/png")
    assert media.media_id_for(db, api, file_key=image.file_key, filename="a.png", content_type="image/png") == first
    row = db.scalar(select(WecomMedia).where(WecomMedia.file_key == image.file_key))
    assert row is not None and row.expires_at - row.uploaded_at == timedelta(days=3)
    row.expires_at = utcnow() + media.REFRESH_BEFORE - timedelta(minutes=1)
    db.flush()
    fresh = media.media_id_for(db, api, file_key=image.file_key, filename="a.png", content_type="image/png")
    assert fresh != first and sim.corp.upload(fresh) is not None
    assert len(list(db.scalars(select(WecomMedia)))) == 1


def test_a_mini_program_card_goes_with_its_cover_as_media(db: Session, admin: Any, api: WecomApi,
                                                          sim: Simulator) -> None:
    card = library_service.save_material(
        db, data=MaterialIn(kind="miniprogram", title="会员中心", appid="wx0123456789abcdef",
                            pagepath="pages/member.html"),
        viewer=viewer_of(admin), cover=library_service.Upload(io.BytesIO(png()), "cover.png"))
    db.commit()
    attachments = media.welcome_attachments(db, api, [card])
    assert attachments[0]["msgtype"] == "miniprogram"
    body = attachments[0]["miniprogram"]
    assert (body["appid"], body["page"], body["title"]) == ("wx0123456789abcdef", "pages/member.html", "会员中心")
    added = sim.corp.add_contact("shanye.xiaoye01", state="ch-2")
    api.send_welcome_message(added["welcome_code"], "", attachments=attachments)
    assert sim.corp.state.welcome_messages[-1].attachments == attachments


def test_a_file_material_cannot_be_a_welcome_attachment(db: Session, make: Any, admin: Any) -> None:
    from siyu.channels import service as channels_service
    from siyu.core.errors import Invalid

    doc = library_service.save_material(db, data=MaterialIn(kind="file", title="价目表"), viewer=viewer_of(admin),
                                        file=library_service.Upload(io.BytesIO(b"%PDF-1.4 price list"), "p.pdf"))
    db.commit()
    with pytest.raises(Invalid) as refused:
        channels_service.save_channel(db, viewer=SYSTEM, data=channels_service.ChannelIn(
            name="门店", account_ids=[make.account().id], welcome_material_ids=[doc.id]))
    assert refused.value.field == "welcome_material_ids"
