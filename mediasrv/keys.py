"""Typed keys for objects stored on the aiohttp Application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .config import Settings
    from .sfu.rooms import RoomManager

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
ROOMS: web.AppKey[RoomManager] = web.AppKey("rooms")
# mediasrv.store.Database and mediasrv.store.audit.AuditLog (set up by mediasrv.store.setup_store)
DB: web.AppKey[Any] = web.AppKey("db")
AUDIT: web.AppKey[Any] = web.AppKey("audit")
BLOBS: web.AppKey[Any] = web.AppKey("blobs")
# mediasrv.vitals.store.VitalsStore
VITALS: web.AppKey[Any] = web.AppKey("vitals")
