"""The virtual corp: everything the simulated WeCom platform knows, in memory.

Request handlers (``api_*``) take the request's parameters as WeCom documents them and
return the response body without ``errcode``/``errmsg``; a refusal raises ``ApiError``
with the platform's error code. Driver operations (``add_contact``, ``join_group`` …)
are what happens on people's phones — a customer scanning a contact-way code, a member
deleting a customer — and return what the matching callback must carry.

Everything is deterministic from the seed; ids made later come from a generator salted
per run (so repeated runs against one Siyu database do not collide) unless the state is
loaded from a file, which continues its own sequence. One lock guards the state: the
server answers from several threads and the driver mutates at the same time.
"""

from __future__ import annotations

import base64
import collections
import functools
import json
import random
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel, Field

from siyu.simulator.archive import ArchiveDesk
from siyu.simulator.errors import ApiError
from siyu.simulator.kf import KfDesk, KfState
from siyu.simulator.moments import MomentsDesk, MomentsState
from siyu.simulator.paging import encode_cursor, page

P = ParamSpec("P")
R = TypeVar("R")

STATE_VERSION = 1
WELCOME_CODE_SECONDS = 20
GROUP_WELCOME_TEMPLATES = 100  # W:92366: 入群欢迎语素材, at most 100 per corp
# 上传临时素材 media/upload (W:90253): the limits, and WeCom's global codes for their refusals (W:90313).
MEDIA_SECONDS = 3 * 86400  # "素材上传得到media_id，该media_id仅三天内有效"
MEDIA_MIN_BYTES = 5  # "所有文件size必须大于5个字节"
MEDIA_MAX_BYTES = {"image": 10 * 1024 * 1024, "voice": 2 * 1024 * 1024, "video": 10 * 1024 * 1024,
                   "file": 20 * 1024 * 1024}  # 图片 10MB, 语音 2MB, 视频 10MB, 普通文件 20MB
MEDIA_SIZE_ERRORS = {"image": 40009, "voice": 40010, "video": 40011, "file": 40006}  # 图片/语音/视频/文件大小不是有效值
INVALID_MEDIA_TYPE = 40004  # 不合法的媒体文件类型 (type is not image, voice, video or file)
INVALID_FILE_TYPE = 40005  # 不合法的文件类型 (an image that is not JPG or PNG)
INVALID_FILE_SIZE = 40006  # 不合法的文件大小
INVALID_MEDIA_ID = 40007  # 不合法的media_id参数
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # 图片 "支持JPG,PNG格式", known by their first bytes
FOLLOW_PAGE = 500  # externalcontact/get pages its follow users past this many
REMINDERS_PER_DAY = 3  # W:97610 remind_groupmsg_send: "每个群发任务，24小时内最多只能提醒3次"
CHINA = timezone(timedelta(hours=8))  # the mass-send daily limit counts calendar days in China
JOIN_WAY_CHATS = 5  # groupchat/add_join_way: chat_id_list "支持5个" (W:92229)
STAT_DAYS_BACK = 180  # groupchat statistics: yesterday back 180 days (W:96359)
STAT_SPAN_DAYS = 30  # … at most 30 days per call
# externalcontact/get_user_behavior_data (W:96358): userid 最多100个; 最大查询跨度为30天;
# 最近180天内的数据.
BEHAVIOUR_IDS_PER_CALL = 100
BEHAVIOUR_SPAN_DAYS = 30
BEHAVIOUR_KEPT_DAYS = 180
# message/send 发送应用消息 (W:90236): touser "最多支持1000个"; textcard title ≤ 128 bytes and description ≤ 512
# bytes ("超过会自动截断"), btntxt ≤ 4 characters; text content "最长不超过2048个字节"; duplicate_check_interval
# default 1800 s, "最大不超过4小时"; every receiver unknown or out of the app's range: 81013.
APP_MESSAGE_USERS = 1000
APP_TEXT_BYTES = 2048
TEXTCARD_TITLE_BYTES = 128
TEXTCARD_DESCRIPTION_BYTES = 512
TEXTCARD_BUTTON_CHARS = 4
DUPLICATE_CHECK_DEFAULT = 1800
DUPLICATE_CHECK_MAX = 4 * 3600
APP_MESSAGES_KEPT = 1000
BEHAVIOUR_COUNTS = ("chat_cnt", "message_cnt", "negative_feedback_cnt", "new_apply_cnt", "new_contact_cnt")

# The WeCom members of the demo (siyu/demo.py ACCOUNTS: wecom_userid = "shanye." + key), so the
# simulator's default members are the accounts `siyu demo` creates.
DEFAULT_MEMBERS: tuple[tuple[str, str], ...] = (
    ("shanye.xiaoye01", "小野"),
    ("shanye.xiaoye02", "小野02"),
    ("shanye.ahe01", "阿禾"),
    ("shanye.ahe02", "阿禾02"),
    ("shanye.vip", "VIP茶管家"),
)

SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏"
            "吕丁沈姚卢姜崔钟谭陆汪范金石廖贾夏方白邹孟熊秦江尹薛段雷侯龙陶贺顾毛郝龚邵钱严戴孔汤")
GIVEN = "雨欣子涵浩宇思佳梓晨一诺若曦嘉怡俊杰雅静文博明轩婷悦琪睿泽安然可馨晓彤天逸心妍伟芳娜敏磊洋勇艳丽强军"
KEYWORDS = ("龙井爱好者", "办公室囤茶", "送礼需求", "宝妈", "茶艺课学员", "白茶控", "老客户", "公司团购",
            "喜欢冷泡", "周末到店")
DESCRIPTIONS = ("门店扫码加的，问过新品", "喜欢清淡口味，怕苦", "给父母买过礼盒", "上班族，午休时间回复快",
                "对价格敏感，等活动", "朋友推荐来的", "参加过品鉴会", "")
TAG_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("客户等级", ("普通", "重要", "VIP")),
    ("来源", ("门店", "线上", "朋友推荐", "活动")),
    ("偏好", ("绿茶", "红茶", "白茶", "乌龙", "茶具")),
)
GROUP_NAMES = ("山野茶舍新客福利群", "山野茶舍老友茶话群", "山野茶舍品鉴会群", "山野茶舍团购群")
ID_CHARS = string.ascii_letters + string.digits


class Member(BaseModel):
    userid: str
    name: str
    department: list[int] = Field(default_factory=lambda: [1])
    position: str = ""
    mobile: str = ""
    gender: str = "0"
    status: int = 1  # 1 active; 5 left the corp
    follow: bool = True  # has the customer-contact (客户联系) permission
    left_at: int | None = None  # when the member left the corp (their customers wait for 离职继承)


class Follow(BaseModel):
    userid: str
    remark: str = ""
    description: str = ""
    createtime: int = 0
    tag_ids: list[str] = Field(default_factory=list)
    remark_corp_name: str = ""
    remark_mobiles: list[str] = Field(default_factory=list)
    add_way: int = 1
    oper_userid: str = ""
    state: str = ""
    deleted_at: int | None = None  # when the friendship ended (either side)


class Contact(BaseModel):
    external_userid: str
    name: str
    avatar: str = ""
    type: int = 1  # 1 WeChat user, 2 WeCom user
    gender: int = 0
    unionid: str = ""
    follows: list[Follow] = Field(default_factory=list)

    def follow(self, userid: str) -> Follow | None:
        return next((f for f in self.follows if f.userid == userid and f.deleted_at is None), None)

    @property
    def active(self) -> list[Follow]:
        return [f for f in self.follows if f.deleted_at is None]


class Tag(BaseModel):
    id: str
    name: str
    create_time: int
    order: int = 0


class TagGroup(BaseModel):
    group_id: str
    group_name: str
    create_time: int
    order: int = 0
    tags: list[Tag] = Field(default_factory=list)


class ContactWay(BaseModel):
    config_id: str
    type: int
    scene: int
    style: int = 0
    remark: str = ""
    skip_verify: bool = True
    state: str = ""
    user: list[str] = Field(default_factory=list)
    party: list[int] = Field(default_factory=list)
    is_temp: bool = False
    expires_in: int = 0
    qr_code: str = ""
    created_at: int = 0


class ChatMember(BaseModel):
    userid: str
    type: int  # 1 corp member, 2 external contact
    join_time: int
    join_scene: int = 1  # 1 invited directly, 2 invitation link, 3 group QR code
    invitor: str = ""
    group_nickname: str = ""
    name: str = ""
    state: str = ""  # the 群活码's state when they joined through one (groupchat/get returns it, W:92229 附录)


class JoinWay(BaseModel):
    """A 群活码 (客户群「加入群聊」, W:92229)."""

    config_id: str
    scene: int = 2
    remark: str = ""
    auto_create_room: int = 1
    room_base_name: str = ""
    room_base_id: int = 1
    chat_id_list: list[str] = Field(default_factory=list)
    state: str = ""
    qr_code: str = ""
    created_at: int = 0


class GroupChat(BaseModel):
    chat_id: str
    name: str
    owner: str
    create_time: int
    notice: str = ""
    members: list[ChatMember] = Field(default_factory=list)
    admin_list: list[str] = Field(default_factory=list)
    status: int = 0
    dismissed: bool = False
    version: int = 1

    @property
    def member_version(self) -> str:
        return f"{self.chat_id[-8:]}{self.version:08d}"


class WelcomeCode(BaseModel):
    code: str
    userid: str
    external_userid: str
    issued_at: float
    used_at: float | None = None


class Upload(BaseModel):
    """A temporary material (media/upload, W:90253): only its name, type and size are kept."""

    media_id: str
    media_type: str
    filename: str = ""
    size: int = 0
    created_at: int


class WelcomeMessage(BaseModel):
    userid: str
    external_userid: str
    text: str = ""
    attachments: list[dict[str, Any]] = Field(default_factory=list)
    sent_at: int


