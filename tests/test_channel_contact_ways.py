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
