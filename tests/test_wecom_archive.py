"""The chat archive (会话存档) end to end through the simulator (in-process, no doubles): msgaudit_notify
reaches /wecom/callback, Siyu pulls the simulator's stand-in for GetChatData, opens each random key with
the corp's real RSA private key of its version, and stores private chats as read-only inbox conversations
(the member's own message answers them) and group messages per group. Bad input: a key version Siyu has
no key for (reported, skipped, the rest continues), a customer who has not agreed (nothing stored), the
same seq range pulled twice (stored once)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.db import transaction
from siyu.core.settings import get_settings
from siyu.customers.models import Customer
from siyu.groups.models import GroupChat, GroupMessage
from siyu.inbox.models import Conversation, Message
from siyu.simulator.callbacks import msg_audit_approved, msgaudit_notify
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom import archive
from siyu.wecom.client import client_for
from siyu.wecom.models import ArchiveConsent, ArchiveCursor, ArchiveSkip
from tests.test_pages import Console
from tests.test_wecom_callback import AES_KEY, CORP_ID, TOKEN, post

SECRET = "archive-e2e-secret-0123456789"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def keys() -> dict[int, rsa.RSAPrivateKey]:
    return {v: rsa.generate_private_key(public_exponent=65537, key_size=2048) for v in (1, 2)}


class Sim:
    def __init__(self, server: RunningServer, corp: VirtualCorp) -> None:
        self.server = server
        self.corp = corp
        self.notified = 0

    def control(self, operation: str, **body: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.server.url}/_simulator/{operation}", json=body)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def notify(self, client: TestClient) -> None:
        """WeCom's msgaudit_notify (each a second apart: the platform's are ≥ 15 s apart, W:95039)."""
        self.notified += 1
        xml = msgaudit_notify(CORP_ID, create_time=int(time.time()) + self.notified)
        assert post(client, xml).text == "success"

    def pair(self, n: int = 0) -> tuple[str, str]:
        pairs = [(f.userid, c.external_userid) for c in self.corp.state.contacts for f in c.follows]
        return pairs[n]


@pytest.fixture
def sim(database_url: str, db: Session, monkeypatch: pytest.MonkeyPatch,
        keys: dict[int, rsa.RSAPrivateKey]) -> Iterator[Sim]:
    corp = VirtualCorp.seeded(5, corp_id=CORP_ID, contacts_per_member=3, groups_per_member=1, salt=0)
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    for name, value in {"SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET, "SIYU_WECOM_TOKEN": TOKEN,
                        "SIYU_WECOM_AES_KEY": AES_KEY, "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/",
                        "SIYU_WECOM_ARCHIVE_SOURCE": "simulator",
                        # Siyu holds the private key of version 1 only
                        "SIYU_WECOM_ARCHIVE_PRIVATE_KEYS": json.dumps({"1": _pem(keys[1])})}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    for member in corp.state.members:
        db.add(Account(kind="wecom", wecom_userid=member.userid, display_name=member.name))
    db.commit()
    sim = Sim(server, corp)
    sim.control("archive_public_key", version=1, pem=_public_pem(keys[1]))
    try:
        yield sim
    finally:
        server.stop()
        get_settings.cache_clear()


def _conversation(db: Session, external_userid: str) -> Conversation:
    customer = db.scalars(select(Customer).where(Customer.wecom_external_userid == external_userid)).one()
    return db.scalars(select(Conversation).where(Conversation.customer_id == customer.id)).one()


def test_a_private_chat_becomes_a_read_only_conversation_answered_by_the_members_own_message(
        client: TestClient, db: Session, sim: Sim) -> None:
    userid, external = sim.pair()
    sim.control("archive_agree", userid=userid, external_userid=external)
    sim.control("archive_chat", userid=userid, external_userid=external, text="请问明前龙井还有货吗？")
    sim.notify(client)
    db.expire_all()
    conversation = _conversation(db, external)
    assert (conversation.channel, conversation.unanswered) == ("wecom_archive", 1)
    assert conversation.waiting_since is not None  # the SLA clock runs
    sim.control("archive_chat", userid=userid, external_userid=external, text="有的，今天下单明天发", from_member=True)
    sim.notify(client)
    db.expire_all()
    conversation = _conversation(db, external)
    assert (conversation.unanswered, conversation.waiting_since) == (0, None)
    assert conversation.first_response_at is not None
    texts = [m.text for m in db.scalars(select(Message).where(Message.conversation_id == conversation.id,
                                                               Message.msg_type == "text").order_by(Message.id))]
    assert texts == ["请问明前龙井还有货吗？", "有的，今天下单明天发"]
    consent = db.scalars(select(ArchiveConsent).where(ArchiveConsent.external_userid == external)).one()
    assert consent.agreed


def test_group_messages_are_stored_per_group_and_readable_through_the_api_cursor_paged(
        client: TestClient, db: Session, sim: Sim, admin: Any, admin_headers: dict[str, str]) -> None:
    chat = sim.corp.state.group_chats[0]
    db.add(GroupChat(chat_id=chat.chat_id, name=chat.name, owner_userid=chat.owner,
                     owner_account_id=db.scalar(select(Account.id).where(Account.wecom_userid == chat.owner))))
    db.commit()
    for n in range(5):
        sim.control("archive_group_message", chat_id=chat.chat_id, sender=chat.owner, text=f"群公告 {n}")
    sim.notify(client)
    group = db.scalars(select(GroupChat).where(GroupChat.chat_id == chat.chat_id)).one()
    first = client.get(f"/api/v1/groups/{group.id}/messages", params={"limit": 3}, headers=admin_headers)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [m["text"] for m in page["items"]] == ["群公告 4", "群公告 3", "群公告 2"]
    second = client.get(f"/api/v1/groups/{group.id}/messages", params={"limit": 3, "cursor": page["next_cursor"]},
                        headers=admin_headers).json()
    assert [m["text"] for m in second["items"]] == ["群公告 1", "群公告 0"] and second["next_cursor"] is None
    bad = client.get(f"/api/v1/groups/{group.id}/messages", params={"cursor": "!!"}, headers=admin_headers)
    assert bad.status_code == 422
    page_html = Console(client).login(admin).get(f"/groups/{group.id}")
    assert page_html.text.count('data-testid="group-message"') == 5 and "群公告 4" in page_html.text


def test_archive_data_for_another_public_key_version_is_reported_and_skipped_and_the_rest_continues(
        client: TestClient, db: Session, sim: Sim, keys: dict[int, rsa.RSAPrivateKey]) -> None:
    userid, external = sim.pair()
    sim.control("archive_agree", userid=userid, external_userid=external)
    sim.control("archive_chat", userid=userid, external_userid=external, text="第一条")
    sim.control("archive_public_key", version=2, pem=_public_pem(keys[2]))  # Siyu has no private key of v2
    sim.control("archive_chat", userid=userid, external_userid=external, text="第二条（新密钥）")
    sim.control("archive_public_key", version=1, pem=_public_pem(keys[1]))
    sim.control("archive_chat", userid=userid, external_userid=external, text="第三条")
    sim.notify(client)
    db.expire_all()
    skip = db.scalars(select(ArchiveSkip)).one()
    assert skip.publickey_ver == 2 and "publickey_ver 2" in skip.reason
    texts = [m.text for m in db.scalars(select(Message).where(Message.source == archive.SOURCE,
                                                               Message.msg_type == "text").order_by(Message.id))]
    assert texts == ["第一条", "第三条"]
    row = db.get(ArchiveCursor, archive.CURSOR)
    assert row is not None and row.skipped == 1 and row.seq == 4  # agree + three messages: past the skipped one


def test_a_customer_who_has_not_agreed_to_archiving_has_no_content_stored(
        client: TestClient, db: Session, sim: Sim) -> None:
    userid, external = sim.pair(1)
    sim.control("archive_agree", userid=userid, external_userid=external, agree=False)
    # what the platform would not archive, sent anyway: Siyu must not keep it
    sim.control("archive_chat", userid=userid, external_userid=external, text="我的手机号是13800000000",
                ignore_consent=True)
    sim.notify(client)
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Message).where(Message.source == archive.SOURCE)) == 0
    assert db.scalar(select(func.count()).select_from(Message).where(Message.text.contains("13800000000"))) == 0
    row = db.get(ArchiveCursor, archive.CURSOR)
    assert row is not None and row.withheld == 2 and row.seq == 2  # the disagree notice and the message


def test_consent_unknown_to_siyu_is_asked_with_check_single_agree_and_msg_audit_approved_records_it(
        client: TestClient, db: Session, sim: Sim) -> None:
    userid, external = sim.pair(2)
    sim.corp.archive.consent[(userid, external)] = ("Default_Agree", 0)  # never told Siyu by a callback
    sim.control("archive_chat", userid=userid, external_userid=external, text="在吗")
    sim.notify(client)
    db.expire_all()
    assert db.scalars(select(ArchiveConsent).where(ArchiveConsent.external_userid == external)).one().agreed
    assert _conversation(db, external).unanswered == 1
    other_user, other = sim.pair(3)
    assert post(client, msg_audit_approved(CORP_ID, userid=other_user, external_userid=other,
                                           create_time=int(time.time()))).text == "success"
    db.expire_all()
    assert db.scalars(select(ArchiveConsent).where(ArchiveConsent.external_userid == other)).one().status == "approved"


def test_the_same_seq_range_pulled_twice_is_stored_once(client: TestClient, db: Session, sim: Sim) -> None:
    sim.corp.archive.scenario(count=60, group_share=0.3, agree_share=1.0, notify=False)
    with transaction() as session:
        source = archive.configured_source(session)
        api = client_for(session)
    assert source is not None
    first = archive.pull(transaction, source, api=api, limit=25)
    again = archive.pull(transaction, source, api=api, limit=25, from_seq=0)  # the same range once more
    assert first.private + first.group > 0 and again.private + again.group == 0
    assert again.duplicates == first.private + first.group
    stored = db.scalar(select(func.count()).select_from(Message).where(Message.source == archive.SOURCE))
    groups = db.scalar(select(func.count()).select_from(GroupMessage))
    assert (stored, groups) == (first.private, first.group)
    row = db.get(ArchiveCursor, archive.CURSOR)
    assert row is not None and row.seq == len(sim.corp.archive.log)


def test_a_batch_of_pages_that_fails_to_store_leaves_the_seq_and_is_pulled_whole_next_time(
        client: TestClient, db: Session, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    sim.corp.archive.scenario(count=60, group_share=0.3, agree_share=1.0, notify=False)
    with transaction() as session:
        source = archive.configured_source(session)
        api = client_for(session)
    assert source is not None
    real_store = archive.store_page

    def crash(session: Session, opened: list[archive.Opened], **kwargs: Any) -> archive.PageResult:
        real_store(session, opened, **kwargs)  # the rows are written, then the worker dies before the commit
        raise RuntimeError("worker killed")

    monkeypatch.setattr(archive, "store_page", crash)
    with pytest.raises(RuntimeError):
        archive.pull(transaction, source, api=api, limit=25)
    db.expire_all()
    assert db.scalar(select(ArchiveCursor.seq).where(ArchiveCursor.name == archive.CURSOR)) == 0
    assert db.scalar(select(func.count()).select_from(GroupMessage)) == 0
    batches: list[int] = []

    def count(session: Session, opened: list[archive.Opened], **kwargs: Any) -> archive.PageResult:
        batches.append(len(opened))
        return real_store(session, opened, **kwargs)

    monkeypatch.setattr(archive, "store_page", count)
    result = archive.pull(transaction, source, api=api, limit=25)
    assert batches == [len(sim.corp.archive.log)]
    assert result.pages == len(sim.corp.archive.log) // 25 + 1  # full pages and the short one, one batch
    db.expire_all()
    assert db.scalar(select(ArchiveCursor.seq).where(ArchiveCursor.name == archive.CURSOR)) == \
        len(sim.corp.archive.log)
    assert db.scalar(select(func.count()).select_from(GroupMessage)) == result.group > 0


def test_a_batch_fetched_ahead_is_dropped_when_another_worker_moved_the_seq_meanwhile(
        client: TestClient, db: Session, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    sim.corp.archive.scenario(count=100, group_share=0.3, agree_share=1.0, notify=False)
    with transaction() as session:
        source = archive.configured_source(session)
        other_source = archive.configured_source(session)
        api = client_for(session)
    assert source is not None and other_source is not None
    real_store = archive.store_page
    others: list[archive.PullResult] = []
    batches: list[int] = []

    def then_another_worker_pulls(session: Session, opened: list[archive.Opened], **kwargs: Any
                                  ) -> archive.PageResult:
        batches.append(len(opened))
        if len(batches) == 1:  # after this batch's commit, while the next one is already fetched ahead
            event.listen(session, "after_commit", lambda _s: others.append(
                archive.pull(transaction, other_source, api=api, limit=25, batch_items=25, max_pages=1)), once=True)
        return real_store(session, opened, **kwargs)

    monkeypatch.setattr(archive, "store_page", then_another_worker_pulls)
    result = archive.pull(transaction, source, api=api, limit=25, batch_items=25)
    total = len(sim.corp.archive.log)
    assert len(others) == 1 and others[0].pages == 1
    assert result.duplicates == 0  # the batch fetched ahead was dropped, not stored again
    assert result.pages + others[0].pages == total // 25 + 1
    db.expire_all()
    assert db.scalar(select(ArchiveCursor.seq).where(ArchiveCursor.name == archive.CURSOR)) == total
    stored = db.scalar(select(func.count()).select_from(Message).where(Message.source == archive.SOURCE))
    assert (stored, db.scalar(select(func.count()).select_from(GroupMessage))) == (
        result.private + others[0].private, result.group + others[0].group)


def test_the_sdk_source_is_thin_around_the_wrapper_and_refuses_a_limit_above_1000() -> None:
    class Finance:  # a stand-in for pyweworkfinance.WeWorkFinance (the real one needs WeCom's servers)
        def __init__(self) -> None:
            self.calls: list[tuple[int, int]] = []

        def get_chat_data(self, seq: int, limit: int) -> Any:
            self.calls.append((seq, limit))
            return type("Answer", (), {"chatdata": [{"seq": seq + 1, "msgid": "m"}]})()

        def decrypt_data(self, key: str, body: str) -> dict[str, Any]:
            return {"msgid": "m", "key": key, "body": body}

    finance = Finance()
    source = archive.SdkSource("corp", "secret", finance=finance)
    assert source.chat_data(7, 5000) == [{"seq": 8, "msgid": "m"}]
    assert finance.calls == [(7, archive.CHATDATA_LIMIT)]
    assert source.decrypt("k", "b")["key"] == "k"


def test_an_archived_chat_is_read_only_in_the_inbox_and_points_to_the_sidebar(
        client: TestClient, db: Session, sim: Sim, admin: Any, admin_headers: dict[str, str]) -> None:
    userid, external = sim.pair()
    sim.control("archive_agree", userid=userid, external_userid=external)
    sim.control("archive_chat", userid=userid, external_userid=external, text="能开发票吗？")
    sim.notify(client)
    conversation = _conversation(db, external)
    url = f"/api/v1/inbox/conversations/{conversation.id}/messages"
    refused = client.post(url, json={"text": "可以的"}, headers=admin_headers)
    assert refused.status_code == 422 and "只读" in refused.text
    correction = client.post(url, json={"text": "更正：发票今天开出", "member_send": True}, headers=admin_headers)
    assert correction.status_code == 201, correction.text
    listed = client.get("/api/v1/inbox/conversations", params={"channel": "wecom_archive", "view": "all"},
                        headers=admin_headers)
    assert conversation.id in [c["id"] for c in listed.json()["items"]]
    console = Console(client).login(admin)
    page = console.get(f"/inbox/{conversation.id}")
    assert 'data-testid="read-only-note"' in page.text and 'data-testid="reply-form"' not in page.text
    assert "需成员确认的群发" in page.text
    refused_page = console.post(f"/inbox/{conversation.id}/reply", {"text": "好的"})
    assert refused_page.status_code == 422 and "只读" in refused_page.text
