"""One timer for the periodic work of every room on the native plane.

On the native plane a room's media, RTCP and estimates run in a media worker; what is left for the
event loop is draining the router's events (track started/stopped, keyframe requests, video paused
or resumed for a subscriber: counted natively, logged and told to clients here). A task per room
waking every 100 ms cost the loop ten wake-ups a second per visit, busy or not. Rooms join this
wheel instead: one timer per process, running only while some room is in it, and a tick visits only
the rooms that have a connection (a room without one has no router traffic, so nothing to drain).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)

TICK_S = 0.1  # how soon a router event reaches a client (video paused, track started)


class Ticking(Protocol):
    @property
    def busy(self) -> bool: ...  # whether the next tick has anything to look at

    def tick(self) -> None: ...  # synchronous: anything to await is a task of the room's


class RoomWheel:
    def __init__(self, tick_s: float = TICK_S) -> None:
        self.tick_s = tick_s
        self._rooms: dict[Ticking, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ticks = 0
        self.visits = 0  # room ticks run (idle rooms are passed over)

    def __len__(self) -> int:
        return len(self._rooms)

    def add(self, room: Ticking) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Rooms and timer of a loop that has stopped (tests run one loop per test): forgotten.
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._rooms.clear()
            self._loop = loop
        self._rooms[room] = None
        if self._timer is None:
            self._timer = loop.call_later(self.tick_s, self._tick)

    def discard(self, room: Ticking) -> None:
        self._rooms.pop(room, None)
        if not self._rooms and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self.ticks += 1
        for room in list(self._rooms):
            if not room.busy:
                continue
            self.visits += 1
            try:
                room.tick()
            except Exception:  # one room's failure must not stop the others' ticks
                log.exception("room tick failed")
        assert self._loop is not None
        self._timer = self._loop.call_later(self.tick_s, self._tick) if self._rooms else None


WHEEL = RoomWheel()
