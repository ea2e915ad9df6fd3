from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RuleIn(BaseModel):
    """A rule as the API and the console's form send it; ``service.check_rule`` checks the rest."""

    name: str = Field(min_length=1, max_length=64)
    kind: str
    group_kind: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    ladder: list[list[str]] = Field(default_factory=list)
    warn_text: str = Field(default="", max_length=500)
    status: str = "draft"


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    group_kind: str | None
    params: dict[str, Any]
    ladder: list[list[str]]
    warn_text: str
    status: str
    dry_run: dict[str, Any] | None
    findings: int = 0
    false_positives: int = 0
    updated_at: datetime


class DryRunIn(BaseModel):
    days: int = Field(default=7, ge=1, le=30)


class EvidenceOut(BaseModel):
    msgid: str
    at: str
    type: str
    text: str


class FindingOut(BaseModel):
    id: int
    rule_id: int | None
    rule_name: str
    rule_kind: str
    group_id: int
    member_userid: str
    member_name: str
    customer_id: int | None
    evidence_message_ids: list[str]
    evidence: list[EvidenceOut]
    detail: dict[str, Any]
    offence: int
    actions: list[str]
    task_id: int | None
    status: str
    occurred_at: datetime


class FindingPage(BaseModel):
    items: list[FindingOut]
    next_cursor: str | None


class FeedbackIn(BaseModel):
    note: str = Field(default="", max_length=255)


class PardonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=255)


class AppealIn(BaseModel):
    text: str = Field(min_length=1, max_length=500)


class BlacklistOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    userid: str
    customer_id: int | None
    name: str
    reason: str
    finding_id: int | None
    status: str
    appeal: str
    pardon_reason: str
    created_at: datetime


class IntakeCheckIn(BaseModel):
    userids: list[str] = Field(min_length=1, max_length=1000)


class IntakeCheckOut(BaseModel):
    refused: list[str]
