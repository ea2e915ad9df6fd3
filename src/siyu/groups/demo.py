"""The demo's groups: several kinds with uniform names and members, a 群活码 filling groups in turn through
the simulated WeCom (in-process), a personal group with its QR image, and a fortnight of daily snapshots in
which some groups fall silent or die.

The simulated corp answers exactly as it does over HTTP (``groupchat/get``, ``add_join_way`` …); the demo
calls its handlers directly so ``siyu demo`` needs no server.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer
from siyu.groups import codes, health, registry, service
from siyu.groups.models import GroupChat, GroupMessage, GroupPost

BRAND = "山野茶舍"
CITY = "杭州"
HATCH_PATTERN = "{品牌}{城市}中心品茶孵化群{编号}"
# (name, kind, tier, members, days since someone last wrote; None: nobody ever did, fan-owned)
GROUPS: tuple[tuple[str, str, str, int, int | None, bool], ...] = (
    ("山野茶舍杭州中心金粉群", "marketing", "金粉群", 60, 0, False),
    ("山野茶舍杭州中心品茶孵化群1", "marketing", "孵化群", 176, 0, False),
    ("山野茶舍杭州中心品茶孵化群2", "marketing", "孵化群", 40, 1, False),
    ("山野茶舍杭州中心品茶孵化群3", "marketing", "孵化群", 12, 2, False),
    ("品茶孵化4群", "marketing", "孵化群", 25, 9, False),  # breaks the template: the owner renames it
    ("山野茶舍茶艺课学习群", "knowledge", "学习群", 35, 0, False),
    ("西湖读茶会", "interest", "兴趣群", 18, 10, False),  # silent
    ("山野茶舍新品体验群", "product", "体验群", 22, 20, False),  # dead
    ("杭州茶商资源对接群", "network", "人脉群", 15, 3, False),
    ("小雨的茶友群", "marketing", "金粉自建群", 105, 0, True),  # a fan's own group past the threshold
)
JOINERS = 30
LINES = ("早上好，今天的早报来啦", "这款明前龙井怎么泡不苦？", "收到，谢谢老师", "周六品鉴会还有位置吗",
         "分享一篇冷泡茶的做法", "打卡！今天喝的是白茶", "请问会员价怎么算")


class CorpApi:
    """The simulated corp's handlers with the shape of ``siyu.wecom.client.WecomApi`` (the calls groups use)."""

    def __init__(self, corp: Any) -> None:
        self.corp = corp

    def group_chat(self, chat_id: str) -> dict[str, Any]:
        return dict(self.corp.api_groupchat_get({"chat_id": chat_id, "need_name": 1})["group_chat"])

    def add_join_way(self, **fields: Any) -> dict[str, Any]:
        from siyu.wecom.client import _join_way_fields

        return dict(self.corp.api_groupchat_add_join_way({"scene": 2, **_join_way_fields(**fields)}))

    def join_way(self, config_id: str) -> dict[str, Any]:
        return dict(self.corp.api_groupchat_get_join_way({"config_id": config_id})["join_way"])

    def update_join_way(self, config_id: str, **fields: Any) -> None:
        from siyu.wecom.client import _join_way_fields

        self.corp.api_groupchat_update_join_way({"config_id": config_id, "scene": 2, **_join_way_fields(**fields)})

    def create_mass_send(self, *, sender: str, text: str = "", chat_type: str = "single",
                         chat_ids: list[str] | None = None, **_rest: Any) -> dict[str, Any]:
        return dict(self.corp.api_add_msg_template({"chat_type": chat_type, "sender": sender,
                                                    "chat_id_list": list(chat_ids or []),
                                                    "text": {"content": text}}))

    def mass_send_results(self, msgid: str, userid: str) -> list[dict[str, Any]]:
        return list(self.corp.api_get_groupmsg_send_result({"msgid": msgid, "userid": userid})["send_list"])

    def add_group_welcome_template(self, text: str) -> str:
        return str(self.corp.api_group_welcome_template_add({"text": {"content": text}})["template_id"])

    def edit_group_welcome_template(self, template_id: str, text: str) -> None:
        self.corp.api_group_welcome_template_edit({"template_id": template_id, "text": {"content": text}})


