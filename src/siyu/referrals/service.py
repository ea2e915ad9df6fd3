"""Referral rules (老带新, 任务宝): invite codes, the anti-fraud credit ledger, rewards, the leaderboard.

Why it is shaped this way: peers' fission counts drift — MoChat's changelog shows invite counts
going to −1 when friends delete. Here the count is an append-only ledger (``LedgerEntry``): a
credit (+1) only for a genuinely new customer, a reversal (−1) only for a credit not yet reversed,
each at most once per referee (unique keys), and ``Standing.invites`` — what the leaderboard
reads — moves in the same transaction with a guarded UPDATE that cannot pass zero. ``balance``
recomputes every referrer's count from the ledger, so anyone can check the two agree.

The rules a credit passes, in order (the first that fails is written on the referee's timeline):
the programme is running; the referee is not the referrer; the referee did not invite the
referrer (a loop — A invites B, B invites A — gives one credit, the first); the referee was not
credited to anyone before (one referee credits one referrer, across programmes); the referee is
genuinely new (came into Siyu with this add, no friendship with any account before it).
A referee who deletes every account within the programme's ``reversal_days`` reverses the credit;
rewards already given for a tier stay given (and a tier is never given twice).

Entry points for other domains: ``channels.service.on_friends_added`` hands over adds whose
state is an invite code's; ``channels.service.on_friend_removed`` hands over deletions;
``orders.service`` hands over buyers (``on_purchases``: a referee's first order rewards the
referrer).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind
from siyu.core.db import dialect_insert, utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.viewer import Viewer
from siyu.coupons import service as coupons_service
from siyu.coupons.models import CouponBatch, IssuedVia
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.orders.models import COUNTED_STATUSES, Order
from siyu.referrals.models import (
    STATE_MAX_CHARS,
    STATE_PREFIX,
    EntryKind,
    InviteCode,
    LedgerEntry,
    ProgrammeStatus,
    ReferralProgramme,
    Reward,
    Standing,
)
from siyu.referrals.schemas import ProgrammeIn
from siyu.team import service as team_service

MANAGING_ROLES = ("admin", "planner")
# A referee counts as new when Siyu first met them at most this long before the add (the add's event
# may be processed a little after WeCom stamped it).
NEW_WITHIN = timedelta(minutes=30)
LEADERBOARD_SIZE = 50

# Why a friend through an invite code was not credited (shown on the referee's timeline).
REFUSED_ENDED = N_("the referral programme has ended")
REFUSED_SELF = N_("a customer cannot invite themselves")
REFUSED_LOOP = N_("the referee invited this referrer before (a referral loop)")
REFUSED_TAKEN = N_("already credited to a referrer")
REFUSED_NOT_NEW = N_("not a new customer")
REFUSED = {"ended": REFUSED_ENDED, "self": REFUSED_SELF, "loop": REFUSED_LOOP, "taken": REFUSED_TAKEN,
           "not_new": REFUSED_NOT_NEW}


class ProgrammeNotFound(NotFound):
    pass


def is_referral_state(state: str) -> bool:
    return bool(state) and state.startswith(STATE_PREFIX) and len(state) <= STATE_MAX_CHARS


def _require_manager(viewer: Viewer) -> None:
    if viewer.role not in MANAGING_ROLES:
        raise Forbidden("Only an administrator or a planner may manage referral programmes")


# ---------------------------------------------------------------- programmes


def _check(session: Session, data: ProgrammeIn, viewer: Viewer) -> None:
    hidden = [a for a in data.account_ids if not viewer.can_see_account(a)]
    found = set(session.scalars(select(Account.id).where(Account.id.in_(data.account_ids))))
    missing = [a for a in data.account_ids if a not in found]
    if hidden or missing:
        raise Invalid("Account {account_id} not found", field="account_ids", account_id=(hidden or missing)[0])
    batch_ids = {t.coupon_batch_id for t in data.tiers if t.coupon_batch_id is not None} | (
        {data.first_order_batch_id} if data.first_order_batch_id is not None else set())
    known = set(session.scalars(select(CouponBatch.id).where(CouponBatch.id.in_(batch_ids))))
    if batch_ids - known:
        raise Invalid("Coupon batch {batch_id} not found", field="tiers", batch_id=sorted(batch_ids - known)[0])
    counts = [t.invites for t in data.tiers]
    if len(set(counts)) != len(counts):
        raise Invalid("Two tiers ask for the same number of invites", field="tiers")
    if any(t.coupon_batch_id is None and not t.gift for t in data.tiers):
        raise Invalid("Each tier needs a coupon batch or a gift", field="tiers")


def create_programme(session: Session, *, data: ProgrammeIn, viewer: Viewer) -> ReferralProgramme:
    _require_manager(viewer)
    _check(session, data, viewer)
    dumped = data.model_dump(mode="json")
    programme = ReferralProgramme(name=data.name, account_ids=list(dict.fromkeys(data.account_ids)),
                                  reversal_days=data.reversal_days,
                                  tiers=sorted(dumped["tiers"], key=lambda t: int(t["invites"])),
                                  first_order_batch_id=data.first_order_batch_id,
                                  first_order_gift=data.first_order_gift, poster_text=data.poster_text,
                                  created_by_id=viewer.user_id)
    session.add(programme)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="referral_programme",
                              entity_id=programme.id, summary=programme.name, after=dumped)
    return programme


def end_programme(session: Session, *, programme_id: int, viewer: Viewer) -> ReferralProgramme:
    _require_manager(viewer)
    programme = get_programme(session, programme_id=programme_id, viewer=viewer)
    programme.status = ProgrammeStatus.ended.value
    team_service.record_audit(session, actor=viewer, action="end", entity_type="referral_programme",
                              entity_id=programme.id, summary=programme.name)
    return programme


def get_programme(session: Session, *, programme_id: int, viewer: Viewer) -> ReferralProgramme:
    programme = session.get(ReferralProgramme, programme_id)
    if programme is None or not (viewer.sees_all_accounts
                                 or any(viewer.can_see_account(a) for a in programme.account_ids or [0])):
        raise ProgrammeNotFound("Referral programme not found")
    return programme


def list_programmes(session: Session, *, viewer: Viewer) -> list[ReferralProgramme]:
    rows = session.scalars(select(ReferralProgramme).order_by(ReferralProgramme.status, ReferralProgramme.id.desc()))
    return [p for p in rows if viewer.sees_all_accounts or any(viewer.can_see_account(a) for a in p.account_ids)]


def totals(session: Session, programme_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """programme id → (referrers with a standing, credits minus reversals)."""
    rows = session.execute(select(Standing.programme_id, func.count(), func.coalesce(func.sum(Standing.invites), 0))
                           .where(Standing.programme_id.in_(list(programme_ids))).group_by(Standing.programme_id))
    found = {int(p): (int(n), int(s)) for p, n, s in rows}
    return {p: found.get(p, (0, 0)) for p in programme_ids}


# ---------------------------------------------------------------- invite codes


def _new_state(session: Session) -> str:
    while True:
        state = STATE_PREFIX + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
        if session.scalar(select(InviteCode.id).where(InviteCode.state == state)) is None:
            return state


def invite_for(session: Session, *, programme_id: int, customer_id: int, viewer: Viewer) -> InviteCode:
    """The customer's personal invite code in the programme (made once; the same code after)."""
    programme = get_programme(session, programme_id=programme_id, viewer=viewer)
    customers_service.get_customer(session, customer_id=customer_id, viewer=viewer)
    invite = session.scalar(select(InviteCode).where(InviteCode.programme_id == programme.id,
                                                     InviteCode.customer_id == customer_id))
    if invite is not None:
        return invite
    if programme.status != ProgrammeStatus.active.value:
        raise Invalid("The referral programme has ended; it gives no new invite codes", field="programme_id")
    invite = InviteCode(programme_id=programme.id, customer_id=customer_id, state=_new_state(session))
    session.add(invite)
    session.flush()
    if wecom_users(session, programme):
        from siyu.core import jobs

        jobs.enqueue_after_commit(session, "referrals.jobs.make_contact_way", invite.id)
    return invite


