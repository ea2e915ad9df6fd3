"""Receiving WeCom callbacks: verify, decrypt, store once, acknowledge — processing comes later.

Why it is shaped this way: WeCom waits 5 seconds for ``success`` and retries otherwise, so
the request only authenticates the callback (signature over token, timestamp, nonce and
ciphertext; AES decryption with the corp id check, both through wechatpy's WeCom crypto),
refuses replays (old timestamps, a nonce seen before with different content), and stores the decrypted event in the
same transaction that makes it idempotent (a unique key per event). The event is processed
by a job on the inbound queue after the commit; a minutely sweep re-enqueues anything
stored but never picked up, so nothing acknowledged can be lost. XML is parsed with
defusedxml, which refuses DOCTYPEs and entities before they can expand.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any
from xml.parsers.expat import ExpatError

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException

from siyu.core.db import dialect_insert, utcnow
from siyu.wecom.config import WecomConfig, effective
from siyu.wecom.models import CallbackNonce, WecomEvent

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_CLOCK_SKEW_SECONDS = 300
NONCE_MEMORY = timedelta(minutes=10)


class CallbackRefused(Exception):
    """A callback Siyu will not accept; ``status`` is the HTTP answer, ``reason`` is logged."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Query:
    msg_signature: str
    timestamp: str
    nonce: str
    echostr: str = ""


@dataclass(frozen=True)
class _Keys:
    key: bytes  # the EncodingAESKey decoded
    crypto: PrpCrypto  # wechatpy's WeCom AES crypto


def _crypto(config: WecomConfig) -> _Keys:
    if not config.can_receive:
        raise CallbackRefused(503, "WeCom is not configured (corp id, token and EncodingAESKey)")
    return _keys(config.aes_key)


@lru_cache(maxsize=8)
def _keys(aes_key: str) -> _Keys:
    """Made once per key, not per callback: they arrive hundreds a second."""
    key = WeChatCrypto("", aes_key, "").key
    return _Keys(key=key, crypto=PrpCrypto(key))


def _fresh(query: Query) -> None:
    try:
        stamp = int(query.timestamp)
    except ValueError as exc:
        raise CallbackRefused(400, "timestamp is not a number") from exc
    if abs(time.time() - stamp) > MAX_CLOCK_SKEW_SECONDS:
        raise CallbackRefused(400, "timestamp more than 5 minutes away: a replay or a wrong clock")
    if not query.nonce or len(query.nonce) > 64:
        raise CallbackRefused(400, "missing or over-long nonce")


def _check_padding(key: bytes, encrypted: str) -> None:
    """wechatpy 1.8.18 strips the PKCS#7 padding without checking it; a bad one is refused here."""
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CallbackRefused(400, "ciphertext is not base64") from exc
    if not raw or len(raw) % 16:
        raise CallbackRefused(400, "truncated ciphertext")
    last_block = Cipher(algorithms.AES(key), modes.CBC(raw[-32:-16] if len(raw) >= 32 else key[:16])).decryptor()
    tail = last_block.update(raw[-16:]) + last_block.finalize()
    pad = tail[-1]
    if not 1 <= pad <= 32 or (pad <= 16 and tail[-pad:] != bytes([pad]) * pad):
        raise CallbackRefused(400, "wrong AES padding")


def _signed(config: WecomConfig, query: Query, encrypted: str) -> None:
    """The signature first, so nothing about an unauthenticated ciphertext is revealed (no padding oracle)."""
    joined = "".join(sorted([config.token, query.timestamp, query.nonce, encrypted])).encode()
    expected = hashlib.sha1(joined).hexdigest()  # noqa: S324 - WeCom's signature is SHA-1
    if not hmac.compare_digest(expected, query.msg_signature):
        raise CallbackRefused(403, "wrong signature")


def _decrypt(config: WecomConfig, query: Query, encrypted: str) -> str:
    """An event's XML (or the URL check's echostr): signature, padding, then wechatpy's WeCom decryption."""
    keys = _crypto(config)
    _signed(config, query, encrypted)
    _check_padding(keys.key, encrypted)
    try:
        plain = keys.crypto.decrypt(encrypted, config.corp_id)
    except InvalidCorpIdException as exc:
        raise CallbackRefused(403, "the message is for another corp (receive id)") from exc
    except Exception as exc:
        raise CallbackRefused(400, f"cannot decrypt: {type(exc).__name__}") from exc
    return plain if isinstance(plain, str) else plain.decode("utf-8", errors="replace")


