"""What a room is made of: its options, participants, their published tracks and subscriptions."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCRtpTransceiver

from mediasrv.media.peer_transport import PeerTransport
from mediasrv.media.sdp import CodecTuple

log = logging.getLogger(__name__)
SOURCES = ("camera", "microphone", "screen", "screen_audio", "instrument")
# Where a participant's events go (its room socket): queues the event and returns, never waiting
# on the client's network (one slow client must not hold up a broadcast to the others).
EventSink = Callable[[dict[str, Any]], Awaitable[None]]
# Track ids and router subscription ids (the recorder's sinks are subscriptions too) come from one
# process-wide allocator, so no two of them are ever equal.
_ids = itertools.count(1)


def next_id() -> int:
    return next(_ids)


@dataclass
class RoomOptions:
    waiting_room: bool = False
    max_participants: int | None = None
    max_duration_s: int | None = None
    recording_allowed: bool = False


@dataclass
class Track:
    id: int
    owner: str
    kind: str
    source: str
    mid: str
    transport: PeerTransport
    muted: bool = False
    codecs: list[CodecTuple] = field(default_factory=list)  # as negotiated with the publisher

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "participant": self.owner, "kind": self.kind,
                "source": self.source, "muted": self.muted}


@dataclass
class Subscription:
    id: int
    track: Track
    transport: PeerTransport
    transceiver: RTCRtpTransceiver
    active: bool = False  # known to the router


@dataclass
class Participant:
    identity: str
    role: str
    name: str | None
    session: str  # "room" | "whip" | "whep"
    admitted: bool = True
    events: EventSink | None = None
    auto_subscribe: bool = True
    wanted: set[int] = field(default_factory=set)
    whep_target: str | None = None
    publisher: PeerTransport | None = None
    publisher_registered: bool = False  # the publisher transport is known to the router
    subscriber: PeerTransport | None = None
    tracks: dict[int, Track] = field(default_factory=dict)
    subscriptions: dict[int, Subscription] = field(default_factory=dict)  # by track id
    # Most video height wanted per track id (simulcast: a small tile needs no 720p layer).
    max_heights: dict[int, int] = field(default_factory=dict)
    # A cap for every video track without its own (a WHEP viewer's ?max_height=).
    video_max_height: int | None = None
    joined_at: float = field(default_factory=time.time)
    negotiating: bool = False
    renegotiate_again: bool = False
    on_removed: Callable[[str], Awaitable[None]] | None = None

    def describe(self) -> dict[str, Any]:
        return {"identity": self.identity, "role": self.role, "name": self.name,
                "session": self.session, "admitted": self.admitted,
                "tracks": [t.describe() for t in self.tracks.values()]}

    async def send(self, event: dict[str, Any]) -> None:
        if self.events is not None:
            try:
                await self.events(event)
            except Exception:  # a dead socket must not break the room
                log.debug("event to a %s (%s session) failed", self.role, self.session, exc_info=True)
