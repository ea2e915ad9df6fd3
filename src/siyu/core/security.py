"""Password hashing, API tokens, session ids and CSRF tokens — every secret-handling rule in one file."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from siyu.core.settings import get_settings

_hasher = PasswordHasher()
TOKEN_SALT = "siyu.api-token.v1"  # noqa: S105 (a namespace, not a secret)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(get_settings().resolved_secret_key(), salt=TOKEN_SALT)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    stamp: str  # the tail of the password hash: a new password ends the token
    generation: int  # the user's token generation: "log out everywhere" and deactivation end the token


def issue_token(user_id: int, password_stamp: str, generation: int = 0) -> IssuedToken:
    """A signed, expiring bearer token, tied to the current password and token generation."""
    ttl = timedelta(minutes=get_settings().token_ttl_minutes)
    token = _serializer().dumps({"uid": user_id, "stamp": password_stamp, "gen": generation})
    return IssuedToken(token=token, expires_at=datetime.now(UTC) + ttl)


def read_token(token: str) -> TokenClaims | None:
    """What a valid token says, or None if forged or expired."""
    max_age = get_settings().token_ttl_minutes * 60
    try:
        data = _serializer().loads(token, max_age=max_age)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
        return None
    generation = data.get("gen", 0)
    return TokenClaims(user_id=data["uid"], stamp=str(data.get("stamp", "")),
                       generation=generation if isinstance(generation, int) else -1)


def new_session_id() -> str:
    """The random id a console session cookie carries: 256 bits, meaningless without the server's row."""
    return secrets.token_urlsafe(32)


def session_id_hash(session_id: str) -> str:
    """What the database keeps of a session id: a leaked table does not hand out live cookies."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def password_stamp(password_hash: str) -> str:
    # Changing the password changes the hash's salt, which invalidates older tokens.
    return password_hash[-12:]


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected, given)
