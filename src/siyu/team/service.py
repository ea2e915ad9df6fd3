"""Users, roles, console sessions, log-in throttling and the audit log.

Every create/update/delete/export anywhere in Siyu calls ``record_audit`` in the same
transaction as the change, so the log can never disagree with the data.

Sessions: the console's cookie carries only a random id; ``user_session`` keeps its hash, and
every page looks it up (one indexed read). Logout ends that row; a password change,
deactivation and an admin's "log out everywhere" end all of a user's rows and move the user's
token generation on, which ends their API tokens too.

Log-in throttling counts failures per (username, address) and, more loosely, per username
from every address. Five failures from one address lock that address out of that username for
15 minutes. Twenty from anywhere lock the username — except from addresses the user has
logged in from before, so an attacker elsewhere cannot lock the real user out at their desk.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from siyu.core import security
from siyu.core.db import dialect_insert, missing_ids, utcnow
from siyu.core.errors import Conflict, Forbidden, Invalid, NotFound, TooManyAttempts, Unauthorized
from siyu.core.i18n import N_, _
from siyu.core.pagination import Page, decode_cursor, encode_cursor
from siyu.core.settings import get_settings, local_zone
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import Viewer
from siyu.team import audit_labels
from siyu.team.models import AuditEntry, LoginThrottle, Role, User, UserAccount, UserSession
from siyu.team.schemas import UserIn, UserUpdate


class UserNotFound(NotFound):
    pass


ANY_ADDRESS = "*"  # the login_throttle row counting a username's failures from every address
SESSION_SEEN_EVERY = timedelta(minutes=5)  # last_seen_at is written at most this often per session
KNOWN_ADDRESS_DAYS = 30  # a session's row (and its address) is kept this long after it expired


def viewer_for(user: User) -> Viewer:
    role = user.role_enum
    return Viewer(
        user_id=user.id,
        username=user.username,
        role=role.value,
        sees_all_accounts=role.sees_all_accounts,
        account_ids=frozenset(user.account_ids),
        # Service staff answer chats; they do not need customers' phone numbers in full.
        may_see_phones=role is not Role.service,
    )


def get_user(session: Session, *, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UserNotFound("User not found")
    return user


def active_viewer(session: Session, *, user_id: int) -> Viewer:
    """The viewer background work runs as: the user who started it, as they are now."""
    user = get_user(session, user_id=user_id)
    if not user.is_active:
        raise Forbidden("This user is deactivated")
    return viewer_for(user)


def display_names(session: Session, *, user_ids: Iterable[int | None]) -> dict[int, str]:
    """Names to show for these users (timeline operators, account owners)."""
    ids = sorted({i for i in user_ids if i is not None})
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.display_name, User.username).where(User.id.in_(ids)))
    return {user_id: display or username for user_id, display, username in rows}


def find_user(session: Session, *, username: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.username) == username.strip().lower()))


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def _require_accounts(session: Session, account_ids: Iterable[int]) -> None:
    missing = missing_ids(session, "account", account_ids)
    if missing:
        raise Invalid("Account {account_id} not found", field="account_ids", account_id=missing[0])


def create_user(session: Session, *, data: UserIn, actor: Viewer) -> User:
    if find_user(session, username=data.username) is not None:
        raise Conflict("Username {username} is already taken", field="username", username=data.username)
    user = User(
        username=data.username,
        display_name=data.display_name or data.username,
        password_hash=security.hash_password(data.password),
        role=data.role.value,
    )
    _require_accounts(session, data.account_ids)
    user.account_links = [UserAccount(account_id=a) for a in sorted(set(data.account_ids))]
    session.add(user)
    session.flush()
    record_audit(session, actor=actor, action="create", entity_type="user", entity_id=user.id,
                 summary=user.username, after=_user_snapshot(user))
    return user


def update_user(session: Session, *, user_id: int, data: UserUpdate, actor: Viewer) -> User:
    user = get_user(session, user_id=user_id)
    before = _user_snapshot(user)
    if data.is_active is False and user.id == actor.user_id:
        raise Invalid("You cannot deactivate yourself", field="is_active")
    leaves_admins = (data.role is not None and data.role is not Role.admin) or data.is_active is False
    if leaves_admins and user.role == Role.admin.value and user.is_active:
        _keep_an_admin(session, leaving=user, field="role" if data.role is not None else "is_active")
    ends_sessions = data.password is not None or (data.is_active is False and user.is_active)
    if data.display_name is not None:
        user.display_name = data.display_name
    if data.role is not None:
        user.role = data.role.value
    if data.is_active is not None:
        user.is_active = data.is_active
    if data.account_ids is not None:
        _require_accounts(session, data.account_ids)
        user.account_links = [UserAccount(account_id=a) for a in sorted(set(data.account_ids))]
    if data.password is not None:
        user.password_hash = security.hash_password(data.password)
    if ends_sessions:
        end_all_sessions(session, user=user)
    session.flush()
    record_audit(session, actor=actor, action="update", entity_type="user", entity_id=user.id,
                 summary=user.username, before=before, after=_user_snapshot(user))
    return user


def _keep_an_admin(session: Session, *, leaving: User, field: str) -> None:
    """Refuse a change that would leave the company without an active administrator."""
    # Locks the other admins' rows (PostgreSQL), so two admins demoting each other at once
    # cannot both pass this check.
    others = session.scalars(
        select(User.id).where(User.role == Role.admin.value, User.is_active.is_(True), User.id != leaving.id)
        .with_for_update()).first()
    if others is None:
        raise Conflict("{username} is the last active administrator; make another user an administrator first",
                       field=field, username=leaving.username)


def _user_snapshot(user: User) -> dict[str, Any]:
    # Never the password hash: the audit log is readable by admins.
    return {
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "is_active": user.is_active,
        "account_ids": user.account_ids,
    }


def authenticate(session: Session, *, username: str, password: str, address: str = "") -> User:
    """The user for these credentials; throttles repeated failures per username and address."""
    key = username.strip().lower()[:64]
    address = address[:64]
    now = utcnow()
    rows = {row.address: row for row in session.scalars(
        select(LoginThrottle).where(LoginThrottle.username == key, LoginThrottle.address.in_((address, ANY_ADDRESS))))}
    locked_until = _locked_until(rows.get(address), now)
    everywhere = _locked_until(rows.get(ANY_ADDRESS), now)
    if locked_until is None and everywhere is not None and not _known_address(session, username=key, address=address):
        locked_until = everywhere
    if locked_until is not None:
        minutes = max(1, int((locked_until - now).total_seconds() // 60) + 1)
        raise TooManyAttempts("Too many failed logins; try again in {minutes} minutes", minutes=minutes)
    user = find_user(session, username=key)
    if user is None or not user.is_active or not security.verify_password(user.password_hash, password):
        _register_failure(session, key=key, address=address, now=now)
        raise Unauthorized("Wrong username or password")
    if address in rows:
        session.delete(rows[address])
    if security.needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    user.last_login_at = now
    return user


def _locked_until(row: LoginThrottle | None, now: datetime) -> datetime | None:
    return row.locked_until if row is not None and row.locked_until and row.locked_until > now else None


def _known_address(session: Session, *, username: str, address: str) -> bool:
    """Has this user logged in from this address (within the sessions kept)?"""
    if not address:
        return False
    return session.scalar(
        select(UserSession.id).join(User, User.id == UserSession.user_id)
        .where(func.lower(User.username) == username, UserSession.ip == address).limit(1)) is not None


def _register_failure(session: Session, *, key: str, address: str, now: datetime) -> None:
    settings = get_settings()
    window = timedelta(minutes=settings.login_lock_minutes)
    # The failure must be remembered although the caller's request fails and rolls back:
    # it is written in a transaction of its own, leaving the caller's untouched.
    limits = {address: settings.login_max_failures, ANY_ADDRESS: settings.login_max_failures_any_address}
    with Session(bind=session.get_bind()) as own:
        # Rows made race-free (two processes failing at once), then counted under a row lock.
        own.execute(dialect_insert(own, LoginThrottle.__table__).on_conflict_do_nothing(),
                    [{"username": key, "address": where, "failures": 0} for where in limits])
        for throttle in own.scalars(select(LoginThrottle).where(
                LoginThrottle.username == key, LoginThrottle.address.in_(list(limits))).with_for_update()):
            limit = limits[throttle.address]
            if throttle.last_failure_at is not None and now - throttle.last_failure_at > window:
                throttle.failures = 0  # failures count within the lock's window, not forever
            throttle.failures += 1
            throttle.last_failure_at = now
            if throttle.failures >= limit:
                throttle.locked_until = now + window
                throttle.failures = 0
        own.commit()
    session.expire_all()


def locked_usernames(session: Session) -> set[str]:
    """Usernames locked right now, from some address or from all of them."""
    return set(session.scalars(select(LoginThrottle.username).where(LoginThrottle.locked_until > utcnow())))


def unlock_user(session: Session, *, user_id: int, actor: Viewer) -> User:
    """Forget a user's failed logins, so they can log in again at once (audited)."""
    user = get_user(session, user_id=user_id)
    ended = session.execute(delete(LoginThrottle).where(LoginThrottle.username == user.username.lower()))
    record_audit(session, actor=actor, action="unlock", entity_type="user", entity_id=user.id,
                 summary=user.username, after={"throttle_rows_removed": getattr(ended, "rowcount", 0)})
    return user


