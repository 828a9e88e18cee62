"""Each participant's connection quality, polled once a second from the router's existing stats, and
the `connection_quality` events that tell the room when it changes.

Per participant two scopes: its uplink (what the server receives from it: loss and jitter on its
published tracks, the round trip toward it, nothing arriving at all) and its downlink (each of its
subscriptions: the loss, jitter and round trip its receiver reports say, whether its video is paused
and what share of its bandwidth estimate the stream gets; the downlink is its worst subscription).
No per-packet work: the room's tick calls `poll` (every 100 ms), which reads counters only once every
`interval_s` (1 s). The levels and their hysteresis are rooms/quality.py; this module turns stats into
samples and changes into events. Events go to the admitted participants only (a participant in the
waiting room is not rated: nothing it sends goes anywhere yet; and it learns nothing of the others');
one admitted later gets, at the next poll, whatever is not excellent at that moment.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mediasrv.rooms.models import Participant, Subscription
from mediasrv.rooms.quality import Hysteresis, Quality, Sample, Thresholds, classify

if TYPE_CHECKING:
    from mediasrv.rooms.room import Room

INTERVAL_S = 1.0  # how often the stats are read
SILENT_AFTER_S = 3.0  # nothing from a connected publisher for this long: lost
SCOPES = ("uplink", "downlink")
# RFC 3550 jitter is in RTP units. Only audio's counts: a video frame's packets share one timestamp
# and leave paced over milliseconds, which the formula reads as jitter on a clean link.
AUDIO_CLOCK_RATE = 48_000

Event = dict[str, Any]


@dataclass
class _Uplink:
    hysteresis: Hysteresis
    counts: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # track: packets, lost, dups
    heard_at: float = 0.0  # when a packet last arrived (as far as a poll can tell)


@dataclass
class _Downlink:
    subs: dict[int, tuple[int, Hysteresis]] = field(default_factory=dict)  # sub id: track id, level


class QualityMonitor:
    def __init__(self, room: Room, thresholds: Thresholds | None = None, *,
                 interval_s: float = INTERVAL_S, silent_after_s: float = SILENT_AFTER_S,
                 down_hold_s: float = 2.0, up_hold_s: float = 4.0) -> None:
        self.room = room
        self.thresholds = thresholds or Thresholds(video_floor_bps=room.settings.video_resume_bitrate)
        self.interval_s = interval_s
        self.silent_after_s = silent_after_s
        self.down_hold_s = down_hold_s
        self.up_hold_s = up_hold_s
        self._next = 0.0
        self._uplinks: dict[str, _Uplink] = {}
        self._downlinks: dict[str, _Downlink] = {}
        # The last event per (identity, scope) that was not all excellent; what a newcomer is told.
        self._announced: dict[tuple[str, str], Event] = {}
        self._informed: dict[str, Participant] = {}  # recipients that have the current picture
        self._sending: dict[str, asyncio.Lock] = {}  # per recipient

    # --- what the room calls --------------------------------------------------------------------
    def poll(self, now: float) -> list[tuple[Participant, Event]]:
        """Read the stats if an interval has passed; the events to send, and to whom."""
        if now < self._next:
            return []
        self._next = now + self.interval_s
        admitted = {i: p for i, p in self.room.participants.items() if p.admitted}
        for gone in [i for i in self._uplinks if i not in admitted]:
            del self._uplinks[gone]
        for gone in [i for i in self._downlinks if i not in admitted]:
            del self._downlinks[gone]
        for key in [k for k in self._announced if k[0] not in admitted]:
            del self._announced[key]
        for gone in [i for i in self._sending if i not in admitted]:
            del self._sending[gone]
        changes: list[Event] = []
        tracks = _TrackCache(self.room)
        for p in admitted.values():
            for scope, event in (("uplink", self._uplink(p, now, tracks)),
                                 ("downlink", self._downlink(p, now, tracks))):
                if event is not None:
                    changes.append(event)
                    if _all_excellent(event):
                        self._announced.pop((p.identity, scope), None)
                    else:
                        self._announced[(p.identity, scope)] = event
        out: list[tuple[Participant, Event]] = []
        for identity, p in admitted.items():
            if self._informed.get(identity) is p:
                out.extend((p, e) for e in changes)
            else:  # newly admitted (or rejoined): the whole picture, which includes these changes
                out.extend((p, e) for e in self._announced.values())
        self._informed = dict(admitted)
        return out

    async def deliver(self, out: Iterable[tuple[Participant, Event]]) -> None:
        """Send one poll's events: to each recipient in order (a lock per recipient, first come first
        served, so a later poll never overtakes an earlier one a slow socket holds up), to the
        recipients side by side (the patient whose link is poor must not hold up the clinician)."""
        mine: dict[int, tuple[Participant, list[Event]]] = {}
        for p, event in out:
            mine.setdefault(id(p), (p, []))[1].append(event)
        await asyncio.gather(*(self._send(p, events) for p, events in mine.values()))

    async def _send(self, p: Participant, events: list[Event]) -> None:
        lock = self._sending.setdefault(p.identity, asyncio.Lock())
        async with lock:
            for event in events:
                await p.send(event)

    def levels(self) -> Counter[tuple[str, str]]:
        """Participants per (scope, level) now, for /metrics (no identities)."""
        counts: Counter[tuple[str, str]] = Counter()
        for up in self._uplinks.values():
            counts[("uplink", up.hysteresis.level.label)] += 1
        for down in self._downlinks.values():
            if down.subs:
                worst = min(h.level for _, h in down.subs.values())
                counts[("downlink", worst.label)] += 1
        return counts

    # --- per scope ------------------------------------------------------------------------------
    def _uplink(self, p: Participant, now: float, tracks: _TrackCache) -> Event | None:
        state = self._uplinks.get(p.identity)
        published = {tid: s for tid, t in p.tracks.items()
                     if not t.muted and (s := tracks.stats(tid)) is not None}
        if not published:
            if state is None:
                return None
            del self._uplinks[p.identity]  # nothing published: nothing to measure
            return self._event(p, "uplink", Quality.EXCELLENT, state.hysteresis.level)
        connected = p.publisher is not None and p.publisher.connected
        if state is None:
            if not connected:
                return None  # still setting up: nothing is late yet
            state = self._uplinks[p.identity] = _Uplink(Hysteresis(self.down_hold_s, self.up_hold_s),
                                                        heard_at=now)
        lost = received = 0
        jitter: float | None = None
        rtt: float | None = None
        counts: dict[int, tuple[int, int, int]] = {}
        for tid, s in published.items():
            counts[tid] = (s["packets"], s["lost"], s["duplicates"])
            before = state.counts.get(tid, (0, 0, 0))
            if counts[tid][0] > before[0]:
                state.heard_at = now
            # A track first seen now has no interval yet. (A simulcast track's loss is its layers'.)
            if tid in state.counts:
                lost += counts[tid][1] - before[1]
                received += (counts[tid][0] - before[0]) - (counts[tid][2] - before[2])
            if p.tracks[tid].kind == "audio":
                jitter = max(jitter or 0.0, s["jitter"] / AUDIO_CLOCK_RATE)
            rtt = rtt if s["rtt"] is None else s["rtt"]
        state.counts = counts
        if rtt is None:  # no echo from the publisher: the same client's round trip as a subscriber
            rtts = [r for s in self._sub_stats(p) if (r := s[1]["rtt"]) is not None]
            rtt = min(rtts) if rtts else None
        lost = max(0, lost)  # retransmissions that arrived can take back more than was lost
        loss = lost / (lost + received) if lost + received > 0 else None
        silent = now - state.heard_at >= self.silent_after_s
        raw = classify(Sample(loss=loss, rtt_s=rtt, jitter_s=jitter, silent=silent), self.thresholds)
        before_level = state.hysteresis.level
        return self._event(p, "uplink", state.hysteresis.update(raw, now), before_level)

    def _downlink(self, p: Participant, now: float, tracks: _TrackCache) -> Event | None:
        state = self._downlinks.get(p.identity)
        if state is None:
            state = self._downlinks[p.identity] = _Downlink()
        before = _track_levels(state)
        shares: dict[int, int | None] = {}
        current: dict[int, tuple[int, Hysteresis]] = {}
        for sub, s in self._sub_stats(p):
            _, hysteresis = state.subs.get(sub.id) or (0, Hysteresis(self.down_hold_s, self.up_hold_s))
            audio = sub.track.kind == "audio"
            share = demand = None
            if not audio:
                handle = sub.transport.handle
                if handle not in shares:
                    shares[handle] = _video_share(self.room.router.downlink_stats(handle))
                share = shares[handle]
                demand = tracks.demand(sub.track.id)
            sample = Sample(loss=None if s["fraction_lost"] is None else s["fraction_lost"] / 256,
                            rtt_s=s["rtt"],
                            jitter_s=s["jitter"] / AUDIO_CLOCK_RATE if audio and s["jitter"] is not None else None,
                            paused=bool(s["paused"]), share_bps=share, demand_bps=demand)
            hysteresis.update(classify(sample, self.thresholds), now)
            current[sub.id] = (sub.track.id, hysteresis)
        state.subs = current
        after = _track_levels(state)
        if after == before:
            return None
        worst = min(after.values(), default=Quality.EXCELLENT)
        return {"type": "connection_quality", "participant": p.identity, "scope": "downlink",
                "quality": worst.label,
                "tracks": [{"track_id": tid, "quality": q.label} for tid, q in sorted(after.items())]}

    # --- helpers --------------------------------------------------------------------------------
    def _sub_stats(self, p: Participant) -> list[tuple[Subscription, dict[str, Any]]]:
        out = []
        for sub in list(p.subscriptions.values()):
            if not sub.active:
                continue
            try:
                out.append((sub, self.room.router.subscription_stats(sub.id)))
            except KeyError:
                continue
        return out

    @staticmethod
    def _event(p: Participant, scope: str, level: Quality, before: Quality) -> Event | None:
        if level == before:
            return None
        return {"type": "connection_quality", "participant": p.identity, "scope": scope,
                "quality": level.label}


class _TrackCache:
    """One poll's track stats, read at most once per track."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._stats: dict[int, dict[str, Any] | None] = {}
        self._layered: dict[int, bool] = {}

    def stats(self, track_id: int) -> dict[str, Any] | None:
        if track_id not in self._stats:
            try:
                self._stats[track_id] = self.room.router.track_stats(track_id)
            except KeyError:
                self._stats[track_id] = None
        return self._stats[track_id]

    def layered(self, track_id: int) -> bool:
        if track_id not in self._layered:
            self._layered[track_id] = self.room.router.track_layers(track_id) is not None
        return self._layered[track_id]

    def demand(self, track_id: int) -> int | None:
        """What the publisher sends of a single-layer video track; None for simulcast (each
        subscriber gets the layer its share fits, so the top layer's rate is no demand)."""
        s = self.stats(track_id)
        if s is None or not s["bitrate_bps"] or self.layered(track_id):
            return None
        return int(s["bitrate_bps"])


def _video_share(downlink: dict[str, Any] | None) -> int | None:
    """Each video stream's part of the connection's estimate once its audio is counted (as the
    router's allocation splits it)."""
    if downlink is None or downlink["estimate_bps"] is None or not downlink["video_streams"]:
        return None
    return max(0, int(downlink["estimate_bps"]) - int(downlink["audio_bps"])) // int(downlink["video_streams"])


def _track_levels(state: _Downlink) -> dict[int, Quality]:
    """Per track below excellent (a track not listed is excellent)."""
    return {tid: h.level for tid, h in state.subs.values() if h.level != Quality.EXCELLENT}


def _all_excellent(event: Event) -> bool:
    return event["quality"] == Quality.EXCELLENT.label and not event.get("tracks")
