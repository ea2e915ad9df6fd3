"""公众号 (WeChat Official Account): a virtual account, its server API and the callbacks it pushes.

Unlike WeCom, the Official Account platform *pushes* every follower's message and event to
the developer's server, one HTTP request each (接收普通消息 / 接收事件推送), and takes the
answer as a passive reply when it is a reply XML (被动回复用户消息) — within 5 seconds, else it
resends, 3 times in all. Plain mode signs the query only (``signature`` over token, timestamp,
nonce); safe mode (``encrypt_type=aes``) seals the body with the EncodingAESKey and the appid and
adds ``msg_signature`` (消息加解密说明) — sealed here with wechatpy's MP crypto.

The API lives under its own prefix (``/mp/cgi-bin/``): the Official Account's paths
(``token``, ``user/get`` …) collide with WeCom's under ``/cgi-bin/``. Every endpoint and
callback names its page; *O:path* is developers.weixin.qq.com/doc/offiaccount/path.
"""

from __future__ import annotations

import collections
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from wechatpy.crypto import WeChatCrypto

from siyu.simulator.callbacks import xml_document
from siyu.simulator.errors import ApiError

# ---- the platform's limits (each with its page) ----
TOKEN_SECONDS = 7200  # O:Basic_Information/Get_access_token.html: expires_in 7200
FOLLOWERS_PER_PAGE = 10_000  # O:User_Management/Getting_a_User_List.html: "最多拉取10000个"
BATCHGET_MAX = 100  # O:User_Management/Get_users_basic_information_UnionID.html: "最多支持一次拉取100条"
MESSAGE_WINDOW_SECONDS = 48 * 3600  # O:Message_Management/Service_Center_messages.html: 用户发送消息, 48 小时
PER_MESSAGE = 5  # ibid.: "可下发消息5条"
EVENT_WINDOW_SECONDS = 60  # ibid.: 点击自定义菜单、关注公众号、扫描二维码 — 1 分钟
PER_EVENT = 3  # ibid.: "可下发消息3条"
PERMANENT_QR_MAX = 100_000  # O:Account_Management/Generating_a_Parametric_QR_Code.html: 永久二维码 "最多10万个"
TEMPORARY_QR_MAX_SECONDS = 2_592_000  # ibid.: expire_seconds "最大不超过2592000（即30天）"
TEMPORARY_QR_DEFAULT_SECONDS = 60  # ibid.: "此字段如果不填，则默认有效期为60秒"
SCENE_STR_MAX = 64  # ibid.: scene_str "长度限制为1到64"
PASSIVE_TIMEOUT_SECONDS = 5.0  # O:Message_Management/Passive_user_reply_message.html: 五秒内收不到响应
RETRIES = 3  # ibid.: "重新发起请求，总共重试三次"

# ---- errcodes (O:Getting_Started/Global_Return_Code.html 全局返回码) ----
INVALID_CREDENTIAL = 40001  # 获取 access_token 时 AppSecret 错误，或者 access_token 无效
INVALID_GRANT_TYPE = 40002
INVALID_OPENID = 40003
INVALID_APPID = 40013
INVALID_TOKEN = 40014
MISSING_TOKEN = 41001
EXPIRED_TOKEN = 42001
INVALID_PARAMETER = 40097  # 参数错误
INVALID_ACTION_NAME = 40050  # the QR code's action_name (不合法的参数)
QR_LIMIT_REACHED = 45044  # the account's permanent codes are used up (the platform's "超过上限"; chosen here)
OUT_OF_TIME = 45015  # 回复时间超过限制
OVER_COUNT = 45047  # 客服接口下行条数超过上限
REQUIRE_SUBSCRIBE = 43004  # 需要接收者关注

MESSAGE_TYPES = ("text", "image", "voice", "video", "shortvideo", "location", "link")


@dataclass
class Follower:
    openid: str
    unionid: str
    nickname: str
    subscribe: bool = True
    subscribe_time: int = 0
    scene: str = ""
    last_message_at: float | None = None
    sent_since_message: int = 0
    last_event_at: float | None = None
    sent_since_event: int = 0


@dataclass
class QrCode:
    ticket: str
    scene: str
    permanent: bool
    expires_at: float | None