class GroupWelcomeTemplate(BaseModel):
    """入群欢迎语素材 (W:92366): text with %NICKNAME%, picked by the group owner in the client."""

    template_id: str
    text: str = ""
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class SendResult(BaseModel):
    external_userid: str = ""
    chat_id: str = ""
    userid: str
    status: int = 0  # 0 not sent yet, 1 sent, 2 not a friend, 3 already got a mass message today
    send_time: int = 0


class MassSend(BaseModel):
    msgid: str
    chat_type: str
    sender: str = ""
    created_at: int
    text: str = ""
    attachments: list[dict[str, Any]] = Field(default_factory=list)
    results: list[SendResult] = Field(default_factory=list)
    cancelled_at: int = 0  # cancel_groupmsg_send (W:97611): members can no longer send it
    reminders: list[int] = Field(default_factory=list)  # remind_groupmsg_send (W:97610), when


class AppMessage(BaseModel):
    """A message the corp's self-built app sent to members (message/send, W:90236), as they received it."""

    msgid: str
    agentid: int
    touser: list[str]
    msgtype: str
    content: dict[str, Any] = Field(default_factory=dict)
    sent_at: int
    digest: str = ""  # the request, for enable_duplicate_check


class Transfer(BaseModel):
    """One customer handed from one member to another: 在职继承 (in service) or 离职继承 (resigned)."""

    kind: str  # "in_service" or "resigned"
    handover_userid: str
    takeover_userid: str
    external_userid: str
    status: int = 2  # 1 taken over, 2 waiting, 3 the customer refused, 4 the takeover member is full
    created_at: int
    takeover_time: int = 0


class CorpState(BaseModel):
    version: int = STATE_VERSION
    corp_id: str
    seed: int
    members: list[Member] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)
    tag_groups: list[TagGroup] = Field(default_factory=list)
    contact_ways: list[ContactWay] = Field(default_factory=list)
    group_chats: list[GroupChat] = Field(default_factory=list)
    welcome_codes: list[WelcomeCode] = Field(default_factory=list)
    welcome_messages: list[WelcomeMessage] = Field(default_factory=list)
    uploads: list[Upload] = Field(default_factory=list)  # temporary materials (media/upload, W:90253)
    mass_sends: list[MassSend] = Field(default_factory=list)
    transfers: list[Transfer] = Field(default_factory=list)
    join_ways: list[JoinWay] = Field(default_factory=list)  # 群活码 (W:92229)
    group_welcome_templates: list[GroupWelcomeTemplate] = Field(default_factory=list)  # W:92366
    kf: KfState = Field(default_factory=KfState)  # 微信客服 (siyu.simulator.kf)
    moments: MomentsState = Field(default_factory=MomentsState)  # 客户朋友圈 (siyu.simulator.moments)
    app_messages: list[AppMessage] = Field(default_factory=list)  # 发送应用消息 (W:90236)
    message_count: int = 0
    rng_state: list[Any] = Field(default_factory=list)


