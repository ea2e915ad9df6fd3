"""Receiving 公众号 callbacks: verify, decrypt, parse — with the WeCom callback's own helpers.

The platform pushes every follower's message and event to the server URL of the account's
基本配置 (接入概述 › 消息加解密说明, developers.weixin.qq.com/doc/offiaccount/Basic_Information/
Access_Overview.html and Message_Encryption): in *plain* mode the query's ``signature`` is the
SHA-1 of the sorted token, timestamp and nonce — it does not cover the body, so a nonce seen
before with another body is a forgery; in *safe* mode (``encrypt_type=aes``) the body's
``Encrypt`` is AES-256-CBC sealed with the EncodingAESKey and the appid, and ``msg_signature``
covers the ciphertext too. Decryption is wechatpy's MP crypto; freshness, padding and the
XML parser (defusedxml, a small field collector) are the WeCom callback's. Nothing here
touches the database: ``siyu.mp.service.receive`` stores a batch of authenticated callbacks.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from functools import lru_cache

from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.utils import WeChatSigner

from siyu.mp.config import MpConfig, valid_aes_key
from siyu.wecom import callback as wecom_callback
from siyu.wecom.callback import CallbackRefused

MAX_BODY_BYTES = wecom_callback.MAX_BODY_BYTES
SAFE_MODE = "aes"  # encrypt_type of a callback in safe mode (消息加解密说明)


@dataclass(frozen=True)
class MpQuery:
    signature: str = ""
    timestamp: str = ""
    nonce: str = ""
    echostr: str = ""
    encrypt_type: str = ""
    msg_signature: str = ""
    openid: str = ""

    @property
    def safe(self) -> bool:
        return self.encrypt_type == SAFE_MODE

    @classmethod
    def of(cls, params: dict[str, str]) -> MpQuery:
        return cls(**{name: str(params.get(name, ""))[:256] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Authenticated:
    """A callback whose signature, freshness and XML checked out; not stored yet."""

    query: MpQuery
    fields: dict[str, str]

    @property
    def openid(self) -> str:
        return self.fields.get("FromUserName", "")

    @property
    def is_event(self) -> bool:
        return self.fields.get("MsgType") == "event"

    @property
    def dedup_key(self) -> str:
        """接收普通消息: "消息排重，推荐使用msgid排重"; 接收事件推送: "排重推荐使用FromUserName + CreateTime"."""
        if self.fields.get("MsgId"):
            return f"msg:{self.fields['MsgId']}"[:128]
        # The event's name too: a follow and an unfollow in the same second are two events.
        return f"ev:{self.openid}:{self.fields.get('CreateTime', '')}:{self.fields.get('Event', '')}"[:128]


@lru_cache(maxsize=8)
def crypto(token: str, aes_key: str, appid: str) -> WeChatCrypto:
    """wechatpy's MP crypto, made once per key (callbacks arrive hundreds a second)."""
    return WeChatCrypto(token, aes_key, appid)


@lru_cache(maxsize=8)
def _prp(aes_key: str) -> tuple[bytes, PrpCrypto]:
    key = crypto("", aes_key, "").key
    return key, PrpCrypto(key)


def _ready(config: MpConfig, query: MpQuery) -> None:
    if not config.can_receive:
        raise CallbackRefused(503, "the 公众号 is not configured (appid and token)")
    if query.safe and not valid_aes_key(config.aes_key):
        raise CallbackRefused(503, "safe mode needs the 公众号's EncodingAESKey")


def _sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def _check(expected: str, given: str) -> None:
    if not given or not hmac.compare_digest(expected, given):
        raise CallbackRefused(403, "wrong signature")


def _fresh(query: MpQuery) -> None:
    wecom_callback._fresh(wecom_callback.Query(msg_signature="", timestamp=query.timestamp, nonce=query.nonce))


def verify_url(config: MpConfig, query: MpQuery) -> str:
    """The URL check when the server address is saved (接入指南): ``signature`` right → echo ``echostr``."""
    _ready(config, query)
    _fresh(query)
    _check(_sign(config.token, query.timestamp, query.nonce), query.signature)
    return query.echostr


def authenticate(config: MpConfig, *, query: MpQuery, body: bytes) -> Authenticated:
    """Size, configuration, freshness, signature, (in safe mode) decryption, XML."""
    if len(body) > MAX_BODY_BYTES:
        raise CallbackRefused(413, "body larger than 2 MB")
    _ready(config, query)
    _fresh(query)
    envelope = wecom_callback._parse(body.decode("utf-8", errors="replace"))
    if not query.safe:
        _check(_sign(config.token, query.timestamp, query.nonce), query.signature)
        return Authenticated(query=query, fields=envelope)
    encrypted = envelope.get("Encrypt", "")
    if not encrypted:
        raise CallbackRefused(400, "no Encrypt element")
    # The signature first, so nothing about an unauthenticated ciphertext is revealed (no padding oracle).
    _check(_sign(config.token, query.timestamp, query.nonce, encrypted), query.msg_signature)
    key, prp = _prp(config.aes_key)
    wecom_callback._check_padding(key, encrypted)
    try:
        plain = prp.decrypt(encrypted, config.appid)
    except InvalidAppIdException as exc:
        raise CallbackRefused(403, "the message is for another 公众号 (appid)") from exc
    except Exception as exc:
        raise CallbackRefused(400, f"cannot decrypt: {type(exc).__name__}") from exc
    xml = plain if isinstance(plain, str) else plain.decode("utf-8", errors="replace")
    return Authenticated(query=query, fields=wecom_callback._parse(xml))


def passive_answer(config: MpConfig, callback: Authenticated, text: str, *, timestamp: int) -> str:
    """A passive text reply (被动回复用户消息) in the callback's own answer; sealed in safe mode."""
    from wechatpy.replies import TextReply

    xml = TextReply(source=callback.fields.get("ToUserName", ""), target=callback.openid, content=text,
                    time=timestamp).render()
    if not callback.query.safe:
        return str(xml)
    return str(crypto(config.token, config.aes_key, config.appid).encrypt_message(
        xml, callback.query.nonce, str(timestamp)))