@dataclass
class VirtualMp:
    """One 公众号 with its followers; the API's handlers and the followers' acts."""

    appid: str = "wxSIYUSIMULATOR01"
    secret: str = "siyu-simulated-mp-secret"  # noqa: S105 - the simulator's own, documented default
    token: str = "siyu-mp-token"  # noqa: S105
    aes_key: str = ""  # 43 characters for safe mode; empty: plain mode only
    gh_id: str = "gh_siyusimulator"  # the account's original id: ToUserName of every push
    clock: Callable[[], float] = time.time
    followers: dict[str, Follower] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # follow order: user/get pages through it
    qrcodes: dict[str, QrCode] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)  # what followers got through the API
    tokens: dict[str, float] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _msgid: int = 0

    # ---- tokens ------------------------------------------------------------------------------

    def api_token(self, params: dict[str, Any]) -> dict[str, Any]:
        """O:Basic_Information/Get_access_token.html — GET token?grant_type=client_credential&appid&secret."""
        if params.get("grant_type") != "client_credential":
            raise ApiError(INVALID_GRANT_TYPE, "invalid grant_type")
        if params.get("appid") != self.appid:
            raise ApiError(INVALID_APPID, "invalid appid")
        if not secrets.compare_digest(str(params.get("secret") or "").encode(), self.secret.encode()):
            raise ApiError(INVALID_CREDENTIAL, "invalid credential, access_token is invalid or not latest")
        token = secrets.token_urlsafe(48)
        with self.lock:
            self.tokens[token] = self.clock() + TOKEN_SECONDS
        return {"access_token": token, "expires_in": TOKEN_SECONDS}

    def check_token(self, token: str) -> None:
        if not token:
            raise ApiError(MISSING_TOKEN, "access_token missing")
        with self.lock:
            expiry = self.tokens.get(token)
        if expiry is None:
            raise ApiError(INVALID_TOKEN, "invalid access_token")
        if expiry <= self.clock():
            raise ApiError(EXPIRED_TOKEN, "access_token expired")

    # ---- followers' acts (each returns the XML the platform pushes) ----------------------------

    def _follower(self, openid: Any) -> Follower:
        follower = self.followers.get(str(openid or ""))
        if follower is None:
            raise ApiError(INVALID_OPENID, f"invalid openid {openid}")
        return follower

    def _new_openid(self) -> str:
        return "o" + secrets.token_urlsafe(21)[:27]  # 28 characters, as the platform's openids

    def _push(self, follower: Follower, kind: str, fields: list[tuple[str, Any]], *, at: int) -> str:
        return xml_document([("ToUserName", self.gh_id), ("FromUserName", follower.openid), ("CreateTime", at),
                             ("MsgType", kind), *fields])

    def follow(self, openid: str = "", scene: str = "", nickname: str = "", unionid: str = "") -> dict[str, Any]:
        """A WeChat user follows — by searching, or by scanning a parametric code (EventKey qrscene_<scene>,
        O:Message_Management/Receiving_event_pushes.html 扫描带参数二维码事件)."""
        at = int(self.clock())
        with self.lock:
            follower = self.followers.get(openid) if openid else None
            if follower is None:
                follower = Follower(openid=openid or self._new_openid(), unionid=unionid or "",
                                    nickname=nickname or f"粉丝{len(self.followers) + 1}")
                self.followers[follower.openid] = follower
            if follower.openid in self.order:
                self.order.remove(follower.openid)
            self.order.append(follower.openid)
            follower.subscribe, follower.subscribe_time, follower.scene = True, at, scene
            follower.last_event_at, follower.sent_since_event = float(at), 0
        fields: list[tuple[str, Any]] = [("Event", "subscribe")]
        if scene:
            fields += [("EventKey", f"qrscene_{scene}"), ("Ticket", self._ticket_of(scene))]
        return {"openid": follower.openid, "xml": self._push(follower, "event", fields, at=at)}

    def _ticket_of(self, scene: str) -> str:
        return next((t for t, code in self.qrcodes.items() if code.scene == scene), "")

    def unfollow(self, openid: str) -> dict[str, Any]:
        """取消关注事件 (Receiving_event_pushes)."""
        at = int(self.clock())
        with self.lock:
            follower = self._follower(openid)
            follower.subscribe = False
            if openid in self.order:
                self.order.remove(openid)
        return {"openid": openid, "xml": self._push(follower, "event", [("Event", "unsubscribe")], at=at)}

    def scan(self, openid: str, scene: str) -> dict[str, Any]:
        """用户已关注时扫描带参数二维码: Event SCAN, EventKey = the scene (no qrscene_ prefix)."""
        at = int(self.clock())
        with self.lock:
            follower = self._follower(openid)
            follower.last_event_at, follower.sent_since_event = float(at), 0
        return {"openid": openid, "xml": self._push(follower, "event", [
            ("Event", "SCAN"), ("EventKey", scene), ("Ticket", self._ticket_of(scene))], at=at)}

    def click(self, openid: str, key: str) -> dict[str, Any]:
        """自定义菜单事件 — 点击菜单拉取消息: Event CLICK, EventKey = the menu item's key."""
        at = int(self.clock())
        with self.lock:
            follower = self._follower(openid)
            follower.last_event_at, follower.sent_since_event = float(at), 0
        return {"openid": openid, "xml": self._push(follower, "event", [("Event", "CLICK"), ("EventKey", key)],
                                                    at=at)}

    def message(self, openid: str, msgtype: str = "text", content: str = "") -> dict[str, Any]:
        """O:Message_Management/Receiving_standard_messages.html — one push per message, with its MsgId."""
        if msgtype not in MESSAGE_TYPES:
            raise ApiError(INVALID_PARAMETER, f"unknown message type {msgtype}")
        at = int(self.clock())
        with self.lock:
            follower = self._follower(openid)
            if not follower.subscribe:
                raise ApiError(REQUIRE_SUBSCRIBE, "only followers write to a 公众号")
            follower.last_message_at, follower.sent_since_message = float(at), 0
            self._msgid += 1
            msgid = int(hashlib.sha1(f"{self.appid}:{self._msgid}".encode()).hexdigest()[:15], 16)  # noqa: S324
        media = secrets.token_urlsafe(24)
        body: dict[str, list[tuple[str, Any]]] = {
            "text": [("Content", content or "你好")],
            "image": [("PicUrl", f"https://mmbiz.qpic.cn/sim/{media}"), ("MediaId", media)],
            "voice": [("MediaId", media), ("Format", "amr"), ("Recognition", content)],
            "video": [("MediaId", media), ("ThumbMediaId", media)],
            "shortvideo": [("MediaId", media), ("ThumbMediaId", media)],
            "location": [("Location_X", "30.2741"), ("Location_Y", "120.1551"), ("Scale", 15),
                         ("Label", content or "杭州市西湖区")],
            "link": [("Title", content or "活动页"), ("Description", ""), ("Url", "https://example.com/a")],
        }
        return {"openid": openid, "msgid": msgid,
                "xml": self._push(follower, msgtype, [*body[msgtype], ("MsgId", msgid)], at=at)}

    # ---- the API ---------------------------------------------------------------------------------

    def api_user_get(self, params: dict[str, Any]) -> dict[str, Any]:
        """O:User_Management/Getting_a_User_List.html — GET user/get?next_openid: 10,000 a page; the last
        page's next_openid is its last openid, and the page after it has count 0."""
        with self.lock:
            following = [o for o in self.order if self.followers[o].subscribe]
        start = 0
        after = str(params.get("next_openid") or "")
        if after:
            if after not in following:
                raise ApiError(INVALID_OPENID, "invalid next_openid")
            start = following.index(after) + 1
        page = following[start:start + FOLLOWERS_PER_PAGE]
        answer: dict[str, Any] = {"total": len(following), "count": len(page),
                                  "next_openid": page[-1] if page else ""}
        if page:
            answer["data"] = {"openid": page}
        return answer

    def api_user_info_batchget(self, body: dict[str, Any]) -> dict[str, Any]:
        """O:User_Management/Get_users_basic_information_UnionID.html — POST user/info/batchget, ≤ 100."""
        users = body.get("user_list")
        if not isinstance(users, list) or not users or len(users) > BATCHGET_MAX:
            raise ApiError(INVALID_PARAMETER, f"user_list must have 1 to {BATCHGET_MAX} items")
        infos = []
        for item in users:
            openid = str(item.get("openid") if isinstance(item, dict) else "")
            follower = self.followers.get(openid)
            if follower is None:
                raise ApiError(INVALID_OPENID, f"invalid openid {openid}")
            if not follower.subscribe:  # "用户没有关注公众号时 … 只有openid和UnionID"
                info: dict[str, Any] = {"subscribe": 0, "openid": openid}
            else:
                # Since 2021-12-27 the platform returns no nickname and no avatar here (the fields stay, empty:
                # 微信公众平台用户信息相关接口调整公告, developers.weixin.qq.com/community/develop/doc/
                # 00028edbe3c58081e7cc834705b801); the follower's nickname is the simulator's own record.
                info = {"subscribe": 1, "openid": openid, "nickname": "", "language": "zh_CN",
                        "headimgurl": "", "subscribe_time": follower.subscribe_time,
                        "subscribe_scene": "ADD_SCENE_QR_CODE" if follower.scene else "ADD_SCENE_SEARCH",
                        "qr_scene_str": follower.scene}
            if follower.unionid:
                info["unionid"] = follower.unionid
            infos.append(info)
        return {"user_info_list": infos}

    def api_message_custom_send(self, body: dict[str, Any]) -> dict[str, Any]:
        """O:Message_Management/Service_Center_messages.html — POST message/custom/send: 5 messages within 48 h
        of the follower's message, or 3 within a minute of a click, follow or scan; 45015 outside, 45047 over."""
        openid = str(body.get("touser") or "")
        msgtype = str(body.get("msgtype") or "")
        content = body.get(msgtype) if isinstance(body.get(msgtype), dict) else None
        if not msgtype or content is None:
            raise ApiError(INVALID_PARAMETER, "msgtype and its object are required")
        now = self.clock()
        with self.lock:
            follower = self._follower(openid)
            if not follower.subscribe:
                raise ApiError(OUT_OF_TIME, "response out of time limit or subscription is canceled")
            by_message = follower.last_message_at is not None and now - follower.last_message_at <= \
                MESSAGE_WINDOW_SECONDS
            by_event = follower.last_event_at is not None and now - follower.last_event_at <= EVENT_WINDOW_SECONDS
            if not (by_message or by_event):
                raise ApiError(OUT_OF_TIME, "response out of time limit or subscription is canceled")
            if by_message and follower.sent_since_message < PER_MESSAGE:
                follower.sent_since_message += 1
                follower.sent_since_event += 1 if by_event else 0
            elif by_event and follower.sent_since_event < PER_EVENT:
                follower.sent_since_event += 1
            else:
                raise ApiError(OVER_COUNT, "out of response count limit")
            self.received.append({"openid": openid, "via": "custom_send", "msgtype": msgtype, msgtype: content,
                                  "at": now})
        return {}

    def api_qrcode_create(self, body: dict[str, Any]) -> dict[str, Any]:
        """O:Account_Management/Generating_a_Parametric_QR_Code.html — POST qrcode/create (string scenes)."""
        action = str(body.get("action_name") or "")
        if action not in ("QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"):
            raise ApiError(INVALID_ACTION_NAME, "invalid action name")
        scene_info = ((body.get("action_info") or {}).get("scene") or {})
        scene = str(scene_info.get("scene_str") or scene_info.get("scene_id") or "")
        if not 1 <= len(scene) <= SCENE_STR_MAX:
            raise ApiError(INVALID_PARAMETER, "scene_str must have 1 to 64 characters")
        permanent = action.startswith("QR_LIMIT")
        expire = int(body.get("expire_seconds") or TEMPORARY_QR_DEFAULT_SECONDS)
        if not permanent and not 1 <= expire <= TEMPORARY_QR_MAX_SECONDS:
            raise ApiError(INVALID_PARAMETER, "expire_seconds must be at most 2592000")
        with self.lock:
            if permanent and sum(1 for c in self.qrcodes.values() if c.permanent) >= PERMANENT_QR_MAX:
                raise ApiError(QR_LIMIT_REACHED, "permanent qrcode count out of limit")
            ticket = secrets.token_urlsafe(36)
            self.qrcodes[ticket] = QrCode(ticket=ticket, scene=scene, permanent=permanent,
                                          expires_at=None if permanent else self.clock() + expire)
        answer: dict[str, Any] = {"ticket": ticket, "url": f"http://weixin.qq.com/q/{ticket[:22]}"}
        if not permanent:
            answer["expire_seconds"] = expire
        return answer

    def scene_of(self, ticket: str) -> str:
        """What scanning a code does: its scene, while it lives (showqrcode's ticket)."""
        with self.lock:
            code = self.qrcodes.get(ticket)
            if code is None or (code.expires_at is not None and code.expires_at <= self.clock()):
                raise ApiError(INVALID_PARAMETER, "invalid or expired ticket")
            return code.scene

    def overview(self) -> dict[str, Any]:
        with self.lock:
            return {"appid": self.appid, "gh_id": self.gh_id, "followers": sum(
                1 for f in self.followers.values() if f.subscribe), "qrcodes": len(self.qrcodes),
                "received": len(self.received)}

    def received_by(self, openid: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.received if not openid or r["openid"] == openid]


