"""Connection quality: a level from a connection's loss, round trip, jitter and bandwidth, and the
hysteresis that keeps the level a client shows from flapping.

Sans-IO: `classify` is a pure function of one sample, `Hysteresis` is fed (level, time) pairs by its
caller (the room's once-a-second poll, rooms/quality_monitor.py) and tests give it exact times.
The thresholds follow what LiveKit and Jitsi use for their indicators: a few percent of loss or a
round trip over 300 ms is noticeable, a tenth of the packets lost or half a second of round trip
makes a conversation hard (docs/adaptation.md, "Connection quality").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Quality(IntEnum):
    """Ordered: a lower value is a worse connection."""

    LOST = 0  # nothing arrives
    POOR = 1
    GOOD = 2
    EXCELLENT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Thresholds:
    """Above a `*_good` bound a connection is at best good, above a `*_poor` bound poor."""

    loss_good: float = 0.02  # fraction of packets lost
    loss_poor: float = 0.10
    rtt_good_s: float = 0.300
    rtt_poor_s: float = 0.500
    jitter_good_s: float = 0.030
    jitter_poor_s: float = 0.100
    # A video share of the estimate under this is at best good: video barely holds on (the
    # room passes its `video_resume_bitrate`, the level at which paused video comes back).
    video_floor_bps: int = 200_000
    # A single-layer video stream whose share is under this part of what the publisher sends is at
    # best good: the link takes less than the stream carries.
    share_of_demand: float = 0.75


@dataclass(frozen=True)
class Sample:
    """What is known of one connection (or one subscription) now; None where nothing is known."""

    loss: float | None = None  # fraction lost over the last interval, 0..1
    rtt_s: float | None = None
    jitter_s: float | None = None
    silent: bool = False  # published but nothing arrived for a while: lost
    paused: bool = False  # the router paused this video for lack of bandwidth
    share_bps: int | None = None  # this video stream's part of the subscriber's estimate
    demand_bps: int | None = None  # what the publisher sends of it (single-layer tracks)


def _band(value: float | None, good: float, poor: float) -> Quality:
    if value is None or value <= good:
        return Quality.EXCELLENT
    return Quality.GOOD if value <= poor else Quality.POOR


def classify(s: Sample, th: Thresholds = Thresholds()) -> Quality:
    """The worst level any one input calls for (nothing known counts as excellent)."""
    if s.silent:
        return Quality.LOST
    level = min(_band(s.loss, th.loss_good, th.loss_poor),
                _band(s.rtt_s, th.rtt_good_s, th.rtt_poor_s),
                _band(s.jitter_s, th.jitter_good_s, th.jitter_poor_s))
    if s.paused:
        return min(level, Quality.POOR)
    short = s.share_bps is not None and (
        s.share_bps < th.video_floor_bps
        or (s.demand_bps is not None and s.share_bps < th.share_of_demand * s.demand_bps))
    return min(level, Quality.GOOD) if short else level


class Hysteresis:
    """The level to show: a worse one only after it has held for `down_hold_s`, a better one only
    after `up_hold_s` (a worse level matters at once to a user, a recovery should be real).

    While a change is pending, the candidate is the level that has held throughout: samples going
    worse still (or less far up) keep the clock but move the candidate toward the current level's
    side, so the level reached is never worse (or better) than every sample since the change began.
    A sample at the current level, or on its other side, cancels the change. `lost` is shown at
    once: its detection (nothing arriving for seconds) has waited already.
    """

    def __init__(self, down_hold_s: float = 2.0, up_hold_s: float = 4.0,
                 initial: Quality = Quality.EXCELLENT) -> None:
        self.down_hold_s = down_hold_s
        self.up_hold_s = up_hold_s
        self.level = initial
        self._candidate: Quality | None = None
        self._since = 0.0

    def update(self, raw: Quality, now: float) -> Quality:
        if raw == self.level:
            self._candidate = None
        elif raw == Quality.LOST:
            self.level, self._candidate = raw, None
        else:
            worse = raw < self.level
            pending = self._candidate
            if pending is None or (pending < self.level) != worse:
                self._candidate, self._since = raw, now
            else:  # the level that has held since the change began
                self._candidate = max(pending, raw) if worse else min(pending, raw)
            hold = self.down_hold_s if worse else self.up_hold_s
            if now - self._since >= hold:
                self.level, self._candidate = self._candidate, None
        return self.level
