"""公众号 (WeChat Official Account) in the inbox: followers' messages, events, passive and API replies.

Why it is built this way: the platform *pushes* each follower's message and event to the
callback, one request each, waits 5 seconds for the answer — which may itself be the reply
(被动回复用户消息: no API call, no quota) — and on a busy day sends hundreds a second. So the
callback does only what its answer needs (``siyu.mp.inbound``): it stores the push in one
narrow row, decides the passive reply from the auto-reply rules in memory and answers; the
inbox (customer, conversation, message, touches, assignment, SLA) is built from the stored
pushes by a job, which records a reply that went out passively as the conversation's reply.
If the answer would come later than ``PASSIVE_REPLY_BUDGET`` the callback answers ``success``
and the reply goes through the customer-service API (``message/custom/send``) instead.

Followers are customers with a ``Friendship`` to the MP account (an account of kind ``mp``
with its appid) and an ``MpFollower`` row (openid, whether they follow now, the QR scene).
A follow through a parametric QR code (``qrscene_<key>``) or a scan of one is attributed to
the channel whose key is the scene, through ``channels.service.on_friends_added`` — tags,
coupons and the welcome exactly as for a WeCom add; the welcome is the follow's passive answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session

from siyu.accounts.models import Account, AccountKind
from siyu.channels.models import Channel as AcquisitionChannel
from siyu.core.db import dialect_insert, utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.customers.models import Customer, Friendship, FriendshipStatus
from siyu.customers.search import index as search
from siyu.customers.variables import is_unnamed, unnamed
from siyu.inbox import channel_hooks, delivery
from siyu.inbox.delivery import Accepted, DeliveryError, Outgoing
from siyu.inbox.models import Channel, Conversation, DeliveryStatus, Direction, Message, MessageType
from siyu.mp.models import MpFollower, MpQrCode, MpSyncState

log = logging.getLogger(__name__)

SOURCE = "mp"  # Message.source of what followers send (and events, as system lines)
PASSIVE_SOURCE = "mp_passive"  # a reply that went out in a callback's own answer (no API call, no quota)
WELCOME_SOURCE = "mp_welcome"  # a follow's welcome, when it could not go passively

# ---- the platform's limits (developers.weixin.qq.com/doc/offiaccount/...)
# Message_Management/Passive_user_reply_message.html: "微信服务器在五秒内收不到响应会断掉连接，并且重新
# 发起请求，总共重试三次" — Siyu answers passively only while well inside the 5 seconds.
PASSIVE_REPLY_LIMIT = timedelta(seconds=5)
PASSIVE_REPLY_BUDGET = timedelta(seconds=4)
# Message_Management/Service_Center_messages.html (客服消息, Customer_Service_Messages): "用户发送消息 …
# 48小时内 … 可下发消息5条"; "点击自定义菜单、关注公众号、扫描二维码 … 1分钟内 … 可下发消息3条".
MESSAGE_WINDOW = timedelta(hours=48)
REPLIES_PER_MESSAGE = 5
EVENT_WINDOW = timedelta(minutes=1)
REPLIES_PER_EVENT = 3
# The API's own refusals (全局返回码): 45015 "回复时间超过限制", 45047 "客服接口下行条数超过上限".
OUT_OF_TIME = 45015
OVER_COUNT = 45047
# User_Management/Getting_a_User_List.html: "一次拉取调用最多拉取10000个关注者的OpenID".
FOLLOWERS_PER_PAGE = 10_000
# User_Management/Get_users_basic_information_UnionID.html (批量获取): "最多支持一次拉取100条".
PROFILES_PER_CALL = 100
# Account_Management/Generating_a_Parametric_QR_Code.html: permanent codes "最多10万个"; temporary ones
# expire after at most 2592000 seconds (30 days); scene_str is 1 to 64 characters.
PERMANENT_QR_LIMIT = 100_000
TEMPORARY_QR_MAX_SECONDS = 2_592_000
SCENE_MAX_LENGTH = 64
QR_SCENE_PREFIX = "qrscene_"  # 接收事件推送: a follow through a parametric code has EventKey qrscene_<scene>

OUTSIDE_WINDOW = N_("Outside the Official Account's customer-service window: WeChat allows no message until they write")
WINDOW_FULL = N_("WeChat allows 5 messages per follower message (3 per click, follow or scan); wait for them to write")
NOT_FOLLOWING = N_("This WeChat user no longer follows the Official Account: WeChat refuses messages to them")
NO_FOLLOWER = N_("This conversation has no Official Account follower to answer")
API_REFUSED_TIME = N_("WeChat refused it: outside the customer-service window (45015)")
API_REFUSED_COUNT = N_("WeChat refused it: too many customer-service messages for this follower (45047)")
BUSY = N_("The Official Account API is busy; trying again shortly ({detail})")
LATE_PASSIVE = N_("The passive answer would have been too late; sent through the customer-service API instead")

_TRANSIENT_ERRCODES = {-1, 45009, 45011}  # 系统繁忙, 接口调用超过限制, API 调用太频繁


def pushed_at(seconds: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(seconds), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return utcnow()


# ---------------------------------------------------------------- what a callback says


@dataclass(frozen=True)
class Parsed:
    msg_type: str
    text: str
    event: str = ""  # subscribe, unsubscribe, SCAN, CLICK, VIEW, LOCATION … (empty for a message)
    scene: str = ""  # the QR scene of a subscribe (without qrscene_) or a SCAN


def parse(fields: dict[str, str]) -> Parsed:
    """接收普通消息 (Receiving_standard_messages) and 接收事件推送 (Receiving_event_pushes)."""
    kind = fields.get("MsgType", "")
    if kind == "event":
        return _event(fields)
    if kind == "text":
        return Parsed(MessageType.text.value, fields.get("Content", ""))
    if kind == "image":
        return Parsed(MessageType.image.value, fields.get("PicUrl", ""))
    if kind == "voice":  # Recognition: the platform's transcript, when speech recognition is on
        return Parsed(MessageType.voice.value, fields.get("Recognition", ""))
    if kind in ("video", "shortvideo"):
        return Parsed(MessageType.video.value, "")
    if kind == "location":
        return Parsed(MessageType.location.value, fields.get("Label", "") or
                      f"{fields.get('Location_X', '')},{fields.get('Location_Y', '')}")
    if kind == "link":
        return Parsed(MessageType.link.value, fields.get("Title", "") or fields.get("Url", ""))
    return Parsed(kind or MessageType.unknown.value, "")


def _event(fields: dict[str, str]) -> Parsed:
    event = fields.get("Event", "")
    key = fields.get("EventKey", "")
    if event == "subscribe":
        scene = key[len(QR_SCENE_PREFIX):] if key.startswith(QR_SCENE_PREFIX) else ""
        text = (_("Followed the Official Account through QR code {scene}", scene=scene) if scene
                else _("Followed the Official Account"))
        return Parsed(MessageType.system.value, text, event=event, scene=scene)
    if event == "unsubscribe":
        return Parsed(MessageType.system.value, _("Unfollowed the Official Account"), event=event)
    if event == "SCAN":
        return Parsed(MessageType.system.value, _("Scanned QR code {scene}", scene=key), event=event, scene=key)
    if event == "CLICK":
        return Parsed(MessageType.system.value, _("Clicked menu item {key}", key=key), event=event)
    if event == "VIEW":
        return Parsed(MessageType.system.value, _("Opened menu link {key}", key=key), event=event)
    if event == "LOCATION":
        where = f"{fields.get('Latitude', '')},{fields.get('Longitude', '')}"
        return Parsed(MessageType.system.value, _("Reported location {where}", where=where), event=event)
    return Parsed(MessageType.system.value, _("Official Account event {event}", event=event), event=event)


# Events that open the 1-minute customer-service window (客服消息).
WINDOW_EVENTS = {"subscribe", "SCAN", "CLICK"}


# ---------------------------------------------------------------- accounts and followers


def account_for(session: Session, appid: str) -> Account:
    """The Siyu account of a 公众号; created the first time its callbacks arrive."""
    account = session.scalar(select(Account).where(Account.mp_appid == appid))
    if account is None:
        account = Account(kind=AccountKind.mp.value, mp_appid=appid, display_name=f"公众号 {appid}"[:64])
        session.add(account)
        session.flush()
    return account


_account_ids: dict[tuple[int, str], int] = {}


def account_id_for(session: Session, appid: str) -> int:
    """``account_for``'s id, remembered per database: callbacks arrive hundreds a second."""
    key = (id(session.get_bind().engine), appid)
    if key not in _account_ids:
        _account_ids[key] = account_for(session, appid).id
    return _account_ids[key]


