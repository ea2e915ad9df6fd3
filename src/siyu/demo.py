"""The demo company: 山野茶舍, a tea brand with stores in 杭州, 上海 and 苏州.

Why it is built this way: a demo must look like a real private-domain team after a
few months of work — staff in every role, WeCom and personal accounts with personas,
customers whose remark names follow the seed's "真名+关键词" rule, descriptions with
objective and emotional notes, and timelines that put people on every rung of the
ladder 流量 → 用户 → 客户 → 粉丝. Thousands of customers through the per-customer
services would take minutes, so the bulk of the rows are inserted directly and then
every customer's computed facts are derived by ``customers.service.refresh_computed``
— the one place those rules live — so the demo can never disagree with the product.
Staff, accounts, custom fields and a few customers go through the real services, so
the audit log reads like a team's first days.

Everything is drawn from ``random.Random(seed)``: the same seed builds the same
company (only passwords and "now" differ between runs).
"""

from __future__ import annotations

import random
import string
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from siyu.accounts import service as accounts_service
from siyu.accounts.models import RAISED_CAPACITY, STANDARD_CAPACITY, Account, AccountKind
from siyu.accounts.schemas import AccountIn
from siyu.analytics import demo as analytics_demo
from siyu.core.db import utcnow
from siyu.core.errors import Conflict
from siyu.core.security import generate_password
from siyu.core.settings import local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.customers.models import (
    Address,
    Customer,
    CustomerTag,
    CustomField,
    CustomFieldValue,
    FieldType,
    Friendship,
    FriendshipStatus,
    Phone,
    Stage,
    TagGroup,
    TagGroupKind,
    Touch,
    TouchKind,
)
from siyu.customers.schemas import CustomerIn, CustomFieldIn, TouchIn
from siyu.groups.demo import build_group_demo
from siyu.library.demo import seed_library
from siyu.moments.demo import build_moments
from siyu.orders import service as orders_service
from siyu.orders.models import Product
from siyu.team import service as team_service
from siyu.team.models import Role, User
from siyu.team.schemas import UserIn, UserUpdate

BRAND = "山野茶舍"
ADMIN_USERNAME = "admin"
TIMELINE_DAYS = 90
# Customers created through customers.service (with audit entries) rather than in bulk.
SERVICE_CREATED = 3
REFERRED_FRIENDS = 12  # the requested customers that arrive through invite codes (sum of referrals.demo.INVITES)
BATCH = 500


class DemoNeedsEmptyDatabase(Conflict):
    pass


@dataclass(frozen=True)
class DemoSummary:
    admin_username: str
    users: int
    accounts: int
    customers: int
    friendships: int
    touches: int
    stages: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- the company


@dataclass(frozen=True)
class StaffSpec:
    username: str
    display_name: str
    role: Role
    accounts: tuple[str, ...] = ()  # account keys


# The brand's 微信客服 account (客服账号): where customers write during campaigns. `siyu demo --simulate`
# gives the simulator's 客服账号 this open_kfid, so live customers write to this account.
KF_KEY = "kf"
KF_OPEN_KFID = "wkShanYeTeaHouseDemoKf0000000001"
KF_NAME = "山野茶舍客服"
KF_GREETING = "您好，这里是山野茶舍客服～请问有什么可以帮您？"

STAFF = (
    StaffSpec("chenjing", "陈静（策划）", Role.planner),
    StaffSpec("zhouming", "周明（杭州运维）", Role.operator, ("xiaoye01", "xiaoye02", "laozhou")),
    StaffSpec("linxiao", "林晓（上海运维）", Role.operator, ("ahe01", "ahe02")),
    StaffSpec("guyan", "顾妍（苏州+线上运维）", Role.operator, ("xiaoman", "vip")),
    StaffSpec("kefu.xiaoyu", "小雨（客服）", Role.service, ("xiaoye01", "xiaoye02", "laozhou", "vip", KF_KEY)),
    StaffSpec("kefu.ajie", "阿杰（客服）", Role.service, ("ahe01", "ahe02", "xiaoman", "vip", KF_KEY)),
)


@dataclass(frozen=True)
class AccountSpec:
    key: str
    kind: AccountKind
    display_name: str
    store: str
    city: str
    tier: str
    capacity: int
    owner: str
    positioning: str
    signature: str
    greeting: str


ACCOUNTS = (
    AccountSpec(
        "xiaoye01", AccountKind.wecom, "山野茶舍·小野", "杭州西湖店", "杭州", "新客", RAISED_CAPACITY, "zhouming",
        "新客福利官：入会礼、新品试饮、门店活动第一时间通知",
        "一杯好茶，慢慢来。",
        "你好呀，我是山野茶舍的小野～入会礼已经放进你的卡包啦，到店出示就能领一份明前龙井小样。"
        "平时有泡茶的问题随时问我！",
    ),
    AccountSpec(
        "xiaoye02", AccountKind.wecom, "山野茶舍·小野02", "杭州滨江店", "杭州", "新客", STANDARD_CAPACITY,
        "zhouming",
        "滨江店新客福利官，午休茶饮和办公室囤茶", "上班再忙，也要喝口好茶。",
        "你好，我是滨江店的小野～工作日午休来店里，出示这条消息冷泡茶第二杯半价。",
    ),
    AccountSpec(
        "laozhou", AccountKind.personal, "茶师傅老周", "杭州西湖店", "杭州", "VIP", STANDARD_CAPACITY, "zhouming",
        "20年茶龄的茶艺师：讲茶、选茶、泡茶顾问，只服务老朋友",
        "茶是慢慢喝出来的交情。",
        "您好，我是老周。以后选茶、泡茶、送礼搭配的事都可以找我，周末店里有品鉴会也会提前告诉您。",
    ),
    AccountSpec(
        "ahe01", AccountKind.wecom, "山野茶舍·阿禾", "上海静安店", "上海", "老客", RAISED_CAPACITY, "linxiao",
        "上海老客的私人茶顾问：复购提醒、会员日、季节茶单",
        "城市里的一方茶席。",
        "好久不见！我是静安店的阿禾，会员日每月8号，老朋友到店喝茶免费续杯～",
    ),
    AccountSpec(
        "ahe02", AccountKind.wecom, "山野茶舍·阿禾02", "上海徐汇店", "上海", "新客", STANDARD_CAPACITY, "linxiao",
        "徐汇店新客福利官：首单礼、茶艺体验课报名",
        "第一杯茶，我请你。",
        "你好～我是徐汇店的阿禾，首单立减20元的券已发到你的账户，周六下午有免费茶艺体验课哦。",
    ),
    AccountSpec(
        "xiaoman", AccountKind.personal, "苏州·茶小满", "苏州平江店", "苏州", "老客", STANDARD_CAPACITY, "guyan",
        "平江路的茶小满：苏式生活、茶点搭配、老客聚会",
        "小满即安。",
        "你好呀，我是平江店的茶小满，店里的碧螺春和桂花糕是绝配，有空来坐坐～",
    ),
    AccountSpec(
        "vip", AccountKind.wecom, "山野茶舍·VIP茶管家", "线上旗舰店", "", "VIP", RAISED_CAPACITY, "guyan",
        "VIP茶管家：高端礼盒、企业团购、一对一选茶服务",
        "为懂茶的人，留一盏好茶。",
        "您好，我是山野茶舍VIP茶管家。企业团购、节礼定制、私人茶单都可以交给我，24小时内回复您。",
    ),
)

