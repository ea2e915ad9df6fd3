"""话术库 and 素材库: the one library of scripts and materials every sending place picks from.

A script is a text for customers with customer-safe variables only (``customers.variables``); a
material is an image, a link (title, url, description, cover), a mini-program card (appid, page,
title, cover image) or a file. Files live in the shared storage (``core.storage``, a kept area).
Items carry their own simple tags, are retired rather than deleted (a welcome or an SOP step that
names one keeps working until someone picks another) and count their uses (``use_count``, and one
``library_use`` row per use naming where: inbox, sidebar, welcome …).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, UTCDateTime, utcnow


class ItemKind(enum.StrEnum):
    script = "script"  # 话术
    image = "image"
    link = "link"
    miniprogram = "miniprogram"
    file = "file"


MATERIAL_KINDS = (ItemKind.image, ItemKind.link, ItemKind.miniprogram, ItemKind.file)


class ItemStatus(enum.StrEnum):
    active = "active"
    retired = "retired"


class UsePlace(enum.StrEnum):
    """Where an item was used (the places that pick from the library)."""

    inbox = "inbox"
    sidebar = "sidebar"
    welcome = "welcome"
    sop = "sop"
    moments = "moments"
    mass_send = "mass_send"
    api = "api"


class LibraryItem(Base):
    __tablename__ = "library_item"
    __table_args__ = (
        Index("ix_library_item_list", "kind", "status", "id"),
        Index("ix_library_item_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.active.value)
    title: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text, default="")  # a script's text; a link's description
    url: Mapped[str] = mapped_column(String(2048), default="")  # a link's address
    appid: Mapped[str] = mapped_column(String(64), default="")  # a mini-program card's AppID
    pagepath: Mapped[str] = mapped_column(String(255), default="")  # … and its page
    file_key: Mapped[str] = mapped_column(String(200), default="")  # image / file bytes (core.storage)
    filename: Mapped[str] = mapped_column(String(255), default="")
    content_type: Mapped[str] = mapped_column(String(100), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    cover_key: Mapped[str] = mapped_column(String(200), default="")  # a link's or card's cover image
    cover_type: Mapped[str] = mapped_column(String(100), default="")
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class LibraryItemTag(Base):
    """The library's own tags (分类), one row per item and tag: the tag filter is an index lookup."""

    __tablename__ = "library_item_tag"
    __table_args__ = (Index("ix_library_item_tag_tag", "tag", "item_id"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("library_item.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(32), primary_key=True)


class LibraryUse(Base):
    """One use of an item: where, by whom, for which customer."""

    __tablename__ = "library_use"
    __table_args__ = (Index("ix_library_use_item", "item_id", "used_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("library_item.id", ondelete="CASCADE"))
    place: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer, default=1)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), nullable=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), nullable=True)
    used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


__all__ = ["ItemKind", "ItemStatus", "LibraryItem", "LibraryItemTag", "LibraryUse", "UsePlace"]
