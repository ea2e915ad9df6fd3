"""The customer portrait (用户全像).

A *customer* is one person. A *friendship* links that person to one account (载体) and
carries the WeChat remark fields of that account's contact card. Tags hang on the
customer (WeCom corp tags are corp-wide too), which keeps "customers with tags A and B"
a pair of index lookups at a million customers. Computed facts — contact count,
purchase count, level, lifecycle stage, last touch, completeness — are stored on the
customer and recomputed by the service on every change, so lists can filter on them.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from siyu.core.db import Base, UTCDateTime, utcnow


class Stage(enum.StrEnum):
    """The relationship ladder 流量 → 用户 → 客户 → 粉丝."""

    traffic = "traffic"
    user = "user"
    customer = "customer"
    fan = "fan"


class TouchKind(enum.StrEnum):
    chat = "chat"  # 私聊
    moments_like = "moments_like"  # 我们点赞了 TA 的朋友圈
    moments_comment = "moments_comment"  # 我们评论了 TA 的朋友圈
    moments_engaged = "moments_engaged"  # TA 互动了我们的朋友圈
    purchase = "purchase"
    offline_event = "offline_event"
    note = "note"
    tag_change = "tag_change"
    field_change = "field_change"
    system = "system"


# Touches that count as two-way contact for the contact-count bucket and the ladder.
CONTACT_KINDS = frozenset(
    {TouchKind.chat, TouchKind.moments_like, TouchKind.moments_comment, TouchKind.moments_engaged,
     TouchKind.offline_event}
)
# Touches an operator records by hand; the rest are written by the system.
MANUAL_KINDS = (
    TouchKind.chat, TouchKind.moments_like, TouchKind.moments_comment, TouchKind.moments_engaged,
    TouchKind.purchase, TouchKind.offline_event, TouchKind.note,
)


class TagGroupKind(enum.StrEnum):
    source = "source"  # 来源
    contact_count = "contact_count"  # 沟通次数 (computed)
    purchase = "purchase"  # 购买 (computed)
    crowd = "crowd"  # 人群
    level = "level"  # 等级 (computed)
    custom = "custom"


COMPUTED_GROUP_KINDS = frozenset({TagGroupKind.contact_count, TagGroupKind.purchase, TagGroupKind.level})


class Customer(Base):
    __tablename__ = "customer"
    __table_args__ = (
        Index("ix_customer_last_touch", "last_touch_at", "id"),
        Index("ix_customer_stage_last_touch", "stage", "last_touch_at"),
        Index("ix_customer_created", "created_at", "id"),
        Index("ix_customer_pool", "pool_since", "id"),
        Index("ix_customer_claimed", "claimed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    wechat_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    wecom_external_userid: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    # The WeChat open platform's id of the person (kf/customer/batchget, 公众号 user info): one person
    # reached through WeCom contacts, 微信客服 and the 公众号 is one customer.
    unionid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    avatar_url: Mapped[str] = mapped_column(String(512), default="")
    source: Mapped[str] = mapped_column(String(64), default="")
    # Objective facts (客观信息)
    gender: Mapped[str] = mapped_column(String(8), default="")
    age_band: Mapped[str] = mapped_column(String(16), default="")
    city: Mapped[str] = mapped_column(String(64), default="")
    job: Mapped[str] = mapped_column(String(64), default="")
    income_band: Mapped[str] = mapped_column(String(32), default="")
    family: Mapped[str] = mapped_column(String(128), default="")
    objective_notes: Mapped[str] = mapped_column(Text, default="")
    # Emotional and sensory notes (感性信息)
    emotional_notes: Mapped[str] = mapped_column(Text, default="")
    # Computed, kept current by customers.service.refresh_computed
    stage: Mapped[str] = mapped_column(String(16), default=Stage.traffic.value)
    # A stage an operator chose by hand; while set it wins over the lifecycle rules.
    stage_override: Mapped[str | None] = mapped_column(String(16), nullable=True)
    level: Mapped[str] = mapped_column(String(16), default="")
    contact_count: Mapped[int] = mapped_column(Integer, default=0)
    purchase_count: Mapped[int] = mapped_column(Integer, default=0)
    purchase_total: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    last_touch_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completeness: Mapped[int] = mapped_column(Integer, default=0)
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("customer.id", ondelete="SET NULL"), nullable=True
    )
    # The operator responsible for this customer (assigned by hand or in bulk).
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # 公海 (maintenance.pool): set while the customer waits in the public pool without an owner;
    # claimed_at: when the current owner claimed them from it (returned unworked after the hold time).
    pool_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    friendships: Mapped[list[Friendship]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="Friendship.id"
    )
    addresses: Mapped[list[Address]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="Address.id"
    )


class FriendshipStatus(enum.StrEnum):
    active = "active"
    deleted = "deleted"  # the customer deleted the account, or the account deleted them
    transferred = "transferred"  # handed over to another account (离职/在职继承)


class Friendship(Base):
    __tablename__ = "friendship"
    __table_args__ = (
        UniqueConstraint("account_id", "customer_id"),
        Index("ix_friendship_account_status", "account_id", "status"),
        Index("ix_friendship_status_removed", "status", "removed_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    remark_name: Mapped[str] = mapped_column(String(128), default="", index=True)
    # 称呼: how messages address the customer ("王姐", "李先生"). The remark name is private (it may
    # read "刘悦欣-红茶党-杭州自由职业"); only this, or the nickname when empty, goes to the customer.
    salutation: Mapped[str] = mapped_column(String(64), default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=FriendshipStatus.active.value)
    channel_state: Mapped[str] = mapped_column(String(64), default="")  # WeCom contact-way `state`
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Who ended a deleted friendship: "customer" (del_follow_user), "member" (del_external_contact),
    # "" when unknown (the sync found it gone). The churn review's reason and note (maintenance.churn).
    ended_by: Mapped[str] = mapped_column(String(16), default="", server_default="")
    churn_reason: Mapped[str] = mapped_column(String(32), default="", server_default="")
    churn_note: Mapped[str] = mapped_column(String(255), default="", server_default="")
    # The WeCom sync run that last saw this friendship on the platform (wecom.sync): one not
    # seen by a finished run is gone on WeCom.
    wecom_synced_run: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When an operator last changed the remark, description or phones in Siyu, and when Siyu's
    # values last reached WeCom: an edit newer than the last write-back is still Siyu's to win
    # when WeCom disagrees (last writer wins; wecom.sync).
    siyu_edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    wecom_written_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    customer: Mapped[Customer] = relationship(back_populates="friendships")
    phones: Mapped[list[Phone]] = relationship(
        back_populates="friendship", cascade="all, delete-orphan", order_by="Phone.id"
    )
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="friendship", cascade="all, delete-orphan", order_by="Attachment.id"
    )


class Phone(Base):
    __tablename__ = "phone"

    id: Mapped[int] = mapped_column(primary_key=True)
    friendship_id: Mapped[int] = mapped_column(ForeignKey("friendship.id", ondelete="CASCADE"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(32), index=True)

    friendship: Mapped[Friendship] = relationship(back_populates="phones")


class Attachment(Base):
    """A picture or name card (名片/图片) kept with a friendship's remark."""

    __tablename__ = "attachment"

    id: Mapped[int] = mapped_column(primary_key=True)
    friendship_id: Mapped[int] = mapped_column(ForeignKey("friendship.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="picture")  # picture / card
    title: Mapped[str] = mapped_column(String(128), default="")
    url: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    friendship: Mapped[Friendship] = relationship(back_populates="attachments")


class Address(Base):
    __tablename__ = "address"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(32), default="")
    recipient: Mapped[str] = mapped_column(String(64), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    region: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[str] = mapped_column(String(255), default="")

    customer: Mapped[Customer] = relationship(back_populates="addresses")


class TagGroup(Base):
    __tablename__ = "tag_group"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default=TagGroupKind.custom.value)
    multi_select: Mapped[bool] = mapped_column(Boolean, default=True)
    sort_order: Mapped[int] = mapped_column(Integer, default=100)
    # The WeCom corp tag group this group mirrors (groups.service.apply_corp_tags), if any.
    wecom_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True, index=True)

    tags: Mapped[list[Tag]] = relationship(
        back_populates="group", cascade="all, delete-orphan", order_by="Tag.sort_order, Tag.id"
    )

    @property
    def is_computed(self) -> bool:
        return self.kind in COMPUTED_GROUP_KINDS