# Where customers of each city are first added (account key, weight).
CITY_ACCOUNTS: dict[str, tuple[tuple[str, int], ...]] = {
    "杭州": (("xiaoye01", 55), ("xiaoye02", 35), ("laozhou", 10)),
    "上海": (("ahe01", 60), ("ahe02", 40)),
    "苏州": (("xiaoman", 100),),
    "": (("vip", 50), ("xiaoye01", 50)),  # other cities: online
}
CITIES = (("杭州", 40), ("上海", 30), ("苏州", 15), ("宁波", 5), ("南京", 4), ("无锡", 3), ("北京", 3))
DISTRICTS = {
    "杭州": ("浙江省杭州市西湖区", ("文三路", "天目山路", "西溪路", "黄龙路")),
    "上海": ("上海市静安区", ("南京西路", "延安中路", "常德路", "江宁路")),
    "苏州": ("江苏省苏州市姑苏区", ("平江路", "干将西路", "人民路", "十全街")),
    "宁波": ("浙江省宁波市鄞州区", ("天童南路", "中山东路")),
    "南京": ("江苏省南京市鼓楼区", ("中山北路", "湖南路")),
    "无锡": ("江苏省无锡市梁溪区", ("中山路", "人民中路")),
    "北京": ("北京市朝阳区", ("建国路", "望京街")),
}
EXTRA_DISTRICTS = {
    "杭州": ("浙江省杭州市滨江区", ("江南大道", "长河路", "滨盛路")),
    "上海": ("上海市徐汇区", ("衡山路", "漕溪北路", "肇嘉浜路")),
}

# ---------------------------------------------------------------- people

SURNAMES = (
    ("王", 70), ("李", 70), ("张", 65), ("刘", 55), ("陈", 55), ("杨", 35), ("黄", 30), ("赵", 30), ("吴", 28),
    ("周", 28), ("徐", 25), ("孙", 20), ("马", 18), ("朱", 18), ("胡", 16), ("郭", 15), ("何", 13), ("林", 13),
    ("高", 13), ("罗", 12), ("郑", 12), ("梁", 10), ("谢", 10), ("宋", 9), ("唐", 9), ("许", 9), ("韩", 8),
    ("冯", 8), ("邓", 8), ("曹", 7), ("彭", 7), ("曾", 7), ("沈", 8), ("顾", 6), ("陆", 6), ("钱", 5),
    ("蒋", 6), ("蔡", 6), ("叶", 6), ("苏", 5), ("潘", 5), ("姚", 4), ("欧阳", 1), ("上官", 1),
)
FEMALE_CHARS = "芳丽静敏婷雪琳洁慧颖佳欣怡倩雯蕾晨璐悦琪萍燕娟霞梦瑶思雨诗嘉岚莉薇"
MALE_CHARS = "伟强磊军勇杰涛斌鹏浩宇晨俊峰明辉刚健凯文博超志东飞毅阳帆哲诚"

AGE_BANDS = (("18-24", 12), ("25-34", 34), ("35-44", 28), ("45-54", 15), ("55+", 11))
AGE_YEARS = {"18-24": (18, 24), "25-34": (25, 34), "35-44": (35, 44), "45-54": (45, 54), "55+": (55, 72)}
OFFICE_JOBS = ("程序员", "设计师", "会计", "教师", "医生", "护士", "律师", "产品经理", "销售经理", "公务员",
               "人事", "银行职员")
FAMILIES = {
    "18-24": ("单身", "恋爱中", "和父母同住"),
    "25-34": ("单身", "已婚，暂无孩子", "已婚，一个女儿（3岁）", "已婚，一个儿子（5岁）", "恋爱中"),
    "35-44": ("已婚，儿子上小学", "已婚，二胎家庭", "已婚，女儿读初中", "离异，带一个女儿"),
    "45-54": ("已婚，孩子在外地读大学", "三代同堂", "已婚，儿子读高中"),
    "55+": ("和老伴同住，孙子周末来", "独居，女儿在上海工作", "和儿子一家同住"),
}
INCOME_BANDS = ("5千以下", "5千-1万", "1-2万", "2-5万", "5万以上")

TEA_KINDS = ("绿茶", "白茶", "乌龙茶", "岩茶", "红茶", "普洱", "花草茶")
TEA_KEYWORDS = {
    "绿茶": ("龙井老茶客", "爱喝绿茶", "只喝明前"),
    "白茶": ("白茶控", "爱收老白茶"),
    "乌龙茶": ("爱喝乌龙", "铁观音粉"),
    "岩茶": ("爱喝岩茶", "肉桂党"),
    "红茶": ("红茶党", "爱喝正山小种"),
    "普洱": ("只喝熟普", "普洱收藏"),
    "花草茶": ("花茶爱好者", "冷泡茶爱好者"),
}
EXTRA_KEYWORDS = ("送礼大户", "品鉴会常客", "怕苦", "颜值控", "养生达人", "老周介绍", "团购组织者", "爱拍照")

OBJECTIVE_NOTES = (
    "每周六上午到店", "常买250g装", "公司在附近，午休时来", "偏好中低温冲泡", "喜欢小罐装方便带去办公室",
    "家里有一套紫砂壶", "逢年过节给客户送礼", "开车来店，需要停车券", "只在小程序下单", "家人对咖啡因敏感",
    "每月固定买一次{tea}", "办公室有十几个人一起拼单", "对茶叶产地和年份很讲究",
)
EMOTIONAL_NOTES = (
    "说话温柔，喜欢被叫“{nick}”", "聊天爱发语音，性子爽快", "对包装颜值很在意，喜欢拍照分享",
    "怕苦，喜欢回甘明显的茶", "上次品鉴会后主动发朋友圈夸我们", "比较谨慎，问得很细才下单",
    "很有生活情调，家里布置了茶室", "平时压力大，喝茶是为了静心", "喜欢听茶的故事和产地",
    "第一次见面就聊得很投机", "对价格敏感，但认准了就是回头客", "笑声很有感染力，店员都喜欢{ta}",
    "喜欢清香，不喜欢烟熏味", "送礼讲究体面，看重包装和寓意", "记性好，会记得上次喝过的每一款茶",
)
HANDLES = ("lily", "cherry", "sunny", "tony", "kevin", "amy", "grace", "leo", "momo", "coco", "echo",
           "jason", "vivian", "daisy", "tea", "yoyo", "nana", "lucas", "iris", "ken")
MOBILE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
                   "155", "156", "158", "159", "166", "173", "177", "180", "181", "186", "187", "188",
                   "189", "191", "198", "199")

# Tag weights: 来源 (source) and 人群 (crowd) from customers/defaults.json.
SOURCE_WEIGHTS = (("门店", 35), ("线上广告", 12), ("包裹卡", 15), ("小程序", 10), ("线下活动", 8),
                  ("推手推荐", 7), ("老客转介绍", 8), ("社群", 5))
STAGE_WEIGHTS = ((Stage.traffic, 22), (Stage.user, 38), (Stage.customer, 27), (Stage.fan, 13))

# ---------------------------------------------------------------- timeline content

CONTACT_WEIGHTS = ((TouchKind.chat, 45), (TouchKind.moments_like, 20), (TouchKind.moments_comment, 12),
                   (TouchKind.moments_engaged, 18), (TouchKind.offline_event, 5))
