"""The WeCom server API client: every call Siyu makes to WeCom goes through this module.

It is wechatpy's WeCom client (``wechatpy.enterprise.WeChatClient``, pinned at 1.8.18) with
the transport owned here:

- **API base** from the connection settings (``SIYU_WECOM_API_BASE`` or the console), so the
  simulator stands in for WeCom; wechatpy hard-codes the real ``gettoken`` URL, so
  ``fetch_access_token`` is ours.
- **Access token** cached in a wechatpy session storage that every worker shares: Redis when
  ``SIYU_REDIS_URL`` is set, otherwise a row of ``app_setting`` written in its own short
  transaction; each process keeps a copy for a minute so a call costs no storage read. The
  storage forgets a token five minutes before the platform does. The key is a hash of the
  corp id, secret and API base (wechatpy's own key holds the first ten characters of the
  secret). When the platform refuses a token anyway (40014 invalid, 42001 expired, 41001
  missing, 40001) the token is fetched again **once** and the call repeated — unless another
  worker already stored a newer one. wechatpy 1.8.18 retries these codes by recursing
  without a bound (a platform that keeps answering 42001 recurses until RecursionError), so
  its ``_request`` is replaced and that retry is this one, bounded.
- **Busy platform**: -1 (system busy), 45009 (frequency limit), 45033 (concurrency limit),
  45035 and 41063 (a mass send still being dispatched) are waited out — exponential backoff,
  capped, with some jitter, through an injectable ``sleep`` — and the call repeated, up to
  ``RetryPolicy.attempts`` tries; then ``WecomApiError`` with ``retryable=True`` is raised, which
  a job turns into a later retry (nothing is dropped). HTTP 5xx, 429 and connection failures
  are waited out the same way, with one exception: a call that creates something (a mass
  send, a contact way, a welcome message, a transfer …) whose answer was lost *after* the
  platform may have acted on it (HTTP 500/502/504, a read timeout, a dropped connection) is
  not repeated blindly — that would send twice — and raises at once (``retryable=False``).
  Any other errcode raises at once with the platform's errcode and errmsg.

``client_for(session_or_config)`` returns a ``WecomApi``: typed methods, one per call Siyu
makes, returning the platform's JSON. Calls wechatpy 1.8.18 lacks (batch get, remarks, the
newer mass-send results, transfers, …) are added in its style in ``WeChatExternalContactMore``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from urllib3.exceptions import ConnectTimeoutError
from wechatpy.client.api.base import BaseWeChatAPI
from wechatpy.enterprise import WeChatClient
from wechatpy.session import SessionStorage
from wechatpy.utils import json as wechat_json

from siyu.core.db import transaction
from siyu.core.i18n import N_, _
from siyu.core.models import AppSetting
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer
from siyu.wecom import config
from siyu.wecom.config import WecomConfig

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin/"
MAX_QR_IMAGE_BYTES = 2 * 1024 * 1024  # a 「联系我」 QR image is a few KB; anything this large is not one
# The platform refused the token: fetch a new one once and repeat the call.
TOKEN_ERRCODES = frozenset({40001, 40014, 41001, 42001})
# The platform is busy or limiting us: wait and repeat.
BUSY_ERRCODES = frozenset({-1, 45009, 45033, 45035, 41063})
NOT_EXTERNAL_CONTACT = 84061  # also what externalcontact/list answers for a member without customers
# HTTP answers that mean the request was not carried out (so even a create may be repeated).
NOT_CARRIED_OUT = frozenset({429, 503})
# Calls that create or send something: not repeated when the platform may already have acted.
CREATES = frozenset({
    "externalcontact/add_contact_way", "externalcontact/add_corp_tag", "externalcontact/send_welcome_msg",
    "externalcontact/add_msg_template", "externalcontact/transfer_customer",
    "externalcontact/resigned/transfer_customer", "kf/send_msg_on_event", "kf/service_state/trans",
    "externalcontact/groupchat/add_join_way", "externalcontact/group_welcome_template/add",
})
# 群活码 (W:92229): at most 5 chat ids per config; room_base_name at most 40 characters; state at most 30.
JOIN_WAY_CHATS = 5
JOIN_WAY_ROOM_BASE_NAME = 40
JOIN_WAY_STATE = 30
# Group statistics (W:96359): from yesterday back 180 days, at most 30 days per call, at most 100 owners.
GROUP_STAT_DAYS_BACK = 180
GROUP_STAT_SPAN_DAYS = 30
GROUP_STAT_OWNERS = 100
# 入群欢迎语素材 (W:92366): at most 100 templates per corp; %NICKNAME% is the joiner's name.
GROUP_WELCOME_TEMPLATES = 100
GROUP_WELCOME_NICKNAME = "%NICKNAME%"
# 企业群发 to customer groups (W:92135): at most 2,000 group chats per add_msg_template task.
GROUP_MASS_SEND_CHATS = 2000
# 企业群发 add_msg_template (W:92135): text.content "最长为4000个字节". The one limit every mass send reads
# (campaigns, 客户SOP, group posts) and the connector checks before a call.
MASS_SEND_TEXT_BYTES = 4000
# 客户朋友圈: a moment task is created once (W:96351); an answer lost after it may have been made is not repeated.
CREATES = CREATES | {"externalcontact/add_moment_task"}
MOMENT_TEXT_MAX_CHARS = 2000  # W:96351 add_moment_task: text.content "最多支持传入2000个字符"
MOMENT_IMAGES_MAX = 9  # W:96351 add_moment_task: attachments "最多支持9个图片类型"
MOMENT_LIST_SPAN_SECONDS = 30 * 86400  # W:96352 get_moment_list: "起止时间间隔不能超过30天"
MOMENT_LIST_LIMIT = 20  # W:96352 get_moment_list: limit "最大值20"
MOMENT_PAGE_LIMIT = 1000  # W:96352 get_moment_task / get_moment_customer_list: limit "最大值1000"
# kf/send_msg is not among them: it carries Siyu's own msgid, which the platform dedupes, so a send whose
# answer was lost is repeated safely (the customer gets it once).
KF_SYNC_LIMIT = 1000  # kf/sync_msg: "limit … 默认值和最大值都为1000" (W:94670)
KF_CUSTOMERS_PER_CALL = 100  # kf/customer/batchget: external_userid_list 1 to 100 ids (W:95159)
KF_ACCOUNT_PAGE = 100  # kf/account/list: limit 1 to 100 (W:94661)
# msgaudit/check_single_agree: "目前一次请求只支持最多100个查询条目" (W:91782)
ARCHIVE_AGREE_PER_CALL = 100
# externalcontact/get_user_behavior_data: "最大查询跨度为30天", "最近180天内的数据", userid "最多100个", and
# several userids answer their sum, so Siyu asks one member at a time (W:96358).
BEHAVIOUR_SPAN_DAYS = 30
BEHAVIOUR_KEPT_DAYS = 180
# message/send 发送应用消息 (W:90236): touser "最多支持1000个"; textcard title "不超过128个字节", description
# "不超过512个字节" (longer is cut by the platform: Siyu cuts at a character boundary first), btntxt "不超过4个文字";
# enable_duplicate_check: the same request within duplicate_check_interval (default 1800 s, at most 4 hours)
# is not delivered again — what makes a resend after a lost answer safe.
APP_MESSAGE_USERS = 1000
TEXTCARD_TITLE_BYTES = 128
TEXTCARD_DESCRIPTION_BYTES = 512
TEXTCARD_BUTTON_CHARS = 4
DUPLICATE_CHECK_SECONDS = 4 * 3600
CREATES = CREATES | {"message/send"}
# 上传临时素材 media/upload (W:90253): "所有文件size必须大于5个字节", 图片 10MB JPG/PNG, media_id "仅三天内有效";
# send_welcome_msg / add_msg_template attachments take these media_ids (W:92137, W:92135).
MEDIA_MIN_BYTES = 5
MEDIA_IMAGE_MAX_BYTES = 10 * 1024 * 1024
MEDIA_IMAGE_TYPES = ("image/jpeg", "image/png")
MEDIA_FILE_MAX_BYTES = 20 * 1024 * 1024
MEDIA_SECONDS = 3 * 86400
TOKEN_MARGIN_SECONDS = 300  # the storage forgets a token this long before the platform does
LOCAL_COPY_SECONDS = 60  # how long a process uses its copy before reading the shared storage again
TOKEN_KEY_PREFIX = "wecom_token:"  # noqa: S105 - a key name, not a password
_SECRET_IN_URL = re.compile(r"((?:corpsecret|access_token)=)[^&\s'\")]+")


class WecomApiError(Exception):
    """WeCom refused a call (``errcode``/``errmsg`` as the platform sent them) or could not be reached.

    ``errcode`` is None when no platform answer came back (connection failure, HTTP 5xx).
    ``retryable``: the platform was busy or unreachable and the retries here ran out — try the
    work again later (a job schedules itself again); otherwise repeating will not help.
    """

    def __init__(self, errcode: int | None, errmsg: str, *, api: str = "", retryable: bool = False,
                 http_status: int | None = None) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api
        self.retryable = retryable
        self.http_status = http_status
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" to {self.api}" if self.api else ""
        if self.errcode is None:
            return f"WeCom could not be reached{where}: {self.errmsg}"
        return f"WeCom answered {self.errcode}{where}: {self.errmsg}"

    def display(self) -> str:
        """The console's words for it, in the viewer's language, with the platform's exact errmsg."""
        if self.errcode is None:
            return _("Could not reach WeCom: {message}", message=self.errmsg)
        return _("WeCom answered {code}: {message}", code=self.errcode, message=self.errmsg)