class Tag(Base):
    __tablename__ = "tag"
    __table_args__ = (UniqueConstraint("group_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("tag_group.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    sort_order: Mapped[int] = mapped_column(Integer, default=100)
    # The WeCom corp tag this tag mirrors, if any.
    wecom_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True, index=True)

    group: Mapped[TagGroup] = relationship(back_populates="tags")


class CustomerTag(Base):
    __tablename__ = "customer_tag"
    __table_args__ = (Index("ix_customer_tag_tag_customer", "tag_id", "customer_id"),)

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FieldType(enum.StrEnum):
    text = "text"
    number = "number"
    date = "date"
    choice = "choice"


class CustomField(Base):
    __tablename__ = "custom_field"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(64))
    field_type: Mapped[str] = mapped_column(String(16), default=FieldType.text.value)
    choices: Mapped[list[str]] = mapped_column(JSON, default=list)
    sort_order: Mapped[int] = mapped_column(Integer, default=100)
    # A retired field keeps its values (history, exports of old data) but leaves forms and imports.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CustomFieldValue(Base):
    __tablename__ = "custom_field_value"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True)
    field_id: Mapped[int] = mapped_column(ForeignKey("custom_field.id", ondelete="CASCADE"), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class Touch(Base):
    """One entry on a customer's timeline: who did what, when."""

    __tablename__ = "touch"
    __table_args__ = (
        Index("ix_touch_customer_occurred", "customer_id", "occurred_at"),
        # Purchases (and other kinds) across all customers: channel revenue, purchase reports.
        Index("ix_touch_kind_customer", "kind", "customer_id", "occurred_at", "amount"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"), nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    kind: Mapped[str] = mapped_column(String(24))
    content: Mapped[str] = mapped_column(Text, default="")
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 2), nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A touch written by the system that must exist once (e.g. "the customer wrote to this account
    # on this day", kept current by an upsert as more messages come); None for everything else.
    dedupe_key: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True, index=True)


class CustomerMerge(Base):
    """Two or more customers merged into one, with what moved, so it can be undone.

    Merged-away customers are kept (``Customer.merged_into_id``) and hidden; ``moves``
    records every row re-pointed to the survivor and every value overwritten, which is
    exactly what an undo puts back.
    """

    __tablename__ = "customer_merge"

    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    source_ids: Mapped[list[int]] = mapped_column(JSON)
    choices: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    moves: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    undone_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)


__all__ = [
    "Address", "Attachment", "CustomField", "CustomFieldValue", "Customer", "CustomerMerge", "CustomerTag",
    "Friendship", "Phone", "Tag", "TagGroup", "Touch",
]
