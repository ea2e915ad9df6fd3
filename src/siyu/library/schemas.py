"""The library's API shapes (the rules are in ``service``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from siyu.core.ids import Id
from siyu.core.text import Name


class ScriptIn(BaseModel):
    title: Name = Field(min_length=1, max_length=64)
    text: Name = Field(min_length=1, max_length=4000)
    tags: list[Name] = Field(default_factory=list, max_length=20)


class MaterialIn(BaseModel):
    """A material's fields (its files come beside them, as multipart parts ``file`` and ``cover``)."""

    kind: str
    title: Name = Field("", max_length=128)
    description: Name = Field("", max_length=2000)
    url: Name = Field("", max_length=4096)
    appid: Name = Field("", max_length=64)
    pagepath: Name = Field("", max_length=255)
    tags: list[Name] = Field(default_factory=list, max_length=20)


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    status: str
    title: str
    text: str
    url: str
    appid: str
    pagepath: str
    filename: str
    content_type: str
    size: int
    file_url: str | None = None
    cover_url: str | None = None
    tags: list[str] = Field(default_factory=list)
    use_count: int
    last_used_at: datetime | None
    created_at: datetime


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None


class UseIn(BaseModel):
    place: str = Field(min_length=1, max_length=16)
    customer_id: Id | None = None


class UseOut(BaseModel):
    id: int
    use_count: int


class RenderedOut(BaseModel):
    id: int
    text: str
