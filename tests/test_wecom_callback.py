"""WeCom callbacks, built on the sending side with wechatpy's own crypto, never Siyu's.

Covers URL verification, storing and processing events (friend added with a channel
state, friend deleted → churn, a customer message → the inbox), duplicates and identical
retries, and every refusal: wrong signature, wrong corp id, old timestamp, a nonce reused
with other content, truncated ciphertext, wrong padding, DOCTYPE/entities, an over-large
body, no configuration.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from wechatpy.enterprise.crypto import WeChatCrypto

from siyu.channels import service as channels_service
from siyu.channels.service import ChannelIn
from siyu.core.settings import get_settings
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Customer, Friendship, Touch
from siyu.inbox.models import Message
from siyu.wecom.models import WecomEvent

CORP_ID = "wwSIYUTESTCORP01"
TOKEN = "siyu-test-token"
AES_KEY = base64.b64encode(hashlib.sha256(b"siyu").digest()).decode()[:-1]  # 43 characters


@pytest.fixture(autouse=True)
def wecom_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIYU_WECOM_CORP_ID", CORP_ID)
    monkeypatch.setenv("SIYU_WECOM_TOKEN", TOKEN)
    monkeypatch.setenv("SIYU_WECOM_AES_KEY", AES_KEY)
    get_settings.cache_clear()


def signature(timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted([TOKEN, timestamp, nonce, encrypted])).encode()).hexdigest()  # noqa: S324


def envelope(inner_xml: str, *, corp_id: str = CORP_ID, timestamp: int | None = None,
             nonce: str | None = None) -> tuple[dict[str, str], str]:
    """What WeCom sends: the query string and the encrypted body (made by wechatpy, not Siyu)."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    nonce = nonce or secrets.token_hex(8)
    body = WeChatCrypto(TOKEN, AES_KEY, corp_id).encrypt_message(inner_xml, nonce, stamp)
    encrypted = body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    return {"msg_signature": signature(stamp, nonce, encrypted), "timestamp": stamp, "nonce": nonce}, body


def event_xml(change: str, **fields: str) -> str:
    parts = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>"
            f"{parts}</xml>")


def aes(key: bytes) -> Cipher[modes.CBC]:
    """AES-256-CBC as WeCom uses it (IV = the first 16 bytes of the key), built without Siyu's code."""
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def post(client: TestClient, inner_xml: str, **kwargs: Any) -> Any:
    params, body = envelope(inner_xml, **kwargs)
    return client.post("/wecom/callback", params=params, content=body.encode())


def test_url_verification_returns_the_decrypted_echostr(client: TestClient) -> None:
    stamp, nonce = str(int(time.time())), "n-verify"
    crypto = WeChatCrypto(TOKEN, AES_KEY, CORP_ID)
    encrypted = crypto.encrypt_message("echo-1234", nonce, stamp).split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    answer = client.get("/wecom/callback", params={"msg_signature": signature(stamp, nonce, encrypted),
                                                   "timestamp": stamp, "nonce": nonce, "echostr": encrypted})
    assert answer.status_code == 200 and answer.text == "echo-1234"
    wrong = client.get("/wecom/callback", params={"msg_signature": "0" * 40, "timestamp": stamp, "nonce": "x",
                                                  "echostr": encrypted})
    assert wrong.status_code == 403


def test_a_friend_add_becomes_a_customer_of_that_account_with_its_channel(client: TestClient, db: Session,
                                                                        make: Any) -> None:
    account = make.account(wecom_userid="zhangsan")
    channel = channels_service.save_channel(db, viewer=SYSTEM, data=ChannelIn(
        name="西湖店收银台", account_ids=[account.id], tag_names=["来源:门店"]))
    db.commit()
    answer = post(client, event_xml("add_external_contact", UserID="zhangsan", ExternalUserID="wmEXT0001",
                                    State=channel.key, WelcomeCode="WELCOME1"))
    assert answer.status_code == 200 and answer.text == "success"
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == "wmEXT0001"))
    assert customer is not None
    (friendship,) = db.scalars(select(Friendship).where(Friendship.customer_id == customer.id))
    assert (friendship.account_id, friendship.channel_state) == (account.id, channel.key)
    event = db.scalar(select(WecomEvent))
    assert event is not None and event.status == "processed"
    tags = {t.name for t in channels_service.customers_service.customer_tags(db, customer_ids=[customer.id])[
        customer.id]}
    assert "门店" in tags