def wecom_users(session: Session, programme: ReferralProgramme) -> list[str]:
    rows = session.scalars(select(Account.wecom_userid).where(
        Account.id.in_(programme.account_ids or []), Account.kind == "wecom", Account.wecom_userid.is_not(None)))
    return sorted(u for u in rows if u)


def make_contact_way(session: Session, *, invite: InviteCode, api: Any) -> str:
    """The invite's WeCom 「联系我」 code (the channels' client path), once: "created" or "none"."""
    from siyu.channels import service as channels_service

    programme = session.get_one(ReferralProgramme, invite.programme_id)
    users = wecom_users(session, programme)
    if invite.wecom_config_id or not users:
        return "none"
    invite.wecom_config_id, invite.qr_url = channels_service.create_contact_way(
        api, users=users, state=invite.state, remark=programme.name)
    return "created"


def mp_accounts(session: Session, programme: ReferralProgramme) -> list[int]:
    """The programme's 公众号 accounts: an invite's parametric QR code is made for one of them."""
    return [int(a) for a in session.scalars(select(Account.id).where(
        Account.id.in_(programme.account_ids or []), Account.kind == AccountKind.mp.value).order_by(Account.id))]


def mp_qr_live(invite: InviteCode, *, now: datetime | None = None) -> bool:
    """The invite has a 公众号 QR code WeChat still answers (permanent, or temporary and not expired)."""
    if not invite.mp_qr_url:
        return False
    return invite.mp_permanent or invite.mp_expires_at is None or invite.mp_expires_at > (now or utcnow())


