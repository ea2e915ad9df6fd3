"""线下活动 service: events, invitations, sign-ups with a waiting list, check-in, no-shows and follow-ups.

Why it is built this way:

* **No over-booking.** A seat is taken only by ``_take_seat``, a guarded ``UPDATE offline_event SET
  seats_taken = seats_taken + 1 WHERE id = … AND seats_taken < capacity``: the database runs such
  updates one at a time (SQLite's write lock; PostgreSQL's row lock, with the WHERE checked again after
  the wait), so however many sign-ups arrive at once, at most ``capacity`` of them find a seat. The
  sign-up row is inserted first with ``ON CONFLICT DO NOTHING`` (unique per event and phone, and per
  event and customer): pressing 报名 twice is one sign-up, never a second seat.
* **The public page** is reached through a signed key (``public_key``): the event id and a nonce, signed
  with the installation's secret. A forged key, a key whose nonce was renewed, or an event that ended,
  closed or was cancelled answers 404. A public sign-up is matched to a customer by phone when exactly
  one customer has that number; otherwise it waits in "to review" for an operator to link or create.
* **Invitations** go to a segment (compiled by the one segment compiler through the customer list's
  filter, scoped to the viewer): one 今日任务 per customer for the operator of the account they are a
  friend of, with the invitation (customer-safe variables filled) and the sign-up link.
* **Attendance** is an ``offline_event`` touch on the customer's timeline (it counts as contact);
  after the event, attendees and no-shows get follow-up tasks with different texts, once.
"""

from __future__ import annotations

import re
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from itsdangerous import BadSignature, Signer
from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from siyu.core.db import dialect_insert, utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import _
from siyu.core.settings import get_settings, local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.customers import variables
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Phone, Touch, TouchKind
from siyu.offline.models import (
    SIGNUP_STATUS_LABELS,
    EventStatus,
    OfflineEvent,
    OfflineInvitation,
    OfflineSignup,
    SignupSource,
    SignupStatus,
)
from siyu.offline.schemas import EventIn
from siyu.team import service as team_service

EDITING_ROLES = ("admin", "planner")
PUBLIC_SALT = "siyu.offline-event.v1"  # a namespace for the public key's signature, not a secret
MOBILE = re.compile(r"^1[3-9][0-9]{9}$")  # a mainland China mobile number, 11 digits
TASK_DETAIL_MAX = 255  # maintenance_task.detail
BATCH = 1000


class EventNotFound(NotFound):
    pass


class SignupNotFound(NotFound):
    pass


# ---------------------------------------------------------------- events


def _may_edit(viewer: Viewer) -> None:
    if viewer.role not in EDITING_ROLES:
        raise Forbidden("Only administrators and planners may plan offline events")


def may_see(event: OfflineEvent, viewer: Viewer) -> bool:
    """An event is seen by everyone who operates one of its host accounts (all, when it names none)."""
    return viewer.sees_all_accounts or not event.account_ids or bool(set(event.account_ids) & viewer.account_ids)


def get_event(session: Session, *, event_id: int, viewer: Viewer) -> OfflineEvent:
    event = session.get(OfflineEvent, event_id)
    if event is None or not may_see(event, viewer):
        raise EventNotFound("Offline event not found")
    return event


def list_events(session: Session, *, viewer: Viewer) -> list[OfflineEvent]:
    events = session.scalars(select(OfflineEvent).order_by(OfflineEvent.starts_at.desc(), OfflineEvent.id.desc()))
    return [e for e in events if may_see(e, viewer)]


def _check_texts(data: EventIn) -> None:
    if data.ends_at <= data.starts_at:
        raise Invalid("The event must end after it starts", field="ends_at")
    for field in ("invite_text", "attended_text", "no_show_text"):
        variables.check_outgoing(getattr(data, field), field=field, allowed=(variables.SALUTATION,
                                                                              variables.ACCOUNT))


def _check_accounts(session: Session, account_ids: Sequence[int], viewer: Viewer) -> list[int]:
    from siyu.accounts.models import Account

    wanted = sorted(set(account_ids))
    found = set(session.scalars(select(Account.id).where(Account.id.in_(wanted)))) if wanted else set()
    for account_id in wanted:
        if account_id not in found or not viewer.can_see_account(account_id):
            raise Invalid("Account {account_id} not found", field="account_ids", account_id=account_id)
    return wanted


