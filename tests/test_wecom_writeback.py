"""Edits made in Siyu reach WeCom (remark, description, phones, corp tags), against the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import siyu.wecom.jobs  # noqa: F401 - registers the write-back listener
from siyu.core import db as core_db
from siyu.core.viewer import SYSTEM
from siyu.customers import service
from siyu.customers.models import Customer, Touch
from siyu.customers.schemas import CustomerUpdate
from siyu.wecom import sync
from tests.test_wecom_client import Simulator, sim, wecom_settings
from tests.test_wecom_sync import api_for

__all__ = ["sim", "wecom_settings"]


@pytest.fixture
def synced(db: Session, wecom_settings: Simulator) -> Simulator:
    """A corp pulled into Siyu, with Siyu configured for the simulator."""
    sync.run(core_db.transaction, api_for(wecom_settings.base))
    db.expire_all()
    return wecom_settings


def first_pair(db: Session, sim: Simulator) -> tuple[Any, Any, Customer, int]:
    contact = next(c for c in sim.corp.state.contacts if len(c.active) == 1)
    follow = contact.active[0]
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == contact.external_userid))
    assert customer is not None
    account_id = next(f.account_id for f in customer.friendships)
    return contact, follow, customer, account_id


def test_remark_description_and_phones_reach_wecom(db: Session, synced: Simulator) -> None:
    _contact, follow, customer, account_id = first_pair(db, synced)
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM, data=CustomerUpdate(
        account_id=account_id, remark_name="王姐-爱白茶", description="周末来店", phones=["13900001111"]))
    db.commit()
    assert (follow.remark, follow.description, follow.remark_mobiles) == ("王姐-爱白茶", "周末来店", ["13900001111"])


def test_corp_tags_are_marked_and_unmarked(db: Session, synced: Simulator) -> None:
    _contact, follow, customer, _account_id = first_pair(db, synced)
    mirrored = [t for g in service.list_tag_groups(db) for t in g.tags if t.wecom_id and not g.is_computed]
    chosen = next(t for t in mirrored if t.wecom_id not in follow.tag_ids)
    service.set_customer_tags(db, customer_id=customer.id, add=[chosen], remove=[], viewer=SYSTEM)
    db.commit()
    assert chosen.wecom_id in follow.tag_ids
    service.set_customer_tags(db, customer_id=customer.id, add=[], remove=[chosen], viewer=SYSTEM)
    db.commit()
    assert chosen.wecom_id not in follow.tag_ids


def test_a_refused_write_back_is_on_the_timeline_and_a_busy_wecom_is_waited_out(db: Session,
                                                                                synced: Simulator) -> None:
    _contact, follow, customer, account_id = first_pair(db, synced)
    synced.fault(path="externalcontact/remark", errcode=40058, errmsg="remark too long", times=1)
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                            data=CustomerUpdate(account_id=account_id, remark_name="被拒绝的备注"))
    db.commit()
    db.expire_all()
    refused = [t.details for t in db.scalars(select(Touch).where(Touch.customer_id == customer.id)) if t.details
               and t.details.get("event") == "wecom_writeback_failed"]
    assert len(refused) == 1 and refused[0]["errcode"] == 40058 and "remark too long" in refused[0]["error"]
    assert follow.remark != "被拒绝的备注"
    synced.fault(path="externalcontact/remark", errcode=45009, times=1)
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                            data=CustomerUpdate(account_id=account_id, remark_name="第二次的备注"))
    db.commit()
    assert follow.remark == "第二次的备注"


def test_bulk_tag_changes_reach_wecom_for_every_customer(db: Session, synced: Simulator) -> None:
    from siyu.customers import bulk

    contacts = [c for c in synced.corp.state.contacts if len(c.active) == 1][:3]
    customers = [db.scalar(select(Customer.id).where(Customer.wecom_external_userid == c.external_userid))
                 for c in contacts]
    mirrored = [t for g in service.list_tag_groups(db) for t in g.tags
                if t.wecom_id and not g.is_computed and g.multi_select]
    chosen = next(t for t in mirrored if all(t.wecom_id not in c.active[0].tag_ids for c in contacts))
    checked = bulk.check_action(db, action=bulk.BulkAction(kind=bulk.BulkKind.add_tags, tag_ids=(chosen.id,)),
                                viewer=SYSTEM)
    assert sorted(bulk.apply_batch(db, ids=[c for c in customers if c], checked=checked, viewer=SYSTEM)) == \
        sorted(c for c in customers if c)
    remarks = [c.active[0].remark for c in contacts]
    db.commit()  # one write-back task for the batch, run at commit (immediate mode in tests)
    assert all(chosen.wecom_id in c.active[0].tag_ids for c in contacts)
    assert [c.active[0].remark for c in contacts] == remarks  # a tag change writes tags only


def _friendship(db: Session, customer: Customer, account_id: int) -> Any:
    db.expire_all()
    return next(f for f in db.get(Customer, customer.id).friendships if f.account_id == account_id)  # type: ignore[union-attr]


def test_last_writer_wins_a_pending_siyu_edit_over_an_older_wecom_change(db: Session, synced: Simulator) -> None:
    _contact, follow, customer, account_id = first_pair(db, synced)
    follow.remark = "手机上改的备注"  # changed on a member's phone first (no callback reached Siyu)
    synced.fault(path="externalcontact/remark", errcode=40058, errmsg="remark refused", times=1)
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                            data=CustomerUpdate(account_id=account_id, remark_name="私域里后改的备注"))
    db.commit()  # the write-back was refused: WeCom still has the phone's older value
    assert follow.remark == "手机上改的备注"

    sync.run(core_db.transaction, api_for(synced.base), restart=True)
    assert _friendship(db, customer, account_id).remark_name == "私域里后改的备注"  # the later writer
    assert follow.remark == "私域里后改的备注"  # and written back to WeCom by the sync
    conflict = db.scalar(select(Touch).where(Touch.customer_id == customer.id, Touch.kind == "field_change",
                                             Touch.details.is_not(None)).order_by(Touch.id.desc()))
    assert conflict is not None and conflict.details["kept"] == "siyu"
    assert conflict.details["wecom"] == {"remark_name": "手机上改的备注"}


def test_last_writer_wins_a_later_wecom_change_over_a_written_back_edit(client: Any, db: Session,
                                                                        synced: Simulator, admin: Any) -> None:
    from tests.test_pages import Console

    _contact, follow, customer, account_id = first_pair(db, synced)
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                            data=CustomerUpdate(account_id=account_id, remark_name="<b>私域</b>的备注"))
    db.commit()
    assert follow.remark == "<b>私域</b>的备注" and _friendship(db, customer, account_id).wecom_written_at
    follow.remark = "企业微信后来改的"  # changed on the phone after Siyu's value reached WeCom
    sync.run(core_db.transaction, api_for(synced.base), restart=True)
    assert _friendship(db, customer, account_id).remark_name == "企业微信后来改的"
    page = Console(client).login(admin).get(f"/customers/{customer.id}").text
    assert "私域和企业微信都改过，保留了后改的一方" in page
    assert "&lt;b&gt;私域&lt;/b&gt;的备注" in page and "<b>私域</b>" not in page
