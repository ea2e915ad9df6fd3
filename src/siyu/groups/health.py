"""Group health: Siyu's own daily snapshots, silent and dead groups, and the fans' resource threshold.

Why it is shaped this way: WeCom's group statistics (``groupchat/statistic`` and
``statistic_group_by_day``, W:96359) are per *owner*, not per group, reach back only 180 days and
never include today. So the per-group figures come from what Siyu already mirrors — the joins and
quits of every group (``GroupMemberChange``) and, where the chat archive (会话存档) is on, its group
messages (``GroupMessage``, by ``roomid``) — and are kept as one ``GroupDaySnapshot`` row per group
and day, for as long as the corp keeps Siyu. The owners' figures from the API are stored beside
them (``GroupOwnerDayStat``) for the days WeCom still has.

A group is **silent** when nobody wrote for 7 days and **dead** after 14 days, or when members leave
faster than they join (over the last 14 days). Without any archived group message in the corp, the
message rules are not applied (Siyu cannot tell a quiet group from a group it cannot read).

Every function works in the caller's transaction and never commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.orm import Session

from siyu.core.i18n import N_
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.groups import registry
from siyu.groups.models import (
    ChangeKind,
    GroupChat,
    GroupChatStatus,
    GroupDaySnapshot,
    GroupHealth,
    GroupMemberChange,
    GroupMessage,
    GroupOwnerDayStat,
    GroupTaskKind,
)

SILENT_DAYS = 7
DEAD_DAYS = 14
TREND_DAYS = 14  # leaving faster than joining, over this many days
SPEAKER_DAYS = 7
# Seed 002 §3 (核心金粉自建群): "设定在群成员达到多少以上时，可以申请运营中心资源" — the manual leaves the
# number to the operator; 100 members is Siyu's default (half of a WeCom group with WeChat members, 200).
FAN_RESOURCE_THRESHOLD = 100
BATCH = 500
STAT_FIELDS = ("new_chat_cnt", "chat_total", "chat_has_msg", "new_member_cnt", "member_total", "member_has_msg",
               "msg_total")
SUGGESTIONS = {GroupHealth.silent.value: N_("Wake it: a topic, a 早报 or a small red packet"),
               GroupHealth.dead.value: N_("Review it: merge its members into a live group or dismiss it")}


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=local_zone()).astimezone(UTC)
    return start, start + timedelta(days=1)


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), BATCH):
        yield values[start:start + BATCH]


@dataclass
class SnapshotResult:
    day: date
    groups: int
    silent: int
    dead: int
    tasks: int


def classify(*, now: datetime, since: datetime, last_message_at: datetime | None, joins: int, leaves: int,
             archive_on: bool) -> str:
    """active / silent / dead for one group (``since``: when Siyu first knew it)."""
    if leaves > joins and leaves > 0:
        return GroupHealth.dead.value
    if not archive_on:
        return GroupHealth.active.value
    quiet_since = last_message_at or since
    quiet = now - quiet_since
    if quiet >= timedelta(days=DEAD_DAYS):
        return GroupHealth.dead.value
    if quiet >= timedelta(days=SILENT_DAYS):
        return GroupHealth.silent.value
    return GroupHealth.active.value


def snapshot(session: Session, *, day: date | None = None, now: datetime | None = None,
             fan_threshold: int = FAN_RESOURCE_THRESHOLD) -> SnapshotResult:
    """The day's snapshot of every active group (again for the same day replaces it), each group's health,
    and the fans' resource tasks. A few grouped queries over all groups, not one per group."""
    now = now or datetime.now(UTC)
    day = day or (now.astimezone(local_zone()).date() - timedelta(days=1))
    start, end = _day_bounds(day)
    trend_start = end - timedelta(days=TREND_DAYS)
    speaker_start = end - timedelta(days=SPEAKER_DAYS)
    groups = list(session.execute(select(GroupChat.id, GroupChat.member_count, GroupChat.health,
                                         GroupChat.last_message_at, GroupChat.created_at,
                                         GroupChat.platform_created_at, GroupChat.fan_owned)
                                  .where(GroupChat.status == GroupChatStatus.active.value)))
    joins: dict[int, int] = {}
    leaves: dict[int, int] = {}
    trend: dict[int, list[int]] = {}
    on_the_day = func.sum(case((GroupMemberChange.at >= start, 1), else_=0))
    for gid, kind, n, day_n in session.execute(
            select(GroupMemberChange.group_chat_id, GroupMemberChange.kind, func.count(), on_the_day)
            .where(GroupMemberChange.at >= trend_start, GroupMemberChange.at < end)
            .group_by(GroupMemberChange.group_chat_id, GroupMemberChange.kind)):
        counts = trend.setdefault(gid, [0, 0])
        counts[0 if kind == ChangeKind.joined.value else 1] += int(n)
        if day_n:
            (joins if kind == ChangeKind.joined.value else leaves)[gid] = int(day_n)
    messages = {gid: int(n) for gid, n in session.execute(
        select(GroupMessage.group_chat_id, func.count()).where(
            GroupMessage.sent_at >= start, GroupMessage.sent_at < end, GroupMessage.group_chat_id.is_not(None))
        .group_by(GroupMessage.group_chat_id))}
    speakers = {gid: int(n) for gid, n in session.execute(
        select(GroupMessage.group_chat_id, func.count(func.distinct(GroupMessage.sender))).where(
            GroupMessage.sent_at >= speaker_start, GroupMessage.sent_at < end,
            GroupMessage.group_chat_id.is_not(None)).group_by(GroupMessage.group_chat_id))}
    last = {gid: at for gid, at in session.execute(
        select(GroupMessage.group_chat_id, func.max(GroupMessage.sent_at)).where(
            GroupMessage.group_chat_id.is_not(None), GroupMessage.sent_at < end)
        .group_by(GroupMessage.group_chat_id))}
    archive_on = bool(last) or session.scalar(select(GroupMessage.id).limit(1)) is not None
    rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    silent = dead = 0
    fans: list[int] = []
    for gid, member_count, health, last_at, created_at, platform_created_at, fan_owned in groups:
        last_message = last.get(gid)
        if last_message is not None and last_message.tzinfo is None:
            last_message = last_message.replace(tzinfo=UTC)
        since = platform_created_at or created_at
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        joined, left = trend.get(gid, [0, 0])
        state = classify(now=end, since=since or end, last_message_at=last_message, joins=joined, leaves=left,
                         archive_on=archive_on)
        silent += state == GroupHealth.silent.value
        dead += state == GroupHealth.dead.value
        rows.append({"group_chat_id": gid, "day": day, "member_count": member_count, "joins": joins.get(gid, 0),
                     "leaves": leaves.get(gid, 0), "messages": messages.get(gid, 0),
                     "speakers_7d": speakers.get(gid, 0), "health": state})
        if state != health or (last_message is not None and last_message != last_at):
            changed.append({"b_id": gid, "b_health": state, "b_last": last_message or last_at})
        if fan_owned and member_count >= fan_threshold:
            fans.append(gid)
    ids = [r["group_chat_id"] for r in rows]
    for chunk in _chunks(ids):
        session.execute(delete(GroupDaySnapshot).where(GroupDaySnapshot.day == day,
                                                       GroupDaySnapshot.group_chat_id.in_(chunk)))
    for chunk in _chunks(rows):
        session.execute(insert(GroupDaySnapshot), chunk)
    if changed:
        from sqlalchemy import bindparam

        table = GroupChat.__table__
        session.execute(update(table).where(table.c.id == bindparam("b_id"))  # type: ignore[arg-type]
                        .values(health=bindparam("b_health"), last_message_at=bindparam("b_last")), changed)
    tasks = 0
    for chunk in _chunks(fans):
        for group in session.scalars(select(GroupChat).where(GroupChat.id.in_(chunk))):
            task = registry.raise_task(session, kind=GroupTaskKind.apply_resources, key=str(group.id),
                                       detail=str(group.member_count), group=group)
            tasks += task is not None
    session.expire_all()
    return SnapshotResult(day=day, groups=len(rows), silent=silent, dead=dead, tasks=tasks)


