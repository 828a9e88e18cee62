"""Freeing closed peer connections promptly.

A closed aiortc RTCPeerConnection is garbage in reference cycles (its transports, transceivers,
receivers and event handlers point at one another): about 1 300 objects for an idle one, ~17 000
with the receivers' bitrate-estimator windows of a publisher. Only the cyclic collector frees them,
and its full collections come rarely once a server holds many long-lived objects, so a server
whose visits come and go accumulated this garbage and its heap grew with it (RSS rising for
minutes, see docs/performance.md "Soak"). After a peer connection closes we run one full collection,
at most once per `MIN_INTERVAL_S`: tens of milliseconds of the event loop (media runs in native
threads), and RSS stays flat.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable

MIN_INTERVAL_S = 5.0
# Time for the closer to drop its own references (room tables, sessions) before the collection.
SETTLE_S = 1.0


class Reclaimer:
    """`closed()` after a peer connection closes; a full collection follows within the interval."""

    def __init__(self, min_interval_s: float = MIN_INTERVAL_S, settle_s: float = SETTLE_S) -> None:
        self.min_interval_s, self.settle_s = min_interval_s, settle_s
        self.collections = 0
        self.freed = 0
        self._last = 0.0
        self._pending: asyncio.TimerHandle | None = None
        self._pending_loop: asyncio.AbstractEventLoop | None = None
        self._hooks: list[weakref.WeakMethod[Callable[[], None]]] = []

    def before_collect(self, method: Callable[[], None]) -> None:
        """Call this bound method before each collection (e.g. to drop bookkeeping that still points
        at closed sessions). Held weakly: an owner that goes away is forgotten."""
        self._hooks.append(weakref.WeakMethod(method))

    def closed(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._pending is not None and self._pending_loop is loop:
            return  # one collection is coming: it frees this connection too
        self._pending_loop = loop  # (a loop that stopped with one pending never runs it)
        delay = max(self.settle_s, self._last + self.min_interval_s - time.monotonic())
        self._pending = loop.call_later(delay, self._collect)

    def _collect(self) -> None:
        self._pending = None
        self._last = time.monotonic()
        for ref in list(self._hooks):
            method = ref()
            if method is None:
                self._hooks.remove(ref)
            else:
                method()
        self.freed += gc.collect()
        self.collections += 1


RECLAIMER = Reclaimer()