def _snapshot(event: OfflineEvent) -> dict[str, Any]:
    return {"name": event.name, "kind": event.kind, "starts_at": event.starts_at.isoformat(),
            "ends_at": event.ends_at.isoformat(), "place": event.place, "capacity": event.capacity,
            "status": event.status, "account_ids": list(event.account_ids)}


def create_event(session: Session, *, data: EventIn, viewer: Viewer) -> OfflineEvent:
    _may_edit(viewer)
    _check_texts(data)
    event = OfflineEvent(name=data.name.strip(), kind=data.kind.value, starts_at=data.starts_at,
                         ends_at=data.ends_at, place=data.place, capacity=data.capacity, seats_taken=0,
                         description=data.description, invite_text=data.invite_text,
                         attended_text=data.attended_text, no_show_text=data.no_show_text,
                         status=EventStatus.open.value,
                         account_ids=_check_accounts(session, data.account_ids, viewer),
                         public_nonce=secrets.token_hex(4), created_by_id=viewer.user_id)
    session.add(event)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="offline_event",
                              entity_id=event.id, entity_name=event.name, after=_snapshot(event))
    return event


def update_event(session: Session, *, event_id: int, data: EventIn, viewer: Viewer) -> OfflineEvent:
    """Change an event; more seats move people up from the waiting list, fewer than are taken is refused."""
    _may_edit(viewer)
    event = get_event(session, event_id=event_id, viewer=viewer)
    _check_texts(data)
    if data.capacity < event.seats_taken:
        raise Invalid("{n} people hold a seat: cancel sign-ups before lowering the capacity below that",
                      field="capacity", n=event.seats_taken)
    before = _snapshot(event)
    event.name, event.kind, event.place = data.name.strip(), data.kind.value, data.place
    event.starts_at, event.ends_at, event.capacity = data.starts_at, data.ends_at, data.capacity
    event.description, event.invite_text = data.description, data.invite_text
    event.attended_text, event.no_show_text = data.attended_text, data.no_show_text
    event.account_ids = _check_accounts(session, data.account_ids, viewer)
    session.flush()
    _promote(session, event_id=event.id, viewer=viewer)
    session.refresh(event)
    after = _snapshot(event)
    changed = {k for k in after if after[k] != before[k]}
    if changed:
        team_service.record_audit(session, actor=viewer, action="update", entity_type="offline_event",
                                  entity_id=event.id, entity_name=event.name,
                                  before={k: before[k] for k in changed}, after={k: after[k] for k in changed})
    return event


def set_status(session: Session, *, event_id: int, status: EventStatus, viewer: Viewer) -> OfflineEvent:
    _may_edit(viewer)
    event = get_event(session, event_id=event_id, viewer=viewer)
    if event.status != status.value:
        before = event.status
        event.status = status.value
        team_service.record_audit(session, actor=viewer, action="update", entity_type="offline_event",
                                  entity_id=event.id, entity_name=event.name, before={"status": before},
                                  after={"status": status.value})
    return event


def renew_public_key(session: Session, *, event_id: int, viewer: Viewer) -> OfflineEvent:
    """A new nonce: every link and QR given out before answers 404 from now on."""
    _may_edit(viewer)
    event = get_event(session, event_id=event_id, viewer=viewer)
    event.public_nonce = secrets.token_hex(4)
    team_service.record_audit(session, actor=viewer, action="renew_link", entity_type="offline_event",
                              entity_id=event.id, entity_name=event.name)
    return event


def has_ended(event: OfflineEvent, now: datetime | None = None) -> bool:
    return event.ends_at <= (now or utcnow())


# ---------------------------------------------------------------- the public key


def _signer() -> Signer:
    return Signer(get_settings().resolved_secret_key(), salt=PUBLIC_SALT)


def public_key(event: OfflineEvent) -> str:
    """The key in the event's public URL: ``<id>.<nonce>.<signature>``."""
    return _signer().sign(f"{event.id}.{event.public_nonce}").decode()