# ---------------------------------------------------------------- console sessions


def start_session(session: Session, *, user: User, user_agent: str = "", ip: str = "") -> str:
    """A new console session for this user; returns the id for the cookie (kept only as a hash)."""
    session_id = security.new_session_id()
    now = utcnow()
    session.execute(delete(UserSession).where(UserSession.user_id == user.id,
                                              UserSession.expires_at < now - timedelta(days=KNOWN_ADDRESS_DAYS)))
    session.add(UserSession(token_hash=security.session_id_hash(session_id), user_id=user.id, created_at=now,
                            last_seen_at=now, expires_at=now + timedelta(hours=get_settings().session_ttl_hours),
                            user_agent=user_agent[:255], ip=ip[:64]))
    return session_id


def user_for_session(session: Session, *, session_id: str) -> User | None:
    """The user of a live session (not ended, not expired, user active), or None."""
    row = session.execute(
        select(UserSession, User).join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == security.session_id_hash(session_id))).first()
    if row is None:
        return None
    live, user = row
    now = utcnow()
    if live.revoked_at is not None or live.expires_at <= now or not user.is_active:
        return None
    if now - live.last_seen_at >= SESSION_SEEN_EVERY:
        # Written in its own short transaction, at most every few minutes: page views stay reads.
        with Session(bind=session.get_bind()) as own:
            own.execute(update(UserSession).where(UserSession.id == live.id).values(last_seen_at=now))
            own.commit()
    return user


