"""The platform's refusal, shared by the virtual corp and its 微信客服 desk."""

from __future__ import annotations


class ApiError(Exception):
    """A WeCom refusal: ``errcode`` as the platform numbers it, ``errmsg`` its English text.

    Codes are WeCom's global return codes (全局错误码,
    developer.work.weixin.qq.com/document/path/90313) unless a handler names another page.
    """

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