def event_for_key(session: Session, key: str, *, now: datetime | None = None) -> OfflineEvent:
    """The event a public key opens; forged, renewed or past (ended, closed, cancelled): not found."""
    gone = NotFound("This sign-up link is not valid or has expired")
    try:
        value = _signer().unsign(key[:120].encode()).decode()
    except (BadSignature, UnicodeError) as exc:
        raise gone from exc
    event_text, _sep, nonce = value.partition(".")
    event = session.get(OfflineEvent, int(event_text)) if event_text.isdigit() and len(event_text) < 10 else None
    if event is None or event.public_nonce != nonce or event.status != EventStatus.open.value or has_ended(event, now):
        raise gone
    return event


# ---------------------------------------------------------------- sign-up


def normalise_mobile(raw: str) -> str:
    """An 11-digit mainland mobile number from what a person typed (spaces, dashes, +86 allowed)."""
    digits = customers_service.normalise_phone(raw).lstrip("+")
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) == 11 + len(prefix):
            digits = digits[len(prefix):]
    if not MOBILE.match(digits):
        raise Invalid("Enter an 11-digit mobile number", field="phone")
    return digits


def _phone_variants(phone: str) -> list[str]:
    return [phone, f"+86{phone}", f"86{phone}", f"0086{phone}"]


def match_phone(session: Session, phone: str) -> tuple[int | None, int | None]:
    """(customer, account) when exactly one customer has this number (merged ones count as their survivor)."""
    rows = session.execute(
        select(Phone.customer_id, Friendship.account_id, Friendship.status, Customer.merged_into_id)
        .join(Friendship, Friendship.id == Phone.friendship_id)
        .join(Customer, Customer.id == Phone.customer_id)
        .where(Phone.number.in_(_phone_variants(phone)))).all()
    customers = {int(merged or c) for c, _a, _s, merged in rows}
    if len(customers) != 1:
        return None, None
    customer_id = customers.pop()
    active = sorted(int(a) for c, a, s, merged in rows
                    if int(merged or c) == customer_id and s == FriendshipStatus.active.value)
    return customer_id, (active[0] if active else None)


def _customer_phone(session: Session, customer_id: int) -> str | None:
    for number in session.scalars(select(Phone.number).where(Phone.customer_id == customer_id).order_by(Phone.id)):
        try:
            return normalise_mobile(number)
        except Invalid:
            continue
    return None


def _account_for(session: Session, customer_id: int, event: OfflineEvent, viewer: Viewer) -> int | None:
    """The account the customer goes through: an active friendship on a host account the viewer sees."""
    rows = session.execute(select(Friendship.account_id, Friendship.added_at).where(
        Friendship.customer_id == customer_id, Friendship.status == FriendshipStatus.active.value)).all()
    usable = [(added, int(a)) for a, added in rows if viewer.can_see_account(int(a))
              and (not event.account_ids or int(a) in event.account_ids)]
    return max(usable)[1] if usable else None


def _take_seat(session: Session, event_id: int) -> bool:
    """One seat, if one is free: the guarded UPDATE that makes over-booking impossible (module doc)."""
    result = session.execute(
        update(OfflineEvent).where(OfflineEvent.id == event_id, OfflineEvent.seats_taken < OfflineEvent.capacity)
        .values(seats_taken=OfflineEvent.seats_taken + 1).execution_options(synchronize_session=False))
    return bool(cast(Any, result).rowcount)


def _free_seat(session: Session, event_id: int) -> None:
    session.execute(update(OfflineEvent).where(OfflineEvent.id == event_id, OfflineEvent.seats_taken > 0)
                    .values(seats_taken=OfflineEvent.seats_taken - 1).execution_options(synchronize_session=False))


@dataclass
class SignupResult:
    signup: OfflineSignup
    created: bool  # False: this person was already signed up


def _timeline(session: Session, signup: OfflineSignup, event: OfflineEvent, *, kind: TouchKind, what: str,
              viewer: Viewer, at: datetime, label: str = "") -> None:
    if signup.customer_id is None:
        return
    session.add(Touch(customer_id=signup.customer_id, account_id=signup.account_id, user_id=viewer.user_id,
                      kind=kind.value, content="", occurred_at=at, created_at=at,
                      details={"event": what, "event_id": event.id, "name": event.name, "label": label,
                               "signup_id": signup.id},
                      dedupe_key=f"offline:{what}:{signup.id}"))
    session.flush()
    customers_service.refresh_computed_ids(session, customer_ids=[signup.customer_id])


