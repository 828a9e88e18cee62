"""Access tokens: JWT (HS256) signed with the API secret.

Claims: sub (identity), room (absent for admin and messaging tokens), role, name (optional), exp, iat
(to the millisecond, so a token issued just after a room was closed is told apart from one issued
just before), visit (optional: the visit id of the configured room the token was issued for).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from mediasrv.authz import ROLES, check_identity, require_participant_of
from mediasrv.errors import AuthError

__all__ = ["AuthError", "Identity", "bearer_token", "mint_token", "verify_token"]
# exp beyond year 9999 is not a time a token of ours can carry.
MAX_EXP = 253402300800


@dataclass(frozen=True)
class Identity:
    """A verified token's claims. What the identity may do is decided in `mediasrv.authz`."""

    sub: str
    role: str
    room: str | None
    name: str | None
    exp: int
    iat: float | None = None
    visit: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def mint_token(
    secret: str,
    *,
    identity: str,
    role: str,
    room: str | None = None,
    name: str | None = None,
    ttl_s: int = 3600,
    now: float | None = None,
    visit: str | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLES)}")
    check_identity("identity", identity)
    if room is not None:
        check_identity("room", room)
        if role == "admin":
            raise ValueError("admin tokens are not bound to a room")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    iat = round(now if now is not None else time.time(), 3)
    claims: dict[str, Any] = {"sub": identity, "role": role, "iat": iat, "exp": int(iat) + int(ttl_s)}
    if room is not None:
        claims["room"] = room
        if visit is not None:
            claims["visit"] = visit
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
    iat, visit = claims.get("iat"), claims.get("visit")
    if iat is not None and (not isinstance(iat, int | float) or isinstance(iat, bool)
                            or not 0 <= iat < MAX_EXP):
        raise AuthError(401, "invalid_token", "the access token's iat must be a Unix time in seconds")
    if visit is not None and (not isinstance(visit, str) or tok_room is None):
        raise AuthError(401, "invalid_token", "the access token's visit claim is malformed")
    ident = Identity(sub=sub, role=role, room=tok_room, name=name, exp=exp,
                     iat=None if iat is None else float(iat), visit=visit)
    if room is not None:
        require_participant_of(ident, room)
    return ident


def bearer_token(authorization: str | None) -> str:
    """The token from an `Authorization: Bearer <token>` header ('' when absent)."""
    if not authorization:
        return ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError(401, "invalid_token", "use 'Authorization: Bearer <token>'")
    return value.strip()
