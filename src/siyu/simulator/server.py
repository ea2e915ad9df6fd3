"""The simulated WeCom server API, under the platform's own paths (``/cgi-bin/...``).

Like the platform, every answer is HTTP 200 with ``errcode``/``errmsg`` in the JSON body
(0/"ok" on success), an access token comes from ``gettoken`` (corpid + corpsecret) and
lasts ``expires_in`` seconds, and a call without one, with an unknown one or an expired
one gets 41001, 40014 or 42001 — the codes wechatpy's client reacts to by fetching a new
token. An optional per-token rate limit answers 45009. Faults can be injected for a number
of calls (``POST /_simulator/faults``): an errcode such as 45009 or -1, or an HTTP 5xx, as the
platform answers when it is busy. A slow, flaky platform is a standing mode, off until added:
``forever`` faults stack — say a 0.2 s latency on ``kf/send_msg``, 5 % answered errcode -1
(系统繁忙, "服务器暂不可用，建议稍候重试", W:90313 全局错误码) and 5 % answered HTTP 503 only
*after* the message went out (``after``: the answer was lost), as ``benchmarks/replies.py`` runs
it. Everything the simulator adds (the root page,
``/_simulator/...`` controls for the driver and for tests) is outside ``/cgi-bin/`` and every
response says ``Siyu WeCom simulator`` in its headers.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import operator
import random
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from siyu.simulator.callbacks import Clients, Encrypter, KfNotifier, Sender, Stats, callback_url
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.errors import ApiError
from siyu.simulator.mp import VirtualMp
from siyu.simulator.mp import mount as mount_mp

log = logging.getLogger("siyu.simulator")
NAME = "Siyu WeCom simulator"
TOKEN_TTL = 7200

# path under /cgi-bin/ → (HTTP method, VirtualCorp handler; "kf." names the 微信客服 desk's). The methods
# are the ones WeCom documents and wechatpy uses (groupchat/get is a POST despite its name; "ANY" takes
# both). Each line names the page it follows: W:N is developer.work.weixin.qq.com/document/path/N.
ROUTES: dict[str, tuple[str, str]] = {
    "user/get": ("GET", "api_user_get"),  # W:90196 读取成员
    "user/simplelist": ("GET", "api_user_simplelist"),  # W:90200 获取部门成员
    "user/list": ("GET", "api_user_list"),  # W:90201 获取部门成员详情
    # W:92571 获取配置了客户联系功能的成员列表
    "externalcontact/get_follow_user_list": ("GET", "api_get_follow_user_list"),
    "externalcontact/list": ("GET", "api_list"),  # W:92113 获取客户列表
    "externalcontact/get": ("GET", "api_get"),  # W:92114 获取客户详情
    "externalcontact/batch/get_by_user": ("POST", "api_batch_get_by_user"),  # W:92994 批量获取客户详情
    "externalcontact/remark": ("POST", "api_remark"),  # W:92115 修改客户备注信息
    "externalcontact/get_corp_tag_list": ("POST", "api_get_corp_tag_list"),  # W:92117 管理企业标签
    "externalcontact/add_corp_tag": ("POST", "api_add_corp_tag"),  # W:92117
    "externalcontact/edit_corp_tag": ("POST", "api_edit_corp_tag"),  # W:92117
    "externalcontact/del_corp_tag": ("POST", "api_del_corp_tag"),  # W:92117
    "externalcontact/mark_tag": ("POST", "api_mark_tag"),  # W:92118 编辑客户企业标签
    "externalcontact/add_contact_way": ("POST", "api_add_contact_way"),  # W:92228 客户联系「联系我」管理
    "externalcontact/get_contact_way": ("POST", "api_get_contact_way"),  # W:92228
    "externalcontact/update_contact_way": ("POST", "api_update_contact_way"),  # W:92228
    "externalcontact/del_contact_way": ("POST", "api_del_contact_way"),  # W:92228
    "externalcontact/list_contact_way": ("POST", "api_list_contact_way"),  # W:92228
    "externalcontact/groupchat/list": ("POST", "api_groupchat_list"),  # W:92120 获取客户群列表
    "externalcontact/groupchat/get": ("POST", "api_groupchat_get"),  # W:92122 获取客户群详情
    "externalcontact/groupchat/add_join_way": ("POST", "api_groupchat_add_join_way"),  # W:92229 客户群「加入群聊」管理
    "externalcontact/groupchat/get_join_way": ("POST", "api_groupchat_get_join_way"),  # W:92229
    "externalcontact/groupchat/update_join_way": ("POST", "api_groupchat_update_join_way"),  # W:92229
    "externalcontact/groupchat/del_join_way": ("POST", "api_groupchat_del_join_way"),  # W:92229
    "externalcontact/groupchat/statistic": ("POST", "api_groupchat_statistic"),  # W:96359 群聊数据统计 (按群主)
    "externalcontact/groupchat/statistic_group_by_day": ("POST", "api_groupchat_statistic_group_by_day"),  # W:96359
    "externalcontact/group_welcome_template/add": ("POST", "api_group_welcome_template_add"),  # W:92366 入群欢迎语素材
    "externalcontact/group_welcome_template/edit": ("POST", "api_group_welcome_template_edit"),  # W:92366
    "externalcontact/group_welcome_template/get": ("POST", "api_group_welcome_template_get"),  # W:92366
    "externalcontact/group_welcome_template/del": ("POST", "api_group_welcome_template_del"),  # W:92366
    "externalcontact/send_welcome_msg": ("POST", "api_send_welcome_msg"),  # W:92137 发送新客户欢迎语
    "externalcontact/add_msg_template": ("POST", "api_add_msg_template"),  # W:92135 创建企业群发
    "externalcontact/get_groupmsg_task": ("POST", "api_get_groupmsg_task"),  # W:93338 获取群发记录列表
    "externalcontact/get_groupmsg_send_result": ("POST", "api_get_groupmsg_send_result"),  # W:93338
    "externalcontact/get_group_msg_result": ("POST", "api_get_group_msg_result"),  # W:93338 (the older call)
    "externalcontact/remind_groupmsg_send": ("POST", "api_remind_groupmsg_send"),  # W:97610 提醒成员群发
    "externalcontact/cancel_groupmsg_send": ("POST", "api_cancel_groupmsg_send"),  # W:97611 停止企业群发
    "externalcontact/transfer_customer": ("POST", "api_transfer_customer"),  # W:92125 分配在职成员的客户
    "externalcontact/transfer_result": ("POST", "api_transfer_result"),  # W:94088 查询客户接替状态
    "externalcontact/resigned/transfer_customer": ("POST", "api_resigned_transfer_customer"),  # W:94081 离职继承
    "externalcontact/resigned/transfer_result": ("POST", "api_resigned_transfer_result"),  # W:94082
    "externalcontact/get_unassigned_list": ("POST", "api_get_unassigned_list"),  # W:92124 获取待分配的离职成员列表
    "externalcontact/get_user_behavior_data": ("POST", "api_get_user_behavior_data"),  # W:96358 联系客户统计
    "message/send": ("POST", "api_message_send"),  # W:90236 消息推送 › 发送应用消息
    # 微信客服 (siyu.simulator.kf)
    "kf/account/list": ("ANY", "kf.api_account_list"),  # W:94661 获取客服账号列表
    "kf/account/add": ("POST", "kf.api_account_add"),  # W:94662 添加客服账号
    "kf/servicer/list": ("GET", "kf.api_servicer_list"),  # W:94645 获取接待人员列表
    "kf/servicer/add": ("POST", "kf.api_servicer_add"),  # W:94646 添加接待人员
    "kf/servicer/del": ("POST", "kf.api_servicer_del"),  # W:94647 删除接待人员
    "kf/sync_msg": ("POST", "kf.api_sync_msg"),  # W:94670 接收消息和事件 › 读取消息
    "kf/send_msg": ("POST", "kf.api_send_msg"),  # W:94677 发送消息
    "kf/send_msg_on_event": ("POST", "kf.api_send_msg_on_event"),  # W:95122 发送欢迎语等事件响应消息
    "kf/service_state/get": ("POST", "kf.api_service_state_get"),  # W:94669 分配客服会话 › 获取会话状态
    "kf/service_state/trans": ("POST", "kf.api_service_state_trans"),  # W:94669 分配客服会话 › 变更会话状态
    "kf/customer/batchget": ("POST", "kf.api_customer_batchget"),  # W:95159 获取客户基础信息
    # 会话内容存档 (siyu.simulator.archive); the messages themselves: POST /_simulator/finance/chatdata
    "msgaudit/check_single_agree": ("POST", "archive.api_check_single_agree"),  # W:91782 获取会话同意情况
    # 客户朋友圈 (siyu.simulator.moments); media/upload_attachment (W:96347) is multipart: its own route below
    "externalcontact/add_moment_task": ("POST", "moments.api_add_moment_task"),  # W:96351 创建发表任务
    "externalcontact/get_moment_task_result": ("GET", "moments.api_get_moment_task_result"),  # W:96351 获取任务创建结果
    "externalcontact/get_moment_list": ("POST", "moments.api_get_moment_list"),  # W:96352 获取企业全部的发表列表
    "externalcontact/get_moment_task": ("POST", "moments.api_get_moment_task"),  # W:96352 企业发表的列表
    "externalcontact/get_moment_customer_list": ("POST", "moments.api_get_moment_customer_list"),  # W:96352 可见范围
    "externalcontact/get_moment_comments": ("POST", "moments.api_get_moment_comments"),  # W:96352 互动数据
}

# What the driver (or a test) may do to the corp through POST /_simulator/<operation>.
DRIVER_OPERATIONS = ("add_contact", "remove_contact", "edit_contact", "create_group", "join_group", "quit_group",
                     "dismiss_group", "tag_admin", "confirm_mass_send", "contacts_of", "groups", "overview",
                     "resign_member",
                     "scan_join_way",  # customers scan a 群活码 (W:92229)
                     # 微信客服: a customer enters a session or writes (any type), a servicer takes, answers
                     # or ends the session in WeCom's client, any other event; a callback token.
                     "kf_enter_session", "kf_customer_message", "kf_customer_messages", "kf_servicer_take",
                     "kf_servicer_reply", "kf_end_session", "kf_event", "kf_callback", "kf_overview",
                     # 会话存档: the corp's public key, private and group chats, a customer's consent, a scenario.
                     "archive_public_key", "archive_chat", "archive_group_message", "archive_agree",
                     "archive_scenario", "archive_overview", "archive_set_key_reuse",
                     # 客户朋友圈: a member publishes a moment task in the client, a customer likes or comments.
                     "moment_publish", "moment_interact", "moment_overview",
                     "archive_group_post")
# The platform's words for the codes a fault is usually injected with.
FAULT_MESSAGES = {-1: "system busy", 45009: "api freq out of limit", 45033: "api concurrent out of limit",
                  40014: "invalid access_token", 42001: "access_token expired"}


@dataclass
class ServerOptions:
    secret: str
    token_ttl: int = TOKEN_TTL
    rate_limit: int = 0  # calls per access token per minute; 0 = no limit
    state_path: Path | None = None  # saved on shutdown and on POST /_simulator/save
    archive_notify_interval: float = 15.0  # msgaudit_notify at most this often (W:95039); tests shorten it
    # Where kf_msg_or_event callbacks go when a /_simulator/kf_… control adds to an account's log
    # (Siyu's address or its /wecom/callback), sealed with this encrypter; none without both.
    callback_target: str = ""
    encrypter: Encrypter | None = None
    # A 公众号 served beside the corp (its API under /mp/cgi-bin/, siyu.simulator.mp); its followers' acts
    # are pushed to the callback target's /mp/callback, in safe mode when ``mp_safe``.
    mp: VirtualMp | None = None
    mp_safe: bool = False


@dataclass
class Fault:
    """The next ``times`` calls to ``path`` (``*``: any ``/cgi-bin/`` path, gettoken included) meet it:
    each waits ``latency`` seconds, then fails with ``percent`` % probability — answered at once, or,
    with ``after``, only after the call took effect (the platform did it, the answer was lost).
    ``forever`` keeps the fault until ``DELETE /_simulator/faults``."""

    path: str
    times: int
    errcode: int = 0  # answered as HTTP 200 with this errcode, as the platform does
    errmsg: str = ""
    status: int = 0  # or answered with this HTTP status (a 5xx from the platform's gateway)
    latency: float = 0.0
    percent: float = 100.0
    after: bool = False
    forever: bool = False

    @property
    def fails(self) -> bool:
        return bool(self.errcode or self.status)

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "times": self.times, "errcode": self.errcode, "errmsg": self.errmsg,
                "status": self.status, "latency": self.latency, "percent": self.percent, "after": self.after,
                "forever": self.forever}


@dataclass(frozen=True)
class Hit:
    fault: Fault
    fail: bool  # this call fails (the dice of ``percent`` said so)
    latency: float = 0.0  # seconds the call waits first (stacked ``forever`` faults add theirs up)


class Faults:
    """Injected faults, taken in the order they were added, and how many calls each path received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[Fault] = []
        self.calls: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.dice = random.Random()  # noqa: S311 - simulated failures, not secrets

    def add(self, body: dict[str, Any]) -> Fault:
        try:
            fault = Fault(path=str(body.get("path") or "*").strip("/"), times=int(body.get("times", 1)),
                          errcode=int(body.get("errcode") or 0), errmsg=str(body.get("errmsg") or ""),
                          status=int(body.get("status") or 0), latency=float(body.get("latency") or 0),
                          percent=float(body.get("percent", 100)), after=bool(body.get("after", False)),
                          forever=bool(body.get("forever", False)))
        except (TypeError, ValueError) as exc:
            raise ApiError(40058, f"bad fault: {exc}") from exc
        if fault.status and not 500 <= fault.status <= 599:
            raise ApiError(40058, "a fault's status must be a 5xx")
        if fault.times < 1 or not (fault.fails or fault.latency > 0):
            raise ApiError(40058, "a fault needs times >= 1 and an errcode, a 5xx status or a latency")
        if not 0 < fault.percent <= 100 or not 0 <= fault.latency <= 60:
            raise ApiError(40058, "percent must be in (0, 100] and latency in [0, 60] seconds")
        with self.lock:
            self.pending.append(fault)
        return fault

    def take(self, path: str) -> Hit | None:
        """Counts a call to ``path`` and returns the fault it meets, if any.

        Counted faults (``times``) are met one after another, in the order they were added.
        ``forever`` faults are a standing mode and stack — a slow, flaky platform is a latency
        fault plus a few probabilistic failures: the call waits the sum of their latencies and
        fails with the first whose dice says so (checked in the order they were added).
        """
        with self.lock:
            self.calls[path] = self.calls.get(path, 0) + 1
            standing: Fault | None = None
            latency = 0.0
            for fault in list(self.pending):
                if fault.path not in ("*", path):
                    continue
                if not fault.forever:
                    if standing is not None:
                        continue  # a standing mode met first: counted faults wait for a call without one
                    fault.times -= 1
                    if fault.times == 0:
                        self.pending.remove(fault)
                    fail = fault.fails and (fault.percent >= 100 or self.dice.random() * 100 < fault.percent)
                    if fail:
                        self.failed[path] = self.failed.get(path, 0) + 1
                    return Hit(fault, fail, fault.latency)
                standing = fault
                latency += fault.latency
                if fault.fails and (fault.percent >= 100 or self.dice.random() * 100 < fault.percent):
                    self.failed[path] = self.failed.get(path, 0) + 1
                    return Hit(fault, True, latency)
            return Hit(standing, False, latency) if standing is not None else None

    def clear(self) -> None:
        with self.lock:
            self.pending.clear()
            self.calls.clear()
            self.failed.clear()

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {"pending": [f.describe() for f in self.pending], "calls": dict(self.calls),
                    "failed": dict(self.failed)}