def _locked(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        corp = args[0]
        assert isinstance(corp, VirtualCorp)
        with corp.lock:
            return method(*args, **kwargs)
    return wrapper


def _limit(value: Any, *, default: int, maximum: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ApiError(40058, "invalid limit") from exc
    if number < 1:
        raise ApiError(40058, "limit must be positive")
    return min(number, maximum)


def _strings(value: Any, field: str, *, maximum: int | None = None) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(40058, f"{field} must be a list of strings")
    if maximum is not None and len(value) > maximum:
        raise ApiError(40058, f"{field} has more than {maximum} items")
    return list(value)


def _text(payload: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text = payload.get("text") or {}
    content = str(text.get("content", "")) if isinstance(text, dict) else ""
    attachments = payload.get("attachments") or []
    if not isinstance(attachments, list) or len(attachments) > 9:
        raise ApiError(40058, "attachments must be a list of at most 9 items")
    if not content and not attachments:
        raise ApiError(44004, "empty content")
    return content, [a for a in attachments if isinstance(a, dict)]


class VirtualCorp:
    def __init__(self, state: CorpState, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.state = state
        self.clock = clock
        self.lock = threading.RLock()
        self.rng = rng or random.Random(state.seed)  # noqa: S311 - simulated data, not secrets
        self.by_id = {c.external_userid: c for c in state.contacts}  # a campaign looks customers up 100,000s of times
        self.auto_confirm_mass_send = True  # members "confirm" a mass send at once
        self.mass_send_daily_limit = 1  # mass messages one customer may receive per day from the corp
        self._listing_snapshots: dict[tuple[str, ...], list[tuple[Contact, Follow]]] = {}
        self.chat_capacity_with_wechat = 200  # tests lower it to fill a group quickly
        self.auto_accept_transfer = True  # a handed-over customer is taken over at once (not after 24 h)
        # Where the 「联系我」 QR images are served: WeCom's image host, or this simulator's own address
        # (the server sets it from the requests it answers, so Siyu can fetch the image as from WeCom).
        self.media_base = "https://wework.qpic.cn"
        self.kf = KfDesk(self)
        self.archive = ArchiveDesk(self)  # 会话内容存档 (siyu.simulator.archive)
        self.moments = MomentsDesk(self)  # 客户朋友圈 (siyu.simulator.moments)

    # ---- construction and persistence -------------------------------------------------

    @classmethod
    def seeded(cls, seed: int = 1, *, corp_id: str, members: Iterable[tuple[str, str]] = DEFAULT_MEMBERS,
               contacts_per_member: int = 12, groups_per_member: int = 1, clock: Callable[[], float] = time.time,
               salt: int | None = None) -> VirtualCorp:
        """A corp built from ``seed`` alone; ``salt`` (a new one per run by default) only affects ids made later."""
        corp = cls(CorpState(corp_id=corp_id, seed=seed), clock=clock, rng=random.Random(seed))  # noqa: S311
        corp._seed_content(list(members), contacts_per_member, groups_per_member)
        corp.kf.seed()
        corp.rng = random.Random(f"{seed}/{time.time_ns() if salt is None else salt}")  # noqa: S311
        return corp

    def _seed_content(self, members: list[tuple[str, str]], contacts_per_member: int,
                      groups_per_member: int) -> None:
        now = int(self.clock())
        rng = self.rng
        for n, (userid, name) in enumerate(members):
            self.state.members.append(Member(userid=userid, name=name, position="客户经理",
                                             mobile=f"1380000{n:04d}", gender=rng.choice(("1", "2"))))
        for order, (group_name, tags) in enumerate(TAG_GROUPS):
            group = TagGroup(group_id=self._id("et"), group_name=group_name, create_time=now - 86400 * 90,
                             order=len(TAG_GROUPS) - order)
            group.tags = [Tag(id=self._id("et"), name=t, create_time=group.create_time, order=len(tags) - i)
                          for i, t in enumerate(tags)]
            self.state.tag_groups.append(group)
        all_tags = [t.id for g in self.state.tag_groups for t in g.tags]
        for member in self.state.members:
            state = "sim-" + member.userid.rsplit(".", 1)[-1]
            self.state.contact_ways.append(self._new_contact_way(
                type=1, scene=2, remark=f"{member.name}的二维码", state=state, user=[member.userid],
                created_at=now - 86400 * 60))
            for _ in range(contacts_per_member):
                added = now - rng.randrange(86400, 86400 * 180)
                contact = self._new_contact(added_at=added)
                contact.follows.append(Follow(
                    userid=member.userid, createtime=added, state=state if rng.random() < 0.6 else "",
                    remark=f"{contact.name}-{rng.choice(KEYWORDS)}", description=rng.choice(DESCRIPTIONS),
                    remark_mobiles=[f"1{rng.choice('3579')}{rng.randrange(10**9):09d}"] if rng.random() < 0.5 else [],
                    tag_ids=rng.sample(all_tags, k=rng.randrange(0, 3)), add_way=rng.choice((1, 1, 2, 3, 4))))
                self._keep(contact)
        for member in self.state.members:
            mine = [c for c in self.state.contacts if c.follow(member.userid)]
            for g in range(groups_per_member):
                chosen = rng.sample(mine, k=min(len(mine), rng.randrange(3, 9)))
                number = len(self.state.group_chats)
                name = f"{GROUP_NAMES[(g + number) % len(GROUP_NAMES)]}{number + 1}"
                self._create_group(member.userid, name, [c.external_userid for c in chosen],
                                   created_at=now - rng.randrange(86400, 86400 * 30))

    def adopt_contacts(self, contacts: Iterable[dict[str, Any]]) -> int:
        """Know customers a Siyu instance already has (``external_userid``, ``name``, ``userid``,
        ``remark``, ``added_at``), so its replies to them reach someone; the ones added."""
        adopted = 0
        with self.lock:
            for known in contacts:
                if not any(m.userid == known["userid"] for m in self.state.members):
                    continue  # Siyu's account for a member this corp does not have
                contact = self.by_id.get(known["external_userid"])
                if contact is None:
                    contact = Contact(external_userid=known["external_userid"], name=known["name"])
                    self._keep(contact)
                if contact.follow(known["userid"]) is None:
                    contact.follows.append(Follow(userid=known["userid"], remark=known.get("remark", ""),
                                                  createtime=int(known.get("added_at") or self.clock())))
                    adopted += 1
        return adopted

    def dump(self) -> dict[str, Any]:
        with self.lock:
            self.state.rng_state = _jsonable(self.rng.getstate())
            return self.state.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        target = Path(path)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(self.dump(), ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(target)  # a crash mid-write never leaves half a state file

    @classmethod
    def load(cls, data: dict[str, Any], *, clock: Callable[[], float] = time.time) -> VirtualCorp:
        state = CorpState.model_validate(data)
        if state.version != STATE_VERSION:
            raise ValueError(f"state version {state.version} is not {STATE_VERSION}")
        rng = random.Random()  # noqa: S311 - simulated data, not secrets
        if state.rng_state:
            rng.setstate(_tupled(state.rng_state))
        else:
            rng.seed(f"{state.seed}/{time.time_ns()}")
        corp = cls(state, clock=clock, rng=rng)
        if not state.kf.accounts:  # a state saved before the corp had 微信客服
            corp.kf.seed()
        return corp

    @classmethod
    def from_file(cls, path: str | Path, *, clock: Callable[[], float] = time.time) -> VirtualCorp:
        return cls.load(json.loads(Path(path).read_text(encoding="utf-8")), clock=clock)

    # ---- small helpers -----------------------------------------------------------------

    def _id(self, prefix: str, length: int = 32) -> str:
        return prefix + "".join(self.rng.choice(ID_CHARS) for _ in range(length - len(prefix)))

    def _name(self) -> str:
        return self.rng.choice(SURNAMES) + "".join(self.rng.choice(GIVEN) for _ in range(self.rng.choice((1, 2, 2))))

    def _new_contact(self, *, added_at: int, name: str | None = None) -> Contact:
        external_userid = self._id("wm")
        return Contact(external_userid=external_userid, name=name or self._name(),
                       avatar=f"https://wework.qpic.cn/wwhead/{external_userid[2:14]}/0",
                       gender=self.rng.choice((0, 1, 2, 2)), unionid="o" + self._id("", 27))

    def _new_contact_way(self, **fields: Any) -> ContactWay:
        config_id = "".join(self.rng.choice("0123456789abcdef") for _ in range(32))
        return ContactWay(config_id=config_id, qr_code=f"{self.media_base}/wwpic/sim_{config_id}/0", **fields)

    def contact_way_image(self, name: str) -> bytes | None:
        """The QR image behind a contact way's ``qr_code`` (W:92228 returns its URL): a PNG whose code
        opens the 「联系我」 page of the way; None for a way that does not exist (or was deleted)."""
        import io

        import qrcode

        config_id = name.removeprefix("sim_")
        with self.lock:
            if not any(w.config_id == config_id for w in self.state.contact_ways):
                return None
        image = qrcode.make(f"https://work.weixin.qq.com/ca/cawcde{config_id[:16]}", box_size=8, border=2)
        out = io.BytesIO()
        image.save(out)  # PNG
        return out.getvalue()

    def _keep(self, contact: Contact) -> None:
        self.state.contacts.append(contact)
        self.by_id[contact.external_userid] = contact

    def member(self, userid: Any, *, left_ok: bool = False) -> Member:
        """A member of the corp; one who has left only where the platform still knows them (离职继承)."""
        if not userid:
            raise ApiError(40003, "missing userid")
        found = next((m for m in self.state.members if m.userid == userid), None)
        if found is None or (found.left_at is not None and not left_ok):
            raise ApiError(60111, f"userid not found: {userid}")
        return found

    def contact(self, external_userid: Any) -> Contact:
        if not external_userid:
            raise ApiError(40096, "missing external_userid")
        found = self.by_id.get(str(external_userid))
        if found is None:
            raise ApiError(40096, f"invalid external userid: {external_userid}")
        return found

    def _relation(self, userid: Any, external_userid: Any) -> tuple[Contact, Follow]:
        self.member(userid)
        contact = self.contact(external_userid)
        follow = contact.follow(str(userid))
        if follow is None:
            raise ApiError(84061, "not external contact")
        return contact, follow

    def _tag_index(self) -> dict[str, tuple[TagGroup, Tag]]:
        return {t.id: (g, t) for g in self.state.tag_groups for t in g.tags}

    def _chat(self, chat_id: Any) -> GroupChat:
        if not chat_id:
            raise ApiError(40058, "missing chat_id")
        chat = next((c for c in self.state.group_chats if c.chat_id == chat_id), None)
        if chat is None:
            raise ApiError(40050, f"chatid not found: {chat_id}")
        return chat

    # ---- members ------------------------------------------------------------------------

    @_locked
    def api_user_get(self, query: dict[str, Any]) -> dict[str, Any]:
        return _member_detail(self.member(query.get("userid")))

    @_locked
    def api_user_simplelist(self, query: dict[str, Any]) -> dict[str, Any]:
        return {"userlist": [{"userid": m.userid, "name": m.name, "department": m.department}
                             for m in self._department(query)]}

    @_locked
    def api_user_list(self, query: dict[str, Any]) -> dict[str, Any]:
        return {"userlist": [_member_detail(m) for m in self._department(query)]}

    def _department(self, query: dict[str, Any]) -> list[Member]:
        department = str(query.get("department_id") or "1")
        if not department.isdigit():
            raise ApiError(40058, "invalid department_id")
        present = [m for m in self.state.members if m.left_at is None]
        if department != "1" and query.get("fetch_child") not in ("1", 1):
            return [m for m in present if int(department) in m.department]
        return present

    @_locked
    def api_get_follow_user_list(self, query: dict[str, Any]) -> dict[str, Any]:
        return {"follow_user": [m.userid for m in self.state.members if m.follow]}

    # ---- external contacts -------------------------------------------------------------------

    @_locked
    def api_list(self, query: dict[str, Any]) -> dict[str, Any]:
        member = self.member(query.get("userid"))
        ids = [c.external_userid for c in self.state.contacts if c.follow(member.userid)]
        if not ids:
            raise ApiError(84061, "not external contact")  # what WeCom answers for a member with no customers
        return {"external_userid": ids}

    @_locked
    def api_get(self, query: dict[str, Any]) -> dict[str, Any]:
        contact = self.contact(query.get("external_userid"))
        follows = contact.active
        if not follows:
            raise ApiError(84061, "not external contact")
        chunk, next_cursor = page(follows, query.get("cursor"), FOLLOW_PAGE)
        tags = self._tag_index()
        body: dict[str, Any] = {"external_contact": _contact_body(contact),
                                "follow_user": [_follow_user(f, tags) for f in chunk]}
        if next_cursor:
            body["next_cursor"] = next_cursor
        return body

    @_locked
    def api_batch_get_by_user(self, body: dict[str, Any]) -> dict[str, Any]:
        userids = _strings(body.get("userid_list"), "userid_list", maximum=100)
        if not userids:
            raise ApiError(40058, "userid_list is required")
        for userid in userids:
            self.member(userid)
        limit = _limit(body.get("limit"), default=50, maximum=100)
        key = tuple(userids)
        pairs = self._listing_snapshots.get(key) if body.get("cursor") else None
        if pairs is None:
            # One pass over the corp per listing; the pages after the first read the same snapshot
            # (as the platform's cursor does), so 200,000 customers page in linear time.
            wanted: dict[str, list[tuple[Contact, Follow]]] = {userid: [] for userid in userids}
            for c in self.state.contacts:
                for f in c.follows:
                    if f.deleted_at is None and f.userid in wanted:
                        wanted[f.userid].append((c, f))
            pairs = [pair for userid in userids for pair in wanted[userid]]
            if len(self._listing_snapshots) > 64:
                self._listing_snapshots.clear()
            self._listing_snapshots[key] = pairs
        chunk, next_cursor = page(pairs, body.get("cursor"), limit)
        return {"external_contact_list": [
            {"external_contact": _contact_body(c), "follow_info": {
                "userid": f.userid, "remark": f.remark, "description": f.description, "createtime": f.createtime,
                "tag_id": list(f.tag_ids), "remark_corp_name": f.remark_corp_name,
                "remark_mobiles": list(f.remark_mobiles), "oper_userid": f.oper_userid or c.external_userid,
                "add_way": f.add_way, "state": f.state}} for c, f in chunk], "next_cursor": next_cursor}

    @_locked
    def api_remark(self, body: dict[str, Any]) -> dict[str, Any]:
        _contact, follow = self._relation(body.get("userid"), body.get("external_userid"))
        if "remark" in body:
            if len(str(body["remark"])) > 20:
                raise ApiError(40058, "remark longer than 20 characters")
            follow.remark = str(body["remark"])
        if "description" in body:
            if len(str(body["description"])) > 150:
                raise ApiError(40058, "description longer than 150 characters")
            follow.description = str(body["description"])
        if "remark_company" in body:
            follow.remark_corp_name = str(body["remark_company"])[:64]
        if "remark_mobiles" in body:
            follow.remark_mobiles = _strings(body["remark_mobiles"], "remark_mobiles", maximum=5)
        return {}

    # ---- corp tags ----------------------------------------------------------------------------

    @_locked
    def api_get_corp_tag_list(self, body: dict[str, Any]) -> dict[str, Any]:
        tag_ids = set(_strings(body.get("tag_id"), "tag_id"))
        group_ids = set(_strings(body.get("group_id"), "group_id"))
        groups = []
        for group in self.state.tag_groups:
            tags = group.tags
            if group_ids:  # WeCom: with both filters, group_id wins and tag_id is ignored
                if group.group_id not in group_ids:
                    continue
            elif tag_ids:
                tags = [t for t in tags if t.id in tag_ids]
                if not tags:
                    continue
            groups.append(_group_body(group, tags))
        return {"tag_group": groups}

    @_locked
    def api_add_corp_tag(self, body: dict[str, Any]) -> dict[str, Any]:
        tags_in = body.get("tag") or []
        if not isinstance(tags_in, list) or not tags_in:
            raise ApiError(40058, "tag is required")
        now = int(self.clock())
        group: TagGroup | None = None
        if body.get("group_id"):
            group = next((g for g in self.state.tag_groups if g.group_id == body["group_id"]), None)
            if group is None:
                raise ApiError(40068, "invalid tag group id")
        else:
            name = str(body.get("group_name") or "").strip()
            if not name or len(name) > 30:
                raise ApiError(40058, "group_name is required (at most 30 characters)")
            group = next((g for g in self.state.tag_groups if g.group_name == name), None)
            if group is None:
                group = TagGroup(group_id=self._id("et"), group_name=name, create_time=now,
                                 order=int(body.get("order") or 0))
                self.state.tag_groups.append(group)
        added: list[Tag] = []
        for item in tags_in:
            name = str((item or {}).get("name", "")).strip() if isinstance(item, dict) else ""
            if not name or len(name) > 30:
                raise ApiError(40058, "tag name is required (at most 30 characters)")
            if any(t.name == name for t in [*group.tags, *added]):
                raise ApiError(40071, f"tag name exists: {name}")
            added.append(Tag(id=self._id("et"), name=name, create_time=now, order=int(item.get("order") or 0)))
        group.tags.extend(added)
        return {"tag_group": _group_body(group, added)}

    @_locked
    def api_edit_corp_tag(self, body: dict[str, Any]) -> dict[str, Any]:
        target = body.get("id")
        name = body.get("name")
        if name is not None and (not str(name).strip() or len(str(name)) > 30):
            raise ApiError(40058, "name must be 1 to 30 characters")
        for group in self.state.tag_groups:
            if group.group_id == target:
                if name is not None:
                    if any(g.group_name == name and g is not group for g in self.state.tag_groups):
                        raise ApiError(40071, f"tag group name exists: {name}")
                    group.group_name = str(name)
                if body.get("order") is not None:
                    group.order = int(body["order"])
                return {}
            for tag in group.tags:
                if tag.id == target:
                    if name is not None:
                        if any(t.name == name and t is not tag for t in group.tags):
                            raise ApiError(40071, f"tag name exists: {name}")
                        tag.name = str(name)
                    if body.get("order") is not None:
                        tag.order = int(body["order"])
                    return {}
        raise ApiError(40068, "invalid tag id")

    @_locked
    def api_del_corp_tag(self, body: dict[str, Any]) -> dict[str, Any]:
        tag_ids = set(_strings(body.get("tag_id"), "tag_id"))
        group_ids = set(_strings(body.get("group_id"), "group_id"))
        if not tag_ids and not group_ids:
            raise ApiError(40058, "tag_id and group_id cannot both be empty")
        known = self._tag_index()
        if tag_ids - known.keys() or group_ids - {g.group_id for g in self.state.tag_groups}:
            raise ApiError(40068, "invalid tag id")
        removed = set(tag_ids)
        for group in self.state.tag_groups:
            if group.group_id in group_ids:
                removed.update(t.id for t in group.tags)
            group.tags = [t for t in group.tags if t.id not in removed]
        # A group whose last tag is deleted is deleted with it (as WeCom does).
        self.state.tag_groups = [g for g in self.state.tag_groups if g.tags and g.group_id not in group_ids]
        for contact in self.state.contacts:
            for follow in contact.follows:
                follow.tag_ids = [t for t in follow.tag_ids if t not in removed]
        return {}

    @_locked
    def api_mark_tag(self, body: dict[str, Any]) -> dict[str, Any]:
        _contact, follow = self._relation(body.get("userid"), body.get("external_userid"))
        add = _strings(body.get("add_tag"), "add_tag")
        remove = _strings(body.get("remove_tag"), "remove_tag")
        if not add and not remove:
            raise ApiError(40058, "add_tag and remove_tag cannot both be empty")
        known = self._tag_index()
        if any(t not in known for t in [*add, *remove]):
            raise ApiError(40068, "invalid tag id")
        follow.tag_ids = [t for t in follow.tag_ids if t not in remove] + [t for t in add if t not in follow.tag_ids
                                                                            and t not in remove]
        return {}

    # ---- contact ways (渠道活码) -----------------------------------------------------------------

    def _contact_way_fields(self, body: dict[str, Any], current: ContactWay | None, kind: int) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for key in ("remark", "state"):
            if key in body:
                value = str(body[key] or "")
                if len(value) > 30:
                    raise ApiError(40058, f"{key} longer than 30 characters")
                fields[key] = value
        if "style" in body:
            fields["style"] = int(body["style"] or 0)
        if "skip_verify" in body:
            fields["skip_verify"] = bool(body["skip_verify"])
        if "expires_in" in body:
            fields["expires_in"] = int(body["expires_in"] or 0)
        if "user" in body:
            users = _strings(body["user"], "user", maximum=100)
            for userid in users:
                if not self.member(userid).follow:
                    raise ApiError(84074, f"{userid} has no customer-contact permission")
            fields["user"] = users
        if "party" in body:
            party = body["party"] or []
            if not isinstance(party, list):
                raise ApiError(40058, "party must be a list")
            fields["party"] = [int(p) for p in party]
        users = fields.get("user", current.user if current else [])
        if kind == 1 and len(users) != 1:
            raise ApiError(41041, "a single-person contact way needs exactly one user")
        if not users and not fields.get("party", current.party if current else []):
            raise ApiError(40058, "user and party cannot both be empty")
        return fields

    @_locked
    def api_add_contact_way(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("type") in (None, ""):
            raise ApiError(41037, "missing type")
        if body.get("scene") in (None, ""):
            raise ApiError(41038, "missing scene")
        if body.get("type") not in (1, 2, "1", "2"):
            raise ApiError(41039, "invalid type")
        if body.get("scene") not in (1, 2, "1", "2"):
            raise ApiError(41040, "invalid scene")
        kind, scene = int(body["type"]), int(body["scene"])
        fields = self._contact_way_fields(body, None, kind)
        way = self._new_contact_way(type=kind, scene=scene, created_at=int(self.clock()),
                                    is_temp=bool(body.get("is_temp", False)), **fields)
        self.state.contact_ways.append(way)
        body_out: dict[str, Any] = {"config_id": way.config_id}
        if scene == 2:
            body_out["qr_code"] = way.qr_code
        return body_out

    def _contact_way(self, body: dict[str, Any]) -> ContactWay:
        config_id = body.get("config_id")
        if not config_id:
            raise ApiError(41043, "missing config_id")
        way = next((w for w in self.state.contact_ways if w.config_id == config_id), None)
        if way is None:
            raise ApiError(41044, "invalid config_id")
        return way

    @_locked
    def api_get_contact_way(self, body: dict[str, Any]) -> dict[str, Any]:
        way = self._contact_way(body)
        return {"contact_way": {
            "config_id": way.config_id, "type": way.type, "scene": way.scene, "style": way.style,
            "remark": way.remark, "skip_verify": way.skip_verify, "state": way.state, "qr_code": way.qr_code,
            "user": list(way.user), "party": list(way.party), "is_temp": way.is_temp,
            "expires_in": way.expires_in}}

    @_locked
    def api_update_contact_way(self, body: dict[str, Any]) -> dict[str, Any]:
        way = self._contact_way(body)
        for key, value in self._contact_way_fields(body, way, way.type).items():
            setattr(way, key, value)
        return {}

    @_locked
    def api_del_contact_way(self, body: dict[str, Any]) -> dict[str, Any]:
        way = self._contact_way(body)
        self.state.contact_ways.remove(way)
        return {}

    @_locked
    def api_list_contact_way(self, body: dict[str, Any]) -> dict[str, Any]:
        now = int(self.clock())
        start = int(body.get("start_time") or now - 90 * 86400)
        end = int(body.get("end_time") or now)
        ways = [w for w in self.state.contact_ways if start <= w.created_at <= end]
        chunk, next_cursor = page(ways, body.get("cursor"), _limit(body.get("limit"), default=100, maximum=1000))
        return {"contact_way": [{"config_id": w.config_id} for w in chunk], "next_cursor": next_cursor}

    # ---- group chats --------------------------------------------------------------------------

    @_locked
    def api_groupchat_list(self, body: dict[str, Any]) -> dict[str, Any]:
        limit = body.get("limit")
        if limit in (None, ""):
            raise ApiError(40058, "limit is required")
        if not 1 <= int(limit) <= 1000:
            raise ApiError(40058, "limit must be 1 to 1000")
        owners = set(_strings((body.get("owner_filter") or {}).get("userid_list"), "owner_filter.userid_list"))
        status = int(body.get("status_filter") or 0)
        chats = [c for c in self.state.group_chats if not c.dismissed and (not owners or c.owner in owners)
                 and (status == 0 or c.status == status)]
        chunk, next_cursor = page(chats, body.get("cursor"), int(limit))
        return {"group_chat_list": [{"chat_id": c.chat_id, "status": c.status} for c in chunk],
                "next_cursor": next_cursor}

    @_locked
    def api_groupchat_get(self, body: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(body.get("chat_id"))
        if chat.dismissed:
            raise ApiError(49008, "group chat dismissed")
        need_name = str(body.get("need_name") or "0") == "1"
        members = []
        for m in chat.members:
            item: dict[str, Any] = {"userid": m.userid, "type": m.type, "join_time": m.join_time,
                                    "join_scene": m.join_scene, "group_nickname": m.group_nickname}
            if m.invitor:
                item["invitor"] = {"userid": m.invitor}
            if m.state:
                item["state"] = m.state
            if need_name:
                item["name"] = m.name
            members.append(item)
        return {"group_chat": {"chat_id": chat.chat_id, "name": chat.name, "owner": chat.owner,
                               "create_time": chat.create_time, "notice": chat.notice, "member_list": members,
                               "admin_list": [{"userid": a} for a in chat.admin_list],
                               "member_version": chat.member_version}}

    # ---- 群活码 (客户群「加入群聊」, W:92229) and group statistics (W:96359) -------------------------------

    def _join_way_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        chats = _strings(body.get("chat_id_list"), "chat_id_list")
        if not chats:
            raise ApiError(40058, "chat_id_list is required")
        if len(chats) > JOIN_WAY_CHATS:
            raise ApiError(40058, f"chat_id_list has more than {JOIN_WAY_CHATS} items")
        for chat_id in chats:
            if self._chat(chat_id).dismissed:
                raise ApiError(49008, "group chat dismissed")
        state = str(body.get("state") or "")
        if len(state) > 30:
            raise ApiError(40058, "state longer than 30 characters")
        auto = int(body.get("auto_create_room", 1) or 0)
        base = str(body.get("room_base_name") or "")
        if len(base) > 40:
            raise ApiError(40058, "room_base_name longer than 40 characters")
        fields: dict[str, Any] = {"chat_id_list": chats, "state": state, "auto_create_room": 1 if auto else 0,
                                  "room_base_name": base, "remark": str(body.get("remark") or "")[:30]}
        if body.get("room_base_id") not in (None, ""):
            fields["room_base_id"] = int(body["room_base_id"])
        return fields

    def _join_way(self, body: dict[str, Any]) -> JoinWay:
        config_id = body.get("config_id")
        if not config_id:
            raise ApiError(41043, "missing config_id")
        way = next((w for w in self.state.join_ways if w.config_id == config_id), None)
        if way is None:
            raise ApiError(41044, "invalid config_id")
        return way

    @_locked
    def api_groupchat_add_join_way(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("scene") not in (1, 2, "1", "2"):
            raise ApiError(41040, "invalid scene")
        fields = self._join_way_fields(body)
        config_id = self._id("jw")
        way = JoinWay(config_id=config_id, scene=int(body["scene"]), created_at=int(self.clock()),
                      qr_code=f"https://wework.qpic.cn/wwpic/simulated/{config_id}" if int(body["scene"]) == 2 else "",
                      **fields)
        self.state.join_ways.append(way)
        return {"config_id": config_id}

    @_locked
    def api_groupchat_get_join_way(self, body: dict[str, Any]) -> dict[str, Any]:
        way = self._join_way(body)
        return {"join_way": way.model_dump(exclude={"created_at"})}

    @_locked
    def api_groupchat_update_join_way(self, body: dict[str, Any]) -> dict[str, Any]:
        way = self._join_way(body)
        if body.get("scene") not in (1, 2, "1", "2"):
            raise ApiError(41040, "invalid scene")
        for key, value in self._join_way_fields(body).items():
            setattr(way, key, value)
        return {}

    @_locked
    def api_groupchat_del_join_way(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.join_ways.remove(self._join_way(body))
        return {}

    # ---- 入群欢迎语素材 (W:92366): ≤ 100 per corp

    def _welcome_template(self, body: dict[str, Any]) -> GroupWelcomeTemplate:
        template_id = body.get("template_id")
        if not template_id:
            raise ApiError(40058, "missing template_id")
        found = next((t for t in self.state.group_welcome_templates if t.template_id == template_id), None)
        if found is None:
            raise ApiError(40058, "invalid template_id")
        return found

    @_locked
    def api_group_welcome_template_add(self, body: dict[str, Any]) -> dict[str, Any]:
        text, attachments = _text(body)
        if len(self.state.group_welcome_templates) >= GROUP_WELCOME_TEMPLATES:
            raise ApiError(40058, f"at most {GROUP_WELCOME_TEMPLATES} group welcome templates per corp")
        template = GroupWelcomeTemplate(template_id="msg" + self._id("", 29), text=text, attachments=attachments)
        self.state.group_welcome_templates.append(template)
        return {"template_id": template.template_id}

    @_locked
    def api_group_welcome_template_edit(self, body: dict[str, Any]) -> dict[str, Any]:
        template = self._welcome_template(body)
        template.text, template.attachments = _text(body)
        return {}

    @_locked
    def api_group_welcome_template_get(self, body: dict[str, Any]) -> dict[str, Any]:
        template = self._welcome_template(body)
        return {"text": {"content": template.text}, **({"attachments": template.attachments}
                                                       if template.attachments else {})}

    @_locked
    def api_group_welcome_template_del(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.group_welcome_templates.remove(self._welcome_template(body))
        return {}

    def _stat_days(self, body: dict[str, Any]) -> tuple[int, int]:
        """W:96359: whole days from yesterday back 180 days, at most 30 per call; today answers 600018."""
        try:
            begin, end = int(body.get("day_begin_time") or 0), int(body.get("day_end_time") or 0)
        except (TypeError, ValueError) as exc:
            raise ApiError(40058, "day_begin_time and day_end_time are timestamps") from exc
        end = end or begin
        day = 86400
        today = (int(self.clock()) + 8 * 3600) // day * day - 8 * 3600  # midnight in China
        if not begin or end < begin:
            raise ApiError(40058, "invalid day_begin_time")
        if end >= today:
            raise ApiError(600018, "invalid time: today or later has no data yet")
        if begin < today - STAT_DAYS_BACK * day:
            raise ApiError(600018, "invalid time: more than 180 days ago")
        if (end - begin) // day + 1 > STAT_SPAN_DAYS:
            raise ApiError(600018, "invalid time: more than 30 days")
        return (begin + 8 * 3600) // day * day - 8 * 3600, end

    def _stat_owners(self, body: dict[str, Any]) -> list[str]:
        owners = _strings((body.get("owner_filter") or {}).get("userid_list"), "owner_filter.userid_list",
                          maximum=100)
        if not owners:
            raise ApiError(40058, "owner_filter.userid_list is required")
        return owners

    def _day_figures(self, owners: set[str], start: int) -> dict[str, int]:
        end = start + 86400
        chats = [c for c in self.state.group_chats if c.owner in owners and c.create_time < end
                 and not c.dismissed]
        members = [m for c in chats for m in c.members]
        return {"new_chat_cnt": sum(1 for c in chats if c.create_time >= start), "chat_total": len(chats),
                "chat_has_msg": 0, "new_member_cnt": sum(1 for m in members if start <= m.join_time < end),
                "member_total": sum(1 for m in members if m.join_time < end), "member_has_msg": 0, "msg_total": 0,
                "migrate_trainee_chat_cnt": 0}

    @_locked
    def api_groupchat_statistic_group_by_day(self, body: dict[str, Any]) -> dict[str, Any]:
        begin, end = self._stat_days(body)
        owners = set(self._stat_owners(body))
        return {"items": [{"stat_time": day, "data": self._day_figures(owners, day)}
                          for day in range(begin, end + 1, 86400)]}

    @_locked
    def api_groupchat_statistic(self, body: dict[str, Any]) -> dict[str, Any]:
        begin, end = self._stat_days(body)
        items = []
        for owner in self._stat_owners(body):
            days = [self._day_figures({owner}, day) for day in range(begin, end + 1, 86400)]
            data = {k: sum(d[k] for d in days) for k in days[0]} if days else {}
            if days:  # totals are the last day's, not a sum
                for key in ("chat_total", "member_total"):
                    data[key] = days[-1][key]
            items.append({"owner": owner, "data": data})
        offset = int(body.get("offset") or 0)
        limit = _limit(body.get("limit"), default=500, maximum=1000)
        chunk = items[offset:offset + limit]
        return {"total": len(items), "next_offset": offset + len(chunk) if offset + len(chunk) < len(items) else 0,
                "items": chunk}

    # ---- transfers of customers between members (在职继承 / 离职继承) --------------------------------------

    def _transfer_parties(self, body: dict[str, Any], kind: str) -> tuple[Member, Member]:
        handover = self.member(body.get("handover_userid"), left_ok=kind == "resigned")
        takeover = self.member(body.get("takeover_userid"))
        if kind == "resigned" and handover.left_at is None:
            raise ApiError(40097, f"the handover member has not left the corp: {handover.userid}")
        if handover.userid == takeover.userid:
            raise ApiError(40058, "handover_userid and takeover_userid must differ")
        return handover, takeover

    def _transfer_customers(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        handover, takeover = self._transfer_parties(body, kind)
        if not takeover.follow:
            raise ApiError(84074, f"{takeover.userid} has no customer-contact permission")
        ids = _strings(body.get("external_userid"), "external_userid", maximum=100)
        if not ids:
            raise ApiError(40058, "external_userid is required")
        if len(str(body.get("transfer_success_msg") or "")) > 200:
            raise ApiError(40058, "transfer_success_msg longer than 200 characters")
        now = int(self.clock())
        answers = []
        for external_userid in ids:  # each customer gets its own errcode, as on the platform
            contact = self.by_id.get(external_userid)
            if contact is None:
                answers.append({"external_userid": external_userid, "errcode": 40096})
                continue
            if contact.follow(handover.userid) is None:
                answers.append({"external_userid": external_userid, "errcode": 84061})
                continue
            if any(t.external_userid == external_userid and t.handover_userid == handover.userid and t.status == 2
                   for t in self.state.transfers):
                answers.append({"external_userid": external_userid, "errcode": 40100})  # already on its way
                continue
            transfer = Transfer(kind=kind, handover_userid=handover.userid, takeover_userid=takeover.userid,
                                external_userid=external_userid, created_at=now)
            self.state.transfers.append(transfer)
            if self.auto_accept_transfer:
                self._take_over(transfer)
            answers.append({"external_userid": external_userid, "errcode": 0})
        return {"customer": answers}

    def _take_over(self, transfer: Transfer) -> None:
        """The takeover member now has the customer, with the remark and tags; the handover's friendship ends."""
        contact = self.contact(transfer.external_userid)
        old = contact.follow(transfer.handover_userid)
        now = int(self.clock())
        if old is not None:
            old.deleted_at = now
            if contact.follow(transfer.takeover_userid) is None:
                contact.follows.append(Follow(
                    userid=transfer.takeover_userid, remark=old.remark, description=old.description, createtime=now,
                    tag_ids=list(old.tag_ids), remark_corp_name=old.remark_corp_name,
                    remark_mobiles=list(old.remark_mobiles), add_way=202, oper_userid=transfer.handover_userid,
                    state=old.state))
        transfer.status, transfer.takeover_time = 1, now

    def _transfer_result(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        handover, takeover = self._transfer_parties(body, kind)
        rows = [{"external_userid": t.external_userid, "status": t.status, "takeover_time": t.takeover_time}
                for t in self.state.transfers if t.kind == kind and t.handover_userid == handover.userid
                and t.takeover_userid == takeover.userid]
        chunk, next_cursor = page(rows, body.get("cursor"), 1000)
        return {"customer": chunk, "next_cursor": next_cursor}

    @_locked
    def api_transfer_customer(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._transfer_customers(body, "in_service")

    @_locked
    def api_transfer_result(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._transfer_result(body, "in_service")

    @_locked
    def api_resigned_transfer_customer(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._transfer_customers(body, "resigned")

    @_locked
    def api_resigned_transfer_result(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._transfer_result(body, "resigned")

    @_locked
    def api_get_unassigned_list(self, body: dict[str, Any]) -> dict[str, Any]:
        """Customers of members who left, still waiting for someone to take them over."""
        size = _limit(body.get("page_size"), default=1000, maximum=1000)
        rows = [{"handover_userid": m.userid, "external_userid": c.external_userid, "dimission_time": m.left_at}
                for m in self.state.members if m.left_at is not None
                for c in self.state.contacts if c.follow(m.userid) is not None]
        cursor = body.get("cursor")
        if not cursor and body.get("page_id"):
            cursor = encode_cursor(int(body["page_id"]) * size)
        chunk, next_cursor = page(rows, cursor, size)
        return {"info": chunk, "is_last": not next_cursor, "next_cursor": next_cursor}

    # ---- 联系客户统计 (W:96358) ---------------------------------------------------------------------------

    @_locked
    def api_get_user_behavior_data(self, body: dict[str, Any]) -> dict[str, Any]:
        """获取「联系客户统计」数据: one row per day of [start_time, end_time] (both closed, rounded down to
        China midnight), span ≤ 30 days, the last 180 days only; several userids come back summed."""
        userids = _strings(body.get("userid"), "userid", maximum=BEHAVIOUR_IDS_PER_CALL)
        parties = body.get("partyid") or []
        if not userids and not parties:
            raise ApiError(40058, "userid and partyid cannot both be empty")
        for userid in userids:
            self.member(userid)  # an unknown member: 60111, as every member call answers
        try:
            start, end = int(body.get("start_time") or 0), int(body.get("end_time") or 0)
        except (TypeError, ValueError) as exc:
            raise ApiError(600018, "invalid start endtime") from exc
        first, last = _china_midnight(start), _china_midnight(end)
        oldest = _china_midnight(int(self.clock())) - BEHAVIOUR_KEPT_DAYS * 86400
        if start <= 0 or end < start or (last - first) // 86400 + 1 > BEHAVIOUR_SPAN_DAYS or first < oldest:
            raise ApiError(600018, "invalid start endtime")
        rows = []
        for day in range(first, last + 1, 86400):
            figures = [self._behaviour(userid, day) for userid in userids]
            row = {key: sum(f[key] for f in figures) for key in BEHAVIOUR_COUNTS}
            replied = [f for f in figures if f["chat_cnt"]]
            row["reply_percentage"] = round(sum(f["reply_percentage"] for f in replied) / len(replied), 2) \
                if replied else 0
            if replied:  # "仅在确有聊天时返回"
                row["avg_reply_time"] = round(sum(f["avg_reply_time"] for f in replied) / len(replied))
            rows.append({"stat_time": day, **row})
        return {"behavior_data": rows}

    def _behaviour(self, userid: str, day: int) -> dict[str, Any]:
        """One member's figures for one day: new contacts and deletions from the corp's own follows, the
        chat figures a steady pseudo-random draw per member and day (the same answer every time)."""
        rng = random.Random(f"behaviour/{userid}/{day}")  # noqa: S311 - simulated figures, not security
        new_contacts = sum(1 for c in self.state.contacts for f in c.follows
                           if f.userid == userid and day <= f.createtime < day + 86400)
        lost = sum(1 for c in self.state.contacts for f in c.follows
                   if f.userid == userid and f.deleted_at is not None and day <= f.deleted_at < day + 86400)
        chats = rng.randint(0, 25)
        return {"chat_cnt": chats, "message_cnt": chats * rng.randint(1, 6) if chats else 0,
                "reply_percentage": round(rng.uniform(55, 100), 2) if chats else 0,
                "avg_reply_time": rng.randint(1, 90) if chats else 0, "negative_feedback_cnt": lost,
                "new_apply_cnt": rng.randint(0, 3), "new_contact_cnt": new_contacts}

    # ---- 发送应用消息 (W:90236) ---------------------------------------------------------------------------

    @_locked
    def api_message_send(self, body: dict[str, Any]) -> dict[str, Any]:
        """The self-built app's message to members: text, textcard or markdown to ``touser`` ('|'-separated
        userids, or @all). Unknown or left members come back in ``invaliduser`` (lower case); when none is
        reachable, 81013. With ``enable_duplicate_check`` the same request within the interval is answered
        but not delivered again."""
        try:
            agentid = int(body.get("agentid"))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ApiError(41011, "missing agentid") from exc
        msgtype = str(body.get("msgtype") or "")
        if msgtype not in ("text", "textcard", "markdown"):
            raise ApiError(40008, "invalid message type")
        content = body.get(msgtype)
        if not isinstance(content, dict):
            raise ApiError(41016 if msgtype == "textcard" else 41012, f"missing {msgtype}")
        if msgtype == "textcard":
            if not content.get("title") or not content.get("description") or not content.get("url"):
                raise ApiError(41016, "missing title, description or url")
            content = {"title": _cut(str(content["title"]), TEXTCARD_TITLE_BYTES),
                       "description": _cut(str(content["description"]), TEXTCARD_DESCRIPTION_BYTES),
                       "url": str(content["url"]),
                       "btntxt": str(content.get("btntxt") or "详情")[:TEXTCARD_BUTTON_CHARS]}
        elif len(str(content.get("content") or "").encode("utf-8")) > APP_TEXT_BYTES:
            raise ApiError(44004, "content exceed max length")
        elif not content.get("content"):
            raise ApiError(44004, "empty content")
        raw = str(body.get("touser") or "")
        wanted = [u for u in raw.split("|") if u] if raw != "@all" else [m.userid for m in self.state.members]
        if not wanted and not body.get("toparty") and not body.get("totag"):
            raise ApiError(40058, "touser, toparty and totag cannot all be empty")
        if len(wanted) > APP_MESSAGE_USERS:
            raise ApiError(40058, "touser exceeds 1000")
        active = {m.userid.lower(): m.userid for m in self.state.members if m.status == 1}
        reached = [active[u.lower()] for u in wanted if u.lower() in active]
        invalid = [u.lower() for u in wanted if u.lower() not in active]
        if not reached:
            raise ApiError(81013, "user & party & tag all invalid")
        now = int(self.clock())
        digest = json.dumps(body, sort_keys=True, ensure_ascii=False)
        msgid = self._id("", 40)
        if body.get("enable_duplicate_check"):
            window = min(int(body.get("duplicate_check_interval") or DUPLICATE_CHECK_DEFAULT), DUPLICATE_CHECK_MAX)
            earlier = next((m for m in reversed(self.state.app_messages)
                            if m.digest == digest and now - m.sent_at < window), None)
            if earlier is not None:
                return {"invaliduser": "|".join(invalid), "msgid": earlier.msgid}
        self.state.app_messages.append(AppMessage(msgid=msgid, agentid=agentid, touser=reached, msgtype=msgtype,
                                                  content=dict(content), sent_at=now, digest=digest))
        del self.state.app_messages[:-APP_MESSAGES_KEPT]
        return {"invaliduser": "|".join(invalid), "msgid": msgid}

    @_locked
    def app_messages(self, userid: str = "") -> list[dict[str, Any]]:
        """What members received from the corp's app (message/send), oldest first; one member's when given."""
        return [m.model_dump(exclude={"digest"}) for m in self.state.app_messages
                if not userid or userid in m.touser]

    # ---- welcome messages and mass sends ---------------------------------------------------------------

    @_locked
    def api_send_welcome_msg(self, body: dict[str, Any]) -> dict[str, Any]:
        code = body.get("welcome_code")
        if not code:
            raise ApiError(41049, "missing welcome_code")
        found = next((w for w in self.state.welcome_codes if w.code == code), None)
        if found is None or found.used_at is not None or self.clock() - found.issued_at > WELCOME_CODE_SECONDS:
            raise ApiError(41050, "invalid welcome_code")  # unknown, used once already, or older than 20 s
        text, attachments = _text(body)
        self._check_media(attachments)
        found.used_at = self.clock()
        self.state.welcome_messages.append(WelcomeMessage(userid=found.userid, external_userid=found.external_userid,
                                                          text=text, attachments=attachments,
                                                          sent_at=int(self.clock())))
        del self.state.welcome_messages[:-1000]
        return {}

    # ---- W:90253 上传临时素材 ----------------------------------------------------------------

    @_locked
    def api_upload_media(self, query: dict[str, Any], *, filename: str, head: bytes, size: int) -> dict[str, Any]:
        """``media/upload?type=…`` with a multipart ``media`` file: its ``media_id``, valid 3 days."""
        media_type = str(query.get("type") or "")
        if media_type not in MEDIA_MAX_BYTES:
            raise ApiError(INVALID_MEDIA_TYPE, "invalid media type")
        if size <= MEDIA_MIN_BYTES:
            raise ApiError(INVALID_FILE_SIZE, "invalid file size")
        if size > MEDIA_MAX_BYTES[media_type]:
            raise ApiError(MEDIA_SIZE_ERRORS[media_type], f"invalid {media_type} size")
        if media_type == "image" and not head.startswith(IMAGE_MAGIC):
            raise ApiError(INVALID_FILE_TYPE, "invalid file type")
        upload = Upload(media_id="1" + self._id("", 53), media_type=media_type, filename=filename[:128], size=size,
                        created_at=int(self.clock()))
        self.state.uploads.append(upload)
        del self.state.uploads[:-5000]
        return {"type": media_type, "media_id": upload.media_id, "created_at": str(upload.created_at)}

    def upload(self, media_id: Any) -> Upload | None:
        """The temporary material a media_id names while it is valid (3 days), else None."""
        found = next((u for u in reversed(self.state.uploads) if u.media_id == media_id), None)
        if found is None or found.created_at + MEDIA_SECONDS <= self.clock():
            return None
        return found

    def _check_media(self, attachments: list[dict[str, Any]]) -> None:
        """Attachments of a welcome or mass message name media this corp issued and still keeps (W:92137:
        an image needs ``media_id`` or ``pic_url``; a mini-program its cover's ``pic_media_id``)."""
        for attachment in attachments:
            kind = attachment.get("msgtype")
            body = attachment.get(kind) if isinstance(kind, str) else None
            if kind not in ("image", "link", "miniprogram", "video", "file") or not isinstance(body, dict):
                raise ApiError(40058, "invalid attachments msgtype")
            if kind == "image" and not body.get("media_id") and body.get("pic_url"):
                continue
            wanted = {"image": "media_id", "miniprogram": "pic_media_id", "video": "media_id",
                      "file": "media_id"}.get(kind)
            if wanted is None:
                continue
            upload = self.upload(body.get(wanted))
            expected = "image" if kind in ("image", "miniprogram") else kind
            if upload is None or upload.media_type != expected:
                raise ApiError(INVALID_MEDIA_ID, f"invalid media_id: {body.get(wanted)}")
            if kind == "miniprogram" and not (body.get("appid") and body.get("page") and body.get("title")):
                raise ApiError(40058, "miniprogram needs title, appid and page")

    @_locked
    def api_add_msg_template(self, body: dict[str, Any]) -> dict[str, Any]:
        chat_type = body.get("chat_type") or "single"
        if chat_type not in ("single", "group"):
            raise ApiError(40058, "chat_type must be single or group")
        text, attachments = _text(body)
        self._check_media(attachments)
        sender = str(body.get("sender") or "")
        if sender:
            self.member(sender)
        now = int(self.clock())
        task = MassSend(msgid="msg" + self._id("", 29), chat_type=chat_type, sender=sender, created_at=now,
                        text=text, attachments=attachments)
        fail_list: list[str] = []
        if chat_type == "single":
            targets = _strings(body.get("external_userid"), "external_userid", maximum=10000)
            if not targets and not sender:
                raise ApiError(40058, "external_userid and sender cannot both be empty")
            if not targets:
                targets = [c.external_userid for c in self.state.contacts if c.follow(sender)]
            for external_userid in dict.fromkeys(targets):
                contact = self.by_id.get(external_userid)
                follow = (contact.follow(sender) if sender else (contact.active[0] if contact.active else None)) \
                    if contact else None
                if follow is None:
                    fail_list.append(external_userid)  # not a customer of the sender (or of anyone)
                    continue
                task.results.append(SendResult(external_userid=external_userid, userid=follow.userid))
        else:
            if not sender:
                raise ApiError(40058, "sender is required for a group mass send")
            wanted = set(_strings(body.get("chat_id_list"), "chat_id_list", maximum=2000))
            for chat in self.state.group_chats:
                if chat.owner == sender and not chat.dismissed and (not wanted or chat.chat_id in wanted):
                    task.results.append(SendResult(chat_id=chat.chat_id, userid=sender))
        if not task.results:
            raise ApiError(41048, "no customer to send to")
        self.state.mass_sends.append(task)
        if self.auto_confirm_mass_send:
            for userid in dict.fromkeys(r.userid for r in task.results):
                self._confirm(task, userid)
        return {"fail_list": fail_list, "msgid": task.msgid}

    def _confirm(self, task: MassSend, userid: str) -> None:
        """The member taps "send" in their app: each customer gets it unless the platform's limits say no."""
        if task.cancelled_at:
            return  # a cancelled task is gone from the member's app
        now = int(self.clock())
        today = datetime.fromtimestamp(now, CHINA).date()
        received = collections.Counter(
            r.external_userid for t in self.state.mass_sends for r in t.results
            if r.status == 1 and r.external_userid and datetime.fromtimestamp(r.send_time, CHINA).date() == today)
        for result in task.results:
            if result.userid != userid or result.status != 0:
                continue
            result.send_time = now
            if result.chat_id:
                result.status = 1
                continue
            contact = self.by_id.get(result.external_userid)
            if contact is None or contact.follow(userid) is None:
                result.status = 2
            elif received[result.external_userid] >= self.mass_send_daily_limit:
                result.status = 3
            else:
                result.status = 1
                received[result.external_userid] += 1

    def _mass_send(self, body: dict[str, Any]) -> MassSend:
        msgid = body.get("msgid")
        if not msgid:
            raise ApiError(41046, "missing msgid")
        task = next((t for t in self.state.mass_sends if t.msgid == msgid), None)
        if task is None:
            raise ApiError(41047, "invalid msgid")
        return task

    @_locked
    def api_get_groupmsg_task(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._mass_send(body)
        tasks = []
        for userid in dict.fromkeys(r.userid for r in task.results):
            mine = [r for r in task.results if r.userid == userid]
            sent = [r.send_time for r in mine if r.status != 0]
            tasks.append({"userid": userid, "status": 2 if sent else 0, "send_time": max(sent) if sent else 0})
        chunk, next_cursor = page(tasks, body.get("cursor"), _limit(body.get("limit"), default=500, maximum=1000))
        return {"task_list": chunk, "next_cursor": next_cursor}

    @_locked
    def api_get_groupmsg_send_result(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._mass_send(body)
        userid = body.get("userid")
        if not userid:
            raise ApiError(40058, "userid is required")
        self.member(userid)
        rows = [_send_row(r) for r in task.results if r.userid == userid]
        chunk, next_cursor = page(rows, body.get("cursor"), _limit(body.get("limit"), default=500, maximum=1000))
        return {"send_list": chunk, "next_cursor": next_cursor}

    @_locked
    def api_remind_groupmsg_send(self, body: dict[str, Any]) -> dict[str, Any]:
        """提醒成员群发 (W:97610): at most 3 reminders per task in 24 hours; a task all sent needs none."""
        task = self._mass_send(body)
        now = int(self.clock())
        recent = [t for t in task.reminders if now - t < 86400]
        if len(recent) >= REMINDERS_PER_DAY:
            raise ApiError(45009, "api freq out of limit: at most 3 reminders per task in 24 hours")
        task.reminders = [*recent, now]
        return {}

    @_locked
    def api_cancel_groupmsg_send(self, body: dict[str, Any]) -> dict[str, Any]:
        """停止企业群发 (W:97611): members who have not sent it yet can no longer send it."""
        task = self._mass_send(body)
        task.cancelled_at = task.cancelled_at or int(self.clock())
        return {}

    @_locked
    def api_get_group_msg_result(self, body: dict[str, Any]) -> dict[str, Any]:
        """The older per-message result call wechatpy 1.8.18 makes (get_group_msg_result)."""
        task = self._mass_send(body)
        statuses = {r.status for r in task.results}
        check_status = 0 if statuses == {0} else 2 if 0 not in statuses else 1
        return {"check_status": check_status, "detail_list": [_send_row(r) for r in task.results]}

    # ---- what people do on their phones (the driver's side) ---------------------------------------

    @_locked
    def add_contact(self, userid: str, state: str = "", external_userid: str = "", name: str = "",
                    add_way: int = 1) -> dict[str, Any]:
        """A customer adds ``userid`` (through the contact way with ``state``, if any)."""
        member = self.member(userid)
        now = int(self.clock())
        contact = self.by_id.get(external_userid) if external_userid else None
        if contact is None:
            contact = self._new_contact(added_at=now, name=name or None)
            self._keep(contact)
        follow = contact.follow(member.userid)
        if follow is None:
            follow = Follow(userid=member.userid, createtime=now, state=state, add_way=add_way,
                            oper_userid=contact.external_userid)
            contact.follows.append(follow)
        code = WelcomeCode(code=base64.urlsafe_b64encode(secrets.token_bytes(30)).decode(), userid=member.userid,
                           external_userid=contact.external_userid, issued_at=self.clock())
        if len(self.state.welcome_codes) > 6000:  # forget used and stale codes now and then, not on every add
            self.state.welcome_codes = [w for w in self.state.welcome_codes
                                        if w.used_at is None and self.clock() - w.issued_at <= 3600][-5000:]
        self.state.welcome_codes.append(code)
        return {"external_userid": contact.external_userid, "name": contact.name, "welcome_code": code.code,
                "create_time": now}

    @_locked
    def remove_contact(self, userid: str, external_userid: str) -> dict[str, Any]:
        """The friendship between ``userid`` and the customer ends (the callback says which side ended it)."""
        _contact, follow = self._relation(userid, external_userid)
        now = int(self.clock())
        follow.deleted_at = now
        return {"create_time": now}

    @_locked
    def edit_contact(self, userid: str, external_userid: str, remark: str = "",
                     description: str = "") -> dict[str, Any]:
        """The member edits the customer's remark in their app (edit_external_contact)."""
        _contact, follow = self._relation(userid, external_userid)
        follow.remark = remark or follow.remark
        follow.description = description or follow.description
        return {"create_time": int(self.clock())}

    def _create_group(self, owner: str, name: str, external_userids: list[str], *, created_at: int) -> GroupChat:
        chat = GroupChat(chat_id=self._id("wr"), name=name, owner=owner, create_time=created_at,
                         notice=f"欢迎加入{name}，请先阅读群规。")
        chat.members.append(ChatMember(userid=owner, type=1, join_time=created_at, name=self.member(owner).name))
        self._join(chat, external_userids, scene=1, invitor=owner, at=created_at)
        self.state.group_chats.append(chat)
        return chat

    def _join(self, chat: GroupChat, external_userids: list[str], *, scene: int, invitor: str, at: int) -> list[str]:
        present = {m.userid for m in chat.members}
        joined = []
        for external_userid in external_userids:
            if external_userid in present:
                continue
            contact = self.contact(external_userid)
            chat.members.append(ChatMember(userid=external_userid, type=2, join_time=at, join_scene=scene,
                                           invitor=invitor if scene == 1 else "", name=contact.name))
            joined.append(external_userid)
        return joined

    @_locked
    def create_group(self, owner: str, name: str = "", external_userids: list[str] | None = None) -> dict[str, Any]:
        now = int(self.clock())
        chat = self._create_group(owner, name or f"{self.rng.choice(GROUP_NAMES)}{len(self.state.group_chats) + 1}",
                                  list(external_userids or []), created_at=now)
        return {"chat_id": chat.chat_id, "create_time": now, "member_version": chat.member_version}

    @_locked
    def join_group(self, chat_id: str, external_userids: list[str], scene: int = 3) -> dict[str, Any]:
        chat = self._chat(chat_id)
        if chat.dismissed:
            raise ApiError(49008, "group chat dismissed")
        last = chat.member_version
        now = int(self.clock())
        joined = self._join(chat, external_userids, scene=scene, invitor=chat.owner, at=now)
        if joined:
            chat.version += 1
        return {"create_time": now, "members": joined, "last_version": last, "member_version": chat.member_version}

    @_locked
    def scan_join_way(self, config_id: str, external_userids: list[str]) -> dict[str, Any]:
        """Customers scan a 群活码: they join the first of its groups with room, or a group the platform
        creates from room_base_name/room_base_id when all are full and auto_create_room is on. Returns what
        the change_external_chat callback carries (JoinScene 3: scanned a group QR code; the state is in
        groupchat/get's member_list); ``full`` when everyone was turned away (all full, no auto-create)."""
        way = self._join_way({"config_id": config_id})
        now = int(self.clock())
        changes: list[dict[str, Any]] = []
        refused: list[str] = []
        created: list[str] = []
        for external_userid in external_userids:
            chat = next((c for c in (self._chat(i) for i in way.chat_id_list)
                         if not c.dismissed and len(c.members) < _chat_capacity(self, c)), None)
            if chat is None and way.auto_create_room:
                owner = self._chat(way.chat_id_list[0]).owner
                chat = self._create_group(owner, f"{way.room_base_name}{way.room_base_id}", [], created_at=now)
                way.room_base_id += 1
                if len(way.chat_id_list) < JOIN_WAY_CHATS:
                    way.chat_id_list.append(chat.chat_id)
                else:
                    way.chat_id_list = [*way.chat_id_list[1:], chat.chat_id]
                created.append(chat.chat_id)
            if chat is None:
                refused.append(external_userid)
                continue
            last = chat.member_version
            if not self._join(chat, [external_userid], scene=3, invitor="", at=now):
                continue
            chat.members[-1].state = way.state
            chat.version += 1
            changes.append({"chat_id": chat.chat_id, "members": [external_userid], "scene": 3, "create_time": now,
                            "last_version": last, "member_version": chat.member_version})
        return {"changes": changes, "created": created, "refused": refused, "full": bool(refused)}

    @_locked
    def quit_group(self, chat_id: str, external_userids: list[str], scene: int = 0) -> dict[str, Any]:
        chat = self._chat(chat_id)
        last = chat.member_version
        gone = [m.userid for m in chat.members if m.type == 2 and m.userid in set(external_userids)]
        chat.members = [m for m in chat.members if m.userid not in set(gone)]
        if gone:
            chat.version += 1
        return {"create_time": int(self.clock()), "members": gone, "last_version": last,
                "member_version": chat.member_version}

    @_locked
    def dismiss_group(self, chat_id: str) -> dict[str, Any]:
        chat = self._chat(chat_id)
        chat.dismissed = True
        return {"create_time": int(self.clock())}

    @_locked
    def tag_admin(self, action: str, **body: Any) -> dict[str, Any]:
        """An administrator changes corp tags in the WeCom admin console: the same rules as the API."""
        handlers = {"create": self.api_add_corp_tag, "update": self.api_edit_corp_tag, "delete": self.api_del_corp_tag}
        if action not in handlers:
            raise ApiError(40058, f"unknown tag action {action}")
        return {**handlers[action](body), "create_time": int(self.clock())}

    @_locked
    def resign_member(self, userid: str) -> dict[str, Any]:
        """The member leaves the corp: their customers stay, waiting to be handed over (离职继承)."""
        member = self.member(userid)
        now = int(self.clock())
        member.left_at, member.status, member.follow = now, 5, False
        return {"create_time": now}

    @_locked
    def confirm_mass_send(self, msgid: str, userid: str) -> dict[str, Any]:
        self._confirm(self._mass_send({"msgid": msgid}), userid)
        return {}

    @_locked
    def received(self, external_userid: str = "", chat_id: str = "") -> list[dict[str, Any]]:
        """What reached people's phones, oldest first: welcome messages, mass-send results with
        status 1 (a message still waiting for its member, or refused by the platform's limits, is
        not there) and 微信客服 messages (send_msg, send_msg_on_event, servicers' replies in WeCom's
        client). Filtered to one customer or one group chat when given."""
        rows: list[dict[str, Any]] = []
        for welcome in self.state.welcome_messages:
            if (external_userid and welcome.external_userid != external_userid) or chat_id:
                continue
            rows.append({"via": "welcome", "msgid": "", "sender": welcome.userid,
                         "external_userid": welcome.external_userid, "chat_id": "", "text": welcome.text,
                         "attachments": welcome.attachments, "received_at": welcome.sent_at})
        for task in self.state.mass_sends:
            for result in task.results:
                if result.status != 1 or (external_userid and result.external_userid != external_userid) \
                        or (chat_id and result.chat_id != chat_id):
                    continue
                rows.append({"via": "mass_send", "msgid": task.msgid, "sender": result.userid,
                             "external_userid": result.external_userid, "chat_id": result.chat_id,
                             "text": task.text, "attachments": task.attachments, "received_at": result.send_time})
        rows.extend(self.kf.received(external_userid) if not chat_id else [])
        rows.sort(key=lambda row: row["received_at"])
        return rows

    @_locked
    def overview(self) -> dict[str, Any]:
        return {
            "corp_id": self.state.corp_id, "seed": self.state.seed,
            "members": [m.userid for m in self.state.members],
            "contacts": len(self.state.contacts),
            "friendships": sum(len(c.active) for c in self.state.contacts),
            "tags": sum(len(g.tags) for g in self.state.tag_groups),
            "contact_ways": [{"config_id": w.config_id, "state": w.state, "user": w.user}
                             for w in self.state.contact_ways],
            "group_chats": sum(1 for c in self.state.group_chats if not c.dismissed),
            "welcome_messages": len(self.state.welcome_messages),
            "mass_sends": len(self.state.mass_sends),
            "transfers": len(self.state.transfers),
            "kf": self.kf.overview(),
        }

    def operation(self, name: str) -> Callable[..., Any]:
        """A driver operation by name (``POST /_simulator/<name>``): ``kf_…`` ones are the 微信客服 desk's."""
        if name.startswith("kf_"):
            return getattr(self.kf, name[3:])
        if name.startswith("archive_"):
            return getattr(self.archive, name[8:])
        if name.startswith("moment_"):
            return getattr(self.moments, name[7:])
        return getattr(self, name)

    @_locked
    def contacts_of(self, userid: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        rows = []
        for contact in self.state.contacts:
            users = [f.userid for f in contact.active if not userid or f.userid == userid]
            if users:
                rows.append({"external_userid": contact.external_userid, "userids": users})
        return rows[-limit:]

    @_locked
    def groups(self) -> list[dict[str, Any]]:
        return [{"chat_id": c.chat_id, "owner": c.owner,
                 "externals": [m.userid for m in c.members if m.type == 2]}
                for c in self.state.group_chats if not c.dismissed]


def _chat_capacity(corp: VirtualCorp, chat: GroupChat) -> int:
    """200 once a WeChat user is in the group, 500 with WeCom users only (WeCom's guide; PLATFORM.md)."""
    wechat = any(m.type == 2 and (corp.by_id.get(m.userid) is None or corp.by_id[m.userid].type == 1)
                 for m in chat.members)
    return corp.chat_capacity_with_wechat if wechat else 500


def _member_detail(member: Member) -> dict[str, Any]:
    return {"userid": member.userid, "name": member.name, "department": member.department,
            "position": member.position, "mobile": member.mobile, "gender": member.gender, "status": member.status}


def _contact_body(contact: Contact) -> dict[str, Any]:
    return {"external_userid": contact.external_userid, "name": contact.name, "avatar": contact.avatar,
            "type": contact.type, "gender": contact.gender, "unionid": contact.unionid}


def _follow_user(follow: Follow, tags: dict[str, tuple[TagGroup, Tag]]) -> dict[str, Any]:
    return {"userid": follow.userid, "remark": follow.remark, "description": follow.description,
            "createtime": follow.createtime,
            "tags": [{"group_name": tags[t][0].group_name, "tag_name": tags[t][1].name, "tag_id": t, "type": 1}
                     for t in follow.tag_ids if t in tags],
            "remark_corp_name": follow.remark_corp_name, "remark_mobiles": list(follow.remark_mobiles),
            "oper_userid": follow.oper_userid, "add_way": follow.add_way, "state": follow.state}


def _group_body(group: TagGroup, tags: list[Tag]) -> dict[str, Any]:
    return {"group_id": group.group_id, "group_name": group.group_name, "create_time": group.create_time,
            "order": group.order, "tag": [{"id": t.id, "name": t.name, "create_time": t.create_time,
                                           "order": t.order} for t in tags]}


def _send_row(result: SendResult) -> dict[str, Any]:
    row: dict[str, Any] = {"userid": result.userid, "status": result.status, "send_time": result.send_time}
    if result.chat_id:
        row["chat_id"] = result.chat_id
    else:
        row["external_userid"] = result.external_userid
    return row


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple | list) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def _cut(text: str, limit: int) -> str:
    """What the platform keeps of a field it cuts at ``limit`` bytes ("超过会自动截断")."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _china_midnight(timestamp: int) -> int:
    """A timestamp rounded down to 00:00 China time (W:96358: "会向下取整")."""
    moment = datetime.fromtimestamp(timestamp, CHINA)
    return int(moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