def _permanent_invite_codes(session: Session, account_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(InviteCode).where(
        InviteCode.mp_account_id == account_id, InviteCode.mp_permanent.is_(True))) or 0)


def make_mp_qrcode(session: Session, *, programme_id: int, customer_id: int, viewer: Viewer, api: Any,
                   account_id: int | None = None, permanent: bool = False,
                   expire_seconds: int | None = None) -> InviteCode:
    """The customer's invite as a 公众号 parametric QR code whose scene is the invite's state.

    Made once and kept while it lives: a permanent code is never made twice (it counts against the
    公众号's 100,000, shared with channels' codes); a temporary one (QR_STR_SCENE, at most 30 days) is
    made again only after it expired. A follow through it (``qrscene_<state>``) or a follower's scan
    credits the referrer through ``on_adds`` — the same ledger and anti-fraud rules as a WeCom add.
    """
    from siyu.mp import service as mp_service

    invite = invite_for(session, programme_id=programme_id, customer_id=customer_id, viewer=viewer)
    programme = session.get_one(ReferralProgramme, invite.programme_id)
    if programme.status != ProgrammeStatus.active.value:
        raise Invalid("The referral programme has ended; it gives no new invite codes", field="programme_id")
    choices = mp_accounts(session, programme)
    if account_id is None:
        if not choices:
            raise Invalid("Add an Official Account to the programme's accounts first", field="account_id")
        account_id = choices[0]
    elif account_id not in choices:
        raise Invalid("Add an Official Account to the programme's accounts first", field="account_id")
    if mp_qr_live(invite) and invite.mp_account_id == account_id:
        return invite
    seconds = mp_service.TEMPORARY_QR_MAX_SECONDS if expire_seconds is None else expire_seconds
    qr = mp_service.create_scene_qrcode(session, api=api, account_id=account_id, scene=invite.state,
                                        permanent=permanent, expire_seconds=seconds)
    invite.mp_account_id, invite.mp_ticket, invite.mp_qr_url = account_id, qr.ticket, qr.url
    invite.mp_permanent, invite.mp_expires_at = permanent, qr.expires_at
    session.flush()
    team_service.record_audit(session, actor=viewer, action="mp_qrcode", entity_type="referral_programme",
                              entity_id=programme.id, summary=programme.name,
                              after={"invite_id": invite.id, "customer_id": customer_id, "account_id": account_id,
                                     "permanent": permanent,
                                     "expires_at": qr.expires_at.isoformat() if qr.expires_at else None})
    return invite