def test_the_same_event_delivered_three_times_is_stored_and_applied_once(client: TestClient, db: Session,
                                                                         make: Any) -> None:
    make.account(wecom_userid="lisi")
    xml = event_xml("add_external_contact", UserID="lisi", ExternalUserID="wmEXT0002", State="")
    answers = [post(client, xml) for _ in range(3)]  # three deliveries, three nonces
    assert [a.text for a in answers] == ["success"] * 3
    assert db.scalar(select(func.count()).select_from(WecomEvent)) == 1
    assert db.scalar(select(func.count()).select_from(Customer)) == 1


def test_a_customer_deleting_us_is_a_churn_alert(client: TestClient, db: Session, make: Any) -> None:
    make.account(wecom_userid="wangwu")
    post(client, event_xml("add_external_contact", UserID="wangwu", ExternalUserID="wmEXT0003"))
    post(client, event_xml("del_follow_user", UserID="wangwu", ExternalUserID="wmEXT0003"))
    customer = db.scalar(select(Customer).where(Customer.wecom_external_userid == "wmEXT0003"))
    assert customer is not None
    db.refresh(customer)
    assert [(f.status, f.ended_by) for f in customer.friendships] == [("deleted", "customer")]  # the churn list's side
    alerts = [t for t in db.scalars(select(Touch).where(Touch.customer_id == customer.id))
              if (t.details or {}).get("event") == "churn"]
    assert [a.details["side"] for a in alerts] == ["customer"]  # type: ignore[index]


def test_a_message_callback_is_stored_and_ignored_never_taken_for_a_customer_chat(
        client: TestClient, db: Session, make: Any) -> None:
    # WeCom sends MsgType=text only for a member writing to an app: never a customer's chat message.
    make.account(wecom_userid="zhaoliu")
    post(client, event_xml("add_external_contact", UserID="zhaoliu", ExternalUserID="wmEXT0004"))
    message = (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[wmEXT0004]]>"
               f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               "<Content><![CDATA[优惠券怎么用？]]></Content><MsgId>88001</MsgId></xml>")
    assert post(client, message).text == "success"
    assert db.scalar(select(Message.text)) is None
    event = db.scalar(select(WecomEvent).where(WecomEvent.event_type == "message/text"))
    assert event is not None and event.status == "ignored"


def test_unknown_event_types_are_stored_and_acknowledged(client: TestClient, db: Session) -> None:
    xml = event_xml("some_future_change", UserID="x")
    assert post(client, xml).text == "success"
    event = db.scalar(select(WecomEvent))
    assert event is not None and event.status == "ignored" and "some_future_change" in event.raw_xml