def series(session: Session, *, group: GroupChat, days: int = 30) -> list[GroupDaySnapshot]:
    return list(reversed(list(session.scalars(select(GroupDaySnapshot).where(
        GroupDaySnapshot.group_chat_id == group.id).order_by(GroupDaySnapshot.day.desc()).limit(days)))))


def chart(snapshots: list[GroupDaySnapshot], labels: dict[str, str]) -> dict[str, Any]:
    """The ``data-chart`` document of ``siyu.js`` (x: days; members, joins, leaves, messages)."""
    return {"x": [s.day.isoformat()[5:] for s in snapshots],
            "series": [{"name": labels[key], "data": [getattr(s, key) for s in snapshots]}
                       for key in ("member_count", "joins", "leaves", "messages")]}


def unhealthy(session: Session, *, viewer: Viewer, limit: int = 500) -> list[GroupChat]:
    """Silent and dead groups the viewer may see, dead first."""
    from siyu.groups.queries import visible_group_clause

    query = select(GroupChat).where(GroupChat.status == GroupChatStatus.active.value,
                                    GroupChat.health.in_([GroupHealth.silent.value, GroupHealth.dead.value]))
    scope = visible_group_clause(viewer)
    if scope is not None:
        query = query.where(scope)
    return list(session.scalars(query.order_by(GroupChat.health, GroupChat.last_message_at, GroupChat.id)
                                .limit(limit)))