# path under /mp/cgi-bin/ → (HTTP method, VirtualMp handler), each with its page.
ROUTES: dict[str, tuple[str, str]] = {
    "user/get": ("GET", "api_user_get"),  # O:User_Management/Getting_a_User_List.html
    "user/info/batchget": ("POST", "api_user_info_batchget"),  # O:User_Management/Get_users_basic_information_UnionID
    "message/custom/send": ("POST", "api_message_custom_send"),  # O:Message_Management/Service_Center_messages
    "qrcode/create": ("POST", "api_qrcode_create"),  # O:Account_Management/Generating_a_Parametric_QR_Code
}
# Followers' acts through POST /_simulator/mp/<operation> (the driver, tests); each pushes its callback.
OPERATIONS = ("follow", "unfollow", "scan", "click", "message")


# ---------------------------------------------------------------- pushing callbacks


@dataclass
class MpStats:
    sent: int = 0
    acknowledged: int = 0
    passive_replies: int = 0
    retried: int = 0
    failed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MpPusher:
    """Pushes a follower's message or event to the developer's server, as the platform does.

    Plain mode: ``signature``, ``timestamp``, ``nonce`` (and ``openid``) in the query, the XML as
    the body. Safe mode: ``encrypt_type=aes`` and ``msg_signature`` too, the XML sealed by
    wechatpy's MP crypto. An answer other than HTTP 200 within 5 s is resent, 3 times in all, with
    the same query (the platform's retries carry the same message). Returns the answer's body.
    """

    def __init__(self, url: str, mp: VirtualMp, *, safe: bool = False, client: httpx.Client | None = None,
                 timeout: float = PASSIVE_TIMEOUT_SECONDS, retries: int = RETRIES,
                 stats: MpStats | None = None) -> None:
        if safe and len(mp.aes_key) != 43:
            raise ValueError("safe mode needs the 公众号's 43-character EncodingAESKey")
        self.url = url
        self.mp = mp
        self.safe = safe
        self.client = client or httpx.Client()
        self.timeout = timeout
        self.retries = retries
        self.stats = stats or MpStats()
        self.crypto = WeChatCrypto(mp.token, mp.aes_key, mp.appid) if safe else None

    def request(self, xml: str, openid: str) -> tuple[dict[str, str], str]:
        stamp, nonce = str(int(self.mp.clock())), secrets.token_hex(8)
        signature = hashlib.sha1("".join(sorted([self.mp.token, stamp, nonce])).encode()).hexdigest()  # noqa: S324
        params = {"signature": signature, "timestamp": stamp, "nonce": nonce, "openid": openid}
        if self.crypto is None:
            return params, xml
        sealed = self.crypto.encrypt_message(xml, nonce, stamp)
        encrypted = sealed.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
        params.update(encrypt_type="aes", msg_signature=hashlib.sha1("".join(sorted(  # noqa: S324
            [self.mp.token, stamp, nonce, encrypted])).encode()).hexdigest())
        return params, sealed

    def push(self, xml: str, openid: str) -> str | None:
        """Deliver one push; the reply text when the answer was a passive reply, "" for success, None if lost."""
        params, body = self.request(xml, openid)
        for attempt in range(1 + self.retries):
            started = time.monotonic()
            try:
                response = self.client.post(self.url, params=params, content=body.encode(), timeout=self.timeout)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.status_code == 200:
                    with self.stats.lock:
                        self.stats.sent += 1
                        self.stats.acknowledged += 1
                        self.stats.latencies.append(time.monotonic() - started)
                    reply = self.open_reply(response.text)
                    if reply:
                        with self.stats.lock:
                            self.stats.passive_replies += 1
                        with self.mp.lock:
                            self.mp.received.append({"openid": openid, "via": "passive", "msgtype": "text",
                                                     "text": {"content": reply}, "at": self.mp.clock()})
                    return reply
                problem = f"HTTP {response.status_code}: {response.text[:80]}"
            with self.stats.lock:
                self.stats.sent += 1
                self.stats.errors[problem] += 1
                if attempt < self.retries:
                    self.stats.retried += 1
        with self.stats.lock:
            self.stats.failed += 1
        return None

    def open_reply(self, answer: str) -> str:
        """The text of a passive reply (被动回复用户消息), opened in safe mode; "" for success or an empty answer."""
        answer = answer.strip()
        if not answer or answer == "success":
            return ""
        from defusedxml import ElementTree

        root = ElementTree.fromstring(answer)
        if self.crypto is not None:
            encrypted = root.findtext("Encrypt") or ""
            stamp, nonce = root.findtext("TimeStamp") or "", root.findtext("Nonce") or ""
            signature = root.findtext("MsgSignature") or ""
            root = ElementTree.fromstring(self.crypto.decrypt_message(
                f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>", signature, stamp, nonce))
        return root.findtext("Content") or ""


def callback_url(target: str) -> str:
    target = target.rstrip("/")
    return target if target.endswith("/mp/callback") else target + "/mp/callback"


def mount(app: Any, mp: VirtualMp, *, callback_target: str = "", safe: bool = False) -> None:
    """The 公众号's API under ``/mp/cgi-bin/`` and the followers' acts under ``/_simulator/mp/`` on the
    simulator's app; with ``callback_target`` each act is pushed there as the platform does."""
    pusher = MpPusher(callback_url(callback_target), mp, safe=safe) if callback_target else None
    app.state.mp = mp

    def error(exc: ApiError) -> JSONResponse:
        return JSONResponse({"errcode": exc.errcode, "errmsg": f"{exc.errmsg} rid: {secrets.token_hex(12)}"})

    @app.get("/mp/cgi-bin/token")
    def mp_token(request: Request) -> JSONResponse:
        """O:Basic_Information/Get_access_token.html."""
        try:
            return JSONResponse(mp.api_token(dict(request.query_params)))
        except ApiError as exc:
            return error(exc)

    @app.api_route("/mp/cgi-bin/{path:path}", methods=["GET", "POST"])
    async def mp_api(path: str, request: Request) -> JSONResponse:
        route = ROUTES.get(path.strip("/"))
        if route is None:
            return JSONResponse({"errcode": 404, "errmsg": f"the simulator does not implement /mp/cgi-bin/{path}"},
                                status_code=404)
        method, handler = route
        try:
            mp.check_token(request.query_params.get("access_token", ""))
            if method == "POST":
                try:
                    body = json.loads((await request.body()).decode("utf-8") or "{}")
                except (UnicodeDecodeError, ValueError) as exc:
                    raise ApiError(47001, "data format error") from exc  # 解析JSON/XML内容错误
                params = body if isinstance(body, dict) else {}
            else:
                params = dict(request.query_params)
            result = getattr(mp, handler)(params)
        except ApiError as exc:
            return error(exc)
        return JSONResponse({"errcode": 0, "errmsg": "ok", **result} if method == "POST" else result)

    @app.get("/_simulator/mp")
    def mp_overview() -> JSONResponse:
        return JSONResponse({**mp.overview(), "received": mp.received_by()})

    @app.post("/_simulator/mp/{operation}")
    async def mp_act(operation: str, request: Request) -> JSONResponse:
        if operation not in OPERATIONS:
            return JSONResponse({"errcode": 404, "errmsg": f"unknown 公众号 operation {operation}"}, status_code=404)
        try:
            kwargs = await request.json()
            result = await run_in_threadpool(getattr(mp, operation), **kwargs)
        except ApiError as exc:
            return JSONResponse({"errcode": exc.errcode, "errmsg": exc.errmsg}, status_code=400)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"errcode": 40097, "errmsg": f"bad arguments: {exc}"}, status_code=400)
        if pusher is not None:
            result["reply"] = await run_in_threadpool(pusher.push, result["xml"], result["openid"])
        return JSONResponse(result)


