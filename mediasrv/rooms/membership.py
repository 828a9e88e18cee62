"""Who is in a room: joining and leaving, the waiting room (admission), and moderation (remove, mute)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mediasrv.auth import Identity
from mediasrv.rooms.errors import RoomError
from mediasrv.rooms.models import EventSink, Participant

if TYPE_CHECKING:
    from mediasrv.rooms.room import Room

# Roles that wait to be admitted when the room has a waiting room.
WAITING_ROLES = ("patient", "guest")


class Membership:
    def __init__(self, room: Room) -> None:
        self.room = room

    async def join(self, ident: Identity, session: str, events: EventSink | None = None,
                   auto_subscribe: bool = True, address: str | None = None) -> Participant:
        room = self.room
        if room.closed:
            raise RoomError("room_closed", "the room is closed", 410)
        old = room.participants.get(ident.sub)
        if old is not None:
            await old.send({"type": "error", "code": "replaced",
                            "message": "the same identity joined again elsewhere"})
            await self.leave(ident.sub, reason="replaced")
        limit = room.options.max_participants
        if limit is not None and len(room.participants) >= limit:
            raise RoomError("room_full", f"the room allows {limit} participants", 409)
        waiting = room.options.waiting_room and ident.role in WAITING_ROLES and ident.sub not in room.admitted
        p = Participant(identity=ident.sub, role=ident.role, name=ident.name, session=session,
                        admitted=not waiting, events=events, auto_subscribe=auto_subscribe)
        room.participants[p.identity] = p
        await room.manager.audit_event(ident, "join", room=room.name, visit=room.visit_id, address=address,
                                       detail={"kind": session})
        info = {"type": "participant_joined", "participant": p.describe()}
        if p.admitted:
            await room.broadcast(info, exclude=p.identity)
        else:
            await room.broadcast({**info, "type": "participant_waiting"}, exclude=p.identity,
                                 only=lambda o: o.role == "clinician")
        await room.recording.joined(p.identity)
        return p

    async def leave(self, identity: str, reason: str = "left") -> bool:
        room = self.room
        p = room.participants.pop(identity, None)
        if p is None:
            return False
        for track in list(p.tracks.values()):
            await room.publications.remove_track(p, track, notify=True)
        for sub in list(p.subscriptions.values()):
            room.subscriptions.deactivate(sub)
        for t in (p.publisher, p.subscriber):
            if t is not None:
                room.router.remove_transport(t.handle)
                room.transports.pop(t.handle, None)
                await t.close()
        room.recording.left(p.identity)
        await room.manager.audit_event_raw(p.identity, p.role, "leave", room=room.name, visit=room.visit_id,
                                           detail={"reason": reason, "kind": p.session})
        if p.admitted:
            await room.broadcast({"type": "participant_left", "identity": identity, "reason": reason})
        if p.on_removed is not None:
            await p.on_removed(reason)
        if not room.participants and not room.explicit:
            await room.manager.close(room.name, "empty")
        return True

    async def admit(self, identity: str, by: Identity) -> bool:
        room = self.room
        p = room.participants.get(identity)
        if p is None:
            return False
        if not p.admitted:
            p.admitted = True
            room.admitted.add(identity)
            await room.manager.audit_event(by, "admit", room=room.name, visit=room.visit_id, target=identity)
            # What it was kept from while waiting: who is here and what they publish.
            await p.send({"type": "admitted", **room.visible_state(p)})
            await room.broadcast({"type": "participant_joined", "participant": p.describe()},
                                 exclude=identity)
            for track in p.tracks.values():
                await room.broadcast({"type": "track_published", "track": track.describe()},
                                     exclude=identity)
            await room.subscriptions.sync_all()
        return True

    async def remove(self, identity: str, by: Identity) -> bool:
        room = self.room
        p = room.participants.get(identity)
        if p is None:
            return False
        await room.manager.audit_event(by, "remove", room=room.name, visit=room.visit_id, target=identity)
        await p.send({"type": "removed", "by": by.sub if p.admitted else None})
        room.admitted.discard(identity)
        return await self.leave(identity, reason="removed")

    async def mute_track(self, identity: str, track_id: int, by: Identity) -> bool:
        room = self.room
        p = room.participants.get(identity)
        track = p.tracks.get(track_id) if p else None
        if p is None or track is None:
            return False
        track.muted = True
        room.recording.tracks_changed()
        await room.manager.audit_event(by, "mute", room=room.name, visit=room.visit_id, target=identity,
                                       detail={"track_id": track_id})
        room.subscriptions.deactivate_track(track_id)
        await room.broadcast({"type": "track_muted", "track": track.describe(), "by": by.sub})
        return True
