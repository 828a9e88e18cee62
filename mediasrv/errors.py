"""The error every layer raises to tell a client why a request failed.

A `MediasrvError` carries a machine-readable `code`, a human `message`, the HTTP `status` it stands
for and optional response headers. Services raise subclasses named after their domain (RoomError,
ConsentError, SdpError, AuthError, ...); each transport maps the base class once: the HTTP error
middleware (`mediasrv.api.http_common`) into a JSON error body, the WebSocket room protocol
(`mediasrv.api.room_protocol`) into an "error" event and, where the session cannot go on, a close code.
"""

from __future__ import annotations

from collections.abc import Mapping


class MediasrvError(Exception):
    """A failure the client is told about: `{"error": {"code", "message"}}` with `status`."""

    default_status = 400

    def __init__(self, code: str, message: str, status: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = self.default_status if status is None else status
        self.headers: dict[str, str] = dict(headers or {})


class AuthError(MediasrvError):
    """Authentication (401) or authorization (403) failure. Over HTTP a 401 carries
    `WWW-Authenticate`; over the room protocol it ends a join."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message, status)