CONTENT: dict[TouchKind, tuple[str, ...]] = {
    TouchKind.chat: (
        "问明前龙井什么时候到货", "咨询送长辈的礼盒怎么选", "聊了孩子上学的事，顺便推荐了低咖啡因的白茶",
        "反馈上次的肉桂有点火气，建议放两周再喝", "约了周六到店喝茶", "问冷泡茶怎么泡才不苦",
        "发了新品试饮邀请，回复说有空就来", "确认了收货地址", "节日问候，聊了几句近况",
        "咨询公司团购中秋礼盒的报价", "分享了一篇泡白茶的小技巧，TA说很实用", "问会员积分怎么兑换",
    ),
    TouchKind.moments_like: (
        "点赞了TA的朋友圈：周末带娃去露营", "点赞：晒了新做的蛋糕", "点赞：加班到深夜",
        "点赞：在西湖边跑步", "点赞：晒了家里的茶席", "点赞：旅行照片（云南）",
    ),
    TouchKind.moments_comment: (
        "评论：“茶席布置得真雅致！”", "评论：“宝宝长大了好多～”", "评论：“辛苦啦，明天给你留杯热茶”",
        "评论：“这家店我们也喜欢！”", "评论：“风景太美了，下次求攻略”", "评论：“生日快乐！”",
    ),
    TouchKind.moments_engaged: (
        "TA点赞了我们的朋友圈：新茶上市", "TA评论了我们的朋友圈：“看着就好喝”",
        "TA点赞了我们的朋友圈：茶艺课报名", "TA在朋友圈活动下留言报名", "TA转发了我们的冷泡茶教程",
    ),
    TouchKind.note: (
        "提到下个月要搬家", "说最近肠胃不好，少推浓茶", "家里先生也爱喝茶，可以推荐父亲节礼盒",
        "对价格比较敏感，等会员日再推", "生日快到了，准备寄一份小样", "介绍了两位同事来加微信",
        "想报名茶艺课，等排期", "不喜欢被频繁推销，每月联系一次即可",
    ),
}
EVENTS = {
    "杭州": ("参加西湖店周六品鉴会", "参加滨江店新品试饮", "参加山野茶园春茶采摘游"),
    "上海": ("参加静安店白茶品鉴会", "参加徐汇店茶艺体验课"),
    "苏州": ("参加平江店茶点搭配沙龙", "参加苏式生活茶会"),
    "": ("参加线上直播品鉴会", "参加山野茶园春茶采摘游"),
}
PRODUCTS = (
    ("明前龙井 100g", Decimal("268")), ("武夷岩茶·肉桂 150g", Decimal("198")),
    ("白毫银针 100g", Decimal("328")), ("福鼎白茶饼 357g", Decimal("458")),
    ("熟普洱 357g", Decimal("238")), ("正山小种 200g", Decimal("158")),
    ("桂花乌龙冷泡茶 10包", Decimal("59")), ("碧螺春 100g", Decimal("218")),
    ("中秋茶礼盒", Decimal("688")), ("旅行茶具套装", Decimal("399")),
    ("大红袍·特级 250g", Decimal("880")), ("2015老白茶饼 357g", Decimal("1280")),
)
PURCHASE_WAYS = ("门店购买", "小程序下单", "私聊下单", "直播间下单")
# The catalogue behind PRODUCTS: SKU, category and the months it sells best in (empty: all year).
CATALOGUE = {
    "明前龙井 100g": ("SY-LJ-100", "绿茶", (3, 4, 5)), "武夷岩茶·肉桂 150g": ("SY-RG-150", "岩茶", ()),
    "白毫银针 100g": ("SY-YZ-100", "白茶", (4, 5, 6)), "福鼎白茶饼 357g": ("SY-BCB-357", "白茶", ()),
    "熟普洱 357g": ("SY-PE-357", "普洱", (11, 12, 1, 2)), "正山小种 200g": ("SY-ZS-200", "红茶", (10, 11, 12, 1)),
    "桂花乌龙冷泡茶 10包": ("SY-LP-10", "乌龙", (6, 7, 8)), "碧螺春 100g": ("SY-BLC-100", "绿茶", (3, 4)),
    "中秋茶礼盒": ("SY-ZQ-LH", "礼盒", (8, 9)), "旅行茶具套装": ("SY-CJ-TZ", "茶具", ()),
    "大红袍·特级 250g": ("SY-DHP-250", "岩茶", ()), "2015老白茶饼 357g": ("SY-LBC-357", "白茶", (12, 1, 2)),
    "企业中秋茶礼盒（定制）": ("SY-ZQ-DZ", "礼盒", (8, 9)),
}
# How much a tea brand sells in each month (1 = an ordinary month): spring tea, Mid-Autumn gifts, New Year.
SEASON = {1: 1.6, 2: 1.2, 3: 1.8, 4: 2.0, 5: 1.2, 6: 0.8, 7: 0.7, 8: 1.0, 9: 2.2, 10: 1.0, 11: 1.1, 12: 1.5}
ORDER_DAYS = 365  # a year of orders
STORES = {"门店购买": "门店", "小程序下单": "小程序商城", "私聊下单": "私聊", "直播间下单": "视频号直播间"}
REFUND_SHARE = 0.05  # about one order in twenty is refunded, in part or whole


# ---------------------------------------------------------------- planning one person


@dataclass
class PlannedTouch:
    kind: TouchKind
    content: str
    occurred_at: datetime
    account_key: str
    amount: Decimal | None = None
    # A purchase is an order (orders.service writes its timeline entry): what was bought and any refund.
    product: str = ""
    quantity: int = 1
    price: Decimal = Decimal("0")
    way: str = ""
    refunded: Decimal = Decimal("0")


@dataclass
class Person:
    name: str
    gender: str
    age_band: str
    city: str
    job: str
    income_band: str
    family: str
    objective_notes: str
    emotional_notes: str
    source: str
    crowd: list[str]
    tea: str
    remark_name: str
    description: str
    wechat_id: str
    phone: str | None
    address: tuple[str, str, str] | None  # label, region, detail
    birthday: str | None
    stage: Stage
    created_at: datetime
    accounts: list[str]  # account keys; first is where the customer was added
    second_added_at: datetime | None = None
    second_deleted: bool = False
    touches: list[PlannedTouch] = field(default_factory=list)
    salutation: str = ""  # 称呼: how messages address them ("王姐", "李老师"); never the remark name


def _has_children(family: str) -> bool:
    return "暂无" not in family and any(word in family for word in ("女儿", "儿子", "二胎", "孩子", "孙子"))


def _weighted(rng: random.Random, pairs: tuple[tuple[Any, int], ...]) -> Any:
    values = [p[0] for p in pairs]
    weights = [p[1] for p in pairs]
    return rng.choices(values, weights=weights, k=1)[0]


