"""How a reply leaves Siyu for a WeCom account: the inbox's connector for WeCom members.

Why it is built on 企业群发 (``externalcontact/add_msg_template``): WeCom's server API has no
call that posts into a member's private chat with a customer. What it offers a self-built
客户联系 app is a mass send created *for* a member — here with exactly one recipient
(``chat_type`` single, ``external_userid`` [the customer], ``sender`` the member), or one
group chat (``chat_type`` group, ``chat_id_list`` [the chat]) for a group conversation.
WeCom answers with a ``msgid`` once it has created the task; that is what "accepted" means
here, and the ``msgid`` is kept as the message's platform id. The real platform then asks
the member to confirm the send in their WeCom client, and counts it against how many mass
messages a customer may receive (see the README, *How replies leave Siyu*); whether the
customer got it is only known later: ``wecom.send_results`` reads ``get_groupmsg_send_result``
back for the ``msgid`` and marks the reply delivered, or failed with WeCom's reason.
(微信客服 accounts are not WeCom members: ``siyu.wecom.kf`` sends theirs through ``kf/send_msg``.)

Failures keep the client's classification: a busy platform (-1, 45009, 45033 …) or one that
could not be reached before anything was sent is a *retryable* ``DeliveryError`` — the
delivery job comes back after 10, 20, 40, 80 s, and the client itself does not wait inside
the job's transaction (one try per attempt); anything else is permanent, with WeCom's errcode
and errmsg in the reason. An answer lost *after* WeCom may have created the task is permanent
too: sending again could reach the customer twice.

``register()`` is called by the app factory and ``siyu worker``; the connector answers for
WeCom accounts only while the corp id and Secret are configured (read at each delivery, so
saving them on the console takes effect at once), otherwise the inbox's "no connection"
failure stands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, object_session

from siyu.accounts.models import Account, AccountKind
from siyu.core.db import transaction, utcnow
from siyu.core.i18n import N_, _
from siyu.inbox import delivery
from siyu.inbox.delivery import Accepted, DeliveryError, Outgoing
from siyu.wecom import config, send_results
from siyu.wecom.client import (
    MASS_SEND_TEXT_BYTES,
    RetryPolicy,
    TokenStorage,
    WecomApi,
    WecomApiError,
    client_for,
    shared_storage,
)
from siyu.wecom.config import WecomConfig

# One try per delivery attempt: the delivery job's own backoff waits out a busy platform.
DELIVERY_POLICY = RetryPolicy(attempts=1)
# The platform's answers that mean "this customer (or chat) cannot be reached by this member".
NOT_REACHABLE = frozenset({
    40096,  # invalid external_userid
    41048,  # no customer to send to (every recipient failed)
    84061,  # not an external contact of the member
})
MEMBER_GONE = frozenset({60111, 40003})  # userid not found / invalid userid

NO_EXTERNAL_USERID = N_("This customer has no WeCom external user ID, so WeCom cannot deliver to them")
NO_MEMBER = N_("This account has no WeCom member user ID; set it on the account first")
NOT_A_CONTACT = N_("The customer is not (or no longer) a WeCom contact of this account's member")
MEMBER_UNKNOWN = N_("WeCom does not know the member {userid} (left, or a wrong user ID): {detail}")
MAYBE_SENT = N_("WeCom may have got it but its answer was lost; not sent again, to never send twice: {detail}")
TOO_LONG = N_("Too long for WeCom: a message may have at most 4000 bytes (about 1300 Chinese characters)")


@dataclass(frozen=True)
class WecomConnector:
    api: WecomApi

    def send_text(self, outgoing: Outgoing) -> Accepted:
        account = outgoing.account
        if not account.wecom_userid:
            raise DeliveryError(NO_MEMBER, permanent=True)
        if len(outgoing.text.encode("utf-8")) > MASS_SEND_TEXT_BYTES:
            raise DeliveryError(TOO_LONG, permanent=True)
        external = outgoing.customer.wecom_external_userid if outgoing.customer is not None else None
        if not outgoing.group_key and not external:
            raise DeliveryError(NO_EXTERNAL_USERID, permanent=True)
        counted = _check_quota(outgoing)  # the customer's mass-send quota: refused now, not as WeCom's status 3
        try:
            if outgoing.group_key:  # a group conversation: the group chat, by its chat id
                target = outgoing.group_key
                answer = self.api.create_mass_send(sender=account.wecom_userid, text=outgoing.text,
                                                   chat_type="group", chat_ids=[target])
            else:
                target = str(external)
                answer = self.api.create_mass_send(sender=account.wecom_userid, text=outgoing.text,
                                                   chat_type="single", external_userids=[target])
        except WecomApiError as exc:
            raise _delivery_error(exc, member=account.wecom_userid) from exc
        if target in answer["fail_list"] or not answer["msgid"]:
            raise DeliveryError(NOT_A_CONTACT, permanent=True)
        counted()  # WeCom created the send: it counts, in the delivery's own transaction
        msgid = str(answer["msgid"])
        session = object_session(account)
        if session is not None:  # read back later whether the member sent it and the customer got it
            send_results.track(session, message_id=outgoing.message_id, msgid=msgid, sender=account.wecom_userid,
                               target=target)
        return Accepted(msgid, confirmed_later=session is not None)


def _check_quota(outgoing: Outgoing) -> Callable[[], None]:
    """Check this reply against the one send-quota ledger (one customer; group chats are not counted here).

    Refused over quota, with the ledger's reason. Nothing is written before WeCom answers (on SQLite a
    write would hold the database's lock across the call); the returned function records the send once
    WeCom created it. Two replies at the same instant may both take a customer's last message, which
    WeCom then reports afterwards, as before the ledger existed.
    """
    session = object_session(outgoing.account)
    customer = outgoing.customer
    if session is None or customer is None or outgoing.group_key:
        return lambda: None
    from siyu.sends import service as sends
    from siyu.sends.models import SendSource

    at = utcnow()
    grant = sends.check(session, [customer.id], at)
    if customer.id in grant.refused:
        raise DeliveryError(grant.refused[customer.id], permanent=True)

    def record() -> None:
        sends.record(session, [customer.id], at, source=SendSource.inbox, ref=f"message:{outgoing.message_id}")

    return record


def _delivery_error(exc: WecomApiError, *, member: str) -> DeliveryError:
    """WeCom's refusal as the reason shown on the message (in the worker's language)."""
    said = exc.display()
    if exc.retryable:
        return DeliveryError(_("WeCom is busy; trying again shortly ({detail})", detail=said))
    if exc.errcode in NOT_REACHABLE:
        return DeliveryError(f"{_(NOT_A_CONTACT)} ({said})", permanent=True)
    if exc.errcode in MEMBER_GONE:
        return DeliveryError(_(MEMBER_UNKNOWN, userid=member, detail=said), permanent=True)
    if exc.errcode is None:  # the answer was lost after WeCom may have acted: never send twice
        return DeliveryError(_(MAYBE_SENT, detail=said), permanent=True)
    return DeliveryError(said, permanent=True)


# ---------------------------------------------------------------- registration

_local = threading.local()  # each worker thread keeps its own client (and HTTP connection pool)


def _api(cfg: WecomConfig, *, kf: bool = False) -> WecomApi:
    storage: TokenStorage = shared_storage()
    secret = (cfg.kf_secret or cfg.secret) if kf else cfg.secret
    key = (cfg.corp_id, secret, cfg.api_base, id(storage))
    slot = "kf_client" if kf else "client"
    cached: tuple[tuple[str, str, str, int], WecomApi] | None = getattr(_local, slot, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    api = client_for(cfg, storage=storage, policy=DELIVERY_POLICY, kf=kf)
    setattr(_local, slot, (key, api))
    return api


def kf_api(account: Account) -> WecomApi | None:
    """The API for 微信客服 sends (the kf Secret, else the customer-contact one), or None unconfigured."""
    cfg = _effective(account)
    if not cfg.corp_id or not (cfg.kf_secret or cfg.secret):
        return None
    return _api(cfg, kf=True)


def _effective(account: Account) -> WecomConfig:
    session: Session | None = object_session(account)
    if session is not None:
        return config.effective(session)
    with transaction() as fresh:
        return config.effective(fresh)


def connector_for(account: Account) -> WecomConnector | None:
    """The delivery registry's factory: WeCom accounts, while the corp id and Secret are set."""
    if account.kind != AccountKind.wecom.value:
        return None
    cfg = _effective(account)
    if not cfg.corp_id or not cfg.secret:
        return None
    return WecomConnector(_api(cfg))


def register() -> None:
    """Offer the WeCom member connector to the inbox's delivery (idempotent; ``wecom.connectors`` adds 微信客服's)."""
    delivery.register(connector_for)


def unregister() -> None:
    delivery.unregister(connector_for)
