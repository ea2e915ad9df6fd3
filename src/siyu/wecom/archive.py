"""WeCom chat archive (会话存档): members' own private and group chats, read-only.

Why it is built this way: WeCom pushes no chat text of a member's own chats. With the paid chat
archive, a ``msgaudit_notify`` callback (at most every 15 s while there is something new, W:95039)
says to pull; the pull is ``GetChatData(seq, limit ≤ 1000)`` of the official finance SDK — a C
library, not an HTTP API. Each item carries ``seq``, ``msgid``, ``publickey_ver``,
``encrypt_random_key`` (a random key RSA-encrypted, PKCS#1 v1.5, to the corp's public key of that
version) and ``encrypt_chat_msg``, which the SDK's ``DecryptData`` opens with the random key.

Siyu pulls through an archive *source* (``ArchiveSource``) with two implementations:

- ``SdkSource`` — the official SDK through the PyPI wrapper ``pyweworkfinance`` (the ``archive``
  extra, imported only when the corp configures ``SIYU_WECOM_ARCHIVE_SOURCE=sdk``). It needs
  WeCom's servers and cannot run here; it is kept thin and everything around it is tested.
- ``SimulatorSource`` — the simulator's stand-in for GetChatData, which speaks the same
  ``chatdata`` JSON with the random key RSA-encrypted to the corp's real public key. The
  simulator cannot make data that WeCom's SDK opens, so its ``encrypt_chat_msg`` uses the
  simulator's *own* documented cipher (AES-256-GCM keyed by SHA-256 of the random key); only the
  last step differs, the RSA step is real and done here with ``cryptography``.

The random key is always decrypted here with the corp's private key of the item's
``publickey_ver``; an item for a version Siyu has no key for (or whose key does not fit) is
reported (``ArchiveSkip``, the log) and skipped, and the rest of the page goes on.

Each page — or batch of consecutive pages (``STORE_BATCH_ITEMS``) — is stored in *one* transaction
together with the new ``seq`` (compare-and-set on the old one): a crash pulls the batch again and
the unique ``msgid`` of the stored rows drops the repeat, so the same range pulled twice is stored
once. Private chats (member ↔ customer) go into
the inbox as read-only conversations of channel ``wecom_archive`` (``inbox.service.ingest``, one
call per batch); the member's own message counts as the answer, like an agent's reply. Group
messages (``roomid``) are kept per group (``groups.models.GroupMessage``).

Consent: a customer must agree that chats are archived (``msg_audit_approved`` events and
``msgaudit/check_single_agree``, W:91782). No content of a chat with a customer who has not agreed
is stored — the message is counted as withheld and nothing else is kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.db import among, dialect_insert, utcnow
from siyu.core.settings import get_settings
from siyu.customers.models import Customer, Friendship
from siyu.customers.search import index as search
from siyu.customers.variables import unnamed
from siyu.groups.models import GroupChat, GroupMessage, MemberType
from siyu.inbox import service as inbox_service
from siyu.inbox.models import Channel, Direction, Message, MessageType
from siyu.wecom.models import ArchiveConsent, ArchiveCursor, ArchiveSkip

log = logging.getLogger(__name__)

SOURCE = "wecom_archive"  # Message.source of what the archive brings
CURSOR = "corp"  # the one cursor row: the corp's archive is one seq stream
# ---- the platform's limits (会话内容存档)
# 获取会话内容 GetChatData: "limit … 一次拉取的消息条数，最大值1000条，超过1000条会返回错误" (W:91774)
CHATDATA_LIMIT = 1000
# msgaudit_notify: "产生会话回调事件 … 最快15秒一次" (W:95039); the simulator batches its callbacks so
NOTIFY_INTERVAL_SECONDS = 15
# 获取会话同意情况 check_single_agree: "目前一次请求只支持最多100个查询条目" (W:91782)
AGREE_BATCH = 100
# Siyu's choice: up to this many items (ten GetChatData pages) are stored in one transaction with their seq —
# fewer commits and one update per conversation a batch touches, while a batch stays small in memory.
STORE_BATCH_ITEMS = 10 * CHATDATA_LIMIT
# agree_status values of check_single_agree (W:91782): Default_Agree counts as agreed
AGREED_STATUSES = frozenset({"Agree", "Default_Agree", "approved"})
# External contacts' ids begin with wo/wm; robots with wb (会话内容存档 › 消息格式, W:91774)
EXTERNAL_PREFIXES = ("wo", "wm", "wb")
SIMULATOR_CIPHER = "siyu-simulator-aes256gcm-v1"  # the simulator's own body cipher (not WeCom's)

# The archive's message types (W:91774 消息格式) → the inbox's; the rest are kept as "unknown" with their type.
TYPES = {"text": MessageType.text.value, "markdown": MessageType.text.value, "image": MessageType.image.value,
         "voice": MessageType.voice.value, "video": MessageType.video.value, "file": MessageType.file.value,
         "link": MessageType.link.value, "weapp": MessageType.miniprogram.value,
         "location": MessageType.location.value, "card": MessageType.business_card.value,
         "emotion": MessageType.sticker.value, "redpacket": MessageType.red_packet.value,
         "external_redpacket": MessageType.red_packet.value, "sphfeed": MessageType.channels.value,
         "revoke": MessageType.system.value, "agree": MessageType.system.value,
         "disagree": MessageType.system.value}


class ArchiveError(Exception):
    """The archive could not be read (the source failed): the pull stops and is tried again later."""


class ArchiveNotConfigured(ArchiveError):
    pass


# ---------------------------------------------------------------- sources


class ArchiveSource(Protocol):
    """GetChatData and DecryptData, as the official SDK offers them."""

    def chat_data(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """The ``chatdata`` items after ``seq`` (at most ``limit``)."""
        ...

    def decrypt(self, random_key: str, encrypt_chat_msg: str) -> dict[str, Any]:
        """One message opened with its (already RSA-decrypted) random key."""
        ...


class SdkSource:
    """The official finance SDK through ``pyweworkfinance`` (the ``archive`` extra). Not testable here: it
    talks to WeCom's servers. ``finance`` may be given (tests hand in a stand-in object)."""

    def __init__(self, corp_id: str, secret: str, *, library: str = "", finance: Any = None) -> None:
        if finance is None:
            try:
                from pyweworkfinance import WeWorkFinance  # type: ignore[import-not-found]
                from pyweworkfinance import logger as sdk_logger
            except ImportError as exc:
                raise ArchiveNotConfigured("pyweworkfinance is not installed: pip install 'siyu[archive]'") from exc
            sdk_logger.setLevel(logging.INFO)  # its DEBUG lines print the Secret
            finance = WeWorkFinance(corp_id, secret, dll_path=library or None)
        self.finance = finance

    def chat_data(self, seq: int, limit: int) -> list[dict[str, Any]]:
        try:
            answer = self.finance.get_chat_data(seq=seq, limit=min(limit, CHATDATA_LIMIT))
        except Exception as exc:  # the wrapper raises its own error type for every SDK return code
            raise ArchiveError(f"GetChatData failed: {exc}") from exc
        return [item if isinstance(item, dict) else dict(vars(item)) for item in answer.chatdata]

    def decrypt(self, random_key: str, encrypt_chat_msg: str) -> dict[str, Any]:
        return dict(self.finance.decrypt_data(random_key, encrypt_chat_msg))


