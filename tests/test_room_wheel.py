"""The room wheel: one timer for every room's periodic work on the native plane, none per room."""

from __future__ import annotations

import asyncio
from typing import Any

from mediasrv.rooms.wheel import WHEEL, RoomWheel


class _Room:
    def __init__(self, busy: bool, fail: bool = False) -> None:
        self.busy, self.fail, self.ticks = busy, fail, 0

    def tick(self) -> None:
        self.ticks += 1
        if self.fail:
            raise RuntimeError("boom")


async def test_one_timer_ticks_busy_rooms_only_and_stops_when_empty() -> None:
    wheel = RoomWheel(tick_s=0.01)
    busy, idle, failing = _Room(True), _Room(False), _Room(True, fail=True)
    for room in (busy, idle, failing):
        wheel.add(room)
    await asyncio.sleep(0.2)
    assert busy.ticks >= 3 and failing.ticks == busy.ticks  # a failing room stops nobody's ticks
    assert idle.ticks == 0
    for room in (busy, idle, failing):
        wheel.discard(room)
    ticks = wheel.ticks
    await asyncio.sleep(0.05)
    assert wheel.ticks == ticks and wheel._timer is None  # no room, no timer


def _room_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if "Room" in getattr(t.get_coro(), "__qualname__", "")]


async def test_rooms_on_the_native_plane_start_no_task(server: Any) -> None:
    assert server.rooms.plane is not None
    rooms = [server.rooms.get_or_create(f"wheel-{i}") for i in range(20)]
    await asyncio.sleep(0.05)
    assert _room_tasks() == []  # (a task per room was Room._run, waking every 100 ms)
    assert all(room in WHEEL._rooms for room in rooms)
    visits = WHEEL.visits
    await asyncio.sleep(0.35)
    assert WHEEL.visits == visits, "rooms without a connection are not visited"
    for i in range(20):
        await server.rooms.close(f"wheel-{i}", "done")
    assert not any(room in WHEEL._rooms for room in rooms)


def test_rooms_of_a_stopped_loop_are_forgotten() -> None:
    wheel = RoomWheel(tick_s=0.01)
    stale, fresh = _Room(True), _Room(True)

    async def add(room: _Room, wait: float) -> None:
        wheel.add(room)
        await asyncio.sleep(wait)

    asyncio.run(add(stale, 0))
    asyncio.run(add(fresh, 0.1))
    assert list(wheel._rooms) == [fresh] and stale.ticks == 0 and fresh.ticks >= 3