def end_session(session: Session, *, session_id: str) -> None:
    session.execute(update(UserSession).where(UserSession.token_hash == security.session_id_hash(session_id),
                                              UserSession.revoked_at.is_(None)).values(revoked_at=utcnow()))


def end_all_sessions(session: Session, *, user: User) -> int:
    """End every console session and API token of this user; returns how many sessions were live."""
    now = utcnow()
    result = session.execute(
        update(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None),
                                  UserSession.expires_at > now).values(revoked_at=now))
    user.token_generation = (user.token_generation or 0) + 1
    return int(getattr(result, "rowcount", 0) or 0)


def live_sessions(session: Session, *, user_id: int | None = None) -> list[UserSession]:
    """Sessions not ended and not expired, newest first (of one user, or of everyone)."""
    query = select(UserSession).where(UserSession.revoked_at.is_(None), UserSession.expires_at > utcnow())
    if user_id is not None:
        query = query.where(UserSession.user_id == user_id)
    return list(session.scalars(query.order_by(UserSession.last_seen_at.desc())))


def reset_password(session: Session, *, user_id: int, actor: Viewer) -> str:
    """A new generated password for the user, returned once to show the admin (never stored or logged
    in clear). Every session and token of the user ends; audited without the password."""
    user = get_user(session, user_id=user_id)
    if not user.is_active:
        raise Invalid("This user is disabled; enable them before resetting the password", field="password")
    password = security.generate_password()
    user.password_hash = security.hash_password(password)
    ended = end_all_sessions(session, user=user)
    session.execute(delete(LoginThrottle).where(LoginThrottle.username == user.username.lower()))
    record_audit(session, actor=actor, action="reset_password", entity_type="user", entity_id=user.id,
                 summary=user.display_name or user.username, after={"sessions_ended": ended})
    return password


