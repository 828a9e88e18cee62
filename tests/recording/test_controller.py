"""The room's recording controller (mediasrv/recording/controller.py): a start that fails partway."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mediasrv.auth import Identity
from mediasrv.recording.consent import ConsentError
from mediasrv.recording.controller import RoomRecording
from mediasrv.recording.muxer import RecordingWriter

from .test_recorder_sinks import OPUS, FakeParticipant, FakeRoom, FakeStore, FakeTrack

DR = Identity(sub="dr", role="clinician", room="visit", name="Dr", exp=0)


class _Options:
    recording_allowed = True


class _Manager:
    """Audit log whose database write fails for the actions in `failing` (e.g. a full disk)."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.audit: list[str] = []

    async def audit_event_raw(self, actor: str, role: str, action: str, **_: Any) -> None:
        if action in self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        self.audit.append(action)


class _Room(FakeRoom):
    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.name, self.options, self.manager = "visit", _Options(), _Manager(failing)
        self.sent: list[tuple[dict[str, Any], bool]] = []  # (message, sent to clinicians only)

    async def broadcast(self, message: dict[str, Any], only: Any = None) -> None:
        self.sent.append((message, only is not None))


class _Store(FakeStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.states: dict[str, str] = {}
        self.writers: list[RecordingWriter] = []

    async def create(self, room: str, started_by: str) -> str:
        rid = f"rec{len(self.states)}"
        self.states[rid] = "recording"
        return rid

    def new_writer(self, recording_id: str) -> RecordingWriter:
        self.writers.append(super().new_writer(recording_id))
        return self.writers[-1]

    async def finish(self, recording_id: str, state: str = "ready") -> None:
        self.states[recording_id] = state


async def test_a_start_that_fails_partway_is_marked_failed_at_once_and_audited(tmp_path: Path) -> None:
    """The recorder is up (a sink on the published microphone) when filing the start in the audit
    log fails: the recording is `failed` right away (not `recording` until a restart), the failure is
    audited, the clinicians are told, nothing keeps running, and a new request can follow."""
    room, store = _Room(failing={"recording_start"}), _Store(tmp_path)
    room.participants["dr"] = FakeParticipant()  # type: ignore[assignment]
    room.publish(FakeTrack(1, "dr", "audio", "microphone", OPUS), 0xA)
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
    with pytest.raises(KeyError):
        room.router.sink_stats(1000)  # the recorder's sink is gone from the router

    room.manager.failing.clear()  # the disk has room again: the clinician retries
    status = await rec.request(DR)
    assert status["recording"] and store.states["rec1"] == "recording"
    assert rec.recorder is not None and rec.recorder.sinks[1].sub == 1001, "the failed start had sink 1000"
    await rec.stop(DR)
    assert store.states["rec1"] == "ready"
