"""Helpers shared by the control API handlers: validation of JSON fields and queries, auditing."""

from __future__ import annotations

import math
import re
from typing import Any

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, authenticate, client_address
from mediasrv.auth import Identity
from mediasrv.authz import has_control_chars, require_messaging_token

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_path_id(value: str) -> bool:
    """Whether `value` has the shape of a server-generated id (anything else cannot exist)."""
    return bool(_ID.match(value))


def check_path_id(what: str, value: str) -> str:
    """Server-generated ids in paths: anything else cannot exist, so it is a 404, not a crash."""
    if not is_path_id(value):
        raise HttpError(404, "not_found", f"no such {what}")
    return value


def reject_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise HttpError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")


def get_str(data: dict[str, Any], name: str, *, required: bool = True, max_len: int = 200,
            default: str | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise HttpError(400, "missing_field", f"{name} is required")
        return default
    if not isinstance(value, str) or len(value) > max_len:
        raise HttpError(400, "invalid_field", f"{name} must be a string of at most {max_len} chars")
    if "\x00" in value:
        raise HttpError(400, "invalid_field", f"{name} must not contain NUL characters")
    return value


def get_bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise HttpError(400, "invalid_field", f"{name} must be true or false")
    return value


def get_int(data: dict[str, Any], name: str, *, minimum: int, maximum: int,
            default: int | None = None) -> int | None:
    value = data.get(name, default)
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise HttpError(400, "invalid_field", f"{name} must be an integer in {minimum}..{maximum}")
    return value


def query_str(request: web.Request, name: str, *, max_len: int = 200) -> str | None:
    """A text query parameter, if given: 1..max_len characters, no NUL (PostgreSQL's text refuses
    it, SQLite would store it) nor other control characters."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not 1 <= len(raw) <= max_len or has_control_chars(raw):
        raise HttpError(400, "invalid_query",
                        f"{name} must be 1..{max_len} characters, without control characters")
    return raw


def query_int(request: web.Request, name: str, *, minimum: int, maximum: int,
              default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "invalid_query", f"{name} must be an integer") from None
    if not minimum <= value <= maximum:
        raise HttpError(400, "invalid_query", f"{name} must be in {minimum}..{maximum}")
    return value


def query_float(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, "invalid_query", f"{name} must be a number") from None
    if not math.isfinite(value):
        raise HttpError(400, "invalid_query", f"{name} must be finite")
    return value


def messaging_identity(request: web.Request) -> Identity:
    """A token for messaging: no room claim (room tokens are for one live visit)."""
    return require_messaging_token(authenticate(request),
                                   "room tokens cannot be used for messages; use a messaging token")


async def audit(request: web.Request, ident: Identity, action: str, *, target: str | None = None,
                room: str | None = None, detail: dict[str, Any] | None = None,
                visit: str | None = None) -> None:
    await request.app[keys.AUDIT].record(
        actor=ident.sub, role=ident.role, action=action, room=room, visit=visit, target=target,
        address=client_address(request), detail=detail,
    )