def sign_up(session: Session, *, event: OfflineEvent, name: str, phone: str | None, source: SignupSource,
            viewer: Viewer = SYSTEM, customer_id: int | None = None, account_id: int | None = None,
            now: datetime | None = None) -> SignupResult:
    """A seat, or a place on the waiting list when none is free; the same phone or customer twice: one sign-up.

    The caller commits (the insert, the seat and the timeline entry are one transaction)."""
    now = now or utcnow()
    if event.status != EventStatus.open.value or has_ended(event, now):
        raise Invalid("This event takes no more sign-ups", field="event")
    if customer_id is not None and account_id is None:
        account_id = _account_for(session, customer_id, event, viewer)
    table = cast(Table, OfflineSignup.__table__)
    inserted = session.execute(dialect_insert(session, table).on_conflict_do_nothing().returning(table.c.id), [{
        "event_id": event.id, "customer_id": customer_id, "account_id": account_id, "name": name.strip()[:64],
        "phone": phone, "status": SignupStatus.waitlisted.value, "source": source.value,
        "ticket": secrets.token_urlsafe(16), "checked_in_at": None, "checked_in_by_id": None,
        "created_by_id": viewer.user_id, "created_at": now}]).scalar()
    if inserted is None:  # already signed up (by phone or as this customer): that sign-up stands
        existing = session.scalar(select(OfflineSignup).where(OfflineSignup.event_id == event.id,
                                                              OfflineSignup.phone == phone)) if phone else None
        if existing is None and customer_id is not None:
            existing = session.scalar(select(OfflineSignup).where(OfflineSignup.event_id == event.id,
                                                                  OfflineSignup.customer_id == customer_id))
        if existing is None:  # only a ticket clash (random, 128 bits) is left: never in practice
            raise Invalid("Please try again", field="form")
        return SignupResult(existing, created=False)
    seated = _take_seat(session, event.id)
    if seated:
        session.execute(update(OfflineSignup).where(OfflineSignup.id == inserted)
                        .values(status=SignupStatus.registered.value).execution_options(synchronize_session=False))
    signup = session.get(OfflineSignup, inserted)
    assert signup is not None
    session.refresh(signup)
    status = SignupStatus(signup.status)
    _timeline(session, signup, event, kind=TouchKind.system, what="offline_signup", viewer=viewer, at=now,
              label=_(SIGNUP_STATUS_LABELS[status]))
    if source is SignupSource.console:
        team_service.record_audit(session, actor=viewer, action="create", entity_type="offline_signup",
                                  entity_id=signup.id, entity_name=signup.name,
                                  after={"event_id": event.id, "status": signup.status,
                                         "customer_id": signup.customer_id})
    return SignupResult(signup, created=True)


def sign_up_customer(session: Session, *, event_id: int, customer_id: int, viewer: Viewer) -> SignupResult:
    """An operator signs one of their customers up."""
    event = get_event(session, event_id=event_id, viewer=viewer)
    customer = customers_service.get_customer(session, customer_id=customer_id, viewer=viewer)
    return sign_up(session, event=event, name=customer.name, phone=_customer_phone(session, customer.id),
                   source=SignupSource.console, viewer=viewer, customer_id=customer.id)


def sign_up_person(session: Session, *, event: OfflineEvent, name: str, phone: str, source: SignupSource,
                   viewer: Viewer = SYSTEM, now: datetime | None = None) -> SignupResult:
    """A sign-up by name and phone (the public page, or an operator taking a call): matched by phone."""
    name = name.strip()
    if not name:
        raise Invalid("Enter your name", field="name")
    if len(name) > 32:
        raise Invalid("The name is at most 32 characters", field="name")
    number = normalise_mobile(phone)
    customer_id, account_id = match_phone(session, number)
    scope = customers_service.visible_customer_clause(viewer)
    if customer_id is not None and scope is not None and session.scalar(
            select(Customer.id).where(Customer.id == customer_id, scope)) is None:
        customer_id, account_id = None, None  # a customer of accounts this operator does not see: to review
    return sign_up(session, event=event, name=name, phone=number, source=source, viewer=viewer,
                   customer_id=customer_id, account_id=account_id, now=now)


def get_signup(session: Session, *, signup_id: int, viewer: Viewer) -> tuple[OfflineSignup, OfflineEvent]:
    signup = session.get(OfflineSignup, signup_id)
    event = session.get(OfflineEvent, signup.event_id) if signup is not None else None
    if signup is None or event is None or not may_see(event, viewer):
        raise SignupNotFound("Sign-up not found")
    return signup, event