# ---------------------------------------------------------------- the campaign flood through the 公众号

CAMPAIGN_TYPES = (("image", 0.05), ("voice", 0.02), ("location", 0.01), ("link", 0.01), ("video", 0.01))


@dataclass
class CampaignSummary:
    followers: int
    messages: int
    stats: MpStats
    seconds: float

    @property
    def rate(self) -> float:
        return self.stats.acknowledged / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        s = self.stats
        text = (f"campaign through the 公众号: {self.followers} follows and {self.messages} messages pushed, "
                f"acknowledged {s.acknowledged}, passive replies {s.passive_replies}, retried {s.retried}, "
                f"failed {s.failed} in {self.seconds:.1f} s ({self.rate:.0f} acknowledged/s)")
        if s.latencies:
            ordered = sorted(s.latencies)
            text += f", p99 {ordered[int(len(ordered) * 0.99) - 1 if len(ordered) > 1 else 0] * 1000:.0f} ms"
        if s.errors:
            text += "; problems: " + ", ".join(f"{k} ×{v}" for k, v in sorted(s.errors.items()))
        return text


def run_campaign(target: str, mp: VirtualMp, *, count: int, lines: tuple[str, ...], concurrency: int = 8,
                 rate: float = 0.0, seed: int = 1, safe: bool | None = None, scenes: tuple[str, ...] = (),
                 client_factory: Callable[[], httpx.Client] | None = None,
                 echo: Callable[[str], None] = print) -> CampaignSummary:
    """The seed's flood through the 公众号: followers follow (through ``scenes``' QR codes when given),
    then write ``count`` messages in all — one push per message, as the platform sends them. Safe mode
    when the account has an EncodingAESKey (or as ``safe`` says)."""
    import random

    rng = random.Random(seed)  # noqa: S311 - simulated behaviour
    use_safe = len(mp.aes_key) == 43 if safe is None else safe
    stats = MpStats()
    local = threading.local()
    made: list[httpx.Client] = []
    lock = threading.Lock()

    def pusher() -> MpPusher:
        if not hasattr(local, "pusher"):
            client = (client_factory or httpx.Client)()
            with lock:
                made.append(client)
            local.pusher = MpPusher(callback_url(target), mp, safe=use_safe, client=client, stats=stats)
        found: MpPusher = local.pusher
        return found

    interval = 1.0 / rate if rate > 0 else 0.0
    followers_wanted = min(max(1, count // 20), 10_000)
    echo(f"[campaign/mp] pushing to {callback_url(target)} as 公众号 {mp.appid} "
         f"({'safe' if use_safe else 'plain'} mode): {followers_wanted} follows, then {count} messages")

    def play(total: int, step: Callable[[int], tuple[str, str]]) -> None:
        indices = iter(range(total))

        def worker() -> None:
            while True:
                with lock:
                    index = next(indices, None)
                if index is None:
                    return
                if interval:
                    time.sleep(interval * concurrency)
                xml, openid = step(index)
                pusher().push(xml, openid)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    started = time.monotonic()
    openids: list[str] = []

    def follow(_index: int) -> tuple[str, str]:
        with lock:
            scene = rng.choice(scenes) if scenes and rng.random() < 0.8 else ""
        pushed = mp.follow(scene=scene)
        with lock:
            openids.append(pushed["openid"])
        return pushed["xml"], pushed["openid"]

    play(followers_wanted, follow)

    def message(_index: int) -> tuple[str, str]:
        with lock:
            openid = rng.choice(openids)
            kind, roll = "text", rng.random()
            for name, share in CAMPAIGN_TYPES:
                if roll < share:
                    kind = name
                    break
                roll -= share
            text = rng.choice(lines)
        pushed = mp.message(openid, kind, text if kind in ("text", "voice") else "")
        return pushed["xml"], openid

    play(count, message)
    for client in made:
        client.close()
    summary = CampaignSummary(followers=followers_wanted, messages=count, stats=stats,
                              seconds=time.monotonic() - started)
    echo(summary.line())
    return summary
