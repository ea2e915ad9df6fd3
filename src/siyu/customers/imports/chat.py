"""Chat exports from personal WeChat accounts (个人号) attached to a customer's timeline.

Personal accounts have no API; operators export a chat with a chat-export tool and upload it
here. Two layouts are read (the README shows both exactly):

- **Plain text** — every message starts with a header line ``YYYY-MM-DD HH:MM[:SS] 发送人``;
  the lines after it, up to the next header, are its text (a message may span lines; blank
  lines between messages are ignored). This is the TXT layout of WeChatMsg (留痕) and of
  chats copied by hand.
- **CSV** — WeChatMsg's CSV: a header row with at least ``StrTime`` (``YYYY-MM-DD HH:MM:SS``),
  ``IsSender`` (1 = sent by our account) and ``StrContent``; ``Type`` (1 text, 3 picture,
  34 voice, 43 video, 47 sticker, 49 link or file, 10000 system notice) is read when present.

Times are local (``SIYU_TIMEZONE``). The whole file is checked first: a line that belongs to
no message, a time that does not exist, or a sender who is neither the customer nor our
account is reported with its line number and nothing is written. Messages of one day become
one "私聊" touch holding that day's transcript; each message is keyed by time, direction and
text, so importing the same file again — or a longer export that overlaps it — adds only
what is new.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.errors import Invalid
from siyu.core.i18n import _
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers import service
from siyu.customers.models import Customer, Friendship, Touch, TouchKind
from siyu.team import service as team_service

MAX_BYTES = 20 * 1024 * 1024
MAX_REPORTED = 200
HEADER = re.compile(r"^(\d{4}-\d{1,2}-\d{1,2})[ T](\d{1,2}:\d{2}(?::\d{2})?)\s+(.+?)\s*$")
ME = ("我", "me", "Me", "ME")
CSV_REQUIRED = ("StrTime", "IsSender", "StrContent")
# WeChatMsg's message types; anything but text is shown by its kind.
CSV_TYPES = {"1": "", "3": "[图片]", "34": "[语音]", "43": "[视频]", "47": "[表情]", "49": "[链接或文件]",
             "10000": "[系统消息]"}
VIA = "chat_import"


@dataclass(frozen=True)
class ChatError:
    line: int
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "message": self.message}


class ChatInvalid(Invalid):
    def __init__(self, errors: list[ChatError], total: int) -> None:
        super().__init__("The chat export has {n} problems; nothing was imported", n=total)
        self.errors = errors
        self.total = total


@dataclass(frozen=True)
class ChatMessage:
    line: int
    at: datetime  # UTC
    from_me: bool
    sender: str
    text: str

    @property
    def key(self) -> str:
        raw = f"{self.at.isoformat()}|{'me' if self.from_me else 'them'}|{self.text}"
        return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:20]


@dataclass
class ChatImportResult:
    messages: int
    new_messages: int
    days: int
    dry_run: bool
    touch_ids: list[int] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.messages - self.new_messages

    def summary(self) -> dict[str, object]:
        return {"messages": self.messages, "new_messages": self.new_messages, "duplicates": self.duplicates,
                "days": self.days, "dry_run": self.dry_run}


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), else GB18030 — what Windows tools write."""
    if len(data) > MAX_BYTES:
        raise Invalid("The file is larger than {mb} MB; split it into smaller files", mb=MAX_BYTES // (1024 * 1024))
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise Invalid("This file is neither UTF-8 nor GBK text; export the chat again as TXT or CSV")


def _local_time(day: str, clock: str) -> datetime | None:
    try:
        moment = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S" if clock.count(":") == 2
                                   else "%Y-%m-%d %H:%M")
    except ValueError:
        return None
    return moment.replace(tzinfo=local_zone()).astimezone(UTC)


@dataclass
class Parties:
    """Who may speak in this chat: our account and the customer, by each name they go by."""

    ours: set[str]
    theirs: set[str]

    def from_me(self, sender: str) -> bool | None:
        if sender in self.ours:
            return True
        if sender in self.theirs:
            return False
        return None


def _parties(session: Session, customer: Customer, account: Account) -> Parties:
    friendship = session.scalar(select(Friendship).where(Friendship.customer_id == customer.id,
                                                         Friendship.account_id == account.id))
    theirs = {customer.name, customer.wechat_id, friendship.remark_name if friendship else ""}
    return Parties(ours={*ME, account.display_name, account.wechat_id} - {""}, theirs=theirs - {""})


def parse_text(text: str, parties: Parties) -> tuple[list[ChatMessage], list[ChatError]]:
    messages: list[ChatMessage] = []
    errors: list[ChatError] = []
    current: tuple[int, datetime, bool, str] | None = None
    body: list[str] = []
    in_broken = False  # the text lines under a header already reported belong to it, not to nothing

    def close() -> None:
        if current is not None:
            line, at, from_me, sender = current
            messages.append(ChatMessage(line=line, at=at, from_me=from_me, sender=sender,
                                        text="\n".join(body).strip()))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        match = HEADER.match(line)
        if match is None:
            if current is not None:
                body.append(line)
            elif line.strip() and not in_broken:
                errors.append(ChatError(number, _(
                    "This line belongs to no message: a message starts with “YYYY-MM-DD HH:MM:SS sender”")))
            continue
        close()
        current, body, in_broken = None, [], True
        day, clock, sender = match.groups()
        at = _local_time(day, clock)
        if at is None:
            errors.append(ChatError(number, _("No such time: {value}", value=f"{day} {clock}")))
            continue
        from_me = parties.from_me(sender)
        if from_me is None:
            errors.append(ChatError(number, _("Unknown sender {sender}: not the customer ({theirs}) nor us ({ours})",
                                              sender=sender[:40],
                                              theirs=" / ".join(sorted(parties.theirs)),
                                              ours=" / ".join(sorted(parties.ours - set(ME))))))
            continue
        current, in_broken = (number, at, from_me, sender), False
    close()
    return messages, errors


