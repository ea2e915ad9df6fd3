"""群规 in the demo: the seed's group rules, and a morning in one group where a member posts an ad without
the 50 yuan / 20 people red packet — caught, with the owner's removal task holding the evidence — while
another member's ad is paid for within the three minutes and passes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer, Friendship
from siyu.groups import service as groups_service
from siyu.groups.moderation import service
from siyu.groups.moderation.schemas import RuleIn
from siyu.wecom import archive

# The seed's rules (群管理规则): 名称+地区+职业; ads only with a 50 yuan / 20 people red packet within three
# minutes, else removal; no flooding, no consecutive stickers, no voice spam; no banned topics.
SEED_RULES: list[dict[str, Any]] = [
    {"name": "广告须发50元/20人红包（3分钟内）", "kind": "ad", "status": "live",
     "params": {"minutes": 3, "min_yuan": 50, "min_people": 20, "ad_words": ["加我微信", "代理招募", "扫码进群"]},
     "ladder": [["owner_task", "notify_admin"], ["owner_task", "blacklist"]]},
    {"name": "禁止刷屏", "kind": "flood", "status": "live", "params": {"count": 8, "seconds": 60},
     "ladder": [["warn"], ["owner_task"]], "warn_text": "@{称呼} 群里禁止刷屏，能一句话说完的请不要分多句，谢谢。"},
    {"name": "禁止连续发表情", "kind": "stickers", "status": "live", "params": {"count": 3},
     "ladder": [["warn"], ["owner_task"]], "warn_text": "@{称呼} 请不要连续发表情，谢谢配合。"},
    {"name": "禁止刷语音", "kind": "voice", "status": "draft", "params": {"count": 3, "seconds": 120},
     "ladder": [["warn"], ["owner_task"]]},
    {"name": "禁止黄赌毒等敏感话题", "kind": "banned_words", "status": "live",
     "params": {"words": ["赌博", "六合彩", "博彩", "代开发票", "刷单返利", "裸聊"]},
     "ladder": [["owner_task", "notify_admin"], ["owner_task", "blacklist"]]},
    {"name": "群昵称：名称+地区+职业", "kind": "nickname", "status": "live", "params": {"parts": 3},
     "ladder": [["warn"]], "warn_text": "@{称呼} 为方便大家认识，请把群昵称改成“名称+地区+职业”。"},
]
GROUP_NAME = "山野茶舍杭州中心创富孵化群1"
NICKNAMES = ("🍵 林晓+杭州+设计师", "周周 杭州 宝妈", "陈先生", "阿May · 上海 · 会计")


def build(session: Session, *, admin: Viewer, now: datetime) -> None:
    for data in SEED_RULES:
        service.save_rule(session, data=RuleIn(**data), viewer=admin)
    account = session.scalar(select(Account).where(Account.wecom_userid.is_not(None)).order_by(Account.id))
    if account is None or not account.wecom_userid:
        return
    service.add_whitelisted(session, userid=f"{account.wecom_userid}.cs", note="群客服", viewer=admin)
    members = _members(session, account)
    joined = int((now - timedelta(days=2)).timestamp())
    group = groups_service.apply_group_chat(session, {
        "chat_id": "wrDEMO_MODERATION_1", "name": GROUP_NAME, "owner": account.wecom_userid,
        "notice": "欢迎交流茶饮与财商话题；广告须同时发50元/20人红包，三分钟未发请出。",
        "member_list": [{"userid": account.wecom_userid, "type": 1, "join_time": joined}] + [
            {"userid": ext, "type": 2, "group_nickname": NICKNAMES[n % len(NICKNAMES)], "join_time": joined}
            for n, ext in enumerate(members)]}, at=now - timedelta(days=2))
    for ext in members:
        archive.record_consent(session, userid=account.wecom_userid, external_userid=ext, status="Agree")
    spammer, payer, chatty = members[0], members[1], members[2 % len(members)]
    start = now - timedelta(minutes=40)
    script: list[tuple[str, int, str, dict[str, Any]]] = [
        (chatty, 0, "text", {"content": "早上好，今天的早报收到了"}),
        (spammer, 60, "link", {"title": "日赚300元，宝妈在家就能做", "description": "点击了解",
                               "link_url": "https://example.com/job"}),
        (chatty, 120, "text", {"content": "这是什么？"}),
        (payer, 600, "link", {"title": "我家茶园的春茶预售", "description": "", "link_url": "https://example.com/tea"}),
        (payer, 700, "redpacket", {"type": 2, "wish": "春茶预售，谢谢大家", "totalcnt": 20, "totalamount": 5000}),
        (chatty, 900, "text", {"content": "谢谢红包！"}),
    ]
    opened = []
    for n, (sender, offset, kind, body) in enumerate(script, start=1):
        message = {"msgid": f"demo-moderation-{n}", "action": "send", "from": sender, "tolist": [account.wecom_userid],
                   "roomid": group.chat_id, "msgtime": int((start + timedelta(seconds=offset)).timestamp() * 1000),
                   "msgtype": kind, kind: body}
        opened.append(archive.Opened(seq=0, message=message))
    archive.store_page(session, opened)
    service.run_new(session, now=now)


def _members(session: Session, account: Account) -> list[str]:
    """Four WeCom customers of the account (the ones the morning's callbacks brought have WeCom ids;
    others are given one, as a sync would)."""
    rows = list(session.execute(select(Customer).join(Friendship, Friendship.customer_id == Customer.id)
                                .where(Friendship.account_id == account.id).order_by(Customer.id).limit(4)))
    out = []
    for n, (customer,) in enumerate(rows):
        if not customer.wecom_external_userid:
            customer.wecom_external_userid = f"wmDEMOMOD{n:04d}"
        out.append(customer.wecom_external_userid)
    while len(out) < 3:
        out.append(f"wmDEMOMOD{len(out) + 10:04d}")
    session.flush()
    return out
