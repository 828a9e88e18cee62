"""Vitals during a visit: envelopes on the patient's `vitals` data channel become readings that are
stored, relayed to the clinicians in the room, and checked against alert thresholds.

A bad frame is counted and answered on the same channel with a JSON error; it never ends the visit.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from mediasrv.vitals import alerts, decode, jsonable
from mediasrv.vitals.envelope import decode_envelope
from mediasrv.vitals.vitals_store import VitalsStore

log = logging.getLogger(__name__)
# Frames per second a channel may send (ECG strips are ~2-10 frames/s; HR 1/s); the burst allows
# a device to flush a backlog after a reconnect.
RATE_PER_S = 50.0
BURST = 200.0
MAX_FRAME_BYTES = 4096

FRAMES: Counter[str] = Counter()  # result -> count, exported as mediasrv_vitals_frames_total


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class VitalsChannel:
    """One patient's `vitals` data channel in one room."""

    def __init__(self, room: str, patient: str, store: VitalsStore, thresholds: dict[str, Any],
                 relay: Callable[[dict[str, Any]], Awaitable[None]],
                 reply: Callable[[str], None], *, visit: str | None = None) -> None:
        self.room, self.patient, self.visit = room, patient, visit
        self.store, self.thresholds = store, thresholds
        self.relay, self.reply = relay, reply
        self.bucket = TokenBucket(RATE_PER_S, BURST)

    def _reject(self, result: str, message: str) -> None:
        FRAMES[result] += 1
        try:
            self.reply(json.dumps({"type": "error", "code": result, "message": message}))
        except Exception:  # the channel may be closing
            log.debug("vitals reply failed", exc_info=True)

    async def on_message(self, frame: str | bytes) -> None:
        if isinstance(frame, str):
            self._reject("invalid_frame", "vitals frames are binary envelopes (see docs/vitals.md)")
            return
        if len(frame) > MAX_FRAME_BYTES:
            self._reject("invalid_frame", f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
            return
        if not self.bucket.take():
            self._reject("rate_limited", f"more than {RATE_PER_S:g} frames per second")
            return
        try:
            env = decode_envelope(frame)
            reading = decode(env.kind, env.payload)
        except ValueError as exc:
            self._reject("invalid_frame", str(exc))
            return
        FRAMES["ok"] += 1
        values = jsonable(reading)
        kind = env.kind_name
        raised = alerts.evaluate(self.thresholds, reading)
        await self.store.add_many([(self.room, self.patient, kind, values, env.device_time_ms)],
                                  visit=self.visit)
        event = {"type": "vitals", "participant": self.patient, "kind": kind,
                 "device_time_ms": env.device_time_ms or None, "received_at": time.time(),
                 "reading": values}
        await self.relay(event)
        for alert in raised:
            FRAMES["alert"] += 1
            await self.relay({"type": "vitals_alert", "participant": self.patient, "kind": kind,
                              "alert": alert})
