"""Scheduled group posts (群SOP): a calendar per group kind, and each post's way out.

Seed 002 §6: 早报 / 晚报 keep feeding the room, the 8:00 task announcement, discussion topics and event
notices; after each intake batch, the rules announcement and a self-introduction prompt. A calendar line
(``GroupPostPlan``) says what goes out at which local time on which weekdays for every group of a kind;
``schedule_day`` turns it into one ``GroupPost`` per group and time (the unique key makes it idempotent).

How a post goes out:

* a WeCom customer group: a corp mass send to groups (``add_msg_template`` chat_type group, W:92135) by the
  group's owner, at most 2,000 groups per task. Each group's monthly quota is reserved FIRST in the one
  send ledger (sends.service, target kind ``group``): a group with no room left is refused and nothing is
  created on WeCom; a send WeCom refuses gives its reservations back. The owner confirms it in their app;
  ``check_results`` reads ``get_groupmsg_send_result`` (status 1 = sent).
* a personal-WeChat group has no API: the post becomes the owner's task (groups.registry ``post``).
* a group dismissed while its post waits: the post is cancelled, with the reason on it.

Posts missed (due, never sent) or sent but not confirmed by their owner show in 今日任务 (``today_items``).
Every function works in the caller's transaction and never commits.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, cast

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from siyu.core.db import dialect_insert, utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers import variables
from siyu.groups import registry
from siyu.groups.models import (
    GroupChat,
    GroupChatStatus,
    GroupKind,
    GroupPlatform,
    GroupPost,
    GroupPostPlan,
    GroupTask,
    GroupTaskKind,
    PostSlot,
    PostStatus,
)
from siyu.sends import service as ledger
from siyu.sends.models import SendSource, TargetKind
from siyu.team import service as team_service
from siyu.wecom import client as client_limits

GROUPS_PER_TASK = client_limits.GROUP_MASS_SEND_CHATS  # W:92135: ≤ 2,000 group chats per add_msg_template
MISSED_AFTER = timedelta(hours=1)  # a post still unsent an hour after its time is missed (今日任务)
CONFIRM_GRACE = timedelta(hours=2)  # a sent post its owner has not confirmed within two hours (今日任务)
SEND_LATE_LIMIT = timedelta(hours=3)  # an 早报 is not sent in the afternoon: past this, the post is missed
TODAY_LOOKBACK = timedelta(days=2)  # 今日任务 lists missed and unconfirmed posts of the last two days
RESULT_WINDOW = timedelta(days=3)  # confirmations are read for posts sent in the last three days
RULES_DELAY = timedelta(minutes=5)  # after a batch: the rules announcement …
INTRO_DELAY = timedelta(minutes=15)  # … then the self-introduction prompt
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

SLOT_LABELS = {PostSlot.morning.value: N_("post_slot.morning"), PostSlot.evening.value: N_("post_slot.evening"),
               PostSlot.task.value: N_("post_slot.task"), PostSlot.topic.value: N_("post_slot.topic"),
               PostSlot.event.value: N_("post_slot.event"), PostSlot.rules.value: N_("post_slot.rules"),
               PostSlot.intro.value: N_("post_slot.intro")}
POST_STATUS_LABELS = {PostStatus.scheduled.value: N_("post_status.scheduled"),
                      PostStatus.sent.value: N_("post_status.sent"),
                      PostStatus.confirmed.value: N_("post_status.confirmed"),
                      PostStatus.task.value: N_("post_status.task"), PostStatus.done.value: N_("post_status.done"),
                      PostStatus.cancelled.value: N_("post_status.cancelled"),
                      PostStatus.refused.value: N_("post_status.refused"),
                      PostStatus.failed.value: N_("post_status.failed"),
                      PostStatus.missed.value: N_("post_status.missed")}
CALENDAR_SLOTS = (PostSlot.morning, PostSlot.evening, PostSlot.task, PostSlot.topic, PostSlot.event)
# The seed's rules (002 §5) and its self-introduction prompt (002 §7), the posts after each intake batch.
RULES_TEXT = ("【群规】欢迎新朋友！请大家遵守：1. 群昵称请改为「名称+地区+职业」；2. 禁止刷屏，能一句话说完不发多句；"
              "3. 禁止连续发表情；4. 发广告请先联系群主，经允许方可；5. 欢迎分享转发高质量内容。")
INTRO_TEXT = ("【自我介绍】新朋友们好！请按「名称+地区+职业」做个简单的自我介绍，"
              "说说你最想在群里收获什么，让大家认识你～")


class PlanNotFound(NotFound):
    pass


class PostNotFound(NotFound):
    pass


class PlanIn(BaseModel):
    kind: str = Field(max_length=24)
    slot: str = Field(max_length=16)
    at_time: str = Field(max_length=5)
    weekdays: list[int] = Field(default_factory=lambda: list(range(7)), max_length=7)
    text: str = Field(default="", max_length=4000)
    script_id: int | None = None

    @field_validator("kind", "slot", "at_time", "text")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def _check_plan(session: Session, data: PlanIn) -> None:
    from siyu.library import service as library

    if data.kind not in {k.value for k in GroupKind}:
        raise Invalid("Unknown group kind", field="kind")
    if data.slot not in {s.value for s in CALENDAR_SLOTS}:
        raise Invalid("Unknown kind of post", field="slot")
    if not _TIME.match(data.at_time):
        raise Invalid("Give the time as HH:MM, e.g. 08:00", field="at_time")
    if not data.weekdays or any(d not in range(7) for d in data.weekdays):
        raise Invalid("Choose at least one weekday", field="weekdays")
    library.check_script_choice(session, data.script_id, field_name="script_id")
    if not data.text and data.script_id is None:
        raise Invalid("Write the post or choose a script", field="text")
    if len(data.text.encode("utf-8")) > client_limits.MASS_SEND_TEXT_BYTES:
        raise Invalid("The post is longer than WeCom's {n} bytes", field="text",
                      n=client_limits.MASS_SEND_TEXT_BYTES)
    # A group post goes to a whole room: no customer's variable can be filled (and none is internal).
    if variables.variables_in(data.text):
        raise Invalid("A group post cannot use customer variables", field="text")
    if variables.variables_in(library.script_text(session, data.script_id)):
        raise Invalid("A group post cannot use customer variables", field="script_id")


def list_plans(session: Session, *, kind: str | None = None) -> list[GroupPostPlan]:
    query = select(GroupPostPlan).where(GroupPostPlan.active.is_(True))
    if kind:
        query = query.where(GroupPostPlan.kind == kind)
    return list(session.scalars(query.order_by(GroupPostPlan.kind, GroupPostPlan.at_time, GroupPostPlan.id)))


def save_plan(session: Session, *, data: PlanIn, viewer: Viewer, plan_id: int | None = None) -> GroupPostPlan:
    registry.require_editor(viewer)
    _check_plan(session, data)
    plan = session.get(GroupPostPlan, plan_id) if plan_id else GroupPostPlan()
    if plan is None or (plan_id and not plan.active):
        raise PlanNotFound("Calendar line not found")
    before = _snapshot(plan) if plan_id else None
    plan.kind, plan.slot, plan.at_time = data.kind, data.slot, data.at_time
    plan.weekdays, plan.text, plan.script_id, plan.active = sorted(set(data.weekdays)), data.text, data.script_id, True
    if plan_id is None:
        session.add(plan)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="update" if plan_id else "create",
                              entity_type="group_post_plan", entity_id=plan.id, before=before, after=_snapshot(plan))
    return plan


def _snapshot(plan: GroupPostPlan) -> dict[str, Any]:
    return {"kind": plan.kind, "slot": plan.slot, "at_time": plan.at_time, "weekdays": list(plan.weekdays or []),
            "text": plan.text, "script_id": plan.script_id}


def retire_plan(session: Session, *, plan_id: int, viewer: Viewer, now: datetime | None = None) -> int:
    """The line leaves the calendar; its posts still waiting are cancelled. Returns how many."""
    registry.require_editor(viewer)
    plan = session.get(GroupPostPlan, plan_id)
    if plan is None or not plan.active:
        raise PlanNotFound("Calendar line not found")
    plan.active = False
    waiting = list(session.scalars(select(GroupPost).where(GroupPost.plan_id == plan.id,
                                                           GroupPost.status == PostStatus.scheduled.value)))
    for post in waiting:
        post.status, post.reason = PostStatus.cancelled.value, "plan_retired"
    team_service.record_audit(session, actor=viewer, action="delete", entity_type="group_post_plan",
                              entity_id=plan.id, before=_snapshot(plan), after={"cancelled_posts": len(waiting)})
    return len(waiting)


def _due(day: date, at_time: str) -> datetime:
    hour, minute = (int(p) for p in at_time.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=local_zone())


def plan_text(session: Session, plan: GroupPostPlan) -> str:
    """The post's words: the chosen library script (its raw text) or the line's own text."""
    from siyu.library import service as library

    return library.script_text(session, plan.script_id) or plan.text


def schedule_day(session: Session, *, day: date, now: datetime | None = None) -> int:
    """One post per active calendar line and active group of its kind on ``day`` (again: nothing new).

    Times already past when scheduling are skipped (a post is never created late)."""
    now = now or utcnow()
    plans = [p for p in list_plans(session) if day.weekday() in (p.weekdays or [])]
    if not plans:
        return 0
    kinds = sorted({p.kind for p in plans})
    groups = list(session.scalars(select(GroupChat).where(GroupChat.kind.in_(kinds),
                                                          GroupChat.status == GroupChatStatus.active.value)))
    by_kind: dict[str, list[GroupChat]] = defaultdict(list)
    for group in groups:
        by_kind[group.kind].append(group)
    rows: list[dict[str, Any]] = []
    for plan in plans:
        due = _due(day, plan.at_time)
        if due < now:
            continue
        text = plan_text(session, plan)
        rows.extend({"plan_id": plan.id, "group_chat_id": g.id, "account_id": g.owner_account_id, "slot": plan.slot,
                     "batch": None, "text": text, "due_at": due, "status": PostStatus.scheduled.value, "reason": "",
                     "sender": g.owner_userid, "msgid": "", "sent_at": None, "confirmed_at": None, "created_at": now}
                    for g in by_kind.get(plan.kind, []))
    if not rows:
        return 0
    table = cast(Table, GroupPost.__table__)
    before = session.scalar(select(GroupPost.id).order_by(GroupPost.id.desc()).limit(1)) or 0
    for start in range(0, len(rows), 1000):
        session.execute(dialect_insert(session, table).on_conflict_do_nothing(
            index_elements=["plan_id", "group_chat_id", "due_at"]), rows[start:start + 1000])
    after = session.scalar(select(GroupPost.id).order_by(GroupPost.id.desc()).limit(1)) or 0
    return after - before


def schedule_intake_posts(session: Session, *, group: GroupChat, batch: int,
                          now: datetime | None = None) -> list[GroupPost]:
    """The rules announcement and the self-introduction prompt after an intake batch (once per batch)."""
    now = now or utcnow()
    existing = session.scalar(select(GroupPost.id).where(
        GroupPost.group_chat_id == group.id, GroupPost.batch == batch, GroupPost.slot == PostSlot.rules.value,
        GroupPost.status != PostStatus.cancelled.value).limit(1))
    if existing is not None:
        raise Invalid("The posts after batch {batch} are already scheduled", field="batch", batch=batch)
    made = [GroupPost(group_chat_id=group.id, account_id=group.owner_account_id, slot=slot.value, batch=batch,
                      text=text, due_at=now + delay, status=PostStatus.scheduled.value, sender=group.owner_userid,
                      created_at=now)
            for slot, text, delay in ((PostSlot.rules, RULES_TEXT, RULES_DELAY),
                                      (PostSlot.intro, INTRO_TEXT, INTRO_DELAY))]
    session.add_all(made)
    session.flush()
    return made


# ---------------------------------------------------------------- sending


@dataclass
class SendOutcome:
    sent: int = 0
    refused: int = 0
    cancelled: int = 0
    failed: int = 0
    tasks: int = 0
    missed: int = 0
    retry: int = 0
    calls: int = 0
    msgids: list[str] = field(default_factory=list)


def cancel_for_group(session: Session, *, group: GroupChat) -> int:
    """The group was dismissed: its waiting posts are cancelled, and say so."""
    waiting = list(session.scalars(select(GroupPost).where(
        GroupPost.group_chat_id == group.id,
        GroupPost.status.in_([PostStatus.scheduled.value, PostStatus.task.value]))))
    for post in waiting:
        post.status, post.reason = PostStatus.cancelled.value, "group_dismissed"
    for task in session.scalars(select(GroupTask).where(GroupTask.group_chat_id == group.id,
                                                        GroupTask.kind == GroupTaskKind.post.value,
                                                        GroupTask.status == "open")):
        task.status, task.done_at = "done", utcnow()
        task.key = f"done:{task.id}:{task.key}"[:64]
    if waiting:
        from siyu.core.viewer import SYSTEM

        team_service.record_audit(session, actor=SYSTEM, action="cancel", entity_type="group_chat",
                                  entity_id=group.id, entity_name=group.name,
                                  after={"cancelled_posts": [p.id for p in waiting], "reason": "group_dismissed"})
    return len(waiting)


def send_due(session: Session, *, api: Any, now: datetime | None = None, limit: int = 20_000) -> SendOutcome:
    """Send every post whose time has come: quota first, then one WeCom task per owner and text (≤ 2,000 groups)."""
    from siyu.wecom.client import WecomApiError

    now = now or utcnow()
    outcome = SendOutcome()
    due = list(session.scalars(select(GroupPost).where(GroupPost.status == PostStatus.scheduled.value,
                                                       GroupPost.due_at <= now)
                               .order_by(GroupPost.due_at, GroupPost.id).limit(limit)))
    if not due:
        return outcome
    groups = {g.id: g for g in session.scalars(select(GroupChat).where(
        GroupChat.id.in_(sorted({p.group_chat_id for p in due}))))}
    batches: dict[tuple[str, str], list[GroupPost]] = defaultdict(list)
    for post in due:
        group = groups[post.group_chat_id]
        if not group.is_active:
            post.status, post.reason = PostStatus.cancelled.value, "group_dismissed"
            outcome.cancelled += 1
        elif post.due_at < now - SEND_LATE_LIMIT:
            post.status, post.reason = PostStatus.missed.value, "too_late"
            outcome.missed += 1
        elif group.platform == GroupPlatform.personal.value:
            post.status = PostStatus.task.value
            registry.raise_task(session, kind=GroupTaskKind.post, key=str(post.id),
                                detail=f"{_(SLOT_LABELS[post.slot])}：{post.text}", group=group)
            outcome.tasks += 1
        else:
            batches[(group.owner_userid, post.text)].append(post)
    for (sender, text), posts in batches.items():
        for start in range(0, len(posts), GROUPS_PER_TASK):
            chunk = posts[start:start + GROUPS_PER_TASK]
            _send_chunk(session, api=api, sender=sender, text=text, posts=chunk, groups=groups, now=now,
                        outcome=outcome, error_type=WecomApiError)
    return outcome


def _send_chunk(session: Session, *, api: Any, sender: str, text: str, posts: list[GroupPost],
                groups: dict[int, GroupChat], now: datetime, outcome: SendOutcome, error_type: type[Exception]) -> None:
    ref = f"group_post:{posts[0].id}"
    if not sender:
        for post in posts:
            post.status, post.reason = PostStatus.failed.value, "no_owner"
            outcome.failed += 1
        return
    reservation = ledger.reserve(session, [p.group_chat_id for p in posts], now, source=SendSource.group_post,
                                 ref=ref, target=TargetKind.group)
    allowed = set(reservation.allowed)
    going: list[GroupPost] = []
    for post in posts:
        if post.group_chat_id in allowed:
            going.append(post)
        else:
            post.status = PostStatus.refused.value
            post.reason = reservation.refused.get(post.group_chat_id, "")[:255]
            outcome.refused += 1
    if not going:
        return
    chat_ids = list(dict.fromkeys(groups[p.group_chat_id].chat_id for p in going))
    try:
        answer = api.create_mass_send(sender=sender, text=text, chat_type="group", chat_ids=chat_ids)
    except error_type as exc:
        ledger.release(session, source=SendSource.group_post, ref=ref, target=TargetKind.group)
        if getattr(exc, "retryable", False):
            outcome.retry += len(going)  # WeCom busy or unreachable: the next run tries again (until too late)
            return
        display = getattr(exc, "display", None)
        reason = (display() if callable(display) else str(exc))[:255]
        for post in going:
            post.status, post.reason = PostStatus.failed.value, reason
            outcome.failed += 1
        return
    outcome.calls += 1
    msgid = str(answer.get("msgid", ""))
    outcome.msgids.append(msgid)
    for post in going:
        post.status, post.msgid, post.sent_at, post.sender = PostStatus.sent.value, msgid, now, sender
        outcome.sent += 1


def check_results(session: Session, *, api: Any, now: datetime | None = None) -> int:
    """Sent posts whose owner confirmed them in their app (``get_groupmsg_send_result`` status 1)."""
    now = now or utcnow()
    waiting = list(session.scalars(select(GroupPost).where(GroupPost.status == PostStatus.sent.value,
                                                           GroupPost.msgid != "",
                                                           GroupPost.sent_at >= now - RESULT_WINDOW)))
    by_task: dict[tuple[str, str], list[GroupPost]] = defaultdict(list)
    for post in waiting:
        by_task[(post.msgid, post.sender)].append(post)
    chats = {g.id: g.chat_id for g in session.scalars(select(GroupChat).where(
        GroupChat.id.in_(sorted({p.group_chat_id for p in waiting}) or [-1])))}
    confirmed = 0
    for (msgid, sender), posts in by_task.items():
        rows = {str(r.get("chat_id", "")): r for r in api.mass_send_results(msgid, sender)}
        for post in posts:
            row = rows.get(chats.get(post.group_chat_id, ""))
            if row is None or int(row.get("status", 0) or 0) == 0:
                continue
            if int(row.get("status", 0)) == 1:
                sent_at = int(row.get("send_time", 0) or 0)
                post.status = PostStatus.confirmed.value
                post.confirmed_at = datetime.fromtimestamp(sent_at, local_zone()) if sent_at else now
                confirmed += 1
            else:
                post.status, post.reason = PostStatus.failed.value, f"status {row.get('status')}"
    return confirmed


def mark_done(session: Session, *, post_id: int, viewer: Viewer) -> GroupPost:
    """A personal group's post was posted by hand (its task done)."""
    post = session.get(GroupPost, post_id)
    if post is None or not _visible(post, viewer):
        raise PostNotFound("Post not found")
    if post.status != PostStatus.task.value:
        raise Invalid("Only a post waiting to be posted by hand can be marked as posted", field="status")
    post.status, post.confirmed_at = PostStatus.done.value, utcnow()
    task = session.scalar(select(GroupTask).where(GroupTask.key == f"{GroupTaskKind.post.value}:{post.id}"))
    if task is not None:
        registry.finish_task(session, task_id=task.id, viewer=viewer)
    return post


