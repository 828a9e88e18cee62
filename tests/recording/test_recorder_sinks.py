"""The recorder keeps exactly one router sink per recordable track (session.Recorder), with a real
Router: sinks follow consent, mutes and unpublishing; a track's last frames are kept when it ends."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mediasrv_native

from mediasrv.recording.consent import RecordingConsent
from mediasrv.recording.muxer import RecordingWriter
from mediasrv.recording.recorder import Recorder, recordable_codec

from .test_pipeline import encode_opus, rtp

OPUS = [(111, "opus", 48000, None, "minptime=10;useinbandfec=1"), (0, "PCMU", 8000, None, "")]
VP8 = [(96, "VP8", 90000, None, ""), (97, "rtx", 90000, 96, "apt=96")]


@dataclass
class FakeTrack:
    id: int
    owner: str
    kind: str
    source: str
    codecs: list[Any]
    muted: bool = False


@dataclass
class FakeParticipant:
    admitted: bool = True


@dataclass
class FakeRoom:
    router: Any = field(default_factory=lambda: mediasrv_native.Router(seed=1))
    tracks: dict[int, FakeTrack] = field(default_factory=dict)
    participants: dict[str, FakeParticipant] = field(default_factory=dict)
    ids: Any = field(default_factory=lambda: itertools.count(1000))
    visit_id: str = "visit-1"

    def new_subscription_id(self) -> int:
        return next(self.ids)

    def publish(self, track: FakeTrack, ssrc: int) -> None:
        self.router.add_publisher(1, 7, {})
        self.router.add_track(track.id, 1, track.kind, str(track.id), track.codecs, [ssrc])
        self.tracks[track.id] = track
        self.participants.setdefault(track.owner, FakeParticipant())


class FakeStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.filed: list[tuple[str, Any]] = []

    def new_writer(self, recording_id: str, **_: Any) -> RecordingWriter:
        return RecordingWriter(self.path)

    async def add_participants(self, recording_id: str, identities: list[str]) -> None:
        pass

    async def add_file(self, recording_id: str, participant: str, result: Any) -> None:
        self.filed.append((participant, result))

    async def finish(self, recording_id: str) -> None:
        pass


def test_the_publisher_codec_decides_what_is_recorded() -> None:
    assert recordable_codec(VP8) == ("VP8", 96, 90000)
    assert recordable_codec(OPUS) == ("opus", 111, 48000)
    assert recordable_codec([(97, "rtx", 90000, 96, ""), (102, "H264", 90000, None, "")]) == ("H264", 102, 90000)
    assert recordable_codec([(0, "PCMU", 8000, None, ""), (111, "opus", 48000, None, "")]) is None


async def test_sinks_follow_consent_mutes_and_unpublishing(tmp_path: Path) -> None:
    room, store = FakeRoom(), FakeStore(tmp_path)
    consent = RecordingConsent(recording_allowed=True)
    consent.request("dr", "clinician", ["dr", "pat"])
    consent.answer("pat", True)
    consent.check_start()
    mic = FakeTrack(1, "pat", "audio", "microphone", OPUS)
    room.publish(mic, 0xA)
    rec = Recorder(room, store, "r1", consent)  # type: ignore[arg-type]
    rec.origin_ms = 0  # this test's clock: the recording starts at 0 ms
    rec.update()
    assert set(rec.sinks) == {1}
    # frames routed to the sink reach the writer, including those still buffered when the track ends
    audio = encode_opus(1)
    for i, (ts, data) in enumerate(audio):
        room.router.route_rtp(1, rtp(10 + i, ts + 5000, False, data, 111, 0xA), 100 + 20 * i)
        if i == 20:
            rec.drain(100 + 20 * i)
    late = FakeTrack(2, "late", "video", "camera", VP8)
    room.publish(late, 0xB)
    consent.joined("late")  # has not consented: not recorded
    rec.update()
    assert set(rec.sinks) == {1}
    mic.muted = True  # a moderator mute ends the track in the recording
    rec.update()
    assert rec.sinks == {} and rec.stats["tracks"] == 1
    files = await rec.stop()
    assert files == [] and len(store.filed) == 1
    participant, result = store.filed[0]
    assert participant == "pat" and result.frames == len(audio)
    assert rec.stats["frames_recorded"] == len(audio)
    assert rec.stats["tracks_aligned_by_arrival"] == 1  # no sender report was sent here
