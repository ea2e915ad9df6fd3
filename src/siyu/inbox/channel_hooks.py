"""What a channel adds to every reply: may it go out now, and who must know a person took the conversation.

Channels (微信客服 in ``wecom.kf``, 公众号 in ``mp.service``) register here at import; ``inbox.service``
asks here when an agent replies or takes a conversation. A module of its own, below both the
service and ``inbox.delivery``, so neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.inbox.models import Conversation

# A channel's rules for whether a reply may go out now (e.g. 微信客服's 48-hour window): checked when
# an agent replies, so a reply the platform would refuse is refused at once, with the reason.
ReplyCheck = Callable[[Session, Conversation, Account], None]
_reply_checks: list[ReplyCheck] = []
# Who else must know that a person in Siyu took a conversation (e.g. 微信客服's session state).
TakenListener = Callable[[Session, Conversation], None]
_taken_listeners: list[TakenListener] = []


def register_reply_check(check: ReplyCheck) -> None:
    """``check`` raises a domain error (shown to the agent) when a reply may not be sent now."""
    if check not in _reply_checks:
        _reply_checks.append(check)


def register_taken_listener(listener: TakenListener) -> None:
    if listener not in _taken_listeners:
        _taken_listeners.append(listener)


def check_reply(session: Session, conversation: Conversation) -> None:
    account = session.get(Account, conversation.account_id)
    if account is None:
        return
    for check in _reply_checks:
        check(session, conversation, account)


def taken(session: Session, conversation: Conversation) -> None:
    for listener in _taken_listeners:
        listener(session, conversation)
