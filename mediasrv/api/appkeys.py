"""Typed keys for objects stored on the aiohttp Application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from mediasrv.config import Settings
    from mediasrv.rooms import RoomManager

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
ROOMS: web.AppKey[RoomManager] = web.AppKey("rooms")
# mediasrv.storage.Database and mediasrv.storage.audit_log.AuditLog (set up by mediasrv.storage.setup_store)
DB: web.AppKey[Any] = web.AppKey("db")
AUDIT: web.AppKey[Any] = web.AppKey("audit")
BLOBS: web.AppKey[Any] = web.AppKey("blobs")
# mediasrv.vitals.vitals_store.VitalsStore
VITALS: web.AppKey[Any] = web.AppKey("vitals")