@pytest.mark.parametrize("case", ["signature", "corp", "old", "truncated", "padding", "doctype", "entity"])
def test_bad_callbacks_are_refused_and_nothing_is_stored(client: TestClient, db: Session, case: str) -> None:
    xml = event_xml("add_external_contact", UserID="u", ExternalUserID="wmBAD")
    params, body = envelope(xml, corp_id="wwSOMEONEELSE" if case == "corp" else CORP_ID,
                            timestamp=int(time.time()) - 600 if case == "old" else None)
    encrypted = body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    if case == "signature":
        params["msg_signature"] = "f" * 40
    if case in ("truncated", "padding", "doctype", "entity"):
        raw = base64.b64decode(encrypted)
        if case == "truncated":
            raw = raw[:-7]
        else:
            key = base64.b64decode(AES_KEY + "=")
            plain = aes(key).decryptor().update(raw)
            if case == "padding":
                plain = plain[:-1] + bytes([99])  # a padding byte no PKCS#7 block can have
            else:
                inner = ("<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'>]><xml><b>&a;</b></xml>" if case == "entity"
                         else "<!DOCTYPE xml SYSTEM 'http://example.com/x.dtd'><xml><a>1</a></xml>").encode()
                body_bytes = secrets.token_bytes(16) + len(inner).to_bytes(4, "big") + inner + CORP_ID.encode()
                pad = 32 - len(body_bytes) % 32
                plain = body_bytes + bytes([pad]) * pad
            raw = aes(key).encryptor().update(plain)
        encrypted = base64.b64encode(raw).decode()
        body = f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        params["msg_signature"] = signature(params["timestamp"], params["nonce"], encrypted)
    answer = client.post("/wecom/callback", params=params, content=body.encode())
    expected = {"signature": 403, "corp": 403, "old": 400, "truncated": 400, "padding": 400, "doctype": 400,
                "entity": 400}[case]
    assert answer.status_code == expected, answer.text
    assert db.scalar(select(func.count()).select_from(WecomEvent)) == 0


def test_an_identical_retry_of_a_stored_callback_is_acknowledged(client: TestClient, db: Session) -> None:
    """WeCom sends the very same request again when our `success` was lost: success, stored once."""
    params, body = envelope(event_xml("some_change", UserID="u1"))
    assert client.post("/wecom/callback", params=params, content=body.encode()).text == "success"
    again = client.post("/wecom/callback", params=params, content=body.encode())
    assert again.status_code == 200 and again.text == "success"
    assert db.scalar(select(func.count()).select_from(WecomEvent)) == 1


def test_identical_requests_arriving_together_are_stored_once_and_both_acknowledged(db: Session) -> None:
    from siyu.wecom import callback

    params, body = envelope(event_xml("some_change", UserID="u2"))
    query = callback.Query(**params)
    first, second = callback.accept_many(db, [(query, body.encode()), (query, body.encode())])
    db.commit()
    assert isinstance(first, int) and second is None
    assert db.scalar(select(func.count()).select_from(WecomEvent)) == 1


def test_a_reused_nonce_with_different_content_is_refused(client: TestClient, db: Session) -> None:
    params, body = envelope(event_xml("some_change", UserID="u1"), nonce="n-reused")
    assert client.post("/wecom/callback", params=params, content=body.encode()).text == "success"
    other_params, other_body = envelope(event_xml("some_change", UserID="u2"), nonce="n-reused")
    replay = client.post("/wecom/callback", params=other_params, content=other_body.encode())
    assert replay.status_code == 409
    assert db.scalar(select(func.count()).select_from(WecomEvent)) == 1
    # Two different requests under one nonce in the same moment: the second is refused too.
    from siyu.wecom import callback

    a_params, a_body = envelope(event_xml("x", UserID="u3"), nonce="n-twice")
    b_params, b_body = envelope(event_xml("x", UserID="u4"), nonce="n-twice")
    answers = callback.accept_many(db, [(callback.Query(**a_params), a_body.encode()),
                                        (callback.Query(**b_params), b_body.encode())])
    assert isinstance(answers[0], int) and isinstance(answers[1], callback.CallbackRefused)
    assert answers[1].status == 409


def test_an_oversized_body_and_doctypes_are_refused(client: TestClient, db: Session) -> None:
    params, body = envelope(event_xml("some_change"))
    assert client.post("/wecom/callback", params=params, content=body.encode()).text == "success"
    huge = client.post("/wecom/callback", params=params, content=b"<xml>" + b"a" * (2 * 1024 * 1024) + b"</xml>")
    assert huge.status_code == 413
    outer_doctype = client.post("/wecom/callback", params={**params, "nonce": "fresh"},
                                content=b"<!DOCTYPE x [<!ENTITY a 'b'>]><xml><Encrypt>&a;</Encrypt></xml>")
    assert outer_doctype.status_code == 400