def simulator_decrypt(random_key: str, encrypt_chat_msg: str) -> dict[str, Any]:
    """The simulator's own body cipher (``SIMULATOR_CIPHER``): base64 of a 12-byte nonce and AES-256-GCM
    of the message JSON, keyed with SHA-256 of the random key. WeCom's real cipher only its SDK opens."""
    raw = base64.b64decode(encrypt_chat_msg)
    return dict(json.loads(_body_cipher(random_key).decrypt(raw[:12], raw[12:], None).decode()))


@lru_cache(maxsize=64)
def _body_cipher(random_key: str) -> AESGCM:
    """The body cipher of a random key, made once while its messages follow one another."""
    return AESGCM(hashlib.sha256(random_key.encode()).digest())


class SimulatorSource:
    """The simulator's stand-in for GetChatData (``POST /_simulator/finance/chatdata``), reached next to
    the configured API base with an access token of the corp."""

    def __init__(self, api: Any, *, http: Any = None) -> None:
        import httpx

        self.api = api
        base = str(api.client.API_BASE_URL).rstrip("/")
        self.url = (base[: -len("/cgi-bin")] if base.endswith("/cgi-bin") else base) + "/_simulator/finance/chatdata"
        self.http = http or httpx.Client(timeout=30.0)

    def chat_data(self, seq: int, limit: int) -> list[dict[str, Any]]:
        try:
            answer = self.http.post(self.url, params={"access_token": self.api.client.access_token},
                                    json={"seq": seq, "limit": min(limit, CHATDATA_LIMIT)})
            body = answer.json()
        except Exception as exc:
            raise ArchiveError(f"the simulator's archive could not be read: {exc}") from exc
        if body.get("errcode"):
            raise ArchiveError(f"the simulator's archive answered {body.get('errcode')}: {body.get('errmsg')}")
        return [item for item in body.get("chatdata") or [] if isinstance(item, dict)]

    def decrypt(self, random_key: str, encrypt_chat_msg: str) -> dict[str, Any]:
        return simulator_decrypt(random_key, encrypt_chat_msg)