def _promote(session: Session, *, event_id: int, viewer: Viewer) -> int:
    """Move people up from the waiting list, in the order they signed up, while seats are free."""
    moved = 0
    while True:
        waiting = session.scalar(select(OfflineSignup.id).where(
            OfflineSignup.event_id == event_id, OfflineSignup.status == SignupStatus.waitlisted.value)
            .order_by(OfflineSignup.id).limit(1))
        if waiting is None or not _take_seat(session, event_id):
            return moved
        done = session.execute(update(OfflineSignup).where(
            OfflineSignup.id == waiting, OfflineSignup.status == SignupStatus.waitlisted.value)
            .values(status=SignupStatus.registered.value).execution_options(synchronize_session=False))
        if not cast(Any, done).rowcount:
            _free_seat(session, event_id)
            continue
        moved += 1
        signup = session.get(OfflineSignup, waiting)
        event = session.get(OfflineEvent, event_id)
        if signup is not None and event is not None:
            session.refresh(signup)
            _timeline(session, signup, event, kind=TouchKind.system, what="offline_promoted", viewer=viewer,
                      at=utcnow(), label=_("Moved up from the waiting list"))


def cancel_signup(session: Session, *, signup_id: int, viewer: Viewer) -> OfflineSignup:
    """Cancel; a seat it held goes to the first on the waiting list."""
    signup, event = get_signup(session, signup_id=signup_id, viewer=viewer)
    if signup.checked_in_at is not None:
        raise Invalid("This person has checked in; the sign-up cannot be cancelled", field="status")
    held = session.execute(update(OfflineSignup).where(
        OfflineSignup.id == signup.id, OfflineSignup.status == SignupStatus.registered.value)
        .values(status=SignupStatus.cancelled.value).execution_options(synchronize_session=False))
    if cast(Any, held).rowcount:
        _free_seat(session, event.id)
        _promote(session, event_id=event.id, viewer=viewer)
    else:
        session.execute(update(OfflineSignup).where(OfflineSignup.id == signup.id)
                        .values(status=SignupStatus.cancelled.value).execution_options(synchronize_session=False))
    session.refresh(signup)
    team_service.record_audit(session, actor=viewer, action="cancel", entity_type="offline_signup",
                              entity_id=signup.id, entity_name=signup.name, after={"event_id": event.id})
    return signup


def link_customer(session: Session, *, signup_id: int, customer_id: int, viewer: Viewer) -> OfflineSignup:
    """A public sign-up no phone matched, linked by an operator to an existing customer."""
    signup, event = get_signup(session, signup_id=signup_id, viewer=viewer)
    if signup.customer_id is not None:
        raise Invalid("This sign-up is already linked to a customer", field="customer_id")
    customer = customers_service.get_customer(session, customer_id=customer_id, viewer=viewer)
    taken = session.scalar(select(OfflineSignup.id).where(OfflineSignup.event_id == event.id,
                                                          OfflineSignup.customer_id == customer.id,
                                                          OfflineSignup.id != signup.id))
    if taken is not None:
        raise Invalid("This customer already has a sign-up for the event", field="customer_id")
    signup.customer_id = customer.id
    signup.account_id = _account_for(session, customer.id, event, viewer)
    session.flush()
    _timeline(session, signup, event, kind=TouchKind.system, what="offline_signup", viewer=viewer,
              at=signup.created_at, label=_(SIGNUP_STATUS_LABELS[SignupStatus(signup.status)]))
    if signup.checked_in_at is not None:
        _timeline(session, signup, event, kind=TouchKind.offline_event, what="offline_attended", viewer=viewer,
                  at=signup.checked_in_at)
    team_service.record_audit(session, actor=viewer, action="match", entity_type="offline_signup",
                              entity_id=signup.id, entity_name=signup.name, after={"customer_id": customer.id})
    return signup


def create_customer_for(session: Session, *, signup_id: int, account_id: int, viewer: Viewer) -> OfflineSignup:
    """A new customer (name and phone from the sign-up) on one of the viewer's accounts, linked to it."""
    from siyu.customers.schemas import CustomerIn

    signup, _event = get_signup(session, signup_id=signup_id, viewer=viewer)
    if signup.customer_id is not None:
        raise Invalid("This sign-up is already linked to a customer", field="customer_id")
    customer = customers_service.create_customer(session, viewer=viewer, data=CustomerIn(
        name=signup.name or (signup.phone or "")[-4:], account_id=account_id,
        phones=[signup.phone] if signup.phone else []))
    return link_customer(session, signup_id=signup.id, customer_id=customer.id, viewer=viewer)


