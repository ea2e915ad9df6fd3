"""微信客服 (WeCom customer service, ``kf/*``): the virtual corp's customer-service desk.

The platform's real channel for customers' chat messages. A customer opens a 客服 link
(``enter_session``) and writes; WeCom then sends the corp a ``kf_msg_or_event`` callback
carrying only a ``Token`` and the ``OpenKfId`` (W:94670), and the corp pulls the content
with ``kf/sync_msg`` — cursor, token, at most 1,000 messages a page, ``has_more``.
Replies go out through ``kf/send_msg`` (W:94677) inside the platform's window (48 hours
after the customer's last message, at most 5 messages per customer message) and only
while the session is new (0) or with the smart assistant (1); a welcome answers an
``enter_session`` through ``kf/send_msg_on_event`` (W:95122) with its ``welcome_code``.

Here *W:N* is the page developer.work.weixin.qq.com/document/path/N. The message log of
each 客服账号 is append-only and a cursor is an offset into it, so a 170,000-message flood
pages in linear time. What the docs describe but do not number (the rate of token-less
``sync_msg`` calls) is a named constant below, chosen by the simulator and said so.
"""

from __future__ import annotations

import base64
import bisect
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from siyu.simulator.errors import ApiError

if TYPE_CHECKING:
    from siyu.simulator.corp import VirtualCorp

# ---- the platform's limits (each with the page that states it) --------------------------------
SYNC_TOKEN_SECONDS = 600  # W:94670 读取消息: the callback's token "10分钟内有效"
SYNC_LIMIT_MAX = 1000  # W:94670: limit "默认值和最大值都为1000"
SYNC_KEEP_SECONDS = 3 * 86400  # W:94670: without a cursor, "从3天内最早的消息开始返回"; older ones are gone
SYNC_TOKEN_MAX_BYTES = 128  # W:94670: token "不多于128字节"
SYNC_CURSOR_MAX_BYTES = 64  # W:94670: cursor "不多于64字节"
# W:94670: without a token the call "有严格的频率限制" — the page gives no number; the
# simulator allows this many token-less calls per corp per minute (a setting: VirtualCorp.kf.untokened_per_minute).
UNTOKENED_SYNC_PER_MINUTE = 6
SEND_WINDOW_SECONDS = 48 * 3600  # W:94677 发送消息: "微信客户在主动发送消息给客服后的48小时内"
SEND_PER_CUSTOMER_MESSAGE = 5  # W:94677: "最多可发送5条消息；若用户继续发送消息，企业可再次下发消息"
SEND_STATES = (0, 1)  # W:94677: only "新接入待处理" (0) or "由智能助手接待" (1)
MSGID_MAX_BYTES = 32  # W:94677: msgid "不多于32字节", [0-9a-zA-Z_-]*
MSGID_PATTERN = re.compile(r"[0-9a-zA-Z_-]*")
TEXT_MAX_BYTES = 2048  # W:94677: text.content "最长不超过2048个字节"
EVENT_CODE_SECONDS = 20  # W:95122 发送欢迎语等事件响应消息: the code "20秒内有效", usable once
BATCHGET_MAX = 100  # W:95159 获取客户基础信息: external_userid_list "不超过100个"
ACCOUNT_NAME_MAX = 16  # W:94662 添加客服账号: name "不多于16个字符"
ACCOUNT_LIST_MAX = 100  # W:94661 获取客服账号列表: limit 1–100
MENU_ITEMS_MAX = 10  # W:94677 msgmenu: list "不能多于10个"
SERVICER_BATCH_MAX = 100  # W:94646 添加接待人员: userid_list "最多100个"
WELCOME_QUIET_SECONDS = 48 * 3600  # W:94670 enter_session: welcome_code only if no welcome and no message for 48 h

# ---- errcodes (W:90313 全局错误码; the kf ones (950xx) as the 微信客服 docs list them, checked against
# peers' clients: wechatpy-era SDKs, the wxkefu-rs crate's table, "invalid msg token" and
# "send msg session status invalid" in client logs) ----
INVALID_PARAMETER = 40058  # 不合法的参数 (a bad cursor, limit, msgid, list …)
INVALID_MSGTYPE = 40008  # 不合法的消息类型
INVALID_EXTERNAL_USERID = 40096  # 不合法的外部联系人userid
EMPTY_CONTENT = 44004  # 文本消息content参数为空
CONTENT_TOO_LONG = 45002  # 消息内容大小超过限制
FREQ_OUT_OF_LIMIT = 45009  # 接口调用超过限制 (also what a token-less sync_msg gets past its rate)
INVALID_OPEN_KFID = 95000  # 非法的open_kfid (missing or malformed)
OPEN_KFID_NOT_FOUND = 95004  # open_kfid不存在 (another corp's, or deleted)
INVALID_ACCOUNT_NAME = 95006  # 不合法的客服账号名
MENU_TOO_LONG = 95008  # 菜单消息的菜单项个数超过上限 (at most 10)
SEND_COUNT_EXCEEDED = 95001  # kf/send_msg: the 5 messages per customer message are used up
SEND_WINDOW_CLOSED = 95002  # kf/send_msg: more than 48 hours since the customer's last message
INVALID_MSG_TOKEN = 95007  # kf/sync_msg: "invalid msg token" (unknown, expired, or another account's)
SERVICER_INVALID = 95014  # kf/service_state/trans: the userid is not an active servicer of the account
SESSION_STATE_INVALID = 95018  # kf/send_msg: "send msg session status invalid" (a human took it, queued, ended)

