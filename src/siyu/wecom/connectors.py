"""Every WeCom connector offered to the inbox's delivery at startup: members (``wecom.connector``) and
微信客服 (``wecom.kf``). Called by the app factory and ``siyu worker``; a module above both, so the
member connector and 微信客服 (which borrows the member connector's API cache) never import each other.
"""

from __future__ import annotations

from siyu.wecom import connector, kf


def register() -> None:
    """Offer the WeCom connectors (members, 微信客服) to the inbox's delivery (idempotent)."""
    connector.register()
    kf.register()


def unregister() -> None:
    connector.unregister()
    kf.unregister()
