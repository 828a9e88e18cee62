"""Feeding a real `mediasrv_native.Router` a publisher's packets on a simulated clock, as a datapath does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

RTCP_SENDER_REPORT = 200


def replay(router: Any, publisher: int, events: list[tuple[float, bytes]], start_ms: int, *,
           until_ms: int | None = None, step_ms: int = 20, forwarded: list[Any] | None = None) -> Iterator[int]:
    """Every `step_ms` after `start_ms`, hands `router` the (arrival ms, packet) `events` (time-ordered)
    that arrived by then — RTCP sender reports through handle_rtcp, RTP through route_rtp — and yields
    the time for the caller's periodic work (draining sinks, router.poll). Goes on until every event
    was fed and `until_ms` is reached. What route_rtp would send to transports goes into `forwarded`."""
    now, i = start_ms, 0
    while i < len(events) or (until_ms is not None and now < until_ms):
        now += step_ms
        while i < len(events) and events[i][0] <= now:
            t, packet = events[i]
            i += 1
            if packet[1] == RTCP_SENDER_REPORT:
                router.handle_rtcp(publisher, packet, int(t))
            else:
                out = router.route_rtp(publisher, packet, int(t))
                if forwarded is not None:
                    forwarded.extend(out)
        yield now
