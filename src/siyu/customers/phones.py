"""Phone numbers as customers are matched by them: a mainland mobile as its 11 digits.

Below the services that read numbers (imports, exports, orders and their webhooks), so each imports it
without importing another's service.
"""

from __future__ import annotations

import re
import unicodedata

_PHONE_JUNK = re.compile(r"[\s\-()（）.]")
_MOBILE = re.compile(r"1\d{10}")


def normalise_mobile(raw: str) -> str | None:
    """A mainland mobile number as 11 digits (``+86 138-1234-5678`` → ``13812345678``), or None."""
    text = _PHONE_JUNK.sub("", unicodedata.normalize("NFKC", raw))
    if text.startswith("+86"):
        text = text[3:]
    elif text.startswith("0086"):
        text = text[4:]
    elif len(text) == 13 and text.startswith("86"):
        text = text[2:]
    return text if _MOBILE.fullmatch(text) else None
