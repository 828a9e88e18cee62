"""The room's recording controller (mediasrv/recording/controller.py): a start that fails partway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediasrv.auth import Identity
from mediasrv.recording.consent import ConsentError
from mediasrv.recording.controller import RoomRecording
from mediasrv.recording.muxer import RecordingWriter
from mediasrv.storage.audit_log import ALLOWED_DETAIL_KEYS

from .test_recorder_sinks import OPUS, VP8, FakeParticipant, FakeRoom, FakeStore, FakeTrack

DR = Identity(sub="dr", role="clinician", room="visit", name="Dr", exp=0)


class _Options:
    recording_allowed = True


class _Manager:
    """The audit log as the room manager keeps it (mediasrv.rooms.manager.RoomManager.audit_event_raw)."""

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

    async def audit_event_raw(self, *args: Any, **kw: Any) -> None:
        await self.manager.audit_event_raw(*args, **kw)

    async def broadcast(self, message: dict[str, Any], only: Any = None) -> None:
        self.sent.append((message, only is not None))


class _Store(FakeStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.states: dict[str, str] = {}
        self.writers: list[RecordingWriter] = []
        self.threads_exhausted = False

    async def create(self, room: str, started_by: str, visit: str | None = None) -> str:
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


class _Asked(FakeParticipant):
    """A participant who can be sent the consent request."""

    def __init__(self) -> None:
        self.inbox: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.inbox.append(message)


def _visit(tmp_path: Path, *present: str) -> tuple[_Room, _Store, RoomRecording]:
    room, store = _Room(), _Store(tmp_path)
    for identity in present:
        room.participants[identity] = _Asked()  # type: ignore[assignment]
    return room, store, RoomRecording(room, store)  # type: ignore[arg-type]


async def test_the_last_unanswered_participant_leaving_starts_the_recording_everyone_present_granted(
        tmp_path: Path) -> None:
    """The request waits only for those present: when the one participant who had not answered
    leaves and everyone still there granted, the recording starts as requested — indicator to the
    room and `recording_start` audited — instead of the clinician having to ask again."""
    room, store, rec = _visit(tmp_path, "dr", "pat", "interp")
    assert (await rec.request(DR))["waiting_for"] == ["interp", "pat"]
    await rec.answer("pat", True)
    room.participants.pop("interp")  # what Room.leave does before telling the recording
    rec.left("interp")
    assert rec.start_after_leave is not None
    await rec.start_after_leave
    assert rec.running and store.states == {"rec0": "recording"}
    assert ({"type": "recording_started", "recording_id": "rec0"}, False) in room.sent
    assert room.manager.audit == ["recording_start"]
    assert rec.status() == {"recording": True, "recording_id": "rec0", "waiting_for": [], "refused": []}
    await rec.stop(DR)


async def test_a_departure_starts_nothing_while_someone_present_has_not_answered(tmp_path: Path) -> None:
    room, store, rec = _visit(tmp_path, "dr", "pat", "interp")
    await rec.request(DR)
    room.participants.pop("interp")
    rec.left("interp")  # pat has not answered yet
    assert rec.start_after_leave is None and not rec.running
    assert rec.status()["waiting_for"] == ["pat"]
    await rec.answer("pat", True)  # the answer that completes the request starts it, as before
    assert rec.running and room.manager.audit == ["recording_start"]
    await rec.stop(DR)


async def test_a_start_after_a_departure_yields_to_whoever_joins_meanwhile(tmp_path: Path) -> None:
    """Someone joins before the start after a departure runs: they are asked, and nothing is
    recorded until they grant."""
    room, store, rec = _visit(tmp_path, "dr", "pat")
    await rec.request(DR)
    room.participants.pop("pat")
    rec.left("pat")
    room.participants["family"] = _Asked()  # type: ignore[assignment]
    await rec.joined("family")
    assert rec.start_after_leave is not None
    await rec.start_after_leave
    assert not rec.running and store.states == {} and rec.status()["waiting_for"] == ["family"]
    assert room.participants["family"].inbox == [  # type: ignore[attr-defined]
        {"type": "recording_consent_request", "by": "dr", "recording": False}]
    await rec.answer("family", True)
    assert rec.running
    await rec.stop(DR)