def forget_account_ids() -> None:
    """After a failed batch: an account deleted meanwhile is looked up (or created) again."""
    _account_ids.clear()


def resolve_followers(session: Session, account_id: int, openids: Iterable[str],
                      profiles: dict[str, dict[str, Any]] | None = None, created: list[str] | None = None
                      ) -> dict[str, int]:
    """Customer id of each openid, set-based: known followers; new ones join the customer with the same
    unionid (the person reached through WeCom or 微信客服) or become new customers with a friendship."""
    profiles = profiles or {}
    ids = sorted(set(filter(None, openids)))
    if not ids:
        return {}
    known: dict[str, int] = {o: c for o, c in session.execute(
        select(MpFollower.openid, MpFollower.customer_id).where(MpFollower.openid.in_(ids)))}
    missing = [o for o in ids if o not in known]
    if not missing:
        return known
    unions = {str(profiles[o]["unionid"])[:64]: o for o in missing if (profiles.get(o) or {}).get("unionid")}
    by_union: dict[str, int] = {}
    if unions:
        by_union = {str(u): int(c) for c, u in session.execute(select(Customer.id, Customer.unionid).where(
            Customer.unionid.in_(sorted(unions)), Customer.merged_into_id.is_(None)))}
    now = utcnow()
    new_customers = [o for o in missing if str((profiles.get(o) or {}).get("unionid") or "")[:64] not in by_union]
    customer_of: dict[str, int] = {}
    if new_customers:
        rows = [{"name": str((profiles.get(o) or {}).get("nickname") or unnamed(o))[:128],
                 "avatar_url": str((profiles.get(o) or {}).get("headimgurl") or "")[:512], "source": SOURCE,
                 "unionid": str((profiles.get(o) or {}).get("unionid") or "")[:64] or None, "created_at": now}
                for o in new_customers]
        table = Customer.__table__
        new_ids = session.execute(dialect_insert(session, table).returning(table.c.id, sort_by_parameter_order=True),
                                  rows).scalars().all()
        customer_of.update({o: int(c) for o, c in zip(new_customers, new_ids, strict=True)})
        search.index_created(session, {int(c): str(row["name"]) for c, row in zip(new_ids, rows, strict=True)})
    for openid in missing:
        if openid not in customer_of:
            customer_of[openid] = by_union[str(profiles[openid]["unionid"])[:64]]
    if created is not None:
        created.extend(missing)
    follower_rows = [{"account_id": account_id, "openid": o, "customer_id": customer_of[o],
                      "unionid": str((profiles.get(o) or {}).get("unionid") or "")[:64] or None,
                      "subscribed": True, "scene": "", "created_at": now,
                      "subscribed_at": pushed_at(profiles[o]["subscribe_time"]) if (profiles.get(o) or {}).get(
                          "subscribe_time") else now} for o in missing]
    table = MpFollower.__table__
    session.execute(dialect_insert(session, table).on_conflict_do_nothing(index_elements=["openid"]), follower_rows)
    session.execute(dialect_insert(session, Friendship.__table__).on_conflict_do_nothing(
        index_elements=["account_id", "customer_id"]),
        [{"account_id": account_id, "customer_id": c, "status": FriendshipStatus.active.value, "added_at": now,
          "remark_name": "", "description": "", "channel_state": ""} for c in sorted(set(customer_of.values()))])
    # Another request may have created the same follower meanwhile: the openid decides.
    known.update({o: c for o, c in session.execute(
        select(MpFollower.openid, MpFollower.customer_id).where(MpFollower.openid.in_(missing)))})
    return known