def build_group_demo(session: Session, *, admin: Viewer, now: datetime, seed: int = 7) -> dict[str, int]:
    from siyu.simulator.corp import VirtualCorp

    rng = random.Random(seed)  # noqa: S311 - demo data
    owners = list(session.scalars(select(Account).where(Account.kind == "wecom", Account.wecom_userid.is_not(None))
                                  .order_by(Account.id).limit(2)))
    if not owners:
        return {}
    people = list(session.scalars(select(Customer).where(Customer.wecom_external_userid.is_not(None))
                                  .order_by(Customer.id).limit(900)))
    if len(people) < JOINERS + 200:
        return {}
    corp = VirtualCorp.seeded(seed, corp_id="wwSHANYEDEMO", members=[(a.wecom_userid or "", a.display_name)
                                                                     for a in owners],
                              contacts_per_member=0, groups_per_member=0, clock=lambda: now.timestamp(), salt=seed)
    corp.adopt_contacts([{"external_userid": c.wecom_external_userid, "name": c.name, "userid": owners[0].wecom_userid,
                          "added_at": int(now.timestamp())} for c in people])
    api = CorpApi(corp)
    template = registry.save_template(session, viewer=admin, data=registry.TemplateIn(
        name="品茶孵化群", pattern=HATCH_PATTERN, brand=BRAND, kind="marketing", tier="孵化群"))
    pool = [c.wecom_external_userid or "" for c in people]
    rng.shuffle(pool)
    joiners, pool = pool[:JOINERS], pool[JOINERS:]  # they scan the group code later
    made: list[tuple[GroupChat, int | None]] = []
    for n, (name, kind, tier, size, quiet, fan) in enumerate(GROUPS):
        owner = owners[n % len(owners)]
        members = rng.sample(pool, k=min(size, len(pool)))  # people are in several groups
        created = corp.create_group(owner.wecom_userid or "", name, members)
        group = service.apply_group_chat(session, api.group_chat(created["chat_id"]), at=now - timedelta(days=30))
        group.platform_created_at = now - timedelta(days=60)
        registry.update_registry(session, group=group, viewer=admin, data=registry.RegistryIn(
            kind=kind, tier=tier, region=CITY, store="杭州西湖店", fan_owned=fan,
            naming_template_id=template.id if "孵化" in name else None))
        made.append((group, quiet))
    hatch = [g for g, _q in made if g.naming_template_id == template.id and g.name != "品茶孵化4群"]
    code = codes.save_code(session, viewer=admin, data=codes.GroupCodeIn(
        name="西湖店收银台·品茶孵化群码", group_ids=[g.id for g in hatch], state="demo-xihu-hatch",
        auto_create=True, room_base_name="山野茶舍杭州中心品茶孵化群", room_base_id=4))
    codes.sync_join_way(session, code=code, api=api)
    # Customers scan the code at the counter: the first group passes 90 % and the code moves on to the next.
    joined = 0
    for start in range(0, len(joiners), 3):
        result = corp.scan_join_way(code.wecom_config_id, joiners[start:start + 3])
        for change in result["changes"]:
            service.apply_group_chat(session, api.group_chat(change["chat_id"]), at=now)
            joined += len(change["members"])
        if codes.refresh_window(session, code=code):
            codes.sync_join_way(session, code=code, api=api)
    # The archive's group messages: a week of talk where groups are alive, silence where they are not.
    number = 0
    for group, quiet in made:
        if quiet is None:
            continue
        speakers = [m.userid for m in service.current_members(session, group=group)][:12]
        for day in range(quiet, quiet + 14):
            for _ in range(rng.randrange(1, 5)):
                number += 1
                session.add(GroupMessage(msgid=f"demo-group-{number}", chat_id=group.chat_id, group_chat_id=group.id,
                                         sender=rng.choice(speakers), text=rng.choice(LINES),
                                         sent_at=now - timedelta(days=day, hours=rng.randrange(1, 10))))
    personal_owner = session.scalar(select(Account).where(Account.kind == "personal").order_by(Account.id).limit(1))
    if personal_owner is not None:
        registry.register_personal(session, viewer=admin, data=registry.PersonalGroupIn(
            name="山野茶舍老茶客群", owner_account_id=personal_owner.id, kind="marketing", tier="金粉群",
            region=CITY, member_count=188))
    session.flush()
    for back in range(14, 0, -1):  # a fortnight of daily snapshots for the health chart
        health.snapshot(session, now=now - timedelta(days=back - 1))
    operations = build_operations(session, admin=admin, now=now, api=api, groups=[g for g, _q in made],
                                  people=people, rng=rng)
    return {"groups": len(made), "joined_by_code": joined, **operations}


