"""Consent to record a visit, asked and answered over the room protocol.

Rules (docs/recording.md):
- only a clinician (room protocol) or an admin (control API) may ask to start, and only in a room whose
  options allow recording (rooms created implicitly by the first join do not);
- every present participant is asked; recording starts only once all of them granted; one refusal
  ends the request, naming who refused;
- a participant who joins while a recording runs is asked too; until they grant, none of their tracks
  is recorded (the rest of the recording goes on); a refusal keeps them out of it;
- an answer lasts as long as the participant stays: one who leaves and comes back (a reload, another
  device, a dropped connection) is asked again, and is not recorded until they answer again;
- a request waits only for those present: when the last participant who had not answered leaves and
  everyone still there has granted, the recording starts as requested (the controller starts it); when
  everyone leaves, the request ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediasrv.authz import MODERATOR_ROLES
from mediasrv.errors import MediasrvError


class ConsentError(MediasrvError):
    default_status = 409


@dataclass
class ConsentState:
    requested_by: str
    answers: dict[str, bool | None] = field(default_factory=dict)  # identity -> granted (None: asked)
    recording: bool = False

    def pending(self) -> list[str]:
        return sorted(i for i, a in self.answers.items() if a is None)

    def refused(self) -> list[str]:
        return sorted(i for i, a in self.answers.items() if a is False)

    def may_record(self, identity: str) -> bool:
        return self.answers.get(identity) is True


class RecordingConsent:
    """Consent bookkeeping of one room; the caller sends the events it returns."""

    def __init__(self, recording_allowed: bool) -> None:
        self.recording_allowed = recording_allowed
        self.state: ConsentState | None = None

    def request(self, by: str, role: str, present: list[str]) -> list[str]:
        """Starts asking; returns who must be asked. The requester's own request counts as consent."""
        if role not in MODERATOR_ROLES:
            raise ConsentError("forbidden", "only a clinician or an admin can start a recording", 403)
        if not self.recording_allowed:
            raise ConsentError("recording_not_allowed", "this room does not allow recording", 403)
        if self.state is not None:
            what = "running" if self.state.recording else "waiting for consent"
            raise ConsentError("recording_busy", f"a recording is already {what}")
        if not present:
            raise ConsentError("empty_room", "nobody in the room to record")
        self.state = ConsentState(requested_by=by, answers={i: (True if i == by else None) for i in present})
        return self.state.pending()

    def answer(self, identity: str, granted: bool) -> None:
        if self.state is None or identity not in self.state.answers:
            raise ConsentError("no_consent_request", "no recording consent was asked of you")
        self.state.answers[identity] = bool(granted)

    def check_start(self) -> None:
        """Raises with the names of who has not consented (yet) unless everyone granted."""
        s = self.state
        if s is None:
            raise ConsentError("no_consent_request", "no recording was requested")
        refused, pending = s.refused(), s.pending()
        if refused or pending:
            parts = []
            if refused:
                parts.append("refused: " + ", ".join(refused))
            if pending:
                parts.append("not answered: " + ", ".join(pending))
            raise ConsentError("consent_missing", "recording needs everyone's consent (" + "; ".join(parts) + ")")
        s.recording = True

    def joined(self, identity: str) -> bool:
        """A participant joined: True when they must be asked (a request or recording is under way)."""
        if self.state is None or identity in self.state.answers:
            return False
        self.state.answers[identity] = None
        return True

    def left(self, identity: str) -> bool:
        """Forget their answer: whoever comes back under this identity is asked again. True when a
        pending request waited for nobody else: everyone still present has granted, so the recording
        may start. A request nobody is left to answer ends."""
        s = self.state
        if s is None or identity not in s.answers:
            return False
        del s.answers[identity]
        if s.recording:
            return False
        if not s.answers:
            self.state = None
            return False
        return not s.pending() and not s.refused()

    def stop(self) -> None:
        self.state = None