# ---------------------------------------------------------------- the customer-service window


def follower_of(session: Session, conversation: Conversation) -> MpFollower | None:
    if conversation.customer_id is None:
        return None
    return session.scalar(select(MpFollower).where(MpFollower.account_id == conversation.account_id,
                                                   MpFollower.customer_id == conversation.customer_id))


def _api_sends_after(session: Session, conversation: Conversation, *, since: datetime | None = None,
                     after_id: int | None = None, before_id: int | None = None) -> int:
    """Messages that went (or are going) through message/custom/send after a moment or a message."""
    query = select(func.count()).select_from(Message).where(
        Message.conversation_id == conversation.id, Message.direction == Direction.outbound.value,
        Message.internal.is_(False), Message.status != DeliveryStatus.failed.value,
        Message.source.not_in([SOURCE, PASSIVE_SOURCE]))
    if since is not None:
        query = query.where(Message.sent_at >= since)
    if after_id is not None:
        query = query.where(Message.id > after_id)
    if before_id is not None:
        query = query.where(Message.id < before_id)
    return int(session.scalar(query) or 0)


def window_refusal(session: Session, conversation: Conversation, *, before_id: int | None = None,
                   now: datetime | None = None) -> str | None:
    """Why message/custom/send would refuse a message to this follower now (in the viewer's words), or None.

    The follower's last message opens 5 messages within 48 hours (counted after that message, in
    arrival order: the platform's CreateTime has whole seconds); a click, follow or scan 3 within a minute.
    """
    if conversation.channel != Channel.mp.value:
        return None
    follower = follower_of(session, conversation)
    if follower is None:
        return _(NO_FOLLOWER)
    if not follower.subscribed:
        return _(NOT_FOLLOWING)
    now = now or utcnow()
    open_windows = 0
    allowed = False
    if conversation.last_inbound_at is not None and now - conversation.last_inbound_at <= MESSAGE_WINDOW:
        last_message = session.scalar(select(func.max(Message.id)).where(
            Message.conversation_id == conversation.id, Message.direction == Direction.inbound.value,
            Message.msg_type != MessageType.system.value))
        open_windows += 1
        allowed = _api_sends_after(session, conversation, after_id=last_message, before_id=before_id) < \
            REPLIES_PER_MESSAGE
    if not allowed and follower.last_event_at is not None and now - follower.last_event_at <= EVENT_WINDOW:
        open_windows += 1
        allowed = _api_sends_after(session, conversation, since=follower.last_event_at, before_id=before_id) < \
            REPLIES_PER_EVENT
    if allowed:
        return None
    return _(WINDOW_FULL) if open_windows else _(OUTSIDE_WINDOW)


