"""The WeCom connection's settings: from the environment, or saved from the console.

An environment variable always wins (operations can pin a value); otherwise the value an
administrator saved on the connection page is used. Secrets are never shown back in full.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from siyu.core.errors import Invalid
from siyu.core.models import AppSetting
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer
from siyu.team import service as team_service

SETTING_KEY = "wecom_connection"
FIELDS = ("corp_id", "token", "aes_key", "secret", "api_base")
SECRET_FIELDS = ("token", "aes_key", "secret")


@dataclass(frozen=True)
class WecomConfig:
    corp_id: str = ""
    token: str = ""
    aes_key: str = ""
    secret: str = ""
    api_base: str = ""
    source: dict[str, str] = field(default_factory=dict)  # field → "env", "console" or ""

    @property
    def can_receive(self) -> bool:
        return bool(self.corp_id and self.token and len(self.aes_key) == 43)


def effective(session: Session) -> WecomConfig:
    settings = get_settings()
    row = session.get(AppSetting, SETTING_KEY)
    saved = dict(row.value) if row else {}
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
    # Which fields changed, never their values: the audit log is read by many.
    team_service.record_audit(session, actor=actor, action="update", entity_type="wecom_connection",
                              summary=", ".join(changed), after={"changed": changed})
    session.flush()
    return effective(session)
