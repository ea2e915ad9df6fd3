"""Events that need the WeCom API, against the simulator: adds read the contact and send the
welcome message with the channel's coupon; group and corp-tag changes read what changed."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.channels.models import Channel
from siyu.customers.models import Customer, Friendship, Phone, Tag, Touch
from siyu.groups.models import GroupChat
from siyu.wecom import jobs as wecom_jobs
from siyu.wecom.models import WecomEvent
from tests.test_channels import channel
from tests.test_wecom_client import Simulator, sim, wecom_settings

__all__ = ["sim", "wecom_settings"]
_numbers = itertools.count(1)


def stored(db: Session, event_type: str, **fields: Any) -> int:
    event = WecomEvent(dedup_key=f"{event_type}|{next(_numbers)}", event_type=event_type, raw_xml="<xml/>",
                       fields={"MsgType": "event", "CreateTime": "1795000000", **fields})
    db.add(event)
    db.commit()
    wecom_jobs.process_event.call_local(event.id)
    db.expire_all()
    return event.id


def test_an_add_sends_the_welcome_with_a_coupon_and_reads_the_contact(db: Session, make: Any,
                                                                       wecom_settings: Simulator) -> None:
    sim = wecom_settings
    account = make.account(wecom_userid="shanye.xiaoye01")
    store_channel = channel(db, [account], welcome_text="欢迎{称呼}！券码 {券码}", incentive_kind="coupon")
    from siyu.channels import service as channels_service
    from siyu.core.viewer import SYSTEM

    channels_service.add_codes(db, channel_id=store_channel.id, codes=["TEA-0001"], viewer=SYSTEM)
    db.commit()
    key = db.get(Channel, store_channel.id).key  # type: ignore[union-attr]
    added = sim.control("POST", "add_contact", {"userid": "shanye.xiaoye01", "state": key, "name": "林小姐"})
    contact = sim.corp.contact(added["external_userid"])
    contact.follow("shanye.xiaoye01").remark_mobiles = ["13900002222"]
    event_id = stored(db, "change_external_contact/add_external_contact", UserID="shanye.xiaoye01",
                      ExternalUserID=added["external_userid"], State=key, WelcomeCode=added["welcome_code"])
    assert db.get(WecomEvent, event_id).status == "processed"  # type: ignore[union-attr]
    sent = [w for w in sim.corp.state.welcome_messages if w.external_userid == added["external_userid"]]
    assert len(sent) == 1 and sent[0].text == "欢迎林小姐！券码 TEA-0001"  # the name read before writing it
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == added["external_userid"]))
    assert customer is not None and customer.name == "林小姐"
    assert db.scalar(select(Phone.number).where(Phone.customer_id == customer.id)) == "13900002222"
    touch = next(t for t in db.scalars(select(Touch).where(Touch.customer_id == customer.id))
                 if t.details and t.details.get("event") == "wecom_friend_added")
    assert touch.details["welcome_sent"] is True
    # A platform retry of the same add sends nothing twice (the code is used) and changes nothing.
    assert db.scalar(select(Friendship).where(Friendship.customer_id == customer.id)) is not None


def test_group_changes_and_dismissal_read_the_group(db: Session, make: Any, wecom_settings: Simulator) -> None:
    sim = wecom_settings
    chat = sim.corp.state.group_chats[0]
    make.account(wecom_userid=chat.owner)
    stored(db, "change_external_chat/create", ChatId=chat.chat_id)
    group = db.scalar(select(GroupChat).where(GroupChat.chat_id == chat.chat_id))
    assert group is not None and group.name == chat.name and group.status == "active"
    stored(db, "change_external_chat/dismiss", ChatId=chat.chat_id)
    group = db.scalar(select(GroupChat).where(GroupChat.chat_id == chat.chat_id))
    assert group is not None and group.status == "dismissed"


def test_corp_tag_created_then_deleted_on_wecom(db: Session, wecom_settings: Simulator) -> None:
    sim = wecom_settings
    wecom_tag = sim.corp.state.tag_groups[0].tags[0]
    stored(db, "change_external_tag/create", Id=wecom_tag.id, TagType="tag")
    mirrored = db.scalar(select(Tag).where(Tag.wecom_id == wecom_tag.id))
    assert mirrored is not None and mirrored.name == wecom_tag.name
    stored(db, "change_external_tag/delete", Id=wecom_tag.id, TagType="tag")
    assert db.scalar(select(Tag).where(Tag.wecom_id == wecom_tag.id)) is None


def test_without_the_api_group_and_tag_events_stay_ignored(db: Session) -> None:
    event_id = stored(db, "change_external_chat/create", ChatId="wrNOAPI")
    assert db.get(WecomEvent, event_id).status == "ignored"  # type: ignore[union-attr]


def test_an_edit_callback_decides_a_conflict_by_its_time(db: Session, make: Any, wecom_settings: Simulator) -> None:
    """Siyu's edit has not reached WeCom (refused); WeCom's edit callback says when WeCom changed."""
    from siyu.core.db import utcnow
    from siyu.core.viewer import SYSTEM
    from siyu.customers import service
    from siyu.customers.schemas import CustomerUpdate

    sim = wecom_settings
    account = make.account(wecom_userid="shanye.xiaoye01")
    added = sim.control("POST", "add_contact", {"userid": "shanye.xiaoye01", "name": "周先生"})
    external = added["external_userid"]
    stored(db, "change_external_contact/add_external_contact", UserID="shanye.xiaoye01", ExternalUserID=external)
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == external))
    assert customer is not None
    follow = sim.corp.contact(external).follow("shanye.xiaoye01")
    assert follow is not None

    sim.fault(path="externalcontact/remark", errcode=40058, errmsg="refused", times=1)
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                            data=CustomerUpdate(account_id=account.id, remark_name="私域的备注"))
    db.commit()
    edited = int(utcnow().timestamp())

    def remark_after_edit_callback(wecom_remark: str, seconds_after_siyu: int) -> str:
        follow.remark = wecom_remark
        stored(db, "change_external_contact/edit_external_contact", UserID="shanye.xiaoye01",
               ExternalUserID=external, CreateTime=str(edited + seconds_after_siyu))
        return str(db.scalar(select(Friendship.remark_name).where(Friendship.customer_id == customer.id)))

    assert remark_after_edit_callback("更早在手机上改的", -60) == "私域的备注"  # Siyu wrote last
    assert follow.remark == "私域的备注"  # and WeCom was brought level by a write-back
    db.execute(Friendship.__table__.update().where(Friendship.customer_id == customer.id)
               .values(wecom_written_at=None))  # as if that write-back had failed too
    db.commit()
    assert remark_after_edit_callback("之后在手机上改的", 60) == "之后在手机上改的"  # WeCom wrote last
