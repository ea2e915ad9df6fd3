"""What people read names things: channels by name, sources in words, customers by the name WeCom
gave, a merge partner found by search, and a bad link answered in Chinese — no codes or ids."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.channels import service as channels_service
from siyu.customers import variables
from siyu.customers.models import Customer, Touch, TouchKind
from siyu.wecom import events, sync
from tests.conftest import viewer_of
from tests.test_pages import Console


def test_the_timeline_names_the_channel_a_friend_came_through(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    admin = make.user("admin")
    channel = channels_service.save_channel(db, viewer=viewer_of(admin), data=channels_service.ChannelIn(
        name="西湖店门口海报", account_ids=[account.id]))
    customer = make.customer(account)
    db.add(Touch(customer_id=customer.id, account_id=account.id, kind=TouchKind.system.value,
                 details={"event": "wecom_friend_added", "state": channel.key}))
    gone = make.customer(account)
    db.add(Touch(customer_id=gone.id, account_id=account.id, kind=TouchKind.system.value,
                 details={"event": "wecom_friend_added", "state": "chGone00000000"}))
    db.commit()
    console = Console(client).login(admin)
    page = console.get(f"/customers/{customer.id}").text
    assert 'data-testid="timeline-channel">西湖店门口海报<' in page
    assert channel.key not in page
    other = console.get(f"/customers/{gone.id}").text
    assert "chGone00000000" not in other and "渠道已删除" in other


def test_the_channel_page_keeps_its_state_out_of_the_heading(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    admin = make.user("admin")
    channel = channels_service.save_channel(db, viewer=viewer_of(admin), data=channels_service.ChannelIn(
        name="包裹卡", account_ids=[account.id]))
    db.commit()
    page = Console(client).login(admin).get(f"/channels/{channel.id}").text
    assert "state:" not in page
    heading = page[page.index('class="page-title'):page.index("</h2>")]
    assert "包裹卡" in heading and channel.key not in heading
    fold = page[page.index('data-testid="technical-details"'):]
    assert channel.key in fold[:fold.index("</details>")]


def test_a_stored_source_code_shows_in_words(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    wecom = make.customer(account, source="wecom")
    typed = make.customer(account, source="门店")
    console = Console(client).login(make.user("admin"))
    facts = re.compile(r'datagrid-content siyu-user-text">([^<]*)</div>')
    assert "企业微信" in facts.findall(console.get(f"/customers/{wecom.id}").text)
    assert "wecom" not in facts.findall(console.get(f"/customers/{wecom.id}").text)
    assert "门店" in facts.findall(console.get(f"/customers/{typed.id}").text)
    csv_text = console.get("/customers/export.csv").content.decode("utf-8-sig")
    assert "企业微信" in csv_text and ",wecom," not in csv_text


def test_a_wecom_customer_gets_the_name_wecom_gave(db: Session, make: Any) -> None:
    account = make.account(wecom_userid="counter")
    customers = events._customers(db, ["wmNAMED727606", "wmLEGACY00001"], create=True)
    named = customers["wmNAMED727606"]
    assert variables.is_unnamed(named.name), "before WeCom names them, the name says so (never a made-up one)"
    legacy = customers["wmLEGACY00001"]
    legacy.name = "企业微信客户000001"  # the placeholder older versions stored
    db.commit()
    items = [{"external_contact": {"external_userid": ext, "name": name},
              "follow_info": {"userid": "counter", "remark": ""}}
             for ext, name in (("wmNAMED727606", "林小姐"), ("wmLEGACY00001", "陈先生"))]
    sync.apply_page(db, items, accounts={"counter": account.id}, run=None)
    db.commit()
    db.expire_all()
    names = {ext: name for ext, name in db.execute(select(Customer.wecom_external_userid, Customer.name))}
    assert names == {"wmNAMED727606": "林小姐", "wmLEGACY00001": "陈先生"}


def test_a_name_siyu_did_not_make_up_is_kept(db: Session, make: Any) -> None:
    account = make.account(wecom_userid="counter")
    customer = events._customers(db, ["wmKEEP"], create=True)["wmKEEP"]
    customer.name = "企业微信客户部王经理"  # typed by someone; merely starts like the old placeholder
    db.commit()
    sync.apply_page(db, [{"external_contact": {"external_userid": "wmKEEP", "name": "Wang"},
                          "follow_info": {"userid": "counter"}}], accounts={"counter": account.id}, run=None)
    db.commit()
    db.expire_all()
    assert db.scalar(select(Customer.name).where(Customer.wecom_external_userid == "wmKEEP")) == "企业微信客户部王经理"


def test_a_bad_link_answers_in_chinese_without_field_codes(client: TestClient, make: Any) -> None:
    console = Console(client).login(make.user("admin"))
    for url in ("/customers/abc", "/customers/99999999999999", "/channels/x"):
        response = console.get(url)
        assert response.status_code == 422, url
        alert = response.text[response.text.index("输入有误"):][:200]
        assert "链接有误" in alert and "customer_id" not in alert and "channel_id" not in alert
        assert not re.search(r"[A-Za-z]{6,}", alert.split("<")[0]), alert
    api = client.get("/api/v1/accounts/abc", headers={"accept": "application/json",
                                                       "authorization": "Bearer nope"})
    assert api.status_code in (401, 422)


def test_the_merge_box_searches_for_the_other_customer(client: TestClient, db: Session, make: Any) -> None:
    account = make.account()
    one = make.customer(account, name="王芳", phones=["13812341234"])
    two = make.customer(account, name="王芳芳", remark_name="王芳-新号")
    make.customer(account, name="李娜")
    console = Console(client).login(make.user("admin"))
    detail = console.get(f"/customers/{one.id}").text
    form = detail[detail.rindex("<form", 0, detail.index('data-testid="merge-with"')):]
    form = form[:form.index("</form>")]
    assert 'type="number"' not in form and 'action="/customers/merge-pick"' in form
    page = console.get("/customers/merge-pick", params={"with_id": str(one.id), "q": "王芳"}).text
    assert page.count('data-testid="merge-candidate"') == 1, "the customer being merged is not offered"
    assert f"/customers/merge?ids={one.id}&amp;ids={two.id}" in page
    assert "李娜" not in page
    assert console.get("/customers/merge-pick", params={"with_id": "abc", "q": "x"}).status_code == 404