class Planner:
    """Invents believable, unique people and their last 90 days with the brand."""

    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.rng = rng
        self.now = now
        self._wechat_ids: set[str] = set()
        self._phones: set[str] = set()

    # -- identity

    def name(self, gender: str) -> str:
        surname = _weighted(self.rng, SURNAMES)
        chars = FEMALE_CHARS if gender == "女" else MALE_CHARS
        if self.rng.random() < 0.35:
            return surname + self.rng.choice(chars)
        return surname + "".join(self.rng.sample(chars, k=2))

    def wechat_id(self) -> str:
        while True:
            if self.rng.random() < 0.65:
                alphabet = string.ascii_lowercase + string.digits
                value = "wxid_" + "".join(self.rng.choice(alphabet) for _ in range(14))
            else:
                value = f"{self.rng.choice(HANDLES)}_{self.rng.randint(1960, 2006)}{self.rng.randint(0, 99):02d}"
            if value not in self._wechat_ids:
                self._wechat_ids.add(value)
                return value

    def phone(self) -> str:
        while True:
            value = self.rng.choice(MOBILE_PREFIXES) + f"{self.rng.randint(0, 99_999_999):08d}"
            if value not in self._phones:
                self._phones.add(value)
                return value

    # -- portrait

    def person(self) -> Person:
        rng = self.rng
        gender = "女" if rng.random() < 0.63 else "男"
        age_band = _weighted(rng, AGE_BANDS)
        city = _weighted(rng, CITIES)
        family = rng.choice(FAMILIES[age_band])
        job = self._job(age_band, gender, family)
        income_band = self._income(job)
        name = self.name(gender)
        crowd = self._crowd(gender, age_band, job, family)
        tea = rng.choice(TEA_KINDS)
        nick = self._nickname(name, gender, age_band, job)
        objective = "；".join(rng.sample(OBJECTIVE_NOTES, k=rng.choice((1, 2, 2)))).format(tea=tea)
        emotional = "；".join(rng.sample(EMOTIONAL_NOTES, k=rng.choice((1, 2, 2)))).format(
            nick=nick, ta="她" if gender == "女" else "他")
        phone = self.phone() if rng.random() < 0.8 else None
        address = self._address(city) if rng.random() < 0.45 else None
        stage = _weighted(rng, STAGE_WEIGHTS)
        min_age_days = {Stage.traffic: 0, Stage.user: 3, Stage.customer: 20, Stage.fan: 60}[stage]
        created_at = self.now - timedelta(days=rng.uniform(min_age_days, max(min_age_days, 1) + 420),
                                          minutes=rng.randint(5, 600))
        accounts = [_weighted(rng, CITY_ACCOUNTS[city if city in CITY_ACCOUNTS else ""])]
        person = Person(
            name=name, gender=gender, age_band=age_band, city=city, job=job, income_band=income_band,
            family=family, objective_notes=objective if rng.random() < 0.85 else "",
            emotional_notes=emotional if rng.random() < 0.75 else "",
            source=_weighted(rng, SOURCE_WEIGHTS), crowd=crowd, tea=tea,
            remark_name=self._remark(name, nick, tea, city, crowd, job) if rng.random() < 0.92 else "",
            description="", wechat_id=self.wechat_id(), phone=phone, address=address,
            birthday=self._birthday(age_band) if rng.random() < 0.45 else None,
            stage=stage, created_at=created_at, accounts=accounts,
        )
        person.description = self._description(person)
        person.salutation = nick
        self._second_account(person)
        self._timeline(person)
        return person

    def _job(self, age_band: str, gender: str, family: str) -> str:
        rng = self.rng
        roll = rng.random()
        if age_band == "18-24":
            return "学生" if roll < 0.5 else rng.choice(OFFICE_JOBS)
        if age_band == "55+":
            return "退休" if roll < 0.75 else "企业主"
        if gender == "女" and _has_children(family) and roll < 0.15:
            return "全职妈妈"
        if age_band != "25-34" and roll > 0.72:
            return "企业主"
        return "自由职业" if roll > 0.9 else rng.choice(OFFICE_JOBS)

    def _income(self, job: str) -> str:
        if job == "学生":
            return "5千以下"
        if job == "企业主":
            return self.rng.choice(INCOME_BANDS[3:])
        if job in ("退休", "全职妈妈"):
            return self.rng.choice(INCOME_BANDS[:2])
        return self.rng.choice(INCOME_BANDS[1:4])

    def _crowd(self, gender: str, age_band: str, job: str, family: str) -> list[str]:
        crowd: list[str] = []
        if gender == "女" and _has_children(family) and age_band in ("25-34", "35-44"):
            crowd.append("宝妈")
        if job in OFFICE_JOBS:
            crowd.append("白领")
        for job_name in ("学生", "退休", "企业主"):
            if job == job_name:
                crowd.append(job_name)
        if self.rng.random() < 0.18:
            crowd.append("吃货")
        if self.rng.random() < 0.25 or not crowd:
            crowd.append("养生")
        return crowd

    def _nickname(self, name: str, gender: str, age_band: str, job: str) -> str:
        surname = name[:2] if len(name) > 3 else name[0]
        if job == "企业主":
            return surname + "总"
        if job in ("教师", "医生", "律师"):
            return surname + ("老师" if job == "教师" else "医生" if job == "医生" else "律师")
        if age_band in ("35-44", "45-54"):
            return name[-1] + ("姐" if gender == "女" else "哥")
        if age_band == "55+":
            return surname + ("阿姨" if gender == "女" else "叔")
        return "小" + name[-1]

    def _remark(self, name: str, nick: str, tea: str, city: str, crowd: list[str], job: str) -> str:
        rng = self.rng
        who = name if rng.random() < 0.8 else f"{name}（{nick}）"
        keyword = rng.choice(TEA_KEYWORDS[tea])
        if "宝妈" in crowd:
            persona = "宝妈"
        elif job in ("学生", "退休"):
            persona = "大学生" if job == "学生" else "退休"
        else:
            persona = job
        parts = [who, keyword, f"{city}{persona}"]
        if rng.random() < 0.25:
            parts.insert(2, rng.choice(EXTRA_KEYWORDS))
        elif rng.random() < 0.2:
            parts.pop()  # a short remark: name + one keyword
        return "-".join(parts)

    def _address(self, city: str) -> tuple[str, str, str]:
        rng = self.rng
        region, streets = DISTRICTS[city]
        if city in EXTRA_DISTRICTS and rng.random() < 0.4:
            region, streets = EXTRA_DISTRICTS[city]
        room = f"{rng.randint(1, 28)}0{rng.randint(1, 6)}"
        detail = f"{rng.choice(streets)}{rng.randint(1, 600)}号{rng.randint(1, 30)}幢{room}室"
        return rng.choice(("家", "家", "公司")), region, detail

    def _birthday(self, age_band: str) -> str:
        low, high = AGE_YEARS[age_band]
        year = self.now.year - self.rng.randint(low, high)
        day = date(year, 1, 1) + timedelta(days=self.rng.randint(0, 364))
        return day.isoformat()

    def _description(self, person: Person) -> str:
        # The seed's advice: phone and shipping address go into the description, with
        # objective facts first and the emotional/sensory impression after.
        if self.rng.random() < 0.1:
            return ""
        parts = [f"{person.city}，{person.job}，{person.family}"]
        parts += [note for note in (person.objective_notes, person.emotional_notes) if note]
        if person.phone and self.rng.random() < 0.7:
            parts.append(f"电话{person.phone}")
        if person.address and self.rng.random() < 0.7:
            parts.append(f"收货：{person.address[1]}{person.address[2]}")
        return "。".join(parts) + "。"

    def _second_account(self, person: Person) -> None:
        rng = self.rng
        if rng.random() >= 0.22:
            return
        primary = person.accounts[0]
        if person.stage in (Stage.customer, Stage.fan) and rng.random() < 0.6:
            options = ["vip", "laozhou"] if person.city == "杭州" else ["vip"]
        else:
            options = [key for key, _w in CITY_ACCOUNTS[person.city if person.city in CITY_ACCOUNTS else ""]]
        options = [key for key in options if key != primary]
        if not options:
            options = [key for key in ("vip", "xiaoye01") if key != primary]
        person.accounts.append(rng.choice(options))
        span = max(1.0, (self.now - person.created_at).total_seconds() / 86400 - 1)
        person.second_added_at = person.created_at + timedelta(days=rng.uniform(0.5, span))
        person.second_deleted = rng.random() < 0.08

    # -- timeline

    def _counts(self, stage: Stage) -> tuple[int, int]:
        rng = self.rng
        if stage is Stage.traffic:
            return 0, 0
        if stage is Stage.user:
            return min(25, 1 + int(rng.expovariate(1 / 3))), 0
        if stage is Stage.customer:
            purchases = rng.choice((1, 1, 1, 2, 2, 3))
            return rng.randint(0, 9 if purchases >= 3 else 14), purchases
        return rng.randint(10, 30), rng.randint(3, 8)

    def _when(self, person: Person) -> datetime:
        start = max(person.created_at, self.now - timedelta(days=TIMELINE_DAYS))
        span = (self.now - timedelta(minutes=30) - start).total_seconds()
        return start + timedelta(seconds=self.rng.uniform(0, max(span, 60)))

    def _purchase_when(self, person: Person) -> datetime:
        """A time in the last year, more often in the tea seasons (spring tea, Mid-Autumn, New Year)."""
        start = max(person.created_at, self.now - timedelta(days=ORDER_DAYS))
        span = max((self.now - timedelta(minutes=30) - start).total_seconds(), 60)
        top = max(SEASON.values())
        when = start + timedelta(seconds=self.rng.uniform(0, span))
        for _ in range(20):
            if self.rng.random() < SEASON[when.astimezone(local_zone()).month] / top:
                break
            when = start + timedelta(seconds=self.rng.uniform(0, span))
        return when

    def _touch_account(self, person: Person) -> str:
        if len(person.accounts) > 1 and not person.second_deleted and self.rng.random() < 0.35:
            return person.accounts[1]
        return person.accounts[0]

    def _timeline(self, person: Person) -> None:
        rng = self.rng
        contacts, purchases = self._counts(person.stage)
        notes = rng.choice((0, 0, 0, 1, 1, 2))
        for _ in range(contacts):
            kind = _weighted(rng, CONTACT_WEIGHTS)
            if kind is TouchKind.offline_event:
                content = rng.choice(EVENTS[person.city if person.city in EVENTS else ""])
            else:
                content = rng.choice(CONTENT[kind])
            person.touches.append(PlannedTouch(kind, content, self._when(person), self._touch_account(person)))
        gift_buyer = person.job == "企业主" and rng.random() < 0.5
        for i in range(purchases):
            when = self._purchase_when(person)
            in_season = [(name, price) for name, price in PRODUCTS
                         if not CATALOGUE[name][2] or when.month in CATALOGUE[name][2]]
            product, price = rng.choice(in_season)
            quantity = rng.choice((1, 1, 1, 2, 3))
            if gift_buyer and i == 0:
                product, price, quantity = "企业中秋茶礼盒（定制）", Decimal("688"), rng.randint(8, 30)
            way = rng.choice(PURCHASE_WAYS)
            amount = price * quantity
            refunded = Decimal("0")
            if rng.random() < REFUND_SHARE:  # a whole refund only when other purchases keep the stage
                refunded = amount if purchases > 1 and rng.random() < 0.4 else (amount / 4).quantize(Decimal("1"))
            person.touches.append(PlannedTouch(TouchKind.purchase, f"{way}：{product} ×{quantity}", when,
                                               self._touch_account(person), amount=amount, product=product,
                                               quantity=quantity, price=price, way=way, refunded=refunded))
        for _ in range(notes):
            person.touches.append(PlannedTouch(TouchKind.note, rng.choice(CONTENT[TouchKind.note]),
                                               self._when(person), self._touch_account(person)))
        person.touches.sort(key=lambda t: t.occurred_at)