def invite_by_state(session: Session, state: str) -> InviteCode | None:
    if not is_referral_state(state):
        return None
    return session.scalar(select(InviteCode).where(InviteCode.state == state))


# ---------------------------------------------------------------- the ledger


def _touch(session: Session, customer_id: int, at: datetime, event: str, content: str, **details: Any) -> None:
    session.add(Touch(customer_id=customer_id, kind=TouchKind.system.value, occurred_at=at, content=content,
                      details={"event": event, **details}))


def _refusal(session: Session, invite: InviteCode, referee_id: int, *, at: datetime) -> str | None:
    programme = session.get_one(ReferralProgramme, invite.programme_id)
    referrer_id = invite.customer_id
    if programme.status != ProgrammeStatus.active.value:
        return "ended"
    if referee_id == referrer_id:
        return "self"
    if session.scalar(select(LedgerEntry.id).where(
            LedgerEntry.referrer_id == referee_id, LedgerEntry.referee_id == referrer_id,
            LedgerEntry.kind == EntryKind.credit.value).limit(1)) is not None:
        return "loop"
    if session.scalar(select(LedgerEntry.id).where(LedgerEntry.referee_id == referee_id,
                                                   LedgerEntry.kind == EntryKind.credit.value).limit(1)) is not None:
        return "taken"
    customer = session.get(Customer, referee_id)
    if customer is None or customer.created_at < at - NEW_WITHIN:
        return "not_new"
    earlier = session.scalar(select(Friendship.id).where(Friendship.customer_id == referee_id,
                                                         Friendship.added_at < at - NEW_WITHIN).limit(1))
    return "not_new" if earlier is not None else None


@dataclass
class CreditOutcome:
    credited: bool
    reason: str = ""  # why not (a key of REFUSED)
    invites: int = 0  # the referrer's count after


def credit(session: Session, *, invite: InviteCode, referee_id: int, at: datetime | None = None,
           via: str = "wecom") -> CreditOutcome:
    """Credit the invite's owner with this referee, if every rule passes (see the module's docstring)."""
    at = at or utcnow()
    refused = _refusal(session, invite, referee_id, at=at)
    if refused is not None:
        _touch(session, referee_id, at, "referral_refused", _(REFUSED[refused]), programme_id=invite.programme_id,
               referrer_id=invite.customer_id, reason=refused)
        return CreditOutcome(False, refused)
    table = LedgerEntry.__table__
    inserted = session.execute(dialect_insert(session, table).on_conflict_do_nothing().returning(table.c.id), [{
        "programme_id": invite.programme_id, "referrer_id": invite.customer_id, "referee_id": referee_id,
        "kind": EntryKind.credit.value, "delta": 1, "reason": via[:64], "at": at}]).first()
    if inserted is None:  # a concurrent add of the same referee won
        return CreditOutcome(False, "taken")
    invites = _move(session, invite.programme_id, invite.customer_id, +1)
    names = dict(session.execute(select(Customer.id, Customer.name).where(
        Customer.id.in_([invite.customer_id, referee_id]))).all())
    _touch(session, invite.customer_id, at, "referral_credit", names.get(referee_id, ""),
           programme_id=invite.programme_id, referee_id=referee_id, invites=invites)
    _touch(session, referee_id, at, "referral_referred", names.get(invite.customer_id, ""),
           programme_id=invite.programme_id, referrer_id=invite.customer_id)
    _reward_tiers(session, invite.programme_id, invite.customer_id, invites, at=at)
    return CreditOutcome(True, invites=invites)


