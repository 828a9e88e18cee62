"""The room's recording controller (mediasrv/recording/controller.py): a start that fails partway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediasrv.auth import Identity
from mediasrv.recording.consent import ConsentError
from mediasrv.recording.controller import RoomRecording
from mediasrv.recording.muxer import RecordingWriter
from mediasrv.store.audit import ALLOWED_DETAIL_KEYS

from .test_recorder_sinks import OPUS, VP8, FakeParticipant, FakeRoom, FakeStore, FakeTrack

DR = Identity(sub="dr", role="clinician", room="visit", name="Dr", exp=0)


class _Options:
    recording_allowed = True


class _Manager:
    """The audit log as the room manager keeps it (mediasrv.sfu.rooms.RoomManager.audit_event_raw)."""

    def __init__(self) -> None:
        self.audit: list[str] = []

    async def audit_event_raw(self, actor: str, role: str, action: str, detail: Any = None, **_: Any) -> None:
        assert set(detail or {}) <= ALLOWED_DETAIL_KEYS, detail  # what the real audit log accepts
        self.audit.append(action)


class _Router:
    """The room's router, refusing a second sink with an error the recorder does not expect."""

    def __init__(self, router: Any) -> None:
        self.router, self.sinks_added = router, 0

    def add_sink(self, *args: Any, **kw: Any) -> None:
        self.sinks_added += 1
        if self.sinks_added == 2:
            raise OverflowError("can't convert negative int to unsigned")
        self.router.add_sink(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.router, name)


class _Room(FakeRoom):
    def __init__(self) -> None:
        super().__init__()
        self.name, self.options, self.manager = "visit", _Options(), _Manager()
        self.sent: list[tuple[dict[str, Any], bool]] = []  # (message, sent to clinicians only)

    async def broadcast(self, message: dict[str, Any], only: Any = None) -> None:
        self.sent.append((message, only is not None))


class _Store(FakeStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.states: dict[str, str] = {}
        self.writers: list[RecordingWriter] = []
        self.threads_exhausted = False

    async def create(self, room: str, started_by: str) -> str:
        rid = f"rec{len(self.states)}"
        self.states[rid] = "recording"
        return rid

    def new_writer(self, recording_id: str, **_: Any) -> RecordingWriter:
        if self.threads_exhausted:
            raise RuntimeError("can't start new thread")
        self.writers.append(super().new_writer(recording_id))
        return self.writers[-1]

    async def finish(self, recording_id: str, state: str = "ready") -> None:
        self.states[recording_id] = state


@pytest.mark.parametrize("failure", ["writer_thread", "sink"])
async def test_a_start_that_fails_partway_is_marked_failed_at_once_and_audited(tmp_path: Path, failure: str) -> None:
    """The recording row exists when the start fails (no writer thread to be had; or the router
    refuses the second track's sink after the first one was added): the recording is `failed` right
    away (not `recording` until a restart), audited, the clinicians are told, nothing keeps running,
    and a new request can follow."""
    room, store = _Room(), _Store(tmp_path)
    room.participants["dr"] = FakeParticipant()  # type: ignore[assignment]
    room.publish(FakeTrack(1, "dr", "audio", "microphone", OPUS), 0xA)
    room.publish(FakeTrack(2, "dr", "video", "camera", VP8), 0xB)
    real_router = room.router
    if failure == "sink":
        room.router = _Router(real_router)
    else:
        store.threads_exhausted = True
    rec = RoomRecording(room, store)  # type: ignore[arg-type]
    with pytest.raises(ConsentError) as e:
        await rec.request(DR)  # alone in the room: starts at once
    assert (e.value.code, e.value.status) == ("recording_failed", 500)
    assert store.states == {"rec0": "failed"}
    assert room.manager.audit == ["recording_failed"]
    assert ({"type": "recording_failed", "recording_id": "rec0", "reason": "start_failed"}, True) in room.sent
    assert not any(m["type"] == "recording_started" for m, _ in room.sent)
    assert not rec.running and rec.status()["recording_id"] is None
    assert all(not w._thread.is_alive() for w in store.writers), "no writer thread left behind"
    if failure == "sink":
        assert room.router.sinks_added == 2
        with pytest.raises(KeyError):
            real_router.sink_stats(1000)  # the first track's sink is gone from the router

    room.router, store.threads_exhausted = real_router, False  # the clinician retries
    status = await rec.request(DR)
    assert status["recording"] and store.states["rec1"] == "recording"
    assert rec.recorder is not None and set(rec.recorder.sinks) == {1, 2}
    await rec.stop(DR)
    assert store.states["rec1"] == "ready"