# ---------------------------------------------------------------- building


def _require_empty(session: Session) -> None:
    for model in (User, Account, Customer):
        if session.scalar(select(func.count()).select_from(model)):
            raise DemoNeedsEmptyDatabase("The demo can only be built into an empty database")


def _create_staff(session: Session, *, admin_password: str) -> dict[str, User]:
    admin = team_service.create_user(session, data=UserIn(
        username=ADMIN_USERNAME, display_name="管理员", password=admin_password, role=Role.admin), actor=SYSTEM)
    staff = {ADMIN_USERNAME: admin}
    actor = team_service.viewer_for(admin)
    for spec in STAFF:
        staff[spec.username] = team_service.create_user(session, data=UserIn(
            username=spec.username, display_name=spec.display_name, password=generate_password(),
            role=spec.role), actor=actor)
    return staff


def _create_accounts(session: Session, *, staff: dict[str, User]) -> dict[str, Account]:
    actor = team_service.viewer_for(staff[ADMIN_USERNAME])
    accounts: dict[str, Account] = {}
    for spec in ACCOUNTS:
        wecom = spec.kind is AccountKind.wecom
        accounts[spec.key] = accounts_service.create_account(session, data=AccountIn(
            kind=spec.kind, display_name=spec.display_name,
            wechat_id="" if wecom else f"shanye_{spec.key}",
            wecom_userid=f"shanye.{spec.key}" if wecom else None,
            store=spec.store, brand=BRAND, tier_served=spec.tier, owner_user_id=staff[spec.owner].id,
            friend_capacity=spec.capacity, positioning=spec.positioning, signature=spec.signature,
            greeting=spec.greeting, moments_cover_url="",
        ), actor=actor)
    accounts[KF_KEY] = accounts_service.create_account(session, data=AccountIn(
        kind=AccountKind.wecom_kf, display_name=KF_NAME, open_kfid=KF_OPEN_KFID, brand=BRAND,
        owner_user_id=staff[ADMIN_USERNAME].id, greeting=KF_GREETING), actor=actor)
    # Give each operator and service user their accounts (an audited update, as an admin would).
    for member in STAFF:
        if member.accounts:
            team_service.update_user(session, user_id=staff[member.username].id, data=UserUpdate(
                account_ids=[accounts[key].id for key in member.accounts]), actor=actor)
    return accounts


def _create_custom_fields(session: Session, *, actor: Viewer) -> dict[str, CustomField]:
    specs = (
        CustomFieldIn(key="birthday", label="生日", field_type=FieldType.date),
        CustomFieldIn(key="favourite_tea", label="偏好茶类", field_type=FieldType.choice, choices=list(TEA_KINDS)),
        CustomFieldIn(key="member_no", label="会员卡号", field_type=FieldType.text),
    )
    return {spec.key: customers_service.create_custom_field(session, data=spec, actor=actor) for spec in specs}


def _manual_tag_ids(session: Session) -> dict[tuple[str, str], int]:
    """(group kind, tag name) → tag id for the manual groups 来源 and 人群."""
    groups = customers_service.list_tag_groups(session)
    return {(g.kind, t.name): t.id for g in groups
            if g.kind in (TagGroupKind.source.value, TagGroupKind.crowd.value) for t in g.tags}


def _tag_label(session: Session, kind: TagGroupKind, name: str) -> str:
    group = session.scalar(select(TagGroup).where(TagGroup.kind == kind.value))
    assert group is not None
    return f"{group.name}:{name}"


