"""Users, roles, log-in throttling and the audit log.

Every create/update/delete/export anywhere in Siyu calls ``record_audit`` in the same
transaction as the change, so the log can never disagree with the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import security
from siyu.core.db import missing_ids, utcnow
from siyu.core.errors import Conflict, Forbidden, Invalid, NotFound, TooManyAttempts, Unauthorized
from siyu.core.pagination import Page, decode_cursor, encode_cursor
from siyu.core.settings import get_settings
from siyu.core.viewer import Viewer
from siyu.team.models import AuditEntry, LoginThrottle, Role, User, UserAccount
from siyu.team.schemas import UserIn, UserUpdate


class UserNotFound(NotFound):
    pass


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
    if data.display_name is not None:
        user.display_name = data.display_name
    if data.role is not None:
        user.role = data.role.value
    if data.is_active is not None:
        if not data.is_active and user.id == actor.user_id:
            raise Invalid("You cannot deactivate yourself", field="is_active")
        user.is_active = data.is_active
    if data.account_ids is not None:
        _require_accounts(session, data.account_ids)
        user.account_links = [UserAccount(account_id=a) for a in sorted(set(data.account_ids))]
    if data.password is not None:
        user.password_hash = security.hash_password(data.password)
    session.flush()
    record_audit(session, actor=actor, action="update", entity_type="user", entity_id=user.id,
                 summary=user.username, before=before, after=_user_snapshot(user))
    return user


def _user_snapshot(user: User) -> dict[str, Any]:
    # Never the password hash: the audit log is readable by admins.
    return {
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "is_active": user.is_active,
        "account_ids": user.account_ids,
    }


def authenticate(session: Session, *, username: str, password: str) -> User:
    """The user for these credentials; throttles repeated failures per username."""
    key = username.strip().lower()[:64]
    now = utcnow()
    throttle = session.get(LoginThrottle, key)
    if throttle and throttle.locked_until and throttle.locked_until > now:
        minutes = max(1, int((throttle.locked_until - now).total_seconds() // 60) + 1)
        raise TooManyAttempts("Too many failed logins; try again in {minutes} minutes", minutes=minutes)
    user = find_user(session, username=key)
    if user is None or not user.is_active or not security.verify_password(user.password_hash, password):
        _register_failure(session, key=key, now=now)
        raise Unauthorized("Wrong username or password")
    if throttle is not None:
        session.delete(throttle)
    if security.needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    user.last_login_at = now
    return user


def _register_failure(session: Session, *, key: str, now: datetime) -> None:
    settings = get_settings()
    # The failure must be remembered although the caller's request fails and rolls back:
    # it is written in a transaction of its own, leaving the caller's untouched.
    with Session(bind=session.get_bind()) as own:
        throttle = own.get(LoginThrottle, key)
        if throttle is None:
            throttle = LoginThrottle(username=key, failures=0)
            own.add(throttle)
        throttle.failures += 1
        if throttle.failures >= settings.login_max_failures:
            throttle.locked_until = now + timedelta(minutes=settings.login_lock_minutes)
            throttle.failures = 0
        own.commit()
    session.expire_all()


def user_for_token(session: Session, *, token: str) -> User:
    parsed = security.read_token(token)
    if parsed is None:
        raise Unauthorized("Invalid or expired token")
    user_id, stamp = parsed
    user = session.get(User, user_id)
    if user is None or not user.is_active or security.password_stamp(user.password_hash) != stamp:
        raise Unauthorized("Invalid or expired token")
    return user


def issue_token(user: User) -> security.IssuedToken:
    return security.issue_token(user.id, security.password_stamp(user.password_hash))


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
) -> AuditEntry:
    entry = AuditEntry(
        user_id=actor.user_id,
        actor=actor.username,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        summary=summary[:500],
        before=before,
        after=after,
    )
    session.add(entry)
    return entry


def list_audit(
    session: Session, *, entity_type: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
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