def _visible(post: GroupPost, viewer: Viewer) -> bool:
    return viewer.sees_all_accounts or (post.account_id is not None and viewer.can_see_account(post.account_id))


# ---------------------------------------------------------------- reading: calendar, posts, 今日任务


def week_of(day: date) -> list[date]:
    start = day - timedelta(days=day.weekday())
    return [start + timedelta(days=n) for n in range(7)]


def list_posts(session: Session, *, viewer: Viewer, since: datetime, until: datetime, kind: str | None = None,
               group_id: int | None = None, limit: int = 500) -> list[GroupPost]:
    query = select(GroupPost).where(GroupPost.due_at >= since, GroupPost.due_at < until)
    if group_id is not None:
        query = query.where(GroupPost.group_chat_id == group_id)
    if kind:
        query = query.where(GroupPost.group_chat_id.in_(select(GroupChat.id).where(GroupChat.kind == kind)))
    if not viewer.sees_all_accounts:
        query = query.where(GroupPost.account_id.in_(sorted(viewer.account_ids) or [-1]))
    return list(session.scalars(query.order_by(GroupPost.due_at, GroupPost.id).limit(limit)))


def around(session: Session, *, group: GroupChat, now: datetime | None = None, each: int = 5) -> list[GroupPost]:
    """A group's last few posts and its next few, in time order (the group page)."""
    now = now or utcnow()
    past = list(session.scalars(select(GroupPost).where(GroupPost.group_chat_id == group.id, GroupPost.due_at <= now)
                                .order_by(GroupPost.due_at.desc(), GroupPost.id.desc()).limit(each)))
    coming = list(session.scalars(select(GroupPost).where(GroupPost.group_chat_id == group.id, GroupPost.due_at > now)
                                  .order_by(GroupPost.due_at, GroupPost.id).limit(each)))
    return [*reversed(past), *coming]