def by_kind(session: Session, *, viewer: Viewer) -> list[tuple[str, str, int, int]]:
    """(kind, health, groups, members) for the health page's per-kind table."""
    from siyu.groups.queries import visible_group_clause

    query = select(GroupChat.kind, GroupChat.health, func.count(), func.coalesce(func.sum(GroupChat.member_count), 0)
                   ).where(GroupChat.status == GroupChatStatus.active.value)
    scope = visible_group_clause(viewer)
    if scope is not None:
        query = query.where(scope)
    return [(k, h, int(n), int(m)) for k, h, n, m in session.execute(
        query.group_by(GroupChat.kind, GroupChat.health).order_by(GroupChat.kind, GroupChat.health))]


# ---------------------------------------------------------------- the owners' figures from WeCom (W:96359)


def pull_owner_stats(session: Session, *, api: Any, days: int = 30, today: date | None = None) -> int:
    """Store WeCom's per-owner daily figures for the last ``days`` days (yesterday back, ≤ 180; ≤ 30 days per
    call). Returns the rows written."""
    from siyu.wecom.client import GROUP_STAT_DAYS_BACK, GROUP_STAT_SPAN_DAYS

    today = today or datetime.now(UTC).astimezone(local_zone()).date()
    days = max(1, min(days, GROUP_STAT_DAYS_BACK))
    owners = sorted(set(session.scalars(select(GroupChat.owner_userid).where(
        GroupChat.status == GroupChatStatus.active.value, GroupChat.owner_userid != ""))))
    written = 0
    last = today - timedelta(days=1)
    first = today - timedelta(days=days)
    # by day sums the owners asked for, so one owner per call keeps their figures apart
    for owner in owners:
        span_start = first
        while span_start <= last:
            span_end = min(last, span_start + timedelta(days=GROUP_STAT_SPAN_DAYS - 1))
            begin, _e = _day_bounds(span_start)
            finish, _f = _day_bounds(span_end)
            items = api.group_stats_by_day(day_begin=int(begin.timestamp()), day_end=int(finish.timestamp()),
                                           owners=[owner])
            written += _store_owner_days(session, owner, items)
            span_start = span_end + timedelta(days=1)
    return written


def _store_owner_days(session: Session, owner: str, items: list[dict[str, Any]]) -> int:
    written = 0
    for item in items:
        try:
            day = datetime.fromtimestamp(int(item.get("stat_time") or 0), tz=UTC).astimezone(local_zone()).date()
        except (TypeError, ValueError, OverflowError, OSError):
            continue
        raw = item.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        values = {k: int(data.get(k) or 0) for k in STAT_FIELDS}
        row = session.scalar(select(GroupOwnerDayStat).where(GroupOwnerDayStat.owner_userid == owner,
                                                             GroupOwnerDayStat.day == day))
        if row is None:
            session.add(GroupOwnerDayStat(owner_userid=owner, day=day, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)
        written += 1
    session.flush()
    return written
