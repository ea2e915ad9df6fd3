"""群规 (group moderation): rules per group kind, findings with their evidence, the blacklist.

WeCom has no server API that removes a member from a customer group (PLATFORM.md "Groups"), so a
finding never "kicks": it becomes the group owner's task with the evidence (the messages, their
times, the rule), a warning task, a blacklist entry, or an alert to the admin — graduated by how
many findings the member already has under the rule. WeCom's own 防骚扰 settings (admin console)
remove automatically where the corp wants it; ``/groups/rules/wecom`` says which of them match.

A finding is unique per rule and trigger message (``uq_moderation_finding_trigger``): the same
archive message read twice makes one finding.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class RuleStatus(enum.StrEnum):
    draft = "draft"  # being set up; a dry run shows what it would find
    live = "live"  # runs on every new group message and acts
    off = "off"


class Action(enum.StrEnum):
    warn = "warn"  # the owner warns the member in the group (a task with the templated text)
    owner_task = "owner_task"  # the owner removes the member by hand (a task with the evidence)
    blacklist = "blacklist"  # refused at every group's intake; flagged to the owner of a group they join
    notify_admin = "notify_admin"  # an alert for the admin (audit log + the findings page's filter)


class FindingStatus(enum.StrEnum):
    open = "open"
    pardoned = "pardoned"  # the admin forgave it (with a reason)
    false_positive = "false_positive"  # feedback: the rule was wrong here


class BlacklistStatus(enum.StrEnum):
    active = "active"
    appealed = "appealed"  # still refused; the appeal waits for the admin
    pardoned = "pardoned"


# A finding not produced by a message rule.
BLACKLIST_JOIN = "blacklist_join"  # a blacklisted customer joined a group


class ModerationRule(Base):
    __tablename__ = "moderation_rule"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # engine.RULE_KINDS
    group_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None: every group
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Graduated actions: step n (the member's n-th finding under this rule) takes ladder[min(n, len) - 1].
    ladder: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    warn_text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(8), default=RuleStatus.draft.value, index=True)
    dry_run: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # the last dry run's summary
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModerationFinding(Base):
    __tablename__ = "moderation_finding"
    __table_args__ = (
        UniqueConstraint("rule_key", "trigger", name="uq_moderation_finding_trigger"),
        Index("ix_moderation_finding_group_at", "group_chat_id", "occurred_at", "id"),
        Index("ix_moderation_finding_member", "member_userid", "rule_id", "status"),
        Index("ix_moderation_finding_at", "occurred_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("moderation_rule.id", ondelete="SET NULL"),
                                                nullable=True)
    # The rule's id, or BLACKLIST_JOIN: kept when the rule is deleted so the uniqueness still holds.
    rule_key: Mapped[str] = mapped_column(String(32))
    rule_kind: Mapped[str] = mapped_column(String(16))
    group_chat_id: Mapped[int] = mapped_column(ForeignKey("group_chat.id", ondelete="CASCADE"))
    member_userid: Mapped[str] = mapped_column(String(64))  # the sender: external_userid, UserID or nickname
    member_name: Mapped[str] = mapped_column(String(128), default="")
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True,
                                                    index=True)
    trigger: Mapped[str] = mapped_column(String(160))  # the deciding message's msgid (or a nickname/join key)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # [{msgid, at, type, text}]
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    offence: Mapped[int] = mapped_column(Integer, default=1)  # the member's n-th finding under the rule
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)  # what was done
    task_id: Mapped[int | None] = mapped_column(ForeignKey("maintenance_task.id", ondelete="SET NULL"),
                                                nullable=True)
    admin_notified: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=FindingStatus.open.value)
    feedback_note: Mapped[str] = mapped_column(String(255), default="")
    feedback_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BlacklistEntry(Base):
    """A member refused at every group's intake (one row per person; pardoned rows stay as history)."""

    __tablename__ = "moderation_blacklist"

    id: Mapped[int] = mapped_column(primary_key=True)
    userid: Mapped[str] = mapped_column(String(64), unique=True)  # external_userid (or nickname for personal groups)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True,
                                                    index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(String(255), default="")
    finding_id: Mapped[int | None] = mapped_column(ForeignKey("moderation_finding.id", ondelete="SET NULL"),
                                                   nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=BlacklistStatus.active.value, index=True)
    appeal: Mapped[str] = mapped_column(String(500), default="")
    appealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pardon_reason: Mapped[str] = mapped_column(String(255), default="")
    pardoned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pardoned_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModerationWhitelist(Base):
    """Colleagues exempt from every rule (besides each group's owner and admins): 托, 群客服, partners."""

    __tablename__ = "moderation_whitelist"

    id: Mapped[int] = mapped_column(primary_key=True)
    userid: Mapped[str] = mapped_column(String(64), unique=True)
    note: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModerationCursor(Base):
    """How far the minutely job has read: the last group message and member change seen, and the groups
    whose ads still wait for their red packet (group id → the earliest waiting ad, epoch seconds)."""

    __tablename__ = "moderation_cursor"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    message_id: Mapped[int] = mapped_column(Integer, default=0)
    change_id: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    ran_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


__all__ = ["Action", "BlacklistEntry", "BlacklistStatus", "FindingStatus", "ModerationCursor", "ModerationFinding",
           "ModerationRule", "ModerationWhitelist", "RuleStatus"]