def test_without_configuration_callbacks_are_refused_clearly(client: TestClient,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIYU_WECOM_AES_KEY", "")
    get_settings.cache_clear()
    params, body = envelope(event_xml("x"))
    answer = client.post("/wecom/callback", params=params, content=body.encode())
    assert answer.status_code == 503 and "not configured" in answer.text


def test_an_event_stored_but_never_enqueued_is_swept_up(db: Session, make: Any) -> None:
    from datetime import timedelta

    from siyu.core.db import utcnow
    from siyu.wecom.jobs import sweep_events

    make.account(wecom_userid="crash")
    db.add(WecomEvent(dedup_key="k1", event_type="change_external_contact/add_external_contact",
                      raw_xml="<xml/>", received_at=utcnow() - timedelta(minutes=2),
                      fields={"UserID": "crash", "ExternalUserID": "wmSWEPT", "MsgType": "event"}))
    db.commit()
    sweep_events.call_local()
    db.expire_all()
    event = db.scalar(select(WecomEvent))
    assert event is not None and event.status == "processed" and event.attempts == 1
    assert db.scalar(select(Customer).where(Customer.wecom_external_userid == "wmSWEPT")) is not None
    sweep_events.call_local()  # a second sweep changes nothing
    assert db.scalar(select(func.count()).select_from(Customer)) == 1


def test_the_connection_can_be_set_from_the_console(client: TestClient, db: Session, make: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_pages import Console

    for name in ("SIYU_WECOM_CORP_ID", "SIYU_WECOM_TOKEN", "SIYU_WECOM_AES_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    console = Console(client).login(make.user("admin"))
    assert 'data-testid="wecom-state"' in console.get("/wecom").text
    bad = console.post("/wecom", {"corp_id": CORP_ID, "token": TOKEN, "aes_key": "too-short", "secret": "",
                                  "api_base": "https://qyapi.weixin.qq.com/cgi-bin/"})
    assert bad.status_code == 422 and "EncodingAESKey" in bad.text
    saved = console.post("/wecom", {"corp_id": CORP_ID, "token": TOKEN, "aes_key": AES_KEY, "secret": "s3cret-value",
                                    "api_base": "https://qyapi.weixin.qq.com/cgi-bin/"})
    assert saved.status_code == 303
    page = console.get("/wecom").text
    assert "s3cret-value" not in page and AES_KEY not in page and TOKEN not in page and "*******alue" in page
    assert post(client, event_xml("some_change")).text == "success"  # callbacks use the saved settings
    monkeypatch.setenv("SIYU_WECOM_CORP_ID", "wwFROMENV")
    get_settings.cache_clear()
    assert "wwFROMENV" in console.get("/wecom").text  # the environment wins
    from siyu.team.models import AuditEntry

    entry = db.scalar(select(AuditEntry).where(AuditEntry.entity_type == "wecom_connection"))
    assert entry is not None and "s3cret" not in str(entry.after)


def test_a_token_changed_on_the_console_applies_to_the_next_callback(client: TestClient, db: Session,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Callbacks use the saved connection as read a few seconds ago, except just after a save here."""
    from sqlalchemy import update

    from siyu.core.models import AppSetting
    from siyu.wecom import config

    monkeypatch.delenv("SIYU_WECOM_TOKEN")
    get_settings.cache_clear()

    def signed_with(token: str) -> int:
        params, body = envelope(event_xml("some_change", Id=secrets.token_hex(4)))
        encrypted = body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
        joined = "".join(sorted([token, params["timestamp"], params["nonce"], encrypted])).encode()
        params["msg_signature"] = hashlib.sha1(joined).hexdigest()  # noqa: S324
        return client.post("/wecom/callback", params=params, content=body.encode()).status_code

    config.save(db, values={"token": "first-token"}, actor=SYSTEM)
    db.commit()
    assert signed_with("first-token") == 200
    config.save(db, values={"token": "second-token"}, actor=SYSTEM)
    db.commit()
    assert (signed_with("second-token"), signed_with("first-token")) == (200, 403)
    # Another process's save is seen once the remembered row is older than RECENT_ENOUGH_SECONDS.
    db.execute(update(AppSetting).where(AppSetting.key == config.SETTING_KEY).values(value={"token": "third-token"}))
    db.commit()
    assert signed_with("third-token") == 403
    monkeypatch.setattr(config, "RECENT_ENOUGH_SECONDS", 0.0)
    assert signed_with("third-token") == 200


def test_callbacks_skip_the_console_stack_but_keep_its_headers(client: TestClient) -> None:
    answer = post(client, event_xml("some_change"))
    assert answer.text == "success" and answer.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in answer.headers  # no console session is read or written
    refused = client.post("/wecom/callback", params={"msg_signature": "0", "timestamp": "1", "nonce": "n"},
                          content=b"<xml/>")
    assert refused.status_code == 400 and "timestamp" in refused.text


def test_the_event_log_filters_and_shows_the_decrypted_xml(client: TestClient, db: Session, make: Any) -> None:
    from tests.test_pages import Console

    post(client, event_xml("future_kind", UserID="<script>x</script>"))
    console = Console(client).login(make.user("admin"))
    event = db.scalar(select(WecomEvent))
    assert event is not None
    listing = console.get("/wecom/events", params={"status": "ignored", "day": event.received_at.astimezone(
        get_settings_zone()).date().isoformat()})
    assert listing.status_code == 200 and f"/wecom/events/{event.id}" in listing.text
    assert 'data-testid="event-status">已保存（不处理）<' in listing.text  # statuses in the operator's words
    post(client, event_xml("add_external_contact", UserID="nobody", ExternalUserID="wmLOG"))
    assert "客户添加成员" in console.get("/wecom/events").text  # and kinds, next to WeCom's name for them
    assert f"/wecom/events/{event.id}" not in console.get("/wecom/events", params={"status": "failed"}).text
    detail = console.get(f"/wecom/events/{event.id}").text
    assert "&lt;script&gt;" in detail and "<script>x</script>" not in detail
    assert console.get("/wecom/events/999999").status_code == 404
    operator = Console(client).login(make.user("operator"))
    assert operator.get("/wecom/events").status_code == 403


def get_settings_zone() -> Any:
    from siyu.core.settings import local_zone

    return local_zone()


def _fields_through_elementtree(xml: str) -> dict[str, str]:
    """The reference reading: defusedxml's ElementTree, each child of the root (nested: texts joined)."""
    from defusedxml import ElementTree

    fields = {}
    for child in ElementTree.fromstring(xml, forbid_dtd=True):
        fields[child.tag] = (",".join((leaf.text or "").strip() for leaf in child.iter() if leaf is not child)
                             if len(child) else (child.text or "").strip())
    return fields


@pytest.mark.parametrize("xml", [
    event_xml("add_external_contact", UserID="张三", ExternalUserID="wm<&>", State="门店 <扫码> &amp;"),
    "<xml><ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><Item>add_member</Item><Item><![CDATA[x]]>"
    "</Item><Deep><Leaf>1</Leaf>tail</Deep></UpdateDetail><Empty/><Spaced>  a  </Spaced></xml>",
    "<xml><Content>第一行\n第二行 &amp; &lt;b&gt; &#20013;</Content><Mixed>before<B>in</B>after</Mixed></xml>",
    "<?xml version='1.0' encoding='utf-8'?><xml><A>1</A><A>2</A></xml>",
])
def test_the_callback_parser_reads_what_elementtree_reads(xml: str) -> None:
    from siyu.wecom import callback

    assert callback._parse(xml) == _fields_through_elementtree(xml)


@pytest.mark.parametrize("xml", ["<xml><a>&undefined;</a></xml>", "<xml><a>1</a>", "<xml><a>1</b></xml>", "",
                                 "<!DOCTYPE x [<!ENTITY a 'b'>]><xml/>", "<xml/><xml/>"])
def test_the_callback_parser_refuses_malformed_xml_and_doctypes(xml: str) -> None:
    from siyu.wecom import callback

    with pytest.raises(callback.CallbackRefused) as refused:
        callback._parse(xml)
    assert refused.value.status == 400
