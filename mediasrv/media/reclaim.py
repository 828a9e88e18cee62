"""Freeing closed peer connections promptly.

A closed aiortc RTCPeerConnection is garbage in reference cycles (its transports, transceivers,
receivers and event handlers point at one another): about 1 300 objects for an idle one, ~17 000
with the receivers' bitrate-estimator windows of a publisher. Only the cyclic collector frees them,
and its full collections come rarely once a server holds many long-lived objects, so a server
whose visits come and go accumulated this garbage and its heap grew with it (RSS rising for
minutes, see docs/performance.md "Soak"). After a peer connection closes we run one full collection,
at most once per `MIN_INTERVAL_S`: tens of milliseconds of the event loop (media runs in native
threads), and RSS stays flat.

What the collection frees goes back to glibc's arenas, which keep it: a heap that once held a burst
of garbage stays that size. So a collection is followed by `malloc_trim(0)` (glibc: give free pages
at the top of each heap and inside its arenas back to the kernel), at most once per
`TRIM_INTERVAL_S`; a trim that is not yet due is scheduled for when it is, so the last collection
after a busy period is trimmed too. Where there is no glibc (no `malloc_trim`) nothing is trimmed.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 5.0
# Time for the closer to drop its own references (room tables, sessions) before the collection.
SETTLE_S = 1.0
# malloc_trim walks every arena under its lock (a few ms on a server's heap): not after each
# collection of a busy server, but often enough that a burst's high-water mark does not stay.
TRIM_INTERVAL_S = 30.0

Trim = Callable[[], object]


def _glibc_malloc_trim() -> Trim | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim  # in the process's own libc; absent outside glibc
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


MALLOC_TRIM = _glibc_malloc_trim()

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
# Two arenas: the event loop's and one shared by the native plane's workers and the other threads
# (glibc's default is up to 8 per core, each a heap that keeps its own high-water mark). Fixed
# mmap and trim thresholds: glibc raises both each time a large block is freed (up to 32 MiB and
# 64 MiB), after which the heap keeps ever larger free space at its top.
ALLOCATOR_SETTINGS = {M_ARENA_MAX: 2, M_MMAP_THRESHOLD: 256 * 1024, M_TRIM_THRESHOLD: 1024 * 1024}


# Set by an operator, these mean glibc was tuned in the environment: leave it as it is.
_ENVIRONMENT_TUNING = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                       "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def tune_allocator(settings: dict[int, int] | None = None,
                   environ: Mapping[str, str] = os.environ) -> bool:
    """Apply `ALLOCATOR_SETTINGS` with glibc's mallopt (once, at server start, before threads are
    started). False, and nothing changed, where there is no glibc or where glibc's allocator was
    tuned through the environment (MALLOC_ARENA_MAX and the like, or GLIBC_TUNABLES)."""
    if any(name in environ for name in _ENVIRONMENT_TUNING):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = True
    for param, value in (ALLOCATOR_SETTINGS if settings is None else settings).items():
        ok = bool(mallopt(param, value)) and ok
    return ok


def freeze_startup_objects() -> int:
    """Moves every object alive now (modules, classes, the app and its settings: ~50,000 in a
    started server) out of the cyclic collector's reach, for good, and returns how many are frozen.

    Called once the server has started. A full collection walks every tracked object, and these
    never become garbage: frozen, each full collection of a busy server is shorter by them (at a
    50-visit ramp its longest pauses went from 63–69 ms to 36–53 ms). Garbage in cycles made before
    the freeze is collected first, so nothing is kept that would otherwise have been freed."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Reclaimer:
    """`closed()` after a peer connection closes; a full collection follows within the interval."""

    def __init__(self, min_interval_s: float = MIN_INTERVAL_S, settle_s: float = SETTLE_S,
                 trim_interval_s: float = TRIM_INTERVAL_S, trim: Trim | None = MALLOC_TRIM,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s, self.settle_s = min_interval_s, settle_s
        self.trim_interval_s, self._trim, self._clock = trim_interval_s, trim, clock
        self.collections = 0
        self.freed = 0
        self.trims = 0
        self.trim_seconds = 0.0  # event-loop time spent in malloc_trim
        self._last = 0.0
        self._last_trim = float("-inf")
        self._pending_trim: asyncio.TimerHandle | None = None
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
        delay = max(self.settle_s, self._last + self.min_interval_s - self._clock())
        self._pending = loop.call_later(delay, self._collect)

    def _collect(self) -> None:
        self._pending = None
        self._last = self._clock()
        for ref in list(self._hooks):
            method = ref()
            if method is None:
                self._hooks.remove(ref)
            else:
                method()
        self.freed += gc.collect()
        self.collections += 1
        self._after_collection()

    def _after_collection(self) -> None:
        if self._trim is None or self._pending_trim is not None:
            return  # a trim is already scheduled: it covers this collection too
        wait = self._last_trim + self.trim_interval_s - self._clock()
        if wait <= 0:
            self._trim_now()
        else:
            self._pending_trim = asyncio.get_running_loop().call_later(wait, self._trim_now)

    def _trim_now(self) -> None:
        self._pending_trim = None
        if self._trim is None:
            return
        started = time.perf_counter()
        self._trim()
        took = time.perf_counter() - started
        self._last_trim = self._clock()
        self.trims += 1
        self.trim_seconds += took
        log.debug("malloc_trim: %.1f ms", took * 1000)


RECLAIMER = Reclaimer()
