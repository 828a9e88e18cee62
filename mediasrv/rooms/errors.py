"""The error the room service raises to its callers (each transport maps MediasrvError once)."""

from __future__ import annotations

from mediasrv.errors import MediasrvError


class RoomError(MediasrvError):
    default_status = 409
