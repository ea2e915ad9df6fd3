"""All configuration comes from the environment (prefix ``SIYU_``) through one class.

Every field here is listed in the README's settings table; a test keeps the two in step.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIYU_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///./siyu.db",
        description="SQLAlchemy URL. SQLite file by default; postgresql+psycopg://… for PostgreSQL.",
    )
    secret_key: str = Field(
        "",
        description="Signs session cookies and API tokens. When empty, a random key is generated "
        "once and kept in `.siyu-secret` in the working directory; set it when running several hosts.",
    )
    admin_password: str = Field(
        "", description="Password of the demo's `admin` user; a random one is generated and printed when empty."
    )
    token_ttl_minutes: int = Field(60, description="Lifetime of API bearer tokens.")
    session_ttl_hours: int = Field(12, description="Lifetime of a console login session.")
    cookie_secure: bool = Field(False, description="Send the session cookie over HTTPS only (set in production).")
    login_max_failures: int = Field(
        5, description="Failed logins for one username from one address before that address is locked out of it."
    )
    login_max_failures_any_address: int = Field(
        20, description="Failed logins for one username from all addresses together before it is locked, except "
        "from addresses the user has logged in from before."
    )
    login_lock_minutes: int = Field(
        15, description="How long a lock lasts; failures older than this are forgotten. An admin can unlock at once."
    )
    max_body_bytes: int = Field(
        1024 * 1024, description="Largest request body (bytes) of a JSON or form request; larger ones get 413 "
        "unread. Uploads (imports, chat exports, coupon codes) have their own limits."
    )
    locale: str = Field("zh-CN", description="Default console language: `zh-CN` or `en`.")
    timezone: str = Field("Asia/Shanghai", description="Time zone used to show times (stored in UTC).")
    static_dir: str = Field(
        "", description="Folder with the npm-installed front-end assets; defaults to the package's web/static."
    )
    search_rate_per_minute: int = Field(
        60, description="Searches of the customer list, API and sidebar one user may run per minute (0: no limit); "
        "more are answered 429."
    )
    list_exact_count_limit: int = Field(
        10000, description="Customer lists count exactly up to this many rows, then show an estimate."
    )
    data_dir: str = Field(
        "./siyu-data", description="Local scratch folder: the job queues' SQLite files (without Redis). Uploads "
        "and exports are kept in the database, shared by every host."
    )
    redis_url: str = Field(
        "", description="Redis URL (redis://127.0.0.1:6379/0) for the job queues; needed when app and workers "
        "run on several hosts. Empty: SQLite queue files in the data folder."
    )
    queue_prefix: str = Field(
        "siyu", description="Prefix of the job queues' names in Redis, so several installations (or test runs) "
        "can share one Redis."
    )
    job_lease_seconds: int = Field(
        120, ge=2, description="A running job whose worker has not reported for this long is taken as dead: "
        "the sweep resumes it (or fails it with the reason once its retries are used up)."
    )
    worker_in_process: bool = Field(
        False, description="Run job workers inside the web process (set by `siyu serve`/`siyu demo` unless "
        "`--no-worker`); run `siyu worker` separately when this is off."
    )

    wecom_corp_id: str = Field("", description="WeCom corp id (企业ID); callbacks are refused until it is set.")
    wecom_token: str = Field("", description="Token of the WeCom callback configuration (signs every callback).")
    wecom_aes_key: str = Field("", description="EncodingAESKey of the callback configuration (43 characters).")
    wecom_secret: str = Field("", description="Secret of the customer-contact (客户联系) app, for API calls.")
    wecom_kf_secret: str = Field("", description="Secret of the app that manages 微信客服 (kf/* calls); "
                                 "empty: the customer-contact Secret is used.")
    wecom_api_base: str = Field("https://qyapi.weixin.qq.com/cgi-bin/",
                                description="WeCom server API base; point it at the simulator for demos and tests.")
    wecom_agent_id: str = Field("", description="AgentId of the self-built app whose chat-toolbar page is the sidebar; "
                                "with the Secret, the sidebar signs the JS-SDK's agentConfig for sendChatMessage.")
    public_url: str = Field("http://127.0.0.1:8000", description="The console's address as people open it: links in "
                            "WeCom app messages (the weekly reports) point there.")
    wecom_archive_source: str = Field(
        "", description="Where the chat archive (会话存档) is pulled from: `sdk` (the official finance SDK through "
        "the `archive` extra, pyweworkfinance), `simulator` (the simulator's stand-in for GetChatData), or empty: off.")
    wecom_archive_secret: str = Field("", description="Secret of the chat-archive (会话内容存档) app, for the SDK; "
                                      "empty: the customer-contact Secret is used.")
    wecom_archive_private_keys: str = Field(
        "", description="The corp's RSA private keys of the chat archive, one per public-key version, as JSON: "
        '`{"1": "/etc/siyu/archive_v1.pem"}` (a PEM file path, or the PEM text itself).')
    wecom_archive_sdk_library: str = Field(
        "", description="Path of WeCom's libWeWorkFinanceSdk_C.so for the SDK source; empty: the one pyweworkfinance "
        "ships.")
    # 公众号 (WeChat Official Account): 开发 › 基本配置 of the account's admin console.
    mp_appid: str = Field("", description="AppID (开发者ID) of the 公众号; its callbacks are refused until it is set.")
    mp_token: str = Field("", description="Token of the 公众号's server configuration (signs every callback).")
    mp_aes_key: str = Field("", description="EncodingAESKey of the 公众号's server configuration (43 characters; "
                            "safe mode).")
    mp_secret: str = Field("", description="AppSecret of the 公众号, for its API (followers, QR codes, "
                           "customer-service messages).")
    mp_api_base: str = Field("https://api.weixin.qq.com/cgi-bin/",
                             description="公众号 API base; point it at the simulator's /mp/cgi-bin/ for demos and "
                             "tests.")

    def data_path(self, *parts: str) -> Path:
        """A folder under the data folder, created on first use."""
        path = Path(self.data_dir).resolve().joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        return _local_secret()


def _local_secret() -> str:
    # A per-installation key kept out of the repository: generated on first use.
    path = Path(".siyu-secret")
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@lru_cache
def get_settings() -> Settings:
    return Settings()


def local_zone() -> ZoneInfo:
    """The time zone people see times in (everything is stored in UTC)."""
    return ZoneInfo(get_settings().timezone)


def local_today() -> date:
    """Today where the people are: in Shanghai the day starts at 16:00 UTC."""
    return datetime.now(local_zone()).date()
