"""TURN REST credentials (the scheme coturn's use-auth-secret checks) and how they are handed out.

A credential is a username `<expiry>:<who>` and a password base64(HMAC-SHA1(turn_secret, username));
coturn recomputes the HMAC from the shared secret and refuses the allocation once `expiry` (Unix
seconds) has passed, so nothing is stored or revoked. `<who>` is a keyed pseudonym of the token's
identity (stable per identity, not reversible): coturn logs usernames, and identities may be patients'.
A credential never outlives the access token it was issued against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from mediasrv.config import Settings


@dataclass(frozen=True)
class TurnCredential:
    urls: tuple[str, ...]
    username: str
    password: str
    expires: int

    def ice_server(self) -> dict[str, Any]:
        """As a WebRTC RTCIceServer (what `new RTCPeerConnection({iceServers})` takes)."""
        return {"urls": list(self.urls), "username": self.username, "credential": self.password}

    def link_headers(self) -> list[str]:
        """RFC 9725 Link header values, one per URL (rel="ice-server", password credential)."""
        return [f'<{url}>; rel="ice-server"; username="{_quoted(self.username)}"; '
                f'credential="{_quoted(self.password)}"; credential-type="password"' for url in self.urls]


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def turn_password(secret: str, username: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def pseudonym(secret: str, identity: str) -> str:
    """The identity as it appears in TURN usernames (and so in the relay's logs)."""
    digest = hmac.new(secret.encode(), b"turn-user\0" + identity.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def issue(settings: Settings, identity: str, token_exp: int, now: float) -> TurnCredential | None:
    """A credential for `identity`, valid `turn_ttl_s` from `now` but never past `token_exp`.

    None when TURN is not configured (no URLs or no secret): callers then hand out nothing.
    """
    if not settings.turn_urls or not settings.turn_secret:
        return None
    expires = min(int(now) + settings.turn_ttl_s, int(token_exp))
    username = f"{expires}:{pseudonym(settings.turn_secret, identity)}"
    return TurnCredential(urls=tuple(settings.turn_urls), username=username,
                          password=turn_password(settings.turn_secret, username), expires=expires)


def ice_servers(settings: Settings, identity: str, token_exp: int, now: float) -> list[dict[str, Any]]:
    """The `iceServers` list for a client: empty without TURN (host candidates only, as before)."""
    cred = issue(settings, identity, token_exp, now)
    return [cred.ice_server()] if cred is not None else []
