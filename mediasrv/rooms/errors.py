"""The error the room service raises to its callers (handlers map it to HTTP or WebSocket)."""

from __future__ import annotations


class RoomError(Exception):
    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