# ---------------------------------------------------------------- check-in


def signup_for_ticket(session: Session, *, ticket: str, viewer: Viewer) -> tuple[OfflineSignup, OfflineEvent]:
    signup = session.scalar(select(OfflineSignup).where(OfflineSignup.ticket == ticket[:32]))
    event = session.get(OfflineEvent, signup.event_id) if signup is not None else None
    if signup is None or event is None or not may_see(event, viewer):
        raise SignupNotFound("This check-in code is not valid")
    return signup, event


@dataclass
class CheckIn:
    signup: OfflineSignup
    event: OfflineEvent
    already: bool


def check_in(session: Session, *, ticket: str, viewer: Viewer, now: datetime | None = None) -> CheckIn:
    """Record attendance at the door (once): an offline-event touch on the customer's timeline.

    Someone on the waiting list is let in only while a seat is free."""
    now = now or utcnow()
    signup, event = signup_for_ticket(session, ticket=ticket, viewer=viewer)
    if event.status == EventStatus.cancelled.value:
        raise Invalid("This event was cancelled", field="event")
    if signup.checked_in_at is not None:
        return CheckIn(signup, event, already=True)
    if signup.status == SignupStatus.cancelled.value:
        raise Invalid("This sign-up was cancelled", field="status")
    if signup.status == SignupStatus.waitlisted.value:
        if not _take_seat(session, event.id):
            raise Invalid("The event is full: this person is on the waiting list", field="status")
        session.execute(update(OfflineSignup).where(OfflineSignup.id == signup.id)
                        .values(status=SignupStatus.registered.value).execution_options(synchronize_session=False))
    done = session.execute(update(OfflineSignup).where(OfflineSignup.id == signup.id,
                                                       OfflineSignup.checked_in_at.is_(None))
                           .values(checked_in_at=now, checked_in_by_id=viewer.user_id)
                           .execution_options(synchronize_session=False))
    session.refresh(signup)
    if not cast(Any, done).rowcount:
        return CheckIn(signup, event, already=True)
    _timeline(session, signup, event, kind=TouchKind.offline_event, what="offline_attended", viewer=viewer, at=now)
    team_service.record_audit(session, actor=viewer, action="check_in", entity_type="offline_signup",
                              entity_id=signup.id, entity_name=signup.name, after={"event_id": event.id})
    return CheckIn(signup, event, already=False)


# ---------------------------------------------------------------- lists and counts


@dataclass
class Counts:
    registered: int = 0
    waitlisted: int = 0
    cancelled: int = 0
    checked_in: int = 0
    invited: int = 0
    to_review: int = 0


def counts(session: Session, event_ids: Sequence[int]) -> dict[int, Counts]:
    found: dict[int, Counts] = defaultdict(Counts)
    if not event_ids:
        return found
    ids = sorted(set(event_ids))
    for event_id, status, n, came, unmatched in session.execute(
            select(OfflineSignup.event_id, OfflineSignup.status, func.count(),
                   func.count(OfflineSignup.checked_in_at),
                   func.count().filter(OfflineSignup.customer_id.is_(None)))
            .where(OfflineSignup.event_id.in_(ids)).group_by(OfflineSignup.event_id, OfflineSignup.status)):
        entry = found[int(event_id)]
        setattr(entry, str(status), int(n))
        entry.checked_in += int(came)
        if status != SignupStatus.cancelled.value:
            entry.to_review += int(unmatched)
    for event_id, n in session.execute(select(OfflineInvitation.event_id, func.count())
                                       .where(OfflineInvitation.event_id.in_(ids))
                                       .group_by(OfflineInvitation.event_id)):
        found[int(event_id)].invited = int(n)
    return found


