"""RoomManager: the process's rooms by name, the native media plane they share, and the audit trail
and counters that outlive any one room."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from mediasrv.auth import Identity
from mediasrv.config import Settings
from mediasrv.media.host_addresses import configure_host_addresses
from mediasrv.media.native_plane import NativePlane, start_media_plane, stop_media_plane
from mediasrv.recording.recording_store import RecordingStore
from mediasrv.rooms.models import RoomOptions
from mediasrv.rooms.room import Room
from mediasrv.vitals.vitals_store import VitalsStore

log = logging.getLogger(__name__)


class RoomManager:
    def __init__(self, settings: Settings, audit: Any, *, vitals_store: VitalsStore | None = None,
                 recording_store: RecordingStore | None = None) -> None:
        self.settings = settings
        self.audit = audit
        self.rooms: dict[str, Room] = {}
        # The app passes both; without them, vitals channels are refused and recordings unavailable.
        self.vitals_store = vitals_store
        self.recording_store = recording_store
        # Counters of closed rooms' routers, so exported totals never go backwards.
        self.retired: Counter[str] = Counter()
        self.retired_drops: Counter[str] = Counter()
        self.plane: NativePlane | None = None  # the native media plane (datapath = "native")

    async def start(self) -> None:
        configure_host_addresses(self.settings.media_bind_addresses)
        self.plane = start_media_plane(self.settings)

    async def shutdown(self) -> None:
        for name in list(self.rooms):
            await self.close(name, "shutdown")
        if self.plane is not None:
            stop_media_plane(self.plane)
            self.plane = None

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def list(self) -> list[Room]:
        return list(self.rooms.values())

    def create(self, name: str, options: RoomOptions | None = None) -> Room:
        if name in self.rooms:
            raise KeyError(name)
        room = Room(name, options or RoomOptions(), self.settings, self)
        room.explicit = options is not None
        self.rooms[name] = room
        return room

    def get_or_create(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None or room.closed:
            room = Room(name, RoomOptions(), self.settings, self)
            self.rooms[name] = room
        return room

    async def close(self, name: str, reason: str) -> bool:
        room = self.rooms.pop(name, None)
        if room is None:
            return False
        await room.close(reason)
        return True

    def retire_stats(self, stats: dict[str, Any]) -> None:
        for key, value in stats.items():
            if key == "dropped":
                self.retired_drops.update(value)
            elif isinstance(value, int):
                self.retired[key] += value

    async def audit_event(self, who: Identity, action: str, **kw: Any) -> None:
        await self.audit_event_raw(who.sub, who.role, action, **kw)

    async def audit_event_raw(self, actor: str, role: str, action: str, **kw: Any) -> None:
        try:
            await self.audit.record(actor=actor, role=role, action=action, **kw)
        except Exception:
            log.exception("audit record failed (%s %s)", actor, action)