def log_out_everywhere(session: Session, *, user_id: int, actor: Viewer) -> int:
    """An admin ends all of a user's sessions and tokens (a lost laptop, a shared password); audited."""
    user = get_user(session, user_id=user_id)
    ended = end_all_sessions(session, user=user)
    record_audit(session, actor=actor, action="logout_everywhere", entity_type="user", entity_id=user.id,
                 summary=user.username, after={"sessions_ended": ended})
    return ended


def user_for_token(session: Session, *, token: str) -> User:
    claims = security.read_token(token)
    if claims is None:
        raise Unauthorized("Invalid or expired token")
    user = session.get(User, claims.user_id)
    if (user is None or not user.is_active or security.password_stamp(user.password_hash) != claims.stamp
            or claims.generation != user.token_generation):
        raise Unauthorized("Invalid or expired token")
    return user


def issue_token(user: User) -> security.IssuedToken:
    return security.issue_token(user.id, security.password_stamp(user.password_hash), user.token_generation)


def record_audit(
    session: Session,
    *,
    actor: Viewer,
    action: str,
    entity_type: str,
    entity_id: int | str = "",
    summary: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    entity_name: str | None = None,
) -> AuditEntry:
    """One entry, written with the change. Every ``action`` and ``entity_type`` has a label in
    ``team.audit_labels``. ``entity_name`` is the object's name now (kept: a deleted object still
    reads); without it, the summary of an entry about one object, which its writers set to its name."""
    actor_user = session.get(User, actor.user_id) if actor.user_id is not None else None
    entry = AuditEntry(
        user_id=actor.user_id,
        actor=actor.username,
        actor_name=((actor_user.display_name or actor_user.username) if actor_user else actor.username)[:64],
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        # An entry about one object (it has an id) names it; one about a list or a setting names none.
        entity_name=(entity_name if entity_name is not None else summary if entity_id != "" else "")[:200],
        summary=summary[:500],
        before=before,
        after=after,
    )
    session.add(entry)
    return entry


