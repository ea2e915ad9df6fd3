"""The 公众号 connection's settings: from the environment, or saved from the console (as WeCom's).

An environment variable always wins; otherwise what an administrator saved is used. The
callback reads the connection hundreds of times a second, so it may use a saved row read a
few seconds ago (``recent_ok``), as the WeCom callback does.
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

SETTING_KEY = "mp_connection"
FIELDS = ("appid", "token", "aes_key", "secret", "api_base")
SECRET_FIELDS = ("token", "aes_key", "secret")
AES_KEY_LENGTH = 43  # 基本配置: EncodingAESKey "43位字符"
RECENT_ENOUGH_SECONDS = 5.0
_recently_saved: weakref.WeakKeyDictionary[Any, tuple[float, dict[str, Any]]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class MpConfig:
    appid: str = ""
    token: str = ""
    aes_key: str = ""
    secret: str = ""
    api_base: str = ""
    source: dict[str, str] = field(default_factory=dict)

    @property
    def can_receive(self) -> bool:
        """Plain mode needs the appid and token; safe mode the EncodingAESKey too (checked per callback)."""
        return bool(self.appid and self.token)

    @property
    def can_send(self) -> bool:
        return bool(self.appid and self.secret)


def _saved(session: Session, *, recent_ok: bool) -> dict[str, Any]:
    bind = session.get_bind().engine  # a session on a connection (the callbacks'): its engine
    remembered = _recently_saved.get(bind) if recent_ok else None
    if remembered and time.monotonic() - remembered[0] < RECENT_ENOUGH_SECONDS:
        return remembered[1]
    row = session.get(AppSetting, SETTING_KEY)
    saved = dict(row.value) if row else {}
    if recent_ok:
        _recently_saved[bind] = (time.monotonic(), saved)
    return saved


def effective(session: Session, *, recent_ok: bool = False) -> MpConfig:
    settings = get_settings()
    saved = _saved(session, recent_ok=recent_ok)
    values: dict[str, str] = {}
    source: dict[str, str] = {}
    for name in FIELDS:
        env_value = getattr(settings, f"mp_{name}")
        if f"mp_{name}" in settings.model_fields_set and env_value:
            values[name], source[name] = env_value, "env"
        elif saved.get(name):
            values[name], source[name] = str(saved[name]), "console"
        else:
            values[name], source[name] = env_value, ""
    return MpConfig(**values, source=source)


def valid_aes_key(aes_key: str) -> bool:
    try:
        return len(aes_key) == AES_KEY_LENGTH and len(base64.b64decode(aes_key + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def save(session: Session, *, values: dict[str, str], actor: Viewer) -> MpConfig:
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
    if saved.get("aes_key") and not valid_aes_key(saved["aes_key"]):
        raise Invalid("The EncodingAESKey must be the 43 characters the Official Account console generated",
                      field="aes_key")
    if saved.get("api_base") and not str(saved["api_base"]).startswith(("https://", "http://")):
        raise Invalid("The API base must be an http(s) URL", field="api_base")
    if row is None:
        session.add(AppSetting(key=SETTING_KEY, value=saved))
    else:
        row.value = saved
    bind = session.get_bind().engine  # a session on a connection (the callbacks'): its engine
    _recently_saved.pop(bind, None)
    event.listen(session, "after_commit", lambda _session: _recently_saved.pop(bind, None), once=True)
    team_service.record_audit(session, actor=actor, action="update", entity_type="mp_connection",
                              summary=", ".join(changed), after={"changed": changed})
    session.flush()
    return effective(session)
