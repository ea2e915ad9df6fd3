"""The WeCom connection's settings: from the environment, or saved from the console.

An environment variable always wins (operations can pin a value); otherwise the value an
administrator saved on the connection page is used. Secrets are never shown back in full.
"""

from __future__ import annotations

import base64
import binascii
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from siyu.core.errors import Invalid
from siyu.core.models import AppSetting
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer
from siyu.team import service as team_service

SETTING_KEY = "wecom_connection"
FIELDS = ("corp_id", "token", "aes_key", "secret", "kf_secret", "api_base")
SECRET_FIELDS = ("token", "aes_key", "secret", "kf_secret")


@dataclass(frozen=True)
class WecomConfig:
    corp_id: str = ""
    token: str = ""
    aes_key: str = ""
    secret: str = ""
    kf_secret: str = ""  # the app that manages 微信客服; empty: ``secret`` is used for kf/* calls too
    api_base: str = ""
    source: dict[str, str] = field(default_factory=dict)  # field → "env", "console" or ""

    @property
    def can_receive(self) -> bool:
        return bool(self.corp_id and self.token and len(self.aes_key) == 43)


# Callbacks need the connection hundreds of times a second, so they may use the saved row as
# read up to this long ago (per database). A console change reaches this process at once and
# other processes within this time.
RECENT_ENOUGH_SECONDS = 5.0
_recently_saved: weakref.WeakKeyDictionary[Any, tuple[float, dict[str, Any]]] = weakref.WeakKeyDictionary()


def _saved(session: Session, *, recent_ok: bool) -> dict[str, Any]:
    bind = session.get_bind()
    remembered = _recently_saved.get(bind) if recent_ok else None
    if remembered and time.monotonic() - remembered[0] < RECENT_ENOUGH_SECONDS:
        return remembered[1]
    row = session.get(AppSetting, SETTING_KEY)
    saved = dict(row.value) if row else {}
    if recent_ok:  # only those who accept a recent value remember one (never a save not yet committed)
        _recently_saved[bind] = (time.monotonic(), saved)
    return saved


def effective(session: Session, *, recent_ok: bool = False) -> WecomConfig:
    """The connection in force; ``recent_ok`` accepts the saved part as read a few seconds ago."""
    settings = get_settings()
    saved = _saved(session, recent_ok=recent_ok)
    values: dict[str, str] = {}
    source: dict[str, str] = {}
    for name in FIELDS:
        env_value = getattr(settings, f"wecom_{name}")
        env_is_set = f"wecom_{name}" in settings.model_fields_set
        if env_is_set and env_value:
            values[name], source[name] = env_value, "env"
        elif saved.get(name):
            values[name], source[name] = str(saved[name]), "console"
        else:
            values[name], source[name] = env_value, ""
    return WecomConfig(**values, source=source)


def mask(value: str) -> str:
    return "" if not value else "*" * max(0, len(value) - 4) + value[-4:]


def save(session: Session, *, values: dict[str, str], actor: Viewer) -> WecomConfig:
    """Save what the console may set; an empty secret field keeps the saved secret."""
    row = session.get(AppSetting, SETTING_KEY)
    saved = dict(row.value) if row else {}
    changed = []
    for name in FIELDS:
        value = values.get(name, "").strip()
        if name in SECRET_FIELDS and not value:
            continue
        if value != saved.get(name, ""):
            changed.append(name)
        saved[name] = value
    aes_key = saved.get("aes_key", "")
    if aes_key:
        try:
            valid = len(aes_key) == 43 and len(base64.b64decode(aes_key + "=", validate=True)) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise Invalid("The EncodingAESKey must be the 43 characters WeCom generated", field="aes_key")
    api_base = saved.get("api_base", "")
    if api_base and not api_base.startswith(("https://", "http://")):
        raise Invalid("The API base must be an http(s) URL", field="api_base")
    if row is None:
        session.add(AppSetting(key=SETTING_KEY, value=saved))
    else:
        row.value = saved
    bind = session.get_bind()
    _recently_saved.pop(bind, None)
    # Again once committed: a callback may have read the old row in between.
    event.listen(session, "after_commit", lambda _session: _recently_saved.pop(bind, None), once=True)
    # Which fields changed, never their values: the audit log is read by many.
    team_service.record_audit(session, actor=actor, action="update", entity_type="wecom_connection",
                              summary=", ".join(changed), after={"changed": changed})
    session.flush()
    return effective(session)