def build_demo(session: Session, *, admin_password: str, customers: int = 2000, seed: int = 7) -> DemoSummary:
    """Fill an empty, migrated database with the 山野茶舍 team and its customers (caller commits)."""
    _require_empty(session)
    rng = random.Random(seed)
    now = utcnow()
    customers_service.ensure_default_tag_groups(session)
    staff = _create_staff(session, admin_password=admin_password)
    accounts = _create_accounts(session, staff=staff)
    admin_viewer = team_service.viewer_for(staff[ADMIN_USERNAME])
    fields = _create_custom_fields(session, actor=admin_viewer)
    owner_of = {spec.key: staff[spec.owner].id for spec in ACCOUNTS}

    rules = customers_service.get_rules(session)

    planner = Planner(rng, now)
    # A few of the requested customers arrive this morning through WeCom (see _wecom_morning).
    wecom_adds = min(WECOM_ADDS, max(customers - SERVICE_CREATED, 0))
    # And a few more this week through customers' invite codes (老带新, see referrals.demo).
    referred = min(REFERRED_FRIENDS, max(customers - SERVICE_CREATED - wecom_adds, 0))
    people = [planner.person() for _ in range(customers - wecom_adds - referred)]
    via_service = people[:SERVICE_CREATED]
    bulk = people[SERVICE_CREATED:]
    created = _insert_people(session, people=bulk, accounts=accounts, owner_of=owner_of, fields=fields,
                             rng=rng)
    _create_through_services(session, people=via_service, accounts=accounts, staff=staff)

    _create_products(session, now=now)
    _create_orders(session, people=bulk, customers=created, accounts=accounts, staff=staff)
    for offset in range(0, len(created), customers_service.RECOMPUTE_BATCH):
        customers_service.refresh_computed_many(
            session, customers=created[offset:offset + customers_service.RECOMPUTE_BATCH], rules=rules)
    session.flush()
    _fill_inbox(session, customers=created, staff=staff, rng=rng, now=now)
    _wecom_morning(session, accounts=accounts, customers=created, admin=admin_viewer, rng=rng, now=now,
                   adds=wecom_adds)
    build_moments(session, accounts=accounts, admin=admin_viewer, now=now)  # 朋友圈 calendar (moments.demo)
    from siyu.sops.demo import seed as seed_sops  # 客户SOP: "新客7天培育" running (its tasks count in the cap)

    seed_sops(session, admin=admin_viewer, now=now)
    __import__("siyu.groups.moderation.demo", fromlist=["build"]).build(session, admin=admin_viewer, now=now)
    # 线下活动: a past tasting with attendance, an upcoming sampling (its follow-ups count in the cap)
    from siyu.offline.demo import build as build_offline

    build_offline(session, admin=admin_viewer, now=now)
    _create_cadence(session, admin=admin_viewer, now=now)
    build_group_demo(session, admin=admin_viewer, now=now, seed=seed)
    analytics_demo.build_history(session, seed=seed, now=now)  # 数据分析: the ladder's history
    seed_library(session, admin=admin_viewer, rng=rng)  # 话术库 and 素材库
    from siyu.goals.demo import seed as seed_goals  # 目标 on each role's 工作台, and the admin figures

    seed_goals(session, admin=admin_viewer)
    from siyu.campaigns.demo import build as build_campaigns  # 群发: a finished A/B campaign, an over-quota send

    build_campaigns(session, admin=admin_viewer, now=now, seed=seed)
    _conversion(session, admin=admin_viewer, now=now, referred=referred)  # 用户转化: coupons, 老带新, 抽奖
    return _summary(session)


def _conversion(session: Session, *, admin: Viewer, now: datetime, referred: int) -> None:
    """A coupon batch, a running referral programme with its leaderboard, a finished lucky draw."""
    from siyu.coupons.demo import build as build_coupons
    from siyu.draws.demo import build as build_draw
    from siyu.referrals.demo import build as build_referrals

    batch = build_coupons(session, admin=admin, now=now)
    build_referrals(session, admin=admin, now=now, batch=batch, friends=referred)
    build_draw(session, admin=admin, now=now, batch=batch)


# 用户维系: who each operator should talk to, and how often (维系节奏), then this morning's 今日任务.
CADENCE_POLICIES = (
    ("客户与粉丝：每周一聊", {"kind": "and", "conditions": [{"kind": "stage", "stages": ["customer", "fan"]}]}, 7, 3),
    ("其他好友：每月一聊", None, 30, 7),
)


def _create_cadence(session: Session, *, admin: Viewer, now: datetime) -> None:
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.schemas import PolicyIn
    from siyu.segments.schemas import parse_tree

    for position, (name, conditions, every, quiet) in enumerate(CADENCE_POLICIES, start=1):
        maintenance_service.create_policy(session, viewer=admin, data=PolicyIn(
            name=name, conditions=parse_tree(conditions) if conditions else None, every_days=every,
            quiet_days=quiet, position=position))
    maintenance_service.generate_tasks(session, now=now)


WECOM_ADDS = 8


def _wecom_morning(session: Session, *, accounts: dict[str, Account], customers: list[Customer], admin: Viewer,
                   rng: random.Random, now: datetime, adds: int) -> None:
    """A morning of WeCom callbacks, processed the way the inbound jobs process them: a store
    counter channel brings new friends (some with a coupon), two customers delete us."""
    from siyu.channels import service as channels_service
    from siyu.wecom import callback, events
    from siyu.wecom.models import WecomEvent

    account = accounts["xiaoye01"]
    channel = channels_service.save_channel(session, viewer=admin, data=channels_service.ChannelIn(
        name="西湖店收银台扫码", account_ids=[account.id], tag_names=["来源:门店"], incentive_kind="coupon",
        incentive_text="加好友立得 10 元茶饮券", welcome_text="{称呼}您好！送您一张 10 元茶饮券：{券码}",
        fallback_text="{称呼}您好！今天的券已经领完，到店报暗号「山野」送一杯冷泡茶。", cost_amount=Decimal("3")))
    channels_service.add_codes(session, channel_id=channel.id, viewer=admin,
                               codes=[f"SY10-{rng.randrange(10**6):06d}" for _ in range(5)])

    def arrive(fields: dict[str, str], minutes_ago: float) -> None:
        at = now - timedelta(minutes=minutes_ago)
        fields = {"ToUserName": "wwSHANYEDEMO", "FromUserName": "sys", "MsgType": "event",
                  "Event": "change_external_contact", "CreateTime": str(int(at.timestamp())), **fields}
        xml = "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()) + "</xml>"
        event = WecomEvent(dedup_key=callback.dedup_key(fields), event_type=callback.event_type(fields),
                           create_time=int(at.timestamp()), raw_xml=xml, fields=fields, received_at=at)
        session.add(event)
        session.flush()
        event.status, event.attempts, event.processed_at = events.process(session, event), 1, at

    for n in range(adds):
        arrive({"ChangeType": "add_external_contact", "UserID": account.wecom_userid or "",
                "ExternalUserID": f"wmDEMONEW{n:04d}{rng.randrange(10**6):06d}", "State": channel.key,
                "WelcomeCode": f"WELCOME{n}"}, minutes_ago=rng.uniform(5, 240))
    leavers = [c for c in customers if c.wecom_external_userid and c.friendships
               and c.friendships[0].account_id == account.id][:2]
    for customer in leavers:
        arrive({"ChangeType": "del_follow_user", "UserID": account.wecom_userid or "",
                "ExternalUserID": customer.wecom_external_userid or ""}, minutes_ago=rng.uniform(1, 60))


