"""The demo's 话术库 and 素材库: the scripts a tea shop's operators really send, and a few materials."""

from __future__ import annotations

import io
import random

from sqlalchemy.orm import Session

from siyu.core.viewer import Viewer
from siyu.library import service
from siyu.library.schemas import MaterialIn, ScriptIn

# (title, text, tags): customer-safe variables only — {称呼} {账号}
SCRIPTS = (
    ("新客问候", "{称呼}您好！我是{账号}，以后选茶、泡茶有任何问题都可以直接问我～", ["问候", "新客"]),
    ("早安问候", "{称呼}早上好！今天天气不错，来杯清爽的龙井开启一天吧🍵", ["问候"]),
    ("节后问候", "{称呼}假期过得开心吗？收心上班记得多喝水，茶也别断哦～", ["问候"]),
    ("到店欢迎", "{称呼}欢迎光临山野茶舍！到店报手机号可以累计积分，下次抵现用～", ["问候", "门店"]),
    ("发货通知", "{称呼}您好，您订的茶已经打包发出啦，一般 2-3 天送到，收到记得冷藏保存～", ["售后", "物流"]),
    ("物流延迟致歉", "{称呼}实在抱歉，这两天快递爆仓，您的包裹晚了一点，我一直帮您盯着，有消息马上告诉您！",
     ["售后", "物流"]),
    ("收货回访", "{称呼}茶叶收到了吗？第一次冲泡建议 85℃ 左右的水，头泡快出汤，喝着怎么样跟我说说～", ["售后", "回访"]),
    ("口感回访", "{称呼}上次带回去的白茶喝完了吗？口感合不合适？我好帮您记下来，下次推荐更准～", ["售后", "回访"]),
    ("破损补发", "{称呼}真的很抱歉收到的茶罐有磕碰，拍张照片给我，我这边马上给您补发一罐新的。", ["售后"]),
    ("退换说明", "{称呼}未拆封的茶叶 7 天内都可以退换，您把订单号发我，我来帮您办理～", ["售后"]),
    ("复购提醒·龙井", "{称呼}，算算日子上次的明前龙井应该快喝完了，今年新茶刚到，需要我给您留一份吗？", ["复购"]),
    ("复购提醒·白茶", "{称呼}，您常喝的寿眉老白茶补货了，老顾客这周下单送一个旅行茶具～", ["复购"]),
    ("会员积分提醒", "{称呼}，您的会员积分快到期了，月底前到店或线上下单都可以抵现，别浪费哦～", ["复购", "会员"]),
    ("新品上市", "{称呼}，店里新上了一款桂花乌龙，香气特别温柔，想先给您寄一小包试喝，方便留个地址吗？",
     ["复购", "新品"]),
    ("中秋礼盒", "{称呼}，中秋礼盒开始预订啦，送长辈、送客户都体面，需要的话我把款式发您挑～", ["节日", "复购"]),
    ("生日祝福", "{称呼}，生日快乐！🎂 {账号}给您准备了一份小礼物，这周到店或下单时跟我说一声就能领～", ["生日"]),
    ("生日券提醒", "{称呼}，您的生日专享券还有 3 天到期，记得用掉哦～", ["生日", "会员"]),
    ("入会周年", "{称呼}，今天是您成为我们会员一周年，谢谢一直以来的支持，送您一张无门槛券表示心意！",
     ["纪念日", "会员"]),
    ("久未联系", "{称呼}好久不见～最近忙吗？天气转凉了，喝点暖胃的熟普吧，有需要随时找我。", ["唤醒"]),
    ("活动邀请", "{称呼}，本周六下午店里有一场免费的品茶会，老师会讲怎么分辨好茶，想来的话我给您留个位置～", ["活动"]),
)
LINKS = (
    ("新客冲泡指南", "三分钟学会在家泡好一杯茶", "https://example.com/siyu-demo/brew-guide", ["新客", "售后"]),
    ("会员权益说明", "积分、生日礼、专属价一页看懂", "https://example.com/siyu-demo/membership", ["会员"]),
)
IMAGES = (("门店环境", (245, 238, 220), ["门店"]), ("明前龙井新品图", (196, 214, 160), ["新品", "复购"]))


def _png(color: tuple[int, int, int]) -> bytes | None:
    try:
        from PIL import Image, ImageDraw
    except ImportError:  # no Pillow: the demo goes without images
        return None
    image = Image.new("RGB", (240, 160), color)
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 220, 140), outline=(90, 120, 80), width=4)
    draw.ellipse((95, 55, 145, 105), fill=(90, 120, 80))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def seed_library(session: Session, *, admin: Viewer, rng: random.Random) -> None:
    """About twenty scripts, two links, two images and a mini-program card, some already well used."""
    items = [service.save_script(session, data=ScriptIn(title=title, text=text, tags=tags), viewer=admin)
             for title, text, tags in SCRIPTS]
    for title, description, url, tags in LINKS:
        items.append(service.save_material(session, data=MaterialIn(kind="link", title=title, description=description,
                                                                    url=url, tags=tags), viewer=admin))
    for title, color, tags in IMAGES:
        data = _png(color)
        if data is None:
            continue
        items.append(service.save_material(session, data=MaterialIn(kind="image", title=title, tags=tags),
                                           viewer=admin, file=service.Upload(io.BytesIO(data), f"{title}.png")))
        if title == IMAGES[0][0]:
            items.append(service.save_material(
                session, data=MaterialIn(kind="miniprogram", title="山野茶舍商城", appid="wx5f3a9c2d1e7b4a60",
                                         pagepath="pages/index/index.html", tags=["复购"]),
                viewer=admin, cover=service.Upload(io.BytesIO(data), "cover.png")))
    for item in items:  # a few weeks of use in the inbox and the sidebar
        if rng.random() < 0.7:
            service.record_uses(session, {item.id: rng.randint(1, 40)}, rng.choice(("inbox", "sidebar")))
