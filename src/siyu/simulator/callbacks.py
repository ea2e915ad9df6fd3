"""Callbacks as WeCom sends them: the XML event, its encrypted envelope, and delivery with retries.

The XML follows WeCom's documented callback formats (``ToUserName`` is the corp id,
``FromUserName`` is ``sys`` for events, ``CreateTime`` in seconds): customer-contact,
customer-group and corp-tag changes (W:92130 客户联系 › 变更回调, W:92130 客户群和
标签变更) and 微信客服's ``kf_msg_or_event`` (W:94670), which only says that messages wait to
be pulled. WeCom never pushes a customer's chat message itself to a callback URL. Encryption
is wechatpy's WeCom crypto (W:90968 加解密方案说明) — the same library Siyu decrypts with,
but used here only on the sending side — and the query carries ``msg_signature``,
``timestamp`` and ``nonce`` exactly as the platform does (W:90930 回调配置). W:N is the page
developer.work.weixin.qq.com/document/path/N.

Delivery retries like the platform: an answer other than ``success`` within 5 seconds
(an error status, another body, a timeout, a refused connection) is sent again, up to 3
times. A resend carries the same event XML in a fresh envelope by default (a new nonce and
timestamp: Siyu refuses a nonce it has seen, as a replay); ``same_envelope`` resends the
identical request instead. Sending runs on threads with one blocking HTTP client each, which
measured about three times faster than httpx's asyncio client for this small-request flood.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from defusedxml import ElementTree
from wechatpy.enterprise.crypto import WeChatCrypto

ACK = "success"


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def xml_document(fields: list[tuple[str, Any]]) -> str:
    """``<xml>`` with one element per field: strings as CDATA, integers bare, lists as ``<Item>``s."""
    parts = []
    for name, value in fields:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            parts.append(f"<{name}>{value}</{name}>")
        elif isinstance(value, list):
            parts.append(f"<{name}>" + "".join(f"<Item>{_cdata(str(v))}</Item>" for v in value) + f"</{name}>")
        else:
            parts.append(f"<{name}>{_cdata(str(value))}</{name}>")
    return "<xml>" + "".join(parts) + "</xml>"


def _event(corp_id: str, create_time: int, event: str) -> list[tuple[str, Any]]:
    return [("ToUserName", corp_id), ("FromUserName", "sys"), ("CreateTime", create_time), ("MsgType", "event"),
            ("Event", event)]


def contact_added(corp_id: str, *, userid: str, external_userid: str, create_time: int, state: str = "",
                  welcome_code: str = "") -> str:
    """W:92130 添加企业客户事件 (``add_external_contact`` with ``State`` and ``WelcomeCode``)."""
    fields = [*_event(corp_id, create_time, "change_external_contact"), ("ChangeType", "add_external_contact"),
              ("UserID", userid), ("ExternalUserID", external_userid)]
    if state:
        fields.append(("State", state))
    if welcome_code:
        fields.append(("WelcomeCode", welcome_code))
    return xml_document(fields)


def contact_changed(corp_id: str, change: str, *, userid: str, external_userid: str, create_time: int) -> str:
    """W:92130 ``del_external_contact`` (the member removed the customer), ``del_follow_user`` (the customer
    removed the member) or ``edit_external_contact``."""
    return xml_document([*_event(corp_id, create_time, "change_external_contact"), ("ChangeType", change),
                         ("UserID", userid), ("ExternalUserID", external_userid)])


def chat_created(corp_id: str, *, chat_id: str, create_time: int) -> str:
    """W:92130 客户群创建事件 (``change_external_chat`` / ``create``)."""
    return xml_document([*_event(corp_id, create_time, "change_external_chat"), ("ChatId", chat_id),
                         ("ChangeType", "create")])


def chat_members_changed(corp_id: str, *, chat_id: str, create_time: int, joined: bool, members: list[str],
                         scene: int, last_version: str, member_version: str) -> str:
    """W:92130 客户群变更事件: ``update`` with ``add_member`` (JoinScene 1 invited, 2 link, 3 QR code) or ``del_member``
    (QuitScene 0 left, 1 removed by the owner or an admin)."""
    return xml_document([
        *_event(corp_id, create_time, "change_external_chat"), ("ChatId", chat_id), ("ChangeType", "update"),
        ("UpdateDetail", "add_member" if joined else "del_member"), ("JoinScene", scene if joined else 0),
        ("QuitScene", 0 if joined else scene), ("MemChangeCnt", len(members)), ("MemChangeList", members),
        ("LastMemVer", last_version), ("CurMemVer", member_version)])


def chat_dismissed(corp_id: str, *, chat_id: str, create_time: int) -> str:
    """W:92130 客户群解散事件 (``change_external_chat`` / ``dismiss``)."""
    return xml_document([*_event(corp_id, create_time, "change_external_chat"), ("ChatId", chat_id),
                         ("ChangeType", "dismiss")])


def tag_changed(corp_id: str, *, tag_id: str, tag_type: str, change: str, create_time: int) -> str:
    """W:92130 企业客户标签变更事件 ``change_external_tag``: TagType ``tag`` or ``tag_group``;
    ChangeType create/update/delete/shuffle."""
    return xml_document([*_event(corp_id, create_time, "change_external_tag"), ("Id", tag_id),
                         ("TagType", tag_type), ("ChangeType", change)])


def kf_msg_or_event(corp_id: str, *, token: str, open_kfid: str, create_time: int) -> str:
    """W:94670 接收消息和事件: something waits in the 客服 account ``open_kfid``; pull it with
    ``kf/sync_msg`` and ``Token`` (valid 10 minutes). No content, no FromUserName."""
    return xml_document([("ToUserName", corp_id), ("CreateTime", create_time), ("MsgType", "event"),
                         ("Event", "kf_msg_or_event"), ("Token", token), ("OpenKfId", open_kfid)])


def msgaudit_notify(corp_id: str, *, create_time: int, agent_id: int = 0) -> str:
    """W:95039 产生会话回调事件: the chat archive has new messages to pull."""
    return xml_document([*_event(corp_id, create_time, "msgaudit_notify"), ("AgentID", agent_id)])


def msg_audit_approved(corp_id: str, *, userid: str, external_userid: str, create_time: int) -> str:
    """客户同意进行聊天内容存档事件: ``change_external_contact`` with ``ChangeType`` msg_audit_approved."""
    return contact_changed(corp_id, "msg_audit_approved", userid=userid, external_userid=external_userid,
                           create_time=create_time)


@dataclass(frozen=True)
class Envelope:
    params: dict[str, str]
    body: str


class Encrypter:
    """Wraps an event XML the way WeCom does, with wechatpy's WeCom crypto."""

    def __init__(self, *, corp_id: str, token: str, aes_key: str, agent_id: str = "") -> None:
        if not corp_id or not token or len(aes_key) != 43:
            raise ValueError("corp id, token and a 43-character EncodingAESKey are needed to send callbacks "
                             "(SIYU_WECOM_CORP_ID, SIYU_WECOM_TOKEN, SIYU_WECOM_AES_KEY)")
        self.corp_id = corp_id
        self.agent_id = agent_id
        self.crypto = WeChatCrypto(token, aes_key, corp_id)

    def envelope(self, xml: str) -> Envelope:
        nonce = str(secrets.randbits(62))  # numeric like WeCom's; wide enough never to repeat in a flood
        timestamp = str(int(time.time()))
        packed = ElementTree.fromstring(self.crypto.encrypt_message(xml, nonce, timestamp))
        encrypted = packed.findtext("Encrypt") or ""
        signature = packed.findtext("MsgSignature") or ""
        agent = f"<AgentID>{_cdata(self.agent_id)}</AgentID>" if self.agent_id else ""
        body = (f"<xml><ToUserName>{_cdata(self.corp_id)}</ToUserName>{agent}"
                f"<Encrypt>{_cdata(encrypted)}</Encrypt></xml>")
        return Envelope(params={"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}, body=body)


@dataclass
class Stats:
    sent: int = 0  # events originated (each counted once, however often delivered)
    deliveries: int = 0  # HTTP requests made
    acknowledged: int = 0  # events answered `success`
    retried: int = 0  # resends after an answer other than `success`
    duplicates: int = 0  # deliberate re-deliveries of events already acknowledged
    failed: int = 0  # events never acknowledged after every retry
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.acknowledged / self.elapsed


ClientFactory = Callable[[], httpx.Client]


class Clients:
    """One HTTP client per sending thread (httpx's pool is fastest unshared), all closed at the end."""

    def __init__(self, factory: ClientFactory) -> None:
        self.factory = factory
        self.local = threading.local()
        self.made: list[httpx.Client] = []
        self.lock = threading.Lock()

    def get(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.factory()
            with self.lock:
                self.made.append(client)
        return client

    def close(self) -> None:
        with self.lock:
            for client in self.made:
                client.close()
            self.made.clear()


class Sender:
    """Posts callbacks to Siyu's ``/wecom/callback`` and retries like the platform (thread-safe)."""

    def __init__(self, url: str, encrypter: Encrypter, clients: Clients, stats: Stats, *,
                 timeout: float = 5.0, retries: int = 3, retry_delay: float = 0.2, same_envelope: bool = False) -> None:
        self.url = url
        self.encrypter = encrypter
        self.clients = clients
        self.stats = stats
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.same_envelope = same_envelope

    def deliver(self, xml: str, *, duplicate: bool = False) -> bool:
        self.stats.count("duplicates" if duplicate else "sent")
        envelope = self.encrypter.envelope(xml)
        problem = ""
        for attempt in range(1 + self.retries):
            if attempt:
                self.stats.count("retried")
                time.sleep(self.retry_delay)
                if not self.same_envelope:
                    envelope = self.encrypter.envelope(xml)
            self.stats.count("deliveries")
            try:
                answer = self.clients.get().post(self.url, params=envelope.params, content=envelope.body.encode(),
                                                 headers={"Content-Type": "text/xml"}, timeout=self.timeout)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout:g} s"
                continue
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"[:120]
                continue
            if answer.status_code == 200 and answer.text.strip() == ACK:
                if not duplicate:
                    self.stats.count("acknowledged")
                return True
            problem = f"HTTP {answer.status_code}: {answer.text.strip()[:80]}"
        with self.stats.lock:
            self.stats.errors[problem] += 1
            if not duplicate:
                self.stats.failed += 1
        return False


def callback_url(target: str) -> str:
    """Siyu's address or its callback URL → the callback URL."""
    target = target.rstrip("/")
    return target if target.endswith("/wecom/callback") else target + "/wecom/callback"


class KfNotifier:
    """Sends ``kf_msg_or_event`` as the platform batches it: one callback announces everything waiting
    in an account; while one is on its way, new messages only mark the account, and a single further
    callback (with a fresh token) follows once the first is answered. So a flood of messages is
    announced by a few callbacks, and nothing is left unannounced."""

    def __init__(self, sender: Sender, issue: Callable[[str], dict[str, Any]], *, duplicate_share: float = 0.0,
                 rng: Any = None) -> None:
        self.sender = sender
        self.issue = issue  # open_kfid → {"token", "create_time", "open_kfid"} (KfDesk.callback)
        self.duplicate_share = duplicate_share
        self.rng = rng
        self.lock = threading.Lock()
        self.busy: set[str] = set()
        self.dirty: set[str] = set()

    def notify(self, open_kfid: str) -> bool:
        """Announces ``open_kfid`` (returns at once when a callback for it is already on its way)."""
        with self.lock:
            if open_kfid in self.busy:
                self.dirty.add(open_kfid)
                return False
            self.busy.add(open_kfid)
        try:
            while True:
                issued = self.issue(open_kfid)
                xml = kf_msg_or_event(self.sender.encrypter.corp_id, token=issued["token"],
                                      open_kfid=issued["open_kfid"], create_time=issued["create_time"])
                acknowledged = self.sender.deliver(xml)
                if acknowledged and self.duplicate_share and self.rng is not None \
                        and self.rng.random() < self.duplicate_share:
                    self.sender.deliver(xml, duplicate=True)  # the platform's retry of a delivered callback
                with self.lock:
                    if open_kfid not in self.dirty:
                        self.busy.discard(open_kfid)
                        return True
                    self.dirty.discard(open_kfid)
        except BaseException:
            with self.lock:
                self.busy.discard(open_kfid)
                self.dirty.discard(open_kfid)
            raise

    def idle(self) -> bool:
        with self.lock:
            return not self.busy
