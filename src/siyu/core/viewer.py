"""Who is asking: the identity and data scope that every service call receives.

Phones are the one datum some roles (客服) may not see. A masked number keeps its first three
and last four digits (``136****4321``); phone-like text inside free text (descriptions, notes,
timeline entries) is masked the same way for those roles, so a number typed into a remark is
hidden as well as the phone field. Search follows the same rule (see ``customers.service``):
what a viewer cannot see is not a search key for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Phone-like text: a run of at least 7 digits (landlines without area code, mobiles), or 10 or
# more digits written in groups with single spaces or hyphens ("136 1234 4321", "0571-8888-6666").
# Dates ("1990-03-15", 8 digits in groups) stay readable.
PHONE_LIKE = re.compile(r"(?<!\d)(?:\+?\d(?:[ -]?\d){9,}|\d{7,})(?!\d)")
# The same runs as PostgreSQL's regular expressions write them (search hides them for these roles).
PHONE_LIKE_POSTGRES = r"\d(?:[ -]?\d){9,}|\d{7,}"
MASK = "****"


def mask_phone(number: str) -> str:
    """``13612344321`` → ``136****4321``; too short to keep anything → ``****``."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if len(digits) >= 7:
        return f"{digits[:3]}{MASK}{digits[-4:]}"
    return MASK


def mask_phones_in(text: str) -> str:
    """Free text with every phone-like run masked as ``mask_phone`` masks a phone."""
    return PHONE_LIKE.sub(lambda found: mask_phone(found.group(0)), text) if text else text


def hide_phones_in(text: str | None) -> str:
    """Free text with every phone-like run removed: what a search may match for a masked viewer."""
    return PHONE_LIKE.sub(MASK, text) if text else ""


def restore_masked(new: str, old: str) -> str:
    """An edit of masked text, with the masks the editor left untouched back to the numbers they hide.

    A viewer who sees ``电话 136****4321`` and edits the text around it saves the real number again,
    never the mask; a mask they deleted stays deleted, and a mask they typed for another number
    stays a mask (it matches no original).
    """
    originals: dict[str, list[str]] = {}
    for found in PHONE_LIKE.finditer(old or ""):
        originals.setdefault(mask_phone(found.group(0)), []).append(found.group(0))
    if not originals:
        return new

    def back(found: re.Match[str]) -> str:
        queue = originals.get(found.group(0))
        return queue.pop(0) if queue else found.group(0)

    return re.sub(r"\d{3}\*{4}\d{4}", back, new)


@dataclass(frozen=True)
class Viewer:
    user_id: int | None
    username: str
    role: str
    sees_all_accounts: bool
    account_ids: frozenset[int] = field(default_factory=frozenset)
    may_see_phones: bool = True

    def can_see_account(self, account_id: int) -> bool:
        return self.sees_all_accounts or account_id in self.account_ids

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def phone(self, number: str) -> str:
        """A phone number as this viewer may see it."""
        return number if self.may_see_phones else mask_phone(number)

    def text(self, value: str) -> str:
        """Free text (description, notes, timeline) as this viewer may see it."""
        return value if self.may_see_phones else mask_phones_in(value)


SYSTEM = Viewer(user_id=None, username="system", role="admin", sees_all_accounts=True)