def check_reply(session: Session, conversation: Conversation, account: Account) -> None:
    """The delivery registry's reply check: a reply WeChat would refuse is refused when the agent sends it."""
    if account.kind != AccountKind.mp.value:
        return
    reason = window_refusal(session, conversation)
    if reason is not None:
        raise Invalid(reason, field="text")


# ---------------------------------------------------------------- sending (message/custom/send)


@dataclass(frozen=True)
class MpConnector:
    """Sends replies of a 公众号 through the customer-service API (wechatpy's MP client)."""

    api: Any

    def send_text(self, outgoing: Outgoing) -> Accepted:
        from wechatpy.exceptions import WeChatClientException

        session = object_session(outgoing.account)
        message = session.get(Message, outgoing.message_id) if session is not None else None
        conversation = session.get(Conversation, message.conversation_id) if session and message else None
        follower = follower_of(session, conversation) if session and conversation else None
        if follower is None or conversation is None or session is None:
            raise DeliveryError(_(NO_FOLLOWER), permanent=True)
        reason = window_refusal(session, conversation, before_id=outgoing.message_id)
        if reason is not None:
            raise DeliveryError(reason, permanent=True)
        try:
            self.api.message.send_text(follower.openid, outgoing.text)
        except WeChatClientException as exc:
            code = int(exc.errcode or 0)
            if code == OUT_OF_TIME:
                raise DeliveryError(_(API_REFUSED_TIME), permanent=True) from exc
            if code == OVER_COUNT:
                raise DeliveryError(_(API_REFUSED_COUNT), permanent=True) from exc
            if code in _TRANSIENT_ERRCODES:
                raise DeliveryError(_(BUSY, detail=f"{code} {exc.errmsg}")) from exc
            if exc.errcode is None:  # an HTTP error from the platform's gateway: try again
                status = exc.response.status_code if exc.response is not None else "?"
                raise DeliveryError(_(BUSY, detail=f"HTTP {status}")) from exc
            raise DeliveryError(f"{code} {exc.errmsg}", permanent=True) from exc
        except OSError as exc:
            raise DeliveryError(_(BUSY, detail=type(exc).__name__)) from exc
        return Accepted(f"mp-{outgoing.message_id}")