AUDIT_EXPORT_MAX_ROWS = 50_000  # one CSV holds at most this many entries (newest first); narrow the filter for more
AUDIT_EXPORT_BATCH = 500  # entries read per query while a CSV streams


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page, its CSV and the API filter by; dates are local (Asia/Shanghai) days."""

    user_id: int | None = None
    entity_type: str | None = None
    action: str | None = None
    since: date | None = None
    until: date | None = None  # inclusive

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise Invalid("The start date is after the end date", field="since")

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.user_id is not None:
            query = query.where(AuditEntry.user_id == self.user_id)
        if self.entity_type:
            query = query.where(AuditEntry.entity_type == self.entity_type)
        if self.action:
            query = query.where(AuditEntry.action == self.action)
        zone = local_zone()
        if self.since:
            start = datetime.combine(self.since, time.min, tzinfo=zone).astimezone(UTC)
            query = query.where(AuditEntry.at >= start)
        if self.until:
            end = datetime.combine(self.until + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
            query = query.where(AuditEntry.at < end)
        return query

    def params(self) -> dict[str, str]:
        """The filter as query parameters (links to the next page and the CSV keep it)."""
        out = {"user_id": str(self.user_id) if self.user_id is not None else "", "entity_type": self.entity_type or "",
               "action": self.action or "", "since": self.since.isoformat() if self.since else "",
               "until": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in out.items() if v}


def list_audit(
    session: Session, *, entity_type: str | None = None, limit: int = 50, cursor: str | None = None,
    flt: AuditFilter | None = None,
) -> Page[AuditEntry]:
    flt = flt or AuditFilter(entity_type=entity_type)
    query = flt.apply(select(AuditEntry)).order_by(AuditEntry.id.desc())
    if cursor:
        try:  # a hand-edited cursor is bad input, not a crash
            (last_id,) = decode_cursor(cursor)
            last_id = int(last_id)
        except (ValueError, TypeError) as exc:
            raise Invalid("Invalid cursor", field="cursor") from exc
        query = query.where(AuditEntry.id < last_id)
    rows = list(session.scalars(query.limit(limit + 1)))
    next_cursor = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
    return Page(items=rows[:limit], next_cursor=next_cursor)


def audit_actor_names(session: Session, entries: Iterable[AuditEntry]) -> dict[int, str]:
    """Today's display names of the entries' actors (their stored names stand in for a removed user)."""
    return display_names(session, user_ids=(e.user_id for e in entries))


def audit_actors(session: Session) -> list[User]:
    """Users who can appear in the log, for the actor filter."""
    return list(session.scalars(select(User).order_by(User.display_name, User.id)))


AUDIT_CSV_HEADERS = (N_("Time"), N_("Who"), N_("Action"), N_("Object kind"), N_("Object"),
                     N_("Summary"), N_("Changes"))


def iter_audit_csv(session: Session, *, flt: AuditFilter) -> Iterator[bytes]:
    """The filtered log as CSV (UTF-8 with BOM, for Excel), newest first, in batches, at most
    ``AUDIT_EXPORT_MAX_ROWS`` entries. Labels through ``audit_labels``, cells neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([_(h) for h in AUDIT_CSV_HEADERS])
    yield ("\ufeff" + buffer.getvalue()).encode("utf-8")
    written, last_id = 0, None
    zone = local_zone()
    while written < AUDIT_EXPORT_MAX_ROWS:
        query = flt.apply(select(AuditEntry)).order_by(AuditEntry.id.desc())
        if last_id is not None:
            query = query.where(AuditEntry.id < last_id)
        batch = list(session.scalars(query.limit(min(AUDIT_EXPORT_BATCH, AUDIT_EXPORT_MAX_ROWS - written))))
        if not batch:
            break
        names = audit_actor_names(session, batch)
        buffer.seek(0)
        buffer.truncate()
        for entry in batch:
            d = audit_labels.describe(entry, actor_names=names)
            changes = "；".join(f"{c.label}：{c.before} → {c.after}" if c.before else f"{c.label}：{c.after}"
                               for c in d.changes)
            writer.writerow([neutralise(v) for v in (entry.at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                                                     d.actor, d.action, d.kind, d.name, d.summary, changes)])
        yield buffer.getvalue().encode("utf-8")
        written += len(batch)
        last_id = batch[-1].id
        session.expunge_all()


def count_audit(session: Session, *, flt: AuditFilter, cap: int = AUDIT_EXPORT_MAX_ROWS) -> int:
    """How many entries the filter holds, counted up to ``cap`` (the CSV's bound)."""
    inner = flt.apply(select(AuditEntry.id)).limit(cap).subquery()
    return int(session.scalar(select(func.count()).select_from(inner)) or 0)
