"""RoomManager: the process's rooms by name, the native media plane they share, and the audit trail
and counters that outlive any one room.

Rooms configured through the control API are kept in the RoomStore and re-created on startup. A
token may only bring a room into being (or join one) if it was issued after the name was last closed
and, when it carries a visit claim, for the room's current visit; whether a room token may create a
room that does not exist is the setting `rooms_created_on_join`.

Every room, configured or created by a join, is a visit with its own id; the store keeps when each
visit started and ended, so readings and audit entries kept per visit go to the tokens of that visit.
A close is remembered only as long as a token issued before it could still be valid (the longest
token lifetime); room tokens older than that are refused, so forgetting the close is safe."""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
from collections import Counter
from typing import Any

from mediasrv import clock
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
# verify_token's leeway on exp: a token is accepted this long past its expiry.
TOKEN_LEEWAY_S = 5.0
# Closes and ended visits past every token's life are forgotten at most this often (on a close).
PRUNE_INTERVAL_S = 600.0


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
        self._writes: set[asyncio.Task[None]] = set()  # visit starts being stored
        self._pruned_at = -math.inf  # clock.now_ms() / 1000 of the last prune of closes and visits

    async def start(self) -> None:
        configure_host_addresses(self.settings.media_bind_addresses)
        self.plane = start_media_plane(self.settings)
        if self.room_store is not None:
            # Visits of ad-hoc rooms did not survive the previous process: they ended with it.
            configured = await self.room_store.configured()
            await self.room_store.end_visits_except([s.visit_id for s in configured], clock.wall())
            await self._prune_closes()
            self.closed_at = await self.room_store.close_times()
            for stored in configured:
                room = self._new_room(stored.name, stored.options, record=False)
                room.visit_id, room.created_at, room.explicit = stored.visit_id, stored.created_at, True

    async def shutdown(self) -> None:
        for name in list(self.rooms):
            await self.close(name, "shutdown")
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
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
        room = self._new_room(name, options or RoomOptions())
        room.explicit = options is not None
        return room

    def _new_room(self, name: str, options: RoomOptions, record: bool = True) -> Room:
        """A new visit under `name`; its start is stored (in the background: joins stay sync)."""
        room = Room(name, options, self.settings, self)
        self.rooms[name] = room
        if record and self.room_store is not None:
            task = asyncio.get_running_loop().create_task(
                self.room_store.visit_started(room.visit_id, name, room.created_at))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
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
            room = self._new_room(name, RoomOptions())
        return room

    def check_token(self, name: str, ident: Identity, room: Room | None) -> None:
        """Refuse a token that belongs to an earlier visit under this room name."""
        if ident.iat is None or ident.iat < clock.wall() - self.close_horizon_s():
            # Closes are forgotten after the longest token lifetime: a token older than that could
            # predate a forgotten close.
            raise RoomError("token_too_old", "room tokens must be issued within max_token_ttl_s "
                            "and carry iat", 410)
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
        """The visit ends (an admin closed it, or its max_duration passed): the room is forgotten,
        and tokens issued until now no longer open it."""
        room = self.rooms.get(name)
        if room is None:
            return False
        # Refuse the old tokens before the room leaves the table: a join arriving while the room
        # closes (its close awaits) must not open a new visit with them. A token's iat is rounded
        # to the millisecond (maybe up): one issued in the same millisecond counts as before.
        now = clock.wall() + 0.001
        self.closed_at[name] = max(now, self.closed_at.get(name, 0.0))
        if not await self.close(name, reason):
            return False
        if self.room_store is not None:
            await self.room_store.closed(name, now, room.visit_id)
        await self._prune_closes()
        return True

    async def close(self, name: str, reason: str) -> bool:
        room = self.rooms.pop(name, None)
        if room is None:
            return False
        await room.close(reason)
        if self.room_store is not None:
            try:
                await self.room_store.visit_started(room.visit_id, name, room.created_at)
                await self.room_store.visit_ended(room.visit_id, clock.wall())
            except Exception:  # the room is closed regardless; its visit then reads as open
                log.exception("room %s: storing the end of its visit failed", name)
            if clock.now_ms() / 1000 - self._pruned_at >= PRUNE_INTERVAL_S:
                try:
                    await self._prune_closes()
                except Exception:  # tried again at the next close
                    log.exception("pruning closed rooms and ended visits failed")
        return True

    def close_horizon_s(self) -> float:
        """How long a token issued before a close can still be valid."""
        return self.settings.max_token_ttl_s + TOKEN_LEEWAY_S

    async def _prune_closes(self) -> None:
        """Forget closes and ended visits older than any token still valid (the tables would
        otherwise grow with every visit the server ever had)."""
        cutoff = clock.wall() - self.close_horizon_s()
        self.closed_at = {n: t for n, t in self.closed_at.items() if t > cutoff}
        self._pruned_at = clock.now_ms() / 1000
        if self.room_store is not None:
            await self.room_store.prune_closes(cutoff)
            await self.room_store.prune_visits(cutoff)

    async def visits_of(self, name: str, ident: Identity) -> builtins.list[str]:
        """The visits of room `name` a room token may see data of: the one it is bound to, else
        those open at some time while it was valid (never one that ended before it was issued)."""
        if ident.visit is not None:
            return [ident.visit]
        end = float(ident.exp)
        start = ident.iat if ident.iat is not None else end - self.close_horizon_s()
        live = self.rooms.get(name)
        found = []
        if live is not None and not live.closed and live.created_at <= end:
            try:
                self.check_token(name, ident, live)  # not if a close since refused the token
                found.append(live.visit_id)
            except RoomError:
                pass
        if self.room_store is not None:
            found += [v for v in await self.room_store.visits_between(name, start, end) if v not in found]
        return found

    async def visit_of(self, name: str, ident: Identity) -> str | None:
        """The visit a reading sent with `ident` for room `name` belongs to (None: no visit)."""
        live = self.rooms.get(name)
        if live is not None and not live.closed:
            try:
                self.check_token(name, ident, live)
                return live.visit_id
            except RoomError:
                pass
        if ident.visit is not None:
            return ident.visit
        if ident.is_admin:
            return None
        visits = await self.visits_of(name, ident)
        return visits[0] if visits else None

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
