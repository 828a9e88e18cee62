"""The clocks: monotonic milliseconds for media timing (router, jitter buffers, recording), and wall
time for what is compared with token times (room closes)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.monotonic() * 1000)


def wall() -> float:
    """Unix time in seconds: when things happened (room closes, token ages). Tests move it."""
    return time.time()
