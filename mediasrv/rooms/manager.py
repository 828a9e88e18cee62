"""RoomManager: the process's rooms by name, the native media plane they share, and the audit trail
and counters that outlive any one room.

Rooms configured through the control API are kept in the RoomStore and re-created on startup. A
token may only bring a room into being (or join one) if it was issued after the name was last closed
and, when it carries a visit claim, for the room's current visit; whether a room token may create a
room that does not exist is the setting `rooms_created_on_join`."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from mediasrv.auth import Identity
from mediasrv.config import Settings
from mediasrv.media.host_addresses import configure_host_addresses
from mediasrv.media.native_plane import NativePlane, start_media_plane, stop_media_plane
from mediasrv.recording.recording_store import RecordingStore
from mediasrv.rooms.errors import RoomError
from mediasrv.rooms.models import RoomOptions
from mediasrv.rooms.room import Room
from mediasrv.rooms.room_store import RoomStore, StoredRoom
from mediasrv.vitals.vitals_store import VitalsStore

log = logging.getLogger(__name__)


class RoomManager:
    def __init__(self, settings: Settings, audit: Any, *, vitals_store: VitalsStore | None = None,
                 recording_store: RecordingStore | None = None, room_store: RoomStore | None = None) -> None:
        self.settings = settings
        self.audit = audit
        self.rooms: dict[str, Room] = {}
        # The app passes both; without them, vitals channels are refused and recordings unavailable.
        self.vitals_store = vitals_store
        self.recording_store = recording_store
        # Without it (tests of the service alone), configured rooms last as long as the process.
        self.room_store = room_store
        self.closed_at: dict[str, float] = {}  # room name -> when an admin last closed it
        # Counters of closed rooms' routers, so exported totals never go backwards.
        self.retired: Counter[str] = Counter()
        self.retired_drops: Counter[str] = Counter()
        self.plane: NativePlane | None = None  # the native media plane (datapath = "native")

    async def start(self) -> None:
        configure_host_addresses(self.settings.media_bind_addresses)
        self.plane = start_media_plane(self.settings)
        if self.room_store is not None:
            self.closed_at = await self.room_store.close_times()
            for stored in await self.room_store.configured():
                room = self.create(stored.name, stored.options)
                room.visit_id, room.created_at = stored.visit_id, stored.created_at

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

    def get_or_create(self, name: str, ident: Identity | None = None) -> Room:
        """The room a participant with `ident` joins: created with defaults if it does not exist and
        the settings allow it. A token issued before the name was closed, or for another visit, is
        refused (410)."""
        room = self.rooms.get(name)
        if room is not None and room.closed:
            room = None
        if ident is not None:
            self.check_token(name, ident, room)
            if room is None and not self.settings.rooms_created_on_join:
                raise RoomError("room_not_found", f"no room {name!r}", 404)
        if room is None:
            room = Room(name, RoomOptions(), self.settings, self)
            self.rooms[name] = room
        return room

    def check_token(self, name: str, ident: Identity, room: Room | None) -> None:
        """Refuse a token that belongs to an earlier visit under this room name."""
        closed_at = self.closed_at.get(name)
        if closed_at is not None and (ident.iat is None or ident.iat <= closed_at):
            raise RoomError("room_closed", f"room {name!r} was closed after this token was issued", 410)
        if ident.visit is not None and (room is None or room.visit_id != ident.visit):
            raise RoomError("visit_ended", "this token was issued for another visit of the room", 410)

    async def configure(self, name: str, options: RoomOptions) -> Room:
        """Create a configured room, or configure the ad-hoc one a join created (its participants
        stay as they are; the options apply from now on). KeyError if it is configured already."""
        room = self.rooms.get(name)
        if room is not None and not room.closed:
            if room.explicit:
                raise KeyError(name)
            room.options, room.explicit = options, True
        else:
            room = self.create(name, options)
        if self.room_store is not None:
            await self.room_store.save(StoredRoom(name, room.visit_id, options, room.created_at))
        return room

    async def end(self, name: str, reason: str) -> bool:
        """An admin closes the room: it is forgotten, and tokens issued until now no longer open it."""
        if not await self.close(name, reason):
            return False
        now = time.time()
        self.closed_at[name] = max(now, self.closed_at.get(name, 0.0))
        if self.room_store is not None:
            await self.room_store.closed(name, now)
        return True

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
            log.exception("audit record failed (%s by a %s)", action, role)
