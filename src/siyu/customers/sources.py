"""Where a customer came from, in words: the codes Siyu itself stores in ``Customer.source``.

Sources typed by people or imported (门店, 包裹卡 …) are shown as written; the codes the platforms'
connectors and the console store are translated wherever a source shows (pages, exports).
"""

from __future__ import annotations

from siyu.core.i18n import N_, _

SOURCE_LABELS: dict[str, str] = {
    "wecom": N_("source.wecom"),  # a WeCom friend-add callback or the contact sync
    "wecom_kf": N_("source.wecom_kf"),  # a 微信客服 conversation
    "mp": N_("source.mp"),  # a 公众号 follower
    "personal": N_("source.personal"),  # a personal-WeChat friend added by hand
    "import": N_("source.import"),
    "console": N_("source.console"),
}


def source_label(value: str | None) -> str:
    """The source as people read it (a stored code translated, anything else as written)."""
    if not value:
        return ""
    known = SOURCE_LABELS.get(value)
    return _(known) if known else value
