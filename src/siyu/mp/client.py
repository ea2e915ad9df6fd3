"""The 公众号 API through wechatpy's MP client, pointed at ``SIYU_MP_API_BASE`` (the platform or the simulator).

wechatpy's ``WeChatClient`` fetches its access token from api.weixin.qq.com whatever the base
URL, so the token call follows the base here too. One client per appid, secret and base is
kept, so its access token (valid 7,200 s, 获取Access token) is fetched once, not per call.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session
from wechatpy.client import WeChatClient

from siyu.mp import config as mp_config

TIMEOUT_SECONDS = 10


class MpClient(WeChatClient):
    def __init__(self, appid: str, secret: str, *, base_url: str) -> None:
        super().__init__(appid, secret, timeout=TIMEOUT_SECONDS)
        self.API_BASE_URL = base_url if base_url.endswith("/") else base_url + "/"

    def fetch_access_token(self) -> Any:
        """获取Access token (Basic_Information/Get_access_token.html): GET token?grant_type=client_credential."""
        return self._fetch_access_token(url=self.API_BASE_URL + "token", params={
            "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})


@lru_cache(maxsize=8)
def client(appid: str, secret: str, base_url: str) -> MpClient:
    return MpClient(appid, secret, base_url=base_url)


def api_for(session: Session) -> MpClient | None:
    """The configured 公众号's client, or None while its appid or AppSecret is missing."""
    config = mp_config.effective(session, recent_ok=True)
    if not config.can_send:
        return None
    return client(config.appid, config.secret, config.api_base or "https://api.weixin.qq.com/cgi-bin/")
