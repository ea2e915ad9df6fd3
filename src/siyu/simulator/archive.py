"""会话内容存档 (the chat archive): the virtual corp's members' own private and group chats.

On the platform, a corp that bought the archive pulls its members' chats with the official
finance SDK's ``GetChatData(seq, limit ≤ 1000)`` — a C library that talks to WeCom, not an HTTP
API — and WeCom sends ``msgaudit_notify`` (at most every 15 s while there are new messages,
W:95039) to say there is something to pull. Each ``chatdata`` item carries ``seq``, ``msgid``,
``publickey_ver``, ``encrypt_random_key`` and ``encrypt_chat_msg`` (W:91774).

**The simulator's stand-in.** ``POST /_simulator/finance/chatdata`` answers what GetChatData
returns, in the same JSON. The random key is real: it is RSA-encrypted (PKCS#1 v1.5) to the
corp's public key of the version in force, registered with ``archive_public_key`` as a corp
uploads its key in WeCom's admin console. The message body uses the **simulator's own cipher**
(AES-256-GCM keyed with SHA-256 of the random key, a 12-byte nonce in front, base64) — WeCom's
real body cipher is opened only by its SDK, which the simulator cannot produce data for.

Customers agree per chat (``archive_agree``): the agree message enters the archive, WeCom sends
``change_external_contact``/``msg_audit_approved``, and ``msgaudit/check_single_agree``
(W:91782) answers Agree / Disagree / Default_Agree. The platform archives nothing of a chat
with a customer who has not agreed — the simulator can be told to anyway
(``archive_chat(..., ignore_consent=True)``), to test that Siyu stores nothing then.

``key_reuse``: how many consecutive messages share one random key. The platform uses a key per
message (1, the default); a larger value is the simulator's choice for the benchmark, which
would otherwise measure RSA decryption alone, and says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from siyu.simulator.errors import ApiError

if TYPE_CHECKING:
    from siyu.simulator.callbacks import Sender
    from siyu.simulator.corp import VirtualCorp

CHATDATA_LIMIT = 1000  # W:91774 GetChatData: limit "最大值1000条，超过1000条会返回错误"
NOTIFY_INTERVAL_SECONDS = 15.0  # W:95039 msgaudit_notify: "最快15秒一次"
AGREE_BATCH = 100  # W:91782 check_single_agree: "目前一次请求只支持最多100个查询条目"
INVALID_PARAMETER = 40058
NO_KEY = 301052  # the simulator's code for "no public key registered" (the SDK answers its own 100xx codes)


def encrypt_body(random_key: str, message: dict[str, Any]) -> str:
    """The simulator's own body cipher (see the module's docstring)."""
    nonce = os.urandom(12)
    key = hashlib.sha256(random_key.encode()).digest()
    sealed = AESGCM(key).encrypt(nonce, json.dumps(message, ensure_ascii=False).encode(), None)
    return base64.b64encode(nonce + sealed).decode()


class ArchiveDesk:
    def __init__(self, corp: VirtualCorp) -> None:
        self.corp = corp
        self.lock = threading.RLock()
        self.keys: dict[int, rsa.RSAPublicKey] = {}
        self.version = 0
        self.log: list[dict[str, Any]] = []  # chatdata items; seq = index + 1
        self.consent: dict[tuple[str, str], tuple[str, int]] = {}  # (userid, external) → (status, time)
        self.key_reuse = 1
        self._key: tuple[str, str, int] | None = None  # (random key, its RSA ciphertext, uses left)
        self.listeners: list[Callable[[], Any]] = []  # "new messages" (the notifier)
        self.consent_listeners: list[Callable[[str, str, int], Any]] = []  # msg_audit_approved
        self._n = 0

    # ---- keys

    def public_key(self, version: int, pem: str) -> dict[str, Any]:
        """The corp uploads a public key (WeCom's admin console): it is used from now on under ``version``."""
        key = serialization.load_pem_public_key(pem.encode())
        if not isinstance(key, rsa.RSAPublicKey) or int(version) < 1:
            raise ApiError(INVALID_PARAMETER, "an RSA public key and a version ≥ 1 are needed")
        with self.lock:
            self.keys[int(version)] = key
            self.version = int(version)
            self._key = None
        return {"publickey_ver": self.version}

    def _random_key(self) -> tuple[str, str]:
        if self._key is None or self._key[2] <= 0:
            plain = base64.b64encode(os.urandom(24)).decode()[:32]
            sealed = base64.b64encode(self.keys[self.version].encrypt(plain.encode(), padding.PKCS1v15())).decode()
            self._key = (plain, sealed, max(1, self.key_reuse))
        plain, sealed, left = self._key
        self._key = (plain, sealed, left - 1)
        return plain, sealed

    # ---- the archive's log

    def _msgid(self) -> str:
        self._n += 1
        return f"{self.corp._id('', 20)}_{self._n}_external"

    def append(self, message: dict[str, Any], *, notify: bool = True) -> int:
        with self.lock:
            if not self.version:
                raise ApiError(NO_KEY, "no archive public key registered (archive_public_key)")
            plain, sealed = self._random_key()
            seq = len(self.log) + 1
            self.log.append({"seq": seq, "msgid": message["msgid"], "publickey_ver": self.version,
                             "encrypt_random_key": sealed, "encrypt_chat_msg": encrypt_body(plain, message)})
        if notify:
            for listener in list(self.listeners):
                listener()
        return seq

    def _message(self, sender: str, to: list[str], *, roomid: str = "", msgtype: str = "text",
                 body: dict[str, Any] | None = None, at_ms: int | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"msgid": self._msgid(), "action": "send", "from": sender, "tolist": to,
                                   "roomid": roomid, "msgtime": at_ms or int(self.corp.clock() * 1000),
                                   "msgtype": msgtype}
        message[msgtype] = body if body is not None else {}
        return message

    def agreed(self, userid: str, external_userid: str) -> bool:
        return self.consent.get((userid, external_userid), ("", 0))[0] in ("Agree", "Default_Agree")

    # ---- driver operations (POST /_simulator/archive_…)

    def chat(self, userid: str, external_userid: str, text: str = "", from_member: bool = False,
             msgtype: str = "text", body: dict[str, Any] | None = None, ignore_consent: bool = False,
             notify: bool = True) -> dict[str, Any]:
        """One private message between a member and a customer (either side)."""
        if not ignore_consent and not self.agreed(userid, external_userid):
            return {"archived": False, "reason": "the customer has not agreed to archiving"}
        sender, to = (userid, [external_userid]) if from_member else (external_userid, [userid])
        message = self._message(sender, to, msgtype=msgtype,
                                body=body if body is not None else ({"content": text} if msgtype == "text" else {}))
        return {"archived": True, "seq": self.append(message, notify=notify), "msgid": message["msgid"]}

    def group_message(self, chat_id: str, sender: str, text: str = "", notify: bool = True) -> dict[str, Any]:
        chat = next((g for g in self.corp.state.group_chats if g.chat_id == chat_id), None)
        members = [m.userid for m in chat.members] if chat is not None else []
        message = self._message(sender, [m for m in members if m != sender] or [sender], roomid=chat_id,
                                body={"content": text})
        return {"seq": self.append(message, notify=notify), "msgid": message["msgid"]}

    def group_post(self, chat_id: str, sender: str, msgtype: str = "text", body: dict[str, Any] | None = None,
                   at_ms: int | None = None, notify: bool = True) -> dict[str, Any]:
        """A group message of any archive type (W:91774 消息格式): ``link`` {title, description, link_url},
        ``weapp`` {title, displayname}, ``card`` {corpname, userid}, ``emotion`` {type, width, height},
        ``voice`` {voice_size, play_length}, ``redpacket`` {type, wish, totalcnt, totalamount (分)}."""
        chat = next((g for g in self.corp.state.group_chats if g.chat_id == chat_id), None)
        members = [m.userid for m in chat.members] if chat is not None else []
        message = self._message(sender, [m for m in members if m != sender] or [sender], roomid=chat_id,
                                msgtype=msgtype, body=dict(body or {}), at_ms=at_ms)
        return {"seq": self.append(message, notify=notify), "msgid": message["msgid"]}

    def agree(self, userid: str, external_userid: str, agree: bool = True) -> dict[str, Any]:
        """The customer agrees (or refuses) in the chat: the archive carries it, WeCom calls back."""
        now = int(self.corp.clock())
        status = "Agree" if agree else "Disagree"
        with self.lock:
            self.consent[(userid, external_userid)] = (status, now)
        kind = "agree" if agree else "disagree"
        message = self._message(external_userid, [userid], msgtype=kind,
                                body={"userid": external_userid, f"{kind}_time": now * 1000})
        seq = self.append(message) if self.version else 0
        if agree:
            for listener in list(self.consent_listeners):
                listener(userid, external_userid, now)
        return {"status": status, "seq": seq}

    def scenario(self, count: int = 1000, group_share: float = 0.3, agree_share: float = 0.9,
                 notify: bool = True) -> dict[str, Any]:
        """``count`` archived messages between the corp's members and their contacts (private, most of them
        agreed; a few customers never agree and their chats are not archived) and in its groups."""
        rng = self.corp.rng
        pairs = [(f.userid, c.external_userid) for c in self.corp.state.contacts for f in c.follows
                 if f.deleted_at is None]
        groups = [g for g in self.corp.state.group_chats if not g.dismissed and g.members]
        if not pairs:
            raise ApiError(INVALID_PARAMETER, "the corp has no member with a customer")
        for userid, external in pairs:
            if (userid, external) not in self.consent:
                self.agree(userid, external, agree=rng.random() < agree_share)
        private = group = withheld = 0
        start_ms = int(self.corp.clock() * 1000)
        for n in range(int(count)):
            at = start_ms + n
            if groups and rng.random() < group_share:
                chat = rng.choice(groups)
                sender = rng.choice(chat.members).userid
                message = self._message(sender, [m.userid for m in chat.members if m.userid != sender],
                                        roomid=chat.chat_id, body={"content": f"群消息 {n}"}, at_ms=at)
                self.append(message, notify=False)
                group += 1
                continue
            userid, external = rng.choice(pairs)
            if not self.agreed(userid, external):
                withheld += 1
                continue
            mine = rng.random() < 0.4
            sender, to = (userid, [external]) if mine else (external, [userid])
            text = "好的，我帮您看一下" if mine else f"请问还有优惠吗？({n})"
            self.append(self._message(sender, to, body={"content": text}, at_ms=at), notify=False)
            private += 1
        if notify and (private or group):
            for listener in list(self.listeners):
                listener()
        return {"private": private, "group": group, "not_archived": withheld, "last_seq": len(self.log)}

    def overview(self) -> dict[str, Any]:
        return {"messages": len(self.log), "publickey_ver": self.version, "versions": sorted(self.keys),
                "consents": len(self.consent), "key_reuse": self.key_reuse}

    def set_key_reuse(self, messages: int = 1) -> dict[str, Any]:
        self.key_reuse = max(1, int(messages))
        self._key = None
        return {"key_reuse": self.key_reuse}

    # ---- the platform's side

    def chatdata(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """GetChatData: the items after ``seq``, at most ``limit`` (≤ 1000)."""
        if not 1 <= int(limit) <= CHATDATA_LIMIT:
            raise ApiError(INVALID_PARAMETER, "limit must be 1 to 1000")
        seq = max(0, int(seq))
        with self.lock:
            return self.log[seq:seq + int(limit)]

    def api_check_single_agree(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:91782 获取会话同意情况（单聊）."""
        info = body.get("info")
        if not isinstance(info, list) or not info or len(info) > AGREE_BATCH:
            raise ApiError(INVALID_PARAMETER, "info must list 1 to 100 {userid, exteranalopenid}")
        answers = []
        for item in info:
            if not isinstance(item, dict):
                raise ApiError(INVALID_PARAMETER, "info items are objects")
            userid, external = str(item.get("userid") or ""), str(item.get("exteranalopenid") or "")
            status, at = self.consent.get((userid, external), ("Disagree", 0))
            answers.append({"userid": userid, "exteranalopenid": external, "agree_status": status,
                            "status_change_time": at})
        return {"agreeinfo": answers}


class ArchiveNotifier:
    """Sends msgaudit_notify as the platform does: at most once per ``interval`` seconds while there are new
    messages (W:95039); messages that arrive meanwhile are announced by the next one."""

    def __init__(self, send: Callable[[], Any], *, interval: float = NOTIFY_INTERVAL_SECONDS,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.send = send
        self.interval = interval
        self.clock = clock or time.monotonic
        self.lock = threading.Lock()
        self.last = -1e18
        self.timer: threading.Timer | None = None

    def notify(self) -> None:
        with self.lock:
            if self.timer is not None:
                return  # one is scheduled: it announces these too
            wait = self.last + self.interval - self.clock()
            if wait > 0:
                self.timer = threading.Timer(wait, self._fire)
                self.timer.daemon = True
                self.timer.start()
                return
            self.last = self.clock()
        self.send()

    def _fire(self) -> None:
        with self.lock:
            self.timer = None
            self.last = self.clock()
        self.send()

    def cancel(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def wait(self, timeout: float | None = None) -> None:
        """Until the callback scheduled for the newest messages (if any) has gone out."""
        with self.lock:
            timer = self.timer
        if timer is not None:
            timer.join(timeout)


def announce(corp: VirtualCorp, sender: Sender, *, interval: float = NOTIFY_INTERVAL_SECONDS) -> ArchiveNotifier:
    """From now on the corp's archive announces itself through ``sender`` as the platform does: msgaudit_notify
    (batched, W:95039) for new messages, change_external_contact/msg_audit_approved when a customer agrees."""
    from siyu.simulator.callbacks import msg_audit_approved, msgaudit_notify

    corp_id = sender.encrypter.corp_id
    notifier = ArchiveNotifier(lambda: sender.deliver(msgaudit_notify(corp_id, create_time=int(corp.clock()))),
                               interval=interval)
    corp.archive.listeners.append(notifier.notify)
    corp.archive.consent_listeners.append(lambda userid, external, at: sender.deliver(msg_audit_approved(
        corp_id, userid=userid, external_userid=external, create_time=at)))
    return notifier
