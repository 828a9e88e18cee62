"""Caps on what one client may hold open at once (see docs/signaling.md, "Connection caps").

Three budgets, each checked before anything is set up:

- per client address (`max_connections_per_address`): its open HTTP connections (WebSockets
  included) plus its WHIP/WHEP sessions (which outlive their POST's connection). Addresses in
  `connection_caps_exempt` (loopback by default: a reverse proxy or the load generator there makes
  every client look the same) are not counted;
- per identity, the token's subject (`max_sessions_per_identity`): its WHIP, WHEP, recorded-message
  and room WebSocket sessions, over all its rooms;
- per token (`max_sessions_per_token`): the WHIP/WHEP sessions (recorded messages included) opened
  with one token.

Past a cap: 429 `too_many_connections` (address) or `too_many_sessions` (identity, token) over HTTP,
a close 4429 with that reason on the room WebSocket, counted in `mediasrv_connections_refused_total`
by reason. Nothing has to remember to give a place back: each lease knows whether what it stands
for is still alive (a connection whose transport is gone, a participant no longer in its room), so
a session that ends in any way (DELETE, connection lost, reaped, room closed) frees its place, and
the dead are pruned whenever a budget is checked or the metrics are read.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import json_error
from mediasrv.config import Settings
from mediasrv.errors import MediasrvError
from mediasrv.media.reclaim import RECLAIMER

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SWEEP_EVERY = 256  # checks between full sweeps of budgets nobody checks any more
# ...and at most this long between them: a dead lease's check holds its visit (room, participant,
# peer connections) in memory until a sweep lets go of it.
SWEEP_INTERVAL_S = 2.0


class CapExceeded(MediasrvError):
    """A client is at one of its caps: 429, and the room protocol closes with 4429."""

    default_status = 429


def _always() -> bool:
    return True


def _never() -> bool:
    return False


@dataclass(eq=False)
class Lease:
    """A place in one or more budgets, held while `alive()` says so and `release()` was not called."""

    kind: str  # "http" | "whip" | "whep" | "room"
    alive: Callable[[], bool] = _always
    released: bool = False

    def live(self) -> bool:
        if self.released or not self.alive():
            self.alive = _never  # let go of what the check closed over: it is dead for good
            return False
        return True

    def bind(self, alive: Callable[[], bool]) -> None:
        """From now on the lease lives as long as `alive()` (e.g. its participant is in the room)."""
        self.alive = alive

    def release(self) -> None:
        self.released = True


@dataclass
class _Budget:
    leases: dict[str, list[Lease]] = field(default_factory=dict)

    def live(self, key: str) -> int:
        held = self.leases.get(key)
        if held is None:
            return 0
        held[:] = [lease for lease in held if lease.live()]
        if not held:
            del self.leases[key]
        return len(held)

    def add(self, key: str, lease: Lease) -> None:
        self.leases.setdefault(key, []).append(lease)

    def sweep(self) -> None:
        for key in list(self.leases):
            self.live(key)

    def kinds(self) -> Counter[str]:
        return Counter(lease.kind for held in self.leases.values() for lease in held if lease.live())


def token_key(token: str) -> str:
    """Tokens are kept by digest: the budgets never hold a credential."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class ConnectionCaps:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._exempt: tuple[list[str], list[IPNetwork]] = ([], [])
        self.by_address = _Budget()
        self.by_identity = _Budget()
        self.by_token = _Budget()
        self.connections: dict[int, Lease] = {}  # counted HTTP connections, by id of their protocol
        self.refused: Counter[str] = Counter()  # by reason: per_address, per_identity, per_token
        self._checks = 0
        self._last_sweep = time.monotonic()
        # Closed peer connections are collected right after a sweep, not while a lease holds them.
        RECLAIMER.before_collect(self.sweep)

    def is_exempt(self, address: str | None) -> bool:
        if not address:
            return True  # not an IP connection (a Unix socket): nothing to tell clients apart by
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return True
        return any(ip in net for net in self._exempt_networks())

    def _exempt_networks(self) -> list[IPNetwork]:
        names = self.settings.connection_caps_exempt
        if names != self._exempt[0]:  # parsed once per value of the setting
            self._exempt = (list(names), [ipaddress.ip_network(n, strict=False) for n in names])
        return self._exempt[1]

    def _tick(self) -> None:
        self._checks += 1
        if self._checks % SWEEP_EVERY == 0 or time.monotonic() - self._last_sweep >= SWEEP_INTERVAL_S:
            self.sweep()

    def sweep(self) -> None:
        self._last_sweep = time.monotonic()
        for budget in (self.by_address, self.by_identity, self.by_token):
            budget.sweep()
        self.connections = {k: v for k, v in self.connections.items() if v.live()}

    # --- HTTP connections -------------------------------------------------------------------------
    def admit_connection(self, protocol: Any, address: str | None) -> bool:
        """A request arrived on `protocol`'s connection: False if that connection is one too many
        for its address (it is then answered 429 and closed)."""
        if address is None or self.is_exempt(address) or id(protocol) in self.connections:
            return True
        self._tick()
        cap = self.settings.max_connections_per_address
        if cap and self.by_address.live(address) >= cap:
            self.refused["per_address"] += 1
            return False
        # The protocol drops its transport when the connection is lost: the place is free again.
        lease = Lease("http", alive=lambda: protocol.transport is not None)
        self.connections[id(protocol)] = lease
        self.by_address.add(address, lease)
        return True

    # --- sessions ---------------------------------------------------------------------------------
    def acquire(self, kind: str, *, address: str | None, identity: str, token: str | None) -> Lease:
        """A place for a new session, or CapExceeded. Check and add happen without yielding, so
        concurrent requests cannot pass a cap together. `token` None: not counted per token (the
        room WebSocket, which holds its own HTTP connection); `address` None: not counted per address."""
        self._tick()
        s = self.settings
        counted_address = address if address is not None and not self.is_exempt(address) else None
        if counted_address is not None and s.max_connections_per_address \
                and self.by_address.live(counted_address) >= s.max_connections_per_address:
            self.refused["per_address"] += 1
            raise CapExceeded("too_many_connections",
                              f"at most {s.max_connections_per_address} connections and sessions "
                              "open at once from one address")
        if s.max_sessions_per_identity and self.by_identity.live(identity) >= s.max_sessions_per_identity:
            self.refused["per_identity"] += 1
            raise CapExceeded("too_many_sessions",
                              f"at most {s.max_sessions_per_identity} sessions open at once per identity")
        tkey = token_key(token) if token is not None else None
        if tkey is not None and s.max_sessions_per_token \
                and self.by_token.live(tkey) >= s.max_sessions_per_token:
            self.refused["per_token"] += 1
            raise CapExceeded("too_many_sessions",
                              f"at most {s.max_sessions_per_token} WHIP/WHEP sessions open at once per token")
        lease = Lease(kind)
        if counted_address is not None:
            self.by_address.add(counted_address, lease)
        self.by_identity.add(identity, lease)
        if tkey is not None:
            self.by_token.add(tkey, lease)
        return lease

    # --- metrics ----------------------------------------------------------------------------------
    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        self.sweep()
        refused = CounterMetricFamily("mediasrv_connections_refused",
                                      "connections and sessions refused at a cap, by which cap",
                                      labels=["reason"])
        for reason in ("per_address", "per_identity", "per_token"):
            refused.add_metric([reason], self.refused[reason])
        yield refused
        sessions = GaugeMetricFamily("mediasrv_client_sessions",
                                     "WHIP, WHEP and room WebSocket sessions held against the caps",
                                     labels=["kind"])
        held = self.by_identity.kinds()
        for kind in ("whip", "whep", "room"):
            sessions.add_metric([kind], held[kind])
        yield sessions
        yield GaugeMetricFamily("mediasrv_client_connections",
                                "HTTP connections counted per address (exempt addresses are not counted)",
                                value=len(self.connections))


@web.middleware
async def connection_cap_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """One connection too many from an address: 429 too_many_connections, and the connection closed."""
    caps = request.app[keys.CONNECTION_CAPS]
    if not caps.admit_connection(request.protocol, request.remote):
        limit = request.app[keys.SETTINGS].max_connections_per_address
        resp = json_error(429, "too_many_connections",
                          f"at most {limit} connections and sessions open at once from one address")
        resp.force_close()
        return resp
    return await handler(request)