# 群SOP: the marketing groups' daily rhythm (seed 002 §6) and a weekly topic for the study group.
EVERY_DAY = (0, 1, 2, 3, 4, 5, 6)
PLANS: tuple[tuple[str, str, str, tuple[int, ...], str], ...] = (
    ("marketing", "morning", "07:30", EVERY_DAY, "【早报】早上好！今日茶事：明前龙井到店，冲泡水温 80℃ 最宜。"),
    ("marketing", "task", "08:00", (0, 1, 2, 3, 4), "【今日任务】晒一张你今天的茶席照片，完成打卡可领积分。"),
    ("marketing", "evening", "21:00", EVERY_DAY, "【晚报】今日回顾：群友分享了冷泡白茶的做法，明天见！"),
    ("knowledge", "topic", "20:00", (2,), "【话题讨论】你最常用的泡茶器具是什么？说说它的好处。"),
    ("marketing", "event", "10:00", (5,), "【活动通知】周六下午 2 点西湖店品鉴会，名额 20 位，回复 1 报名。"),
)
WELCOMES = (("营销群欢迎语", "marketing", "欢迎 %NICKNAME% 入群！请把群昵称改为「名称+地区+职业」，群公告里有群规。"),
            ("通用欢迎语", "", "%NICKNAME%，欢迎加入山野茶舍！有问题随时问群里的茶艺老师。"))
SCREENING = ("茶友推荐，自己开茶馆", "读书会认识的，想学冲泡", "老会员的同事，做茶具生意")


def build_operations(session: Session, *, admin: Viewer, now: datetime, api: CorpApi, groups: list[GroupChat],
                     people: list[Customer], rng: random.Random) -> dict[str, int]:
    """Welcome templates per kind, the 金粉群's intake plan in three batches, and a week of 群SOP posts sent
    through the simulated corp (confirmed by the owners), with today's and tomorrow's still to come."""
    from siyu.core.settings import local_zone
    from siyu.groups import onboarding, posts

    for name, kind, text in WELCOMES:
        template = onboarding.save_welcome_template(session, viewer=admin, data=onboarding.WelcomeTemplateIn(
            name=name, kind=kind, text=text))
        onboarding.sync_welcome_template(session, template=template, api=api)
    for kind, slot, at_time, days, text in PLANS:
        posts.save_plan(session, viewer=admin, data=posts.PlanIn(kind=kind, slot=slot, at_time=at_time,
                                                                 weekdays=list(days), text=text))
    # The 金粉群's intake: old customers and the sales core, invited prospects, screened applicants.
    gold = groups[0]
    members = {m.userid for m in service.current_members(session, group=gold)}
    inside = [c.id for c in people if c.wecom_external_userid in members][:6]
    outside = [c.id for c in people if c.wecom_external_userid not in members]
    onboarding.add_invitees(session, group=gold, viewer=admin, data=onboarding.InviteesIn(
        batch=1, customer_ids=inside, names=["销售骨干·陈店长", "销售骨干·茶艺师小林"]))
    prospects = onboarding.add_invitees(session, group=gold, viewer=admin, data=onboarding.InviteesIn(
        batch=2, customer_ids=outside[:6]))
    onboarding.set_invitee_status(session, group=gold, invitee_id=prospects[0].id, status="declined", viewer=admin)
    for n, customer_id in enumerate(outside[6:9]):
        onboarding.add_invitees(session, group=gold, viewer=admin, data=onboarding.InviteesIn(
            batch=3, customer_ids=[customer_id], note=SCREENING[n]))
    zone = local_zone()
    today = now.astimezone(zone).date()
    onboarding.finish_batch(session, group=gold, batch=1, viewer=admin, now=now - timedelta(days=6, hours=2))
    # A week of posts: each day's calendar, sent when due; the owners confirm in their app (the simulated corp).
    sent = 0
    for back in range(6, -1, -1):
        day = today - timedelta(days=back)
        start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
        posts.schedule_day(session, day=day, now=start)
        for hour in range(24):  # the job runs through the day; each post goes out at its time
            at = start + timedelta(hours=hour, minutes=59)
            if at > now:
                break
            api.corp.clock = at.timestamp  # the owners confirm at once
            sent += posts.send_due(session, api=api, now=at).sent
            posts.check_results(session, api=api, now=at)
    api.corp.clock = now.timestamp
    posts.schedule_day(session, day=today + timedelta(days=1), now=now)
    # The personal group's posts were posted by hand, all but today's.
    for post in session.scalars(select(GroupPost).where(GroupPost.status == "task",
                                                        GroupPost.due_at < now - timedelta(hours=12))):
        posts.mark_done(session, post_id=post.id, viewer=admin)
    session.flush()
    return {"posts_sent": sent}