def list_signups(session: Session, *, event_id: int, viewer: Viewer, status: str = "") -> list[OfflineSignup]:
    """The event's sign-ups in order; ``no_show`` (after the event: registered, not checked in),
    ``attended``, ``review`` (no customer yet), or a sign-up status."""
    event = get_event(session, event_id=event_id, viewer=viewer)
    query = select(OfflineSignup).where(OfflineSignup.event_id == event.id)
    if status == "no_show":
        query = query.where(OfflineSignup.status == SignupStatus.registered.value,
                            OfflineSignup.checked_in_at.is_(None))
    elif status == "attended":
        query = query.where(OfflineSignup.checked_in_at.is_not(None))
    elif status == "review":
        query = query.where(OfflineSignup.customer_id.is_(None),
                            OfflineSignup.status != SignupStatus.cancelled.value)
    elif status in {s.value for s in SignupStatus}:
        query = query.where(OfflineSignup.status == status)
    elif status:
        raise Invalid("Unknown sign-up filter", field="status")
    return list(session.scalars(query.order_by(OfflineSignup.id)))


def no_shows(session: Session, *, event_id: int, viewer: Viewer) -> list[OfflineSignup]:
    return list_signups(session, event_id=event_id, viewer=viewer, status="no_show")


# ---------------------------------------------------------------- invitations and follow-ups (今日任务)


def _task_text(template: str, values: variables.Values, link: str) -> str:
    text = variables.render(template, values).strip()
    return f"{text} {link}".strip() if link else text


@dataclass
class InviteResult:
    invited: int = 0
    already: int = 0  # invited before, or signed up already
    no_account: int = 0  # not a friend of a host account the viewer operates
    tasks: int = 0


def invite_segment(session: Session, *, event_id: int, segment_id: int, link: str, viewer: Viewer,
                   now: datetime | None = None) -> InviteResult:
    """Invite a segment's customers (as the viewer may see them): one task per customer for the operator of
    the account they are a friend of, with the invitation and the sign-up ``link``."""
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.models import TaskKind
    from siyu.segments import service as segments_service

    now = now or utcnow()
    event = get_event(session, event_id=event_id, viewer=viewer)
    if event.status != EventStatus.open.value or has_ended(event, now):
        raise Invalid("This event takes no more sign-ups", field="event")
    segment = segments_service.get_segment(session, segment_id=segment_id, viewer=viewer)
    segments_service.check_segment(session, segment=segment, viewer=viewer)
    template = event.invite_text or _("{salutation}, you are invited to {event} on {when} at {place}. Sign up here:",
                                      salutation="{称呼}", event=event.name,
                                      when=event.starts_at.astimezone(local_zone()).strftime("%m-%d %H:%M"),
                                      place=event.place or "—")
    if len(_task_text(template, variables.Values(salutation="x" * 16, account="x" * 16), link)) > TASK_DETAIL_MAX:
        raise Invalid("The invitation and its link are too long for a task: shorten the invitation",
                      field="invite_text")
    flt = customers_service.CustomerFilter(segment_id=segment.id)
    result = InviteResult()
    day = now.astimezone(local_zone()).date()
    after = 0
    while True:
        ids = customers_service.matching_ids(session, flt=flt, viewer=viewer, after_id=after, limit=BATCH)
        if not ids:
            break
        after = ids[-1]
        seen = set(session.scalars(select(OfflineInvitation.customer_id).where(
            OfflineInvitation.event_id == event.id, OfflineInvitation.customer_id.in_(ids))))
        seen |= set(session.scalars(select(OfflineSignup.customer_id).where(
            OfflineSignup.event_id == event.id, OfflineSignup.customer_id.in_(ids))))
        friends: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
        for c, a, added in session.execute(select(Friendship.customer_id, Friendship.account_id, Friendship.added_at)
                                           .where(Friendship.customer_id.in_(ids),
                                                  Friendship.status == FriendshipStatus.active.value)):
            if viewer.can_see_account(int(a)) and (not event.account_ids or int(a) in event.account_ids):
                friends[int(c)].append((added, int(a)))
        pairs: list[tuple[int, int]] = []
        for customer_id in ids:
            if customer_id in seen:
                result.already += 1
            elif not friends.get(customer_id):
                result.no_account += 1
            else:
                pairs.append((customer_id, max(friends[customer_id])[1]))
        if not pairs:
            continue
        values = variables.values_for(session, pairs)
        rows = [{"customer_id": c, "account_id": a, "detail": _task_text(template, values[(c, a)], link),
                 "ref_id": event.id} for c, a in pairs]
        found = maintenance_service.add_tasks(session, rows, kind=TaskKind.event_invite, day=day, now=now)
        table = cast(Table, OfflineInvitation.__table__)
        session.execute(dialect_insert(session, table).on_conflict_do_nothing(), [
            {"event_id": event.id, "customer_id": c, "account_id": a, "task_id": found.get((c, a)),
             "invited_by_id": viewer.user_id, "created_at": now} for c, a in pairs])
        result.invited += len(pairs)
        result.tasks += len(found)
    team_service.record_audit(session, actor=viewer, action="invite", entity_type="offline_event",
                              entity_id=event.id, entity_name=event.name,
                              after={"segment_id": segment.id, "invited": result.invited, "already": result.already,
                                     "no_account": result.no_account})
    return result