def _move(session: Session, programme_id: int, customer_id: int, delta: int) -> int:
    """Move the referrer's standing by ±1 (never below zero); the count after."""
    table = Standing.__table__
    session.execute(dialect_insert(session, table).on_conflict_do_nothing(), [{
        "programme_id": programme_id, "customer_id": customer_id, "invites": 0, "updated_at": utcnow()}])
    guard = [Standing.programme_id == programme_id, Standing.customer_id == customer_id]
    if delta < 0:
        guard.append(Standing.invites > 0)
    session.execute(update(Standing).where(*guard).values(invites=Standing.invites + delta, updated_at=utcnow()),
                    execution_options={"synchronize_session": False})
    return int(session.scalar(select(Standing.invites).where(Standing.programme_id == programme_id,
                                                             Standing.customer_id == customer_id)) or 0)


def on_adds(session: Session, adds: Sequence[Any]) -> list[CreditOutcome | None]:
    """Friend-adds whose state is an invite code's (``channels.service.FriendAdd``): credit their referrers."""
    outcomes: list[CreditOutcome | None] = []
    kinds = dict(session.execute(select(Account.id, Account.kind).where(
        Account.id.in_({int(add.account_id) for add in adds}))).all()) if adds else {}
    for add in adds:
        invite = invite_by_state(session, add.state)
        via = "mp" if kinds.get(add.account_id) == AccountKind.mp.value else "wecom"  # a 公众号 follow or scan
        outcomes.append(None if invite is None else credit(session, invite=invite, referee_id=add.customer_id,
                                                           at=add.added_at, via=via))
    session.flush()
    return outcomes


def record_manual(session: Session, *, programme_id: int, referee_id: int, state: str,
                  viewer: Viewer) -> CreditOutcome:
    """A personal account's referral: the operator names the new friend and the invite code they brought."""
    programme = get_programme(session, programme_id=programme_id, viewer=viewer)
    customers_service.get_customer(session, customer_id=referee_id, viewer=viewer)
    invite = invite_by_state(session, state.strip())
    if invite is None or invite.programme_id != programme.id:
        raise Invalid("No invite code {state} in this programme", field="state", state=state.strip()[:30])
    outcome = credit(session, invite=invite, referee_id=referee_id, via="manual")
    team_service.record_audit(session, actor=viewer, action="credit" if outcome.credited else "refuse",
                              entity_type="referral_programme", entity_id=programme.id, summary=programme.name,
                              after={"referee_id": referee_id, "state": invite.state, "reason": outcome.reason})
    return outcome


def on_friend_removed(session: Session, *, customer_id: int, at: datetime) -> int:
    """The customer deleted us: credits for them still within their programme's window are reversed.

    Only when no friendship with any account is left (a customer still with another account is not lost).
    Returns the number of reversals written.
    """
    credits = list(session.scalars(select(LedgerEntry).where(LedgerEntry.referee_id == customer_id,
                                                             LedgerEntry.kind == EntryKind.credit.value)))
    if not credits:
        return 0
    still = session.scalar(select(Friendship.id).where(Friendship.customer_id == customer_id,
                                                       Friendship.status == FriendshipStatus.active.value).limit(1))
    if still is not None:
        return 0
    done = 0
    table = LedgerEntry.__table__
    for entry in credits:
        programme = session.get_one(ReferralProgramme, entry.programme_id)
        if at - entry.at > timedelta(days=programme.reversal_days):
            continue
        inserted = session.execute(dialect_insert(session, table).on_conflict_do_nothing().returning(table.c.id), [{
            "programme_id": entry.programme_id, "referrer_id": entry.referrer_id, "referee_id": customer_id,
            "kind": EntryKind.reversal.value, "delta": -1, "reason": "deleted", "at": at}]).first()
        if inserted is None:
            continue  # reversed already
        invites = _move(session, entry.programme_id, entry.referrer_id, -1)
        names = dict(session.execute(select(Customer.id, Customer.name).where(
            Customer.id.in_([entry.referrer_id, customer_id]))).all())
        _touch(session, entry.referrer_id, at, "referral_reversal", names.get(customer_id, ""),
               programme_id=entry.programme_id, referee_id=customer_id, invites=invites)
        _touch(session, customer_id, at, "referral_reversed", names.get(entry.referrer_id, ""),
               programme_id=entry.programme_id, referrer_id=entry.referrer_id)
        done += 1
    session.flush()
    return done


