"""Recording of one room: consent over the room protocol, then a Recorder, then sealed files.

Flow: a clinician (room protocol `start_recording`) or an admin (`POST /v1/rooms/{room}/recording`)
asks; every participant present gets `recording_consent_request` and answers `recording_consent`;
once all granted, the recording starts and everyone gets `recording_started` (the indicator) —
`recording_stopped` when it ends. A refusal ends the request and tells the requester who refused.
If the last participant who had not answered leaves instead, and everyone still present has granted,
the recording starts as requested (the request waits only for those present).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mediasrv.auth import Identity
from mediasrv.recording.consent import ConsentError, ConsentState, RecordingConsent
from mediasrv.recording.recorded_room import RecordedRoom
from mediasrv.recording.recorder import Recorder
from mediasrv.recording.recording_store import RecordingStore

log = logging.getLogger(__name__)


class RoomRecording:
    def __init__(self, room: RecordedRoom, store: RecordingStore | None) -> None:
        self.room = room
        self.store = store
        self.consent = RecordingConsent(room.options.recording_allowed)
        self.recorder: Recorder | None = None
        self.requested_by: Identity | None = None
        self.recording_id: str | None = None
        self.last_stats: dict[str, int] = {}  # the last finished recording's counters (Recorder.stats)
        # The start a departure completed (see left); kept so it is not garbage-collected mid-start.
        self.start_after_leave: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.recorder is not None

    def _present(self) -> list[str]:
        return list(self.room.participants)

    async def request(self, by: Identity) -> dict[str, Any]:
        """Ask everyone present; start at once if nobody else needs asking."""
        if self.store is None:
            raise ConsentError("recording_unavailable", "recording is not configured", 503)
        to_ask = self.consent.request(by.sub, by.role, self._present())
        self.requested_by = by
        for identity in to_ask:
            await self._ask(identity)
        if not to_ask:
            await self._start()
        return self.status()

    async def _ask(self, identity: str) -> None:
        p = self.room.participants.get(identity)
        if p is not None:
            who = self.requested_by.sub if self.requested_by else None
            state = self.consent.state
            # `recording`: true when asked to join a recording that already runs (a late joiner, or
            # someone back after leaving): until they grant, nothing of theirs is recorded.
            await p.send({"type": "recording_consent_request", "by": who if p.admitted else None,
                          "recording": bool(state and state.recording)})

    async def answer(self, identity: str, granted: bool) -> None:
        self.consent.answer(identity, granted)
        state = self.consent.state
        assert state is not None
        if state.recording:  # a late joiner answered: include (or keep out) their tracks
            self.tracks_changed()
            if granted and self.store is not None and self.recording_id is not None:
                await self.store.add_participants(self.recording_id, [identity])
            return
        if not granted:
            refused = state.refused()
            self.consent.stop()
            await self.room.broadcast({"type": "recording_refused", "refused_by": refused},
                                      only=lambda o: o.role == "clinician")
            return
        if not state.pending():
            try:
                await self._start()
            except ConsentError as exc:
                if exc.code != "recording_failed":
                    raise
                # The answer itself was fine: the clinicians were told the start failed.

    async def start_now(self, by: Identity) -> dict[str, Any]:
        """Control API: ask if nobody was asked yet, and start only if everyone has consented."""
        if self.consent.state is None:
            await self.request(by)
        if not self.running:
            self.consent.check_start()  # raises consent_missing naming who has not consented
        return self.status()

    async def start_for_message(self, sender: Identity) -> None:
        """A recorded message: the sender is the only participant and consents by sending it."""
        if self.store is None:
            raise ConsentError("recording_unavailable", "recording is not configured", 503)
        self.consent.state = ConsentState(requested_by=sender.sub, answers={sender.sub: True})
        self.requested_by = sender
        await self._start(one_file_per_participant=True)

    async def _start(self, one_file_per_participant: bool = False) -> None:
        """Raises ConsentError `recording_failed` (500) if the start fails partway: the recording
        is then marked `failed` at once (not left `recording` until the next restart), audited, and
        the clinicians are told (`recording_failed`); a new request may follow."""
        assert self.store is not None
        self.consent.check_start()
        state, by = self.consent.state, self.requested_by
        try:
            rid = await self.store.create(self.room.name, by.sub if by else "", visit=self.room.visit_id)
        except Exception as exc:
            await self._start_failed(state, None, None, exc)
            raise ConsentError("recording_failed", "the recording could not be started", 500) from None
        if self.consent.state is not state:
            # Stopped (or the room closed) while the recording was being filed: do not start it.
            await self.store.finish(rid, state="cancelled")
            return
        recorder: Recorder | None = None
        try:
            self.recording_id = rid
            self.recorder = recorder = Recorder(self.room, self.store, rid, self.consent,
                                                one_file_per_participant=one_file_per_participant)
            await recorder.start()
            assert state is not None
            await self.store.add_participants(rid, [i for i, granted in state.answers.items() if granted])
            await self.room.audit_event_raw(by.sub if by else "", by.role if by else "",
                                            "recording_start", room=self.room.name,
                                            detail={"recording_id": rid})
        except Exception as exc:
            await self._start_failed(state, rid, recorder, exc)
            raise ConsentError("recording_failed", "the recording could not be started", 500) from None
        await self.room.broadcast({"type": "recording_started", "recording_id": rid})

    async def _start_failed(self, state: ConsentState | None, rid: str | None, recorder: Recorder | None,
                            exc: Exception) -> None:
        """Undo a start that failed partway; every step guarded (the disk may be what failed)."""
        log.error("room %s: starting recording %s failed: %r", self.room.name, rid, exc, exc_info=exc)
        if recorder is not None and self.recorder is recorder:
            self.recorder, self.recording_id = None, None
        if self.consent.state is state:
            self.consent.stop()
        by = self.requested_by
        steps: list[Any] = []
        if recorder is not None:
            steps.append(recorder.abort())
        if rid is not None and self.store is not None:
            steps.append(self.store.finish(rid, state="failed"))
        steps.append(self.room.audit_event_raw(
            by.sub if by else "system", by.role if by else "system", "recording_failed", room=self.room.name,
            detail={"recording_id": rid, "reason": f"start_failed:{type(exc).__name__}"}))
        for step in steps:
            try:
                await step
            except Exception:
                log.exception("room %s: cleaning up the failed recording %s", self.room.name, rid)
        await self.room.broadcast({"type": "recording_failed", "recording_id": rid, "reason": "start_failed"},
                                  only=lambda o: o.role == "clinician")

    async def stop(self, by: Identity | None, reason: str = "stopped") -> dict[str, Any] | None:
        recorder, rid = self.recorder, self.recording_id
        self.consent.stop()
        self.recorder = None
        if recorder is None or rid is None:
            return None
        files = await recorder.stop()
        self.last_stats = dict(recorder.stats)
        await self.room.audit_event_raw(by.sub if by else "system", by.role if by else "system",
                                        "recording_stop", room=self.room.name,
                                        detail={"recording_id": rid, "reason": reason})
        await self.room.broadcast({"type": "recording_stopped", "recording_id": rid, "reason": reason})
        return {"recording_id": rid, "files": files}

    def tracks_changed(self) -> None:
        """The room's tracks, admissions, mutes or consents changed: record exactly what is wanted.
        Called by the room before the router forgets a track, so its sink's last frames are kept."""
        if self.recorder is not None:
            self.recorder.update()

    async def joined(self, identity: str) -> None:
        if self.consent.joined(identity):
            await self._ask(identity)

    def left(self, identity: str) -> None:
        """Forget their answer. If the request waited only for them and everyone still present has
        granted, start the recording as requested — in a task, so the room finishes the departure
        (`participant_left`) before `recording_started` goes out."""
        if self.consent.left(identity):
            self.start_after_leave = asyncio.get_running_loop().create_task(
                self._start_if_consented(self.consent.state))

    async def _start_if_consented(self, state: ConsentState | None) -> None:
        # Anything may have happened since the departure: someone joined (and is being asked), the
        # request was stopped or the room closed. Start only the same request, still fully granted.
        if (state is None or self.consent.state is not state or state.recording or not state.answers
                or state.pending() or state.refused()):
            return
        try:
            await self._start()
        except ConsentError as exc:  # recording_failed: the clinicians were told
            log.warning("room %s: starting the recording after a departure: %s", self.room.name, exc.message)
        except Exception:
            log.exception("room %s: starting the recording after a departure", self.room.name)

    def status(self) -> dict[str, Any]:
        state = self.consent.state
        return {"recording": self.running, "recording_id": self.recording_id if self.running else None,
                "waiting_for": state.pending() if state else [],
                "refused": state.refused() if state else []}
