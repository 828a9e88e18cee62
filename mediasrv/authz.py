"""Who may do what: roles, the rule for identity and room names, and the role checks every
transport uses (HTTP handlers and the WebSocket room protocol alike).

A check returns the identity it was given or raises `AuthError` (403) with the code the client
sees; the caller may pass the refusal message that fits its operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mediasrv.errors import AuthError, MediasrvError

if TYPE_CHECKING:
    from mediasrv.auth import Identity

ROOM_ROLES = frozenset({"clinician", "patient", "interpreter", "guest", "observer"})
ROLES = ROOM_ROLES | {"admin"}
# Roles that may publish media into a room.
PUBLISHING_ROLES = frozenset({"clinician", "patient", "interpreter", "guest"})
# Roles that may moderate a room (admit from the waiting room, remove, mute, record). A clinician
# moderates only the room of their token; an admin any room (see `is_moderator_of`).
MODERATOR_ROLES = frozenset({"clinician", "admin"})
# Roles that may send a message (written or recorded) with a messaging token.
MESSAGE_SENDER_ROLES = frozenset({"patient", "clinician"})
MAX_IDENTITY_LEN = 128


class InvalidIdentity(MediasrvError, ValueError):
    """An identity or room name breaks the naming rule (400 invalid_field over HTTP)."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_field", message, 400)


def has_control_chars(value: str) -> bool:
    """C0 control characters or DEL (NUL among them: PostgreSQL's text refuses it)."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def check_identity(what: str, value: Any) -> str:
    """Identities and room names: a string of 1..MAX_IDENTITY_LEN characters without control
    characters (C0 and DEL) or '/' (they end up in URL paths, logs and file names)."""
    if not isinstance(value, str) or not value or len(value) > MAX_IDENTITY_LEN:
        raise InvalidIdentity(f"{what} must be a string of 1..{MAX_IDENTITY_LEN} chars")
    if has_control_chars(value) or "/" in value:
        raise InvalidIdentity(f"{what} must not contain control characters or '/'")
    return value


# --- predicates ---------------------------------------------------------------------------------
def is_participant_of(ident: Identity, room: str) -> bool:
    """A token for `room`, or an admin token (admins are not bound to a room)."""
    return ident.is_admin or ident.room == room


def is_moderator_of(ident: Identity, room: str | None) -> bool:
    """An admin, or a clinician holding a token for `room`."""
    if ident.is_admin:
        return True
    return ident.role in MODERATOR_ROLES and room is not None and ident.room == room


def is_party(ident: Identity, *identities: str) -> bool:
    """One of `identities` (the sender and recipient of a message, the owner of a session), or an admin."""
    return ident.is_admin or ident.sub in identities


# --- checks -------------------------------------------------------------------------------------
def require_admin(ident: Identity) -> Identity:
    if not ident.is_admin:
        raise AuthError(403, "forbidden", "this operation needs an admin token")
    return ident


def require_participant_of(ident: Identity, room: str) -> Identity:
    if not is_participant_of(ident, room):
        raise AuthError(403, "wrong_room", "the access token is not valid for this room")
    return ident


def require_moderator(ident: Identity, room: str | None,
                      refusal: str = "this operation needs a clinician of the room or an admin") -> Identity:
    """A moderator of `room`: 403 wrong_room for a token of another room, 403 forbidden for a role
    that does not moderate. `room=None` asks for a moderator of the token's own room (a clinician's
    messaging token, which has no room, moderates nothing)."""
    if room is not None:
        require_participant_of(ident, room)
    if not is_moderator_of(ident, ident.room if room is None else room):
        raise AuthError(403, "forbidden", refusal)
    return ident


def require_publisher(ident: Identity) -> Identity:
    if ident.role not in PUBLISHING_ROLES:
        raise AuthError(403, "forbidden", f"role {ident.role!r} cannot publish")
    return ident


def require_messaging_token(ident: Identity, refusal: str) -> Identity:
    """Messages are not bound to a visit: room tokens are for one live visit only."""
    if ident.room is not None:
        raise AuthError(403, "room_token", refusal)
    return ident


def require_message_sender(ident: Identity, refusal: str) -> Identity:
    if ident.role not in MESSAGE_SENDER_ROLES:
        raise AuthError(403, "forbidden", refusal)
    return ident