# The 公众号 channel `siyu demo --simulate` makes: followers who scan its parametric QR code are its.
MP_CHANNEL_NAME = "公众号关注二维码"
MP_WELCOME = "{称呼}您好，欢迎关注山野茶舍！回复「新品」看本周上新，回复「门店」查最近的门店。"


def mp_qr_channel(session: Session, *, appid: str, api: Any) -> list[str]:
    """The demo's 公众号 (its Siyu account) and a channel with a permanent parametric QR code made through
    ``qrcode/create`` with ``api`` (the simulator's 公众号 in ``siyu demo --simulate``). Returns the QR
    scenes followers can scan: a follow through one is attributed to the channel like a WeCom add."""
    from siyu.channels import service as channels_service
    from siyu.channels.models import Channel as AcquisitionChannel
    from siyu.channels.models import ChannelKind
    from siyu.mp import service as mp_service

    account = mp_service.account_for(session, appid)
    if account.display_name == f"公众号 {appid}"[:64]:
        account.display_name = f"{BRAND}公众号"
    channel = session.scalar(select(AcquisitionChannel).where(AcquisitionChannel.name == MP_CHANNEL_NAME))
    if channel is None:
        channel = channels_service.save_channel(session, viewer=SYSTEM, data=channels_service.ChannelIn(
            name=MP_CHANNEL_NAME, kind=ChannelKind.online_ad, account_ids=[account.id],
            tag_names=["来源:公众号"], welcome_text=MP_WELCOME))
    code = mp_service.create_qrcode(session, api=api, channel_id=channel.id, account_id=account.id, permanent=True)
    return [code.scene]


def _create_autoreplies(session: Session, *, admin: Viewer) -> None:
    """Two rules: one on (opening hours), one drafted and waiting for its dry run (coupons)."""
    from siyu.autoreply import service as autoreply_service
    from siyu.autoreply.models import MatchKind

    hours = autoreply_service.save_rule(session, viewer=admin, data=autoreply_service.RuleIn(
        name="营业时间", match_kind=MatchKind.contains, keywords=["几点关门", "营业时间", "几点开门"], priority=50,
        reply="{称呼}您好，门店每天 10:00–22:00 营业，线上小程序 24 小时可下单～", hourly_cap=200))
    autoreply_service.dry_run(session, rule_id=hours.id, viewer=admin)
    autoreply_service.set_enabled(session, rule_id=hours.id, enabled=True, viewer=admin)
    autoreply_service.save_rule(session, viewer=admin, data=autoreply_service.RuleIn(
        name="优惠券使用", match_kind=MatchKind.contains, keywords=["优惠券"], priority=40,
        reply="{称呼}您好，优惠券在小程序「我的-卡包」里，结账时选择即可使用。", hourly_cap=100))


CANNED_REPLIES = (
    ("hi", "问候", "{称呼}您好，我是{账号}，有什么可以帮您？"),
    ("coupon", "优惠券", "{称呼}您好，优惠券在「我的-卡包」里，结账时出示就能用哦～"),
    ("ship", "发货", "{称呼}您好，订单已经安排发货，物流单号稍后发您。"),
    ("sorry", "致歉", "{称呼}实在抱歉，给您添麻烦了，马上为您处理！"),
)
CUSTOMER_LINES = ("在吗", "活动怎么参加？", "优惠券用不了", "我的茶叶发货了吗", "明前龙井还有吗",
                  "门店几点关门", "想订一盒中秋礼盒", "上次的白茶很好喝！", "可以开发票吗", "会员积分怎么查")


def _fill_inbox(session: Session, *, customers: list[Customer], staff: dict[str, User], rng: random.Random,
                now: datetime) -> None:
    """A morning in the service inbox: customers writing in, one agent online, a few already answered."""
    from siyu.inbox import service as inbox_service
    from siyu.inbox.models import CannedReply

    for shortcut, title, body in CANNED_REPLIES:
        session.add(CannedReply(shortcut=shortcut, title=title, body=body))
    writers = rng.sample(customers, min(60, len(customers)))
    kf_account = session.scalar(select(Account).where(Account.open_kfid == KF_OPEN_KFID))
    messages = []
    for n, customer in enumerate(writers):
        friendship = customer.friendships[0]
        # Two in three write to the 微信客服 account (a campaign's questions); the rest are members' own
        # chats, as the chat archive shows them.
        account_id = kf_account.id if kf_account is not None and n % 3 else friendship.account_id
        for k in range(rng.randint(1, 3)):
            messages.append(inbox_service.InboundMessage(
                source="demo", platform_msgid=f"demo-{n}-{k}", account_id=account_id,
                customer_id=customer.id, sent_at=now - timedelta(minutes=rng.uniform(1, 180)),
                text=rng.choice(CUSTOMER_LINES)))
    _create_autoreplies(session, admin=team_service.viewer_for(staff[ADMIN_USERNAME]))
    inbox_service.ingest(session, messages)
    agent = staff["kefu.xiaoyu"]
    inbox_service.set_capacity(session, user_id=agent.id, capacity=8)
    inbox_service.set_online(session, user_id=agent.id, online=True)
    viewer = team_service.viewer_for(agent)
    for conversation_id in inbox_service.list_queue(
            session, flt=inbox_service.QueueFilter(view="mine"), viewer=viewer, limit=3).items:
        # 微信客服 answers through kf/send_msg; a member's own chat only as a member-confirmed send
        archived = conversation_id.channel == inbox_service.Channel.wecom_archive.value
        inbox_service.reply(session, conversation_id=conversation_id.id, text="您好，在的～请问有什么可以帮您？",
                            viewer=viewer, member_send=archived)


def _insert_people(
    session: Session, *, people: list[Person], accounts: dict[str, Account], owner_of: dict[str, int],
    fields: dict[str, CustomField], rng: random.Random,
) -> list[Customer]:
    tag_ids = _manual_tag_ids(session)
    external_ids: set[str] = set()
    created: list[Customer] = []
    for start in range(0, len(people), BATCH):
        batch = people[start:start + BATCH]
        rows: list[Customer] = []
        for person in batch:
            primary = accounts[person.accounts[0]]
            external_id = None
            if primary.kind == AccountKind.wecom.value:
                while external_id is None or external_id in external_ids:
                    external_id = "wm" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(26))
                external_ids.add(external_id)
            customer = Customer(
                name=person.name, wechat_id=person.wechat_id, wecom_external_userid=external_id,
                source=person.source, gender=person.gender, age_band=person.age_band, city=person.city,
                job=person.job, income_band=person.income_band, family=person.family,
                objective_notes=person.objective_notes, emotional_notes=person.emotional_notes,
                created_at=person.created_at, updated_at=person.created_at,
            )
            friendships = [Friendship(account_id=primary.id, remark_name=person.remark_name,
                                      salutation=person.salutation,
                                      description=person.description, added_at=person.created_at,
                                      attachments=[])]
            if len(person.accounts) > 1:
                assert person.second_added_at is not None
                second = Friendship(account_id=accounts[person.accounts[1]].id, added_at=person.second_added_at,
                                    remark_name=person.remark_name if rng.random() < 0.7 else "",
                                    salutation=person.salutation, attachments=[])
                if person.second_deleted:
                    second.status = FriendshipStatus.deleted.value
                    second.removed_at = min(person.second_added_at + timedelta(days=rng.uniform(1, 60)),
                                            utcnow() - timedelta(hours=1))
                friendships.append(second)
            customer.friendships = friendships
            if person.address:
                label, region, detail = person.address
                customer.addresses = [Address(label=label, recipient=person.name, phone=person.phone or "",
                                              region=region, detail=detail)]
            else:
                customer.addresses = []
            rows.append(customer)
        session.add_all(rows)
        session.flush()
        _insert_details(session, people=batch, customers=rows, accounts=accounts, owner_of=owner_of,
                        fields=fields, tag_ids=tag_ids, rng=rng)
        created.extend(rows)
    return created