@dataclass
class FollowUpResult:
    attended: int = 0
    no_shows: int = 0
    unmatched: int = 0  # sign-ups with no customer or account: nobody to follow up through


def follow_up(session: Session, *, event_id: int, viewer: Viewer = SYSTEM,
              now: datetime | None = None) -> FollowUpResult:
    """After the event, once: a follow-up task for each attendee and each no-show, with their own text."""
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.models import TaskKind

    now = now or utcnow()
    event = get_event(session, event_id=event_id, viewer=viewer)
    if not has_ended(event, now):
        raise Invalid("Follow-ups are created after the event has ended", field="event")
    claimed = session.execute(update(OfflineEvent).where(OfflineEvent.id == event.id,
                                                         OfflineEvent.followed_up_at.is_(None))
                              .values(followed_up_at=now).execution_options(synchronize_session=False))
    if not cast(Any, claimed).rowcount:
        raise Invalid("Follow-up tasks for this event were already created", field="event")
    session.refresh(event)
    came_text = event.attended_text or _("{salutation}, thank you for coming to {event}! How did you like it?",
                                         salutation="{称呼}", event=event.name)
    missed_text = event.no_show_text or _("{salutation}, we missed you at {event}! We will save you a seat next time.",
                                          salutation="{称呼}", event=event.name)
    result = FollowUpResult()
    signups = session.scalars(select(OfflineSignup).where(OfflineSignup.event_id == event.id,
                                                          OfflineSignup.status == SignupStatus.registered.value))
    chosen: list[tuple[int, int, bool]] = []
    for signup in signups:
        account_id = signup.account_id
        if signup.customer_id is not None and account_id is None:
            account_id = _account_for(session, signup.customer_id, event, SYSTEM)
        if signup.customer_id is None or account_id is None:
            result.unmatched += 1
            continue
        chosen.append((signup.customer_id, account_id, signup.checked_in_at is not None))
    values = variables.values_for(session, [(c, a) for c, a, _came in chosen])
    rows = []
    for customer_id, account_id, came in chosen:
        text = came_text if came else missed_text
        label = _("Attended") if came else _("No-show")
        rows.append({"customer_id": customer_id, "account_id": account_id, "ref_id": event.id,
                     "detail": f"[{label}] {variables.render(text, values[(customer_id, account_id)])}"})
        if came:
            result.attended += 1
        else:
            result.no_shows += 1
    day = now.astimezone(local_zone()).date()
    maintenance_service.add_tasks(session, rows, kind=TaskKind.event_follow, day=day, now=now)
    team_service.record_audit(session, actor=viewer, action="follow_up", entity_type="offline_event",
                              entity_id=event.id, entity_name=event.name,
                              after={"attended": result.attended, "no_shows": result.no_shows})
    return result


def follow_up_ended(session: Session, *, now: datetime | None = None) -> int:
    """The periodic job: follow-ups for every event that ended and has none yet; how many events."""
    now = now or utcnow()
    due = list(session.scalars(select(OfflineEvent.id).where(
        OfflineEvent.ends_at <= now, OfflineEvent.followed_up_at.is_(None),
        OfflineEvent.status != EventStatus.cancelled.value)))
    for event_id in due:
        follow_up(session, event_id=event_id, now=now)
    return len(due)


__all__ = ["CheckIn", "Counts", "EventNotFound", "FollowUpResult", "InviteResult", "SignupNotFound",
           "SignupResult", "cancel_signup", "check_in", "counts", "create_event", "event_for_key", "follow_up",
           "get_event", "invite_segment", "list_events", "list_signups", "no_shows", "public_key", "sign_up",
           "sign_up_customer", "sign_up_person", "update_event"]