def parse_csv(text: str) -> tuple[list[ChatMessage], list[ChatError]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in CSV_REQUIRED if name not in (reader.fieldnames or [])]
    if missing:
        return [], [ChatError(1, _("The CSV needs the columns {columns}", columns=", ".join(missing)))]
    messages: list[ChatMessage] = []
    errors: list[ChatError] = []
    for row in reader:
        number = reader.line_num
        when = (row.get("StrTime") or "").strip()
        parts = when.split()
        at = _local_time(parts[0], parts[1]) if len(parts) == 2 else None
        if at is None:
            errors.append(ChatError(number, _("No such time: {value}", value=when[:40])))
            continue
        is_sender = (row.get("IsSender") or "").strip()
        if is_sender not in ("0", "1"):
            errors.append(ChatError(number, _("IsSender must be 1 (our account) or 0 (the customer), not {value}",
                                              value=is_sender[:20])))
            continue
        kind = CSV_TYPES.get((row.get("Type") or "1").strip(), "[其他消息]")
        content = (row.get("StrContent") or "").strip()
        text_shown = content if not kind else (kind if kind != "[链接或文件]" or not content else f"{kind} {content}")
        sender = (row.get("NickName") or row.get("Sender") or "").strip()
        messages.append(ChatMessage(line=number, at=at, from_me=is_sender == "1", sender=sender, text=text_shown))
    return messages, errors


def looks_like_csv(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    return all(name in first for name in CSV_REQUIRED)


def _known_keys(session: Session, customer_id: int) -> set[str]:
    keys: set[str] = set()
    for details in session.scalars(select(Touch.details).where(Touch.customer_id == customer_id,
                                                               Touch.kind == TouchKind.chat.value)):
        if details and details.get("via") == VIA:
            keys.update(details.get("chat_keys", []))
    return keys


def _account_for(session: Session, customer: Customer, account_id: int | None, viewer: Viewer) -> Account:
    friendships = [f for f in service.load_friendships(session, customer_ids=[customer.id]).get(customer.id, [])
                   if viewer.can_see_account(f.account_id)]
    if account_id is None:
        if len(friendships) != 1:
            raise Invalid("Choose the account this chat was exported from", field="account_id")
        account_id = friendships[0].account_id
    elif account_id not in {f.account_id for f in friendships}:
        raise Invalid("This customer is not a friend of account {account_id}", field="account_id",
                      account_id=account_id)
    account = session.get(Account, account_id)
    assert account is not None  # a friendship points at it
    return account


def import_chat(session: Session, *, customer_id: int, data: bytes, filename: str, viewer: Viewer,
                account_id: int | None = None, dry_run: bool = False) -> ChatImportResult:
    """Check the whole export, then add its new messages to the customer's timeline (caller commits)."""
    if viewer.role == "service":
        raise Invalid("Service staff cannot import chats; ask an operator")
    customer = service.get_customer(session, customer_id=customer_id, viewer=viewer)
    account = _account_for(session, customer, account_id, viewer)
    text = decode(data)
    if not text.strip():
        raise Invalid("The file is empty")
    if looks_like_csv(text):
        messages, errors = parse_csv(text)
    else:
        messages, errors = parse_text(text, _parties(session, customer, account))
    if errors:
        raise ChatInvalid(errors[:MAX_REPORTED], total=len(errors))
    if not messages:
        raise Invalid("No messages found in this file")
    known = _known_keys(session, customer.id)
    fresh: dict[str, list[ChatMessage]] = defaultdict(list)
    seen: set[str] = set()
    for message in sorted(messages, key=lambda m: (m.at, m.line)):
        if message.key in known or message.key in seen:
            continue
        seen.add(message.key)
        fresh[message.at.astimezone(local_zone()).date().isoformat()].append(message)
    result = ChatImportResult(messages=len(messages), new_messages=len(seen), days=len(fresh), dry_run=dry_run)
    if dry_run or not fresh:
        return result
    names = {True: account.display_name, False: customer.name}
    for day, day_messages in sorted(fresh.items()):
        transcript = "\n".join(f"{m.at.astimezone(local_zone()):%H:%M} {names[m.from_me]}：{m.text}"
                               for m in day_messages)
        touch = Touch(customer_id=customer.id, account_id=account.id, user_id=viewer.user_id,
                      kind=TouchKind.chat.value, content=transcript, occurred_at=day_messages[0].at,
                      details={"via": VIA, "file": filename[:200], "day": day, "messages": len(day_messages),
                               "chat_keys": [m.key for m in day_messages]})
        session.add(touch)
        session.flush()
        result.touch_ids.append(touch.id)
    team_service.record_audit(session, actor=viewer, action="import", entity_type="chat", entity_id=customer.id,
                              summary=filename[:200], after={**result.summary(), "account_id": account.id})
    service.refresh_computed(session, customer=customer)
    return result