class Tokens:
    """Access tokens: one current token per corp, reissued only when it has expired (as WeCom does)."""

    def __init__(self, ttl: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.clock = clock
        self.lock = threading.Lock()
        self.expiry: dict[str, float] = {}
        self.current = ""
        self.calls: dict[str, tuple[int, int]] = {}  # token → (minute, calls in it)

    def issue(self) -> tuple[str, int]:
        with self.lock:
            now = self.clock()
            if self.current and self.expiry[self.current] > now:
                return self.current, int(self.expiry[self.current] - now)
            self.current = secrets.token_urlsafe(48)
            self.expiry[self.current] = now + self.ttl
            return self.current, self.ttl

    def check(self, token: str, rate_limit: int) -> None:
        if not token:
            raise ApiError(41001, "access_token missing")
        with self.lock:
            expiry = self.expiry.get(token)
            if expiry is None:
                raise ApiError(40014, "invalid access_token")
            now = self.clock()
            if expiry <= now:
                raise ApiError(42001, "access_token expired")
            if rate_limit:
                minute = int(now // 60)
                window, count = self.calls.get(token, (minute, 0))
                count = count + 1 if window == minute else 1
                self.calls[token] = (minute, count)
                if count > rate_limit:
                    raise ApiError(45009, "api freq out of limit")

    def expire_all(self) -> int:
        with self.lock:
            now = self.clock()
            for token in self.expiry:
                self.expiry[token] = min(self.expiry[token], now)
            return len(self.expiry)


def _errmsg(code: int, text: str, request: Request) -> str:
    host = request.client.host if request.client else "127.0.0.1"
    hint = f"{int(time.time())}_{secrets.randbelow(100)}_{secrets.token_hex(8)}"
    return f"{text}, hint: [{hint}], from ip: {host}, more info at https://open.work.weixin.qq.com/devtool/query?e={code}"


def _error(exc: ApiError, request: Request) -> JSONResponse:
    return JSONResponse({"errcode": exc.errcode, "errmsg": _errmsg(exc.errcode, exc.errmsg, request)})


def _fault(fault: Fault, request: Request) -> Response:
    if fault.status:
        return HTMLResponse(f"<html><body><h1>{fault.status}</h1>{NAME}: injected fault</body></html>",
                            status_code=fault.status)
    text = fault.errmsg or FAULT_MESSAGES.get(fault.errcode, "injected fault")
    return _error(ApiError(fault.errcode, text), request)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(40058, "invalid json") from exc  # "Warning: wrong json format." in WeCom's words
    if not isinstance(body, dict):
        raise ApiError(40058, "the request body must be a JSON object")
    return body


def create_app(corp: VirtualCorp, options: ServerOptions) -> FastAPI:
    tokens = Tokens(options.token_ttl, corp.clock)
    faults = Faults()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        if notifier is not None:
            notifier.sender.clients.close()
        if options.state_path is not None:
            corp.save(options.state_path)
            log.info("simulator state saved to %s", options.state_path)

    app = FastAPI(title=NAME, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.corp = corp
    app.state.tokens = tokens
    app.state.faults = faults
    notifier: KfNotifier | None = None
    if options.callback_target and options.encrypter is not None:
        # Controls that add to a 客服 account's log announce it as the platform does (W:94670).
        clients = Clients(httpx.Client)
        sender = Sender(callback_url(options.callback_target), options.encrypter, clients, Stats())
        notifier = KfNotifier(sender, lambda open_kfid: corp.kf.callback(open_kfid))
        corp.kf.listeners.append(notifier.notify)
        _announce_archive(corp, sender, options)
    app.state.notifier = notifier
    if options.mp is not None:
        mount_mp(app, options.mp, callback_target=options.callback_target, safe=options.mp_safe)

    @app.middleware("http")
    async def name_the_simulator(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if corp.media_base.startswith("https://wework.qpic.cn"):
            corp.media_base = str(request.base_url).rstrip("/")  # contact-way QR images served below
        response: Response = await call_next(request)
        response.headers["Server"] = "siyu-wecom-simulator"
        response.headers["X-Siyu-Simulator"] = NAME
        return response

    @app.get("/", response_class=HTMLResponse)
    def root(request: Request) -> str:
        facts = corp.overview()
        base = str(request.base_url) + "cgi-bin/"
        desks = "".join(f"<li>{html.escape(a['name'])}: <code>{html.escape(a['open_kfid'])}</code> — servicers "
                        f"{html.escape(', '.join(a['servicers']))}</li>" for a in facts["kf"]["accounts"])
        ways = "".join(f"<li><code>{html.escape(w['state'] or '-')}</code> → {html.escape(', '.join(w['user']))}</li>"
                       for w in facts["contact_ways"])
        return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{NAME}</title></head><body>"
                f"<h1>{NAME}</h1><p>This is <strong>not</strong> WeCom: a simulator for demos and tests.</p>"
                f"<p>API base: <code>{html.escape(base)}</code> — corp id <code>{html.escape(facts['corp_id'])}</code>"
                f", seed {facts['seed']}</p><ul><li>members: {html.escape(', '.join(facts['members']))}</li>"
                f"<li>external contacts: {facts['contacts']} ({facts['friendships']} friendships)</li>"
                f"<li>group chats: {facts['group_chats']}</li><li>corp tags: {facts['tags']}</li>"
                f"<li>welcome messages sent: {facts['welcome_messages']}</li>"
                f"<li>mass sends: {facts['mass_sends']}</li></ul><h2>微信客服 (kf)</h2><ul>{desks}</ul>"
                f"<p>customers: {facts['kf']['customers']}, messages and events in the logs: "
                f"{facts['kf']['messages']}, delivered to customers: {facts['kf']['delivered']}</p>"
                f"<h2>Contact ways (state → members)</h2>"
                f"<ul>{ways}</ul><p><a href='/_simulator/state'>full state (JSON)</a></p></body></html>")

    @app.get("/wwpic/{name}/0")
    def contact_way_qr(name: str) -> Response:
        """The image at a contact way's ``qr_code`` URL (W:92228 配置客户联系「联系我」方式: ``qr_code``)."""
        body = corp.contact_way_image(name)
        if body is None:
            return Response(status_code=404)
        return Response(body, media_type="image/png")

    @app.get("/cgi-bin/gettoken")
    async def gettoken(request: Request) -> Response:
        """W:91039 获取access_token."""
        hit = faults.take("gettoken")
        if hit is not None and hit.latency:
            await asyncio.sleep(hit.latency)
        if hit is not None and hit.fail:
            return _fault(hit.fault, request)
        corpid = request.query_params.get("corpid", "")
        corpsecret = request.query_params.get("corpsecret", "")
        try:
            if not corpid:
                raise ApiError(41002, "corpid missing")
            if corpid != corp.state.corp_id:
                raise ApiError(40013, "invalid corpid")
            if not corpsecret:
                raise ApiError(41004, "corpsecret missing")
            if not secrets.compare_digest(corpsecret.encode(), options.secret.encode()):
                raise ApiError(40001, "invalid credential")
        except ApiError as exc:
            return _error(exc, request)
        token, expires_in = tokens.issue()
        return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in})

    @app.post("/cgi-bin/media/upload")
    async def upload_media(request: Request) -> Response:
        """W:90253 上传临时素材: multipart/form-data with the file as ``media``, ``type`` in the query;
        answers ``type``, ``media_id`` (valid 3 days) and ``created_at``. Only name, type and size are kept."""
        hit = faults.take("media/upload")
        if hit is not None and hit.fail:
            return _fault(hit.fault, request)
        try:
            tokens.check(request.query_params.get("access_token", ""), options.rate_limit)
            form = await request.form()
            media = form.get("media")
            if media is None or isinstance(media, str):
                raise ApiError(41005, "media data missing")  # W:90313 缺少多媒体文件数据
            data = await media.read()
            result = corp.api_upload_media(dict(request.query_params), filename=media.filename or "",
                                           head=data[:16], size=len(data))
        except ApiError as exc:
            return _error(exc, request)
        return JSONResponse({"errcode": 0, "errmsg": "ok", **result})

    @app.post("/cgi-bin/media/upload_attachment")
    async def upload_attachment(request: Request) -> Response:
        """W:96347 上传附件资源: multipart/form-data with the file as ``media``; ``media_type`` and
        ``attachment_type`` in the query. Only the file's name and size are kept."""
        hit = faults.take("media/upload_attachment")
        if hit is not None and hit.fail:
            return _fault(hit.fault, request)
        try:
            tokens.check(request.query_params.get("access_token", ""), options.rate_limit)
            form = await request.form()
            media = form.get("media")
            if media is None or isinstance(media, str):
                raise ApiError(41005, "media data missing")  # W:90313 缺少多媒体文件数据
            data = await media.read()
            result = corp.moments.api_upload_attachment(dict(request.query_params), filename=media.filename or "",
                                                        size=len(data))
        except ApiError as exc:
            return _error(exc, request)
        return JSONResponse({"errcode": 0, "errmsg": "ok", **result})

    @app.api_route("/cgi-bin/{path:path}", methods=["GET", "POST"])
    async def wecom_api(path: str, request: Request) -> Response:
        route = ROUTES.get(path.strip("/"))
        hit = faults.take(path.strip("/")) if route is not None else None
        if hit is not None and hit.latency:
            await asyncio.sleep(hit.latency)
        if hit is not None and hit.fail and not hit.fault.after:
            return _fault(hit.fault, request)
        if route is None:
            return JSONResponse({"errcode": 404, "errmsg": f"{NAME} does not implement /cgi-bin/{path}"},
                                status_code=404)
        method, handler = route
        try:
            tokens.check(request.query_params.get("access_token", ""), options.rate_limit)
            if method == "POST" or (method == "ANY" and request.method == "POST"):
                if request.method != "POST":
                    raise ApiError(40058, "this api requires POST")  # what WeCom answers a GET here
                params = await _json_body(request)
            else:
                params = dict(request.query_params)
            result = operator.attrgetter(handler)(corp)(params)
        except ApiError as exc:
            return _error(exc, request)
        if hit is not None and hit.fail:  # "after": it took effect, but the caller never learns
            return _fault(hit.fault, request)
        return JSONResponse({"errcode": 0, "errmsg": "ok", **result})

    @app.get("/_simulator/state")
    def state() -> JSONResponse:
        return JSONResponse(corp.dump())

    @app.post("/_simulator/save")
    def save() -> JSONResponse:
        if options.state_path is None:
            return JSONResponse({"saved": False, "reason": "started without --state"}, status_code=409)
        corp.save(options.state_path)
        return JSONResponse({"saved": True, "path": str(options.state_path)})

    @app.get("/_simulator/received")
    def received(external_userid: str = "", chat_id: str = "") -> JSONResponse:
        """What customers (or one customer, one group chat) received: ``{"messages": [...]}``, oldest first —
        welcome messages, mass sends, and 微信客服 messages (``via`` kf / kf_event / kf_servicer, with ``msgid``)."""
        return JSONResponse({"messages": corp.received(external_userid=external_userid, chat_id=chat_id)})

    @app.get("/_simulator/app_messages")
    def app_messages(userid: str = "") -> JSONResponse:
        """What members received from the corp's self-built app (message/send, W:90236), oldest first."""
        return JSONResponse({"messages": corp.app_messages(userid=userid)})

    @app.post("/_simulator/tokens/expire")
    def expire_tokens() -> JSONResponse:
        return JSONResponse({"expired": tokens.expire_all()})

    @app.get("/_simulator/faults")
    def list_faults() -> JSONResponse:
        return JSONResponse(faults.describe())

    @app.post("/_simulator/faults")
    async def add_fault(request: Request) -> JSONResponse:
        """``{"path": "externalcontact/list", "times": 3, "errcode": 45009}`` or ``{"status": 503, …}``;
        ``{"path": "kf/send_msg", "latency": 0.2, "errcode": -1, "percent": 10, "after": true, "forever": true}``
        makes every send slow and one in ten fail transiently, after delivering."""
        try:
            fault = faults.add(await _json_body(request))
        except ApiError as exc:
            return JSONResponse({"errcode": exc.errcode, "errmsg": exc.errmsg}, status_code=400)
        return JSONResponse(fault.describe())

    @app.delete("/_simulator/faults")
    def clear_faults() -> JSONResponse:
        faults.clear()
        return JSONResponse({"cleared": True})

    @app.post("/_simulator/finance/chatdata")
    async def finance_chatdata(request: Request) -> Response:
        """THE SIMULATOR'S STAND-IN FOR THE FINANCE SDK'S GetChatData (not a WeCom HTTP API: on the platform
        the C SDK fetches this). Body {seq, limit ≤ 1000}; answers {errcode, errmsg, chatdata: [...]}."""
        try:
            tokens.check(request.query_params.get("access_token", ""), options.rate_limit)
            body = await _json_body(request)
            items = corp.archive.chatdata(int(body.get("seq") or 0), int(body.get("limit") or 1000))
        except ApiError as exc:
            return _error(exc, request)
        except (TypeError, ValueError):
            return JSONResponse({"errcode": 40058, "errmsg": "seq and limit are numbers"})
        return JSONResponse({"errcode": 0, "errmsg": "ok", "chatdata": items})

    @app.post("/_simulator/{operation}")
    async def operate(operation: str, request: Request) -> JSONResponse:
        if operation not in DRIVER_OPERATIONS:
            return JSONResponse({"errcode": 404, "errmsg": f"unknown simulator operation {operation}"},
                                status_code=404)
        try:
            kwargs = await _json_body(request)
            result = await run_in_threadpool(corp.operation(operation), **kwargs)
        except ApiError as exc:
            return JSONResponse({"errcode": exc.errcode, "errmsg": exc.errmsg}, status_code=400)
        except TypeError as exc:
            return JSONResponse({"errcode": 40058, "errmsg": f"bad arguments: {exc}"}, status_code=400)
        return JSONResponse(result)

    return app


def _announce_archive(corp: VirtualCorp, sender: Sender, options: ServerOptions) -> None:
    from siyu.simulator.archive import announce

    announce(corp, sender, interval=options.archive_notify_interval)


class RunningServer:
    """uvicorn in a background thread (the demo, the driver's in-process simulator, tests)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.host = host
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    server_header=False, access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="siyu-wecom-simulator", daemon=True)

    def start(self, timeout: float = 10.0) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{NAME} did not start on {self.host}")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets if self.server.servers else []
        return int(sockets[0].getsockname()[1]) if sockets else int(self.server.config.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
