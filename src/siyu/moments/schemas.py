"""API shapes of the 朋友圈 calendar. The limits are checked by the service (one place, Chinese errors
naming the limit); these shapes only bound what is absurd."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ImageIn(BaseModel):
    """An image as the JSON API takes it: base64 bytes and a file name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("image.jpg", max_length=128)
    content_type: str = Field("image/jpeg", max_length=64)
    data_base64: str = Field(min_length=1)


class PostIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: int = Field(ge=1)
    module: str = Field("product", max_length=16)
    column_id: int | None = Field(None, ge=1)
    text: str = Field("", max_length=100_000)  # the 2,000-character limit is the service's, with its message
    images: list[ImageIn] = Field(default_factory=list, max_length=100)
    # From the library (话术库 / 素材库): a script used when ``text`` is empty, and images (9 in all with
    # ``images``; the service counts them together and names the limit).
    script_id: int | None = Field(None, ge=1)
    material_ids: list[int] = Field(default_factory=list, max_length=100)
    tag_ids: list[int] = Field(default_factory=list, max_length=100)
    scheduled_at: datetime | None = None


class PostUpdate(BaseModel):
    """A draft or scheduled post changed: only the fields given (images are added with a new post)."""

    model_config = ConfigDict(extra="forbid")

    module: str | None = Field(None, max_length=16)
    column_id: int | None = Field(None, ge=1)
    text: str | None = Field(None, max_length=100_000)
    tag_ids: list[int] | None = Field(None, max_length=100)


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheduled_at: datetime | None


class ColumnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=32)
    module: str = Field(max_length=16)
    position: int = Field(100, ge=0, le=10000)


class ColumnOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    module: str
    position: int


class PostOut(BaseModel):
    id: int
    account_id: int
    module: str
    column_id: int | None
    text: str
    images: list[dict[str, Any]]
    tag_ids: list[int]
    scheduled_at: datetime | None
    status: str
    moment_id: str
    published_at: datetime | None
    error: str
    audience: int
    reach: int
    likes: int
    comments: int


class PostPage(BaseModel):
    items: list[PostOut]
    next_cursor: str | None