def balance(session: Session, *, programme_id: int) -> list[tuple[int, int, int]]:
    """Referrers whose standing differs from their ledger: (customer id, standing, ledger sum). Empty when balanced."""
    ledger = dict(session.execute(select(LedgerEntry.referrer_id, func.sum(LedgerEntry.delta))
                                  .where(LedgerEntry.programme_id == programme_id)
                                  .group_by(LedgerEntry.referrer_id)).all())
    standing = dict(session.execute(select(Standing.customer_id, Standing.invites)
                                    .where(Standing.programme_id == programme_id)).all())
    return [(c, int(standing.get(c, 0)), int(ledger.get(c, 0))) for c in sorted(set(ledger) | set(standing))
            if int(standing.get(c, 0)) != int(ledger.get(c, 0)) or int(ledger.get(c, 0)) < 0]


def ledger(session: Session, *, programme_id: int, limit: int = 200) -> list[LedgerEntry]:
    return list(session.scalars(select(LedgerEntry).where(LedgerEntry.programme_id == programme_id)
                                .order_by(LedgerEntry.at.desc(), LedgerEntry.id.desc()).limit(limit)))


@dataclass
class Place:
    rank: int
    customer_id: int
    name: str
    invites: int


def leaderboard(session: Session, *, programme_id: int, limit: int = LEADERBOARD_SIZE) -> list[Place]:
    rows = session.execute(select(Standing.customer_id, Customer.name, Standing.invites)
                           .join(Customer, Customer.id == Standing.customer_id)
                           .where(Standing.programme_id == programme_id, Standing.invites > 0)
                           .order_by(Standing.invites.desc(), Standing.updated_at, Standing.customer_id).limit(limit))
    places: list[Place] = []
    for customer_id, name, invites in rows:
        rank = places[-1].rank if places and places[-1].invites == invites else len(places) + 1
        places.append(Place(rank, int(customer_id), name, int(invites)))
    return places


def tier_progress(session: Session, *, programme: ReferralProgramme) -> list[tuple[dict[str, Any], int]]:
    """The 任务宝 tiers with how many referrers reached each."""
    out = []
    for tier in programme.tiers or []:
        reached = session.scalar(select(func.count()).select_from(Standing).where(
            Standing.programme_id == programme.id, Standing.invites >= int(str(tier["invites"]))))
        out.append((tier, int(reached or 0)))
    return out


# ---------------------------------------------------------------- rewards