# W:94669 分配客服会话: 0 未处理, 1 由智能助手接待, 2 待接入池排队中, 3 由人工接待, 4 已结束; the changes
# the page allows (3 → 3 hands the session to another servicer; 4 waits for the customer to write again).
STATES = (0, 1, 2, 3, 4)
TRANSITIONS: dict[int, tuple[int, ...]] = {0: (1, 2, 3, 4), 1: (2, 3, 4), 2: (3, 4), 3: (3, 4), 4: ()}

# W:94670: the message types sync_msg returns, with the fields of each type's object.
CUSTOMER_TYPES = ("text", "image", "voice", "video", "file", "location", "link", "business_card", "miniprogram")
SEND_TYPES = ("text", "image", "voice", "video", "file", "link", "miniprogram", "msgmenu", "location",
              "business_card", "ca_link")  # W:94677
EVENT_TYPES = ("enter_session", "msg_send_fail", "servicer_status_change", "session_status_change",
               "user_recall_msg", "servicer_recall_msg")  # W:94670 事件消息
ORIGIN_CUSTOMER, ORIGIN_EVENT, ORIGIN_SERVICER = 3, 4, 5  # W:94670 origin

DEFAULT_ACCOUNTS: tuple[str, ...] = ("山野茶舍客服",)


class KfServicer(BaseModel):
    userid: str
    status: int = 0  # W:94645 获取接待人员列表: 0 接待中, 1 停止接待


class KfAccount(BaseModel):
    open_kfid: str
    name: str
    avatar: str = ""
    manage_privilege: bool = True  # W:94661: this app may manage the account
    servicers: list[KfServicer] = Field(default_factory=list)


class KfCustomer(BaseModel):
    external_userid: str
    nickname: str
    avatar: str = ""
    gender: int = 0  # W:95159: 0 未知, 1 男, 2 女
    unionid: str = ""


class KfSession(BaseModel):
    open_kfid: str
    external_userid: str
    state: int = 0
    servicer_userid: str = ""
    last_customer_at: float = 0.0  # the customer's last message (the send window starts there)
    sent_since: int = 0  # messages sent through kf/send_msg since then
    welcomed_at: float = 0.0
    scene: str = ""
    scene_param: str = ""


class KfCode(BaseModel):
    """A welcome_code (enter_session) or msg_code (session_status_change): one send within 20 s."""

    code: str
    open_kfid: str
    external_userid: str
    issued_at: float
    used: bool = False


class KfState(BaseModel):
    accounts: list[KfAccount] = Field(default_factory=list)
    customers: dict[str, KfCustomer] = Field(default_factory=dict)
    sessions: dict[str, KfSession] = Field(default_factory=dict)
    # Per open_kfid, in arrival order, exactly as sync_msg returns the items (append-only).
    log: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    # What reached customers through kf (send_msg, send_msg_on_event, servicers in WeCom's client).
    delivered: list[dict[str, Any]] = Field(default_factory=list)
    codes: list[KfCode] = Field(default_factory=list)
    counter: int = 0


