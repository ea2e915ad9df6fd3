"""Demo data of the 朋友圈 calendar: the columns of the three modules and this week's plan per persona.

Each WeCom member and personal account gets a post a day this week (Monday to Sunday), at 10:00,
and a second one on some evenings, the modules in turn. A personal account's posts of past days are
marked posted by its operator; today's, once due, are on the operator's 今日任务. A WeCom member's
posts go out through WeCom at their time — with ``siyu demo --simulate`` the simulator publishes
them and its customers' likes and comments come back onto the demo customers' timelines; without
a WeCom connection they wait on the calendar.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.moments import publish, service
from siyu.moments.models import MomentModule
from siyu.moments.schemas import ColumnIn, PostIn

COLUMNS = (("周一上新", "product"), ("好物推荐", "product"), ("客户晒单", "user"), ("茶友问答", "user"),
           ("茶园日常", "personal"), ("生活随拍", "personal"))
# (module, column, text) — the week's content in turn; {name} is the persona's name.
CONTENT = (
    ("product", "周一上新", "【周一上新】明前西湖龙井到店啦🍃 豆香清冽，回甘明显。老朋友私信我，留一份试饮装给你～"),
    ("user", "客户晒单", "谢谢王姐的晒单！她说办公室下午一杯白茶，整个人都安静下来了☺️ 你的茶桌也欢迎晒给{name}看"),
    ("personal", "茶园日常", "今天跟师傅上山看茶园，雨后的茶芽嫩得发亮。做茶的人，靠天吃饭，也靠手艺。"),
    ("product", "好物推荐", "冷泡茶季节到了：一小包乌龙 + 500ml 凉白开，冷藏 6 小时。想要配方卡的评论区扣 1"),
    ("user", "茶友问答", "茶友问：红茶和白茶哪个更适合胃不好的人？{name}的建议：先从熟普和老白茶开始，少量多次。"),
    ("personal", "生活随拍", "周末在店里泡了一下午茶，和老客聊孩子聊工作，这大概就是开茶舍最好的时刻。"),
    ("product", "周一上新", "限量 50 份的桂花乌龙礼盒今天开订，送长辈、送客户都体面。需要的朋友私信{name}"),
)
EVENING = "晚安茶话：今天你喝了几杯茶？{name}今天三杯，一杯绿茶醒神，一杯乌龙解腻，一杯白茶助眠🌙"


def build_moments(session: Session, *, accounts: dict[str, Account], admin: Viewer, now: datetime) -> int:
    """Columns, then this week's posts for every WeCom member and personal account; how many posts."""
    columns = {name: service.create_column(session, data=ColumnIn(name=name, module=module), viewer=admin).id
               for name, module in COLUMNS}
    zone = local_zone()
    today = now.astimezone(zone).date()
    monday = today - timedelta(days=today.weekday())
    made = 0
    for account in accounts.values():
        if account.kind not in (AccountKind.wecom.value, AccountKind.personal.value):
            continue
        name = account.display_name.rstrip("0123456789")
        for n in range(7):
            day = monday + timedelta(days=n)
            module, column, text = CONTENT[(n + account.id) % len(CONTENT)]
            slots = [(time(10, 0), module, column, text)]
            if n % 2 == 1:
                slots.append((time(20, 30), MomentModule.personal.value, "生活随拍", EVENING))
            for at_time, slot_module, slot_column, slot_text in slots:
                at = datetime.combine(day, at_time, zone)
                post = service.create_post(session, viewer=admin, now=at, data=PostIn(
                    account_id=account.id, module=slot_module, column_id=columns[slot_column],
                    text=slot_text.format(name=name), scheduled_at=at))
                made += 1
                if account.kind == AccountKind.personal.value and at <= now:
                    if day < today:  # past days: posted by the account's operator
                        owner = _owner_viewer(session, account, admin)
                        service.mark_posted(session, post_id=post.id, viewer=owner, now=at + timedelta(minutes=3))
                    else:  # due today: on the operator's 今日任务 until they post it
                        publish.publish_one(session, post_id=post.id, now=now)
    # 草稿: ideas not yet on the calendar
    first = next((a for a in accounts.values() if a.kind == AccountKind.wecom.value), None)
    if first is not None:
        for text in ("下周主题待定：夏日冷泡系列？", "客户故事征集：请老客授权后再发"):
            service.create_post(session, viewer=admin, data=PostIn(account_id=first.id, module="user", text=text))
            made += 1
    return made


def _owner_viewer(session: Session, account: Account, admin: Viewer) -> Viewer:
    from siyu.team import service as team_service
    from siyu.team.models import User

    owner = session.get(User, account.owner_user_id) if account.owner_user_id is not None else None
    return team_service.viewer_for(owner) if owner is not None else admin