def _give(session: Session, programme: ReferralProgramme, customer_id: int, *, reason: str, batch_id: int | None,
          gift: str, at: datetime, label: str) -> bool:
    table = Reward.__table__
    inserted = session.execute(dialect_insert(session, table).on_conflict_do_nothing().returning(table.c.id), [{
        "programme_id": programme.id, "customer_id": customer_id, "reason": reason[:32], "coupon_batch_id": batch_id,
        "code": "", "gift": gift, "created_at": at}]).first()
    if inserted is None:
        return False  # given before
    code = ""
    if batch_id is not None:
        try:
            code = coupons_service.issue(session, batch_id, [customer_id], via=IssuedVia.referral.value,
                                         at=at).codes.get(customer_id, "")
        except Invalid:
            code = ""  # the batch expired: the gift (if any) still goes; the operator sees no code
        session.execute(update(Reward).where(Reward.id == inserted[0]).values(code=code),
                        execution_options={"synchronize_session": False})
    what = "、".join(x for x in (code and _("coupon {code}", code=code), gift) if x) or _("(no coupon code left)")
    _touch(session, customer_id, at, "referral_reward", what, programme_id=programme.id, reason=reason)
    account_id = coupons_service.first_accounts(session, [customer_id]).get(customer_id)
    if account_id is not None:
        from siyu.maintenance import service as maintenance_service
        from siyu.maintenance.models import TaskKind

        maintenance_service.create_task(session, kind=TaskKind.reward, customer_id=customer_id,
                                        account_id=account_id, detail=f"{programme.name} · {label}: {what}",
                                        ref_id=int(inserted[0]), now=at)
    return True


def _reward_tiers(session: Session, programme_id: int, customer_id: int, invites: int, *, at: datetime) -> None:
    programme = session.get_one(ReferralProgramme, programme_id)
    for tier in programme.tiers or []:
        need = int(str(tier["invites"]))
        if invites >= need:
            batch = tier.get("coupon_batch_id")
            _give(session, programme, customer_id, reason=f"tier:{need}",
                  batch_id=int(str(batch)) if batch else None, gift=str(tier.get("gift") or ""), at=at,
                  label=_("invited {n} friends", n=need))


def on_purchases(session: Session, *, customer_ids: Sequence[int]) -> int:
    """Buyers who are credited referees: their first purchase rewards their referrer (once per referee)."""
    ids = list(customer_ids)
    entries = []
    for start in range(0, len(ids), 1000):
        entries += list(session.scalars(select(LedgerEntry).where(LedgerEntry.referee_id.in_(ids[start:start + 1000]),
                                                                  LedgerEntry.kind == EntryKind.credit.value)))
    given = 0
    for entry in entries:
        programme = session.get_one(ReferralProgramme, entry.programme_id)
        if not programme.first_order_batch_id and not programme.first_order_gift:
            continue
        reversed_ = session.scalar(select(LedgerEntry.id).where(
            LedgerEntry.programme_id == entry.programme_id, LedgerEntry.referee_id == entry.referee_id,
            LedgerEntry.kind == EntryKind.reversal.value))
        if reversed_ is not None:
            continue
        bought = session.scalar(select(func.min(Order.paid_at)).where(
            Order.customer_id == entry.referee_id, Order.status.in_([s.value for s in COUNTED_STATUSES])))
        if bought is None:
            continue
        name = session.scalar(select(Customer.name).where(Customer.id == entry.referee_id)) or ""
        if _give(session, programme, entry.referrer_id, reason=f"first_order:{entry.referee_id}",
                 batch_id=programme.first_order_batch_id, gift=programme.first_order_gift, at=utcnow(),
                 label=_("{name} placed a first order", name=name)):
            given += 1
    return given


def rewards(session: Session, *, programme_id: int, limit: int = 200) -> list[Reward]:
    return list(session.scalars(select(Reward).where(Reward.programme_id == programme_id)
                                .order_by(Reward.id.desc()).limit(limit)))


def invites_of(session: Session, *, programme_id: int, limit: int = 200) -> list[InviteCode]:
    return list(session.scalars(select(InviteCode).where(InviteCode.programme_id == programme_id)
                                .order_by(InviteCode.id.desc()).limit(limit)))




def register() -> None:
    """Hear the channels' adds and removals: an add whose state is a personal invite code credits its
    referrer; a friend lost soon after takes the credit back (idempotent; runs at import)."""
    from siyu.channels import service as channels_service

    channels_service.listen_to_adds(channels_service.AddListener(
        claims=is_referral_state, added=on_adds, removed=on_friend_removed))
    from siyu.mp import service as mp_service

    mp_service.count_permanent_codes_with(_permanent_invite_codes)


register()