class WecomNotConfigured(WecomApiError):
    def __init__(self) -> None:
        super().__init__(None, "the corp ID and the Secret are needed for API calls")

    def display(self) -> str:
        return _("Fill in the corp ID and the Secret first.")


# ---------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How long a busy or unreachable platform is waited out: ``attempts`` tries in all, the
    waits between them doubling from ``base_delay`` up to ``max_delay`` seconds (plus up to
    ``jitter`` of each wait, so workers limited together do not come back together)."""

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.25
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first)."""
        grown = self.base_delay * 2 ** (retry - 1)
        return min(self.max_delay, grown * (1 + self.jitter * random.random()))  # noqa: S311 - not a secret


# The console's "test connection" answers within a few seconds, busy platform or not.
CONSOLE_POLICY = RetryPolicy(attempts=2, base_delay=0.5, max_delay=1.0)


def _scrub(text: str, *secrets: str) -> str:
    """Error text without the secret or a token (a requests error quotes the URL it tried)."""
    text = _SECRET_IN_URL.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _never_sent(exc: requests.RequestException) -> bool:
    """The connection was never made, so the platform cannot have acted on the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, ConnectTimeoutError)  # NewConnectionError (refused, DNS) is one of these


# ---------------------------------------------------------------- token storage


class DatabaseStorage(SessionStorage):
    """wechatpy session storage in the ``app_setting`` table, for installations without Redis.

    Every read and write is its own short transaction on its own connection, so a caller's
    open transaction never holds a token back from other workers. A failed write is logged
    and not raised: the token still works from the process's copy.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def get(self, key: str, default: Any = None) -> Any:
        try:
            with transaction() as session:
                row = session.get(AppSetting, key)
                value = dict(row.value) if row is not None else None
        except SQLAlchemyError as exc:
            log.warning("could not read the shared WeCom token: %s", exc)
            return default
        if not value or float(value.get("expires_at", 0)) <= self.clock():
            return default
        return value.get("value", default)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        if value is None:
            return
        data = {"value": value, "expires_at": self.clock() + (ttl or 7200)}
        for _attempt in range(2):  # a first insert can race another worker's: then update its row
            try:
                with transaction() as session:
                    row = session.get(AppSetting, key)
                    if row is None:
                        session.add(AppSetting(key=key, value=data))
                    else:
                        row.value = data
                return
            except IntegrityError:
                continue
            except SQLAlchemyError as exc:
                log.warning("could not share the WeCom token with other workers: %s", exc)
                return

    def delete(self, key: str) -> None:
        try:
            with transaction() as session:
                session.execute(delete(AppSetting).where(AppSetting.key == key))
        except SQLAlchemyError as exc:
            log.warning("could not delete the shared WeCom token: %s", exc)