@dataclass
class CalendarCell:
    plans: list[GroupPostPlan] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # post status → posts that day


def calendar(session: Session, *, viewer: Viewer, kind: str, day: date) -> dict[str, Any]:
    """The week holding ``day`` for one group kind: each calendar line by weekday, with its posts' states."""
    days = week_of(day)
    plans = list_plans(session, kind=kind)
    since, until = _due(days[0], "00:00"), _due(days[-1] + timedelta(days=1), "00:00")
    posts = list_posts(session, viewer=viewer, since=since, until=until, kind=kind, limit=20_000)
    counts: dict[tuple[int | None, date], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for post in posts:
        counts[(post.plan_id, post.due_at.astimezone(local_zone()).date())][post.status] += 1
    rows = []
    for plan in plans:
        cells = [{"day": d, "on": d.weekday() in (plan.weekdays or []),
                  "counts": dict(counts.get((plan.id, d), {}))} for d in days]
        rows.append({"plan": plan, "cells": cells})
    extra = [p for p in posts if p.plan_id is None]
    return {"days": days, "rows": rows, "intake_posts": extra}


def today_items(session: Session, *, viewer: Viewer, now: datetime | None = None,
                account_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The group work of the viewer's accounts for 今日任务: open group tasks, posts missed or unconfirmed."""
    from siyu.accounts.models import Account

    now = now or utcnow()
    if account_id is not None:
        accounts = [account_id] if viewer.can_see_account(account_id) else []
    elif viewer.sees_all_accounts:
        accounts = list(session.scalars(select(Account.id).where(Account.owner_user_id == viewer.user_id)))
    else:
        accounts = sorted(viewer.account_ids)
    if not accounts:
        return []
    items: list[dict[str, Any]] = []
    tasks = list(session.scalars(select(GroupTask).where(GroupTask.status == "open",
                                                         GroupTask.account_id.in_(accounts))
                                 .order_by(GroupTask.id.desc()).limit(limit)))
    late = list(session.scalars(select(GroupPost).where(
        GroupPost.account_id.in_(accounts), GroupPost.due_at >= now - TODAY_LOOKBACK,
        ((GroupPost.status == PostStatus.scheduled.value) & (GroupPost.due_at <= now - MISSED_AFTER))
        | (GroupPost.status == PostStatus.missed.value)
        | ((GroupPost.status == PostStatus.sent.value) & (GroupPost.due_at <= now - CONFIRM_GRACE)))
        .order_by(GroupPost.due_at).limit(limit)))
    names = {g.id: g.name for g in session.scalars(select(GroupChat).where(GroupChat.id.in_(
        sorted({t.group_chat_id for t in tasks if t.group_chat_id} | {p.group_chat_id for p in late}) or [-1])))}
    for post in late:
        missed = post.status in (PostStatus.scheduled.value, PostStatus.missed.value)
        items.append({"type": "post", "id": post.id, "group_id": post.group_chat_id,
                      "group": names.get(post.group_chat_id, ""),
                      "label": _("Group post missed") if missed else _("Group post not confirmed"),
                      "detail": f"{_(SLOT_LABELS[post.slot])} · {post.due_at.astimezone(local_zone()):%m-%d %H:%M}",
                      "status": post.status})
    for task in tasks:
        items.append({"type": "task", "id": task.id, "group_id": task.group_chat_id,
                      "group": names.get(task.group_chat_id or 0, ""),
                      "label": _(registry.TASK_LABELS[registry.GroupTaskKind(task.kind)]),
                      "detail": task.detail, "status": task.status})
    return items


def reason_text(reason: str) -> str:
    if reason == "group_dismissed":
        return _("Cancelled: the group was dismissed before the post went out")
    if reason == "plan_retired":
        return _("Cancelled: the calendar line was removed")
    if reason == "too_late":
        return _("Not sent: WeCom could not be reached in time")
    if reason == "no_owner":
        return _("The group has no owner on WeCom")
    return reason