class _Fields:
    """Collects an event's fields from the parse: each child of the root by tag, with its text.

    A nested child (e.g. a list of ``Item``) gets the texts of its descendants, in document order,
    joined with commas. Text after an element's first child is ignored, as ElementTree's ``text``.
    """

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self._open: list[list[Any]] = []  # per open element: tag, its text parts, has a child, slot
        self._nested: list[str] = []

    def start(self, tag: str, _attributes: Any) -> None:
        if self._open:
            self._open[-1][2] = True
        slot = -1
        if len(self._open) == 1:
            self._nested = []
        elif len(self._open) > 1:
            slot = len(self._nested)
            self._nested.append("")
        self._open.append([tag, [], False, slot])

    def data(self, text: str) -> None:
        if self._open and not self._open[-1][2]:
            self._open[-1][1].append(text)

    def end(self, _tag: str) -> None:
        tag, parts, has_child, slot = self._open.pop()
        text = "".join(parts).strip()
        if len(self._open) == 1:
            self.fields[tag] = ",".join(self._nested) if has_child else text
        elif slot >= 0:
            self._nested[slot] = text


def _parse(xml: str) -> dict[str, str]:
    """defusedxml's parser (no DOCTYPE, entities or external references), collecting flat fields.

    Callbacks need only the root's children, so a small collector stands in for ElementTree's
    tree builder: the parse is three times cheaper, and the callback's hottest step.
    """
    parser = ElementTree.DefusedXMLParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    collected = _Fields()
    expat = parser.parser
    expat.StartElementHandler, expat.EndElementHandler = collected.start, collected.end
    expat.CharacterDataHandler = collected.data
    expat.DefaultHandlerExpand = None  # expat itself refuses undefined entities
    expat.buffer_text = True
    try:
        expat.Parse(xml, True)
    except DefusedXmlException as exc:
        raise CallbackRefused(400, "XML with a DOCTYPE or entities is refused") from exc
    except ExpatError as exc:
        raise CallbackRefused(400, "malformed XML") from exc
    return collected.fields


def verify_url(session: Session, query: Query) -> str:
    """The URL check WeCom makes when the callback is configured: return the decrypted echostr."""
    config = effective(session)
    _crypto(config)
    _fresh(query)
    return _decrypt(config, query, query.echostr)


def event_type(fields: dict[str, str]) -> str:
    if fields.get("MsgType") == "event":
        event = fields.get("Event", "")
        change = fields.get("ChangeType", "")
        return f"{event}/{change}" if change else event
    return f"message/{fields.get('MsgType', 'unknown')}"


def dedup_key(fields: dict[str, str]) -> str:
    if fields.get("MsgId"):
        return f"msg:{fields['MsgId']}"
    keys = [fields.get(k, "") for k in ("UserID", "ExternalUserID", "ChatId", "TagType", "Id", "FailReason",
                                         "UpdateDetail", "JoinScene", "QuitScene")]
    if fields.get("Token"):  # kf_msg_or_event: each callback has its own token
        keys += [fields.get("OpenKfId", ""), fields["Token"]]
    return "|".join([event_type(fields), *keys, fields.get("CreateTime", "")])[:255]


@dataclass(frozen=True)
class Authenticated:
    """A callback whose signature, corp id, freshness and XML checked out; not stored yet."""

    nonce: str
    xml: str
    fields: dict[str, str]


def authenticate(config: WecomConfig, *, query: Query, body: bytes) -> Authenticated:
    """Everything that needs no database: size, configuration, freshness, signature, decryption, XML."""
    if len(body) > MAX_BODY_BYTES:
        raise CallbackRefused(413, "body larger than 2 MB")
    _crypto(config)
    _fresh(query)
    envelope = _parse(body.decode("utf-8", errors="replace"))
    encrypted = envelope.get("Encrypt", "")
    if not encrypted:
        raise CallbackRefused(400, "no Encrypt element")
    xml = _decrypt(config, query, encrypted)
    fields = _parse(xml)
    if not fields.get("MsgType"):
        # Every WeCom message and event names its MsgType; an empty <xml></xml> would only be stored to fail.
        raise CallbackRefused(400, "no MsgType: not a WeCom message or event")
    return Authenticated(nonce=query.nonce, xml=xml, fields=fields)


