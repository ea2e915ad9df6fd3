"""Each channel's WeCom 「联系我」 code kept in step through the API client, against the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from siyu.channels.models import Channel
from tests.test_channels import channel
from tests.test_wecom_client import Simulator, sim, wecom_settings

__all__ = ["sim", "wecom_settings"]


@pytest.fixture
def wecom(wecom_settings: Simulator) -> Simulator:
    return wecom_settings


def way(sim: Simulator, config_id: str) -> Any:
    return next((w for w in sim.corp.state.contact_ways if w.config_id == config_id), None)


def test_a_channel_gets_its_contact_way_with_the_channel_key_as_state(db: Session, make: Any,
                                                                      wecom: Simulator) -> None:
    from siyu.channels import service
    from siyu.channels.service import ChannelIn
    from siyu.core.viewer import SYSTEM

    counter = make.account(wecom_userid="shanye.xiaoye01")
    other = make.account(wecom_userid="shanye.ahe01")
    phone = make.account(kind="personal", wecom_userid=None)
    saved = channel(db, [counter, phone])
    db.expire_all()
    stored = db.get(Channel, saved.id)
    assert stored is not None and stored.wecom_config_id and stored.qr_url
    created = way(wecom, stored.wecom_config_id)
    assert (created.state, created.user, created.type) == (stored.key, ["shanye.xiaoye01"], 2)
    assert created.remark == "西湖店收银台"

    service.save_channel(db, viewer=SYSTEM, channel_id=stored.id, data=ChannelIn(
        name="西湖店收银台", account_ids=[counter.id, other.id], status="archived"))
    db.commit()
    db.expire_all()
    updated = way(wecom, stored.wecom_config_id)
    assert updated is not None and sorted(updated.user) == ["shanye.ahe01", "shanye.xiaoye01"]  # archived: kept

    service.save_channel(db, viewer=SYSTEM, channel_id=stored.id, data=ChannelIn(
        name="西湖店收银台", account_ids=[phone.id]))
    db.commit()
    db.expire_all()
    assert way(wecom, updated.config_id) is None
    assert db.get(Channel, stored.id).wecom_config_id == ""  # type: ignore[union-attr]


def test_a_refused_contact_way_is_shown_on_the_channel(db: Session, make: Any, wecom: Simulator) -> None:
    counter = make.account(wecom_userid="shanye.xiaoye01")
    wecom.fault(path="externalcontact/add_contact_way", errcode=41054, times=1)  # member not active
    saved = channel(db, [counter])
    db.expire_all()
    stored = db.get(Channel, saved.id)
    assert stored is not None and stored.wecom_config_id == "" and "41054" in stored.alert


def test_without_a_connected_corp_a_channel_just_works(db: Session, make: Any) -> None:
    saved = channel(db, [make.account(wecom_userid="someone")])
    assert saved.wecom_config_id == "" and saved.alert == ""


def test_wecoms_contact_way_qr_image_is_fetched_once_kept_and_shown_on_the_landing_page_and_poster(
        db: Session, make: Any, wecom: Simulator, client: Any) -> None:
    import io

    from PIL import Image

    from siyu.channels import service

    counter = make.account(wecom_userid="shanye.xiaoye01", display_name="茶小满", brand="山野茶事",
                           positioning="你的私人选茶师")
    saved = channel(db, [counter], incentive_text="加好友送 3 元券")
    db.expire_all()
    stored = db.get(Channel, saved.id)
    assert stored is not None and stored.qr_url.startswith(wecom.server.url + "/wwpic/")
    assert stored.qr_image_key.startswith("channel_qr/")
    kept = service.qr_image(stored)
    assert kept is not None and kept.startswith(b"\x89PNG")
    assert kept == wecom.corp.contact_way_image("sim_" + stored.wecom_config_id)

    landing = client.get(f"/c/{stored.key}")
    assert landing.status_code == 200
    assert 'data-testid="landing-qr"' in landing.text and "长按识别二维码" in landing.text
    assert "山野茶事" in landing.text and "茶小满" in landing.text and "加好友送 3 元券" in landing.text
    assert "西湖店收银台" not in landing.text and stored.key not in landing.text.replace(f"/c/{stored.key}/qr.png", "")
    image = client.get(f"/c/{stored.key}/qr.png")
    assert image.status_code == 200 and image.content == kept
    assert client.get("/c/nope/qr.png").status_code == 404
    assert Image.open(io.BytesIO(kept)).size[0] > 0


def test_a_qr_image_host_that_is_down_is_retried_and_a_wrong_answer_is_not_kept(
        db: Session, make: Any, wecom: Simulator) -> None:
    from siyu.wecom.client import WecomApiError, client_for

    api = client_for(db)
    with pytest.raises(WecomApiError) as missing:
        api.contact_way_image(wecom.server.url + "/wwpic/sim_nothing/0")
    assert not missing.value.retryable and missing.value.http_status == 404
    with pytest.raises(WecomApiError) as not_image:
        api.contact_way_image(wecom.server.url + "/")  # HTML, not a PNG or JPEG
    assert "PNG or JPEG" in str(not_image.value)
    with pytest.raises(WecomApiError) as down:
        api.contact_way_image("http://127.0.0.1:9/wwpic/x/0")
    assert down.value.retryable
