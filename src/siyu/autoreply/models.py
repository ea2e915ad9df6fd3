"""Auto-reply rules (自动回复): versioned, capped, and switchable off in one click.

A rule is the thing operators turn on and off; its *versions* are immutable — editing a
rule adds a version — so every automatic reply can name exactly which wording and which
matching sent it (``Message.rule_version_id``), which is what the incident tool needs.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class MatchKind(enum.StrEnum):
    exact = "exact"  # the whole message equals one of the keywords
    contains = "contains"  # the message contains one of the keywords
    regex = "regex"  # a regular expression (checked, and run under a time limit)
    outside_hours = "outside_hours"  # any message outside service hours


class AutoReplyRule(Base):
    __tablename__ = "autoreply_rule"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), nullable=True,
                                                   index=True)  # None: every account
    name: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    current_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A rule can only be switched on once someone has looked at what its current version
    # would have answered (the dry run).
    dry_run_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Paused by its hourly cap (or killed by hand): no sends until someone looks.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    paused_reason: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AutoReplyRuleVersion(Base):
    __tablename__ = "autoreply_rule_version"
    __table_args__ = (UniqueConstraint("rule_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("autoreply_rule.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    match_kind: Mapped[str] = mapped_column(String(16))
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    pattern: Mapped[str] = mapped_column(String(500), default="")
    # outside_hours: {"start": "09:00", "end": "21:00", "days": [0..6]} in the console's time zone
    hours: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    reply: Mapped[str] = mapped_column(Text)
    # A menu instead of plain text (微信客服 msgmenu): {"head_content", "list": [{"id", "content"}],
    # "tail_content"}; ``reply`` then holds the same menu as text, for channels without menus.
    menu: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    hourly_cap: Mapped[int] = mapped_column(Integer, default=100)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AutoReplySwitch(Base):
    """The per-account kill switch: when off, no rule answers on that account."""

    __tablename__ = "autoreply_switch"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Incident(Base):
    """A wrong message that went out, and the correction sent to everyone who received it."""

    __tablename__ = "incident"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(128))
    # What went wrong: a rule version, a message's exact text, in a time range.
    rule_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message_text: Mapped[str] = mapped_column(Text, default="")
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    until: Mapped[datetime] = mapped_column(UTCDateTime())
    correction: Mapped[str] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IncidentRecipient(Base):
    """One customer (conversation) who received the wrong message; the unique key means nobody
    gets the correction twice, even when the batch is interrupted and resumed."""

    __tablename__ = "incident_recipient"
    __table_args__ = (UniqueConstraint("incident_id", "conversation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"))
    customer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    wrong_message_id: Mapped[int] = mapped_column(Integer)
    correction_message_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


__all__ = ["AutoReplyRule", "AutoReplyRuleVersion", "AutoReplySwitch", "Incident", "IncidentRecipient", "MatchKind"]
