"""The room service: rooms, their participants, published tracks and subscriptions.

room.py composes a Room from membership.py (joining, the waiting room, moderation), publications.py
(publishing, the vitals channel) and subscriptions.py (who receives what, WHEP late binding);
models.py holds the data, manager.py the RoomManager, errors.py RoomError.
"""

from mediasrv.rooms.errors import RoomError
from mediasrv.rooms.manager import RoomManager
from mediasrv.rooms.models import SOURCES, Participant, RoomOptions, Subscription, Track
from mediasrv.rooms.room import Room

__all__ = ["SOURCES", "Participant", "Room", "RoomError", "RoomManager", "RoomOptions", "Subscription", "Track"]
