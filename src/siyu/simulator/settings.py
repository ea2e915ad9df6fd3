"""The simulator's own view of the WeCom settings: the same ``SIYU_WECOM_*`` variables Siyu reads.

Read here rather than through ``siyu.core.settings`` so the simulator stays outside the
product: it only shares the values an operator would type into both WeCom and Siyu.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CORP_ID = "wwSIYUSIMULATOR0"
DEFAULT_SECRET = "siyu-simulator-secret"  # noqa: S105 - a simulator's well-known default


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIYU_WECOM_", env_file=".env", extra="ignore")

    corp_id: str = ""
    token: str = ""
    aes_key: str = ""
    secret: str = ""


def load() -> SimulatorSettings:
    return SimulatorSettings()