def _encode_cursor(scope: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"kf:{scope}:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: Any, scope: str) -> int:
    if cursor in (None, ""):
        return 0
    text = str(cursor)
    if len(text.encode()) > SYNC_CURSOR_MAX_BYTES:
        raise ApiError(INVALID_PARAMETER, "invalid cursor")
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(INVALID_PARAMETER, "invalid cursor") from exc
    prefix, _sep, rest = decoded.partition(":")
    made_for, _sep, number = rest.rpartition(":")
    if prefix != "kf" or made_for != scope or not number.isdigit():
        raise ApiError(INVALID_PARAMETER, "invalid cursor")
    return int(number)


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    return value if isinstance(value, str) else "" if value is None else str(value)


class KfDesk:
    """The corp's 微信客服: accounts, servicers, customers, sessions and the message log."""

    def __init__(self, corp: VirtualCorp) -> None:
        self.corp = corp
        self.state: KfState = corp.state.kf
        self.untokened_per_minute = UNTOKENED_SYNC_PER_MINUTE
        self.listeners: list[Callable[[str], object]] = []  # told an account has something new to pull
        self._tokens: dict[str, tuple[str, float]] = {}  # token → (open_kfid, expiry)
        self._untokened: tuple[int, int] = (0, 0)  # (minute, calls in it)
        self._times: dict[str, list[float]] = {}
        self._all: list[dict[str, Any]] = []  # every account's items in arrival order (sync_msg without open_kfid)
        self._all_times: list[float] = []
        self._sent: dict[tuple[str, str], dict[str, Any]] = {}  # (open_kfid, msgid) → the delivered row
        self._msgid_prefix = ""
        for open_kfid, items in self.state.log.items():
            self._times[open_kfid] = [float(i["send_time"]) for i in items]
        merged = sorted((item for items in self.state.log.values() for item in items), key=lambda i: i["send_time"])
        self._all = merged
        self._all_times = [float(i["send_time"]) for i in merged]
        for row in self.state.delivered:
            if row.get("msgid"):
                self._sent[(row["open_kfid"], row["msgid"])] = row

    # ---- construction ----------------------------------------------------------------------

    def seed(self, names: tuple[str, ...] = DEFAULT_ACCOUNTS) -> None:
        """The seeded corp's 客服账号, each served by the first two members."""
        servicers = [KfServicer(userid=m.userid) for m in self.corp.state.members[:2]]
        for name in names:
            account = KfAccount(open_kfid=self._open_kfid(), name=name,
                                avatar="https://wework.qpic.cn/wwhead/kf_sim/0",
                                servicers=[s.model_copy() for s in servicers])
            self.state.accounts.append(account)
            self.state.log[account.open_kfid] = []
            self._times[account.open_kfid] = []

    def adopt_account(self, *, open_kfid: str, name: str) -> bool:
        """Take over a 客服账号 a Siyu instance already knows (``siyu demo --simulate``): the first
        seeded account gets its open_kfid and name, so customers write to the account Siyu has.
        Returns whether anything changed."""
        with self.corp.lock:
            if any(a.open_kfid == open_kfid for a in self.state.accounts):
                return False
            if not self.state.accounts:
                self.seed((name,))
            account = self.state.accounts[0]
            old = account.open_kfid
            account.open_kfid, account.name = open_kfid, name
            self.state.log[open_kfid] = self.state.log.pop(old, [])
            self._times[open_kfid] = self._times.pop(old, [])
            return True

    def _open_kfid(self) -> str:
        return self.corp._id("wk")  # open_kfid as WeCom makes them: "wk" + 30 characters

    def _msgid(self) -> str:
        """Unique across runs: a prefix drawn once per run (from the run-salted generator), then counted."""
        if not self._msgid_prefix:
            self._msgid_prefix = self.corp._id("", 12)
        self.state.counter += 1
        return f"{self._msgid_prefix}{self.state.counter:012d}"

    def _now(self) -> float:
        return float(self.corp.clock())

    # ---- lookups ------------------------------------------------------------------------------

    def account(self, open_kfid: Any) -> KfAccount:
        if not open_kfid or not isinstance(open_kfid, str):
            raise ApiError(INVALID_OPEN_KFID, "invalid open_kfid")
        found = next((a for a in self.state.accounts if a.open_kfid == open_kfid), None)
        if found is None:
            raise ApiError(OPEN_KFID_NOT_FOUND, f"open_kfid not exists: {open_kfid}")
        return found

    def default_account(self, open_kfid: Any = "") -> KfAccount:
        if open_kfid:
            return self.account(open_kfid)
        if not self.state.accounts:
            raise ApiError(OPEN_KFID_NOT_FOUND, "the corp has no 客服账号")
        return self.state.accounts[0]

    def customer(self, external_userid: Any) -> KfCustomer:
        found = self.state.customers.get(str(external_userid or ""))
        if found is None:
            raise ApiError(INVALID_EXTERNAL_USERID, f"invalid external_userid: {external_userid}")
        return found

    def session(self, open_kfid: str, external_userid: str) -> KfSession:
        key = f"{open_kfid}/{external_userid}"
        found = self.state.sessions.get(key)
        if found is None:
            found = self.state.sessions[key] = KfSession(open_kfid=open_kfid, external_userid=external_userid, state=4)
        return found

    def _append(self, open_kfid: str, item: dict[str, Any]) -> None:
        self.state.log.setdefault(open_kfid, []).append(item)
        self._times.setdefault(open_kfid, []).append(float(item["send_time"]))
        self._all.append(item)
        self._all_times.append(float(item["send_time"]))

    def _announce(self, open_kfid: str) -> None:
        for listener in list(self.listeners):
            listener(open_kfid)

    def _issue_code(self, open_kfid: str, external_userid: str) -> str:
        code = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
        now = self._now()
        if len(self.state.codes) > 6000:  # forget used and stale codes now and then
            self.state.codes = [c for c in self.state.codes if not c.used and now - c.issued_at <= 60][-5000:]
        self.state.codes.append(KfCode(code=code, open_kfid=open_kfid, external_userid=external_userid,
                                       issued_at=now))
        return code

    # ---- what customers and servicers do (the driver's and tests' controls) -----------------------

    def _new_customer(self, external_userid: str = "", nickname: str = "") -> KfCustomer:
        contact = self.corp.by_id.get(external_userid) if external_userid else None
        if contact is not None:  # a WeCom customer of the corp: the same external_userid and unionid
            customer = KfCustomer(external_userid=contact.external_userid, nickname=nickname or contact.name,
                                  avatar=contact.avatar, gender=contact.gender, unionid=contact.unionid)
        else:
            if external_userid:
                raise ApiError(INVALID_EXTERNAL_USERID, f"invalid external_userid: {external_userid}")
            made = self.corp._new_contact(added_at=int(self._now()), name=nickname or None)
            customer = KfCustomer(external_userid=made.external_userid, nickname=made.name, avatar=made.avatar,
                                  gender=made.gender, unionid=made.unionid)
        self.state.customers[customer.external_userid] = customer
        return customer

    def enter_session(self, open_kfid: str = "", external_userid: str = "", nickname: str = "", scene: str = "",
                      scene_param: str = "") -> dict[str, Any]:
        """A WeChat user opens the account's 客服 link (``scene`` set on the link): ``enter_session``."""
        with self.corp.lock:
            account = self.default_account(open_kfid)
            customer = self.state.customers.get(external_userid) if external_userid else None
            if customer is None:
                customer = self._new_customer(external_userid, nickname)
            session = self.session(account.open_kfid, customer.external_userid)
            now = self._now()
            if session.state == 4:
                session.state, session.servicer_userid = 0, ""
            session.scene, session.scene_param = scene, scene_param
            event: dict[str, Any] = {"event_type": "enter_session", "open_kfid": account.open_kfid,
                                     "external_userid": customer.external_userid, "scene": scene,
                                     "scene_param": scene_param}
            welcome_code = ""
            quiet = min(now - session.welcomed_at, now - session.last_customer_at)
            if quiet > WELCOME_QUIET_SECONDS:
                welcome_code = self._issue_code(account.open_kfid, customer.external_userid)
                event["welcome_code"] = welcome_code
            item = {"msgid": self._msgid(), "send_time": int(now), "origin": ORIGIN_EVENT, "msgtype": "event",
                    "event": event}
            self._append(account.open_kfid, item)
        self._announce(account.open_kfid)
        return {"open_kfid": account.open_kfid, "external_userid": customer.external_userid,
                "nickname": customer.nickname, "msgid": item["msgid"], "welcome_code": welcome_code,
                "send_time": item["send_time"]}

    def customer_message(self, open_kfid: str = "", external_userid: str = "", msgtype: str = "text",
                         content: Any = None, menu_id: str = "", nickname: str = "") -> dict[str, Any]:
        """The customer writes to the account (any type of W:94670); a text may answer a menu (``menu_id``)."""
        if msgtype not in CUSTOMER_TYPES:
            raise ApiError(INVALID_MSGTYPE, f"customers do not send {msgtype!r} (one of {', '.join(CUSTOMER_TYPES)})")
        with self.corp.lock:
            account = self.default_account(open_kfid)
            customer = self.state.customers.get(external_userid) if external_userid else None
            if customer is None:
                customer = self._new_customer(external_userid, nickname)
            body = self._content(msgtype, content)
            if msgtype == "text" and menu_id:
                body["menu_id"] = menu_id
            now = self._now()
            session = self.session(account.open_kfid, customer.external_userid)
            if session.state == 4:  # writing again after the end opens a new session
                session.state, session.servicer_userid = 0, ""
            session.last_customer_at, session.sent_since = now, 0
            item = {"msgid": self._msgid(), "open_kfid": account.open_kfid,
                    "external_userid": customer.external_userid, "send_time": int(now), "origin": ORIGIN_CUSTOMER,
                    "msgtype": msgtype, msgtype: body}
            self._append(account.open_kfid, item)
        self._announce(account.open_kfid)
        return {"open_kfid": account.open_kfid, "external_userid": customer.external_userid, "msgid": item["msgid"],
                "send_time": item["send_time"]}

    def customer_messages(self, open_kfid: str = "", messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Many customers write text at once (a flood, ``POST /_simulator/kf_customer_messages``): each of
        ``messages`` is ``{"external_userid": "" (a new customer) or an id, "content": "…"}``. Answers
        the written items as ``kf/sync_msg`` will return them, and a token for the callback about them."""
        if not isinstance(messages, list) or len(messages) > SYNC_LIMIT_MAX * 10:
            raise ApiError(INVALID_PARAMETER, f"messages must be a list of at most {SYNC_LIMIT_MAX * 10}")
        if not all(isinstance(message, dict) for message in messages):
            raise ApiError(INVALID_PARAMETER, "each message is an object")  # checked before any is written
        account = self.default_account(open_kfid)
        start = len(self.state.log.get(account.open_kfid, []))
        for message in messages:
            self.customer_message(open_kfid=account.open_kfid, external_userid=str(message.get("external_userid")
                                                                                  or ""),
                                  content=str(message.get("content") or ""))
        with self.corp.lock:
            items = [dict(item) for item in self.state.log[account.open_kfid][start:]]
        return {"items": items, **self.callback(account.open_kfid)}

    def _content(self, msgtype: str, content: Any) -> dict[str, Any]:
        if isinstance(content, dict):
            return dict(content)
        text = "" if content is None else str(content)
        if msgtype == "text":
            return {"content": text or "你好"}
        media = "sim_" + self.corp._id("", 24)
        defaults: dict[str, dict[str, Any]] = {
            "text": {"content": text or "你好"},
            "image": {"media_id": media}, "voice": {"media_id": media}, "video": {"media_id": media},
            "file": {"media_id": media},
            "location": {"latitude": 30.2741, "longitude": 120.1551, "name": text or "西湖", "address": "杭州市西湖区"},
            "link": {"title": text or "山野茶舍新品", "desc": "", "url": "https://example.com/tea", "pic_url": ""},
            "business_card": {"userid": text or self.corp.state.members[0].userid},
            "miniprogram": {"title": text or "山野茶舍商城", "appid": "wx0000000000000000",
                            "pagepath": "pages/index", "thumb_media_id": media},
        }
        return defaults[msgtype]

    def servicer_take(self, open_kfid: str, external_userid: str, servicer_userid: str = "") -> dict[str, Any]:
        """A servicer takes the session in WeCom's client: state 3 (由人工接待), ``session_status_change``."""
        with self.corp.lock:
            account = self.account(open_kfid)
            self.customer(external_userid)
            userid = servicer_userid or (account.servicers[0].userid if account.servicers else "")
            self._servicer(account, userid)
            session = self.session(account.open_kfid, external_userid)
            old = session.servicer_userid
            change_type = 2 if session.state == 3 else 1  # W:94670: 1 从接待池接入会话, 2 转接会话
            session.state, session.servicer_userid = 3, userid
            msg_code = self._issue_code(account.open_kfid, external_userid)
            item = self._event(account.open_kfid, {
                "event_type": "session_status_change", "open_kfid": account.open_kfid,
                "external_userid": external_userid, "change_type": change_type, "old_servicer_userid": old,
                "new_servicer_userid": userid, "msg_code": msg_code})
        self._announce(account.open_kfid)
        return {"msgid": item["msgid"], "service_state": 3, "servicer_userid": userid}

    def end_session(self, open_kfid: str, external_userid: str) -> dict[str, Any]:
        """The servicer ends the session in WeCom's client: state 4, ``session_status_change`` type 3."""
        with self.corp.lock:
            account = self.account(open_kfid)
            self.customer(external_userid)
            session = self.session(account.open_kfid, external_userid)
            old, session.state, session.servicer_userid = session.servicer_userid, 4, ""
            item = self._event(account.open_kfid, {
                "event_type": "session_status_change", "open_kfid": account.open_kfid,
                "external_userid": external_userid, "change_type": 3, "old_servicer_userid": old,
                "msg_code": self._issue_code(account.open_kfid, external_userid)})
        self._announce(account.open_kfid)
        return {"msgid": item["msgid"], "service_state": 4}

    def servicer_reply(self, open_kfid: str, external_userid: str, content: str = "",
                       servicer_userid: str = "") -> dict[str, Any]:
        """A servicer answers in WeCom's client: it reaches the customer and sync_msg has it with origin 5."""
        with self.corp.lock:
            account = self.account(open_kfid)
            self.customer(external_userid)
            session = self.session(account.open_kfid, external_userid)
            userid = servicer_userid or session.servicer_userid
            self._servicer(account, userid)
            now = self._now()
            text = {"content": content or "您好，我来为您处理"}
            item: dict[str, Any] = {"msgid": self._msgid(), "open_kfid": account.open_kfid,
                                    "external_userid": external_userid, "send_time": int(now),
                                    "origin": ORIGIN_SERVICER, "servicer_userid": userid, "msgtype": "text",
                                    "text": text}
            self._append(account.open_kfid, item)
            self.state.delivered.append({"via": "kf_servicer", "msgid": item["msgid"], "open_kfid": account.open_kfid,
                                         "external_userid": external_userid, "sender": userid, "msgtype": "text",
                                         "text": text["content"], "content": text,
                                         "received_at": int(now)})
        self._announce(account.open_kfid)
        return {"msgid": item["msgid"], "send_time": item["send_time"]}

    def event(self, event_type: str, open_kfid: str = "", external_userid: str = "",
              **fields: Any) -> dict[str, Any]:
        """Any other event of W:94670: ``msg_send_fail`` (fail_msgid, fail_type), ``user_recall_msg`` /
        ``servicer_recall_msg`` (recall_msgid), ``servicer_status_change`` (servicer_userid, status)."""
        if event_type not in EVENT_TYPES:
            raise ApiError(INVALID_PARAMETER, f"unknown event_type {event_type!r}")
        with self.corp.lock:
            account = self.default_account(open_kfid)
            body: dict[str, Any] = {"event_type": event_type, "open_kfid": account.open_kfid}
            if external_userid:
                self.customer(external_userid)
                body["external_userid"] = external_userid
            body.update(fields)
            if event_type == "servicer_status_change":
                servicer = self._servicer(account, body.get("servicer_userid"))
                servicer.status = 0 if int(body.get("status", 1)) == 1 else 1  # event 1 接待中 / 2 停止接待
            item = self._event(account.open_kfid, body)
        self._announce(account.open_kfid)
        return {"msgid": item["msgid"], "send_time": item["send_time"]}

    def _event(self, open_kfid: str, event: dict[str, Any]) -> dict[str, Any]:
        item = {"msgid": self._msgid(), "send_time": int(self._now()), "origin": ORIGIN_EVENT, "msgtype": "event",
                "event": event}
        self._append(open_kfid, item)
        return item

    def _servicer(self, account: KfAccount, userid: Any) -> KfServicer:
        found = next((s for s in account.servicers if s.userid == userid), None)
        if found is None:
            raise ApiError(SERVICER_INVALID, f"{userid or '(none)'} is not a servicer of {account.open_kfid}")
        return found

    def callback(self, open_kfid: str = "") -> dict[str, Any]:
        """A fresh token for a ``kf_msg_or_event`` callback about ``open_kfid`` (W:94670)."""
        with self.corp.lock:
            account = self.default_account(open_kfid)
            now = self._now()
            token = "ENC" + secrets.token_urlsafe(33)
            if len(self._tokens) > 10000:
                self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (account.open_kfid, now + SYNC_TOKEN_SECONDS)
        return {"token": token, "open_kfid": account.open_kfid, "create_time": int(now)}

    def overview(self) -> dict[str, Any]:
        with self.corp.lock:
            return {"accounts": [{"open_kfid": a.open_kfid, "name": a.name,
                                  "servicers": [s.userid for s in a.servicers]} for a in self.state.accounts],
                    "customers": len(self.state.customers),
                    "messages": sum(len(items) for items in self.state.log.values()),
                    "delivered": len(self.state.delivered)}

    def received(self, external_userid: str = "") -> list[dict[str, Any]]:
        with self.corp.lock:
            return [dict(r) for r in self.state.delivered
                    if not external_userid or r["external_userid"] == external_userid]

    # ---- the API (W:94661 …) -----------------------------------------------------------------

    def api_account_list(self, params: dict[str, Any]) -> dict[str, Any]:
        """W:94661 获取客服账号列表 (POST {offset, limit ≤ 100}; wechatpy 2.0 calls it with GET)."""
        try:
            offset = int(params.get("offset") or 0)
            limit = int(params.get("limit") or ACCOUNT_LIST_MAX)
        except (TypeError, ValueError) as exc:
            raise ApiError(INVALID_PARAMETER, "invalid offset or limit") from exc
        if offset < 0 or not 1 <= limit <= ACCOUNT_LIST_MAX:
            raise ApiError(INVALID_PARAMETER, f"limit must be 1 to {ACCOUNT_LIST_MAX}")
        with self.corp.lock:
            chunk = self.state.accounts[offset:offset + limit]
            return {"account_list": [{"open_kfid": a.open_kfid, "name": a.name, "avatar": a.avatar,
                                      "manage_privilege": a.manage_privilege} for a in chunk]}

    def api_account_add(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:94662 添加客服账号: {name ≤ 16 characters, media_id of the avatar} → {open_kfid}."""
        name = _str(body, "name").strip()
        if not name or len(name) > ACCOUNT_NAME_MAX:
            raise ApiError(INVALID_ACCOUNT_NAME, f"name must be 1 to {ACCOUNT_NAME_MAX} characters")
        if not _str(body, "media_id"):
            raise ApiError(INVALID_PARAMETER, "missing media_id")
        with self.corp.lock:
            account = KfAccount(open_kfid=self._open_kfid(), name=name,
                                avatar=f"https://wework.qpic.cn/wwpic/{_str(body, 'media_id')[:16]}/0")
            self.state.accounts.append(account)
            self.state.log[account.open_kfid] = []
            self._times[account.open_kfid] = []
        return {"open_kfid": account.open_kfid}

    def api_servicer_list(self, params: dict[str, Any]) -> dict[str, Any]:
        """W:94645 获取接待人员列表: GET ?open_kfid= → servicer_list [{userid, status}]."""
        with self.corp.lock:
            account = self.account(params.get("open_kfid"))
            return {"servicer_list": [{"userid": s.userid, "status": s.status} for s in account.servicers]}

    def _servicer_change(self, body: dict[str, Any], add: bool) -> dict[str, Any]:
        userids = body.get("userid_list")
        if not isinstance(userids, list) or not userids or len(userids) > SERVICER_BATCH_MAX:
            raise ApiError(INVALID_PARAMETER, f"userid_list must list 1 to {SERVICER_BATCH_MAX} userids")
        with self.corp.lock:
            account = self.account(body.get("open_kfid"))
            members = {m.userid for m in self.corp.state.members if m.left_at is None}
            results = []
            for userid in userids:
                present = any(s.userid == userid for s in account.servicers)
                if userid not in members:
                    results.append({"userid": userid, "errcode": 60111, "errmsg": "userid not found"})
                    continue
                if add and not present:
                    account.servicers.append(KfServicer(userid=str(userid)))
                elif not add:
                    account.servicers = [s for s in account.servicers if s.userid != userid]
                results.append({"userid": userid, "errcode": 0, "errmsg": "success"})
        return {"result_list": results}

    def api_servicer_add(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:94646 添加接待人员: {open_kfid, userid_list ≤ 100} → result_list per userid."""
        return self._servicer_change(body, add=True)

    def api_servicer_del(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:94647 删除接待人员."""
        return self._servicer_change(body, add=False)

    def api_sync_msg(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:94670 读取消息: POST {cursor, token, limit ≤ 1000, voice_format, open_kfid} →
        {next_cursor, has_more, msg_list}. Messages of the last 3 days; the callback's token lasts
        10 minutes and only for its account; without a token, a strict rate (45009 past it)."""
        token = _str(body, "token")
        open_kfid = _str(body, "open_kfid")
        try:
            limit = int(body.get("limit") or SYNC_LIMIT_MAX)
            voice_format = int(body.get("voice_format") or 0)
        except (TypeError, ValueError) as exc:
            raise ApiError(INVALID_PARAMETER, "invalid limit or voice_format") from exc
        if not 1 <= limit <= SYNC_LIMIT_MAX:
            raise ApiError(INVALID_PARAMETER, f"limit must be 1 to {SYNC_LIMIT_MAX}")
        if voice_format not in (0, 1):  # W:94670: 0 Amr, 1 Silk
            raise ApiError(INVALID_PARAMETER, "voice_format must be 0 (amr) or 1 (silk)")
        with self.corp.lock:
            now = self._now()
            if token:
                issued = self._tokens.get(token) if len(token.encode()) <= SYNC_TOKEN_MAX_BYTES else None
                if issued is None or issued[1] <= now or (open_kfid and open_kfid != issued[0]):
                    raise ApiError(INVALID_MSG_TOKEN, "invalid msg token")
                open_kfid = open_kfid or issued[0]
            else:
                minute = int(now // 60)
                window, calls = self._untokened
                calls = calls + 1 if window == minute else 1
                self._untokened = (minute, calls)
                if calls > self.untokened_per_minute:
                    raise ApiError(FREQ_OUT_OF_LIMIT, "api freq out of limit")
            if open_kfid:
                self.account(open_kfid)
                items, times, scope = self.state.log.setdefault(open_kfid, []), \
                    self._times.setdefault(open_kfid, []), open_kfid
            else:
                items, times, scope = self._all, self._all_times, "*"
            offset = _decode_cursor(body.get("cursor"), scope)
            if offset > len(items):
                raise ApiError(INVALID_PARAMETER, "invalid cursor")
            start = max(offset, bisect.bisect_left(times, now - SYNC_KEEP_SECONDS))
            end = min(start + limit, len(items))
            chunk = items[start:end]
            has_more = end < len(items)
        return {"next_cursor": _encode_cursor(scope, end), "has_more": 1 if has_more else 0, "msg_list": chunk}

    def _code(self, code: Any) -> KfCode:
        now = self._now()
        found = next((c for c in reversed(self.state.codes) if c.code == code), None) if code else None
        if found is None or found.used or now - found.issued_at > EVENT_CODE_SECONDS:
            raise ApiError(INVALID_PARAMETER, "invalid code")  # unknown, used once already, or older than 20 s
        return found

    def _outgoing(self, body: dict[str, Any], allowed: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        msgtype = _str(body, "msgtype")
        if msgtype not in allowed:
            raise ApiError(INVALID_MSGTYPE, f"invalid msgtype {msgtype!r}")
        content = body.get(msgtype)
        if not isinstance(content, dict):
            raise ApiError(INVALID_PARAMETER, f"missing {msgtype} object")
        if msgtype == "text":
            text = content.get("content")
            if not isinstance(text, str) or not text:
                raise ApiError(EMPTY_CONTENT, "empty content")
            if len(text.encode()) > TEXT_MAX_BYTES:
                raise ApiError(CONTENT_TOO_LONG, f"content longer than {TEXT_MAX_BYTES} bytes")
        if msgtype == "msgmenu":
            items = content.get("list") or []
            if not isinstance(items, list) or len(items) > MENU_ITEMS_MAX:
                raise ApiError(MENU_TOO_LONG, f"a menu has at most {MENU_ITEMS_MAX} items")
            if not items and not content.get("head_content"):
                raise ApiError(EMPTY_CONTENT, "empty menu")
        return msgtype, content

    def _deliver(self, via: str, open_kfid: str, external_userid: str, msgid: str, msgtype: str,
                 content: dict[str, Any]) -> None:
        text = str(content.get("content") or content.get("head_content") or "") if msgtype in ("text", "msgmenu") \
            else ""
        row = {"via": via, "msgid": msgid, "open_kfid": open_kfid, "external_userid": external_userid,
               "sender": open_kfid, "msgtype": msgtype, "text": text, "content": content,
               "received_at": int(self._now())}
        self.state.delivered.append(row)
        self._sent[(open_kfid, msgid)] = row

    def api_send_msg(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:94677 发送消息: {touser, open_kfid, msgid?, msgtype, <type>} → {msgid}. A msgid the caller
        already used for this account is answered as given and delivered only once."""
        msgid = _str(body, "msgid")
        if msgid and (len(msgid.encode()) > MSGID_MAX_BYTES or not MSGID_PATTERN.fullmatch(msgid)):
            raise ApiError(INVALID_PARAMETER, "msgid must be at most 32 bytes of [0-9a-zA-Z_-]")
        msgtype, content = self._outgoing(body, SEND_TYPES)
        with self.corp.lock:
            account = self.account(body.get("open_kfid"))
            external_userid = _str(body, "touser")
            self.customer(external_userid)
            if msgid and (account.open_kfid, msgid) in self._sent:
                return {"msgid": msgid}  # the same message again (a retry): delivered once
            session = self.state.sessions.get(f"{account.open_kfid}/{external_userid}")
            now = self._now()
            if session is None or not session.last_customer_at \
                    or now - session.last_customer_at > SEND_WINDOW_SECONDS:
                raise ApiError(SEND_WINDOW_CLOSED, "more than 48 hours since the customer's last message")
            if session.state not in SEND_STATES:
                raise ApiError(SESSION_STATE_INVALID, "send msg session status invalid")
            if session.sent_since >= SEND_PER_CUSTOMER_MESSAGE:
                raise ApiError(SEND_COUNT_EXCEEDED, "5 messages already sent since the customer's last message")
            session.sent_since += 1
            msgid = msgid or self._msgid()
            self._deliver("kf", account.open_kfid, external_userid, msgid, msgtype, content)
        return {"msgid": msgid}

    def api_send_msg_on_event(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:95122 发送欢迎语等事件响应消息: {code, msgid?, msgtype text|msgmenu} → {msgid}; the code
        (an enter_session welcome_code or a session_status_change msg_code) once, within 20 s."""
        msgid = _str(body, "msgid")
        if msgid and (len(msgid.encode()) > MSGID_MAX_BYTES or not MSGID_PATTERN.fullmatch(msgid)):
            raise ApiError(INVALID_PARAMETER, "msgid must be at most 32 bytes of [0-9a-zA-Z_-]")
        msgtype, content = self._outgoing(body, ("text", "msgmenu"))
        with self.corp.lock:
            code = self._code(body.get("code"))
            code.used = True
            msgid = msgid or self._msgid()
            session = self.session(code.open_kfid, code.external_userid)
            session.welcomed_at = self._now()
            self._deliver("kf_event", code.open_kfid, code.external_userid, msgid, msgtype, content)
        return {"msgid": msgid}

    def api_service_state_get(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:94669 分配客服会话 › 获取会话状态: {open_kfid, external_userid} → {service_state, servicer_userid}."""
        with self.corp.lock:
            account = self.account(body.get("open_kfid"))
            self.customer(body.get("external_userid"))
            session = self.session(account.open_kfid, _str(body, "external_userid"))
            return {"service_state": session.state, "servicer_userid": session.servicer_userid}

    def api_service_state_trans(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:94669 分配客服会话 › 变更会话状态: {open_kfid, external_userid, service_state,
        servicer_userid (for 3)} → {msg_code} when a session with the assistant (0 or 1) goes to a human
        or ends (3 or 4): one hand-over or goodbye line through send_msg_on_event."""
        try:
            target = int(body.get("service_state"))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ApiError(INVALID_PARAMETER, "invalid service_state") from exc
        if target not in STATES:
            raise ApiError(INVALID_PARAMETER, "invalid service_state")
        with self.corp.lock:
            account = self.account(body.get("open_kfid"))
            external_userid = _str(body, "external_userid")
            self.customer(external_userid)
            session = self.session(account.open_kfid, external_userid)
            if target not in TRANSITIONS[session.state]:
                raise ApiError(INVALID_PARAMETER,
                               f"service_state {session.state} cannot change to {target}")
            servicer = ""
            if target == 3:
                servicer = self._servicer(account, body.get("servicer_userid")).userid
                if target == session.state and servicer == session.servicer_userid:
                    raise ApiError(INVALID_PARAMETER, "the session is already with this servicer")
            before = session.state
            session.state, session.servicer_userid = target, servicer
            if before in (0, 1) and target in (3, 4):
                return {"msg_code": self._issue_code(account.open_kfid, external_userid)}
            return {}

    def api_customer_batchget(self, body: dict[str, Any]) -> dict[str, Any]:
        """W:95159 获取客户基础信息: {external_userid_list ≤ 100, need_enter_session_context} →
        {customer_list [{external_userid, nickname, avatar, gender, unionid, …}], invalid_external_userid}."""
        ids = body.get("external_userid_list")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError(INVALID_PARAMETER, "external_userid_list must list external_userids")
        if len(ids) > BATCHGET_MAX:
            raise ApiError(INVALID_PARAMETER, f"external_userid_list has more than {BATCHGET_MAX} items")
        context = str(body.get("need_enter_session_context") or "0") == "1"
        found, invalid = [], []
        with self.corp.lock:
            for external_userid in dict.fromkeys(ids):
                customer = self.state.customers.get(external_userid)
                if customer is None:
                    invalid.append(external_userid)
                    continue
                row: dict[str, Any] = {"external_userid": customer.external_userid, "nickname": customer.nickname,
                                       "avatar": customer.avatar, "gender": customer.gender,
                                       "unionid": customer.unionid}
                if context:
                    sessions = (self.state.sessions.get(f"{a.open_kfid}/{external_userid}")
                                for a in self.state.accounts)
                    last = next((s for s in sessions if s is not None and s.scene), None)
                    row["enter_session_context"] = {"scene": last.scene if last else "",
                                                    "scene_param": last.scene_param if last else ""}
                found.append(row)
        return {"customer_list": found, "invalid_external_userid": invalid}