def connector_for(account: Account) -> MpConnector | None:
    """The delivery registry's factory: 公众号 accounts, while the appid and AppSecret are set."""
    if account.kind != AccountKind.mp.value:
        return None
    from siyu.mp.client import api_for

    session = object_session(account)
    api = api_for(session) if session is not None else None
    return MpConnector(api) if api is not None else None


def register() -> None:
    delivery.register(connector_for)
    channel_hooks.register_reply_check(check_reply)


# ---------------------------------------------------------------- followers sync (user/get + batchget)


Transaction = Callable[[], AbstractContextManager[Session]]


@dataclass
class SyncResult:
    pages: int = 0
    seen: int = 0
    created: int = 0
    unfollowed: int = 0
    finished: bool = False


def sync_followers(transaction: Transaction, api: Any, account_id: int, *, max_pages: int | None = None) -> SyncResult:
    """All followers through user/get (10,000 openids a page, ``next_openid``) and user/info/batchget
    (100 profiles a call, with unionid), resumable: each page is stored with the cursor it moves to, so a
    crash goes on from the last stored page. When the list ends, followers the run did not see have left."""
    result = SyncResult()
    with transaction() as session:
        state = session.get(MpSyncState, account_id)
        if state is None:
            state = MpSyncState(account_id=account_id, run=0, next_openid="", running=False, seen=0, total=0)
            session.add(state)
        if not state.running:  # a new run; a running one (a crash) resumes from its cursor
            state.run, state.next_openid, state.running, state.seen = state.run + 1, "", True, 0
            state.started_at, state.finished_at = utcnow(), None
        run, cursor = state.run, state.next_openid
    while max_pages is None or result.pages < max_pages:
        page = api.user.get_followers(cursor or None)
        openids = [str(o) for o in ((page.get("data") or {}).get("openid") or [])]
        profiles: dict[str, dict[str, Any]] = {}
        for start in range(0, len(openids), PROFILES_PER_CALL):
            for profile in api.user.get_batch(openids[start:start + PROFILES_PER_CALL]):
                if profile.get("openid"):
                    profiles[str(profile["openid"])] = profile
        next_openid = str(page.get("next_openid") or "")
        with transaction() as session:
            before = int(session.scalar(select(func.count()).select_from(MpFollower).where(
                MpFollower.account_id == account_id)) or 0)
            resolve_followers(session, account_id, openids, profiles)
            result.created += int(session.scalar(select(func.count()).select_from(MpFollower).where(
                MpFollower.account_id == account_id)) or 0) - before
            if openids:
                session.execute(update(MpFollower).where(MpFollower.openid.in_(openids)).values(
                    synced_run=run, subscribed=True, unsubscribed_at=None),
                    execution_options={"synchronize_session": False})
                _fill_unionids(session, profiles)
            state = session.get_one(MpSyncState, account_id)
            state.next_openid, state.seen, state.total = next_openid, state.seen + len(openids), int(
                page.get("total") or 0)
            result.pages, result.seen = result.pages + 1, result.seen + len(openids)
            # 获取用户列表: the last page comes back with count 0 (or fewer than 10,000 and no next_openid).
            done = not openids or not next_openid or len(openids) < FOLLOWERS_PER_PAGE
            if done:
                gone = session.execute(update(MpFollower).where(
                    MpFollower.account_id == account_id, MpFollower.subscribed.is_(True),
                    (MpFollower.synced_run.is_(None)) | (MpFollower.synced_run != run)).values(
                    subscribed=False, unsubscribed_at=utcnow()), execution_options={"synchronize_session": False})
                result.unfollowed = int(getattr(gone, "rowcount", 0) or 0)
                state.running, state.finished_at, state.next_openid = False, utcnow(), ""
                result.finished = True
        if result.finished:
            break
        cursor = next_openid
    return result


