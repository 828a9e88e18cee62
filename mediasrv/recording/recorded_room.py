"""What recording needs from a room, and nothing more: who is there, what they publish, the router
to put sinks on, a way to tell them things and an audit trail."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import mediasrv_native


class RecordedTrack(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def owner(self) -> str: ...  # the publishing participant's identity

    @property
    def kind(self) -> str: ...  # "audio" | "video"

    @property
    def source(self) -> str: ...

    @property
    def muted(self) -> bool: ...

    @property
    def codecs(self) -> Sequence[tuple[Any, ...]]: ...  # as negotiated with the publisher


class RecordedParticipant(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def admitted(self) -> bool: ...

    async def send(self, event: dict[str, Any]) -> None: ...


class RecordingOptions(Protocol):
    @property
    def recording_allowed(self) -> bool: ...


class RecordedRoom(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def visit_id(self) -> str: ...  # the visit (a name is reused by later visits): kept with the recording

    @property
    def options(self) -> RecordingOptions: ...

    @property
    def participants(self) -> Mapping[str, RecordedParticipant]: ...  # by identity

    @property
    def tracks(self) -> Mapping[int, RecordedTrack]: ...  # by track id

    @property
    def router(self) -> mediasrv_native.Router: ...  # the recorder's sinks live on it

    def new_subscription_id(self) -> int:
        """An id for a router sink, from the allocator the room's subscriptions use."""
        ...

    async def broadcast(self, event: dict[str, Any], *,
                        only: Callable[[RecordedParticipant], bool] | None = None) -> None:
        """Send an event to everyone admitted (or those `only` picks among them)."""
        ...

    async def audit_event_raw(self, actor: str, role: str, action: str, **kw: Any) -> None:
        """File an audit event (never raises)."""
        ...
