"""朋友圈 calendar (moments): a content plan per account (persona), drafts, scheduling, read-back.

The seed's plan has three modules — 产品 (product), 用户 (user stories), 个人 (the persona's own
life) — and admin-defined columns (栏目) inside them ("周一上新", "客户晒单" …). A ``MomentPost``
is one post of one account at one time: text (≤ 2,000 characters) and up to 9 images (the
platform's limits, W:96351, kept for personal accounts too so one plan fits both), stored through
the one storage (``core.storage``, area ``moments/``).

A WeCom account's post is published through ``add_moment_task`` (visibility by corp customer
tags, the account's member as sender), followed through ``get_moment_task_result`` to its
``moment_id``, and read back (publication, reach, likes and comments) by the jobs; each customer's
like or comment is one ``MomentInteraction`` (unique, so a second read adds nothing) and one
``moments_engaged`` touch on their timeline. A personal account's post becomes a reminder task for
the operator (``maintenance`` task of kind ``moment``), marked posted by the operator.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow
from siyu.core.i18n import N_


class MomentModule(enum.StrEnum):
    product = "product"  # 产品
    user = "user"  # 用户
    personal = "personal"  # 个人


MODULE_LABELS = {
    MomentModule.product: N_("Product (module)"),
    MomentModule.user: N_("Users (module)"),
    MomentModule.personal: N_("Personal (module)"),
}


class PostStatus(enum.StrEnum):
    draft = "draft"  # not on the schedule yet
    scheduled = "scheduled"  # will be published (WeCom) or reminded (personal) at scheduled_at
    creating = "creating"  # WeCom: add_moment_task accepted, the task is being made (jobid)
    waiting = "waiting"  # WeCom: made, the member has not published it in their client yet
    reminded = "reminded"  # personal: the operator has a task to post it by hand
    published = "published"
    failed = "failed"


STATUS_LABELS = {
    PostStatus.draft: N_("Draft (moment)"),
    PostStatus.scheduled: N_("Scheduled (moment)"),
    PostStatus.creating: N_("WeCom is creating the task"),
    PostStatus.waiting: N_("Waiting for the member to publish"),
    PostStatus.reminded: N_("Waiting for the operator to post"),
    PostStatus.published: N_("Published (moment)"),
    PostStatus.failed: N_("Failed (moment)"),
}


class MomentColumn(Base):
    """A column (栏目) of the content plan, inside one of the three modules (admin-defined)."""

    __tablename__ = "moment_column"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    module: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer, default=100)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MomentPost(Base):
    __tablename__ = "moment_post"
    __table_args__ = (
        Index("ix_moment_post_account_at", "account_id", "scheduled_at"),
        Index("ix_moment_post_status_at", "status", "scheduled_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    module: Mapped[str] = mapped_column(String(16), default=MomentModule.product.value)
    column_id: Mapped[int | None] = mapped_column(ForeignKey("moment_column.id", ondelete="SET NULL"), nullable=True)
    text: Mapped[str] = mapped_column(Text, default="")
    # [{"key": storage key, "name": file name, "size": bytes, "content_type": …}], at most 9
    images: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Siyu tag ids whose customers may see it (WeCom: their corp tag ids go to visible_range); [] = all
    tag_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=PostStatus.draft.value)
    jobid: Mapped[str] = mapped_column(String(64), default="")
    moment_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error: Mapped[str] = mapped_column(String(255), default="")
    audience: Mapped[int] = mapped_column(Integer, default=0)  # friends the tags select (planned reach)
    reach: Mapped[int] = mapped_column(Integer, default=0)  # customers it was visible to (read back)
    likes: Mapped[int] = mapped_column(Integer, default=0)
    comments: Mapped[int] = mapped_column(Integer, default=0)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # last interaction read-back
    task_id: Mapped[int | None] = mapped_column(ForeignKey("maintenance_task.id", ondelete="SET NULL"),
                                                nullable=True)
    posted_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class InteractionKind(enum.StrEnum):
    like = "like"
    comment = "comment"


class MomentInteraction(Base):
    """One customer's like or comment on one of our posts, as get_moment_comments reports it (once)."""

    __tablename__ = "moment_interaction"
    __table_args__ = (UniqueConstraint("post_id", "kind", "external_userid", "occurred_at",
                                       name="uq_moment_interaction_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("moment_post.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    external_userid: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True,
                                                    index=True)
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touch.id", ondelete="SET NULL"), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["MomentColumn", "MomentInteraction", "MomentModule", "MomentPost", "PostStatus"]