def fill_profiles(session: Session, api: Any, openids: list[str]) -> int:
    """Nickname, avatar and unionid of followers met through a push (user/info/batchget, 100 a call): a
    placeholder name becomes the nickname, a name someone typed is kept. Returns how many were filled."""
    filled = 0
    for start in range(0, len(openids), PROFILES_PER_CALL):
        profiles = {str(p["openid"]): p for p in api.user.get_batch(openids[start:start + PROFILES_PER_CALL])
                    if p.get("openid")}
        followers = list(session.scalars(select(MpFollower).where(MpFollower.openid.in_(sorted(profiles)))))
        customers = {c.id: c for c in session.scalars(select(Customer).where(
            Customer.id.in_([f.customer_id for f in followers])))}
        for follower in followers:
            profile, customer = profiles[follower.openid], customers.get(follower.customer_id)
            if customer is None:
                continue
            if profile.get("nickname") and (is_unnamed(customer.name) or customer.name == follower.openid[-8:]):
                customer.name = str(profile["nickname"])[:128]
            if profile.get("headimgurl") and not customer.avatar_url:
                customer.avatar_url = str(profile["headimgurl"])[:512]
            if profile.get("unionid"):
                follower.unionid = follower.unionid or str(profile["unionid"])[:64]
                customer.unionid = customer.unionid or str(profile["unionid"])[:64]
            filled += 1
        search.mark_dirty(session, list(customers))
    session.flush()
    return filled


def _fill_unionids(session: Session, profiles: dict[str, dict[str, Any]]) -> None:
    with_union = {o: str(p["unionid"])[:64] for o, p in profiles.items() if p.get("unionid")}
    for openid, unionid in with_union.items():
        session.execute(update(MpFollower).where(MpFollower.openid == openid, MpFollower.unionid.is_(None))
                        .values(unionid=unionid), execution_options={"synchronize_session": False})
    if with_union:
        for customer_id, union in session.execute(select(MpFollower.customer_id, MpFollower.unionid).where(
                MpFollower.openid.in_(sorted(with_union)))):
            session.execute(update(Customer).where(Customer.id == customer_id, Customer.unionid.is_(None))
                            .values(unionid=str(union)), execution_options={"synchronize_session": False})


# ---------------------------------------------------------------- parametric QR codes of channels


class QrCodeRefused(Invalid):
    pass