def _insert_details(
    session: Session, *, people: list[Person], customers: list[Customer], accounts: dict[str, Account],
    owner_of: dict[str, int], fields: dict[str, CustomField], tag_ids: dict[tuple[str, str], int],
    rng: random.Random,
) -> None:
    phones: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    values: list[dict[str, Any]] = []
    touches: list[dict[str, Any]] = []
    for person, customer in zip(people, customers, strict=True):
        primary = customer.friendships[0]
        if person.phone:
            phones.append({"friendship_id": primary.id, "customer_id": customer.id, "number": person.phone})
        names = [(TagGroupKind.source.value, person.source)]
        if rng.random() < 0.12:  # some people came through two channels
            other = _weighted(rng, SOURCE_WEIGHTS)
            if other != person.source:
                names.append((TagGroupKind.source.value, other))
        names += [(TagGroupKind.crowd.value, name) for name in person.crowd]
        for key in names:
            links.append({"customer_id": customer.id, "tag_id": tag_ids[key], "created_at": person.created_at})
        if person.birthday:
            values.append({"customer_id": customer.id, "field_id": fields["birthday"].id, "value": person.birthday})
        if rng.random() < 0.6:
            values.append({"customer_id": customer.id, "field_id": fields["favourite_tea"].id, "value": person.tea})
        if person.stage in (Stage.customer, Stage.fan) or rng.random() < 0.1:
            values.append({"customer_id": customer.id, "field_id": fields["member_no"].id,
                           "value": f"SY{customer.id:08d}"})
        for touch in person.touches:
            if touch.kind is TouchKind.purchase:
                continue  # an order (see _create_orders), whose timeline entry orders.service writes
            touches.append({
                "customer_id": customer.id, "account_id": accounts[touch.account_key].id,
                "user_id": owner_of[touch.account_key], "kind": touch.kind.value, "content": touch.content,
                "amount": touch.amount, "details": None, "occurred_at": touch.occurred_at,
                "created_at": touch.occurred_at,
            })
    for model, rows in ((Phone, phones), (CustomerTag, links), (CustomFieldValue, values), (Touch, touches)):
        if rows:
            session.execute(insert(model), rows)


def _create_through_services(
    session: Session, *, people: list[Person], accounts: dict[str, Account], staff: dict[str, User],
) -> None:
    """A few customers entered by hand by their operator, so the audit log shows real work."""
    for person in people:
        key = person.accounts[0]
        account = accounts[key]
        operator = staff[next(spec.owner for spec in ACCOUNTS if spec.key == key)]
        viewer = team_service.viewer_for(operator)
        tags = [_tag_label(session, TagGroupKind.source, person.source)]
        tags += [_tag_label(session, TagGroupKind.crowd, name) for name in person.crowd]
        custom = {"favourite_tea": person.tea}
        if person.birthday:
            custom["birthday"] = person.birthday
        customer = customers_service.create_customer(session, data=CustomerIn(
            name=person.name, account_id=account.id, remark_name=person.remark_name or person.name,
            salutation=person.salutation, tags=tags, phones=[person.phone] if person.phone else [],
            description=person.description,
            custom_fields=custom, gender=person.gender, age_band=person.age_band, city=person.city,
            job=person.job, income_band=person.income_band, family=person.family,
            objective_notes=person.objective_notes, emotional_notes=person.emotional_notes,
            source=person.source, wechat_id=person.wechat_id,
        ), viewer=viewer)
        for touch in person.touches:
            touch_account = accounts[touch.account_key]
            if touch_account.id != account.id:
                continue  # the operator records what happened on the account they added them to
            customers_service.add_touch(session, customer_id=customer.id, data=TouchIn(
                kind=touch.kind, content=touch.content, account_id=account.id,
                occurred_at=touch.occurred_at, amount=touch.amount), viewer=viewer)


# ---------------------------------------------------------------- orders


def _create_products(session: Session, *, now: datetime) -> None:
    """The catalogue; this spring's 明前龙井 and 碧螺春 are the year's new launches (the 粉丝 rule)."""
    spring = datetime(now.astimezone(local_zone()).year, 3, 25, tzinfo=local_zone())
    if spring > now:
        spring = spring.replace(year=spring.year - 1)
    prices = dict(PRODUCTS) | {"企业中秋茶礼盒（定制）": Decimal("688")}
    for name, (sku, category, _months) in CATALOGUE.items():
        launched = spring if category == "绿茶" else None
        session.add(Product(sku=sku, name=name, category=category, price=prices[name], launched_at=launched))
    session.flush()


def _create_orders(session: Session, *, people: list[Person], customers: list[Customer],
                   accounts: dict[str, Account], staff: dict[str, User]) -> None:
    """A year of orders, as each account's operator would have them pushed by the shop (one per purchase)."""
    by_account: dict[str, list[orders_service.OrderData]] = defaultdict(list)
    for person, customer in zip(people, customers, strict=True):
        for touch in person.touches:
            if touch.kind is not TouchKind.purchase or touch.amount is None:
                continue
            sku, category, _months = CATALOGUE[touch.product]
            refunded = touch.refunded
            status = ("refunded" if refunded and refunded == touch.amount else "partly_refunded" if refunded
                      else "completed" if touch.occurred_at < utcnow() - timedelta(days=10) else "shipped")
            number = f"SY{touch.occurred_at:%Y%m%d}{customer.id:06d}{len(by_account[touch.account_key]):05d}"
            by_account[touch.account_key].append(orders_service.OrderData(
                source="shop", order_no=number,
                paid_at=touch.occurred_at, amount=touch.amount, status=status, refunded_amount=refunded,
                store=STORES[touch.way], account_id=accounts[touch.account_key].id, note=touch.content,
                buyer=orders_service.Buyer(customer_id=customer.id, name=person.name, phone=person.phone or ""),
                lines=[orders_service.LineData(sku=sku, name=touch.product, quantity=touch.quantity, price=touch.price,
                                               category=category)]))
    for key, orders in by_account.items():
        viewer = team_service.viewer_for(staff[next(spec.owner for spec in ACCOUNTS if spec.key == key)])
        for start in range(0, len(orders), 1000):
            orders_service.upsert_orders(session, orders=orders[start:start + 1000], viewer=viewer, via="demo",
                                         audit=False)


# ---------------------------------------------------------------- computed facts in bulk


def _summary(session: Session) -> DemoSummary:
    def count(model: type[Any]) -> int:
        return session.scalar(select(func.count()).select_from(model)) or 0

    stages = {stage: count for stage, count in session.execute(
        select(Customer.stage, func.count()).group_by(Customer.stage))}
    return DemoSummary(
        admin_username=ADMIN_USERNAME,
        users=count(User),
        accounts=count(Account),
        customers=count(Customer),
        friendships=count(Friendship),
        touches=count(Touch),
        stages={stage.value: int(stages.get(stage.value, 0)) for stage in Stage},
    )


__all__ = ["DemoNeedsEmptyDatabase", "DemoSummary", "build_demo"]