def store_many(session: Session, callbacks: list[Authenticated]) -> list[int | CallbackRefused | None]:
    """Store authenticated callbacks with one statement for their nonces and one for their events.

    Each gets its own answer: the stored event's id, None when it repeats an event already
    stored (the platform's retry: acknowledged, not stored again), or a refusal for a replayed
    nonce — seen before, or twice in this batch — in which case nothing of it is written.

    A nonce seen before is a replay only when its content differs: WeCom resends the very
    same request (same nonce, timestamp and ciphertext) when our ``success`` was lost on
    the way, and that identical retry of a stored event is acknowledged, not refused.
    """
    if not callbacks:
        return []
    now = utcnow()
    nonce_table, event_table = CallbackNonce.__table__, WecomEvent.__table__
    first_of_nonce: dict[str, int] = {}
    for index, callback in enumerate(callbacks):
        first_of_nonce.setdefault(callback.nonce, index)
    # executemany with RETURNING (SQLAlchemy's "insertmanyvalues"): one cached statement, sent in
    # multi-row chunks, instead of a VALUES list compiled afresh for every batch size.
    fresh = set(session.scalars(
        dialect_insert(session, nonce_table).on_conflict_do_nothing().returning(nonce_table.c.nonce),
        [{"nonce": nonce, "seen_at": now} for nonce in first_of_nonce]))
    answers: list[int | CallbackRefused | None] = [
        None if first_of_nonce[c.nonce] == index and c.nonce in fresh
        else _replayed(callbacks[first_of_nonce[c.nonce]], c, nonce_fresh=c.nonce in fresh)
        for index, c in enumerate(callbacks)]
    _acknowledge_identical_retries(session, callbacks, answers)
    rows: dict[str, dict[str, Any]] = {}
    owner: dict[int, str] = {}
    for index, callback in enumerate(callbacks):
        if answers[index] is not None:
            continue
        key = dedup_key(callback.fields)
        owner[index] = key
        rows.setdefault(key, {
            "dedup_key": key, "event_type": event_type(callback.fields)[:64],
            "create_time": _create_time(callback.fields), "status": "received", "attempts": 0, "error": "",
            "raw_xml": callback.xml, "fields": callback.fields, "received_at": now})
    if not rows:
        return answers
    stored = {str(key): int(event_id) for key, event_id in session.execute(
        dialect_insert(session, event_table).on_conflict_do_nothing()
        .returning(event_table.c.dedup_key, event_table.c.id), list(rows.values()))}
    for index, key in owner.items():
        event_id = stored.pop(key, None)  # a key twice in the batch: the first is stored, the second repeats it
        answers[index] = None if event_id is None else int(event_id)
    return answers


_REPLAYED = "nonce seen before with different content: a replayed request"


def _replayed(first: Authenticated, again: Authenticated, *, nonce_fresh: bool) -> CallbackRefused | None:
    """A nonce twice in one batch: the same request again is a retry (answered like the first,
    which repeats nothing); different content under that nonce is refused. A nonce from an
    earlier request is decided against what that request stored (_acknowledge_identical_retries)."""
    if nonce_fresh and first.xml == again.xml:
        return None
    return CallbackRefused(409, _REPLAYED)


def _acknowledge_identical_retries(session: Session, callbacks: list[Authenticated],
                                   answers: list[int | CallbackRefused | None]) -> None:
    """A nonce seen in an earlier request whose event is stored with exactly this content: the
    platform's retry of an answer it never got, acknowledged (None) instead of refused."""
    suspects = {index: dedup_key(c.fields) for index, c in enumerate(callbacks)
                if isinstance(answers[index], CallbackRefused)}
    if not suspects:
        return
    stored = {key: xml for key, xml in session.execute(
        select(WecomEvent.dedup_key, WecomEvent.raw_xml).where(WecomEvent.dedup_key.in_(set(suspects.values()))))}
    for index, key in suspects.items():
        if key in stored and hmac.compare_digest(stored[key].encode(), callbacks[index].xml.encode()):
            answers[index] = None


def _create_time(fields: dict[str, str]) -> int:
    try:
        return int(fields.get("CreateTime", "0") or 0)
    except ValueError:
        return 0


def accept(session: Session, *, query: Query, body: bytes) -> int | None:
    """Authenticate and store one callback; None when it is a duplicate of one already stored."""
    answer = accept_many(session, [(query, body)])[0]
    if isinstance(answer, CallbackRefused):
        raise answer
    return answer


def accept_many(session: Session, received: list[tuple[Query, bytes]]) -> list[int | CallbackRefused | None]:
    """Authenticate and store callbacks that arrived together, in one transaction (a group commit).

    Each gets its own answer: the stored event's id, None for a repeat, or why it was refused.
    A refusal happens before anything of that callback is written, so it never undoes the others.
    """
    config = effective(session, recent_ok=True)
    answers: list[int | CallbackRefused | None] = []
    authenticated: dict[int, Authenticated] = {}
    for index, (query, body) in enumerate(received):
        try:
            authenticated[index] = authenticate(config, query=query, body=body)
            answers.append(None)
        except CallbackRefused as exc:
            answers.append(exc)
    for index, answer in zip(authenticated, store_many(session, list(authenticated.values())), strict=True):
        answers[index] = answer
    return answers


def forget_old_nonces(session: Session) -> int:
    result = session.execute(delete(CallbackNonce).where(CallbackNonce.seen_at < utcnow() - NONCE_MEMORY))
    return int(getattr(result, "rowcount", 0) or 0)


def describe(fields: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(fields.items()) if k not in ("Encrypt",))[:300]
