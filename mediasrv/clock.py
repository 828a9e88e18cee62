"""The one clock media timing uses: monotonic milliseconds (router, jitter buffers, recording)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.monotonic() * 1000)