def create_qrcode(session: Session, *, api: Any, channel_id: int, account_id: int, permanent: bool,
                  expire_seconds: int = TEMPORARY_QR_MAX_SECONDS) -> MpQrCode:
    """A parametric QR code whose scene is the channel's key (qrcode/create, string scenes only)."""
    channel = session.get(AcquisitionChannel, channel_id)
    if channel is None:
        raise NotFound("Channel not found")
    account = session.get(Account, account_id)
    if account is None or account.kind != AccountKind.mp.value:
        raise QrCodeRefused("Choose an Official Account for the QR code", field="account_id")
    scene = channel.key
    if not 1 <= len(scene) <= SCENE_MAX_LENGTH:
        raise QrCodeRefused("The channel's key cannot be a QR scene (1 to 64 characters)", field="channel_id")
    if permanent:
        if permanent_qr_used(session, account_id) >= PERMANENT_QR_LIMIT:
            raise QrCodeRefused("This Official Account has used its 100,000 permanent QR codes; make a temporary one",
                                field="permanent")
        data: dict[str, Any] = {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": scene}}}
    else:
        if not 60 <= expire_seconds <= TEMPORARY_QR_MAX_SECONDS:
            raise QrCodeRefused("A temporary QR code lives 60 seconds to 30 days", field="expire_seconds")
        data = {"expire_seconds": expire_seconds, "action_name": "QR_STR_SCENE",
                "action_info": {"scene": {"scene_str": scene}}}
    answer = api.qrcode.create(data)
    expires = answer.get("expire_seconds")
    code = MpQrCode(channel_id=channel.id, account_id=account.id, scene=scene, permanent=permanent,
                    ticket=str(answer.get("ticket") or "")[:255], url=str(answer.get("url") or "")[:512],
                    expires_at=utcnow() + timedelta(seconds=int(expires)) if expires and not permanent else None)
    session.add(code)
    if account.id not in (channel.account_ids or []):
        channel.account_ids = [*(channel.account_ids or []), account.id]
    if not channel.qr_url:
        channel.qr_url = code.url
    session.flush()
    return code


# ---------------------------------------------------------------- parametric QR codes of other domains

# Account_Management/Generating_a_Parametric_QR_Code.html (生成带参数的二维码): a temporary string-scene code
# is action_name QR_STR_SCENE with expire_seconds ≤ 2592000; a permanent one QR_LIMIT_STR_SCENE, at most
# 100,000 per 公众号 — channels' codes and other domains' (referral invites) share that one quota.
TEMPORARY_STR_SCENE = "QR_STR_SCENE"
PERMANENT_STR_SCENE = "QR_LIMIT_STR_SCENE"
TEMPORARY_QR_MIN_SECONDS = 60

# Counters of permanent codes other domains keep themselves (account id → how many): registered at import.
_permanent_counters: list[Callable[[Session, int], int]] = []


def count_permanent_codes_with(counter: Callable[[Session, int], int]) -> None:
    """Another domain's permanent parametric codes count against the same 100,000 (idempotent)."""
    if counter not in _permanent_counters:
        _permanent_counters.append(counter)


def permanent_qr_used(session: Session, account_id: int) -> int:
    """The permanent parametric QR codes this 公众号 has made: channels' and every registered domain's."""
    made = int(session.scalar(select(func.count()).select_from(MpQrCode).where(
        MpQrCode.account_id == account_id, MpQrCode.permanent.is_(True))) or 0)
    return made + sum(counter(session, account_id) for counter in _permanent_counters)


@dataclass(frozen=True)
class SceneQr:
    ticket: str
    url: str  # the content the QR image encodes (weixin.qq.com/q/…)
    expires_at: datetime | None


def mp_account(session: Session, account_id: int) -> Account:
    account = session.get(Account, account_id)
    if account is None or account.kind != AccountKind.mp.value:
        raise QrCodeRefused("Choose an Official Account for the QR code", field="account_id")
    return account


def create_scene_qrcode(session: Session, *, api: Any, account_id: int, scene: str, permanent: bool,
                        expire_seconds: int = TEMPORARY_QR_MAX_SECONDS, now: datetime | None = None) -> SceneQr:
    """A string-scene parametric QR code for any scene (qrcode/create); the caller stores it.

    A follow through it arrives as ``qrscene_<scene>`` and a follower's scan as SCAN with the scene:
    both reach ``channels.service.on_friends_added``, whose listeners claim their own scenes.
    """
    mp_account(session, account_id)
    if not 1 <= len(scene) <= SCENE_MAX_LENGTH:
        raise QrCodeRefused("The channel's key cannot be a QR scene (1 to 64 characters)", field="scene")
    if permanent:
        if permanent_qr_used(session, account_id) >= PERMANENT_QR_LIMIT:
            raise QrCodeRefused("This Official Account has used its 100,000 permanent QR codes; make a temporary one",
                                field="permanent")
        data: dict[str, Any] = {"action_name": PERMANENT_STR_SCENE, "action_info": {"scene": {"scene_str": scene}}}
    else:
        if not TEMPORARY_QR_MIN_SECONDS <= expire_seconds <= TEMPORARY_QR_MAX_SECONDS:
            raise QrCodeRefused("A temporary QR code lives 60 seconds to 30 days", field="expire_seconds")
        data = {"expire_seconds": expire_seconds, "action_name": TEMPORARY_STR_SCENE,
                "action_info": {"scene": {"scene_str": scene}}}
    answer = api.qrcode.create(data)
    expires = answer.get("expire_seconds")
    return SceneQr(ticket=str(answer.get("ticket") or "")[:255], url=str(answer.get("url") or "")[:512],
                   expires_at=(now or utcnow()) + timedelta(seconds=int(expires)) if expires and not permanent
                   else None)
