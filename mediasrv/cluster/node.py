"""This node's part in the cluster: its registry entry and placement leases kept fresh, the rooms it
is asked about routed to their owner, rooms of a dead or drained owner re-created here from the visit
state in Redis, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from urllib.parse import quote

from prometheus_client.core import CounterMetricFamily, Metric
from redis.asyncio import Redis

from mediasrv import clock
from mediasrv.auth import Identity
from mediasrv.cluster import registry
from mediasrv.cluster.bus import CommandBus, NodeUnreachable
from mediasrv.cluster.placement import Placement
from mediasrv.cluster.registry import DRAINING, SERVING, NodeInfo
from mediasrv.cluster.visit_state import VisitState, VisitStore
from mediasrv.config import Settings
from mediasrv.rooms import Participant, Room, RoomManager, RoomOptions
from mediasrv.rooms.membership import WAITING_ROLES

log = logging.getLogger(__name__)
CLOSED = "mediasrv:room-closed:"
# The room_closed reason when another node took the room over (this node lost its lease): its
# participants get a `redirect` to that node first, and the room protocol closes with 4307.
MOVED = "moved"
# Who re-admits a participant the waiting room had admitted before a failover (audit trail).
CLUSTER_ACTOR = Identity(sub="cluster", role="admin", room=None, name=None, exp=0)

__all__ = ["MOVED", "Cluster", "NoServingNode", "NodeUnreachable"]


class NoServingNode(Exception):
    """No node of the cluster takes new rooms (all draining or gone)."""


class Cluster:
    def __init__(self, settings: Settings, rooms: RoomManager) -> None:
        self.settings = settings
        self.rooms = rooms
        self.node_id = settings.node_id or f"{settings.host}-{settings.port}"
        self.url = (settings.node_url or f"http://{settings.host}:{settings.port}").rstrip("/")
        self.redis: Redis = Redis.from_url(settings.redis_url, decode_responses=True)
        self.ttl_ms = int(settings.cluster_lease_ttl_s * 1000)
        self.placement = Placement(self.redis, self.ttl_ms)
        self.bus = CommandBus(self.redis, self.node_id, secret=settings.api_secret)
        # A visit's state outlives a write by the longest a token for it may live.
        self.visits = VisitStore(self.redis, int(rooms.close_horizon_s()) + 60)
        self.state = SERVING
        self.started_at = clock.wall()
        self.drain_deadline: float | None = None
        # Called once drain is over (or forced): the server stops (cli: a graceful exit).
        self.on_drained: Callable[[], None] | None = None
        self._admitted: dict[str, set[str]] = {}  # rooms re-created here: who was admitted before
        self._interrupted: dict[str, str] = {}  # rooms re-created here: the recording cut short
        self._hosted: set[str] = set()  # rooms hosted at the last heartbeat
        # The serving nodes' URLs at the last heartbeat: told to joining clients, so one that loses
        # its node knows where else to rejoin.
        self.peers: list[str] = []
        self._telling: set[asyncio.Task[None]] = set()  # `nodes` events being sent
        self._stopping = False
        self._left = False  # stop() ran: the heartbeat loop ends even if its cancellation is lost
        self._task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._cpu = (time.process_time(), time.monotonic())
        self._cpu_pct = 0.0
        self.heartbeat_failures = 0
        self._pause = asyncio.sleep  # the heartbeat loop's wait (tests watch it)

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.bus.start()
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Leave the cluster: rooms still here are given up so their next join places them anew."""
        self._stopping = True
        self._left = True
        if self._task is not None:
            self._task.cancel()
            # A cancellation delivered inside a Redis call can be lost there (the loop then goes on
            # to its next pause): the flag ends it at the latest one pause later.
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            for name in self._hosted | set(self.rooms.rooms):
                await self.placement.release(name, self.node_id)
            await registry.remove(self.redis, self.node_id)
        await self.bus.stop()
        await self.redis.aclose()

    def shutting_down(self) -> None:
        """The server stops: rooms closing from now on move (their visit state stays)."""
        self._stopping = True

    async def _loop(self) -> None:
        period = self.settings.cluster_lease_ttl_s / 3
        failed = 0  # heartbeats failed in a row
        while not self._left:
            await self._pause(self.heartbeat_delay(period, failed))
            if self._left:
                return
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                failed += 1
                self.heartbeat_failures += 1
                if failed == 1:  # once per outage, not at every retry
                    log.warning("cluster: heartbeat to Redis failed; retrying", exc_info=True)
                continue
            if failed:
                log.info("cluster: heartbeat to Redis back after %d failed tries", failed)
                failed = 0

    @staticmethod
    def heartbeat_delay(period: float, failed: int) -> float:
        """The pause before the next heartbeat: a period, and after a failure short retries (an
        eighth, a quarter, half a period), so one failed call costs a fraction of a period and the
        leases (three periods) do not lapse for it; a longer outage retries once a period."""
        return period if failed == 0 or failed > 3 else period / 2 ** (4 - failed)

    # --- heartbeat ----------------------------------------------------------------------------------
    def info(self) -> NodeInfo:
        return NodeInfo(id=self.node_id, url=self.url, media_addresses=list(self.settings.announced_addresses),
                        state=self.state, started_at=self.started_at, updated_at=clock.wall(),
                        load=self.load())

    def load(self) -> dict[str, float]:
        cpu, mono = time.process_time(), time.monotonic()
        if mono - self._cpu[1] >= 0.5:
            self._cpu_pct = round(100 * (cpu - self._cpu[0]) / (mono - self._cpu[1]), 1)
            self._cpu = (cpu, mono)
        live = [r for r in self.rooms.list() if not r.closed]
        forwarded = self.rooms.retired.get("rtp_packets_out", 0)
        for room in live:
            forwarded += int(room.router.stats().get("rtp_packets_out", 0))
        return {"cpu": self._cpu_pct, "rooms": float(len(live)),
                "participants": float(sum(len(r.participants) for r in live)),
                "forwarded_packets": float(forwarded)}

    async def beat(self) -> None:
        """Registry entry, placement leases and visit state of every room hosted here, refreshed."""
        await registry.publish(self.redis, self.info(), self.ttl_ms)
        peers = [n.url for n in await registry.nodes(self.redis) if n.state == SERVING]
        if sorted(peers) != sorted(self.peers):
            self.peers = peers
            # Off the heartbeat: a client slow to read its socket must not hold the leases up.
            task = asyncio.get_running_loop().create_task(self._tell_nodes(list(peers)))
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)
        hosted = {name for name, room in self.rooms.rooms.items() if not room.closed}
        moved: set[str] = set()
        for name in hosted:
            room = self.rooms.rooms.get(name)
            if room is None or room.closed:  # closed while this heartbeat ran: gone at the next one
                continue
            owner = await self._keep(name)
            if owner is not None:
                await self.move(room, owner)
                moved.add(name)
            elif not await self.visits.save(name, self.snapshot(room), owner=self.node_id):
                log.warning("cluster: room %s changed hands while its state was saved", name)
        if not self._stopping:
            for name in self._hosted - hosted - moved:
                await self.room_gone(name)
        self._hosted = hosted - moved

    async def _tell_nodes(self, peers: list[str]) -> None:
        """The serving nodes changed (one started, died or drains): the participants here learn where
        they could rejoin now (a client that joined before a node started would not know of it)."""
        event = {"type": "nodes", "nodes": peers}
        for room in [r for r in self.rooms.list() if not r.closed]:
            await room.broadcast(event, waiting_too=True)

    async def _keep(self, name: str) -> NodeInfo | None:
        """Renew this node's lease of room `name`, or take it back if nobody holds it (one Lua
        script). None while the room stays here; else the live node that holds it now (this node
        was stalled or cut off past the lease, and the room was placed there meanwhile)."""
        for _ in range(3):
            if await self.placement.renew(name, self.node_id):
                return None
            holder = await self.placement.owner(name)
            if holder is None or holder == self.node_id:  # changed between the two calls: again
                continue
            info = await registry.get(self.redis, holder)
            if info is not None:
                return info
            await self.placement.release(name, holder)  # a dead node's lease: free it, claim it
        log.warning("cluster: room %s: its lease keeps changing hands; kept for now", name)
        return None

    async def move(self, room: Room, owner: NodeInfo) -> None:
        """Another node serves room `room` now: its participants are sent there (a `redirect` event,
        then the room protocol's 4307) and the room is closed here. The visit goes on there: its
        state and the owner's lease stay as they are, and the visit is not recorded as ended."""
        name = room.name
        log.warning("cluster: room %s is served by node %s now; its participants are sent there",
                    name, owner.id)
        if self.rooms.rooms.get(name) is room:
            del self.rooms.rooms[name]  # from here on joins are routed to the owner
        self._admitted.pop(name, None)
        self._interrupted.pop(name, None)
        event = {"type": "redirect", "url": "ws" + owner.url.removeprefix("http")
                 + f"/rooms/{quote(name, safe='')}/ws", "node_url": owner.url}
        for p in list(room.participants.values()):
            with contextlib.suppress(Exception):  # a connection already gone
                await p.send(event)
        await room.close(MOVED)

    def snapshot(self, room: Room) -> VisitState:
        admitted = {p.identity for p in room.participants.values()
                    if p.admitted and p.role in WAITING_ROLES}
        return VisitState(visit_id=room.visit_id, created_at=room.created_at, options=asdict(room.options),
                          configured=room.explicit,
                          recording=(f"running:{room.recording.recording_id}" if room.recording.running
                                     else self._interrupted.get(room.name, "")),
                          admitted=admitted | self._admitted.get(room.name, set()))

    async def room_gone(self, name: str) -> None:
        """A room hosted here closed (ended, or emptied): its visit is over, the name is free."""
        self._admitted.pop(name, None)
        self._interrupted.pop(name, None)
        if name in self.rooms.rooms:  # opened again meanwhile
            return
        closed_at = self.rooms.closed_at.get(name)
        if closed_at is not None:  # an admin's close or the time limit: its tokens no longer open it
            await self.redis.set(CLOSED + name, repr(closed_at), ex=int(self.rooms.close_horizon_s()) + 1)
        # Only while the lease is still this node's (or free): a node that took the room over
        # while this one was stalled keeps the visit's state and its lease.
        await self.visits.forget(name, owner=self.node_id, release=True)

    # --- placement ----------------------------------------------------------------------------------
    def hosts(self, name: str) -> Room | None:
        room = self.rooms.get(name)
        return room if room is not None and not room.closed else None

    async def live_owner(self, name: str) -> NodeInfo | None:
        """The node holding the room's lease, if it is alive (a dead one's lease is dropped)."""
        owner = await self.placement.owner(name)
        if owner is None:
            return None
        if owner == self.node_id:
            return self.info()
        info = await registry.get(self.redis, owner)
        if info is None:  # its registry entry expired: it is gone, and its lease with it
            await self.placement.release(name, owner)
        return info

    async def route(self, name: str) -> str | None:
        """Where a join to room `name` goes: None to serve it here, else the owner's base URL. A room
        nobody owns is placed on the least-loaded serving node."""
        if self.hosts(name) is not None:
            return None
        owner = await self.live_owner(name)
        if owner is None:
            serving = [n for n in await registry.nodes(self.redis) if n.state == SERVING]
            if self.state == SERVING and all(n.id != self.node_id for n in serving):
                serving.append(self.info())
            if not serving:
                raise NoServingNode()
            placed = await self.placement.claim(name, [(n.id, n.score()) for n in serving])
            owner = next((n for n in serving if n.id == placed), None)
            if owner is None:  # placed a moment ago by another node on a node we do not know
                owner = await registry.get(self.redis, placed) if placed else None
            if owner is None:
                raise NoServingNode()
        if owner.id == self.node_id:
            await self._prepare(name)
            return None
        return owner.url

    async def _prepare(self, name: str) -> None:
        """Before this node opens room `name`: a close another node saw applies here too, and a visit
        that lived on a node now gone is re-created with its state."""
        closed = await self.redis.get(CLOSED + name)
        if closed is not None:
            self.rooms.closed_at[name] = max(float(closed), self.rooms.closed_at.get(name, 0.0))
        if self.hosts(name) is not None:
            return
        state = await self.visits.load(name)
        if state is None:
            return
        closed_at = self.rooms.closed_at.get(name)
        if closed_at is not None and closed_at >= state.created_at:
            # That visit was closed (here, before the heartbeat that clears its state, or elsewhere):
            # it does not come back; the join starts a new one.
            await self.visits.forget(name, owner=self.node_id)
            return
        # Not stored as a new visit: it is the same visit, going on here.
        room = self.rooms._new_room(name, RoomOptions(**state.options), record=False)
        room.visit_id, room.created_at, room.explicit = state.visit_id, state.created_at, state.configured
        self._admitted[name] = set(state.admitted)
        log.info("cluster: room %s re-created here from its visit state", name)
        if state.recording.startswith("running:"):
            recording_id = state.recording.split(":", 1)[1]
            self._interrupted[name] = f"interrupted:{recording_id}"
            if self.rooms.recording_store is not None:
                with contextlib.suppress(Exception):  # the row lives on the dead node's database
                    await self.rooms.recording_store.finish(recording_id, "interrupted")
            await self.rooms.audit_event_raw("cluster", "admin", "recording.interrupted", room=name,
                                             visit=room.visit_id, detail={"recording_id": recording_id})
        await self.visits.save(name, self.snapshot(room), owner=self.node_id)

    async def readmit(self, room: Room, p: Participant) -> None:
        """A participant the waiting room had admitted before its visit moved here is admitted again."""
        if not p.admitted and p.identity in self._admitted.get(room.name, set()):
            await room.admit(p.identity, by=CLUSTER_ACTOR)

    async def admitted(self, room: str, identity: str) -> None:
        self._admitted.setdefault(room, set()).add(identity)
        await self.visits.admitted(room, identity, owner=self.node_id)

    # --- drain --------------------------------------------------------------------------------------
    def sigterm(self) -> None:
        """First SIGTERM: drain. A second one: stop now."""
        if self._drain_task is not None:
            log.warning("cluster: second SIGTERM, stopping without waiting for visits")
            self._done()
            return
        self.state = DRAINING
        self.drain_deadline = clock.wall() + self.settings.drain_timeout_s
        log.info("cluster: draining (visits may go on for %.0f s)", self.settings.drain_timeout_s)
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self.drain_deadline is not None
        with contextlib.suppress(Exception):
            await self.beat()  # placement skips this node from now on
        event = {"type": "server_draining", "deadline": self.drain_deadline,
                 "seconds_left": round(self.settings.drain_timeout_s)}
        for room in [r for r in self.rooms.list() if not r.closed]:
            await room.broadcast(event, waiting_too=True)
        while clock.wall() < self.drain_deadline:
            if not any(r.participants for r in self.rooms.list() if not r.closed):
                break
            await asyncio.sleep(0.2)
        log.info("cluster: drained, stopping")
        self._done()

    def _done(self) -> None:
        self._stopping = True
        if self.on_drained is not None:
            self.on_drained()

    # --- commands to other nodes ----------------------------------------------------------------------
    async def command(self, owner: NodeInfo, op: str, args: dict[str, object]) -> dict[str, object]:
        return await self.bus.request(owner.id, op, dict(args), self.settings.cluster_command_timeout_s)

    async def nodes(self) -> list[NodeInfo]:
        return await registry.nodes(self.redis)

    # --- metrics ------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """The cluster's own series (registered with the node's other metrics)."""
        rejected = CounterMetricFamily(
            "mediasrv_cluster_commands_rejected",
            "commands and replies from the cluster bus refused: unsigned, bad signature, malformed, "
            "for another node, expired, replayed", labels=["reason"])
        for reason, count in sorted(self.bus.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily("mediasrv_cluster_heartbeat_failures",
                                  "heartbeats to Redis that failed (each retried within the period)",
                                  value=self.heartbeat_failures)