class TokenStorage(SessionStorage):
    """The shared storage (Redis or the database) with a short-lived copy in this process."""

    def __init__(self, shared: Any, clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.clock = clock
        self.local: dict[str, tuple[Any, float]] = {}
        self.lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self.lock:
            copy = self.local.get(key)
        if copy is not None and copy[1] > self.clock():
            return copy[0]
        value = self.fresh(key)
        return default if value is None else value

    def fresh(self, key: str) -> Any:
        """What the shared storage holds now (another worker may have stored a newer token)."""
        try:
            value = self.shared.get(key)
        except Exception as exc:  # a storage outage must not stop API calls: fetch a token instead
            log.warning("could not read the shared WeCom token: %s", exc)
            value = None
        with self.lock:
            if value is None:
                self.local.pop(key, None)
            else:
                self.local[key] = (value, self.clock() + LOCAL_COPY_SECONDS)
        return value

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        if value is None:
            return
        with self.lock:
            self.local[key] = (value, self.clock() + min(LOCAL_COPY_SECONDS, ttl or LOCAL_COPY_SECONDS))
        try:
            self.shared.set(key, value, ttl)
        except Exception as exc:
            log.warning("could not share the WeCom token with other workers: %s", exc)

    def delete(self, key: str) -> None:
        with self.lock:
            self.local.pop(key, None)
        try:
            self.shared.delete(key)
        except Exception as exc:
            log.warning("could not delete the shared WeCom token: %s", exc)


_storages: dict[str, TokenStorage] = {}
_storages_lock = threading.Lock()


def shared_storage() -> TokenStorage:
    """The process's token storage: Redis when ``SIYU_REDIS_URL`` is set, else the database."""
    settings = get_settings()
    where = settings.redis_url or settings.database_url
    with _storages_lock:
        storage = _storages.get(where)
        if storage is None:
            if settings.redis_url:
                import redis
                from wechatpy.session.redisstorage import RedisStorage

                shared: Any = RedisStorage(redis.Redis.from_url(settings.redis_url), prefix="siyu")
            else:
                shared = DatabaseStorage()
            storage = _storages[where] = TokenStorage(shared)
        return storage


_refresh_locks: dict[str, threading.Lock] = {}
_refresh_locks_guard = threading.Lock()


def _refresh_lock(key: str) -> threading.Lock:
    """One token fetch at a time per corp and secret in this process (threads wait for it)."""
    with _refresh_locks_guard:
        return _refresh_locks.setdefault(key, threading.Lock())


def token_key(corp_id: str, secret: str, api_base: str) -> str:
    digest = hashlib.sha256(f"{corp_id}\n{secret}\n{api_base}".encode()).hexdigest()
    return f"{TOKEN_KEY_PREFIX}{corp_id[:24]}:{digest[:24]}"


# ---------------------------------------------------------------- wechatpy: the calls 1.8.18 lacks


def _join_way_fields(*, chat_ids: list[str], state: str, remark: str, auto_create: bool, room_base_name: str,
                     room_base_id: int | None) -> dict[str, Any]:
    if not 1 <= len(chat_ids) <= JOIN_WAY_CHATS:
        raise ValueError(f"a group code holds 1 to {JOIN_WAY_CHATS} groups")
    if len(state) > JOIN_WAY_STATE or len(room_base_name) > JOIN_WAY_ROOM_BASE_NAME:
        raise ValueError("state or room_base_name too long")
    fields: dict[str, Any] = {"chat_id_list": list(chat_ids), "state": state, "remark": remark[:30],
                              "auto_create_room": 1 if auto_create else 0}
    if auto_create:
        fields["room_base_name"] = room_base_name
        if room_base_id is not None:
            fields["room_base_id"] = room_base_id
    return fields


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class WeChatExternalContactMore(BaseWeChatAPI):
    """客户联系 calls wechatpy 1.8.18 does not have (or has without a parameter Siyu needs).

    https://developer.work.weixin.qq.com/document/path/92109
    """

    def get(self, external_userid: str, cursor: str | None = None) -> Any:
        """获取客户详情, with the cursor for a customer followed by more than 500 members (92114)."""
        return self._get("externalcontact/get", params=_given(external_userid=external_userid, cursor=cursor))

    def batch_get_by_user(self, userid_list: list[str], cursor: str | None = None, limit: int = 100) -> Any:
        """批量获取客户详情: the customers of up to 100 members, a page at a time (92994)."""
        return self._post("externalcontact/batch/get_by_user",
                          data=_given(userid_list=userid_list, cursor=cursor or "", limit=limit))

    def remark(self, userid: str, external_userid: str, remark: str | None = None, description: str | None = None,
               remark_company: str | None = None, remark_mobiles: list[str] | None = None,
               remark_pic_mediaid: str | None = None) -> Any:
        """修改客户备注信息: only the fields given are changed (92115)."""
        return self._post("externalcontact/remark", data=_given(
            userid=userid, external_userid=external_userid, remark=remark, description=description,
            remark_company=remark_company, remark_mobiles=remark_mobiles, remark_pic_mediaid=remark_pic_mediaid))

    def get_corp_tag_list(self, tag_id: list[str] | None = None, group_id: list[str] | None = None) -> Any:
        """获取企业标签库, filtered by tag or by group (92117)."""
        return self._post("externalcontact/get_corp_tag_list", data=_given(tag_id=tag_id, group_id=group_id))

    def update_contact_way(self, config_id: str, **fields: Any) -> Any:
        """更新「联系我」方式: only the fields given (wechatpy's always resets skip_verify) (92228)."""
        return self._post("externalcontact/update_contact_way", data=_given(config_id=config_id, **fields))

    def list_contact_way(self, start_time: int | None = None, end_time: int | None = None,
                         cursor: str | None = None, limit: int = 100) -> Any:
        """获取企业已配置的「联系我」列表 (92228)."""
        return self._post("externalcontact/list_contact_way",
                          data=_given(start_time=start_time, end_time=end_time, cursor=cursor, limit=limit))

    def groupchat_get(self, chat_id: str, need_name: int = 0) -> Any:
        """获取客户群详情, with members' names when ``need_name`` is 1 (92122)."""
        return self._post("externalcontact/groupchat/get", data={"chat_id": chat_id, "need_name": need_name})

    def get_groupmsg_task(self, msgid: str, cursor: str | None = None, limit: int = 1000) -> Any:
        """获取群发成员发送任务列表 (93338)."""
        return self._post("externalcontact/get_groupmsg_task", data=_given(msgid=msgid, cursor=cursor, limit=limit))

    def get_groupmsg_send_result(self, msgid: str, userid: str, cursor: str | None = None,
                                 limit: int = 1000) -> Any:
        """获取企业群发成员执行结果 (93338)."""
        return self._post("externalcontact/get_groupmsg_send_result",
                          data=_given(msgid=msgid, userid=userid, cursor=cursor, limit=limit))

    def remind_groupmsg_send(self, msgid: str) -> Any:
        """提醒成员群发 (W:97610): at most 3 times per task in 24 hours."""
        return self._post("externalcontact/remind_groupmsg_send", data={"msgid": msgid})

    def cancel_groupmsg_send(self, msgid: str) -> Any:
        """停止企业群发 (W:97611): members who have not sent it can no longer send it."""
        return self._post("externalcontact/cancel_groupmsg_send", data={"msgid": msgid})

    def groupchat_add_join_way(self, **fields: Any) -> Any:
        """配置客户群进群方式 (群活码) (92229)."""
        return self._post("externalcontact/groupchat/add_join_way", data=_given(**fields))

    def group_welcome_template_add(self, text: str) -> Any:
        """添加入群欢迎语素材 (92366); answers ``template_id``."""
        return self._post("externalcontact/group_welcome_template/add", data={"text": {"content": text}})

    def group_welcome_template_edit(self, template_id: str, text: str) -> Any:
        """编辑入群欢迎语素材 (92366)."""
        return self._post("externalcontact/group_welcome_template/edit",
                          data={"template_id": template_id, "text": {"content": text}})

    def group_welcome_template_get(self, template_id: str) -> Any:
        """获取入群欢迎语素材 (92366)."""
        return self._post("externalcontact/group_welcome_template/get", data={"template_id": template_id})

    def group_welcome_template_del(self, template_id: str) -> Any:
        """删除入群欢迎语素材 (92366)."""
        return self._post("externalcontact/group_welcome_template/del", data={"template_id": template_id})

    def groupchat_get_join_way(self, config_id: str) -> Any:
        """获取客户群进群方式配置 (92229)."""
        return self._post("externalcontact/groupchat/get_join_way", data={"config_id": config_id})

    def groupchat_update_join_way(self, config_id: str, **fields: Any) -> Any:
        """更新客户群进群方式配置: the platform replaces the whole config (92229)."""
        return self._post("externalcontact/groupchat/update_join_way", data=_given(config_id=config_id, **fields))

    def groupchat_del_join_way(self, config_id: str) -> Any:
        """删除客户群进群方式配置 (92229)."""
        return self._post("externalcontact/groupchat/del_join_way", data={"config_id": config_id})

    def groupchat_statistic(self, **fields: Any) -> Any:
        """获取「群聊数据统计」数据, by owner (96359)."""
        return self._post("externalcontact/groupchat/statistic", data=_given(**fields))

    def groupchat_statistic_group_by_day(self, **fields: Any) -> Any:
        """获取「群聊数据统计」数据, by day (96359)."""
        return self._post("externalcontact/groupchat/statistic_group_by_day", data=_given(**fields))

    def transfer_customer(self, handover_userid: str, takeover_userid: str, external_userid: list[str],
                          transfer_success_msg: str | None = None) -> Any:
        """分配在职成员的客户 (在职继承), up to 100 customers (92125)."""
        return self._post("externalcontact/transfer_customer", data=_given(
            handover_userid=handover_userid, takeover_userid=takeover_userid, external_userid=external_userid,
            transfer_success_msg=transfer_success_msg))

    def transfer_result(self, handover_userid: str, takeover_userid: str, cursor: str | None = None) -> Any:
        """查询在职继承的客户接替状态 (94088)."""
        return self._post("externalcontact/transfer_result", data=_given(
            handover_userid=handover_userid, takeover_userid=takeover_userid, cursor=cursor))

    def resigned_transfer_customer(self, handover_userid: str, takeover_userid: str,
                                   external_userid: list[str]) -> Any:
        """分配离职成员的客户 (离职继承), up to 100 customers (94081)."""
        return self._post("externalcontact/resigned/transfer_customer", data={
            "handover_userid": handover_userid, "takeover_userid": takeover_userid,
            "external_userid": external_userid})

    def resigned_transfer_result(self, handover_userid: str, takeover_userid: str,
                                 cursor: str | None = None) -> Any:
        """查询离职继承的客户接替状态 (94082)."""
        return self._post("externalcontact/resigned/transfer_result", data=_given(
            handover_userid=handover_userid, takeover_userid=takeover_userid, cursor=cursor))

    def get_unassigned_list(self, cursor: str | None = None, page_size: int = 1000) -> Any:
        """获取待分配的离职成员的客户, by cursor (wechatpy's takes the older page_id) (92124)."""
        return self._post("externalcontact/get_unassigned_list", data=_given(cursor=cursor, page_size=page_size))

    def get_user_behavior_data(self, userid: list[str], start_time: int, end_time: int) -> Any:
        """获取「联系客户统计」数据: daily rows over [start_time, end_time] (96358)."""
        return self._post("externalcontact/get_user_behavior_data",
                          data={"userid": userid, "start_time": start_time, "end_time": end_time})


class WeChatKf(BaseWeChatAPI):
    """微信客服 calls (wechatpy 1.8.18 has none). 微信客服 › 会话分配与消息收发, W:94670 and its pages."""

    def account_list(self, offset: int = 0, limit: int = 100) -> Any:
        """获取客服账号列表: ``account_list`` of {open_kfid, name, avatar} (W:94661)."""
        return self._post("kf/account/list", data={"offset": offset, "limit": limit})

    def sync_msg(self, open_kfid: str, cursor: str = "", token: str | None = None, limit: int = 1000) -> Any:
        """读取消息: messages after ``cursor``; ``token`` from the callback (10 minutes) (W:94670)."""
        return self._post("kf/sync_msg", data=_given(cursor=cursor or None, token=token or None, limit=limit,
                                                    open_kfid=open_kfid))

    def send_msg(self, body: dict[str, Any]) -> Any:
        """发送消息: {touser, open_kfid, msgid, msgtype, <msgtype>: {...}} (W:94677)."""
        return self._post("kf/send_msg", data=body)

    def send_msg_on_event(self, body: dict[str, Any]) -> Any:
        """发送欢迎语等事件响应消息: {code, msgid, msgtype, text|msgmenu} (W:95122)."""
        return self._post("kf/send_msg_on_event", data=body)

    def service_state_get(self, open_kfid: str, external_userid: str) -> Any:
        """获取会话状态: ``service_state`` and ``servicer_userid`` (W:94669)."""
        return self._post("kf/service_state/get", data={"open_kfid": open_kfid, "external_userid": external_userid})

    def service_state_trans(self, open_kfid: str, external_userid: str, service_state: int,
                            servicer_userid: str | None = None) -> Any:
        """变更会话状态 (W:94669)."""
        return self._post("kf/service_state/trans", data=_given(
            open_kfid=open_kfid, external_userid=external_userid, service_state=service_state,
            servicer_userid=servicer_userid))

    def customer_batchget(self, external_userid_list: list[str]) -> Any:
        """获取客户基础信息: ``customer_list`` of {external_userid, nickname, avatar, gender, unionid},
        up to 100 ids per call (W:95159)."""
        return self._post("kf/customer/batchget", data={"external_userid_list": external_userid_list,
                                                         "need_enter_session_context": 0})


class WeChatMsgAudit(BaseWeChatAPI):
    """会话内容存档 calls that are HTTP APIs (the messages themselves come through the finance SDK)."""

    def check_single_agree(self, info: list[dict[str, str]]) -> Any:
        """获取会话同意情况（单聊）: ``info`` of {userid, exteranalopenid} (the platform's spelling), up to 100;
        ``agreeinfo`` of {userid, exteranalopenid, agree_status, status_change_time} (W:91782)."""
        return self._post("msgaudit/check_single_agree", data={"info": info})


class WeChatMoments(BaseWeChatAPI):
    """客户朋友圈 calls (wechatpy 1.8.18 has none): W:96351 企业发表内容到客户的朋友圈, W:96352 发表记录,
    W:96347 上传附件资源."""

    def upload_attachment(self, media_type: str, filename: str, data: bytes, content_type: str) -> Any:
        """上传附件资源 for moments (``attachment_type=1``): ``media_id`` valid 3 days (W:96347)."""
        return self._post("media/upload_attachment", params={"media_type": media_type, "attachment_type": 1},
                          files={"media": (filename, data, content_type)})

    def add_moment_task(self, body: dict[str, Any]) -> Any:
        """创建发表任务: {text, attachments, visible_range} → ``jobid`` (W:96351)."""
        return self._post("externalcontact/add_moment_task", data=body)

    def get_moment_task_result(self, jobid: str) -> Any:
        """获取任务创建结果: ``status`` 1/2/3 and, when 3, ``result`` with ``moment_id`` (W:96351)."""
        return self._get("externalcontact/get_moment_task_result", params={"jobid": jobid})

    def get_moment_list(self, start_time: int, end_time: int, cursor: str = "", limit: int = 20,
                        filter_type: int = 0) -> Any:
        """获取企业全部的发表列表: a span ≤ 30 days, ≤ 20 a page (W:96352)."""
        return self._post("externalcontact/get_moment_list", data=_given(
            start_time=start_time, end_time=end_time, filter_type=filter_type, cursor=cursor or None, limit=limit))

    def get_moment_task(self, moment_id: str, cursor: str = "", limit: int = 1000) -> Any:
        """获取客户朋友圈企业发表的列表: each executor's ``publish_status`` (W:96352)."""
        return self._post("externalcontact/get_moment_task",
                          data=_given(moment_id=moment_id, cursor=cursor or None, limit=limit))

    def get_moment_customer_list(self, moment_id: str, userid: str, cursor: str = "", limit: int = 1000) -> Any:
        """获取客户朋友圈发表时选择的可见范围: ``customer_list`` of {userid, external_userid} (W:96352)."""
        return self._post("externalcontact/get_moment_customer_list",
                          data=_given(moment_id=moment_id, userid=userid, cursor=cursor or None, limit=limit))

    def get_moment_comments(self, moment_id: str, userid: str) -> Any:
        """获取客户朋友圈的互动数据: ``like_list`` and ``comment_list`` per customer (W:96352)."""
        return self._post("externalcontact/get_moment_comments", data={"moment_id": moment_id, "userid": userid})


# ---------------------------------------------------------------- the client


class WecomClient(WeChatClient):
    """wechatpy's WeCom client with Siyu's API base, shared token storage and retries."""

    external_contact_more = WeChatExternalContactMore()
    kf = WeChatKf()
    msgaudit = WeChatMsgAudit()
    moments = WeChatMoments()

    def __init__(self, corp_id: str, secret: str, *, api_base: str, storage: TokenStorage,
                 policy: RetryPolicy | None = None, timeout: float = 10.0) -> None:
        self.API_BASE_URL = api_base if api_base.endswith("/") else api_base + "/"
        self.policy = policy or RetryPolicy()
        self._token_key = token_key(corp_id, secret, self.API_BASE_URL)
        super().__init__(corp_id, secret, session=storage, timeout=timeout, auto_retry=False)
        self.session: TokenStorage = storage

    @property
    def access_token_key(self) -> str:
        return self._token_key

    @property
    def access_token(self) -> str:
        token = self.session.get(self.access_token_key)
        if token:
            return str(token)
        with _refresh_lock(self.access_token_key):
            token = self.session.fresh(self.access_token_key)  # fetched by another thread or worker meanwhile?
            if token:
                return str(token)
            return str(self.fetch_access_token()["access_token"])

    def fetch_access_token(self) -> dict[str, Any]:
        """gettoken at the configured API base; the token goes to the shared storage."""
        result = self._call("GET", self.API_BASE_URL + "gettoken", api="gettoken", with_token=False,
                            params={"corpid": self.corp_id, "corpsecret": self.secret})
        token = result.get("access_token")
        if not token:
            raise WecomApiError(None, "gettoken answered without an access_token", api="gettoken")
        expires_in = int(result.get("expires_in") or 7200)
        margin = TOKEN_MARGIN_SECONDS if expires_in > 2 * TOKEN_MARGIN_SECONDS else expires_in // 2
        self.session.set(self.access_token_key, token, max(1, expires_in - margin))
        self.expires_at = int(time.time()) + expires_in
        return result

    def _refresh_token(self, stale: str) -> None:
        """The platform refused ``stale``: use a newer shared token if another worker has one, else fetch."""
        with _refresh_lock(self.access_token_key):
            current = self.session.fresh(self.access_token_key)
            if current and current != stale:
                return
            log.info("WeCom refused the access token; fetching a new one")
            self.fetch_access_token()

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        """Replaces wechatpy's: same arguments, Siyu's token handling, retries and errors."""
        base = kwargs.pop("api_base_url", self.API_BASE_URL)
        url = url_or_endpoint if url_or_endpoint.startswith(("http://", "https://")) else base + url_or_endpoint
        path = url.split("?", 1)[0]
        api = path[len(base):] if path.startswith(base) else path.split("/cgi-bin/", 1)[-1]
        result_processor = kwargs.pop("result_processor", None)
        params = dict(kwargs.pop("params", None) or {})
        data = kwargs.pop("data", None)
        if isinstance(data, dict):
            data = wechat_json.dumps(data, ensure_ascii=False).encode("utf-8")
        kwargs.pop("timeout", None)
        result = self._call(method.upper(), url, api=api, params=params, data=data, **kwargs)
        return result_processor(result) if result_processor else result

    def _call(self, method: str, url: str, *, api: str, params: dict[str, Any], data: Any = None,
              with_token: bool = True, **kwargs: Any) -> dict[str, Any]:
        refreshed = False
        tries = 0
        creates = api in CREATES
        while True:
            query = dict(params)
            token = ""
            if with_token:
                token = self.access_token
                query["access_token"] = token
            outcome = self._attempt(method, url, api=api, query=query, data=data, creates=creates, **kwargs)
            if isinstance(outcome, dict):
                return outcome
            error = outcome
            if with_token and error.errcode in TOKEN_ERRCODES and not refreshed:
                refreshed = True
                self._refresh_token(stale=token)
                continue
            if not error.retryable:
                raise error
            tries += 1
            if tries >= self.policy.attempts:
                raise error
            delay = self.policy.delay(tries)
            log.warning("%s; waiting %.1f s before try %s of %s", error, delay, tries + 1, self.policy.attempts)
            self.policy.sleep(delay)

    def _attempt(self, method: str, url: str, *, api: str, query: dict[str, Any], data: Any, creates: bool,
                 **kwargs: Any) -> dict[str, Any] | WecomApiError:
        """One request: the platform's JSON on success, otherwise the error (retryable or not)."""
        try:
            res = self._http.request(method=method, url=url, params=query, data=data, timeout=self.timeout,
                                     **kwargs)
        except requests.RequestException as exc:
            sent = not _never_sent(exc)
            message = _scrub(f"{type(exc).__name__}: {exc}", self.secret, str(query.get("access_token", "")))
            if sent and creates:
                message += " (it may have been carried out, so it is not repeated automatically)"
            return WecomApiError(None, message, api=api, retryable=not (sent and creates))
        status = res.status_code
        if status >= 500 or status == 429:
            ambiguous = creates and status not in NOT_CARRIED_OUT
            message = f"HTTP {status}" + (" (it may have been carried out, so it is not repeated automatically)"
                                          if ambiguous else "")
            return WecomApiError(None, message, api=api, retryable=not ambiguous, http_status=status)
        try:
            result = orjson.loads(res.content)  # a kf/sync_msg page is 1,000 messages: several times json's speed
        except orjson.JSONDecodeError:
            try:  # WeCom's answers may carry raw control characters or broken UTF-8 that strict JSON refuses
                result = wechat_json.loads(res.content.decode("utf-8", "ignore"), strict=False)
            except ValueError:
                result = None
        if not isinstance(result, dict):
            return WecomApiError(None, f"HTTP {status} without a JSON answer", api=api, http_status=status,
                                 retryable=not creates)
        try:
            errcode = int(result.get("errcode") or 0)
        except (TypeError, ValueError):
            errcode = -1
        if status >= 400:
            return WecomApiError(errcode or None, str(result.get("errmsg") or f"HTTP {status}"), api=api,
                                 http_status=status)
        if errcode == 0:
            return dict(result)
        return WecomApiError(errcode, str(result.get("errmsg", "")), api=api, retryable=errcode in BUSY_ERRCODES)


# ---------------------------------------------------------------- the typed API Siyu uses


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class WecomApi:
    """One method per WeCom call Siyu makes; each returns the platform's JSON (lists are paged through)."""

    def __init__(self, client: WecomClient) -> None:
        self.client = client
        self.contact = client.external_contact
        self.more = client.external_contact_more

    # ---- connection and members

    def check_connection(self) -> list[str]:
        """Fetches a token (always asking the platform) and the members with customer contact."""
        self.client.fetch_access_token()
        return self.follow_users()

    def follow_users(self) -> list[str]:
        """获取配置了客户联系功能的成员列表."""
        return list(_dict(self.contact.get_follow_user_list()).get("follow_user", []))

    def members(self, department_id: int = 1, *, fetch_child: bool = True) -> list[dict[str, Any]]:
        """读取部门成员详情 (user/list)."""
        return list(self.client.user.list(department_id, fetch_child=fetch_child) or [])

    def member(self, userid: str) -> dict[str, Any]:
        return _dict(self.client.user.get(userid))

    # ---- external contacts (客户)

    def external_contacts(self, userid: str) -> list[str]:
        """The customers of one member; [] when they have none (the platform answers 84061 then)."""
        try:
            return list(_dict(self.contact.list(userid)).get("external_userid", []))
        except WecomApiError as exc:
            if exc.errcode == NOT_EXTERNAL_CONTACT:
                return []
            raise

    def external_contact(self, external_userid: str) -> dict[str, Any]:
        """获取客户详情: ``external_contact`` and every page of ``follow_user``."""
        answer = _dict(self.more.get(external_userid))
        follow_users = list(answer.get("follow_user", []))
        cursor = answer.pop("next_cursor", "")
        while cursor:
            page = _dict(self.more.get(external_userid, cursor=cursor))
            follow_users += page.get("follow_user", [])
            cursor = page.get("next_cursor", "")
        answer["follow_user"] = follow_users
        return answer

    def external_contacts_page(self, userids: list[str], cursor: str = "", limit: int = 100) -> dict[str, Any]:
        """批量获取客户详情, one page: ``external_contact_list`` and ``next_cursor``."""
        return _dict(self.more.batch_get_by_user(list(userids), cursor=cursor, limit=limit))

    def iter_external_contacts(self, userids: Iterable[str], limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every (customer, follow_info) of the members, 100 members per request, page after page."""
        for members in _chunks(list(dict.fromkeys(userids)), 100):
            cursor = ""
            while True:
                page = self.external_contacts_page(members, cursor=cursor, limit=limit)
                yield from page.get("external_contact_list", [])
                cursor = page.get("next_cursor", "")
                if not cursor:
                    break

    def write_remark(self, userid: str, external_userid: str, *, remark: str | None = None,
                     description: str | None = None, remark_company: str | None = None,
                     remark_mobiles: list[str] | None = None) -> None:
        """Writes the member's remark, description, company and phones of a customer back to WeCom."""
        self.more.remark(userid, external_userid, remark=remark, description=description,
                         remark_company=remark_company, remark_mobiles=remark_mobiles)

    # ---- corp tags (企业标签)

    def corp_tags(self, *, tag_ids: list[str] | None = None, group_ids: list[str] | None = None,
                  ) -> list[dict[str, Any]]:
        """The tag groups with their tags (all, or those of the tags or groups given)."""
        return list(_dict(self.more.get_corp_tag_list(tag_id=tag_ids, group_id=group_ids)).get("tag_group", []))

    def add_corp_tags(self, names: list[str], *, group_name: str | None = None, group_id: str | None = None,
                      order: int | None = None) -> dict[str, Any]:
        """Adds tags to a group (by id, or by name — created when new); returns the ``tag_group``."""
        tags = [{"name": name} for name in names]
        return _dict(_dict(self.contact.add_corp_tag(group_id, group_name, order, tags)).get("tag_group"))

    def edit_corp_tag(self, tag_or_group_id: str, *, name: str | None = None, order: int | None = None) -> None:
        self.contact.edit_corp_tag(tag_or_group_id, name, order)

    def delete_corp_tags(self, *, tag_ids: list[str] | None = None, group_ids: list[str] | None = None) -> None:
        self.contact.del_corp_tag(tag_id=tag_ids, group_id=group_ids)

    def mark_tags(self, userid: str, external_userid: str, *, add: list[str] | None = None,
                  remove: list[str] | None = None) -> None:
        """Marks and unmarks corp tags on one member's customer."""
        self.contact.mark_tag(userid, external_userid, add_tag=list(add or []), remove_tag=list(remove or []))

    # ---- contact ways (渠道活码)

    def add_contact_way(self, *, users: list[str], state: str = "", remark: str = "", kind: int | None = None,
                        scene: int = 2, skip_verify: bool = True, party: list[int] | None = None) -> dict[str, Any]:
        """A 「联系我」 code for one member (``kind`` 1) or several (2); returns ``config_id`` and ``qr_code``."""
        kind = kind if kind is not None else (1 if len(users) == 1 and not party else 2)
        answer = _dict(self.contact.add_contact_way(kind, scene, remark=remark or None, skip_verify=skip_verify,
                                                    state=state or None, user=list(users), party=party))
        return {k: answer[k] for k in ("config_id", "qr_code") if k in answer}

    def contact_way(self, config_id: str) -> dict[str, Any]:
        return _dict(_dict(self.contact.get_contact_way(config_id)).get("contact_way"))

    def update_contact_way(self, config_id: str, *, users: list[str] | None = None, state: str | None = None,
                           remark: str | None = None, skip_verify: bool | None = None,
                           party: list[int] | None = None) -> None:
        """Changes only what is given (the platform replaces ``user``/``party`` lists whole)."""
        self.more.update_contact_way(config_id, user=users, state=state, remark=remark, skip_verify=skip_verify,
                                     party=party)

    def delete_contact_way(self, config_id: str) -> None:
        self.contact.del_contact_way(config_id)

    def contact_way_image(self, qr_code: str) -> bytes:
        """The 「联系我」 QR image at a contact way's ``qr_code`` URL (W:92228), fetched once by the caller
        and kept: a poster or landing page must not depend on WeCom's image host at view time.

        A public image URL (no token); at most ``MAX_QR_IMAGE_BYTES``, and it must be a PNG or JPEG.
        Not reachable (or a 5xx) is retryable; anything else is permanent.
        """
        if not qr_code.startswith(("https://", "http://")):
            raise WecomApiError(None, "not an image URL", api="qr_code")
        try:
            with requests.get(qr_code, timeout=(5, 15), stream=True) as answer:
                if answer.status_code >= 500:
                    raise WecomApiError(None, f"HTTP {answer.status_code}", api="qr_code", retryable=True,
                                        http_status=answer.status_code)
                if answer.status_code != 200:
                    raise WecomApiError(None, f"HTTP {answer.status_code}", api="qr_code",
                                        http_status=answer.status_code)
                body = b""
                for part in answer.iter_content(64 * 1024):
                    body += part
                    if len(body) > MAX_QR_IMAGE_BYTES:
                        raise WecomApiError(None, "the QR image is larger than expected", api="qr_code")
        except requests.RequestException as exc:
            raise WecomApiError(None, _scrub(str(exc)), api="qr_code", retryable=True) from exc
        if not body.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
            raise WecomApiError(None, "the QR URL did not answer a PNG or JPEG image", api="qr_code")
        return body

    # ---- temporary material (media_ids for welcome messages and mass sends)

    def upload_media(self, media_type: str, filename: str, data: bytes, content_type: str) -> dict[str, Any]:
        """上传临时素材 (wechatpy's ``media.upload``): ``media_id`` and ``created_at`` (a Unix time), the
        media_id valid 3 days (W:90253). Refused before the call when over the platform's limits."""
        if len(data) <= MEDIA_MIN_BYTES:
            raise ValueError("media/upload takes files larger than 5 bytes")
        if media_type == "image" and (len(data) > MEDIA_IMAGE_MAX_BYTES or content_type not in MEDIA_IMAGE_TYPES):
            raise ValueError("media/upload takes JPG or PNG images of at most 10 MB")
        if media_type == "file" and len(data) > MEDIA_FILE_MAX_BYTES:
            raise ValueError("media/upload takes files of at most 20 MB")
        answer = _dict(self.client.media.upload(media_type, (filename, data, content_type)))
        return {"media_id": str(answer["media_id"]), "created_at": int(answer.get("created_at") or time.time())}

    # ---- welcome messages and mass sends

    def send_welcome_message(self, welcome_code: str, text: str = "",
                             attachments: list[dict[str, Any]] | None = None) -> None:
        """发送新客户欢迎语 with the code of the add event (valid 20 seconds, once)."""
        body: dict[str, Any] = {"welcome_code": welcome_code}
        if text:
            body["text"] = {"content": text}
        if attachments:
            body["attachments"] = attachments
        self.contact.send_welcome_msg(body)

    def create_mass_send(self, *, sender: str, text: str = "", external_userids: list[str] | None = None,
                         chat_type: str = "single", chat_ids: list[str] | None = None,
                         attachments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """创建企业群发: the member confirms it in their app; returns ``msgid`` and ``fail_list``."""
        body: dict[str, Any] = {"chat_type": chat_type, "sender": sender}
        if external_userids:
            body["external_userid"] = list(external_userids)
        if chat_ids:
            body["chat_id_list"] = list(chat_ids)
        if text:
            body["text"] = {"content": text}
        if attachments:
            body["attachments"] = attachments
        answer = _dict(self.contact.add_msg_template(body))
        return {"msgid": answer.get("msgid", ""), "fail_list": list(answer.get("fail_list", []))}

    def mass_send_tasks(self, msgid: str) -> list[dict[str, Any]]:
        """Each sending member's task: ``userid``, ``status`` (0 not yet, 2 sent …), ``send_time``."""
        return self._paged(lambda cursor: self.more.get_groupmsg_task(msgid, cursor=cursor), "task_list")

    def mass_send_results(self, msgid: str, userid: str) -> list[dict[str, Any]]:
        """What happened to each customer (or group) of one member: ``status`` 0 not sent, 1 sent,
        2 not a friend, 3 already received a mass message today."""
        return self._paged(lambda cursor: self.more.get_groupmsg_send_result(msgid, userid, cursor=cursor),
                           "send_list")

    def remind_mass_send(self, msgid: str) -> None:
        """Remind the members who have not sent this task yet (W:97610; at most 3 times in 24 h)."""
        self.more.remind_groupmsg_send(msgid)

    def cancel_mass_send(self, msgid: str) -> None:
        """Stop a task members have not sent yet (W:97611)."""
        self.more.cancel_groupmsg_send(msgid)

    # ---- group chats (客户群)

    def group_chats(self, *, status_filter: int = 0, owners: list[str] | None = None,
                    limit: int = 1000) -> list[dict[str, Any]]:
        """Every customer group (``chat_id``, ``status``), page after page."""
        return self._paged(lambda cursor: self.client.external_contact_group_chat.list(
            status_filter, owners, cursor or None, limit), "group_chat_list")

    def group_chat(self, chat_id: str, *, need_name: bool = True) -> dict[str, Any]:
        return _dict(_dict(self.more.groupchat_get(chat_id, need_name=1 if need_name else 0)).get("group_chat"))

    # ---- 群活码 (客户群「加入群聊」, W:92229)

    def add_join_way(self, *, chat_ids: list[str], state: str, remark: str = "", auto_create: bool = False,
                     room_base_name: str = "", room_base_id: int | None = None) -> dict[str, Any]:
        """A group QR (scene 2) over at most five groups; returns ``config_id`` (the QR is in ``join_way``)."""
        fields = _join_way_fields(chat_ids=chat_ids, state=state, remark=remark, auto_create=auto_create,
                                  room_base_name=room_base_name, room_base_id=room_base_id)
        return _dict(self.more.groupchat_add_join_way(scene=2, **fields))

    def join_way(self, config_id: str) -> dict[str, Any]:
        return _dict(_dict(self.more.groupchat_get_join_way(config_id)).get("join_way"))

    def update_join_way(self, config_id: str, *, chat_ids: list[str], state: str, remark: str = "",
                        auto_create: bool = False, room_base_name: str = "", room_base_id: int | None = None) -> None:
        fields = _join_way_fields(chat_ids=chat_ids, state=state, remark=remark, auto_create=auto_create,
                                  room_base_name=room_base_name, room_base_id=room_base_id)
        self.more.groupchat_update_join_way(config_id, scene=2, **fields)

    def delete_join_way(self, config_id: str) -> None:
        self.more.groupchat_del_join_way(config_id)

    # ---- 入群欢迎语素材 (W:92366)

    def add_group_welcome_template(self, text: str) -> str:
        return str(_dict(self.more.group_welcome_template_add(text)).get("template_id", ""))

    def edit_group_welcome_template(self, template_id: str, text: str) -> None:
        self.more.group_welcome_template_edit(template_id, text)

    def group_welcome_template(self, template_id: str) -> dict[str, Any]:
        return _dict(self.more.group_welcome_template_get(template_id))

    def delete_group_welcome_template(self, template_id: str) -> None:
        self.more.group_welcome_template_del(template_id)

    # ---- group statistics (W:96359)

    def group_stats_by_day(self, *, day_begin: int, day_end: int, owners: list[str]) -> list[dict[str, Any]]:
        """``{stat_time, data}`` per day for these owners (≤ 100, ≤ 30 days per call: the caller splits)."""
        answer = self.more.groupchat_statistic_group_by_day(
            day_begin_time=day_begin, day_end_time=day_end, owner_filter={"userid_list": owners[:GROUP_STAT_OWNERS]})
        return [i for i in _dict(answer).get("items") or [] if isinstance(i, dict)]

    def group_stats_by_owner(self, *, day_begin: int, day_end: int, owners: list[str]) -> list[dict[str, Any]]:
        """``{owner, data}`` per owner over the days (one page of up to 1000)."""
        answer = self.more.groupchat_statistic(
            day_begin_time=day_begin, day_end_time=day_end, owner_filter={"userid_list": owners[:GROUP_STAT_OWNERS]},
            offset=0, limit=1000)
        return [i for i in _dict(answer).get("items") or [] if isinstance(i, dict)]

    # ---- transfers between members (在职继承 / 离职继承)

    def transfer_customers(self, handover_userid: str, takeover_userid: str, external_userids: list[str], *,
                           resigned: bool = False, message: str | None = None) -> list[dict[str, Any]]:
        """Hands customers to another member, 100 per request; one ``{external_userid, errcode}`` each
        (0: on its way; the customer is taken over after 24 hours unless they refuse)."""
        answers: list[dict[str, Any]] = []
        for chunk in _chunks(list(dict.fromkeys(external_userids)), 100):
            if resigned:
                answer = self.more.resigned_transfer_customer(handover_userid, takeover_userid, chunk)
            else:
                answer = self.more.transfer_customer(handover_userid, takeover_userid, chunk,
                                                     transfer_success_msg=message)
            answers += _dict(answer).get("customer", [])
        return answers

    def transfer_results(self, handover_userid: str, takeover_userid: str, *,
                         resigned: bool = False) -> list[dict[str, Any]]:
        """``{external_userid, status, takeover_time}``: 1 taken over, 2 waiting, 3 refused, 4 takeover full."""
        call = self.more.resigned_transfer_result if resigned else self.more.transfer_result
        return self._paged(lambda cursor: call(handover_userid, takeover_userid, cursor=cursor or None), "customer")

    def unassigned_customers(self) -> list[dict[str, Any]]:
        """Customers of members who left, waiting for 离职继承: ``handover_userid``, ``external_userid``."""
        return self._paged(lambda cursor: self.more.get_unassigned_list(cursor=cursor or None), "info")

    # ---- 微信客服 (kf)

    def kf_accounts(self) -> list[dict[str, Any]]:
        """Every 客服账号 of the corp (``open_kfid``, ``name``, ``avatar``), 100 a page."""
        accounts: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = list(_dict(self.client.kf.account_list(offset=offset, limit=KF_ACCOUNT_PAGE))
                        .get("account_list", []))
            accounts += page
            if len(page) < KF_ACCOUNT_PAGE:
                return accounts
            offset += len(page)

    def kf_sync_msg(self, open_kfid: str, *, cursor: str = "", token: str | None = None,
                    limit: int = KF_SYNC_LIMIT) -> dict[str, Any]:
        """One page: ``msg_list``, ``next_cursor``, ``has_more``."""
        return _dict(self.client.kf.sync_msg(open_kfid, cursor=cursor, token=token, limit=min(limit, KF_SYNC_LIMIT)))

    def kf_send(self, *, touser: str, open_kfid: str, msgid: str, msgtype: str, content: dict[str, Any]) -> str:
        """Sends one message; returns its msgid (Siyu's own, as given)."""
        answer = _dict(self.client.kf.send_msg({"touser": touser, "open_kfid": open_kfid, "msgid": msgid,
                                                 "msgtype": msgtype, msgtype: content}))
        return str(answer.get("msgid") or msgid)

    def kf_send_on_event(self, *, code: str, msgid: str, msgtype: str, content: dict[str, Any]) -> str:
        answer = _dict(self.client.kf.send_msg_on_event({"code": code, "msgid": msgid, "msgtype": msgtype,
                                                          msgtype: content}))
        return str(answer.get("msgid") or msgid)

    def kf_service_state(self, open_kfid: str, external_userid: str) -> dict[str, Any]:
        return _dict(self.client.kf.service_state_get(open_kfid, external_userid))

    def kf_trans(self, open_kfid: str, external_userid: str, state: int, servicer_userid: str | None = None
                 ) -> dict[str, Any]:
        return _dict(self.client.kf.service_state_trans(open_kfid, external_userid, state, servicer_userid))

    def kf_customers(self, external_userids: Iterable[str]) -> list[dict[str, Any]]:
        """Nickname, avatar, gender and unionid of 微信客服 customers, 100 per call."""
        customers: list[dict[str, Any]] = []
        for chunk in _chunks(list(dict.fromkeys(external_userids)), KF_CUSTOMERS_PER_CALL):
            customers += _dict(self.client.kf.customer_batchget(chunk)).get("customer_list", [])
        return customers

    # ---- 联系客户统计 (member behaviour)

    def member_behaviour(self, userid: str, *, start_time: int, end_time: int) -> list[dict[str, Any]]:
        """One member's daily figures (``stat_time``, chat_cnt, message_cnt, reply_percentage, avg_reply_time,
        negative_feedback_cnt, new_apply_cnt, new_contact_cnt). One member per call: several come back summed."""
        if end_time - start_time >= BEHAVIOUR_SPAN_DAYS * 86400:
            raise ValueError("get_user_behavior_data spans at most 30 days")
        answer = _dict(self.more.get_user_behavior_data([userid], start_time, end_time))
        return [dict(row) for row in answer.get("behavior_data", []) if isinstance(row, dict)]

    # ---- 发送应用消息 (W:90236)

    def send_textcard(self, *, agent_id: int, touser: list[str], title: str, description: str, url: str,
                      btntxt: str = "详情") -> dict[str, Any]:
        """A text card from the self-built app to members (``touser``, ≤ 1000); WeCom's duplicate check on,
        so the same card sent again within 4 hours is delivered once. Returns the answer: ``msgid`` and
        ``invaliduser`` (members it could not reach)."""
        if not touser or len(touser) > APP_MESSAGE_USERS:
            raise ValueError("message/send takes 1 to 1000 members")
        card = {"title": cut_bytes(title, TEXTCARD_TITLE_BYTES), "url": url,
                "description": cut_bytes(description, TEXTCARD_DESCRIPTION_BYTES),
                "btntxt": btntxt[:TEXTCARD_BUTTON_CHARS]}
        return _dict(self.client.message.send(agent_id, touser, msg={
            "msgtype": "textcard", "textcard": card, "enable_duplicate_check": 1,
            "duplicate_check_interval": DUPLICATE_CHECK_SECONDS}))

    # ---- the JS-SDK (the sidebar in the chat toolbar)

    def agent_config(self, *, agent_id: str, url: str, noncestr: str, timestamp: int) -> dict[str, Any]:
        """What the JS-SDK's ``wx.agentConfig`` takes for ``url``: the app's jsapi ticket
        (``ticket/get?type=agent_config``) signed as the JS-SDK docs describe (W:90506, W:96935)."""
        from wechatpy.utils import WeChatSigner

        ticket = self.client.jsapi.get_agent_ticket()["ticket"]
        signer = WeChatSigner(delimiter=b"&")
        signer.add_data(f"jsapi_ticket={ticket}", f"noncestr={noncestr}", f"timestamp={timestamp}", f"url={url}")
        return {"corpid": self.client.corp_id, "agentid": agent_id, "timestamp": timestamp, "nonceStr": noncestr,
                "signature": signer.signature}

    # ---- 会话内容存档 (chat archive)

    def check_single_agree(self, pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Whether each customer agreed to archiving with each member: (userid, external_userid) pairs,
        100 per call (W:91782); ``agree_status`` Agree / Disagree / Default_Agree."""
        answers: list[dict[str, Any]] = []
        wanted = list(dict.fromkeys(pairs))
        for start in range(0, len(wanted), ARCHIVE_AGREE_PER_CALL):
            info = [{"userid": u, "exteranalopenid": e} for u, e in wanted[start:start + ARCHIVE_AGREE_PER_CALL]]
            answers += _dict(self.client.msgaudit.check_single_agree(info)).get("agreeinfo", [])
        return answers

    # ---- 客户朋友圈 (customers' moments)

    def upload_moment_image(self, filename: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """An image for a moment: its ``media_id`` (valid 3 days, so uploaded just before the task)."""
        return str(_dict(self.client.moments.upload_attachment("image", filename, data, content_type))["media_id"])

    def add_moment_task(self, *, sender: str, text: str = "", image_media_ids: list[str] | None = None,
                        tag_ids: list[str] | None = None) -> str:
        """创建发表任务 for one member, visible to the customers with any of ``tag_ids`` (all when none):
        the ``jobid`` to follow."""
        body: dict[str, Any] = {"visible_range": {"sender_list": {"user_list": [sender]}}}
        if tag_ids:
            body["visible_range"]["external_contact_list"] = {"tag_list": list(tag_ids)}
        if text:
            body["text"] = {"content": text}
        if image_media_ids:
            body["attachments"] = [{"msgtype": "image", "image": {"media_id": m}} for m in image_media_ids]
        return str(_dict(self.client.moments.add_moment_task(body))["jobid"])

    def moment_task_result(self, jobid: str) -> dict[str, Any]:
        """``status`` (3: made) and ``result`` (``moment_id``, invalid senders and tags) of a moment task."""
        return _dict(self.client.moments.get_moment_task_result(jobid))

    def moments(self, start_time: int, end_time: int) -> list[dict[str, Any]]:
        """The corp's moments created in (start_time, end_time), page after page (span ≤ 30 days)."""
        if end_time - start_time > MOMENT_LIST_SPAN_SECONDS:
            raise ValueError("get_moment_list takes a span of at most 30 days")
        return self._paged(lambda cursor: self.client.moments.get_moment_list(
            start_time, end_time, cursor=cursor, limit=MOMENT_LIST_LIMIT), "moment_list")

    def moment_publishers(self, moment_id: str) -> list[dict[str, Any]]:
        """Each executor of a corp moment: ``userid``, ``publish_status`` (1 published)."""
        return self._paged(lambda cursor: self.client.moments.get_moment_task(
            moment_id, cursor=cursor, limit=MOMENT_PAGE_LIMIT), "task_list")

    def moment_customers(self, moment_id: str, userid: str) -> list[dict[str, Any]]:
        """The customers a member's moment is visible to: {userid, external_userid}."""
        return self._paged(lambda cursor: self.client.moments.get_moment_customer_list(
            moment_id, userid, cursor=cursor, limit=MOMENT_PAGE_LIMIT), "customer_list")

    def moment_comments(self, moment_id: str, userid: str) -> dict[str, list[dict[str, Any]]]:
        """Likes and comments on a member's moment: {"like_list": [...], "comment_list": [...]}."""
        answer = _dict(self.client.moments.get_moment_comments(moment_id, userid))
        return {"like_list": list(answer.get("like_list", [])), "comment_list": list(answer.get("comment_list", []))}

    # ----

    def _paged(self, call: Callable[[str], Any], key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = _dict(call(cursor))
            items += page.get(key, [])
            cursor = page.get("next_cursor", "")
            if not cursor:
                return items


def cut_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def client_for(source: Session | WecomConfig, *, storage: TokenStorage | None = None,
               policy: RetryPolicy | None = None, timeout: float = 10.0, kf: bool = False) -> WecomApi:
    """The API of the configured corp (the effective settings of ``source``, or the config given).

    ``kf``: for 微信客服 calls, with the Secret of the app that manages 微信客服 when one is set.
    """
    cfg = source if isinstance(source, WecomConfig) else config.effective(source)
    secret = (cfg.kf_secret or cfg.secret) if kf else cfg.secret
    if not cfg.corp_id or not secret:
        raise WecomNotConfigured()
    return WecomApi(WecomClient(cfg.corp_id, secret, api_base=cfg.api_base or DEFAULT_API_BASE,
                                storage=storage or shared_storage(), policy=policy, timeout=timeout))


# ---------------------------------------------------------------- the console's "test connection"


# Hints for the codes an administrator setting up the connection meets most.
HINTS = {
    40001: N_("The Secret is not right: copy it again from the customer-contact app in WeCom's admin console."),
    40013: N_("The corp ID is not right: it is under 我的企业 → 企业信息 in WeCom's admin console."),
    60020: N_("WeCom refuses calls from this server's IP: add it to the app's trusted IPs (企业可信IP)."),
    48002: N_("This Secret may not call the customer-contact API: use the Secret of 客户联系."),
}


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str  # for the console, in the viewer's language
    api: str = ""  # the call that failed
    hint: str = ""
    errcode: int | None = None
    follow_users: int = 0


def check_connection(session: Session, *, actor: Viewer) -> ConnectionCheck:
    """gettoken and the follow-user list with the effective settings; the outcome is audited (never
    the secret). The caller commits."""
    from siyu.team import service as team_service

    try:
        members = client_for(session, policy=CONSOLE_POLICY, timeout=5.0).check_connection()
    except WecomApiError as exc:
        hint = HINTS.get(exc.errcode or 0, "")
        check = ConnectionCheck(ok=False, message=exc.display(), api=exc.api, errcode=exc.errcode,
                                hint=_(hint) if hint else "")
    else:
        check = ConnectionCheck(ok=True, follow_users=len(members), message=_(
            "Connected: WeCom issued an access token and lists {count} members with customer contact.",
            count=len(members)))
    outcome = "ok" if check.ok else f"{check.errcode if check.errcode is not None else 'unreachable'}"
    team_service.record_audit(session, actor=actor, action="test", entity_type="wecom_connection",
                              summary=f"test connection: {outcome}",
                              after={"ok": check.ok, "errcode": check.errcode, "api": check.api})
    session.flush()
    return check
