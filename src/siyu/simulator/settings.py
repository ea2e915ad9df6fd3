"""The simulator's own view of the WeCom settings: the same ``SIYU_WECOM_*`` variables Siyu reads.

Read here rather than through ``siyu.core.settings`` so the simulator stays outside the
product: it only shares the values an operator would type into both WeCom and Siyu.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from siyu.simulator.mp import VirtualMp

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


DEFAULT_MP_APPID = "wxSIYUSIMULATOR01"
DEFAULT_MP_SECRET = "siyu-simulated-mp-secret"  # noqa: S105 - a simulator's well-known default
DEFAULT_MP_TOKEN = "siyu-mp-token"  # noqa: S105


class MpSimulatorSettings(BaseSettings):
    """The 公众号's: the same ``SIYU_MP_*`` variables Siyu reads."""

    model_config = SettingsConfigDict(env_prefix="SIYU_MP_", env_file=".env", extra="ignore")

    appid: str = ""
    token: str = ""
    aes_key: str = ""
    secret: str = ""


def load_mp() -> MpSimulatorSettings:
    return MpSimulatorSettings()


def virtual_mp() -> VirtualMp:
    """A 公众号 with the ``SIYU_MP_*`` settings (or the simulator's defaults), so both sides agree."""
    from siyu.simulator.mp import VirtualMp

    configured = load_mp()
    return VirtualMp(appid=configured.appid or DEFAULT_MP_APPID, secret=configured.secret or DEFAULT_MP_SECRET,
                     token=configured.token or DEFAULT_MP_TOKEN, aes_key=configured.aes_key)