def configured_source(session: Session) -> ArchiveSource | None:
    """The source the settings name (``SIYU_WECOM_ARCHIVE_SOURCE``), or None when the archive is off."""
    from siyu.wecom import config
    from siyu.wecom.client import WecomNotConfigured, client_for

    settings = get_settings()
    kind = settings.wecom_archive_source.strip().lower()
    if kind == "sdk":
        cfg = config.effective(session)
        return SdkSource(cfg.corp_id, settings.wecom_archive_secret or cfg.secret,
                         library=settings.wecom_archive_sdk_library)
    if kind == "simulator":
        try:
            return SimulatorSource(client_for(session))
        except WecomNotConfigured:
            return None
    return None


# ---------------------------------------------------------------- the corp's private keys


def _load_key(value: str) -> rsa.RSAPrivateKey:
    text = value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()
    key = serialization.load_pem_private_key(text.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


@lru_cache(maxsize=8)
def _keys_from(setting: str) -> dict[int, rsa.RSAPrivateKey]:
    if not setting.strip():
        return {}
    return {int(version): _load_key(str(value)) for version, value in json.loads(setting).items()}


def private_keys() -> dict[int, rsa.RSAPrivateKey]:
    """The corp's RSA private keys by public-key version (``SIYU_WECOM_ARCHIVE_PRIVATE_KEYS``)."""
    return _keys_from(get_settings().wecom_archive_private_keys)


class KeyRing:
    """Opens random keys with the key of their version; the same ciphertext is opened once."""

    def __init__(self, keys: dict[int, rsa.RSAPrivateKey]) -> None:
        self.keys = keys
        self.opened: dict[str, str] = {}

    def random_key(self, version: int, encrypted: str) -> str:
        found = self.opened.get(encrypted)
        if found is not None:
            return found
        key = self.keys.get(version)
        if key is None:
            raise LookupError(f"no private key for publickey_ver {version}")
        opened = key.decrypt(base64.b64decode(encrypted), padding.PKCS1v15()).decode()
        if len(self.opened) > 10_000:
            self.opened.clear()
        self.opened[encrypted] = opened
        return opened


# ---------------------------------------------------------------- consent


def record_consent(session: Session, *, userid: str, external_userid: str, status: str,
                   at: datetime | None = None) -> None:
    """A customer's agreement (or refusal) with a member, the newest fact winning."""
    record_consents(session, [(userid, external_userid, status, at)])


def record_consents(session: Session, facts: Iterable[tuple[str, str, str, datetime | None]]) -> None:
    """Agreements and refusals, set-based: (member, customer, status, when); per pair the newest fact wins."""
    newest: dict[tuple[str, str], tuple[str, datetime]] = {}
    for userid, external_userid, status, at in facts:
        if not userid or not external_userid:
            continue
        pair, when = (userid[:64], external_userid[:64]), at or utcnow()
        if pair not in newest or when >= newest[pair][1]:
            newest[pair] = (status[:32], when)
    if not newest:
        return
    now = utcnow()
    table = cast(Table, ArchiveConsent.__table__)
    session.execute(dialect_insert(session, table).on_conflict_do_nothing(), [
        {"userid": u, "external_userid": e, "agreed": s in AGREED_STATUSES, "status": s, "changed_at": w,
         "checked_at": now} for (u, e), (s, w) in newest.items()])
    stored = session.execute(select(ArchiveConsent.id, ArchiveConsent.userid, ArchiveConsent.external_userid,
                                    ArchiveConsent.status, ArchiveConsent.changed_at).where(
        among(session, ArchiveConsent.external_userid, sorted({e for _u, e in newest}))))
    changes = []
    for row_id, u, e, status, changed_at in stored:
        fact = newest.get((u, e))
        if fact is not None and (fact[0] != status) and (changed_at is None or fact[1] >= changed_at):
            changes.append({"row_id": row_id, "agreed": fact[0] in AGREED_STATUSES, "status": fact[0],
                            "changed_at": fact[1], "checked_at": now})
    if changes:
        session.connection().execute(update(table).where(table.c.id == bindparam("row_id")).values(
            agreed=bindparam("agreed"), status=bindparam("status"), changed_at=bindparam("changed_at"),
            checked_at=bindparam("checked_at")), changes)


def consents(session: Session, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    externals = sorted({e for _u, e in wanted})
    rows = session.execute(select(ArchiveConsent.userid, ArchiveConsent.external_userid, ArchiveConsent.agreed)
                           .where(among(session, ArchiveConsent.external_userid, externals)))
    return {(u, e): bool(a) for u, e, a in rows}


def check_consents(transaction: Transaction, api: Any, pairs: Iterable[tuple[str, str]], *,
                   known: set[tuple[str, str]] | None = None) -> int:
    """Asks ``msgaudit/check_single_agree`` about the pairs Siyu knows nothing of yet; returns how many.
    ``known``: pairs already known to have a consent row (skipped; the ones found here are added)."""
    seen = known if known is not None else set()
    wanted = sorted(set(pairs) - seen)
    if not wanted:
        return 0
    with transaction() as session:
        stored = consents(session, wanted)
    seen.update(stored)
    unknown = [p for p in wanted if p not in stored]
    if not unknown or api is None:
        return 0
    answers: list[dict[str, Any]] = []
    for start in range(0, len(unknown), AGREE_BATCH):
        answers += api.check_single_agree(unknown[start:start + AGREE_BATCH])
    facts = []
    for answer in answers:
        when = str(answer.get("status_change_time") or "")
        facts.append((str(answer.get("userid") or ""),
                      str(answer.get("exteranalopenid") or answer.get("external_userid") or ""),
                      str(answer.get("agree_status") or ""),
                      datetime.fromtimestamp(int(when), tz=UTC) if when.isdigit() and int(when) else None))
    with transaction() as session:
        record_consents(session, facts)
    seen.update((u, e) for u, e, _s, _w in facts if u and e)
    return len(unknown)


# ---------------------------------------------------------------- reading a decrypted message


def is_external(userid: str) -> bool:
    return userid.startswith(EXTERNAL_PREFIXES)


def text_of(message: dict[str, Any]) -> str:
    """What the inbox shows of an archived message (the message itself is kept as the payload)."""
    kind = str(message.get("msgtype") or "")
    body = message.get(kind) if isinstance(message.get(kind), dict) else {}
    assert isinstance(body, dict)
    if kind in ("text", "markdown"):
        return str(body.get("content") or "")
    if kind == "link":
        return str(body.get("title") or body.get("link_url") or "")
    if kind == "weapp":
        return str(body.get("title") or body.get("displayname") or "")
    if kind == "location":
        return " ".join(str(body.get(k) or "") for k in ("title", "address")).strip()
    if kind == "file":
        return str(body.get("filename") or "")
    if kind == "card":
        return str(body.get("corpname") or body.get("userid") or "")
    if kind == "revoke":
        return "撤回了一条消息"
    if kind == "agree":
        return "客户同意了会话存档"
    if kind == "disagree":
        return "客户不同意会话存档"
    return ""


def _at(message: dict[str, Any]) -> datetime:
    try:
        return datetime.fromtimestamp(int(message.get("msgtime") or 0) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return utcnow()


# ---------------------------------------------------------------- storing a page


@dataclass
class Opened:
    seq: int
    message: dict[str, Any]


@dataclass
class PageResult:
    private: int = 0
    group: int = 0
    duplicates: int = 0
    skipped: int = 0  # could not be opened (reported)
    withheld: int = 0  # no consent: nothing stored
    ignored: int = 0  # not a chat of Siyu's accounts, switch notices
    conversations: list[int] = field(default_factory=list)


def open_items(items: list[dict[str, Any]], source: ArchiveSource, ring: KeyRing
               ) -> tuple[list[Opened], list[dict[str, Any]]]:
    """Decrypt a page: the opened messages, and the items that could not be opened (with the reason)."""
    opened: list[Opened] = []
    failed: list[dict[str, Any]] = []
    for item in items:
        seq = int(item.get("seq") or 0)
        version = int(item.get("publickey_ver") or 0)
        try:
            key = ring.random_key(version, str(item.get("encrypt_random_key") or ""))
            message = source.decrypt(key, str(item.get("encrypt_chat_msg") or ""))
        except Exception as exc:  # an unknown version, a key that does not fit, a body that does not open
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, ValueError) and not isinstance(exc, LookupError):
                reason = f"the private key of publickey_ver {version} does not open it ({type(exc).__name__})"
            failed.append({"seq": seq, "msgid": str(item.get("msgid") or "")[:128], "publickey_ver": version,
                           "reason": reason[:500]})
            continue
        opened.append(Opened(seq=seq, message=message))
    return opened, failed


def _accounts(session: Session, userids: Iterable[str]) -> dict[str, int]:
    ids = sorted({u for u in userids if u and not is_external(u)})
    if not ids:
        return {}
    return {u: aid for aid, u in session.execute(select(Account.id, Account.wecom_userid).where(
        among(session, Account.wecom_userid, ids))) if u}


def _customers(session: Session, external_userids: Iterable[str], pairs: dict[str, int]) -> dict[str, int]:
    """Customer ids by external_userid, set-based; customers met first in the archive are created with a
    friendship to the member they chat with."""
    ids = sorted(set(filter(None, external_userids)))
    if not ids:
        return {}
    known = {ext: cid for cid, ext in session.execute(select(Customer.id, Customer.wecom_external_userid).where(
        among(session, Customer.wecom_external_userid, ids))) if ext is not None}
    missing = [e for e in ids if e not in known]
    if missing:
        now = utcnow()
        table = Customer.__table__
        created = session.execute(
            dialect_insert(session, table).on_conflict_do_nothing(index_elements=["wecom_external_userid"])
            .returning(table.c.id, table.c.wecom_external_userid),
            [{"name": unnamed(e), "wecom_external_userid": e, "source": "wecom", "created_at": now}
             for e in missing]).all()
        known.update({str(ext): int(cid) for cid, ext in created})
        search.mark_dirty(session, [int(cid) for cid, _ext in created])
        friends = [{"customer_id": int(cid), "account_id": pairs[str(ext)], "added_at": now}
                   for cid, ext in created if str(ext) in pairs]
        if friends:
            session.execute(dialect_insert(session, Friendship.__table__).on_conflict_do_nothing(), friends)
        if len(known) < len(ids):  # created by another worker meanwhile
            known.update({str(ext): int(cid) for cid, ext in session.execute(
                select(Customer.id, Customer.wecom_external_userid).where(
                    among(session, Customer.wecom_external_userid, [e for e in ids if e not in known])))})
    return known


def store_page(session: Session, opened: list[Opened], *, accounts: dict[str, int] | None = None) -> PageResult:
    """One page (or batch of pages) of opened messages: private chats into the inbox (one ingest), group
    messages per group. ``accounts``: members' account ids already known (userid → id), kept up to date."""
    result = PageResult()
    cache = accounts if accounts is not None else {}
    userids = {str(o.message.get("from") or "") for o in opened} | {
        str(t) for o in opened for t in (o.message.get("tolist") or [])[:1]}
    cache.update(_accounts(session, [u for u in userids if u not in cache]))
    accounts = {u: cache[u] for u in userids if u in cache}
    private: list[tuple[Opened, str, str, bool]] = []  # (item, member, customer, the member wrote it)
    group: list[Opened] = []
    for o in opened:
        m = o.message
        if m.get("action") == "switch" or not m.get("msgid"):
            result.ignored += 1
            continue
        if m.get("roomid"):
            group.append(o)
            continue
        sender = str(m.get("from") or "")
        to = [str(t) for t in m.get("tolist") or []]
        receiver = to[0] if to else ""
        if sender in accounts and is_external(receiver):
            private.append((o, sender, receiver, True))
        elif receiver in accounts and is_external(sender):
            private.append((o, receiver, sender, False))
        else:
            result.ignored += 1  # between members, or a member Siyu has no account for
    # Consent, in the page's order: an agree/disagree item changes it from there on.
    agreed = consents(session, [(member, ext) for _o, member, ext, _mine in private])
    externals_in_groups = {str(o.message.get("from") or "") for o in group if is_external(str(o.message.get("from")))}
    group_agreed = _agreed_with_anyone(session, externals_in_groups)
    keep: list[tuple[Opened, str, str, bool]] = []
    facts: list[tuple[str, str, str, datetime | None]] = []
    for entry in private:
        o, member, ext, _mine = entry
        kind = str(o.message.get("msgtype") or "")
        if kind in ("agree", "disagree"):
            facts.append((member, ext, "Agree" if kind == "agree" else "Disagree", _at(o.message)))
            agreed[(member, ext)] = kind == "agree"
            group_agreed[ext] = group_agreed.get(ext, False) or kind == "agree"
        if agreed.get((member, ext)):
            keep.append(entry)
        else:
            result.withheld += 1
    record_consents(session, facts)
    customers = _customers(session, [ext for _o, _m, ext, _mine in keep],
                           {ext: accounts[member] for _o, member, ext, _mine in keep})
    messages: list[inbox_service.InboundMessage] = []
    recalls: list[str] = []
    for o, member, ext, mine in keep:
        m = o.message
        kind = str(m.get("msgtype") or "")
        if kind == "revoke":
            body = m.get("revoke")
            recalls.append(str(body.get("pre_msgid") or "") if isinstance(body, dict) else "")
        messages.append(inbox_service.InboundMessage(
            source=SOURCE, platform_msgid=str(m["msgid"]), account_id=accounts[member], customer_id=customers[ext],
            sent_at=_at(m), sender=str(m.get("from") or ""), msg_type=TYPES.get(kind, kind or "unknown"),
            text=text_of(m), payload={**m, "seq": o.seq},
            direction=Direction.outbound.value if mine else Direction.inbound.value,
            channel=Channel.wecom_archive.value))
    # Siyu cannot write into a member's own chat: no automatic replies (the sidebar suggests them)
    ingested = inbox_service.ingest(session, messages, auto_reply=False)
    result.private, result.duplicates, result.conversations = ingested.stored, ingested.duplicates, \
        ingested.conversations
    stored_group, dup_group, withheld_group = _store_group(session, group, group_agreed)
    result.group += stored_group
    result.duplicates += dup_group
    result.withheld += withheld_group
    recalls += [str((o.message.get("revoke") or {}).get("pre_msgid") or "") for o in group
                if o.message.get("msgtype") == "revoke" and isinstance(o.message.get("revoke"), dict)]
    _mark_recalled(session, [r for r in recalls if r])
    session.flush()
    return result


def _agreed_with_anyone(session: Session, externals: Iterable[str]) -> dict[str, bool]:
    ids = sorted(set(filter(None, externals)))
    if not ids:
        return {}
    found = {e: False for e in ids}
    for ext, agreed in session.execute(select(ArchiveConsent.external_userid, ArchiveConsent.agreed).where(
            among(session, ArchiveConsent.external_userid, ids))):
        found[ext] = found[ext] or bool(agreed)
    return found


def _store_group(session: Session, group: list[Opened], agreed: dict[str, bool]) -> tuple[int, int, int]:
    """Group messages, linked to the mirrored groups; a customer's message is kept only with their consent."""
    if not group:
        return 0, 0, 0
    chats = {chat_id: gid for gid, chat_id in session.execute(select(GroupChat.id, GroupChat.chat_id).where(
        among(session, GroupChat.chat_id, sorted({str(o.message["roomid"]) for o in group}))))}
    senders = {str(o.message.get("from") or "") for o in group}
    customers = {ext: cid for cid, ext in session.execute(select(Customer.id, Customer.wecom_external_userid).where(
        among(session, Customer.wecom_external_userid, sorted(s for s in senders if is_external(s))))) if ext}
    now = utcnow()
    rows: list[dict[str, Any]] = []
    withheld = 0
    for o in group:
        m = o.message
        sender = str(m.get("from") or "")
        external = is_external(sender)
        if external and not agreed.get(sender):
            withheld += 1
            continue
        kind = str(m.get("msgtype") or "")
        rows.append({"msgid": str(m["msgid"])[:128], "seq": o.seq, "chat_id": str(m["roomid"])[:64],
                     "group_chat_id": chats.get(str(m["roomid"])), "sender": sender[:64],
                     "member_type": MemberType.external.value if external else MemberType.staff.value,
                     "customer_id": customers.get(sender), "action": str(m.get("action") or "send")[:16],
                     "msg_type": kind[:32] or "unknown", "text": inbox_service.clean_text(text_of(m)),
                     "payload": m, "sent_at": _at(m), "received_at": now})
    if not rows:
        return 0, 0, withheld
    table = GroupMessage.__table__
    inserted = session.connection().execute(
        dialect_insert(session, table).on_conflict_do_nothing(index_elements=["msgid"]).returning(table.c.id),
        rows).all()
    return len(inserted), len(rows) - len(inserted), withheld


def _mark_recalled(session: Session, msgids: list[str]) -> None:
    if not msgids:
        return
    at = utcnow().isoformat()
    for message in session.scalars(select(Message).where(Message.source == SOURCE,
                                                         Message.platform_msgid.in_(msgids))):
        message.payload = {**(message.payload or {}), "recalled_at": at}
    for row in session.scalars(select(GroupMessage).where(GroupMessage.msgid.in_(msgids))):
        row.payload = {**(row.payload or {}), "recalled_at": at}


# ---------------------------------------------------------------- the cursor and pulling


Transaction = Callable[[], AbstractContextManager[Session]]


def cursor_row(session: Session) -> ArchiveCursor:
    row = session.get(ArchiveCursor, CURSOR)
    if row is None:
        session.execute(dialect_insert(session, ArchiveCursor.__table__).values(name=CURSOR, seq=0)
                        .on_conflict_do_nothing())
        row = session.get(ArchiveCursor, CURSOR)
        assert row is not None
    return row


def note_notify(session: Session, *, at: datetime | None = None) -> None:
    """A msgaudit_notify callback: something new waits in the archive."""
    row = cursor_row(session)
    row.notified_at = at or utcnow()
    session.flush()


@dataclass
class PullResult:
    pages: int = 0
    private: int = 0
    group: int = 0
    duplicates: int = 0
    skipped: int = 0
    withheld: int = 0
    ignored: int = 0
    raced: int = 0
    consent_checks: int = 0
    seq: int = 0


class _Raced(Exception):
    """Another worker moved the seq since this one read it: its page was stored there."""


def pull(transaction: Transaction, source: ArchiveSource, *, keys: dict[int, rsa.RSAPrivateKey] | None = None,
         api: Any = None, limit: int = CHATDATA_LIMIT, max_pages: int | None = None,
         from_seq: int | None = None, batch_items: int = STORE_BATCH_ITEMS) -> PullResult:
    """Pull the archive page by page after the stored ``seq`` until a page comes back short.

    Source calls and consent checks happen outside any transaction; the pages of a batch (up to
    ``batch_items`` items, several GetChatData calls) are stored with their new seq in one.
    ``from_seq`` pulls from an earlier point again (what was stored is dropped as duplicates)
    without moving the cursor backwards.
    """
    ring = KeyRing(keys if keys is not None else private_keys())
    result = PullResult()
    limit = max(1, min(limit, CHATDATA_LIMIT))
    replay = from_seq
    known = _Known()
    # The next batch is fetched and opened while this one is stored: GetChatData's wait (the SDK's, or the
    # simulator's JSON over HTTP) and the decryption overlap the storing and its commit. One thread makes
    # every source call and opens every item, in order; a batch fetched from a seq that is not the one to
    # pull from when its turn comes (another worker moved the cursor) is dropped and fetched again.
    fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siyu-archive-fetch")
    ahead: tuple[int, int | None, Future[_Fetched]] | None = None  # from seq, page budget, the fetch

    def fetch(seq: int, budget: int | None) -> Future[_Fetched]:
        return fetcher.submit(_fetch, source, ring, seq, limit, batch_items, budget)

    try:
        while max_pages is None or result.pages < max_pages:
            with transaction() as session:
                stored_seq = cursor_row(session).seq
            seq = replay if replay is not None else stored_seq
            budget = None if max_pages is None else max_pages - result.pages
            if ahead is not None and ahead[:2] == (seq, budget):
                fetched = ahead[2].result()
            else:
                if ahead is not None:
                    ahead[2].cancel()
                fetched = fetch(seq, budget).result()
            ahead = None
            pages, last, short = fetched.pages, fetched.last, fetched.short
            if not short and (budget is None or pages < budget):
                after = None if budget is None else budget - pages
                following = max(last, stored_seq) if replay is None else last  # where the next batch starts
                ahead = (following, after, fetch(following, after))
            opened, failed = fetched.opened, fetched.failed
            pairs = _private_pairs_to_check(transaction, opened, known)
            if pairs:
                result.consent_checks += check_consents(transaction, api, pairs, known=known.pairs)
            try:
                with transaction() as session:
                    new_seq = max(last, stored_seq)
                    moved = session.execute(update(ArchiveCursor).where(ArchiveCursor.name == CURSOR,
                                                                        ArchiveCursor.seq == stored_seq)
                                            .values(seq=new_seq, pulled_at=utcnow()),
                                            execution_options={"synchronize_session": False})
                    if getattr(moved, "rowcount", 1) != 1:
                        raise _Raced()
                    page = store_page(session, opened, accounts=known.accounts)
                    _report(session, failed)
                    session.execute(update(ArchiveCursor).where(ArchiveCursor.name == CURSOR).values(
                        stored=ArchiveCursor.stored + page.private + page.group,
                        skipped=ArchiveCursor.skipped + len(failed), withheld=ArchiveCursor.withheld + page.withheld),
                        execution_options={"synchronize_session": False})
            except _Raced:
                result.raced += 1
                continue
            result.pages += pages
            result.private += page.private
            result.group += page.group
            result.duplicates += page.duplicates
            result.skipped += len(failed)
            result.withheld += page.withheld
            result.ignored += page.ignored
            result.seq = new_seq
            if replay is not None:
                replay = last
            if short:
                break
    finally:
        fetcher.shutdown(wait=True, cancel_futures=True)
    return result


@dataclass
class _Fetched:
    opened: list[Opened]
    failed: list[dict[str, Any]]
    pages: int
    last: int
    short: bool


def _fetch(source: ArchiveSource, ring: KeyRing, seq: int, limit: int, batch_items: int, budget: int | None
           ) -> _Fetched:
    """One batch's GetChatData calls, each after the last seq the one before returned, and its items opened."""
    items: list[dict[str, Any]] = []
    pages, last, short = 0, seq, False
    while True:
        page_items = source.chat_data(last, limit)
        pages += 1
        items += page_items
        last = max([int(i.get("seq") or 0) for i in page_items], default=last)
        short = len(page_items) < limit
        if short or len(items) + limit > max(batch_items, limit) or (budget is not None and pages >= budget):
            break
    opened, failed = open_items(items, source, ring)
    return _Fetched(opened, failed, pages, last, short)


@dataclass
class _Known:
    """What one pull has learnt and may keep across its batches: members' accounts (userid → id; a
    userid not found is asked again) and the (member, customer) pairs Siyu has a consent row for
    (rows are only ever added or changed, so a pair once known stays known; whether it is *agreed*
    is read again in each batch's own transaction)."""

    accounts: dict[str, int] = field(default_factory=dict)
    pairs: set[tuple[str, str]] = field(default_factory=set)


def _private_pairs_to_check(transaction: Transaction, opened: list[Opened], known: _Known | None = None
                            ) -> list[tuple[str, str]]:
    """(member, customer) of the page's private chats with Siyu's accounts."""
    sides = [(str(o.message.get("from") or ""), str((o.message.get("tolist") or [""])[0]))
             for o in opened if not o.message.get("roomid") and o.message.get("action") != "switch"]
    if not sides:
        return []
    cache = known.accounts if known is not None else {}
    missing = {u for pair in sides for u in pair if u not in cache and u and not is_external(u)}
    if missing:
        with transaction() as session:
            cache.update(_accounts(session, missing))
    pairs = []
    for sender, receiver in sides:
        if sender in cache and is_external(receiver):
            pairs.append((sender, receiver))
        elif receiver in cache and is_external(sender):
            pairs.append((receiver, sender))
    return pairs


def _report(session: Session, failed: list[dict[str, Any]]) -> None:
    if not failed:
        return
    for item in failed:
        log.warning("chat archive item seq %s (msgid %s) skipped: %s", item["seq"], item["msgid"], item["reason"])
    session.execute(dialect_insert(session, ArchiveSkip.__table__).on_conflict_do_nothing(index_elements=["seq"]),
                    [{**item, "at": utcnow()} for item in failed])


def recent_skips(session: Session, *, limit: int = 50) -> list[ArchiveSkip]:
    return list(session.scalars(select(ArchiveSkip).order_by(ArchiveSkip.id.desc()).limit(limit)))
