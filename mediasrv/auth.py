"""Access tokens: JWT (HS256) signed with the API secret.

Claims: sub (identity), room (absent for admin and messaging tokens), role, name (optional), exp, iat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

ROOM_ROLES = frozenset({"clinician", "patient", "interpreter", "guest", "observer"})
ROLES = ROOM_ROLES | {"admin"}
# Roles that may publish media into a room.
PUBLISHING_ROLES = frozenset({"clinician", "patient", "interpreter", "guest"})
# Roles that may admit people from the waiting room, start recordings, etc.
MODERATOR_ROLES = frozenset({"clinician", "admin"})
MAX_IDENTITY_LEN = 128
# exp beyond year 9999 is not a time a token of ours can carry.
MAX_EXP = 253402300800


class AuthError(Exception):
    """Authentication (401) or authorization (403) failure, with a machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Identity:
    sub: str
    role: str
    room: str | None
    name: str | None
    exp: int

    @property
    def can_publish(self) -> bool:
        return self.role in PUBLISHING_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_moderator(self) -> bool:
        return self.role in MODERATOR_ROLES


def _check_identity_text(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_IDENTITY_LEN:
        raise ValueError(f"{what} must be a non-empty string of at most {MAX_IDENTITY_LEN} chars")
    if any(ord(c) < 0x20 for c in value) or "/" in value:
        raise ValueError(f"{what} must not contain control characters or '/'")
    return value


def mint_token(
    secret: str,
    *,
    identity: str,
    role: str,
    room: str | None = None,
    name: str | None = None,
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLES)}")
    _check_identity_text("identity", identity)
    if room is not None:
        _check_identity_text("room", room)
        if role == "admin":
            raise ValueError("admin tokens are not bound to a room")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    iat = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": identity, "role": role, "iat": iat, "exp": iat + int(ttl_s)}
    if room is not None:
        claims["room"] = room
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str, *, room: str | None = None) -> Identity:
    """Check signature, expiry and claims. With `room`, the token must be for that room (or admin)."""
    if not token:
        raise AuthError(401, "missing_token", "an access token is required")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp", "sub", "role"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token_expired", "the access token has expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError(401, "bad_signature", "the access token signature is not valid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(401, "invalid_token", f"the access token lacks a claim: {exc.claim}") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, "invalid_token", f"the access token is not valid: {exc}") from None
    role = claims.get("role")
    # A signed token can still carry any JSON: check types before using a claim as a set member.
    if not isinstance(role, str) or role not in ROLES:
        raise AuthError(401, "invalid_token", "the access token has an unknown role")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool) or not 0 < exp < MAX_EXP:
        raise AuthError(401, "invalid_token", "the access token's exp must be a Unix time in seconds")
    sub, tok_room, name = claims.get("sub"), claims.get("room"), claims.get("name")
    if not isinstance(sub, str) or not sub or (tok_room is not None and not isinstance(tok_room, str)):
        raise AuthError(401, "invalid_token", "the access token has malformed claims")
    if name is not None and not isinstance(name, str):
        name = None
    ident = Identity(sub=sub, role=role, room=tok_room, name=name, exp=exp)
    if room is not None and not ident.is_admin and ident.room != room:
        raise AuthError(403, "wrong_room", "the access token is not valid for this room")
    return ident


def bearer_token(authorization: str | None) -> str:
    """The token from an `Authorization: Bearer <token>` header ('' when absent)."""
    if not authorization:
        return ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError(401, "invalid_token", "use 'Authorization: Bearer <token>'")
    return value.strip()
